//! `arbiter replay`: a candidate pack re-decides the logged requests of a window, through
//! the decision service's replay, and the differences are reported (DESIGN §4).

use std::path::PathBuf;
use std::process::ExitCode;

use arbiter_service::replay::{FailOn, Report, Window, replay_window};
use arbiter_store::Store;
use clap::{Args, ValueEnum};
use jiff::Timestamp;

use crate::{Failure, load};

/// `arbiter replay` arguments.
#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The candidate pack directory.
    #[arg(long)]
    pack: PathBuf,
    /// The data directory holding the decision log.
    #[arg(long)]
    data: PathBuf,
    /// Decisions at or after this RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// Decisions before this RFC 3339 time.
    #[arg(long)]
    until: Option<String>,
    /// Only this principal's decisions (a Cedar uid).
    #[arg(long)]
    principal: Option<String>,
    /// Exit 1 when this happened.
    #[arg(long, value_enum)]
    fail_on: Option<FailOnArg>,
    /// Example decision ids per group.
    #[arg(long, default_value_t = 3)]
    examples: usize,
    /// One JSON document instead of tables.
    #[arg(long)]
    json: bool,
}

/// What `--fail-on` takes.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum FailOnArg {
    Breaks,
    Loosens,
    Any,
}

impl From<FailOnArg> for FailOn {
    fn from(arg: FailOnArg) -> FailOn {
        match arg {
            FailOnArg::Breaks => FailOn::Breaks,
            FailOnArg::Loosens => FailOn::Loosens,
            FailOnArg::Any => FailOn::Any,
        }
    }
}

fn time(flag: &str, text: Option<&str>) -> Result<Option<Timestamp>, Failure> {
    text.map(|t| {
        t.parse()
            .map_err(|e| Failure::Input(format!("--{flag}: `{t}` is not an RFC 3339 time ({e})")))
    })
    .transpose()
}

/// Runs `arbiter replay`.
pub fn replay(args: ReplayArgs) -> Result<ExitCode, Failure> {
    let since = time("since", args.since.as_deref())?;
    let until = time("until", args.until.as_deref())?;
    let pack = load(&args.pack)?;
    let store = Store::open_read_only(&args.data).map_err(|e| Failure::Input(e.to_string()))?;
    let window = Window {
        since,
        until,
        principal: args.principal.clone(),
    };
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let report = replay_window(&pack, &store, &window, args.examples, workers)
        .map_err(|e| Failure::Input(e.to_string()))?;
    if args.json {
        let text = serde_json::to_string(&report).map_err(|e| Failure::Input(e.to_string()))?;
        outln!("{text}")?;
    } else {
        print(&report)?;
    }
    let failed = args.fail_on.is_some_and(|f| report.fails(f.into()));
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn print(report: &Report) -> Result<(), Failure> {
    let c = &report.changes;
    outln!(
        "{} replayed: {} same, {} breaks, {} loosens, {} shifts, {} now valid, {} now invalid, \
         {} unreplayable",
        report.replayed,
        c.same,
        c.breaks,
        c.loosens,
        c.shifts,
        c.now_valid,
        c.now_invalid,
        c.unreplayable
    )?;
    for (title, groups) in [
        ("by rule", &report.by_rule),
        ("by principal", &report.by_principal),
        ("unreplayable (masked in the log)", &report.unreplayable),
    ] {
        if groups.is_empty() {
            continue;
        }
        outln!("\n{title}:")?;
        for g in groups {
            outln!(
                "  {}: {} breaks, {} loosens, {} shifts, {} unreplayable  e.g. {}",
                g.key,
                g.changes.breaks,
                g.changes.loosens,
                g.changes.shifts,
                g.changes.unreplayable,
                g.examples.join(", ")
            )?;
        }
    }
    if !report.rules.is_empty() {
        outln!("\nthe candidate's rules on this window (fired / decisive / principals):")?;
        for r in &report.rules {
            outln!(
                "  {}: {} / {} / {}",
                r.rule,
                r.fired,
                r.decisive,
                r.principals
            )?;
        }
    }
    Ok(())
}

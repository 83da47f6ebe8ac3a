//! `arbiter replay`: a candidate pack re-decides the logged requests of a window, through
//! the decision service's replay, and the differences are reported (DESIGN §4).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use arbiter_service::replay::{FailOn, Report, Walk, Window, replay_window};
use arbiter_store::Store;
use clap::{Args, ValueEnum};
use jiff::Timestamp;

use crate::lifecycle::table;
use crate::output::printable;
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
    let window = window(
        args.since.as_deref(),
        args.until.as_deref(),
        args.principal.clone(),
    )?;
    let pack = load(&args.pack)?;
    let store = Store::open_read_only(&args.data).map_err(|e| Failure::Input(e.to_string()))?;
    let report = walked(&store, &window, |walk| {
        replay_window(&pack, &store, &window, args.examples, walk)
    })?;
    if args.json {
        let text = serde_json::to_string(&report).map_err(|e| Failure::Input(e.to_string()))?;
        outln!("{text}")?;
    } else {
        print(&report)?;
    }
    if report.interrupted {
        return Ok(ExitCode::from(INTERRUPTED));
    }
    let failed = args.fail_on.is_some_and(|f| report.fails(f.into()));
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// The exit code of a walk stopped by Ctrl-C (128 + SIGINT, as a shell reports it): a
/// partial replay never passes a gate.
pub const INTERRUPTED: u8 = 130;

/// The window the flags name.
pub fn window(
    since: Option<&str>,
    until: Option<&str>,
    principal: Option<String>,
) -> Result<Window, Failure> {
    Ok(Window {
        since: time("since", since)?,
        until: time("until", until)?,
        principal,
    })
}

/// Runs `work` over the log on every core, with a progress bar on a terminal and Ctrl-C
/// stopping the walk cleanly (what was replayed until then is reported, marked
/// interrupted; a second Ctrl-C ends the process).
pub fn walked<T>(
    store: &Store,
    window: &Window,
    work: impl FnOnce(&Walk<'_>) -> Result<T, arbiter_store::StoreError>,
) -> Result<T, Failure> {
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let bar = progress_bar(store, window);
    let stop = interrupt_flag();
    let progress = |done: u64| {
        if let Some(bar) = &bar {
            bar.set_position(done);
        }
    };
    let walk = Walk {
        workers,
        stop: Some(stop),
        progress: Some(&progress),
    };
    let result = work(&walk).map_err(|e| Failure::Input(e.to_string()));
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if stop.load(Ordering::Relaxed) {
        eprintln!("interrupted: the report covers the decisions replayed until then");
    }
    result
}

/// A bar on a terminal, its length the window's size; nothing when stderr is not one.
fn progress_bar(store: &Store, window: &Window) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let total = store
        .count_decisions(window.since, window.until, window.principal.as_deref())
        .ok()?;
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} replaying [{wide_bar}] {pos}/{len} ({per_sec}, {eta})",
    ) {
        bar.set_style(style);
    }
    Some(bar)
}

/// Set by the first Ctrl-C; the second ends the process with [`INTERRUPTED`].
fn interrupt_flag() -> &'static AtomicBool {
    static STOP: AtomicBool = AtomicBool::new(false);
    static LISTENING: std::sync::Once = std::sync::Once::new();
    LISTENING.call_once(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        let Ok(runtime) = runtime else {
            return;
        };
        let spawned = std::thread::Builder::new()
            .name("ctrl-c".to_owned())
            .spawn(move || {
                runtime.block_on(async {
                    if tokio::signal::ctrl_c().await.is_ok() {
                        STOP.store(true, Ordering::Relaxed);
                        eprintln!("\nstopping: Ctrl-C again to quit at once");
                    }
                    if tokio::signal::ctrl_c().await.is_ok() {
                        std::process::exit(i32::from(INTERRUPTED));
                    }
                });
            });
        // Without the listener, Ctrl-C ends the process as it would anyway.
        drop(spawned);
    });
    &STOP
}

/// Groups a table shows, most changes first; `--json` has them all.
const SHOWN: usize = 20;

/// A summary table of the changes, then a table per grouping (the first [`SHOWN`]), then
/// the candidate's rules.
fn print(report: &Report) -> Result<(), Failure> {
    let c = &report.changes;
    if report.interrupted {
        outln!("interrupted: only the decisions replayed until Ctrl-C are counted")?;
    }
    let mut summary = table(&["replayed", "change", "decisions"]);
    for (change, count) in [
        ("same", c.same),
        ("breaks (allow → deny)", c.breaks),
        ("loosens (deny → allow)", c.loosens),
        ("shifts (other rule or effect)", c.shifts),
        ("now valid", c.now_valid),
        ("now invalid", c.now_invalid),
        ("unreplayable (masked)", c.unreplayable),
    ] {
        summary.add_row(vec![
            if change == "same" {
                report.replayed.to_string()
            } else {
                String::new()
            },
            change.to_owned(),
            count.to_string(),
        ]);
    }
    outln!("{summary}")?;
    for (title, groups) in [
        ("rule", &report.by_rule),
        ("principal", &report.by_principal),
        ("masked path", &report.unreplayable),
    ] {
        if groups.is_empty() {
            continue;
        }
        let mut grouped = table(&[
            title,
            "breaks",
            "loosens",
            "shifts",
            "now valid",
            "now invalid",
            "unreplayable",
            "examples",
        ]);
        for g in groups.iter().take(SHOWN) {
            let n = &g.changes;
            grouped.add_row(vec![
                printable(&g.key).into_owned(),
                n.breaks.to_string(),
                n.loosens.to_string(),
                n.shifts.to_string(),
                n.now_valid.to_string(),
                n.now_invalid.to_string(),
                n.unreplayable.to_string(),
                g.examples.join(" "),
            ]);
        }
        outln!("\n{grouped}")?;
        if groups.len() > SHOWN {
            outln!(
                " …and {} more by {title}, fewer changes each (--json lists all)",
                groups.len() - SHOWN
            )?;
        }
    }
    if !report.rules.is_empty() {
        let mut rules = table(&["the candidate's rule", "fired", "decisive", "principals"]);
        for r in &report.rules {
            rules.add_row(vec![
                printable(&r.rule).into_owned(),
                r.fired.to_string(),
                r.decisive.to_string(),
                r.principals.to_string(),
            ]);
        }
        outln!("\n{rules}")?;
    }
    Ok(())
}

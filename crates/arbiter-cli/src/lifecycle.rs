//! The audit→enforce lifecycle on the command line (DESIGN §4): `findings`, `review`,
//! `readiness`, `promote`, `demote` and `baseline`. They read the data directory a server
//! writes (also while it runs) and, for `promote`/`demote`, edit the pack's source.
//!
//! The workflows are `arbiter-lifecycle`'s ([`readiness::assess`], [`promotion`],
//! [`baseline`]); here are the arguments, the tables, the progress bar, the wording that
//! names flags, and the exit codes.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use arbiter_core::clock::Clock;
use arbiter_core::rule::Mode;
use arbiter_lifecycle::baseline;
use arbiter_lifecycle::promotion::{self, Gate, ModeChange, Refusal};
use arbiter_lifecycle::readiness::{self, Readiness, Verdict};
use arbiter_store::{BaselineQuery, Finding, FindingQuery, Review, Store};
use clap::{Args, Subcommand, ValueEnum};
use jiff::Timestamp;

use crate::{Failure, load, output, who};

/// `{"<key>": [...]}` written as it is serialized, without building a JSON tree of a
/// large answer in memory first.
fn write_json<T: serde::Serialize>(key: &str, items: &[T]) -> Result<(), Failure> {
    use std::io::Write as _;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let written = write!(out, "{{\"{key}\":")
        .map_err(serde_json::Error::io)
        .and_then(|()| serde_json::to_writer(&mut out, items))
        .and_then(|()| writeln!(out, "}}").map_err(serde_json::Error::io))
        .and_then(|()| out.flush().map_err(serde_json::Error::io));
    written.map_err(|e| match e.io_error_kind() {
        Some(std::io::ErrorKind::BrokenPipe) => Failure::Closed,
        _ => input(e),
    })
}

/// `arbiter findings`.
#[derive(Debug, Args)]
pub struct FindingsArgs {
    /// The data directory.
    #[arg(long, default_value = "./arbiter-data", env = "ARBITER_DATA")]
    data: PathBuf,
    /// Only this rule's findings.
    #[arg(long)]
    rule: Option<String>,
    /// `open`, `expected` or `legitimate`.
    #[arg(long, value_parser = ["open", "expected", "legitimate"])]
    status: Option<String>,
    /// Only this principal's (a Cedar uid).
    #[arg(long)]
    principal: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `arbiter review`.
#[derive(Debug, Args)]
pub struct ReviewArgs {
    /// The finding's id.
    id: String,
    /// `expected` (the rule is right: this should be blocked) or `legitimate` (needed
    /// work the rule would break).
    #[arg(long, value_parser = ["expected", "legitimate"])]
    verdict: String,
    /// Why.
    #[arg(long)]
    note: String,
    /// Who (default: the user running the command).
    #[arg(long)]
    by: Option<String>,
    /// The data directory.
    #[arg(long, default_value = "./arbiter-data", env = "ARBITER_DATA")]
    data: PathBuf,
}

/// `arbiter readiness`.
#[derive(Debug, Args)]
pub struct ReadinessArgs {
    /// One rule (or `default-deny:<Type>`); exit 1 unless it is ready.
    rule: Option<String>,
    /// The pack directory.
    #[arg(long)]
    pack: PathBuf,
    /// The data directory.
    #[arg(long, default_value = "./arbiter-data", env = "ARBITER_DATA")]
    data: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// A mode as `--to` takes it. The words are `Mode`'s; clap refuses any other (exit 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    Audit,
    Warn,
    Enforce,
}

impl From<ModeArg> for Mode {
    fn from(arg: ModeArg) -> Mode {
        match arg {
            ModeArg::Audit => Mode::Audit,
            ModeArg::Warn => Mode::Warn,
            ModeArg::Enforce => Mode::Enforce,
        }
    }
}

/// `arbiter promote` / `arbiter demote`.
#[derive(Debug, Args)]
pub struct ModeArgs {
    /// The rule, or `default-deny:<Type>`.
    rule: String,
    /// The pack directory (its source is edited).
    #[arg(long)]
    pack: PathBuf,
    /// The data directory (evidence, and the record of the change).
    #[arg(long, default_value = "./arbiter-data", env = "ARBITER_DATA")]
    data: PathBuf,
    /// The mode to set instead of the default (promote: enforce; demote: audit).
    #[arg(long, value_enum)]
    to: Option<ModeArg>,
    /// Promote although the rule is not ready (needs --reason); demotion needs no
    /// evidence.
    #[arg(long, requires = "reason")]
    force: bool,
    /// Why (required with --force, and to demote; recorded).
    #[arg(long)]
    reason: Option<String>,
    /// Who (default: the user running the command).
    #[arg(long)]
    by: Option<String>,
    /// Show the diff only; change nothing.
    #[arg(long)]
    dry_run: bool,
}

/// `arbiter baseline`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BaselineArgs {
    #[command(subcommand)]
    command: Option<BaselineCommand>,
    /// The pack directory.
    #[arg(long)]
    pack: Option<PathBuf>,
    /// The data directory.
    #[arg(long, default_value = "./arbiter-data", env = "ARBITER_DATA")]
    data: PathBuf,
    /// Only this principal (a Cedar uid).
    #[arg(long)]
    principal: Option<String>,
    /// Only decisions since this time (RFC 3339).
    #[arg(long)]
    since: Option<String>,
    /// Print least-privilege permits covering what was observed, as a .cedar file.
    #[arg(long)]
    suggest: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `arbiter baseline freeze`.
#[derive(Debug, Subcommand)]
pub enum BaselineCommand {
    /// Record what each identity does now; from then on a first-seen (principal, action)
    /// pair is `novel`.
    Freeze {
        /// The data directory.
        #[arg(long, default_value = "./arbiter-data", env = "ARBITER_DATA")]
        data: PathBuf,
        /// Only decisions since this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Who (default: the user running the command).
        #[arg(long)]
        by: Option<String>,
    },
}

fn input<E: std::fmt::Display>(e: E) -> Failure {
    Failure::Input(e.to_string())
}

/// The store a server wrote, opened for a write. A data directory without one is an input
/// error: a mistyped `--data` must not create an empty store and record into it.
fn open_existing(data: &Path) -> Result<Store, Failure> {
    if !data.join(arbiter_store::DB_FILE).is_file() {
        return Err(Failure::Input(format!(
            "no arbiter store in {} (is --data the server's data directory?)",
            data.display()
        )));
    }
    Store::open(data).map_err(input)
}

fn time(flag: &str, text: Option<&str>) -> Result<Option<Timestamp>, Failure> {
    text.map(|t| {
        t.parse()
            .map_err(|e| Failure::Input(format!("--{flag}: `{t}` is not an RFC 3339 time ({e})")))
    })
    .transpose()
}

/// `arbiter findings`.
pub fn findings(args: FindingsArgs) -> Result<ExitCode, Failure> {
    let store = Store::open_read_only(&args.data).map_err(input)?;
    let found = store
        .findings(&FindingQuery {
            rule: args.rule,
            status: args.status,
            principal: args.principal,
            limit: None,
        })
        .map_err(input)?;
    if args.json {
        write_json("findings", &found)?;
        return Ok(ExitCode::SUCCESS);
    }
    if found.is_empty() {
        outln!("no findings")?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = table(&[
        "id",
        "status",
        "rule",
        "mode",
        "would",
        "principal",
        "action",
        "resource",
        "count",
        "decisive",
        "last seen",
    ]);
    for f in &found {
        table.add_row(vec![
            f.id.clone(),
            status(f),
            f.rule.clone(),
            f.mode.clone(),
            f.would.clone(),
            f.principal.clone(),
            f.action.clone(),
            f.resource.clone(),
            f.count.to_string(),
            f.decisive.to_string(),
            f.last_seen.to_string(),
        ]);
    }
    outln!("{table}")?;
    let open = found.iter().filter(|f| f.status == "open").count();
    if open > 0 {
        outln!(
            "{open} open finding(s): review each with `arbiter review ID --verdict expected|legitimate --note …`"
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn status(f: &Finding) -> String {
    match &f.review {
        Some(r) => format!("{} ({})", f.status, r.by),
        None => f.status.clone(),
    }
}

/// A borderless table with `header`, as the lifecycle commands print them.
pub(crate) fn table(header: &[&str]) -> comfy_table::Table {
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Dynamic)
        .set_header(header.to_vec());
    table
}

/// `arbiter review`.
pub fn review(args: ReviewArgs, clock: &dyn Clock) -> Result<ExitCode, Failure> {
    if args.note.trim().is_empty() {
        return Err(Failure::Input("--note must say why".to_owned()));
    }
    let store = open_existing(&args.data)?;
    let review = Review {
        verdict: args.verdict.parse().map_err(input)?,
        by: args.by.unwrap_or_else(who),
        at: clock.now(),
        note: args.note,
    };
    let finding = store.review(&args.id, &review).map_err(input)?;
    outln!(
        "{}: {} by {} ({} firings, {} decisive)",
        finding.id,
        finding.status,
        review.by,
        finding.count,
        finding.decisive
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `arbiter readiness`.
pub fn readiness(args: ReadinessArgs, clock: &dyn Clock) -> Result<ExitCode, Failure> {
    let pack = load(&args.pack)?;
    let store = Store::open_read_only(&args.data).map_err(input)?;
    let all = readiness::assess(&pack, &store, args.rule.as_deref(), clock.now()).map_err(input)?;
    if let Some(rule) = &args.rule
        && all.is_empty()
    {
        return Err(Failure::Input(if readiness::in_pack(&pack, rule) {
            format!("`{rule}` is enforced (or a permit): readiness is for rules not enforced yet")
        } else {
            format!(
                "no rule or default-deny scope `{rule}` in {}",
                args.pack.display()
            )
        }));
    }
    let printed = if args.json {
        write_json("readiness", &all)
    } else {
        print_readiness(&all)
    };
    // With one rule the exit code is the verdict: a reader that stopped reading (`| head`)
    // must not turn "not ready" into success.
    output::unless_closed(printed)?;
    let not_ready = args.rule.is_some() && all.iter().any(|r| r.verdict != Verdict::Ready);
    Ok(if not_ready {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_readiness(all: &[Readiness]) -> Result<(), Failure> {
    if all.is_empty() {
        outln!("every rule and scope is enforced")?;
        return Ok(());
    }
    // What no one is looking at comes first: overdue, then unreviewed findings.
    let mut sorted: Vec<&Readiness> = all.iter().collect();
    sorted.sort_by(|a, b| {
        readiness::attention(a.overdue, Some(a.verdict), &a.rule).cmp(&readiness::attention(
            b.overdue,
            Some(b.verdict),
            &b.rule,
        ))
    });
    for r in sorted {
        let flag = if r.overdue { "  OVERDUE" } else { "" };
        let unreviewed = match (r.verdict, r.evidence.oldest_open_finding_days) {
            (Verdict::NeedsReview, Some(days)) => {
                format!("  UNREVIEWED for {days} day(s)")
            }
            _ => String::new(),
        };
        outln!(
            "{}  [{}]  {}{flag}{unreviewed}",
            r.rule,
            r.mode.as_str(),
            r.verdict.as_str()
        )?;
        for reason in &r.reasons {
            outln!("    - {reason}")?;
        }
        let e = &r.evidence;
        outln!(
            "    evidence: {} day(s) in mode, {} in-scope decision(s) on {} day(s), {} would-fire, \
             {} principal(s), findings {} open / {} expected / {} legitimate, {} error(s)",
            e.days_in_mode,
            e.evaluations,
            e.days_with_traffic,
            e.would_fire,
            e.distinct_principals,
            e.open_findings,
            e.expected_findings,
            e.legitimate_findings,
            e.errors
        )?;
    }
    Ok(())
}

/// `arbiter promote` (`up`) or `arbiter demote`.
pub fn set_mode(args: ModeArgs, up: bool, clock: &dyn Clock) -> Result<ExitCode, Failure> {
    let pack = load(&args.pack)?;
    let change = ModeChange {
        name: args.rule.clone(),
        to: match (args.to, up) {
            (Some(to), _) => to.into(),
            (None, true) => Mode::Enforce,
            (None, false) => Mode::Audit,
        },
        force: args.force,
        reason: args.reason.clone(),
        by: args.by.clone().unwrap_or_else(who),
    };
    // A dry run reads what evidence there is; a change needs the store to record it in.
    let store = if args.dry_run {
        Store::open_read_only(&args.data).ok()
    } else {
        Some(open_existing(&args.data)?)
    };
    let now = clock.now();
    let plan = promotion::plan(&pack, store.as_ref(), &change, now).map_err(input)?;
    // A refusal shows why and no diff: nothing changes. A dry run shows the diff, and
    // exits 1 when the change would be refused.
    // The diff is shown, not needed: a reader that went away neither skips the write nor
    // changes the exit code.
    if args.dry_run {
        output::unless_closed(out!("{}", plan.edit.diff()))?;
    }
    if let Some(refusal) = plan.refusal() {
        for line in refusal_lines(plan.name(), refusal, &args.data) {
            eprintln!("{line}");
        }
        if args.dry_run {
            eprintln!("dry run: nothing changed");
        }
        return Ok(ExitCode::from(1));
    }
    let store = match (&store, args.dry_run) {
        (Some(store), false) => store,
        // Without --dry-run the store was opened or the command stopped above.
        _ => {
            eprintln!("dry run: nothing changed");
            return Ok(ExitCode::SUCCESS);
        }
    };
    if let Gate::Forced(_) = plan.gate {
        eprintln!("forced: {}", args.reason.as_deref().unwrap_or_default());
    }
    output::unless_closed(out!("{}", plan.edit.diff()))?;
    let applied = promotion::apply(&plan, store, now).map_err(input)?;
    eprintln!(
        "{} is now {} in {}; commit the change and reload the server",
        plan.name(),
        plan.edit.to.as_str(),
        applied.file.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Why a promotion is refused, as lines for stderr.
fn refusal_lines(name: &str, refusal: &Refusal, data: &Path) -> Vec<String> {
    match refusal {
        Refusal::NotReady(r) => {
            let mut lines = vec![format!("refused: `{}` is {}", r.rule, r.verdict.as_str())];
            lines.extend(r.reasons.iter().map(|reason| format!("  - {reason}")));
            lines.push("(--force --reason \"…\" overrides, and is recorded)".to_owned());
            lines
        }
        Refusal::NoEvidence => vec![format!(
            "refused: no evidence for `{name}` in {}",
            data.display()
        )],
        Refusal::NoReason => vec![format!(
            "refused: moving `{name}` away from enforcement needs --reason \"…\" (it is \
             recorded with who and why, and `arbiter diff` lists it as a downgrade)"
        )],
    }
}

/// `arbiter baseline`.
pub fn baseline(args: BaselineArgs, clock: &dyn Clock) -> Result<ExitCode, Failure> {
    if let Some(BaselineCommand::Freeze { data, since, by }) = args.command {
        let store = open_existing(&data)?;
        let since = time("since", since.as_deref())?;
        let frozen =
            baseline::freeze(&store, &by.unwrap_or_else(who), since, clock.now()).map_err(input)?;
        outln!(
            "baseline #{} frozen: {} (principal, action) pair(s); a running server marks \
             first-seen pairs novel within a second",
            frozen.seq,
            frozen.pairs
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let store = Store::open_read_only(&args.data).map_err(input)?;
    let query = BaselineQuery {
        principal: args.principal.clone(),
        since: time("since", args.since.as_deref())?,
    };
    if args.suggest {
        let dir = args
            .pack
            .as_ref()
            .ok_or_else(|| Failure::Input("--suggest needs --pack".to_owned()))?;
        let pack = load(dir)?;
        let bar = progress_bar();
        let suggested =
            baseline::suggest(&pack, &store, &query, &mut progress(bar.as_ref())).map_err(input)?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        if suggested.left_out > 0 {
            eprintln!(
                "left out {} observed (principal, action, resource) that reviewers marked \
                 `expected` (a rule is right to block them)",
                suggested.left_out
            );
        }
        out!("{}", suggested.suggestion.cedar)?;
        for note in &suggested.suggestion.notes {
            eprintln!("note: {note}");
        }
        eprintln!(
            "{} permit(s) covering {} observed (principal, action, resource)",
            suggested.suggestion.policies, suggested.observed
        );
        return Ok(ExitCode::SUCCESS);
    }
    let bar = progress_bar();
    let observed = store
        .observed(&query, &mut progress(bar.as_ref()))
        .map_err(input)?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if args.json {
        write_json("observed", &observed)?;
        return Ok(ExitCode::SUCCESS);
    }
    if observed.is_empty() {
        outln!("nothing observed")?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = table(&[
        "principal",
        "action",
        "resource type",
        "resource",
        "count",
        "first seen",
        "last seen",
    ]);
    for o in &observed {
        table.add_row(vec![
            o.principal.clone(),
            o.action.clone(),
            o.resource_type.clone(),
            o.resource.clone(),
            o.count.to_string(),
            o.first_seen.to_string(),
            o.last_seen.to_string(),
        ]);
    }
    outln!("{table}")?;
    Ok(ExitCode::SUCCESS)
}

/// Moves the bar, if there is one, as the decision log is read.
fn progress(bar: Option<&indicatif::ProgressBar>) -> impl FnMut(u64, u64) + '_ {
    move |done, total| {
        if let Some(bar) = bar {
            bar.set_length(total);
            bar.set_position(done);
        }
    }
}

/// A bar on a terminal; nothing when stderr is not one.
fn progress_bar() -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} reading the decision log [{wide_bar}] {pos}/{len} ({eta})",
    ) {
        bar.set_style(style);
    }
    Some(bar)
}

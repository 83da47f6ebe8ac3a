//! `arbiter diff BASE HEAD`: what a change of pack does, for a reviewer and for CI. The
//! rule-level difference (downgrades first, [`arbiter_lifecycle::drift`]) and, with
//! `--data`, both packs replayed on the logged window: HEAD judged against what BASE
//! decides today, not against a log an older pack wrote. MCP tool pins are listed with
//! the rules, in the same directions.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use arbiter_lifecycle::drift::{self, Direction, PackDiff, PinChange, RuleChange};
use arbiter_service::replay::{Drift, Group, Report, drift_window};
use arbiter_store::Store;
use clap::{Args, ValueEnum};

use crate::Failure;
use crate::git::Source;
use crate::output::printable;
use crate::replay::{INTERRUPTED, walked, window};

/// `arbiter diff` arguments.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The pack before the change: a directory, or `git:REV[:PATH]` (PATH from the
    /// repository's root).
    base: String,
    /// The pack after the change, named the same ways.
    head: String,
    /// A data directory: replay both packs on its decision log.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Decisions at or after this RFC 3339 time (with --data).
    #[arg(long, requires = "data")]
    since: Option<String>,
    /// Decisions before this RFC 3339 time (with --data).
    #[arg(long, requires = "data")]
    until: Option<String>,
    /// Exit 1 when any of these happened (comma-separated or repeated).
    #[arg(long, value_enum, value_delimiter = ',')]
    fail_on: Vec<FailOn>,
    /// How to print: for a terminal, for machines, or as a pull-request comment.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Example decision ids per group.
    #[arg(long, default_value_t = 3)]
    examples: usize,
}

/// What `--fail-on` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FailOn {
    /// A change away from enforcement.
    Downgrades,
    /// A logged request HEAD denies that BASE allows (needs --data).
    Breaks,
    /// A logged request HEAD allows that BASE denies (needs --data).
    Loosens,
    /// Any rule change, or any difference on the log.
    Any,
}

/// What `--format` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Text,
    Json,
    Markdown,
}

/// GitHub refuses a comment over 65,536 characters; the comment stops well before.
const COMMENT_BUDGET: usize = 60_000;

/// Runs `arbiter diff`.
pub fn diff(args: DiffArgs) -> Result<ExitCode, Failure> {
    let needs_data = args
        .fail_on
        .iter()
        .any(|f| matches!(f, FailOn::Breaks | FailOn::Loosens));
    if needs_data && args.data.is_none() {
        return Err(Failure::Input(
            "--fail-on breaks or loosens needs --data DIR: they are found on the decision log"
                .to_owned(),
        ));
    }
    let window = window(args.since.as_deref(), args.until.as_deref(), None)?;
    let (base_source, head_source) = (Source::named(&args.base)?, Source::named(&args.head)?);
    let (base, head) = (base_source.load()?, head_source.load()?);
    let rules = drift::diff(&base, &head);
    let replayed = match &args.data {
        None => None,
        Some(data) => {
            let store = Store::open_read_only(data).map_err(|e| Failure::Input(e.to_string()))?;
            Some(walked(&store, &window, |walk| {
                drift_window(&base, &head, &store, &window, args.examples, walk)
            })?)
        }
    };
    let names = (base_source.label.as_str(), head_source.label.as_str());
    match args.format {
        Format::Json => {
            let document = serde_json::json!({
                "base": names.0,
                "head": names.1,
                "rules": rules,
                "replay": replayed,
            });
            outln!("{document}")?;
        }
        Format::Text => out!("{}", text(names, &rules, replayed.as_ref()))?,
        Format::Markdown => out!("{}", markdown(names, &rules, replayed.as_ref()))?,
    }
    if replayed.as_ref().is_some_and(|d| d.change.interrupted) {
        return Ok(ExitCode::from(INTERRUPTED));
    }
    let failed = args
        .fail_on
        .iter()
        .any(|f| fails(*f, &rules, replayed.as_ref()));
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn fails(on: FailOn, rules: &PackDiff, replayed: Option<&Drift>) -> bool {
    let change = replayed.map(|d| &d.change.changes);
    match on {
        FailOn::Downgrades => rules.downgrades > 0,
        FailOn::Breaks => change.is_some_and(|c| c.breaks > 0),
        FailOn::Loosens => change.is_some_and(|c| c.loosens > 0),
        FailOn::Any => {
            !rules.changes.is_empty()
                || !rules.pins.is_empty()
                || change.is_some_and(|c| {
                    c.breaks + c.loosens + c.shifts + c.now_valid + c.now_invalid > 0
                })
        }
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn short(version: &str) -> &str {
    version.get(..19).unwrap_or(version)
}

/// One line of the changes' count: downgrades and upgrades of rules and pins together.
fn tally(rules: &PackDiff) -> String {
    let other = rules.going(Direction::Neutral).count();
    let other_pins = rules
        .pins
        .iter()
        .filter(|p| p.direction == Direction::Neutral)
        .count();
    let mut line = format!(
        "{}, {}, {}",
        plural(rules.downgrades, "downgrade", "downgrades"),
        plural(rules.upgrades, "upgrade", "upgrades"),
        plural(other, "other rule change", "other rule changes")
    );
    if other_pins > 0 {
        let _ = write!(
            line,
            ", {}",
            plural(other_pins, "other pin change", "other pin changes")
        );
    }
    line
}

/// The pin changes going `direction`.
fn pins_going(rules: &PackDiff, direction: Direction) -> Vec<&PinChange> {
    rules
        .pins
        .iter()
        .filter(|p| p.direction == direction)
        .collect()
}

fn pin_presence(change: &PinChange) -> &'static str {
    match change.presence {
        drift::Presence::Added => "added",
        drift::Presence::Removed => "removed",
        drift::Presence::Changed => "changed",
    }
}

fn counts(report: &Report) -> String {
    let c = &report.changes;
    format!(
        "{} same, {} breaks, {} loosens, {} shifts, {} now valid, {} now invalid, {} unreplayable",
        c.same, c.breaks, c.loosens, c.shifts, c.now_valid, c.now_invalid, c.unreplayable
    )
}

fn text(names: (&str, &str), rules: &PackDiff, replayed: Option<&Drift>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} ({}) → {} ({}): {}",
        names.0,
        short(&rules.base),
        names.1,
        short(&rules.head),
        tally(rules)
    );
    for (title, direction) in [
        ("downgrades (away from enforcement)", Direction::Downgrade),
        ("upgrades (towards enforcement)", Direction::Upgrade),
        ("other changes", Direction::Neutral),
    ] {
        let changes: Vec<&RuleChange> = rules.going(direction).collect();
        let pins = pins_going(rules, direction);
        if changes.is_empty() && pins.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{title}:");
        for change in changes {
            let _ = writeln!(
                out,
                "  {}  {}  {}",
                printable(&change.rule),
                presence(change),
                printable(&change.at)
            );
            for why in &change.why {
                let _ = writeln!(out, "    {}", printable(why));
            }
            for field in &change.fields {
                let _ = writeln!(
                    out,
                    "    {}: {} → {}",
                    printable(&field.field),
                    printable(field.base.as_deref().unwrap_or("—")),
                    printable(field.head.as_deref().unwrap_or("—"))
                );
            }
        }
        for change in pins {
            let _ = writeln!(
                out,
                "  MCP pin {}  {}  arbiter.toml",
                printable(&change.subject()),
                pin_presence(change)
            );
            for why in &change.why {
                let _ = writeln!(out, "    {}", printable(why));
            }
            for field in &change.fields {
                let _ = writeln!(
                    out,
                    "    {}: {} → {}",
                    printable(&field.field),
                    printable(field.base.as_deref().unwrap_or("—")),
                    printable(field.head.as_deref().unwrap_or("—"))
                );
            }
        }
    }
    if let Some(drift) = replayed {
        let report = &drift.change;
        let _ = writeln!(
            out,
            "\non {} logged decisions, HEAD against BASE today{}:\n  {}",
            report.replayed,
            if report.interrupted {
                " (interrupted: only those replayed until Ctrl-C)"
            } else {
                ""
            },
            counts(report)
        );
        for (title, pick) in [
            ("breaks (allowed by BASE, denied by HEAD)", Pick::Breaks),
            ("loosens (denied by BASE, allowed by HEAD)", Pick::Loosens),
        ] {
            let groups: Vec<&Group> = report
                .by_rule
                .iter()
                .filter(|g| pick.count(g) > 0)
                .collect();
            if groups.is_empty() {
                continue;
            }
            let _ = writeln!(out, "  {title}, by rule:");
            for g in groups {
                let _ = writeln!(
                    out,
                    "    {}: {}  e.g. {}",
                    printable(&g.key),
                    pick.count(g),
                    g.examples.join(", ")
                );
            }
        }
        let _ = writeln!(
            out,
            "  HEAD against the log: {}\n  BASE against the log: {} (the log's age, not the change)",
            counts(&drift.head),
            counts(&drift.base)
        );
    }
    out
}

fn presence(change: &RuleChange) -> &'static str {
    match change.presence {
        drift::Presence::Added => "added",
        drift::Presence::Removed => "removed",
        drift::Presence::Changed => "changed",
    }
}

#[derive(Clone, Copy)]
enum Pick {
    Breaks,
    Loosens,
}

impl Pick {
    fn count(self, group: &Group) -> u64 {
        match self {
            Pick::Breaks => group.changes.breaks,
            Pick::Loosens => group.changes.loosens,
        }
    }
}

/// A table cell: no control character (a line break included), no column break, no HTML.
fn cell(text: &str) -> String {
    printable(text)
        .replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Inline code in a table cell (a backtick inside becomes a quote).
fn code(text: &str) -> String {
    format!("`{}`", cell(&text.replace('`', "'")))
}

/// A pull-request comment: a summary line, the downgrades, then the breaks and loosens by
/// rule with examples, within GitHub's comment size (rows past the budget are counted,
/// not shown).
fn markdown(names: (&str, &str), rules: &PackDiff, replayed: Option<&Drift>) -> String {
    let mut out = String::new();
    let mut summary = format!("### arbiter diff: {}", tally(rules));
    if rules.downgrades > 0 {
        summary = summary.replacen(
            &plural(rules.downgrades, "downgrade", "downgrades"),
            &format!(
                "**{}**",
                plural(rules.downgrades, "downgrade", "downgrades")
            ),
            1,
        );
    }
    if let Some(d) = replayed {
        let c = &d.change.changes;
        let _ = write!(
            summary,
            " · on {} logged decisions: {} breaks, {} loosens, {} shifts{}",
            d.change.replayed,
            c.breaks,
            c.loosens,
            c.shifts,
            if d.change.interrupted {
                " (interrupted)"
            } else {
                ""
            }
        );
    }
    let _ = writeln!(out, "{summary}\n");
    let _ = writeln!(
        out,
        "{} → {}\n",
        code(&format!("{} ({})", names.0, short(&rules.base))),
        code(&format!("{} ({})", names.1, short(&rules.head)))
    );
    let mut budget = Budget::new(COMMENT_BUDGET.saturating_sub(out.len() + 200));
    for (title, direction) in [
        ("Downgrades (away from enforcement)", Direction::Downgrade),
        ("Upgrades (towards enforcement)", Direction::Upgrade),
        ("Other rule changes", Direction::Neutral),
    ] {
        let changes: Vec<&RuleChange> = rules.going(direction).collect();
        let pins = pins_going(rules, direction);
        if changes.is_empty() && pins.is_empty() {
            continue;
        }
        let mut section = format!("#### {title}\n\n| rule | | what | where |\n|---|---|---|---|\n");
        let rule_rows = changes.iter().map(|c| {
            let what: Vec<String> = if c.why.is_empty() {
                c.fields.iter().map(|f| cell(&f.field)).collect()
            } else {
                c.why.iter().map(|w| cell(w)).collect()
            };
            format!(
                "| {} | {} | {} | {} |\n",
                code(&c.rule),
                presence(c),
                what.join("; "),
                code(&c.at)
            )
        });
        // A pin's texts are what a reviewer must read: the new ones are shown.
        let pin_rows = pins.iter().map(|p| {
            let mut what: Vec<String> = p.why.iter().map(|w| cell(w)).collect();
            what.extend(p.fields.iter().map(|f| match (f.field.as_str(), &f.head) {
                ("description" | "title" | "on_tool_change", Some(head)) => {
                    format!("{}: {}", cell(&f.field), code(head))
                }
                _ => cell(&f.field),
            }));
            format!(
                "| {} | {} | {} | {} |\n",
                code(&format!("MCP pin {}", p.subject())),
                pin_presence(p),
                what.join("; "),
                code("arbiter.toml")
            )
        });
        let rows: Vec<String> = rule_rows.chain(pin_rows).collect();
        budget.rows(&mut section, rows.into_iter());
        out.push_str(&section);
        out.push('\n');
    }
    if let Some(d) = replayed {
        for (title, pick) in [
            (
                "Breaks by rule (allowed by BASE, denied by HEAD)",
                Pick::Breaks,
            ),
            (
                "Loosens by rule (denied by BASE, allowed by HEAD)",
                Pick::Loosens,
            ),
        ] {
            let groups: Vec<&Group> = d
                .change
                .by_rule
                .iter()
                .filter(|g| pick.count(g) > 0)
                .collect();
            if groups.is_empty() {
                continue;
            }
            let mut section =
                format!("#### {title}\n\n| rule | count | examples |\n|---|---|---|\n");
            let rows = groups.iter().map(|g| {
                let examples: Vec<String> = g.examples.iter().map(|e| code(e)).collect();
                format!(
                    "| {} | {} | {} |\n",
                    code(&g.key),
                    pick.count(g),
                    examples.join(", ")
                )
            });
            budget.rows(&mut section, rows);
            out.push_str(&section);
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "<sub>HEAD against the log: {}. BASE against the log: {} (the log's age, not the \
             change).</sub>",
            counts(&d.head),
            counts(&d.base)
        );
    }
    out
}

/// What is left of the comment's size.
struct Budget {
    left: usize,
}

impl Budget {
    fn new(left: usize) -> Budget {
        Budget { left }
    }

    /// Appends rows while they fit, then says how many did not.
    fn rows(&mut self, section: &mut String, rows: impl ExactSizeIterator<Item = String>) {
        let total = rows.len();
        let mut shown = 0;
        self.left = self.left.saturating_sub(section.len());
        for row in rows {
            if row.len() + 120 > self.left {
                break;
            }
            self.left -= row.len();
            section.push_str(&row);
            shown += 1;
        }
        if shown < total {
            let note = format!(
                "\n…and {} more, not shown here (`arbiter diff --format json` lists all).\n",
                total - shown
            );
            self.left = self.left.saturating_sub(note.len());
            section.push_str(&note);
        }
    }
}

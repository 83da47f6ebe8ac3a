//! `arbiter candidate`: what the candidate pack in shadow (`arbiter serve --candidate`)
//! would change, read from the store (read-only, also while the server runs).

use std::path::PathBuf;
use std::process::ExitCode;

use arbiter_store::{CandidateReport, ShadowCounts, ShadowGroup, Store};
use clap::Args;

use crate::Failure;

/// `arbiter candidate` arguments.
#[derive(Debug, Args)]
pub struct CandidateArgs {
    /// The data directory.
    #[arg(long, default_value = "./arbiter-data", env = "ARBITER_DATA")]
    data: PathBuf,
    /// This candidate version (`sha256:…`) rather than the one loaded last.
    #[arg(long)]
    version: Option<String>,
    /// One JSON document (the shape of `GET /v1/candidate`) instead of tables.
    #[arg(long)]
    json: bool,
}

/// Runs `arbiter candidate`.
pub fn candidate(args: CandidateArgs) -> Result<ExitCode, Failure> {
    let store = Store::open_read_only(&args.data).map_err(|e| Failure::Input(e.to_string()))?;
    let report = store
        .candidate_report(args.version.as_deref())
        .map_err(|e| Failure::Input(e.to_string()))?;
    let Some(report) = report else {
        return Err(Failure::Input(match &args.version {
            Some(version) => format!(
                "{}: no candidate {version} has decided in shadow here",
                args.data.display()
            ),
            None => format!(
                "{}: no candidate has decided in shadow here (serve with --candidate DIR)",
                args.data.display()
            ),
        }));
    };
    if args.json {
        let text = serde_json::to_string(&report).map_err(|e| Failure::Input(e.to_string()))?;
        outln!("{text}")?;
    } else {
        print(&report)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print(report: &CandidateReport) -> Result<(), Failure> {
    let candidate = &report.candidate;
    outln!(
        "candidate {} from {} (sample {}), loaded {}",
        candidate.version,
        candidate.dir,
        candidate.sample,
        candidate.loaded_at
    )?;
    let span = match (report.first, report.last) {
        (Some(first), Some(last)) => format!(" from {first} to {last}"),
        _ => String::new(),
    };
    outln!(
        "{} decided in shadow{span}: {}; {} errored, {} dropped on a full queue",
        report.shadowed,
        counts(&report.changes, true),
        report.errored,
        report.dropped
    )?;
    for (title, groups, overflow) in [
        ("by rule", &report.by_rule, report.overflow.by_rule),
        (
            "by principal",
            &report.by_principal,
            report.overflow.by_principal,
        ),
    ] {
        if groups.is_empty() && overflow == 0 {
            continue;
        }
        outln!("\n{title}:")?;
        for group in groups {
            line(group)?;
        }
        if overflow > 0 {
            outln!("  … and {overflow} change(s) more, past the most groups kept")?;
        }
    }
    Ok(())
}

fn line(group: &ShadowGroup) -> Result<(), Failure> {
    outln!(
        "  {}: {}  e.g. {}",
        group.key,
        counts(&group.changes, false),
        group.examples.join(", ")
    )
}

fn counts(c: &ShadowCounts, same: bool) -> String {
    let mut parts = Vec::new();
    if same {
        parts.push(format!("{} same", c.same));
    }
    parts.extend([
        format!("{} breaks", c.breaks),
        format!("{} loosens", c.loosens),
        format!("{} shifts", c.shifts),
        format!("{} now valid", c.now_valid),
        format!("{} now invalid", c.now_invalid),
    ]);
    parts.join(", ")
}

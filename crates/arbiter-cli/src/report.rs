//! `arbiter report`: the evidence per framework control and per rule, as one HTML file,
//! Markdown or JSON.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use arbiter_core::clock::Clock;
use arbiter_lifecycle::report::{self, Format, Options};
use arbiter_store::Store;
use clap::{Args, ValueEnum};

use crate::{Failure, load};

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// One self-contained HTML file: tables and SVG charts, no script, printable.
    Html,
    /// The same content without charts.
    Markdown,
    /// The data behind both (docs/report.md).
    Json,
}

/// `arbiter report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The pack directory.
    #[arg(long)]
    pack: PathBuf,
    /// The data directory the server writes.
    #[arg(long, default_value = "./arbiter-data", env = "ARBITER_DATA")]
    data: PathBuf,
    /// The format.
    #[arg(long, value_enum)]
    format: FormatArg,
    /// Write here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Only this framework's controls (`OWASP-NHI`, `OWASP-ASI`, `NIST-CSF-2.0`, or one
    /// of the pack's `[frameworks]`).
    #[arg(long)]
    framework: Option<String>,
    /// Days of would-fire series.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=366))]
    days: u32,
}

/// Runs `arbiter report`.
pub fn report(args: ReportArgs, clock: &dyn Clock) -> Result<ExitCode, Failure> {
    let pack = load(&args.pack)?;
    if !args.data.join(arbiter_store::DB_FILE).is_file() {
        return Err(Failure::Input(format!(
            "no arbiter store in {} (is --data the server's data directory?)",
            args.data.display()
        )));
    }
    let store = Store::open_read_only(&args.data).map_err(|e| Failure::Input(e.to_string()))?;
    let options = Options {
        framework: args.framework,
        window_days: args.days,
    };
    let dir = args.pack.display().to_string();
    let found = report::gather(&pack, &dir, &store, &options, clock.now())
        .map_err(|e| Failure::Input(e.to_string()))?;
    let format = match args.format {
        FormatArg::Html => Format::Html,
        FormatArg::Markdown => Format::Markdown,
        FormatArg::Json => Format::Json,
    };
    let text = report::render(&found, format).map_err(|e| Failure::Input(e.to_string()))?;
    match &args.out {
        Some(path) => {
            // Written beside the target, then renamed: a reader never sees half a report.
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or_else(|| std::path::Path::new("."));
            let mut file = tempfile::NamedTempFile::new_in(dir)
                .map_err(|e| Failure::Input(format!("cannot write in {}: {e}", dir.display())))?;
            file.write_all(text.as_bytes())
                .and_then(|()| file.flush())
                .map_err(|e| Failure::Input(format!("cannot write {}: {e}", path.display())))?;
            file.persist(path)
                .map_err(|e| Failure::Input(format!("cannot write {}: {e}", path.display())))?;
        }
        None => {
            crate::output::unless_closed(crate::output::write_stdout(format_args!("{text}\n")))?
        }
    }
    Ok(ExitCode::SUCCESS)
}

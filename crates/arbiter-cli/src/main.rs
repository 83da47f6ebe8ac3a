//! The `arbiter` binary: argument parsing and output only. Everything worth testing lives
//! in `arbiter-core`.
//!
//! Exit codes: 0 ok, 1 a check failed, 2 usage or input error. A reader that closes
//! standard output early (`arbiter log | head -1`) ends the output quietly, with 0 (or the
//! verdict, for a command whose exit code is one).

#![forbid(unsafe_code)]

/// mimalloc instead of glibc's malloc: a decision allocates and frees many small strings
/// (the request, the record, the log's batch), and the log writer spent 15% of its time
/// freeing a batch; with mimalloc it writes a quarter more records a second and every
/// thread allocates faster (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `print!` that returns a `Result` instead of panicking on a closed standard output:
/// `out!(…)?` stops the command quietly there ([`Failure::Closed`]).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!($($arg)*))
    };
}

/// [`out!`] with a newline.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

mod candidate;
mod chains;
mod diff;
mod git;
mod lifecycle;
mod mcp;
mod mcp_pin;
mod output;
mod reload;
mod replay;
mod report;
mod serve;
mod token;

use std::io::{self, BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use arbiter_core::clock::SystemClock;
use arbiter_core::diag::Problems;
use arbiter_core::pack::file;
use arbiter_core::policy_tests::{self, Summary};
use arbiter_core::{DecisionRequest, Engine, Pack, TimeSource};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "arbiter",
    version,
    about = "A runtime policy decision point for non-human identities and AI agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load and validate a policy pack; print a summary, or every problem (exit 2).
    Validate {
        /// The pack directory.
        pack: PathBuf,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Decide requests offline, sharing session and throttle state as the server would.
    Check {
        /// The pack directory.
        pack: PathBuf,
        /// One JSON request.
        #[arg(long, conflicts_with = "requests")]
        request: Option<PathBuf>,
        /// JSON Lines, one request per line (`-` or absent: standard input).
        #[arg(long)]
        requests: Option<PathBuf>,
        /// Print one JSON response per line.
        #[arg(long)]
        json: bool,
    },
    /// Run the pack's policy tests (PACK/tests/*.yaml).
    Test {
        /// The pack directory.
        pack: PathBuf,
    },
    /// Serve decisions over HTTP, with the decision log in the data directory.
    Serve(serve::ServeArgs),
    /// Query the decision log (also while a server runs).
    Log(serve::LogArgs),
    /// Ask a running server to reload its pack (--force --reason for a pack that enforces
    /// nothing where the running one enforces something).
    Reload(reload::ReloadArgs),
    /// Issue, revoke and list credentials; rotate the signing key.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Audit and warn firings grouped by (rule, principal, action, resource).
    Findings(lifecycle::FindingsArgs),
    /// Label a finding: `expected` (the rule is right) or `legitimate` (it would break
    /// needed work).
    Review(lifecycle::ReviewArgs),
    /// Whether each rule not enforced yet is ready to be, from the evidence.
    Readiness(lifecycle::ReadinessArgs),
    /// Set a rule's @mode to enforce (or --to warn) in its source file, if it is ready.
    Promote(lifecycle::ModeArgs),
    /// Set a rule's @mode back to audit (or --to warn).
    Demote(lifecycle::ModeArgs),
    /// What each identity actually does; --suggest prints least-privilege permits.
    Baseline(lifecycle::BaselineArgs),
    /// Re-decide the logged requests of a window with a candidate pack, and report what
    /// would change (exit 1 with --fail-on when it does).
    Replay(replay::ReplayArgs),
    /// What a change of pack does: rules added, removed and changed, downgrades first;
    /// with --data, both packs replayed on the log (exit 1 with --fail-on when it does).
    Diff(diff::DiffArgs),
    /// What the candidate pack in shadow (`serve --candidate`) would change, from the
    /// store (also while the server runs).
    Candidate(candidate::CandidateArgs),
    /// Each chain's control level per identity, step by step, and where it is weakest
    /// (exit 1 with --fail-below when an identity's chain is below a level).
    Chains(chains::ChainsArgs),
    /// The evidence per framework control and per rule (mode, time in mode, readiness,
    /// findings, would-fire per day) and each chain's weakest steps, as one self-contained
    /// HTML file, Markdown or JSON.
    Report(report::ReportArgs),
    /// Put an MCP server behind arbiter: every tools/call the agent makes is decided and
    /// logged (`arbiter mcp-proxy --pack DIR -- <server command…>`, over stdio);
    /// `arbiter mcp-proxy pin` records its tools in the pack.
    McpProxy(mcp::McpProxyArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The one wall clock: commands take the time from it and pass it down.
    let clock = SystemClock;
    let result = match cli.command {
        Command::Validate { pack, json } => validate(&pack, json),
        Command::Check {
            pack,
            request,
            requests,
            json,
        } => check(&pack, request.as_deref(), requests.as_deref(), json),
        Command::Test { pack } => test(&pack),
        Command::Serve(args) => serve::serve(args),
        Command::Log(args) => serve::log(args),
        Command::Reload(args) => reload::reload(args),
        Command::Token(command) => token::run(command, &clock),
        Command::Findings(args) => lifecycle::findings(args),
        Command::Review(args) => lifecycle::review(args, &clock),
        Command::Readiness(args) => lifecycle::readiness(args, &clock),
        Command::Promote(args) => lifecycle::set_mode(args, true, &clock),
        Command::Demote(args) => lifecycle::set_mode(args, false, &clock),
        Command::Baseline(args) => lifecycle::baseline(args, &clock),
        Command::Replay(args) => replay::replay(args),
        Command::Diff(args) => diff::diff(args),
        Command::Candidate(args) => candidate::candidate(args),
        Command::Chains(args) => chains::chains(args, &clock),
        Command::Report(args) => report::report(args, &clock),
        Command::McpProxy(args) => mcp::mcp_proxy(args, clock),
    };
    match result {
        Ok(code) => code,
        Err(Failure::Input(message)) => {
            eprintln!("{message}");
            ExitCode::from(2)
        }
        // Whoever reads the output stopped reading: nothing went wrong here, and a
        // pipeline such as `arbiter log | head -1` should not fail (or print a panic)
        // because of it.
        Err(Failure::Closed) => ExitCode::SUCCESS,
    }
}

/// Why a command could not run at all, or stopped.
enum Failure {
    /// Bad input: a broken pack, an unreadable file. Exit 2.
    Input(String),
    /// Standard output was closed by its reader (a broken pipe). Exit 0, quietly.
    Closed,
}

impl From<Problems> for Failure {
    fn from(problems: Problems) -> Self {
        Failure::Input(problems.to_string())
    }
}

/// Who runs the command, for records that say who did what.
fn who() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "cli".to_owned())
}

fn load(pack: &Path) -> Result<Arc<Pack>, Failure> {
    let pack = Pack::load(pack)?;
    for warning in pack.warnings() {
        eprintln!("warning: {warning}");
    }
    Ok(Arc::new(pack))
}

fn validate(dir: &Path, json: bool) -> Result<ExitCode, Failure> {
    let pack = load(dir)?;
    let summary = output::summary(&pack);
    if json {
        outln!("{}", summary.to_json())?;
    } else {
        out!("{summary}")?;
    }
    Ok(ExitCode::SUCCESS)
}

fn check(
    dir: &Path,
    request: Option<&Path>,
    requests: Option<&Path>,
    json: bool,
) -> Result<ExitCode, Failure> {
    let pack = load(dir)?;
    let engine = Engine::new(pack).with_time_source(TimeSource::RequestMaySet);
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut invalid = 0usize;
    // Decides one request and prints it; says whether the request was invalid. A closed
    // standard output stops the command: the answers are its output, and nobody reads them.
    let decide = |text: &str, line: Option<usize>, out: &mut dyn Write| -> Result<bool, Failure> {
        let parsed = DecisionRequest::from_json(text);
        let result = parsed
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|r| engine.decide(r));
        let rendered = if json {
            output::json_line(&result)
        } else {
            output::human_line(parsed.ok().as_ref(), &result, line)
        };
        writeln!(out, "{rendered}").map_err(output::stdout_error)?;
        Ok(result.is_err())
    };
    if let Some(path) = request {
        let text =
            file::read(path).map_err(|e| Failure::Input(format!("{}: {e}", path.display())))?;
        invalid += usize::from(decide(&text, None, &mut out)?);
    } else {
        // Read line by line, from a file or streaming from standard input; a line that is
        // not UTF-8 is a malformed request like any other, and the rest still count. The
        // file may be long, so it is streamed; it must be a regular file (a FIFO would
        // block, a device never end: pipe into standard input instead), and no line may
        // be longer than a pack file may be.
        let (name, mut reader): (String, Box<dyn BufRead>) = match requests {
            Some(path) if path != Path::new("-") => (
                path.display().to_string(),
                Box::new(io::BufReader::new(file::open(path).map_err(|e| {
                    Failure::Input(format!("{}: {e}", path.display()))
                })?)),
            ),
            _ => ("standard input".to_owned(), Box::new(io::stdin().lock())),
        };
        let mut line = Vec::new();
        for n in 0.. {
            line.clear();
            let read = (&mut reader)
                .take(file::MAX_FILE_BYTES + 1)
                .read_until(b'\n', &mut line)
                .map_err(|e| Failure::Input(format!("{name}: line {}: {e}", n + 1)))?;
            if read == 0 {
                break;
            }
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            if u64::try_from(line.len()).unwrap_or(u64::MAX) > file::MAX_FILE_BYTES {
                return Err(Failure::Input(format!(
                    "{name}: line {} is longer than the limit of {} bytes (16 MiB)",
                    n + 1,
                    file::MAX_FILE_BYTES
                )));
            }
            let text = match String::from_utf8(std::mem::take(&mut line)) {
                Ok(text) => text,
                Err(_) => {
                    invalid += 1;
                    let error = arbiter_core::RequestError::Malformed(format!(
                        "line {} is not UTF-8",
                        n + 1
                    ));
                    let rendered = if json {
                        output::json_line(&Err(error))
                    } else {
                        output::human_line(None, &Err(error), Some(n + 1))
                    };
                    writeln!(out, "{rendered}").map_err(output::stdout_error)?;
                    continue;
                }
            };
            if text.trim().is_empty() {
                continue;
            }
            invalid += usize::from(decide(&text, Some(n + 1), &mut out)?);
        }
    }
    if invalid > 0 {
        eprintln!("{invalid} request(s) were invalid");
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

fn test(dir: &Path) -> Result<ExitCode, Failure> {
    let pack = load(dir)?;
    let files = policy_tests::load_tests(dir)?;
    if files.is_empty() {
        return Err(Failure::Input(format!(
            "{}: no tests (add tests/*.yaml)",
            dir.display()
        )));
    }
    // A reader that stops reading (`| head`) ends the report, not the run: the exit code
    // still says whether every test passed.
    let mut reading = true;
    let mut report = |line: std::fmt::Arguments<'_>| -> Result<(), Failure> {
        if reading {
            match outln!("{line}") {
                Err(Failure::Closed) => reading = false,
                other => other?,
            }
        }
        Ok(())
    };
    let total: usize = files.iter().map(|f| f.tests.len()).sum();
    report(format_args!(
        "running {total} test{}",
        if total == 1 { "" } else { "s" }
    ))?;
    let mut summary = Summary {
        passed: 0,
        failed: 0,
    };
    let mut failures = Vec::new();
    for file in &files {
        for case in &file.tests {
            let outcome = policy_tests::run_test(&pack, &file.path, case);
            if outcome.passed() {
                summary.passed += 1;
                report(format_args!("test {} ... ok", outcome.name))?;
            } else {
                summary.failed += 1;
                report(format_args!("test {} ... FAILED", outcome.name))?;
                failures.push(outcome);
            }
        }
    }
    if !failures.is_empty() {
        report(format_args!("\nfailures:"))?;
        for f in &failures {
            report(format_args!("\n---- {} ----", f.name))?;
            for line in &f.failures {
                report(format_args!("  {line}"))?;
            }
        }
    }
    report(format_args!("\n{summary}"))?;
    Ok(if summary.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

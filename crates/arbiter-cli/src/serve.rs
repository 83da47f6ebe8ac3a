//! `arbiter serve` and `arbiter log`: wiring the server to the process (signals, the
//! listener, the generated admin token) and reading the decision log.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use arbiter_server::{App, Durability, Options};
use arbiter_service::shadow::Sample;
use arbiter_store::{DecisionQuery, Store};

use crate::Failure;

/// Arguments of `arbiter serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The pack directory.
    #[arg(long)]
    pub pack: PathBuf,
    /// The data directory: the decision log (SQLite), keys, the generated admin token.
    #[arg(long, default_value = "./arbiter-data", env = "ARBITER_DATA")]
    pub data: PathBuf,
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:8700", env = "ARBITER_LISTEN")]
    pub listen: SocketAddr,
    /// `batched` answers once a decision is queued for the log; `sync` once it is committed.
    #[arg(long, value_enum, default_value = "batched")]
    pub durability: DurabilityArg,
    /// Listen beyond loopback without PEP tokens on decision endpoints.
    #[arg(long)]
    pub allow_open_decisions: bool,
    /// Serve no dashboard: `/ui` answers 404, as any unknown path.
    #[arg(long)]
    pub no_ui: bool,
    /// The largest request body, in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub body_limit: usize,
    /// Connections held open at once (never more than the file limit less 64); more
    /// wait in the listen backlog.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Seconds a client has to send a request's headers; also how long a kept-alive
    /// connection may sit idle.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub header_timeout: u64,
    /// Reload the pack when its files change.
    #[arg(long)]
    pub watch: bool,
    /// A candidate pack that decides a sample of live requests in shadow, never changing
    /// an answer; `GET /v1/candidate` and `arbiter candidate` show what it would change.
    #[arg(long, value_name = "DIR")]
    pub candidate: Option<PathBuf>,
    /// The fraction of principals the candidate decides for (all of a principal's
    /// requests, or none), above 0 and at most 1.
    #[arg(long, default_value = "0.1", value_parser = sample, requires = "candidate")]
    pub candidate_sample: Sample,
    /// The admin token (otherwise the one in the data dir, generated on first start).
    #[arg(long = "admin-token-env", hide = true, env = "ARBITER_ADMIN_TOKEN")]
    pub admin_token: Option<String>,
}

/// `--durability` as it is written. The words are the store's; clap refuses any other
/// (exit 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DurabilityArg {
    Batched,
    Sync,
}

impl From<DurabilityArg> for Durability {
    fn from(arg: DurabilityArg) -> Durability {
        match arg {
            DurabilityArg::Batched => Durability::Batched,
            DurabilityArg::Sync => Durability::Sync,
        }
    }
}

/// `--candidate-sample`, read as the decision service reads it.
fn sample(text: &str) -> Result<Sample, String> {
    let fraction: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    Sample::new(fraction).map_err(|e| e.to_string())
}

pub fn serve(args: ServeArgs) -> Result<ExitCode, Failure> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ARBITER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal: a log collector would keep the escapes.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Input(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(run(args))
}

async fn run(args: ServeArgs) -> Result<ExitCode, Failure> {
    let mut options = Options::new(&args.pack, &args.data);
    options.durability = args.durability.into();
    options.body_limit = args.body_limit;
    options.max_connections = usize::try_from(args.max_connections).unwrap_or(usize::MAX);
    options.header_read_timeout = std::time::Duration::from_secs(args.header_timeout);
    options.admin_token = args.admin_token.clone();
    options.require_pep_tokens = !args.listen.ip().is_loopback() && !args.allow_open_decisions;
    options.candidate = args.candidate.clone();
    options.ui = !args.no_ui;
    options.candidate_sample = args.candidate_sample;
    let (app, generated) = App::start(options)
        .await
        .map_err(|e| Failure::Input(e.to_string()))?;
    if !args.listen.ip().is_loopback() && !app.requires_pep_tokens() && !args.allow_open_decisions {
        app.shutdown().await;
        return Err(Failure::Input(format!(
            "refusing to listen on {} without PEP tokens: set [server] pep_tokens in arbiter.toml, \
             or pass --allow-open-decisions",
            args.listen
        )));
    }
    if let Some(token) = generated {
        eprintln!(
            "generated the admin token (kept in {}/admin.token, shown once):\n{token}",
            args.data.display()
        );
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| Failure::Input(format!("cannot listen on {}: {e}", args.listen)))?;
    let local = listener
        .local_addr()
        .map_err(|e| Failure::Input(format!("no local address: {e}")))?;
    eprintln!("arbiter listening on http://{local}");
    spawn_reload_on_hangup(app.clone());
    let _watcher =
        if args.watch {
            Some(arbiter_server::watch::watch(app.clone()).map_err(|e| {
                Failure::Input(format!("cannot watch {}: {e}", args.pack.display()))
            })?)
        } else {
            None
        };
    arbiter_server::serve(app, listener, terminated())
        .await
        .map_err(|e| Failure::Input(format!("server error: {e}")))?;
    eprintln!("arbiter stopped; the decision log is drained");
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGTERM or SIGINT.
pub(crate) async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// SIGHUP reloads the pack, and the candidate in shadow if there is one.
fn spawn_reload_on_hangup(app: std::sync::Arc<App>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangup) = signal(SignalKind::hangup()) else {
            return;
        };
        while hangup.recv().await.is_some() {
            match app.reload().await {
                Ok(version) => eprintln!("SIGHUP: reloaded {version}"),
                Err(problems) => {
                    eprintln!("SIGHUP: reload refused, the running pack stays:\n{problems}")
                }
            }
            match app.reload_candidate().await {
                Ok(version) => eprintln!("SIGHUP: reloaded the candidate {version}"),
                Err(arbiter_server::CandidateError::None) => {}
                Err(refused) => eprintln!(
                    "SIGHUP: candidate reload refused, the running candidate stays:\n{refused}"
                ),
            }
        }
    });
}

/// Arguments of `arbiter log`.
#[derive(Debug, clap::Args)]
pub struct LogArgs {
    /// The data directory.
    #[arg(long, default_value = "./arbiter-data", env = "ARBITER_DATA")]
    pub data: PathBuf,
    /// Only decisions at or after this time (RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    /// Only decisions before this time (RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
    /// Only decisions where this rule fired.
    #[arg(long)]
    pub rule: Option<String>,
    /// Only this principal (`Agent::"bot"`).
    #[arg(long)]
    pub principal: Option<String>,
    /// Only this action (`Action::"read"`).
    #[arg(long)]
    pub action: Option<String>,
    /// Only `allow`, `deny` or `invalid`.
    #[arg(long, value_parser = ["allow", "deny", "invalid"])]
    pub decision: Option<String>,
    /// Only decisions where a rule fired in this mode.
    #[arg(long, value_parser = ["audit", "warn", "enforce"])]
    pub mode: Option<String>,
    /// How many, newest first (1 to 1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// Continue from a previous page's `next`.
    #[arg(long)]
    pub cursor: Option<String>,
    /// JSON: `{"decisions": [...], "next": …}`.
    #[arg(long)]
    pub json: bool,
}

pub fn log(args: LogArgs) -> Result<ExitCode, Failure> {
    let time = |field: &str, v: &Option<String>| -> Result<Option<jiff::Timestamp>, Failure> {
        v.as_ref()
            .map(|t| {
                t.parse().map_err(|e| {
                    Failure::Input(format!("--{field}: `{t}` is not an RFC 3339 time ({e})"))
                })
            })
            .transpose()
    };
    let query = DecisionQuery {
        since: time("since", &args.since)?,
        until: time("until", &args.until)?,
        rule: args.rule.clone(),
        principal: args.principal.clone(),
        action: args.action.clone(),
        decision: args.decision.clone(),
        mode: args.mode.clone(),
        limit: args.limit,
        cursor: args.cursor.clone(),
    };
    let store = Store::open_read_only(&args.data).map_err(|e| Failure::Input(e.to_string()))?;
    let page = store
        .query_decisions(&query)
        .map_err(|e| Failure::Input(e.to_string()))?;
    if args.json {
        let text = serde_json::to_string(&page).map_err(|e| Failure::Input(e.to_string()))?;
        outln!("{text}")?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{:<24}  {:<8}  {:<8}  {:<28}  {:<24}  {:<28}  rules",
        "time",
        "decision",
        "effect",
        "principal",
        "action",
        "resource"
    )?;
    for d in &page.decisions {
        let mut rules: Vec<String> = d
            .enforced
            .iter()
            .map(|r| format!("{r} (enforce)"))
            .collect();
        rules.extend(d.warnings.iter().map(|r| format!("{r} (warn)")));
        rules.extend(d.audit.iter().map(|a| format!("{} (audit)", a.rule)));
        let time = d.time.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
        outln!(
            "{:<24}  {:<8}  {:<8}  {:<28}  {:<24}  {:<28}  {}",
            time,
            d.decision,
            d.effect.map_or("-", |e| e.as_str()),
            d.principal.as_deref().unwrap_or("-"),
            d.action.as_deref().unwrap_or("-"),
            d.resource.as_deref().unwrap_or("-"),
            rules.join(", ")
        )?;
    }
    if let Some(next) = &page.next {
        outln!("more: --cursor {next}")?;
    }
    Ok(ExitCode::SUCCESS)
}

//! `arbiter mcp-proxy`: the MCP gateway wired to the process. Who the agent is comes from
//! the environment (or a flag); the proxy's own log goes to standard error or a file,
//! never to standard output, which carries the agent's messages; the exit code says how
//! the session ended.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use arbiter_core::clock::SystemClock;
use arbiter_mcp::jsonrpc::DEFAULT_MAX_MESSAGE_BYTES;
use arbiter_mcp::{Ended, Gateway, Options, Pdp, Who};

use crate::Failure;
use crate::serve::DurabilityArg;

/// Arguments of `arbiter mcp-proxy`.
#[derive(Debug, clap::Args)]
pub struct McpProxyArgs {
    /// The pack directory.
    #[arg(long)]
    pub pack: PathBuf,
    /// The data directory: the decision log, the keys, the revocations.
    #[arg(long, default_value = "./arbiter-data", env = "ARBITER_DATA")]
    pub data: PathBuf,
    /// The agent's arbiter token (`arbiter token issue`), verified at every call. Prefer
    /// the environment variable: a command line is visible to other users.
    #[arg(long, env = "ARBITER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Instead of a token, a principal for local use (`Agent::"dev"`): taken on trust,
    /// and its decisions are logged as unverified.
    #[arg(long, env = "ARBITER_MCP_PRINCIPAL", conflicts_with = "token")]
    pub principal: Option<String>,
    /// The MCP server's name in the decision log (default: the command's file name).
    #[arg(long)]
    pub upstream_name: Option<String>,
    /// The largest message read from the agent or the server, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_MESSAGE_BYTES as u64,
          value_parser = clap::value_parser!(u64).range(1024..=1 << 30))]
    pub max_message_bytes: u64,
    /// Append the proxy's own log to this file instead of standard error.
    #[arg(long)]
    pub log_file: Option<PathBuf>,
    /// `batched` answers once a decision is queued for the log; `sync` once it is committed.
    #[arg(long, value_enum, default_value = "batched")]
    pub durability: DurabilityArg,
    /// Ask a running `arbiter serve` at this URL (`http://127.0.0.1:8700`) instead of
    /// deciding in this process: it decides, records and revokes. `--pack` still maps the
    /// calls (`[mcp]`) and filters tool lists; keep it the pack the server runs.
    #[arg(long, value_name = "URL")]
    pub pdp: Option<String>,
    /// The PEP token the server's `[server] pep_tokens` accepts. Prefer the environment
    /// variable.
    #[arg(
        long,
        env = "ARBITER_PEP_TOKEN",
        hide_env_values = true,
        requires = "pdp"
    )]
    pub pep_token: Option<String>,
    /// How long a remote decision may take, in milliseconds, before the call is refused
    /// (fail closed). A tool's `pdp_timeout_ms` can only shorten it.
    #[arg(long, default_value_t = 250, requires = "pdp",
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub pdp_timeout_ms: u64,
    /// Serve Prometheus metrics (`GET /metrics`) on this address, e.g. `127.0.0.1:9464`.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// The MCP server to start, after `--`: `arbiter mcp-proxy --pack p -- npx server`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

pub fn mcp_proxy(args: McpProxyArgs, clock: SystemClock) -> Result<ExitCode, Failure> {
    log_to(args.log_file.as_deref())?;
    let who = match (args.token.clone(), args.principal.clone()) {
        (Some(token), _) => Who::Token(token),
        (None, Some(principal)) => Who::Principal(principal),
        (None, None) => {
            return Err(Failure::Input(
                "who is the agent? Set ARBITER_TOKEN to its arbiter token (`arbiter token \
                 issue`), or pass --principal 'Agent::\"dev\"' for local use (unverified)"
                    .to_owned(),
            ));
        }
    };
    let upstream = args.upstream_name.clone().unwrap_or_else(|| {
        args.command
            .first()
            .map(Path::new)
            .and_then(Path::file_name)
            .map_or_else(|| "mcp".to_owned(), |n| n.to_string_lossy().into_owned())
    });
    let mut options = Options::new(&args.pack, &args.data, who, &upstream);
    options.max_message_bytes = usize::try_from(args.max_message_bytes).unwrap_or(usize::MAX);
    options.durability = args.durability.into();
    options.clock = Arc::new(clock);
    if let Some(url) = &args.pdp {
        let mut pdp = Pdp::new(url, args.pep_token.clone());
        pdp.timeout = std::time::Duration::from_millis(args.pdp_timeout_ms);
        options.pdp = Some(pdp);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Input(format!("cannot start the runtime: {e}")))?;
    let outcome = runtime.block_on(run(options, &args.command, args.metrics));
    // Standard input is read on a blocking thread that cannot be interrupted: do not wait
    // for it.
    runtime.shutdown_background();
    outcome
}

async fn run(
    options: Options,
    command: &[OsString],
    metrics: Option<std::net::SocketAddr>,
) -> Result<ExitCode, Failure> {
    let gateway = Gateway::start(options)
        .await
        .map_err(|e| Failure::Input(e.to_string()))?;
    let _metrics = match metrics {
        Some(addr) => Some(
            arbiter_mcp::metrics::serve(addr, Arc::clone(gateway.metrics()))
                .await
                .map_err(|e| Failure::Input(format!("--metrics {addr}: {e}")))?,
        ),
        None => None,
    };
    let finished = arbiter_mcp::stdio::serve(&gateway, command).await;
    gateway.shutdown().await;
    let finished = finished.map_err(|e| {
        Failure::Input(format!(
            "cannot start the MCP server `{}`: {e}",
            command
                .first()
                .map_or_else(String::new, |c| c.to_string_lossy().into_owned())
        ))
    })?;
    let status = finished
        .status
        .map_or_else(|| "killed".to_owned(), |s| s.to_string());
    Ok(match finished.ended {
        Ended::ClientClosed => {
            tracing::info!(server = %status, "the agent ended the session");
            ExitCode::SUCCESS
        }
        Ended::UpstreamClosed => {
            tracing::error!(server = %status, "the MCP server ended the session");
            ExitCode::from(1)
        }
        Ended::Revoked => {
            tracing::warn!(
                server = %status,
                "a revoke effect revoked the credential and ended the session"
            );
            ExitCode::from(1)
        }
    })
}

/// The proxy's own log: `ARBITER_LOG` levels (default `info`), to a file when asked,
/// otherwise to standard error.
fn log_to(file: Option<&Path>) -> Result<(), Failure> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ARBITER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| Failure::Input(format!("--log-file {}: {e}", path.display())))?;
            builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .try_init()
        }
        None => {
            use std::io::IsTerminal;
            builder
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(std::io::stderr)
                .try_init()
        }
    };
    Ok(())
}

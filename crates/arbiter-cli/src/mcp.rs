//! `arbiter mcp-proxy`: the MCP gateway wired to the process. Who the agent is comes from
//! the environment (or a flag); the proxy's own log goes to standard error or a file,
//! never to standard output, which carries the agent's messages; the exit code says how
//! the session ended. With `--ext-mcp ADDR` it wraps no server: it serves agentgateway's
//! external MCP hook until it is stopped, and each call says who calls.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use arbiter_core::clock::SystemClock;
use arbiter_mcp::jsonrpc::DEFAULT_MAX_MESSAGE_BYTES;
use arbiter_mcp::{Ended, Gateway, Options, Who};

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
    /// The MCP server to start, after `--`: `arbiter mcp-proxy --pack p -- npx server`.
    #[arg(
        last = true,
        required_unless_present = "ext_mcp",
        value_name = "COMMAND"
    )]
    pub command: Vec<OsString>,
    /// Instead of wrapping a server, serve agentgateway's external MCP hook (the `ExtMcp`
    /// gRPC interface of its `mcpGuardrails`) on this address. Each call presents its own
    /// arbiter token; `--principal`, if given, decides for calls that present none.
    #[arg(long, value_name = "ADDR", conflicts_with_all = ["token", "upstream_name", "command"])]
    pub ext_mcp: Option<SocketAddr>,
}

pub fn mcp_proxy(args: McpProxyArgs, clock: SystemClock) -> Result<ExitCode, Failure> {
    log_to(args.log_file.as_deref())?;
    let who = match (args.token.clone(), args.principal.clone()) {
        (Some(token), _) => Who::Token(token),
        (None, Some(principal)) => Who::Principal(principal),
        (None, None) if args.ext_mcp.is_some() => Who::EachCall,
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Input(format!("cannot start the runtime: {e}")))?;
    let outcome = match args.ext_mcp {
        Some(addr) => runtime.block_on(run_ext_mcp(options, addr)),
        None => runtime.block_on(run(options, &args.command)),
    };
    // Standard input is read on a blocking thread that cannot be interrupted: do not wait
    // for it.
    runtime.shutdown_background();
    outcome
}

async fn run(options: Options, command: &[OsString]) -> Result<ExitCode, Failure> {
    let gateway = Gateway::start(options)
        .await
        .map_err(|e| Failure::Input(e.to_string()))?;
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

/// agentgateway's hook on `addr` until SIGTERM or Ctrl-C; then the decision log is drained.
async fn run_ext_mcp(options: Options, addr: SocketAddr) -> Result<ExitCode, Failure> {
    let gateway = Gateway::start(options)
        .await
        .map_err(|e| Failure::Input(e.to_string()))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Failure::Input(format!("cannot listen on {addr}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| Failure::Input(format!("no local address: {e}")))?;
    eprintln!("arbiter mcp-proxy ext-mcp listening on {local}");
    let served = arbiter_mcp::ext_mcp::serve(&gateway, listener, crate::serve::terminated()).await;
    gateway.shutdown().await;
    served.map_err(|e| Failure::Input(format!("ext-mcp server error: {e}")))?;
    eprintln!("arbiter mcp-proxy ext-mcp stopped; the decision log is drained");
    Ok(ExitCode::SUCCESS)
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

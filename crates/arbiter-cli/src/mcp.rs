//! `arbiter mcp-proxy`: the MCP gateway wired to the process. Over stdio, who the agent is
//! comes from the environment (or a flag); the proxy's own log goes to standard error or a
//! file, never to standard output, which carries the agent's messages; the exit code says
//! how the session ended. Over Streamable HTTP (`--listen`), each request says who calls,
//! and the proxy runs until SIGINT or SIGTERM. With `--ext-mcp ADDR` it wraps no server:
//! it serves agentgateway's external MCP hook until it is stopped, and each call says who
//! calls.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use arbiter_core::clock::SystemClock;
use arbiter_mcp::http::{HttpOptions, Upstream};
use arbiter_mcp::jsonrpc::DEFAULT_MAX_MESSAGE_BYTES;
use arbiter_mcp::{Ended, Gateway, Options, Pdp, Who};

use crate::Failure;
use crate::serve::DurabilityArg;

/// Arguments of `arbiter mcp-proxy`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct McpProxyArgs {
    /// `pin`: record the server's tools in the pack instead of proxying.
    #[command(subcommand)]
    pub action: Option<McpProxyCommand>,
    /// The pack directory.
    #[arg(long, required = true)]
    pub pack: Option<PathBuf>,
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
    #[arg(long, conflicts_with = "listen")]
    pub upstream_name: Option<String>,
    /// Serve Streamable HTTP on this address (`127.0.0.1:8080`) instead of stdio; each
    /// request brings its own `Authorization: Bearer <arbiter token>`.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// With `--listen`: an MCP server as `NAME=URL`, served at `/mcp/NAME`. Repeatable.
    /// `/mcp` serves the only one or, with several, all of them at once: each tool and
    /// prompt named `NAME__tool` (`[mcp] namespace_separator`), each call routed to its
    /// server and decided as on `/mcp/NAME`.
    #[arg(long, value_name = "NAME=URL", requires = "listen")]
    pub upstream: Vec<String>,
    /// With `--listen`: seconds a server has to start answering, and at most between two
    /// parts of an answer.
    #[arg(long, default_value_t = 120, requires = "listen",
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub upstream_timeout: u64,
    /// With `--listen`: seconds a client has to send a request's headers, then its body.
    #[arg(long, default_value_t = 30, requires = "listen",
          value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub request_timeout: u64,
    /// With `--listen`: connections held at once.
    #[arg(long, default_value_t = 1024, requires = "listen",
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,
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
    #[arg(
        last = true,
        required_unless_present_any = ["listen", "ext_mcp"],
        conflicts_with = "listen",
        value_name = "COMMAND"
    )]
    pub command: Vec<OsString>,
    /// Instead of wrapping a server, serve agentgateway's external MCP hook (the `ExtMcp`
    /// gRPC interface of its `mcpGuardrails`) on this address. Each call presents its own
    /// arbiter token; `--principal`, if given, decides for calls that present none.
    #[arg(long, value_name = "ADDR", conflicts_with_all = ["token", "upstream_name", "command", "listen", "pdp"])]
    pub ext_mcp: Option<SocketAddr>,
}

/// What `arbiter mcp-proxy` does besides proxying.
#[derive(Debug, clap::Subcommand)]
pub enum McpProxyCommand {
    /// Record each tool of the server (name, description, schema hashes) in the pack's
    /// arbiter.toml under [mcp.pins.<upstream>]; a tool that later differs is refused.
    Pin(Box<crate::mcp_pin::PinArgs>),
}

pub fn mcp_proxy(args: McpProxyArgs, clock: SystemClock) -> Result<ExitCode, Failure> {
    if let Some(McpProxyCommand::Pin(pin)) = args.action {
        return crate::mcp_pin::pin(*pin);
    }
    let Some(pack) = args.pack.clone() else {
        return Err(Failure::Input("--pack is required".to_owned()));
    };
    if let Some(listen) = args.listen {
        let upstreams = upstreams(&args.upstream)?;
        log_to(args.log_file.as_deref())?;
        return http(args, pack, listen, upstreams, clock);
    }
    log_to(args.log_file.as_deref())?;
    let who = match (args.token.clone(), args.principal.clone()) {
        (Some(token), _) => Who::Token(token),
        (None, Some(principal)) => Who::Principal(principal),
        (None, None) if args.ext_mcp.is_some() => Who::PerRequest { fallback: None },
        (None, None) => {
            return Err(Failure::Input(
                "who is the agent? Set ARBITER_TOKEN to its arbiter token (`arbiter token \
                 issue`), or pass --principal 'Agent::\"dev\"' for local use (unverified)"
                    .to_owned(),
            ));
        }
    };
    let upstream = crate::mcp_pin::upstream_name(args.upstream_name.as_deref(), &args.command);
    let mut options = Options::new(&pack, &args.data, who, &upstream);
    configure(&mut options, &args, clock);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Input(format!("cannot start the runtime: {e}")))?;
    let outcome = match args.ext_mcp {
        Some(addr) => runtime.block_on(run_ext_mcp(options, addr, args.metrics)),
        None => runtime.block_on(run(options, &args.command, args.metrics)),
    };
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
    let _metrics = serve_metrics(&gateway, metrics).await?;
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

/// What both transports take from the command line: limits, durability, the clock, and
/// a remote decision point.
fn configure(options: &mut Options, args: &McpProxyArgs, clock: SystemClock) {
    options.max_message_bytes = usize::try_from(args.max_message_bytes).unwrap_or(usize::MAX);
    options.durability = args.durability.into();
    options.clock = Arc::new(clock);
    if let Some(url) = &args.pdp {
        let mut pdp = Pdp::new(url, args.pep_token.clone());
        pdp.timeout = Duration::from_millis(args.pdp_timeout_ms);
        options.pdp = Some(pdp);
    }
}

/// `--metrics ADDR`: the gateway's metrics, served until the returned guard is dropped.
async fn serve_metrics(
    gateway: &Gateway,
    addr: Option<SocketAddr>,
) -> Result<Option<arbiter_mcp::metrics::Served>, Failure> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    arbiter_mcp::metrics::serve(addr, Arc::clone(gateway.metrics()))
        .await
        .map(Some)
        .map_err(|e| Failure::Input(format!("--metrics {addr}: {e}")))
}

/// `--upstream NAME=URL`, each checked: a name fit for a path, an http(s) URL, no name
/// twice.
fn upstreams(given: &[String]) -> Result<Vec<Upstream>, Failure> {
    if given.is_empty() {
        return Err(Failure::Input(
            "--listen needs at least one --upstream NAME=URL: the MCP server to forward to"
                .to_owned(),
        ));
    }
    let mut upstreams: Vec<Upstream> = Vec::new();
    for one in given {
        let Some((name, url)) = one.split_once('=') else {
            return Err(Failure::Input(format!(
                "--upstream `{one}`: expected NAME=URL, like everything=http://127.0.0.1:3001/mcp"
            )));
        };
        let fits = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !fits {
            return Err(Failure::Input(format!(
                "--upstream `{one}`: the name `{name}` must be 1 to 64 letters, digits, `-`, `_` or `.` (it is the path /mcp/NAME)"
            )));
        }
        let url = match reqwest::Url::parse(url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => url,
            Ok(_) => {
                return Err(Failure::Input(format!(
                    "--upstream `{one}`: the URL must be http:// or https:// with a host"
                )));
            }
            Err(e) => {
                return Err(Failure::Input(format!(
                    "--upstream `{one}`: `{url}` is not a URL: {e}"
                )));
            }
        };
        if upstreams.iter().any(|u| u.name == name) {
            return Err(Failure::Input(format!(
                "--upstream `{one}`: the name `{name}` is given twice"
            )));
        }
        upstreams.push(Upstream {
            name: name.to_owned(),
            url,
        });
    }
    Ok(upstreams)
}

/// `--listen`: the HTTP proxy until SIGINT or SIGTERM.
fn http(
    args: McpProxyArgs,
    pack: PathBuf,
    listen: SocketAddr,
    upstreams: Vec<Upstream>,
    clock: SystemClock,
) -> Result<ExitCode, Failure> {
    if args.token.is_some() {
        tracing::warn!(
            "ARBITER_TOKEN / --token is not used with --listen: each request sends its own \
             `Authorization: Bearer` token"
        );
    }
    let who = Who::PerRequest {
        fallback: args.principal.clone(),
    };
    let mut options = Options::new(&pack, &args.data, who, "");
    configure(&mut options, &args, clock);
    let mut http = HttpOptions::new(upstreams);
    http.upstream_timeout = Duration::from_secs(args.upstream_timeout);
    http.request_timeout = Duration::from_secs(args.request_timeout);
    http.max_connections = usize::try_from(args.max_connections).unwrap_or(usize::MAX);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Input(format!("cannot start the runtime: {e}")))?;
    let outcome = runtime.block_on(async move {
        let gateway = Gateway::start(options)
            .await
            .map_err(|e| Failure::Input(e.to_string()))?;
        let _metrics = serve_metrics(&gateway, args.metrics).await?;
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(listener) => listener,
            Err(e) => {
                gateway.shutdown().await;
                return Err(Failure::Input(format!("cannot listen on {listen}: {e}")));
            }
        };
        let local = listener
            .local_addr()
            .map_err(|e| Failure::Input(format!("no local address: {e}")))?;
        for upstream in &http.upstreams {
            tracing::info!(upstream = upstream.name, url = %upstream.url, "forwarding /mcp/{}", upstream.name);
        }
        if http.upstreams.len() > 1 {
            tracing::info!("/mcp serves every upstream at once, each tool named <upstream><separator><tool>");
        }
        eprintln!("arbiter mcp-proxy listening on http://{local}");
        arbiter_mcp::http::serve(gateway, http, listener, crate::serve::terminated())
            .await
            .map_err(|e| Failure::Input(format!("server error: {e}")))?;
        eprintln!("arbiter mcp-proxy stopped; the decision log is drained");
        Ok(ExitCode::SUCCESS)
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    outcome
}

/// agentgateway's hook on `addr` until SIGTERM or Ctrl-C; then the decision log is drained.
async fn run_ext_mcp(
    options: Options,
    addr: SocketAddr,
    metrics: Option<SocketAddr>,
) -> Result<ExitCode, Failure> {
    let gateway = Gateway::start(options)
        .await
        .map_err(|e| Failure::Input(e.to_string()))?;
    let _metrics = serve_metrics(&gateway, metrics).await?;
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

//! The stdio transport: the agent starts the proxy in the server's place, and the proxy
//! starts the server. The agent's messages come on standard input and its answers go to
//! standard output, which carries nothing else (logs go to standard error or a file);
//! the server's standard error is passed through to the proxy's.

use std::ffi::OsString;
use std::io;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::gateway::Gateway;
use crate::proxy::{self, Ended};

/// How long a server has to exit after its input is closed before it is killed.
const GRACE: Duration = Duration::from_secs(5);

/// How a stdio session ended, and how the server did.
#[derive(Debug)]
pub struct Finished {
    /// Why the session ended.
    pub ended: Ended,
    /// The server's exit status, when it exited (it is killed otherwise).
    pub status: Option<ExitStatus>,
}

/// Starts `command` and proxies this process's standard input and output to it until
/// one side closes or a `revoke` ends the session.
pub async fn serve(gateway: &Gateway, command: &[OsString]) -> io::Result<Finished> {
    let Some((program, args)) = command.split_first() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no MCP server command was given",
        ));
    };
    let Some(gate) = gateway.gate() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the stdio transport needs a token or a principal for the agent",
        ));
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(io::Error::other("the MCP server's pipes were not opened"));
    };
    if let Some(service) = gateway.service()
        && service
            .engine()
            .pack()
            .rules()
            .iter()
            .any(|rule| rule.effect == Some(arbiter_core::rule::Effect::Throttle))
    {
        // Each stdio session is its own process: its buckets start full.
        tracing::warn!(
            "throttles count within this proxy process, and a new stdio session starts a new \
             one: to hold a throttle across an agent's sessions, decide with --pdp (a running \
             `arbiter serve`) or serve agents over HTTP (--listen)"
        );
    }
    tracing::info!(
        session = gate.session().unwrap_or_default(),
        "MCP session started"
    );
    let ended = proxy::run(
        &gate,
        gateway.max_message_bytes(),
        tokio::io::stdin(),
        tokio::io::stdout(),
        stdout,
        stdin,
    )
    .await;
    let status = finish(&mut child, ended).await;
    Ok(Finished { ended, status })
}

/// Lets the server exit (its input is closed), or kills it: at once after a `revoke`,
/// after [`GRACE`] otherwise.
async fn finish(child: &mut Child, ended: Ended) -> Option<ExitStatus> {
    if ended != Ended::Revoked
        && let Ok(Ok(status)) = tokio::time::timeout(GRACE, child.wait()).await
    {
        return Some(status);
    }
    if let Err(e) = child.kill().await {
        tracing::warn!(error = %e, "killing the MCP server");
    }
    None
}

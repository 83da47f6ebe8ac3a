//! `arbiter reload`: ask a running server to reload its pack, and, where the new pack
//! would enforce nothing, force it with a reason (recorded by the server).

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::{Value, json};

use crate::Failure;

/// Arguments of `arbiter reload`.
#[derive(Debug, clap::Args)]
pub struct ReloadArgs {
    /// The server (loopback by default).
    #[arg(long, default_value = "http://127.0.0.1:8700", env = "ARBITER_URL")]
    url: String,
    /// The data directory whose `admin.token` to present (`ARBITER_ADMIN_TOKEN` wins).
    #[arg(long, default_value = "./arbiter-data", env = "ARBITER_DATA")]
    data: PathBuf,
    /// Apply a pack that enforces nothing where the running one enforces something.
    #[arg(long, requires = "reason")]
    force: bool,
    /// Why (required with --force; recorded with the admin token's name).
    #[arg(long, requires = "force")]
    reason: Option<String>,
}

/// Exit 0 reloaded, 1 refused (the reasons printed), 2 the server could not be asked.
pub fn reload(args: ReloadArgs) -> Result<ExitCode, Failure> {
    let token = match std::env::var("ARBITER_ADMIN_TOKEN") {
        Ok(token) if !token.trim().is_empty() => token,
        _ => {
            let path = args.data.join(arbiter_server::auth::ADMIN_TOKEN_FILE);
            std::fs::read_to_string(&path)
                .map_err(|e| Failure::Input(format!("{}: cannot read: {e}", path.display())))?
        }
    };
    let body = match (&args.reason, args.force) {
        (Some(reason), true) => Some(json!({"force": true, "reason": reason})),
        _ => None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Input(format!("cannot start the runtime: {e}")))?;
    let url = format!("{}/v1/policy/reload", args.url.trim_end_matches('/'));
    let (status, answer) = runtime.block_on(async {
        let client = reqwest::Client::new();
        let mut request = client.post(&url).bearer_auth(token.trim());
        if let Some(body) = &body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| Failure::Input(format!("{url}: {e}")))?;
        let status = response.status();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        Ok::<_, Failure>((status, answer))
    })?;
    if status.is_success() {
        println!(
            "reloaded: {}",
            answer
                .pointer("/policy_version")
                .and_then(Value::as_str)
                .unwrap_or("?")
        );
        return Ok(ExitCode::SUCCESS);
    }
    let message = answer
        .pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or("refused");
    eprintln!("reload refused ({status}): {message}");
    for detail in answer
        .pointer("/error/details")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        eprintln!("  {}", detail.as_str().unwrap_or_default());
    }
    if answer.pointer("/error/code").and_then(Value::as_str) == Some("reload_needs_force") {
        eprintln!("if that is meant: arbiter reload --force --reason \"why\"");
    }
    match status.as_u16() {
        400 | 409 | 422 => Ok(ExitCode::from(1)),
        _ => Err(Failure::Input(format!("{url}: {status}"))),
    }
}

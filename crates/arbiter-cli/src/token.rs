//! `arbiter token`: issue, revoke and list credentials, and rotate the signing key, on a
//! data directory directly. A running server sees revocations and a rotated key within
//! a second (it polls the store and the key directory).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use arbiter_core::clock::Clock;
use arbiter_core::period::Period;
use arbiter_identity::{Keyring, MintRequest};
use arbiter_store::{Revocation, RevocationKind, Store};
use clap::{Args, Subcommand};

use crate::{Failure, load};

/// `arbiter token …`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a short-lived token for a principal.
    Issue(IssueArgs),
    /// Revoke a token (`--jti`), every token a principal holds now (`--principal`), or a
    /// session (`--session`).
    Revoke(RevokeArgs),
    /// List every revocation.
    Revocations(ListArgs),
    /// Generate a new signing key; the old one keeps verifying until its tokens expire.
    RotateKey(RotateArgs),
}

/// `arbiter token issue`.
#[derive(Debug, Args)]
pub struct IssueArgs {
    /// The pack directory (for `[credentials]` and `[intents]`).
    #[arg(long)]
    pack: PathBuf,
    /// The data directory holding the signing keys.
    #[arg(long, env = "ARBITER_DATA", default_value = "./arbiter-data")]
    data: PathBuf,
    /// The Cedar principal, e.g. `Agent::"support-bot"`.
    #[arg(long)]
    principal: String,
    /// How long the token lives, e.g. `10m`.
    #[arg(long)]
    ttl: String,
    /// A task intent from the pack's `[intents]`.
    #[arg(long)]
    intent: Option<String>,
    /// The session the token is bound to.
    #[arg(long)]
    session: Option<String>,
    /// The audience (default: `[credentials] audience`).
    #[arg(long)]
    audience: Option<String>,
    /// Print `{"token", "jti", "expires_at"}` instead of the bare token.
    #[arg(long)]
    json: bool,
}

/// `arbiter token revoke`.
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The data directory.
    #[arg(long, env = "ARBITER_DATA", default_value = "./arbiter-data")]
    data: PathBuf,
    /// A token's id.
    #[arg(long, conflicts_with_all = ["session"])]
    jti: Option<String>,
    /// A principal: all its tokens issued until now; with `--session`, that session's
    /// principal.
    #[arg(long, conflicts_with = "jti")]
    principal: Option<String>,
    /// A session id.
    #[arg(long)]
    session: Option<String>,
    /// Why (kept with the revocation).
    #[arg(long)]
    reason: String,
    /// Who (default: the user running the command).
    #[arg(long)]
    by: Option<String>,
}

/// `arbiter token revocations`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The data directory.
    #[arg(long, env = "ARBITER_DATA", default_value = "./arbiter-data")]
    data: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `arbiter token rotate-key`.
#[derive(Debug, Args)]
pub struct RotateArgs {
    /// The pack directory (its `[credentials] max_ttl` and `leeway` say how long the
    /// old key must keep verifying).
    #[arg(long)]
    pack: PathBuf,
    /// The data directory holding the signing keys.
    #[arg(long, env = "ARBITER_DATA", default_value = "./arbiter-data")]
    data: PathBuf,
}

/// Runs `arbiter token …`.
pub fn run(command: TokenCommand, clock: &dyn Clock) -> Result<ExitCode, Failure> {
    match command {
        TokenCommand::Issue(args) => issue(args, clock),
        TokenCommand::Revoke(args) => revoke(args, clock),
        TokenCommand::Revocations(args) => list(args),
        TokenCommand::RotateKey(args) => rotate(args, clock),
    }
}

fn issue(args: IssueArgs, clock: &dyn Clock) -> Result<ExitCode, Failure> {
    let pack = load(&args.pack)?;
    let principal: cedar_policy::EntityUid = args.principal.parse().map_err(|e| {
        Failure::Input(format!(
            "--principal: `{}` is not a Cedar uid like Agent::\"bot\" ({e})",
            args.principal
        ))
    })?;
    if let Some(schema) = pack.schema()
        && !schema.entity_types().any(|t| t == principal.type_name())
    {
        return Err(Failure::Input(format!(
            "--principal: the schema has no entity type `{}`",
            principal.type_name()
        )));
    }
    let ttl = Period::parse(&args.ttl)
        .map_err(|e| Failure::Input(format!("--ttl: {e}")))?
        .duration();
    let now = clock.now();
    let keyring = Keyring::load_or_create(&args.data, now)
        .map_err(|e| Failure::Input(format!("{}: {e}", args.data.display())))?;
    let request = MintRequest {
        principal,
        ttl,
        intent: args.intent,
        session: args.session,
        audience: args.audience,
        attributes: Default::default(),
        via: None,
    };
    let minted = arbiter_identity::mint(
        &keyring,
        &pack.config().credentials,
        &pack.config().intents,
        &request,
        now,
    )
    .map_err(|e| Failure::Input(e.to_string()))?;
    if args.json {
        outln!(
            "{}",
            serde_json::json!({"token": minted.token, "jti": minted.jti, "expires_at": minted.expires_at})
        )?;
    } else {
        outln!("{}", minted.token)?;
        eprintln!("jti {} expires at {}", minted.jti, minted.expires_at);
    }
    Ok(ExitCode::SUCCESS)
}

fn revoke(args: RevokeArgs, clock: &dyn Clock) -> Result<ExitCode, Failure> {
    let (kind, value, principal) = match (args.jti, args.principal, args.session) {
        (Some(jti), None, None) => (RevocationKind::Jti, jti, None),
        (None, Some(principal), None) => (RevocationKind::Principal, principal, None),
        (None, principal, Some(session)) => (RevocationKind::Session, session, principal),
        _ => {
            return Err(Failure::Input(
                "give one of --jti, --principal or --session (with --session, --principal names its principal)"
                    .to_owned(),
            ));
        }
    };
    let named = principal
        .iter()
        .chain((kind == RevocationKind::Principal).then_some(&value));
    for p in named {
        p.parse::<cedar_policy::EntityUid>().map_err(|e| {
            Failure::Input(format!(
                "--principal: `{p}` is not a Cedar uid like Agent::\"bot\" ({e})"
            ))
        })?;
    }
    if args.reason.trim().is_empty() {
        return Err(Failure::Input("--reason must say why".to_owned()));
    }
    let by = args.by.unwrap_or_else(crate::who);
    let store = Store::open(&args.data)
        .map_err(|e| Failure::Input(format!("{}: {e}", args.data.display())))?;
    let stored = store
        .revoke(&Revocation {
            seq: 0,
            kind,
            value,
            principal,
            reason: args.reason,
            by,
            at: clock.now(),
            expires_at: None,
        })
        .map_err(|e| Failure::Input(e.to_string()))?;
    outln!(
        "revoked {} {} (#{}, at {})",
        stored.kind.as_str(),
        stored.value,
        stored.seq,
        stored.at
    )?;
    Ok(ExitCode::SUCCESS)
}

fn list(args: ListArgs) -> Result<ExitCode, Failure> {
    let store = Store::open_read_only(&args.data)
        .map_err(|e| Failure::Input(format!("{}: {e}", args.data.display())))?;
    let all = store
        .revocations_since(0)
        .map_err(|e| Failure::Input(e.to_string()))?;
    if args.json {
        outln!("{}", serde_json::json!({ "revocations": all }))?;
        return Ok(ExitCode::SUCCESS);
    }
    if all.is_empty() {
        outln!("no revocations")?;
    }
    for r in &all {
        let scope = r
            .principal
            .as_ref()
            .map(|p| format!(" of {p}"))
            .unwrap_or_default();
        outln!(
            "#{:<4} {}  {:<9} {}{scope}  by {}: {}",
            r.seq,
            r.at,
            r.kind.as_str(),
            r.value,
            r.by,
            r.reason
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn rotate(args: RotateArgs, clock: &dyn Clock) -> Result<ExitCode, Failure> {
    let pack = load(&args.pack)?;
    let credentials = &pack.config().credentials;
    // The previous key must verify every token it signed until the last one expires.
    let keep_for = credentials.max_ttl.duration() + credentials.leeway.duration();
    let keyring = Keyring::rotate(&args.data, clock.now(), keep_for)
        .map_err(|e| Failure::Input(format!("{}: {e}", args.data.display())))?;
    outln!(
        "new signing key {}; keys that verify: {}",
        keyring.active_kid(),
        keyring.kids().join(", ")
    )?;
    eprintln!(
        "the previous key keeps verifying for {}",
        humanize(keep_for)
    );
    Ok(ExitCode::SUCCESS)
}

fn humanize(d: Duration) -> String {
    Period::parse(&format!("{}s", d.as_secs().max(1)))
        .map(|p| p.to_string())
        .unwrap_or_else(|_| format!("{}s", d.as_secs()))
}

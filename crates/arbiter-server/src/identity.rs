//! Verified short-lived identity over HTTP (DESIGN §3 step 2, §5): the JWKS, minting
//! (`POST /v1/credentials`), token exchange (`POST /v1/token`) and revocations
//! (`POST`/`GET /v1/revocations`), and the background work that keeps every server's
//! view current: revocations and key rotations written by another process (the CLI, a
//! second server) and upstream JWKS fetched from URLs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use arbiter_core::Pack;
use arbiter_core::period::Period;
use arbiter_identity::{
    ExchangeError, Keyring, MintError, MintRequest, Minted, RevocationSink, Revocations, Revoked,
    Upstream, Verifier,
};
use arbiter_store::{Revocation, RevocationKind, Store};
use arc_swap::ArcSwap;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cedar_policy::EntityUid;
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::App;
use crate::error::ApiError;

/// RFC 8693's grant type for a token exchange.
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 8693's token type for a JWT (also accepted: `…:id_token`).
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";

/// How often the server looks for revocations and key rotations made elsewhere, and for
/// upstream key sets due for a fetch.
pub const POLL_EVERY: Duration = Duration::from_secs(1);
/// The largest upstream JWKS document fetched.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// The server's identity state: its signing keys, what is revoked, and the upstream
/// issuers of the pack in force.
#[derive(Debug)]
pub struct Identity {
    data: PathBuf,
    store: Store,
    keyring: ArcSwap<Keyring>,
    revocations: Arc<Revocations>,
    verifier: ArcSwap<Verifier>,
    upstream: ArcSwap<Upstream>,
    /// The last revocation `seq` applied.
    seen: AtomicI64,
    http: reqwest::Client,
    /// Upstream key sets whose fetch failed: how often in a row, and when to try again
    /// (backing off to at most [`MAX_FETCH_BACKOFF`], so a dead URL is not hammered).
    failed_fetches: std::sync::Mutex<HashMap<String, (u32, Timestamp)>>,
}

/// The longest wait between two fetches of a failing JWKS URL.
const MAX_FETCH_BACKOFF: Duration = Duration::from_secs(300);

/// Revocations made by a `revoke` effect go to the store before the decision is answered.
#[derive(Debug)]
struct StoreSink {
    store: Store,
}

impl RevocationSink for StoreSink {
    fn persist(&self, revoked: &Revoked, rule: &str) -> Result<(), String> {
        let reason = format!("revoke effect of rule {rule}");
        let record = revocation_record(revoked, &reason, &format!("rule:{rule}"), Timestamp::now());
        self.store
            .revoke(&record)
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

fn revocation_record(revoked: &Revoked, reason: &str, by: &str, at: Timestamp) -> Revocation {
    let (kind, value, principal, at) = match revoked {
        Revoked::Jti(jti) => (RevocationKind::Jti, jti.clone(), None, at),
        Revoked::Principal { principal, before } => {
            (RevocationKind::Principal, principal.clone(), None, *before)
        }
        Revoked::Session { principal, id } => {
            (RevocationKind::Session, id.clone(), principal.clone(), at)
        }
    };
    Revocation {
        seq: 0,
        kind,
        value,
        principal,
        reason: reason.to_owned(),
        by: by.to_owned(),
        at,
        expires_at: None,
    }
}

fn revoked_of(r: &Revocation) -> Revoked {
    match r.kind {
        RevocationKind::Jti => Revoked::Jti(r.value.clone()),
        RevocationKind::Principal => Revoked::Principal {
            principal: r.value.clone(),
            before: r.at,
        },
        RevocationKind::Session => Revoked::Session {
            principal: r.principal.clone(),
            id: r.value.clone(),
        },
    }
}

impl Identity {
    /// Loads (or creates) the signing keys, every revocation in the store, and the pack's
    /// upstream issuers.
    pub fn start(data: &Path, store: &Store, pack: &Pack) -> Result<Identity, String> {
        let keyring = Keyring::load_or_create(data, Timestamp::now()).map_err(|e| e.to_string())?;
        let revocations = Arc::new(Revocations::default());
        let all = store.revocations_since(0).map_err(|e| e.to_string())?;
        for r in &all {
            revocations.apply(&revoked_of(r));
        }
        let seen = all.last().map_or(0, |r| r.seq);
        let upstream = Upstream::from_pack(pack).map_err(|e| e.to_string())?;
        let identity = Identity {
            data: data.to_owned(),
            store: store.clone(),
            verifier: ArcSwap::from_pointee(Verifier::new(
                keyring.clone(),
                &pack.config().credentials,
                Arc::clone(&revocations),
                Arc::new(StoreSink {
                    store: store.clone(),
                }),
            )),
            keyring: ArcSwap::from_pointee(keyring),
            revocations,
            upstream: ArcSwap::from_pointee(upstream),
            seen: AtomicI64::new(seen),
            failed_fetches: std::sync::Mutex::default(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .map_err(|e| e.to_string())?,
        };
        Ok(identity)
    }

    /// The verifier decisions use, for the engine.
    pub fn verifier(&self) -> Arc<Verifier> {
        self.verifier.load_full()
    }

    /// A reloaded pack may change `[credentials]` and `[[issuers]]`: a new verifier (same
    /// keys, same revocations, an empty cache) and new upstream issuers. Fails, changing
    /// nothing, when the pack's issuers cannot be used.
    pub fn reconfigure(&self, pack: &Pack) -> Result<Arc<Verifier>, String> {
        let upstream = Upstream::from_pack(pack).map_err(|e| e.to_string())?;
        let verifier = Arc::new(Verifier::new(
            Keyring::clone(&self.keyring.load()),
            &pack.config().credentials,
            Arc::clone(&self.revocations),
            Arc::new(StoreSink {
                store: self.store.clone(),
            }),
        ));
        self.upstream.store(Arc::new(upstream));
        self.verifier.store(Arc::clone(&verifier));
        Ok(verifier)
    }

    /// One round of background work: new revocations, a rotated key, due JWKS fetches.
    pub async fn poll(&self) {
        let store = self.store.clone();
        let after = self.seen.load(Ordering::Acquire);
        match tokio::task::spawn_blocking(move || store.revocations_since(after)).await {
            Ok(Ok(new)) => {
                for r in &new {
                    self.revocations.apply(&revoked_of(r));
                    self.seen.fetch_max(r.seq, Ordering::AcqRel);
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "reading revocations"),
            Err(e) => tracing::error!(error = %e, "reading revocations"),
        }
        let data = self.data.clone();
        match tokio::task::spawn_blocking(move || Keyring::load_or_create(&data, Timestamp::now()))
            .await
        {
            Ok(Ok(keyring)) if keyring.kids() != self.keyring.load().kids() => {
                tracing::info!(
                    active = keyring.active_kid(),
                    "signing keys changed on disk"
                );
                self.verifier.load().set_keyring(keyring.clone());
                self.keyring.store(Arc::new(keyring));
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "reading the signing keys"),
            Err(e) => tracing::error!(error = %e, "reading the signing keys"),
        }
        let upstream = self.upstream.load_full();
        let now = Timestamp::now();
        for (name, url) in upstream.due_for_fetch(now) {
            let waiting = self
                .failed_fetches
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&name)
                .is_some_and(|(_, next)| *next > now);
            if waiting {
                continue;
            }
            let fetched = match self.fetch_jwks(&url).await {
                Ok(text) => upstream
                    .set_jwks(&name, &text, Timestamp::now())
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            let mut failed = self
                .failed_fetches
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match fetched {
                Ok(()) => {
                    failed.remove(&name);
                }
                Err(e) => {
                    let count = failed.get(&name).map_or(1, |(n, _)| n.saturating_add(1));
                    let wait = Duration::from_secs(1u64 << count.min(9)).min(MAX_FETCH_BACKOFF);
                    let next = now.checked_add(wait).unwrap_or(now);
                    tracing::error!(issuer = %name, %url, error = %e, failures = count,
                        retry_in_s = wait.as_secs(), "fetching the issuer's JWKS");
                    failed.insert(name, (count, next));
                }
            }
        }
    }

    async fn fetch_jwks(&self, url: &str) -> Result<String, String> {
        let mut response = self
            .http
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| e.to_string())?;
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_JWKS_BYTES {
                return Err(format!("larger than {MAX_JWKS_BYTES} bytes"));
            }
        }
        String::from_utf8(body).map_err(|_| "not UTF-8".to_owned())
    }

    /// Commits a revocation, then applies it here (other servers see it on their next
    /// poll).
    async fn revoke(&self, record: Revocation) -> Result<Revocation, ApiError> {
        let store = self.store.clone();
        let stored = tokio::task::spawn_blocking(move || store.revoke(&record))
            .await
            .map_err(ApiError::internal)?
            .map_err(|e| match e {
                arbiter_store::StoreError::Invalid { message } => {
                    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
                }
                other => ApiError::internal(other),
            })?;
        self.revocations.apply(&revoked_of(&stored));
        Ok(stored)
    }
}

/// `GET /.well-known/jwks.json`: the public keys of arbiter's tokens, for offline checks.
pub async fn jwks(State(app): State<Arc<App>>) -> Response {
    let keys = app.identity().keyring.load().jwks();
    (
        [(header::CACHE_CONTROL, "public, max-age=60")],
        axum::Json(keys),
    )
        .into_response()
}

/// `POST /v1/credentials` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MintBody {
    principal: String,
    ttl: String,
    intent: Option<String>,
    session: Option<String>,
    audience: Option<String>,
}

/// `POST /v1/credentials` (admin): a short-lived token for a principal.
pub async fn mint(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let admin = app.check_admin(&headers)?.to_owned();
    let body: MintBody = json_of(body)?;
    let engine = app.engine();
    let pack = engine.pack();
    let principal = principal_of(pack, &body.principal)?;
    let ttl = ttl_of(&body.ttl)?;
    let request = MintRequest {
        principal,
        ttl,
        intent: body.intent,
        session: body.session,
        audience: body.audience,
        attributes: Default::default(),
        via: None,
    };
    let minted = mint_with(&app, pack, &request)?;
    tracing::info!(%admin, principal = %request.principal, jti = %minted.jti, "credential issued");
    Ok((StatusCode::CREATED, axum::Json(minted_json(&minted))).into_response())
}

fn mint_with(app: &App, pack: &Pack, request: &MintRequest) -> Result<Minted, ApiError> {
    let identity = app.identity();
    let keyring = identity.keyring.load();
    arbiter_identity::mint(
        &keyring,
        &pack.config().credentials,
        &pack.config().intents,
        request,
        app.engine().now(),
    )
    .map_err(|e: MintError| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            e.to_string(),
        )
    })
}

fn minted_json(minted: &Minted) -> Value {
    json!({"token": minted.token, "jti": minted.jti, "expires_at": minted.expires_at})
}

/// `POST /v1/token` body (RFC 8693; JSON or form-encoded). RFC 8693's `scope` names the
/// intent (one); its `requested_token_type` may ask for a JWT or an access token, which
/// is the same here. Delegation (`actor_token`) and `resource` are refused by name rather
/// than ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExchangeBody {
    grant_type: String,
    subject_token: String,
    subject_token_type: String,
    intent: Option<String>,
    scope: Option<String>,
    requested_token_type: Option<String>,
    ttl: Option<String>,
    session: Option<String>,
    audience: Option<String>,
    resource: Option<String>,
    actor_token: Option<String>,
    actor_token_type: Option<String>,
}

/// RFC 8693's token type for an OAuth access token.
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

impl ExchangeBody {
    /// The intent asked for, by `intent` or by `scope`; the parameters arbiter does not
    /// support are refused by name.
    fn checked_intent(&self) -> Result<Option<String>, ApiError> {
        let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", m);
        if self.actor_token.is_some() || self.actor_token_type.is_some() {
            return Err(bad(
                "delegation (`actor_token`) is not supported: exchange the workload's own token"
                    .to_owned(),
            ));
        }
        if self.resource.is_some() {
            return Err(bad(
                "`resource` is not supported: use `audience` for the token's `aud`".to_owned(),
            ));
        }
        if let Some(asked) = &self.requested_token_type
            && asked != JWT_TOKEN_TYPE
            && asked != ACCESS_TOKEN_TYPE
        {
            return Err(bad(format!(
                "requested_token_type must be `{JWT_TOKEN_TYPE}` or `{ACCESS_TOKEN_TYPE}`"
            )));
        }
        match (&self.intent, &self.scope) {
            (Some(intent), Some(scope)) if intent != scope => Err(bad(
                "`intent` and `scope` name different intents; give one".to_owned(),
            )),
            (_, Some(scope)) if scope.split_whitespace().count() != 1 => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                "`scope` names one intent",
            )),
            (intent, scope) => Ok(intent.clone().or_else(|| scope.clone())),
        }
    }
}

/// The TTL of an exchanged token when the caller names none: short, and never more than
/// the pack allows.
const DEFAULT_EXCHANGE_TTL: Duration = Duration::from_secs(600);

/// `POST /v1/token`: a workload trades a token from an upstream issuer it already has
/// for a short-lived arbiter token. Authenticated by the token it presents.
pub async fn exchange(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let body: ExchangeBody = if form {
        let bytes = ApiError::read_body(body)?;
        // The parser's message may quote the body, and the body holds a bearer token.
        serde_urlencoded::from_bytes(&bytes).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_request",
                "not a form with grant_type, subject_token and subject_token_type \
                 (and optionally intent or scope, ttl, session, audience, requested_token_type)",
            )
        })?
    } else {
        json_of(body)?
    };
    if body.grant_type != TOKEN_EXCHANGE {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            format!("grant_type must be `{TOKEN_EXCHANGE}`"),
        ));
    }
    if body.subject_token_type != JWT_TOKEN_TYPE && body.subject_token_type != ID_TOKEN_TYPE {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("subject_token_type must be `{JWT_TOKEN_TYPE}` or `{ID_TOKEN_TYPE}`"),
        ));
    }
    let intent = body.checked_intent()?;
    let engine = app.engine();
    let pack = engine.pack();
    let now = engine.now();
    let exchanged = app
        .identity()
        .upstream
        .load()
        .exchange(&body.subject_token, now)
        .map_err(|e: ExchangeError| {
            tracing::info!(reason = e.code(), error = %e, "token exchange refused");
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                format!("the subject token was refused: {} ({e})", e.code()),
            )
        })?;
    if let (Some(intent), Some(allowed)) = (&intent, &exchanged.allowed_intents)
        && !allowed.contains(intent)
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            format!(
                "issuer `{}` may not ask for intent `{intent}` (allowed: {})",
                exchanged.issuer,
                allowed.join(", ")
            ),
        ));
    }
    let ttl = match &body.ttl {
        Some(t) => ttl_of(t)?,
        None => {
            let credentials = &pack.config().credentials;
            let intent_max = intent
                .as_ref()
                .and_then(|i| pack.config().intents.get(i))
                .and_then(|i| i.max_ttl);
            [Some(credentials.max_ttl), intent_max]
                .into_iter()
                .flatten()
                .map(Period::duration)
                .fold(DEFAULT_EXCHANGE_TTL, Duration::min)
        }
    };
    let request = MintRequest {
        principal: exchanged.principal.clone(),
        ttl,
        intent,
        session: body.session,
        audience: body.audience,
        attributes: exchanged.attributes,
        via: Some(exchanged.issuer.clone()),
    };
    let minted = mint_with(&app, pack, &request)?;
    tracing::info!(issuer = %exchanged.issuer, principal = %request.principal, jti = %minted.jti, "token exchanged");
    let expires_in = ttl.as_secs();
    Ok(axum::Json(json!({
        "access_token": minted.token,
        "issued_token_type": JWT_TOKEN_TYPE,
        "token_type": "Bearer",
        "expires_in": expires_in,
        "jti": minted.jti,
        "expires_at": minted.expires_at,
        "principal": request.principal.to_string(),
    }))
    .into_response())
}

/// `POST /v1/revocations` body: exactly one of `jti`, `principal`, `session` (a session
/// may name its `principal`), and why.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    jti: Option<String>,
    principal: Option<String>,
    session: Option<String>,
    reason: String,
}

/// `POST /v1/revocations` (admin): committed before it is answered.
pub async fn revoke(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let admin = app.check_admin(&headers)?.to_owned();
    let body: RevokeBody = json_of(body)?;
    let engine = app.engine();
    let now = engine.now();
    let revoked = match (body.jti, body.principal, body.session) {
        (Some(jti), None, None) => Revoked::Jti(jti),
        (None, Some(principal), None) => Revoked::Principal {
            principal: principal_of(engine.pack(), &principal)?.to_string(),
            before: now,
        },
        (None, principal, Some(id)) => Revoked::Session {
            principal: principal
                .map(|p| principal_of(engine.pack(), &p).map(|u| u.to_string()))
                .transpose()?,
            id,
        },
        _ => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                "give exactly one of `jti`, `principal` or `session` (a session may also name its `principal`)",
            ));
        }
    };
    if body.reason.trim().is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "`reason` must say why",
        ));
    }
    let stored = app
        .identity()
        .revoke(revocation_record(&revoked, &body.reason, &admin, now))
        .await?;
    tracing::info!(%admin, kind = stored.kind.as_str(), value = %stored.value, "revoked");
    Ok((StatusCode::CREATED, axum::Json(stored)).into_response())
}

/// `GET /v1/revocations` (admin): every revocation, oldest first.
pub async fn revocations(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.check_admin(&headers)?;
    let store = app.identity().store.clone();
    let all = tokio::task::spawn_blocking(move || store.revocations_since(0))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(axum::Json(json!({ "revocations": all })).into_response())
}

fn json_of<T: serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    ApiError::json_body(body)
}

/// A principal the pack knows the type of.
fn principal_of(pack: &Pack, text: &str) -> Result<EntityUid, ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", m);
    let uid: EntityUid = text.parse().map_err(|e| {
        bad(format!(
            "`principal`: `{text}` is not a Cedar uid like Agent::\"bot\" ({e})"
        ))
    })?;
    if let Some(schema) = pack.schema()
        && !schema.entity_types().any(|t| t == uid.type_name())
    {
        return Err(bad(format!(
            "`principal`: the schema has no entity type `{}`",
            uid.type_name()
        )));
    }
    Ok(uid)
}

fn ttl_of(text: &str) -> Result<Duration, ApiError> {
    Period::parse(text).map(Period::duration).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            format!("`ttl`: {e}"),
        )
    })
}

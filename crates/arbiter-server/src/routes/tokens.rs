//! Verified short-lived identity over HTTP (DESIGN §3 step 2, §5): the JWKS, minting
//! (`POST /v1/credentials`), token exchange (`POST /v1/token`) and revocations
//! (`POST`/`GET /v1/revocations`). The state behind them is `crate::tokens`.

use std::sync::Arc;
use std::time::Duration;

use arbiter_core::Pack;
use arbiter_core::period::Period;
use arbiter_identity::{MintRequest, Minted, Revoked};
use arbiter_store::Revocation;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cedar_policy::EntityUid;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::state::App;
use crate::tokens::Exchange;

/// RFC 8693's grant type for a token exchange.
pub const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 8693's token type for a JWT (also accepted: `…:id_token`).
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";

/// `GET /.well-known/jwks.json`: the public keys of arbiter's tokens, for offline checks.
pub async fn jwks(State(app): State<Arc<App>>) -> Response {
    let keys = app.tokens().keyring().jwks();
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
    let body: MintBody = ApiError::json_body(body)?;
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
    let minted = app.tokens().mint(pack, &request, app.now())?;
    tracing::info!(%admin, principal = %request.principal, jti = %minted.jti, "credential issued");
    Ok((StatusCode::CREATED, axum::Json(minted_json(&minted))).into_response())
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
    /// The body, JSON or form-encoded (RFC 8693 uses forms).
    fn read(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Self, ApiError> {
        let form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if !form {
            return ApiError::json_body(body);
        }
        let bytes = ApiError::read_body(body)?;
        // The parser's message may quote the body, and the body holds a bearer token.
        serde_urlencoded::from_bytes(&bytes).map_err(|_| {
            ApiError::Malformed(
                "not a form with grant_type, subject_token and subject_token_type \
                 (and optionally intent or scope, ttl, session, audience, requested_token_type)"
                    .to_owned(),
            )
        })
    }

    /// The intent asked for, by `intent` or by `scope`, once the grant and the subject
    /// token's type are the ones arbiter takes; the parameters arbiter does not support
    /// are refused by name.
    fn checked_intent(&self) -> Result<Option<String>, ApiError> {
        let bad = ApiError::InvalidParameter;
        if self.grant_type != TOKEN_EXCHANGE {
            return Err(ApiError::UnsupportedGrantType(format!(
                "grant_type must be `{TOKEN_EXCHANGE}`"
            )));
        }
        if self.subject_token_type != JWT_TOKEN_TYPE && self.subject_token_type != ID_TOKEN_TYPE {
            return Err(bad(format!(
                "subject_token_type must be `{JWT_TOKEN_TYPE}` or `{ID_TOKEN_TYPE}`"
            )));
        }
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
            (_, Some(scope)) if scope.split_whitespace().count() != 1 => Err(
                ApiError::InvalidScope("`scope` names one intent".to_owned()),
            ),
            (intent, scope) => Ok(intent.clone().or_else(|| scope.clone())),
        }
    }
}

/// `POST /v1/token`: a workload trades a token from an upstream issuer it already has
/// for a short-lived arbiter token. Authenticated by the token it presents.
pub async fn exchange(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = ExchangeBody::read(&headers, body)?;
    let intent = body.checked_intent()?;
    let ttl = body.ttl.as_deref().map(ttl_of).transpose()?;
    let engine = app.engine();
    let asked = Exchange {
        subject_token: &body.subject_token,
        intent,
        ttl,
        session: body.session,
        audience: body.audience,
    };
    let exchanged = app.tokens().exchange(engine.pack(), asked, app.now())?;
    Ok(axum::Json(json!({
        "access_token": exchanged.minted.token,
        "issued_token_type": JWT_TOKEN_TYPE,
        "token_type": "Bearer",
        "expires_in": exchanged.ttl.as_secs(),
        "jti": exchanged.minted.jti,
        "expires_at": exchanged.minted.expires_at,
        "principal": exchanged.principal.to_string(),
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
    let body: RevokeBody = ApiError::json_body(body)?;
    let stored = record_revocation(
        &app,
        &admin,
        body.jti,
        body.principal,
        body.session,
        &body.reason,
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(stored)).into_response())
}

/// Revokes a token (`jti`), every token of a principal issued until now, or a session (of
/// a principal), by `admin`, as `POST /v1/revocations` and the dashboard's revoke form
/// do: exactly one target, a reason that says why; committed and in force before it
/// returns.
pub(crate) async fn record_revocation(
    app: &App,
    admin: &str,
    jti: Option<String>,
    principal: Option<String>,
    session: Option<String>,
    reason: &str,
) -> Result<Revocation, ApiError> {
    let engine = app.engine();
    let now = app.now();
    let revoked = match (jti, principal, session) {
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
            return Err(ApiError::Invalid(
                "give exactly one of `jti`, `principal` or `session` (a session may also name \
                 its `principal`)"
                    .to_owned(),
            ));
        }
    };
    if reason.trim().is_empty() {
        return Err(ApiError::Invalid("`reason` must say why".to_owned()));
    }
    let stored = app
        .tokens()
        .revoke(Revocation::of(&revoked, reason, admin, now))
        .await?;
    tracing::info!(%admin, kind = stored.kind.as_str(), value = %stored.value, "revoked");
    Ok(stored)
}

/// `GET /v1/revocations` (admin): every revocation, oldest first.
pub async fn revocations(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    app.check_admin(&headers)?;
    let all = app.tokens().all_revocations().await?;
    Ok(axum::Json(json!({ "revocations": all })).into_response())
}

/// A principal the pack knows the type of.
fn principal_of(pack: &Pack, text: &str) -> Result<EntityUid, ApiError> {
    let bad = ApiError::Invalid;
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
    Period::parse(text)
        .map(Period::duration)
        .map_err(|e| ApiError::Invalid(format!("`ttl`: {e}")))
}

//! Running the server: `/healthz`, `/readyz`, `/metrics`, the policy in force
//! (`GET /v1/policy`) and reload (`POST /v1/policy/reload`).

use std::sync::Arc;

use arbiter_core::rule::RuleRef;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::require_json;
use crate::error::ApiError;
use crate::state::{App, Forced};

/// `GET /healthz`: the process answers.
pub async fn healthz() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

/// `GET /readyz`: the store is writable and the log accepts records.
pub async fn readyz(State(app): State<Arc<App>>) -> Response {
    let problems = app.problems().await;
    let version = app.policy_version();
    if problems.is_empty() {
        axum::Json(json!({"status": "ready", "policy_version": version})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(
                json!({"status": "not_ready", "policy_version": version, "problems": problems}),
            ),
        )
            .into_response()
    }
}

/// `GET /metrics`, in the OpenMetrics text format.
pub async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics_text(),
    )
        .into_response()
}

/// `GET /v1/policy` (admin): the pack in force, rule by rule, and its default-deny scopes.
pub async fn policy(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    app.check_admin(&headers)?;
    let engine = app.engine();
    let pack = engine.pack();
    let rules: Vec<Value> = pack
        .rules()
        .iter()
        .map(|r| {
            json!({
                "id": r.id, "kind": r.kind, "mode": r.mode, "effect": r.effect,
                "severity": r.severity, "maps": r.maps.iter().map(|m| &m.id).collect::<Vec<_>>(),
                "limit": r.limit.map(|l| l.to_string()), "on_error": r.on_error,
                "file": r.file, "line": r.line, "hash": r.hash,
            })
        })
        .collect();
    let scopes: serde_json::Map<String, Value> = pack
        .default_deny_scopes()
        .into_iter()
        .map(|(ty, mode)| (RuleRef::DefaultDeny(ty).to_string(), json!(mode)))
        .collect();
    Ok(axum::Json(json!({
        "policy_version": pack.version(),
        "rules": rules,
        "default_deny": {"mode": pack.config().default_deny.mode, "scopes": scopes},
    }))
    .into_response())
}

/// `POST /v1/policy/reload` body, optional: an operator's override of the guard against a
/// pack that enforces nothing.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReloadBody {
    force: bool,
    reason: String,
}

/// `POST /v1/policy/reload` (admin): load the pack again; refused packs leave the running
/// one in force.
pub async fn reload(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let admin = app.check_admin(&headers)?.to_owned();
    let empty = body.as_ref().is_ok_and(Bytes::is_empty);
    let forced = if empty {
        None
    } else {
        require_json(&headers)?;
        let body: ReloadBody = ApiError::json_body(body)?;
        if body.reason.trim().is_empty() {
            return Err(ApiError::Invalid("`reason` must say why".to_owned()));
        }
        body.force.then(|| Forced {
            by: admin.clone(),
            reason: body.reason,
        })
    };
    let version = app
        .reload_forced(forced)
        .await
        .map_err(|refused| ApiError::Reload {
            refused,
            running: app.policy_version(),
        })?;
    tracing::info!(%admin, %version, "reload requested");
    Ok(axum::Json(json!({"status": "reloaded", "policy_version": version})).into_response())
}

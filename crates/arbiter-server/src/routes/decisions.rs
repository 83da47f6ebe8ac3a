//! Deciding (`POST /v1/decide`, `POST /v1/decide/batch`) and reading the decision log
//! (`GET /v1/decisions`). Deciding and recording are the decision service's; these
//! handlers gate the call (PEP token, a log that can record, JSON declared) and shape
//! the answer.

use std::sync::Arc;

use arbiter_core::Decision;
use arbiter_store::{DecisionQuery, McpCall, McpIdentity, Refusal};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{FromRequest, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

use super::require_json;
use crate::error::ApiError;
use crate::state::App;

/// The most requests one batch may carry.
const MAX_BATCH: usize = 1_000;

/// `POST /v1/decide`.
pub async fn decide(State(app): State<Arc<App>>, request: Request) -> Result<Response, ApiError> {
    let mut value = admitted_body(&app, request).await?;
    let call = match mcp_call(&mut value) {
        Ok(call) => call,
        Err(refusal) => {
            let logged = Refusal {
                code: refusal.code().to_owned(),
                message: refusal.message(),
            };
            app.service().refuse(0, logged).await?;
            return Err(refusal);
        }
    };
    let engine = app.engine();
    let decision = match call {
        Some(call) => app.service().decide_mcp(&engine, value, call).await??,
        None => app.service().decide(&engine, value).await??,
    };
    Ok(decision_response(&decision))
}

/// The MCP call an `arbiter mcp-proxy` deciding remotely describes in `mcp`, beside the
/// request (taken out of it): kept in the decision's record. Whether the identity was
/// verified is not the proxy's to say: it is `verified` when the request presents a
/// credential (which the decision then verifies), `unverified` otherwise.
fn mcp_call(value: &mut Value) -> Result<Option<McpCall>, ApiError> {
    /// The longest method, tool or upstream name kept.
    const MAX_FIELD: usize = 1024;
    let Some(object) = value.as_object_mut() else {
        return Ok(None);
    };
    let Some(mcp) = object.remove("mcp") else {
        return Ok(None);
    };
    let malformed = |why: &str| {
        ApiError::Malformed(format!(
            "`mcp` describes the MCP call: {{\"method\", \"tool\"?, \"upstream\", \"identity\"?, \"arguments\"?}}; {why}"
        ))
    };
    let Value::Object(fields) = mcp else {
        return Err(malformed("it is not an object"));
    };
    if let Some(unknown) = fields
        .keys()
        .find(|k| !["method", "tool", "upstream", "identity", "arguments"].contains(&k.as_str()))
    {
        return Err(malformed(&format!(
            "unknown field `{}`",
            unknown.escape_debug()
        )));
    }
    let text = |field: &str, required: bool| -> Result<Option<String>, ApiError> {
        match fields.get(field) {
            None | Some(Value::Null) if !required => Ok(None),
            Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_FIELD => Ok(Some(s.clone())),
            _ => Err(malformed(&format!(
                "`{field}` must be a string of 1 to {MAX_FIELD} bytes"
            ))),
        }
    };
    let identity = if object.get("credential").is_some_and(Value::is_string) {
        McpIdentity::Verified
    } else {
        McpIdentity::Unverified
    };
    let arguments = match fields.get("arguments") {
        None | Some(Value::Null) => None,
        Some(arguments @ Value::Object(_)) => Some(arguments.clone()),
        Some(_) => return Err(malformed("`arguments` must be an object")),
    };
    Ok(Some(McpCall {
        method: text("method", true)?.unwrap_or_default(),
        tool: text("tool", false)?,
        upstream: text("upstream", true)?.unwrap_or_default(),
        identity,
        arguments,
    }))
}

/// `POST /v1/decide/batch`: `{"requests": [...]}`, every request decided under one pack.
pub async fn decide_batch(
    State(app): State<Arc<App>>,
    request: Request,
) -> Result<Response, ApiError> {
    let value = admitted_body(&app, request).await?;
    let requests = match value {
        Value::Object(mut map) if map.len() == 1 && map.contains_key("requests") => {
            match map.remove("requests") {
                Some(Value::Array(items)) => items,
                _ => return Err(ApiError::Malformed("`requests` must be a list".to_owned())),
            }
        }
        _ => {
            return Err(ApiError::Malformed(
                "a batch is {\"requests\": [...]} and nothing else".to_owned(),
            ));
        }
    };
    if requests.len() > MAX_BATCH {
        return Err(ApiError::BatchTooLarge {
            max: MAX_BATCH,
            got: requests.len(),
        });
    }
    // One pack for the whole batch, even if a reload lands in between.
    let engine = app.engine();
    let mut responses = Vec::with_capacity(requests.len());
    for request in requests {
        responses.push(match app.service().decide(&engine, request).await? {
            Ok(decision) => Answer::Decided(decision),
            Err(error) => Answer::Refused(error.to_json()),
        });
    }
    Ok(axum::Json(Batch { responses }).into_response())
}

/// A batch's answer, serialized as it is written: each decision went through a
/// `serde_json::Value` first, which was a sixth of the batch endpoint's CPU.
#[derive(serde::Serialize)]
struct Batch {
    responses: Vec<Answer>,
}

/// One request's answer in a batch: its decision, or why it was refused.
#[derive(serde::Serialize)]
#[serde(untagged)]
#[expect(
    clippy::large_enum_variant,
    reason = "nearly every answer is a decision: boxing it would allocate for each to shrink the few refusals"
)]
enum Answer {
    Decided(Decision),
    Refused(Value),
}

/// A decision endpoint's gate (the PEP token, a log that can record, JSON declared),
/// then the body (within the router's body limit). The request is taken whole so that
/// its headers are read where they are, not copied by an extractor.
async fn admitted_body(app: &App, request: Request) -> Result<Value, ApiError> {
    app.admit(request.headers())?;
    require_json(request.headers())?;
    let body = Bytes::from_request(request, &()).await;
    body_or_record(app, body).await
}

/// The body as JSON; a body that is not (too large, not JSON, not an object) is refused
/// and recorded as `invalid` like any other bad request, with its size but not its bytes.
async fn body_or_record(app: &App, body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    let size = body.as_ref().map(Bytes::len).unwrap_or(0);
    match ApiError::json_object(body) {
        Ok(value) => Ok(value),
        Err(refusal) => {
            let logged = Refusal {
                code: refusal.code().to_owned(),
                message: refusal.message(),
            };
            app.service().refuse(size, logged).await?;
            Err(refusal)
        }
    }
}

fn decision_response(decision: &Decision) -> Response {
    let mut response = (StatusCode::OK, axum::Json(decision)).into_response();
    if let Some(retry) = decision.retry_after_s
        && let Ok(value) = HeaderValue::from_str(&retry.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// `GET /v1/decisions` filters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionsParams {
    since: Option<String>,
    until: Option<String>,
    rule: Option<String>,
    principal: Option<String>,
    action: Option<String>,
    decision: Option<String>,
    mode: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// `GET /v1/decisions` (admin): the decision log, newest first, a page at a time.
pub async fn decisions(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    params: Result<Query<DecisionsParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    app.check_admin(&headers)?;
    let Query(params) = params.map_err(|e| ApiError::BadQuery(e.body_text()))?;
    let query = decision_query(params)?;
    let store = app.store().clone();
    let page = tokio::task::spawn_blocking(move || store.query_decisions(&query)).await??;
    Ok(axum::Json(page).into_response())
}

pub(crate) fn decision_query(p: DecisionsParams) -> Result<DecisionQuery, ApiError> {
    let bad = ApiError::BadQuery;
    let time = |field: &str, v: Option<String>| -> Result<Option<jiff::Timestamp>, ApiError> {
        v.map(|t| {
            t.parse()
                .map_err(|e| bad(format!("`{field}`: `{t}` is not an RFC 3339 time ({e})")))
        })
        .transpose()
    };
    let limit = p.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(bad(format!("`limit` must be 1 to 1000, not {limit}")));
    }
    if let Some(d) = &p.decision
        && !arbiter_store::DECISIONS.contains(&d.as_str())
    {
        return Err(bad(format!(
            "`decision` must be allow, deny or invalid, not `{d}`"
        )));
    }
    if let Some(m) = &p.mode
        && arbiter_core::rule::Mode::from_word(m).is_none()
    {
        return Err(bad(format!(
            "`mode` must be audit, warn or enforce, not `{m}`"
        )));
    }
    Ok(DecisionQuery {
        since: time("since", p.since)?,
        until: time("until", p.until)?,
        rule: p.rule,
        principal: p.principal,
        action: p.action,
        decision: p.decision,
        mode: p.mode,
        limit,
        cursor: p.cursor,
    })
}

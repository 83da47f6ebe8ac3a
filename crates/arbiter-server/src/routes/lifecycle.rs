//! The audit→enforce lifecycle over HTTP (DESIGN §4): findings and their reviews, and
//! readiness. Reviews are committed before they are answered and record the admin
//! token's name as who reviewed.

use std::sync::Arc;

use arbiter_lifecycle::readiness;
use arbiter_store::{FindingQuery, Review, ReviewVerdict};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::error::ApiError;
use crate::state::App;

/// `GET /v1/findings` filters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindingsParams {
    rule: Option<String>,
    status: Option<String>,
    principal: Option<String>,
    limit: Option<u32>,
}

/// How many findings `GET /v1/findings` answers when no `limit` is given.
const DEFAULT_FINDINGS: u32 = 1_000;

/// `GET /v1/findings` (admin): findings, the most recently seen first (at most `limit`,
/// 1 to 10,000, default 1,000).
pub async fn findings(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    params: Result<Query<FindingsParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    app.check_admin(&headers)?;
    let Query(p) = params.map_err(|e| ApiError::BadQuery(e.body_text()))?;
    if let Some(s) = &p.status
        && !["open", "expected", "legitimate"].contains(&s.as_str())
    {
        return Err(ApiError::BadQuery(format!(
            "`status` must be open, expected or legitimate, not `{s}`"
        )));
    }
    if p.limit.is_some_and(|l| !(1..=10_000).contains(&l)) {
        return Err(ApiError::BadQuery("`limit` must be 1 to 10000".to_owned()));
    }
    let query = FindingQuery {
        rule: p.rule,
        status: p.status,
        principal: p.principal,
        limit: Some(p.limit.unwrap_or(DEFAULT_FINDINGS)),
    };
    let store = app.store().clone();
    let found = tokio::task::spawn_blocking(move || store.findings(&query)).await??;
    Ok(axum::Json(json!({ "findings": found })).into_response())
}

/// `POST /v1/findings/{id}/review` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewBody {
    verdict: String,
    note: String,
}

/// `POST /v1/findings/{id}/review` (admin): who reviewed is the admin token's name.
pub async fn review(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let admin = app.check_admin(&headers)?.to_owned();
    let body: ReviewBody = ApiError::json_body(body).map_err(|e| {
        ApiError::Malformed(format!(
            "a review is {{\"verdict\", \"note\"}}: {}",
            e.message()
        ))
    })?;
    let finding = record_review(&app, admin, id, &body.verdict, body.note).await?;
    Ok((StatusCode::CREATED, axum::Json(finding)).into_response())
}

/// Appends a review by `admin` to finding `id`, as `POST /v1/findings/{id}/review` and
/// the dashboard's review form do: the verdict must be `expected` or `legitimate`, the
/// note must say why, the finding must exist; committed before it returns.
pub(crate) async fn record_review(
    app: &App,
    admin: String,
    id: String,
    verdict: &str,
    note: String,
) -> Result<arbiter_store::Finding, ApiError> {
    let verdict: ReviewVerdict = verdict
        .parse()
        .map_err(|e: arbiter_store::UnknownReviewVerdict| ApiError::Invalid(e.to_string()))?;
    if note.trim().is_empty() {
        return Err(ApiError::Invalid("`note` must say why".to_owned()));
    }
    let review = Review {
        verdict,
        by: admin,
        at: app.now(),
        note,
    };
    let store = app.store().clone();
    let exists = {
        let store = store.clone();
        let id = id.clone();
        tokio::task::spawn_blocking(move || store.finding(&id)).await??
    };
    if exists.is_none() {
        return Err(ApiError::NotFound(format!("no finding `{id}`")));
    }
    Ok(tokio::task::spawn_blocking(move || store.review(&id, &review)).await??)
}

/// `GET /v1/readiness` filter.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadinessParams {
    rule: Option<String>,
}

/// `GET /v1/readiness` (admin): every non-enforced rule and scope of the pack in force.
pub async fn readiness(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    params: Result<Query<ReadinessParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    app.check_admin(&headers)?;
    let Query(p) = params.map_err(|e| ApiError::BadQuery(e.body_text()))?;
    let engine = app.engine();
    let now = app.now();
    let store = app.store().clone();
    let pack = Arc::clone(engine.pack());
    let rule = p.rule;
    if let Some(r) = &rule
        && !readiness::in_pack(&pack, r)
    {
        return Err(ApiError::NotFound(format!(
            "no rule or default-deny scope `{r}` in the pack in force"
        )));
    }
    let answer =
        tokio::task::spawn_blocking(move || readiness::assess(&pack, &store, rule.as_deref(), now))
            .await??;
    Ok(axum::Json(json!({ "readiness": answer })).into_response())
}

/// `GET /v1/chains` filters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainsParams {
    chain: Option<String>,
    principal: Option<String>,
    /// How far back the traffic is counted (`30d` when absent).
    window: Option<String>,
}

/// `GET /v1/chains` (admin): each chain of the pack in force, per identity, with the
/// traffic of the window and the readiness of the rules that would close its gaps.
pub async fn chains(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    params: Result<Query<ChainsParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    use arbiter_lifecycle::chains::{self, ChainsError};
    app.check_admin(&headers)?;
    let Query(p) = params.map_err(|e| ApiError::BadQuery(e.body_text()))?;
    let window = p.window.as_deref().unwrap_or("30d");
    let window = arbiter_core::period::Period::parse(window)
        .map_err(|e| ApiError::BadQuery(format!("`window`: {e}")))?;
    let now = app.now();
    let back =
        jiff::SignedDuration::try_from(window.duration()).unwrap_or(jiff::SignedDuration::MAX);
    let query = chains::Query {
        chain: p.chain,
        principal: p.principal,
        since: Some(now.checked_sub(back).unwrap_or(jiff::Timestamp::MIN)),
    };
    let pack = Arc::clone(app.engine().pack());
    let store = app.store().clone();
    let answer =
        tokio::task::spawn_blocking(move || chains::analyse(&pack, Some(&store), &query, now))
            .await?;
    match answer {
        Ok(found) => Ok(axum::Json(found).into_response()),
        Err(ChainsError::Store(e)) => Err(ApiError::Store(e)),
        Err(e @ ChainsError::NoChain(..)) => Err(ApiError::NotFound(e.to_string())),
        Err(e @ ChainsError::BadPrincipal(..)) => Err(ApiError::BadQuery(e.to_string())),
    }
}

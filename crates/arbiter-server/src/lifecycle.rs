//! The audit→enforce lifecycle over HTTP (DESIGN §4): findings and their reviews, and
//! readiness. Reviews are committed before they are answered and record the admin
//! token's name as who reviewed.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use arbiter_core::state::{Baseline, MemoryBaseline};
use arbiter_lifecycle::readiness;
use arbiter_store::{FindingQuery, Review, Store, Verdict};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::app::App;
use crate::error::ApiError;

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
    let Query(p) = params.map_err(|e| bad_query(e.body_text()))?;
    if let Some(s) = &p.status
        && !["open", "expected", "legitimate"].contains(&s.as_str())
    {
        return Err(bad_query(format!(
            "`status` must be open, expected or legitimate, not `{s}`"
        )));
    }
    if p.limit.is_some_and(|l| !(1..=10_000).contains(&l)) {
        return Err(bad_query("`limit` must be 1 to 10000".to_owned()));
    }
    let query = FindingQuery {
        rule: p.rule,
        status: p.status,
        principal: p.principal,
        limit: Some(p.limit.unwrap_or(DEFAULT_FINDINGS)),
    };
    let store = app.store().clone();
    let found = blocking(move || store.findings(&query)).await?;
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
        ApiError::malformed(format!(
            "a review is {{\"verdict\", \"note\"}}: {}",
            e.message()
        ))
    })?;
    let verdict: Verdict = body
        .verdict
        .parse()
        .map_err(|e: arbiter_store::UnknownVerdict| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                e.to_string(),
            )
        })?;
    if body.note.trim().is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            "`note` must say why",
        ));
    }
    let review = Review {
        verdict,
        by: admin,
        at: app.engine().now(),
        note: body.note,
    };
    let store = app.store().clone();
    let exists = {
        let store = store.clone();
        let id = id.clone();
        blocking(move || store.finding(&id)).await?
    };
    if exists.is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no finding `{id}`"),
        ));
    }
    let finding = blocking(move || store.review(&id, &review)).await?;
    Ok((StatusCode::CREATED, axum::Json(finding)).into_response())
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
    let Query(p) = params.map_err(|e| bad_query(e.body_text()))?;
    let engine = app.engine();
    let now = engine.now();
    let store = app.store().clone();
    let pack = Arc::clone(engine.pack());
    let rule = p.rule;
    if let Some(r) = &rule
        && !readiness::in_pack(&pack, r)
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no rule or default-deny scope `{r}` in the pack in force"),
        ));
    }
    let answer = blocking(move || readiness::assess(&pack, &store, rule.as_deref(), now)).await?;
    Ok(axum::Json(json!({ "readiness": answer })).into_response())
}

/// The frozen baseline as the engine sees it: in memory, with every pair allowed since
/// the freeze written to the store, and a freeze made elsewhere picked up on poll.
#[derive(Debug)]
pub struct StoreBaseline {
    memory: MemoryBaseline,
    store: Store,
    /// The `seq` of the freeze in memory (0: none).
    frozen: AtomicI64,
    /// How many pairs the store held when they were last read.
    pairs: std::sync::atomic::AtomicU64,
}

impl StoreBaseline {
    /// The baseline the store holds, if one is frozen.
    pub fn load(store: &Store) -> Result<StoreBaseline, arbiter_store::StoreError> {
        let baseline = StoreBaseline {
            memory: MemoryBaseline::default(),
            store: store.clone(),
            frozen: AtomicI64::new(0),
            pairs: std::sync::atomic::AtomicU64::new(0),
        };
        baseline.refresh()?;
        Ok(baseline)
    }

    /// Loads the frozen set again when a newer freeze was made, or when pairs were added
    /// since (another server allowed a first-seen pair).
    pub fn refresh(&self) -> Result<(), arbiter_store::StoreError> {
        let latest = self.store.latest_baseline()?;
        if latest == 0 {
            return Ok(());
        }
        // Pairs another server allowed since are picked up too.
        let count = self.store.baseline_pair_count()?;
        let newer = latest != self.frozen.load(Ordering::Acquire);
        if (newer || count != self.pairs.load(Ordering::Acquire))
            && let Some(pairs) = self.store.baseline_pairs()?
        {
            self.pairs.store(pairs.len() as u64, Ordering::Release);
            self.memory.freeze(pairs);
            self.frozen.store(latest, Ordering::Release);
            if newer {
                tracing::info!(
                    baseline = latest,
                    "baseline frozen; first-seen pairs are novel"
                );
            }
        }
        Ok(())
    }
}

impl Baseline for StoreBaseline {
    fn is_frozen(&self) -> bool {
        self.memory.is_frozen()
    }

    fn novel(&self, principal: &str, action: &str) -> Option<bool> {
        self.memory.novel(principal, action)
    }

    fn seen(&self, principal: &str, action: &str) {
        self.memory.seen(principal, action);
        // Once per pair: a lost write only makes the pair novel once more after a restart.
        // The decision path runs on a runtime worker, and this write waits for the shared
        // connection, SQLite's write lock (the log writer's batches) and an fsync: it goes
        // to the blocking pool.
        let store = self.store.clone();
        let (principal, action) = (principal.to_owned(), action.to_owned());
        let write = move || {
            if let Err(e) = store.add_baseline_pair(&principal, &action) {
                tracing::error!(error = %e, %principal, %action, "recording a pair in the baseline");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(write)),
            Err(_) => write(),
        }
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, arbiter_store::StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| match e {
            arbiter_store::StoreError::Invalid { message } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
            }
            other => ApiError::internal(other),
        })
}

fn bad_query(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_query", message)
}

//! The server's state and routes. Handlers are a few lines each: they check who is
//! calling, then call into the engine, the store or the reload.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arbiter_core::response::Outcome;
use arbiter_core::{Decision, DecisionRequest, Engine, Pack, RequestError, TimeSource};
use arbiter_store::{
    DecisionQuery, DecisionRecord, Durability, Evidence, LogWriter, Masker, PackVersion, Store,
};
use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::auth::{AdminTokens, PepTokens};
use crate::error::ApiError;
use crate::identity::{self, Identity};
use crate::lifecycle::{self, StoreBaseline};
use crate::metrics::Metrics;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The pack directory.
    pub pack: PathBuf,
    /// The data directory (SQLite, keys, the generated admin token).
    pub data: PathBuf,
    /// Batched (default) or commit-before-answer.
    pub durability: Durability,
    /// The largest request body, in bytes.
    pub body_limit: usize,
    /// How long one request may take.
    pub request_timeout: Duration,
    /// Requests handled at once; more wait.
    pub concurrency: usize,
    /// The decision log's queue capacity.
    pub log_capacity: usize,
    /// The admin token from `ARBITER_ADMIN_TOKEN`, if set.
    pub admin_token: Option<String>,
    /// How long a client has to send a request's headers, and how long a kept-alive
    /// connection may sit idle before its next request.
    pub header_read_timeout: Duration,
    /// Connections held open at once; more wait in the listen backlog. Capped below the
    /// process's file limit, so the store and the log can always open their files.
    pub max_connections: usize,
    /// Decision endpoints must be guarded by PEP tokens (the server listens beyond
    /// loopback): a pack without `[server] pep_tokens` is refused, at start and at reload.
    pub require_pep_tokens: bool,
}

/// An operator's override of a reload guard: who, and why. Recorded like a forced
/// promotion.
#[derive(Debug, Clone)]
pub struct Forced {
    /// The admin token's name.
    pub by: String,
    /// Why; never empty.
    pub reason: String,
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The pack has problems.
    #[error("{0}")]
    Invalid(arbiter_core::diag::Problems),
    /// The pack is valid, but swapping it in would weaken the running controls in a way
    /// that needs an operator's word (`force` with a reason).
    #[error("{0}")]
    NeedsForce(String),
}

impl ReloadError {
    /// Every problem, one line each.
    pub fn lines(&self) -> Vec<String> {
        match self {
            ReloadError::Invalid(problems) => problems.0.iter().map(ToString::to_string).collect(),
            ReloadError::NeedsForce(why) => vec![why.clone()],
        }
    }
}

impl Options {
    /// Defaults for a pack and a data directory.
    pub fn new(pack: impl Into<PathBuf>, data: impl Into<PathBuf>) -> Self {
        Self {
            pack: pack.into(),
            data: data.into(),
            durability: Durability::Batched,
            body_limit: 1024 * 1024,
            request_timeout: Duration::from_secs(10),
            concurrency: 1024,
            log_capacity: 8192,
            admin_token: None,
            header_read_timeout: Duration::from_secs(5),
            max_connections: 4096,
            require_pep_tokens: false,
        }
    }
}

/// Everything the handlers share.
#[derive(Debug)]
pub struct App {
    options: Options,
    engine: ArcSwap<Engine>,
    peps: ArcSwap<PepTokens>,
    admins: AdminTokens,
    store: Store,
    log: LogWriter,
    masker: Masker,
    metrics: Metrics,
    identity: Identity,
    baseline: Arc<StoreBaseline>,
    reloading: Mutex<()>,
    poller: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The pack did not load.
    #[error("{0}")]
    Pack(arbiter_core::diag::Problems),
    /// The data directory or the store failed.
    #[error("{0}")]
    Store(#[from] arbiter_store::StoreError),
    /// A file in the data directory could not be read or written.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The admin token file could not be used (or others can read it).
    #[error("{0}")]
    AdminToken(#[from] crate::auth::AdminTokenError),
    /// The signing keys, the revocations or the pack's issuers could not be loaded.
    #[error("{0}")]
    Identity(String),
}

impl App {
    /// Loads the pack, opens the store and starts the log writer. Returns the app and, when
    /// an admin token was just generated, that token (to print once).
    pub async fn start(options: Options) -> Result<(Arc<App>, Option<String>), StartError> {
        let pack_dir = options.pack.clone();
        let pack = tokio::task::spawn_blocking(move || Pack::load(pack_dir))
            .await
            .map_err(std::io::Error::other)?
            .map_err(StartError::Pack)?;
        let store = Store::open(&options.data)?;
        let (admins, generated) =
            AdminTokens::load_or_create(&options.data, options.admin_token.as_deref())?;
        let masker = Masker::load_or_create(&options.data)?;
        let log = LogWriter::start(&store, options.durability, options.log_capacity)?;
        store.record_pack_version(&pack_version(&pack))?;
        let peps = PepTokens::from_config(&pep_hashes(&pack));
        if options.require_pep_tokens && !peps.required() {
            return Err(StartError::Pack(arbiter_core::diag::Problems(vec![
                arbiter_core::diag::Problem::in_file("arbiter.toml", OPEN_DECISIONS),
            ])));
        }
        let identity =
            Identity::start(&options.data, &store, &pack).map_err(StartError::Identity)?;
        let baseline = Arc::new(StoreBaseline::load(&store)?);
        let engine = Engine::new(Arc::new(pack))
            .with_time_source(TimeSource::ClockOnly)
            .with_credentials(identity.verifier())
            .with_baseline(baseline.clone());
        let app = App {
            options,
            engine: ArcSwap::from_pointee(engine),
            peps: ArcSwap::from_pointee(peps),
            admins,
            store,
            log,
            masker,
            metrics: Metrics::new(),
            identity,
            baseline,
            reloading: Mutex::new(()),
            poller: std::sync::Mutex::new(None),
        };
        let app = Arc::new(app);
        let weak = Arc::downgrade(&app);
        let poller = tokio::spawn(async move {
            let mut tick = tokio::time::interval(crate::identity::POLL_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(app) = weak.upgrade() else { return };
                app.identity.poll().await;
                let baseline = Arc::clone(&app.baseline);
                match tokio::task::spawn_blocking(move || baseline.refresh()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "reading the baseline"),
                    Err(e) => tracing::error!(error = %e, "reading the baseline"),
                }
            }
        });
        *app.poller.lock().unwrap_or_else(|p| p.into_inner()) = Some(poller);
        Ok((app, generated))
    }

    /// The engine in force.
    pub(crate) fn engine(&self) -> Arc<Engine> {
        self.engine.load_full()
    }

    /// The store.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Keys, revocations and upstream issuers.
    pub(crate) fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The pack directory.
    pub fn pack_dir(&self) -> std::path::PathBuf {
        self.options.pack.clone()
    }

    /// The metrics as `GET /metrics` shows them.
    pub fn metrics_text(&self) -> String {
        self.metrics
            .render(self.log.queue_depth(), self.log.write_errors())
    }

    /// The version of the pack in force.
    pub fn policy_version(&self) -> String {
        self.engine.load().pack().version().to_owned()
    }

    /// How the server runs.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Whether decision endpoints require PEP tokens.
    pub fn requires_pep_tokens(&self) -> bool {
        self.peps.load().required()
    }

    /// The routes, with body limits, timeouts and a concurrency bound as layers.
    pub fn router(self: &Arc<Self>) -> Router {
        let without_query = Router::new()
            .route("/v1/decide", post(decide))
            .route("/v1/decide/batch", post(decide_batch))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .route("/v1/policy", get(policy))
            .route("/v1/policy/reload", post(reload))
            .route("/.well-known/jwks.json", get(identity::jwks))
            .route("/v1/credentials", post(identity::mint))
            .route("/v1/token", post(identity::exchange))
            .route(
                "/v1/revocations",
                post(identity::revoke).get(identity::revocations),
            )
            .route("/v1/findings/{id}/review", post(lifecycle::review))
            .route_layer(axum::middleware::from_fn(no_query));
        Router::new()
            .route("/v1/decisions", get(decisions))
            .route("/v1/findings", get(lifecycle::findings))
            .route("/v1/readiness", get(lifecycle::readiness))
            .merge(without_query)
            .fallback(not_found)
            .layer(DefaultBodyLimit::max(self.options.body_limit))
            .layer(tower_http::timeout::TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                self.options.request_timeout,
            ))
            .layer(tower::limit::ConcurrencyLimitLayer::new(
                self.options.concurrency,
            ))
            .layer(axum::middleware::map_response(json_errors))
            .with_state(Arc::clone(self))
    }

    /// Loads the pack again and swaps it in atomically; sessions and throttles carry over.
    /// A pack with problems is refused and the running one stays, as is one that would
    /// remove every enforced control (see [`App::reload_forced`]).
    pub async fn reload(&self) -> Result<String, ReloadError> {
        self.reload_forced(None).await
    }

    /// [`App::reload`], with an operator's override: a pack that leaves no rule or
    /// default-deny scope in `enforce` where the running one had some is refused unless
    /// forced, and a forced one is recorded like a forced demotion of every enforced rule
    /// it removes. A pack that would open the decision endpoints of a server that must
    /// guard them is refused, forced or not.
    pub async fn reload_forced(&self, forced: Option<Forced>) -> Result<String, ReloadError> {
        let _one_at_a_time = self.reloading.lock().await;
        let dir = self.options.pack.clone();
        let loaded = tokio::task::spawn_blocking(move || Pack::load(dir))
            .await
            .unwrap_or_else(|e| {
                Err(arbiter_core::diag::Problems(vec![
                    arbiter_core::diag::Problem::in_file(
                        ".",
                        format!("the reload task failed: {e}"),
                    ),
                ]))
            });
        let pack = match loaded {
            Ok(pack) => pack,
            Err(problems) => {
                self.metrics.reloaded(false);
                tracing::warn!(%problems, "reload refused; the running pack stays");
                return Err(ReloadError::Invalid(problems));
            }
        };
        if self.options.require_pep_tokens && pep_hashes(&pack).is_empty() {
            self.metrics.reloaded(false);
            tracing::warn!("reload refused: it would open the decision endpoints");
            return Err(ReloadError::Invalid(arbiter_core::diag::Problems(vec![
                arbiter_core::diag::Problem::in_file("arbiter.toml", OPEN_DECISIONS),
            ])));
        }
        let removed = enforced_controls(self.engine.load().pack());
        if !removed.is_empty() && enforced_controls(&pack).is_empty() {
            let Some(forced) = &forced else {
                self.metrics.reloaded(false);
                let why = format!(
                    "the new pack enforces nothing, and the running one enforces {} ({}): \
                     reload it with force and a reason (`arbiter reload --force --reason …`) \
                     if that is meant",
                    removed.len(),
                    removed.join(", ")
                );
                tracing::warn!(%why, "reload refused; the running pack stays");
                return Err(ReloadError::NeedsForce(why));
            };
            self.record_forced_removal(forced, &removed).await?;
        }
        let verifier = match self.identity.reconfigure(&pack) {
            Ok(verifier) => verifier,
            Err(message) => {
                self.metrics.reloaded(false);
                tracing::warn!(%message, "reload refused; the running pack stays");
                return Err(ReloadError::Invalid(arbiter_core::diag::Problems(vec![
                    arbiter_core::diag::Problem::in_file("arbiter.toml", message),
                ])));
            }
        };
        let store = self.store.clone();
        let record = pack_version(&pack);
        match tokio::task::spawn_blocking(move || store.record_pack_version(&record)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "recording the pack version"),
            Err(e) => tracing::error!(error = %e, "recording the pack version"),
        }
        let version = pack.version().to_owned();
        self.peps
            .store(Arc::new(PepTokens::from_config(&pep_hashes(&pack))));
        let next = self
            .engine
            .load()
            .with_pack(Arc::new(pack))
            .with_credentials(verifier);
        self.engine.store(Arc::new(next));
        self.metrics.reloaded(true);
        tracing::info!(%version, "pack reloaded");
        Ok(version)
    }

    /// Records a forced reload that removes every enforced control, before it is applied:
    /// a reload that cannot be recorded is not applied.
    async fn record_forced_removal(
        &self,
        forced: &Forced,
        removed: &[String],
    ) -> Result<(), ReloadError> {
        let store = self.store.clone();
        let at = self.engine.load().now();
        let records: Vec<arbiter_store::Promotion> = removed
            .iter()
            .map(|rule| arbiter_store::Promotion {
                seq: 0,
                rule: rule.clone(),
                from_mode: "enforce".to_owned(),
                to_mode: "audit".to_owned(),
                forced: true,
                reason: Some(format!("removed by a forced reload: {}", forced.reason)),
                by: forced.by.clone(),
                at,
                verdict: "removed_by_reload".to_owned(),
            })
            .collect();
        let stored = tokio::task::spawn_blocking(move || {
            records
                .iter()
                .try_for_each(|r| store.record_promotion(r).map(drop))
        })
        .await;
        match stored {
            Ok(Ok(())) => {
                tracing::warn!(by = %forced.by, reason = %forced.reason, removed = ?removed,
                    "forced reload removes every enforced control");
                Ok(())
            }
            Ok(Err(e)) => Err(ReloadError::NeedsForce(format!(
                "the forced reload could not be recorded, so it is not applied: {e}"
            ))),
            Err(e) => Err(ReloadError::NeedsForce(format!(
                "the forced reload could not be recorded, so it is not applied: {e}"
            ))),
        }
    }

    /// Stops the background work and drains the decision log.
    pub async fn shutdown(&self) {
        if let Some(poller) = self.poller.lock().unwrap_or_else(|p| p.into_inner()).take() {
            poller.abort();
        }
        if let Err(e) = self.log.shutdown().await {
            tracing::error!(error = %e, "draining the decision log");
        }
    }

    /// A decision endpoint's gate: the PEP token, and a log that can record the decision.
    fn admit(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        self.check_pep(headers)?;
        if !self.log.is_healthy() {
            return Err(ApiError::log_unavailable());
        }
        Ok(())
    }

    fn check_pep(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let peps = self.peps.load();
        if peps.required() && !peps.check(headers) {
            return Err(ApiError::unauthorized(
                "a PEP token is required on decision endpoints",
            ));
        }
        Ok(())
    }

    pub(crate) fn check_admin(&self, headers: &HeaderMap) -> Result<&str, ApiError> {
        self.admins
            .check(headers)
            .ok_or_else(|| ApiError::unauthorized("an admin token is required"))
    }

    /// One request: decide it and record it. The outer error is for the whole HTTP call
    /// (the log is down); the inner one is this request's own.
    async fn decide_one(
        &self,
        engine: &Engine,
        value: Value,
    ) -> Result<Result<Decision, RequestError>, ApiError> {
        let started = Instant::now();
        let parsed = DecisionRequest::from_value(&value);
        let result = parsed
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|r| engine.decide(r));
        let latency = started.elapsed();
        let record = match parsed {
            Ok(parsed) => self.record(engine, value, &parsed, &result, latency),
            // Not a request: masking and fingerprinting could not reach into it, so none of
            // it is kept but its size and why it was refused.
            Err(refusal) => {
                let size = serde_json::to_vec(&value).map_or(0, |v| v.len());
                refused_record(engine, size, &refusal.to_json())
            }
        };
        match &result {
            Ok(decision) => self.metrics.decided(decision, latency.as_secs_f64()),
            Err(error) => self.metrics.refused(error.code()),
        }
        self.log.append(record).await.map_err(|e| {
            tracing::error!(error = %e, "decision log append");
            ApiError::log_unavailable()
        })?;
        Ok(result)
    }

    /// The body as JSON; a body that is not (too large, not JSON) is refused and
    /// recorded as `invalid` like any other bad request, with its size but not its bytes.
    async fn body_or_record(&self, body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
        // A body that is not a request is not logged as it came: masking could not reach
        // into it, and it may carry what masking is there to hide. Its size is kept.
        let size = body.as_ref().map(Bytes::len).ok();
        match json_body(body) {
            Ok(value) => Ok(value),
            Err(refusal) => {
                self.metrics.refused(refusal.code());
                let engine = self.engine.load();
                let record = refused_record(&engine, size.unwrap_or(0), &refusal.body());
                self.log
                    .append(record)
                    .await
                    .map_err(|_| ApiError::log_unavailable())?;
                Err(refusal)
            }
        }
    }

    /// The record of a parsed request: the body as it came, with the credential replaced
    /// by its fingerprint and `[log] mask` applied (the one path by which request values
    /// reach the log).
    fn record(
        &self,
        engine: &Engine,
        mut request: Value,
        parsed: &DecisionRequest,
        result: &Result<Decision, RequestError>,
        latency: Duration,
    ) -> DecisionRecord {
        // A presented token is a bearer secret: the log keeps its hash, never the token.
        if let Some(token) = request
            .as_object_mut()
            .and_then(|m| m.get_mut("credential"))
            .filter(|t| t.is_string())
        {
            *token = Value::String(token_fingerprint(token.as_str().unwrap_or_default()));
        }
        let mask = &engine.pack().config().log.mask;
        if !mask.is_empty() {
            self.masker
                .mask(&mut request, mask.iter().map(|p| p.get_ref()));
        }
        let id = result.as_ref().ok().map(|d| d.decision_id.clone());
        let mut record = blank_record(engine, id, request, latency);
        record.principal = Some(parsed.principal.to_string());
        record.action = Some(parsed.action.to_string());
        record.resource = Some(parsed.resource.to_string());
        record.session.clone_from(&parsed.session);
        match result {
            Ok(d) => {
                record.decision = match d.decision {
                    Outcome::Allow => "allow",
                    Outcome::Deny => "deny",
                }
                .to_owned();
                record.effect = d.effect.map(|e| e.as_str().to_owned());
                record.enforced = d.enforced.clone();
                record.warnings = d.warnings.iter().map(|w| w.rule.clone()).collect();
                record.audit = d
                    .audit
                    .iter()
                    .filter_map(|a| serde_json::to_value(a).ok())
                    .collect();
                record.errors = d
                    .errors
                    .iter()
                    .filter_map(|e| serde_json::to_value(e).ok())
                    .collect();
                record.reason = d.reason.clone();
                record.credential_id = d.credential_id.clone();
                record.evidence = evidence(engine.pack(), d);
                record.novel = d.novel;
                if d.session.is_some() {
                    record.session = d.session.clone();
                }
            }
            Err(error) => record.error = error.to_json().get("error").cloned(),
        }
        record
    }
}

/// A record of an invalid request (with a fresh id unless one is given); a decision fills
/// in the rest.
fn blank_record(
    engine: &Engine,
    decision_id: Option<String>,
    request: Value,
    latency: Duration,
) -> DecisionRecord {
    let time = engine.now();
    DecisionRecord {
        decision_id: decision_id.unwrap_or_else(|| engine.new_decision_id(time)),
        time,
        policy_version: engine.pack().version().to_owned(),
        principal: None,
        action: None,
        resource: None,
        session: None,
        credential_id: None,
        decision: "invalid".to_owned(),
        effect: None,
        enforced: Vec::new(),
        warnings: Vec::new(),
        audit: Vec::new(),
        errors: Vec::new(),
        reason: None,
        error: None,
        latency_us: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
        request,
        evidence: Evidence::default(),
        novel: None,
    }
}

/// The record of a body that was refused before it was a request: its size and why,
/// nothing of what it held.
fn refused_record(engine: &Engine, size: usize, refusal: &Value) -> DecisionRecord {
    let mut record = blank_record(
        engine,
        None,
        json!({ "unparsed_bytes": size }),
        Duration::ZERO,
    );
    record.error = refusal.get("error").cloned();
    record
}

/// What the decision adds to findings and readiness: the rules in scope, the
/// default-deny scope when it was consulted, and what each fired warn rule would do.
fn evidence(pack: &Pack, d: &Decision) -> Evidence {
    let warned = d
        .warnings
        .iter()
        .map(|w| {
            let would = pack
                .rule(&w.rule)
                .and_then(|r| r.effect)
                .unwrap_or(arbiter_core::rule::Effect::Deny);
            (w.rule.clone(), would.as_str().to_owned())
        })
        .collect();
    Evidence {
        in_scope: d.in_scope.clone(),
        scope: d.scope.clone(),
        warned,
    }
}

/// `sha256:` and the first 16 bytes of the token's hash, in hex: enough to tell tokens
/// apart in the log, useless to present.
fn token_fingerprint(token: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(token.as_bytes());
    format!(
        "sha256:{}",
        hex::encode(digest.get(..16).unwrap_or_default())
    )
}

/// Why a server that must guard its decision endpoints refuses a pack without PEP tokens.
const OPEN_DECISIONS: &str = "[server] pep_tokens is empty, and this server listens beyond \
     loopback: its decision endpoints would be open to anyone who can reach it \
     (set pep_tokens, or serve with --allow-open-decisions)";

/// The rules and default-deny scopes a pack enforces.
fn enforced_controls(pack: &Pack) -> Vec<String> {
    let rules = pack
        .rules()
        .iter()
        .filter(|r| r.mode == Some(arbiter_core::rule::Mode::Enforce))
        .map(|r| r.id.clone());
    let scopes = pack
        .default_deny_scopes()
        .into_iter()
        .filter(|(_, mode)| *mode == arbiter_core::rule::Mode::Enforce)
        .map(|(ty, _)| format!("default-deny:{ty}"));
    rules.chain(scopes).collect()
}

fn pep_hashes(pack: &Pack) -> Vec<String> {
    pack.config()
        .server
        .pep_tokens
        .iter()
        .map(|t| t.get_ref().clone())
        .collect()
}

fn pack_version(pack: &Pack) -> PackVersion {
    arbiter_lifecycle::readiness::pack_version(pack, jiff::Timestamp::now())
}

/// The body as a JSON object (duplicate keys refused), or the right 4xx.
fn json_body(body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    ApiError::json_object(body)
}

/// A body that is not declared JSON is refused before it is read: a browser page may
/// send `text/plain` (or a form) cross-site without a preflight, and a decision can have
/// effects (a revoke, a session terminated, a throttle spent).
fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let essence = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    match essence.as_deref() {
        Some("application/json") => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be sent as `Content-Type: application/json`",
        )),
    }
}

/// Endpoints that take no query parameters refuse them, as the ones that take some refuse
/// the ones they do not know: a misspelt filter is an error, never silently ignored.
async fn no_query(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Result<Response, ApiError> {
    if request.uri().query().is_some_and(|q| !q.is_empty()) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_query",
            format!("`{}` takes no query parameters", request.uri().path()),
        ));
    }
    Ok(next.run(request).await)
}

fn request_error(error: &RequestError) -> ApiError {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_REQUEST);
    ApiError::new(status, error.code(), error.to_string())
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

async fn decide(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    app.admit(&headers)?;
    require_json(&headers)?;
    let value = app.body_or_record(body).await?;
    let engine = app.engine.load_full();
    match app.decide_one(&engine, value).await? {
        Ok(decision) => Ok(decision_response(&decision)),
        Err(error) => Err(request_error(&error)),
    }
}

/// The most requests one batch may carry.
const MAX_BATCH: usize = 1_000;

async fn decide_batch(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    app.admit(&headers)?;
    require_json(&headers)?;
    let value = app.body_or_record(body).await?;
    let requests = match value {
        Value::Object(mut map) if map.len() == 1 && map.contains_key("requests") => {
            match map.remove("requests") {
                Some(Value::Array(items)) => items,
                _ => {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "malformed_request",
                        "`requests` must be a list",
                    ));
                }
            }
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_request",
                "a batch is {\"requests\": [...]} and nothing else",
            ));
        }
    };
    if requests.len() > MAX_BATCH {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!(
                "a batch holds at most {MAX_BATCH} requests, this one {}",
                requests.len()
            ),
        ));
    }
    // One pack for the whole batch, even if a reload lands in between.
    let engine = app.engine.load_full();
    let mut responses = Vec::with_capacity(requests.len());
    for request in requests {
        let answer = match app.decide_one(&engine, request).await? {
            Ok(decision) => serde_json::to_value(&decision).map_err(ApiError::internal)?,
            Err(error) => error.to_json(),
        };
        responses.push(answer);
    }
    Ok(axum::Json(json!({ "responses": responses })).into_response())
}

async fn healthz() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    let mut problems = Vec::new();
    let store = app.store.clone();
    match tokio::task::spawn_blocking(move || store.check_writable()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => problems.push(format!("store not writable: {e}")),
        Err(e) => problems.push(format!("store check failed: {e}")),
    }
    if !app.log.is_healthy() {
        problems.push(format!(
            "decision log failing ({} write errors so far)",
            app.log.write_errors()
        ));
    }
    let version = app.engine.load().pack().version().to_owned();
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

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let body = app
        .metrics
        .render(app.log.queue_depth(), app.log.write_errors());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn policy(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    app.check_admin(&headers)?;
    let engine = app.engine.load();
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
        .map(|(ty, mode)| (format!("default-deny:{ty}"), json!(mode)))
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

async fn reload(
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
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                "`reason` must say why",
            ));
        }
        body.force.then(|| Forced {
            by: admin.clone(),
            reason: body.reason,
        })
    };
    match app.reload_forced(forced).await {
        Ok(version) => {
            tracing::info!(%admin, %version, "reload requested");
            Ok(
                axum::Json(json!({"status": "reloaded", "policy_version": version}))
                    .into_response(),
            )
        }
        Err(refused) => {
            let running = app.engine.load().pack().version().to_owned();
            let list = refused.lines();
            let (status, code, message) = match refused {
                ReloadError::Invalid(_) => (
                    StatusCode::BAD_REQUEST,
                    "invalid_pack",
                    format!(
                        "the pack has {} problem(s); the running pack ({running}) stays",
                        list.len()
                    ),
                ),
                ReloadError::NeedsForce(_) => (
                    StatusCode::CONFLICT,
                    "reload_needs_force",
                    format!("the reload needs force; the running pack ({running}) stays"),
                ),
            };
            Err(ApiError::new(status, code, message).with_details(json!(list)))
        }
    }
}

/// `GET /v1/decisions` filters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionsParams {
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

async fn decisions(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    params: Result<Query<DecisionsParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    app.check_admin(&headers)?;
    let Query(params) =
        params.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text()))?;
    let query = decision_query(params)?;
    let store = app.store.clone();
    let page = tokio::task::spawn_blocking(move || store.query_decisions(&query))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| match e {
            arbiter_store::StoreError::InvalidQuery(_)
            | arbiter_store::StoreError::InvalidCursor { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e.to_string())
            }
            other => ApiError::internal(other),
        })?;
    Ok(axum::Json(page).into_response())
}

fn decision_query(p: DecisionsParams) -> Result<DecisionQuery, ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", m);
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
        && !["allow", "deny", "invalid"].contains(&d.as_str())
    {
        return Err(bad(format!(
            "`decision` must be allow, deny or invalid, not `{d}`"
        )));
    }
    if let Some(m) = &p.mode
        && !["audit", "warn", "enforce"].contains(&m.as_str())
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

/// Errors made outside the handlers (a method not allowed, a timeout) carry a plain body;
/// every error answered is `{"error": {"code", "message"}}`, so they are rewritten.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let code = match status {
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_client_error() => "bad_request",
        _ => "internal",
    };
    let message = status.canonical_reason().unwrap_or("error").to_lowercase();
    let mut rewritten = ApiError::new(status, code, message).into_response();
    for (name, value) in response.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rewritten.headers_mut().insert(name.clone(), value.clone());
        }
    }
    rewritten
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

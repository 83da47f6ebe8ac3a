//! The server's state and its whole life in one place: [`App::start`], [`App::reload`]
//! (and [`App::reload_candidate`], the candidate pack in shadow), and [`App::shutdown`]
//! (stop the background work and the shadow, drain the log). Time comes from the
//! injected clock ([`Options::clock`]); deciding is the [`DecisionService`]'s.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arbiter_core::clock::{Clock, SystemClock};
use arbiter_core::diag::{Problem, Problems};
use arbiter_core::rule::{Mode, RuleRef};
use arbiter_core::{Engine, Pack, TimeSource};
use arbiter_service::shadow::{Candidate, Sample, Shadow, ShadowError, ShadowOptions};
use arbiter_service::{DecisionService, Recording, StoreBaseline};
use arbiter_store::{
    CandidateReport, Durability, LogWriter, Masker, PackVersion, Promotion, ShadowLimits, Store,
    StoreError,
};
use axum::Router;
use axum::http::HeaderMap;
use tokio::sync::Mutex;

use crate::auth::{AdminTokens, PepTokens};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::tokens::{self, Tokens};

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
    /// Where every time the server uses comes from: decisions, records, reviews, tokens.
    pub clock: Arc<dyn Clock>,
    /// A candidate pack to decide in shadow (`--candidate`): it never changes an answer.
    pub candidate: Option<PathBuf>,
    /// The principals the candidate decides for (`--candidate-sample`).
    pub candidate_sample: Sample,
    /// Sampled requests waiting for the candidate, at most; past it they are dropped.
    pub candidate_queue: usize,
    /// Serve the dashboard at `/ui` (`serve --no-ui` turns it off).
    pub ui: bool,
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
            clock: Arc::new(SystemClock),
            candidate: None,
            candidate_sample: Sample::ALL,
            candidate_queue: ShadowOptions::default().queue,
            ui: true,
        }
    }
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
    Invalid(Problems),
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

    fn config(message: impl Into<String>) -> ReloadError {
        ReloadError::Invalid(Problems(vec![Problem::in_file("arbiter.toml", message)]))
    }
}

/// Why the candidate could not be reloaded or read.
#[derive(Debug, thiserror::Error)]
pub enum CandidateError {
    /// The server runs without `--candidate`.
    #[error("no candidate pack is in shadow: serve with --candidate DIR")]
    None,
    /// The candidate has problems; the running candidate stays.
    #[error("{problems}")]
    Invalid {
        /// Every problem.
        problems: Problems,
        /// The version of the candidate that stays.
        running: String,
    },
    /// The store could not record or read it.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The task that did it failed.
    #[error("{0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The pack did not load.
    #[error("{0}")]
    Pack(Problems),
    /// The candidate pack did not load.
    #[error("the candidate pack {dir}:\n{problems}")]
    Candidate {
        /// Its directory.
        dir: String,
        /// Every problem.
        problems: Problems,
    },
    /// The data directory or the store failed.
    #[error("{0}")]
    Store(#[from] arbiter_store::StoreError),
    /// A file in the data directory could not be read or written.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The admin token file could not be used (or others can read it).
    #[error("{0}")]
    AdminToken(#[from] crate::auth::AdminTokenError),
    /// The candidate could not be put in shadow.
    #[error("{0}")]
    Shadow(#[from] ShadowError),
    /// The signing keys, the revocations or the pack's issuers could not be loaded.
    #[error("{0}")]
    Tokens(#[from] tokens::TokensError),
}

/// Everything the handlers share.
#[derive(Debug)]
pub struct App {
    options: Options,
    service: DecisionService,
    peps: arc_swap::ArcSwap<PepTokens>,
    admins: AdminTokens,
    store: Store,
    metrics: Arc<Metrics>,
    tokens: Tokens,
    baseline: Arc<StoreBaseline>,
    reloading: Mutex<()>,
    poller: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    sessions: crate::ui::session::Sessions,
}

impl App {
    /// Loads the pack, opens the store and starts the log writer. Returns the app and, when
    /// an admin token was just generated, that token (to print once).
    pub async fn start(options: Options) -> Result<(Arc<App>, Option<String>), StartError> {
        let pack = load(options.pack.clone()).await.map_err(StartError::Pack)?;
        let candidate = match &options.candidate {
            Some(dir) => {
                Some(
                    load(dir.clone())
                        .await
                        .map_err(|problems| StartError::Candidate {
                            dir: dir.display().to_string(),
                            problems,
                        })?,
                )
            }
            None => None,
        };
        let (app, generated) =
            tokio::task::spawn_blocking(move || App::open(options, pack, candidate))
                .await
                .map_err(std::io::Error::other)??;
        let app = Arc::new(app);
        let weak = Arc::downgrade(&app);
        let poller = tokio::spawn(async move {
            let mut tick = tokio::time::interval(tokens::POLL_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(app) = weak.upgrade() else { return };
                app.poll().await;
            }
        });
        *app.poller.lock().unwrap_or_else(|p| p.into_inner()) = Some(poller);
        Ok((app, generated))
    }

    /// Everything [`App::start`] does before the poller: blocking work (files, SQLite).
    fn open(
        options: Options,
        pack: Pack,
        candidate: Option<Pack>,
    ) -> Result<(App, Option<String>), StartError> {
        let store = Store::open(&options.data)?;
        let (admins, generated) =
            AdminTokens::load_or_create(&options.data, options.admin_token.as_deref())?;
        let masker = Masker::load_or_create(&options.data)?;
        let log = LogWriter::start(&store, options.durability, options.log_capacity)?;
        store.record_pack_version(&PackVersion::of(&pack, options.clock.now()))?;
        let peps = PepTokens::from_config(&pep_hashes(&pack));
        if options.require_pep_tokens && !peps.required() {
            return Err(StartError::Pack(Problems(vec![Problem::in_file(
                "arbiter.toml",
                OPEN_DECISIONS,
            )])));
        }
        let tokens = Tokens::start(&options.data, &store, &pack, Arc::clone(&options.clock))?;
        let baseline = Arc::new(StoreBaseline::load(&store)?);
        let engine = Engine::new(Arc::new(pack))
            .with_clock(Arc::clone(&options.clock))
            .with_time_source(TimeSource::ClockOnly)
            .with_credentials(tokens.verifier())
            .with_baseline(baseline.clone());
        let metrics = Arc::new(Metrics::new());
        let mut service = DecisionService::new(engine)
            .recording(Recording {
                log,
                masker,
                store: store.clone(),
            })
            .observed_by(metrics.clone());
        if let (Some(pack), Some(dir)) = (candidate, &options.candidate) {
            let shadow = Shadow::start(
                Candidate {
                    pack: Arc::new(pack),
                    dir: dir.clone(),
                },
                &store,
                ShadowOptions {
                    sample: options.candidate_sample,
                    queue: options.candidate_queue,
                    limits: ShadowLimits::default(),
                },
                metrics.clone(),
                options.clock.now(),
            )?;
            service = service.shadowed_by(Arc::new(shadow));
        }
        let app = App {
            options,
            service,
            peps: arc_swap::ArcSwap::from_pointee(peps),
            admins,
            store,
            metrics,
            tokens,
            baseline,
            reloading: Mutex::new(()),
            poller: std::sync::Mutex::new(None),
            sessions: crate::ui::session::Sessions::default(),
        };
        Ok((app, generated))
    }

    /// One round of background work, every [`tokens::POLL_EVERY`]: revocations and keys
    /// written by other processes, due JWKS fetches, a baseline frozen elsewhere.
    async fn poll(&self) {
        self.tokens.poll().await;
        let baseline = Arc::clone(&self.baseline);
        match tokio::task::spawn_blocking(move || baseline.refresh()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "reading the baseline"),
            Err(e) => tracing::error!(error = %e, "reading the baseline"),
        }
    }

    /// The engine in force.
    pub fn engine(&self) -> Arc<Engine> {
        self.service.engine()
    }

    /// The decision service.
    pub fn service(&self) -> &DecisionService {
        &self.service
    }

    /// The store.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Keys, revocations and upstream issuers.
    pub(crate) fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    /// The clock every time comes from.
    pub(crate) fn now(&self) -> jiff::Timestamp {
        self.options.clock.now()
    }

    /// The pack directory.
    pub fn pack_dir(&self) -> PathBuf {
        self.options.pack.clone()
    }

    /// The metrics as `GET /metrics` shows them.
    pub fn metrics_text(&self) -> String {
        let log = self.service.log();
        self.metrics.render(
            log.map_or(0, LogWriter::queue_depth),
            log.map_or(0, LogWriter::write_errors),
        )
    }

    /// The version of the pack in force.
    pub fn policy_version(&self) -> String {
        self.engine().pack().version().to_owned()
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
        crate::routes::router(self)
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
        let outcome = self.try_reload(forced).await;
        self.metrics.reloaded(outcome.is_ok());
        match &outcome {
            Ok(version) => tracing::info!(%version, "pack reloaded"),
            Err(refused) => tracing::warn!(%refused, "reload refused; the running pack stays"),
        }
        outcome
    }

    async fn try_reload(&self, forced: Option<Forced>) -> Result<String, ReloadError> {
        let pack = load(self.options.pack.clone())
            .await
            .map_err(ReloadError::Invalid)?;
        if self.options.require_pep_tokens && pep_hashes(&pack).is_empty() {
            return Err(ReloadError::config(OPEN_DECISIONS));
        }
        let running = self.engine();
        let removed = enforced_controls(running.pack());
        if !removed.is_empty() && enforced_controls(&pack).is_empty() {
            let Some(forced) = &forced else {
                return Err(ReloadError::NeedsForce(format!(
                    "the new pack enforces nothing, and the running one enforces {} ({}): \
                     reload it with force and a reason (`arbiter reload --force --reason …`) \
                     if that is meant",
                    removed.len(),
                    removed
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            };
            self.record_forced_removal(forced, &removed).await?;
        }
        let verifier = self
            .tokens
            .reconfigure(&pack)
            .map_err(|e| ReloadError::config(e.to_string()))?;
        let store = self.store.clone();
        let record = PackVersion::of(&pack, self.now());
        match tokio::task::spawn_blocking(move || store.record_pack_version(&record)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "recording the pack version"),
            Err(e) => tracing::error!(error = %e, "recording the pack version"),
        }
        let version = pack.version().to_owned();
        self.peps
            .store(Arc::new(PepTokens::from_config(&pep_hashes(&pack))));
        let next = running.with_pack(Arc::new(pack)).with_credentials(verifier);
        self.service.swap(Arc::new(next));
        Ok(version)
    }

    /// Records a forced reload that removes every enforced control, before it is applied:
    /// a reload that cannot be recorded is not applied.
    async fn record_forced_removal(
        &self,
        forced: &Forced,
        removed: &[RuleRef],
    ) -> Result<(), ReloadError> {
        let store = self.store.clone();
        let at = self.now();
        let records: Vec<Promotion> = removed
            .iter()
            .map(|rule| Promotion {
                seq: 0,
                rule: rule.to_string(),
                from_mode: Mode::Enforce.as_str().to_owned(),
                to_mode: Mode::Audit.as_str().to_owned(),
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
        let failure = match stored {
            Ok(Ok(())) => {
                tracing::warn!(by = %forced.by, reason = %forced.reason, removed = ?removed,
                    "forced reload removes every enforced control");
                return Ok(());
            }
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        Err(ReloadError::NeedsForce(format!(
            "the forced reload could not be recorded, so it is not applied: {failure}"
        )))
    }

    /// Loads the candidate pack again and puts it in shadow; a candidate with problems is
    /// refused and the running one stays. The new candidate starts with sessions and
    /// throttles of its own, and its differences are kept apart from the old one's.
    pub async fn reload_candidate(&self) -> Result<String, CandidateError> {
        let (Some(shadow), Some(dir)) = (self.service.shadow(), &self.options.candidate) else {
            return Err(CandidateError::None);
        };
        let _one_at_a_time = self.reloading.lock().await;
        let outcome = match load(dir.clone()).await {
            Ok(pack) => {
                let version = pack.version().to_owned();
                let shadow = Arc::clone(shadow);
                let candidate = Candidate {
                    pack: Arc::new(pack),
                    dir: dir.clone(),
                };
                let now = self.now();
                match tokio::task::spawn_blocking(move || shadow.swap(candidate, now)).await {
                    Ok(Ok(())) => Ok(version),
                    Ok(Err(e)) => Err(CandidateError::Store(e)),
                    Err(e) => Err(CandidateError::Task(e)),
                }
            }
            Err(problems) => Err(CandidateError::Invalid {
                problems,
                running: shadow.candidate().version().to_owned(),
            }),
        };
        match &outcome {
            Ok(version) => tracing::info!(%version, "candidate reloaded"),
            Err(refused) => {
                tracing::warn!(%refused, "candidate reload refused; the running candidate stays");
            }
        }
        outcome
    }

    /// What the candidate in shadow found so far.
    pub async fn candidate_report(&self) -> Result<CandidateReport, CandidateError> {
        let shadow = self.service.shadow().ok_or(CandidateError::None)?;
        let version = shadow.candidate().version().to_owned();
        let store = self.store.clone();
        let report =
            tokio::task::spawn_blocking(move || store.candidate_report(Some(&version))).await??;
        // The candidate in force was recorded before it was put in force.
        report.ok_or(CandidateError::None)
    }

    /// Stops the background work, lets the candidate finish what it was handed, and
    /// drains the decision log.
    pub async fn shutdown(&self) {
        if let Some(poller) = self.poller.lock().unwrap_or_else(|p| p.into_inner()).take() {
            poller.abort();
        }
        if let Some(shadow) = self.service.shadow().cloned()
            && let Err(e) = tokio::task::spawn_blocking(move || shadow.stop()).await
        {
            tracing::error!(error = %e, "stopping the shadow");
        }
        self.service.drain().await;
    }

    /// A decision endpoint's gate: the PEP token, and a log that can record the decision.
    pub(crate) fn admit(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let peps = self.peps.load();
        if peps.required() && !peps.check(headers) {
            return Err(ApiError::Unauthorized(
                "a PEP token is required on decision endpoints",
            ));
        }
        if !self.service.can_record() {
            return Err(ApiError::LogUnavailable);
        }
        Ok(())
    }

    /// An admin endpoint's gate; the admin token's name.
    pub(crate) fn check_admin(&self, headers: &HeaderMap) -> Result<&str, ApiError> {
        self.admins
            .check(headers)
            .ok_or(ApiError::Unauthorized("an admin token is required"))
    }

    /// The name of the admin whose token this is (the dashboard's sign-in).
    pub(crate) fn admin_named_by(&self, token: &str) -> Option<&str> {
        self.admins.check_token(token)
    }

    /// The dashboard's signed-in sessions.
    pub(crate) fn sessions(&self) -> &crate::ui::session::Sessions {
        &self.sessions
    }

    /// What `/readyz` reports: why the server cannot decide, if it cannot.
    pub(crate) async fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.check_writable()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => problems.push(format!("store not writable: {e}")),
            Err(e) => problems.push(format!("store check failed: {e}")),
        }
        if let Some(log) = self.service.log()
            && !log.is_healthy()
        {
            problems.push(format!(
                "decision log failing ({} write errors so far)",
                log.write_errors()
            ));
        }
        problems
    }
}

/// Loads a pack on the blocking pool.
async fn load(dir: PathBuf) -> Result<Pack, Problems> {
    tokio::task::spawn_blocking(move || Pack::load(dir))
        .await
        .unwrap_or_else(|e| {
            Err(Problems(vec![Problem::in_file(
                ".",
                format!("the load task failed: {e}"),
            )]))
        })
}

/// Why a server that must guard its decision endpoints refuses a pack without PEP tokens.
const OPEN_DECISIONS: &str = "[server] pep_tokens is empty, and this server listens beyond \
     loopback: its decision endpoints would be open to anyone who can reach it \
     (set pep_tokens, or serve with --allow-open-decisions)";

/// The rules and default-deny scopes a pack enforces.
fn enforced_controls(pack: &Pack) -> Vec<RuleRef> {
    let rules = pack
        .rules()
        .iter()
        .filter(|r| r.is_enforced())
        .map(|r| RuleRef::Rule(r.id.clone()));
    let scopes = pack
        .default_deny_scopes()
        .into_iter()
        .filter(|(_, mode)| *mode == Mode::Enforce)
        .map(|(ty, _)| RuleRef::DefaultDeny(ty));
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

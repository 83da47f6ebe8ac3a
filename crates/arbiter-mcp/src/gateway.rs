//! The gateway's life in one place: [`Gateway::start`] (the pack, the store, the log
//! writer, the verifier, the caller, the one-second poll), [`Gateway::gate`] for each MCP
//! session, and [`Gateway::shutdown`] (stop the poll, drain the log). It decides through
//! the same [`DecisionService`] as `arbiter serve`, so a call is decided, logged, masked
//! and revoked exactly as a request to `POST /v1/decide` would be.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arbiter_core::clock::{Clock, SystemClock};
use arbiter_core::credential::{CredentialFailure, CredentialVerifier, VerifiedCredential};
use arbiter_core::diag::Problems;
use arbiter_core::{Engine, Pack, TimeSource};
use arbiter_service::{DecisionService, Recording, StoreBaseline};
use arbiter_store::{Durability, LogWriter, Masker, PackVersion, Store};
use tokio::task::JoinHandle;

use crate::caller::{Caller, CallerError, Credentials, CredentialsError};
use crate::decider::{DEFAULT_PDP_TIMEOUT, Decider, Remote, RemoteError};
use crate::gate::Gate;
use crate::jsonrpc::DEFAULT_MAX_MESSAGE_BYTES;
use crate::metrics::Metrics;

/// How often revocations made elsewhere and a baseline frozen elsewhere are picked up.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// The decision log's queue capacity.
const LOG_CAPACITY: usize = 1024;

/// Who the agent is, as given on the command line.
#[derive(Debug, Clone)]
pub enum Who {
    /// An arbiter token (`arbiter token issue`), verified.
    Token(String),
    /// A principal for local use (`Agent::"dev"`), unverified.
    Principal(String),
    /// Each request says who calls (Streamable HTTP: `Authorization: Bearer`; agentgateway's hook: the call's token), verified
    /// per request; `fallback` is a principal for local use, taken on trust, for a
    /// request that sends no `Authorization`.
    PerRequest {
        /// The unverified principal for a request without a token, if any.
        fallback: Option<String>,
    },
}

/// How the gateway runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The pack directory.
    pub pack: PathBuf,
    /// The data directory: the decision log, the keys, the revocations.
    pub data: PathBuf,
    /// Who calls.
    pub who: Who,
    /// The MCP server's name, for the decision log.
    pub upstream: String,
    /// The largest message read from either side, in bytes.
    pub max_message_bytes: usize,
    /// Batched (default) or commit-before-answer.
    pub durability: Durability,
    /// Where every time comes from.
    pub clock: Arc<dyn Clock>,
    /// A running `arbiter serve` that decides instead of this process.
    pub pdp: Option<Pdp>,
}

/// A remote decision point: `arbiter serve` at `url`.
#[derive(Debug, Clone)]
pub struct Pdp {
    /// Its base URL, `http://127.0.0.1:8700`.
    pub url: String,
    /// The PEP token its `[server] pep_tokens` accepts.
    pub pep_token: Option<String>,
    /// How long a decision may take before the call is refused.
    pub timeout: Duration,
}

impl Pdp {
    /// A decision point at `url`, with the default timeout.
    pub fn new(url: &str, pep_token: Option<String>) -> Pdp {
        Pdp {
            url: url.to_owned(),
            pep_token,
            timeout: DEFAULT_PDP_TIMEOUT,
        }
    }
}

impl Options {
    /// Defaults for a pack, a data directory, a caller and an upstream's name.
    pub fn new(
        pack: impl Into<PathBuf>,
        data: impl Into<PathBuf>,
        who: Who,
        upstream: &str,
    ) -> Options {
        Options {
            pack: pack.into(),
            data: data.into(),
            who,
            upstream: upstream.to_owned(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            durability: Durability::Batched,
            clock: Arc::new(SystemClock),
            pdp: None,
        }
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The pack did not load.
    #[error("{0}")]
    Pack(Problems),
    /// The data directory or the store failed.
    #[error("{0}")]
    Store(#[from] arbiter_store::StoreError),
    /// The signing keys or the revocations could not be read.
    #[error("{0}")]
    Credentials(#[from] CredentialsError),
    /// The caller could not be established.
    #[error("{0}")]
    Caller(#[from] CallerError),
    /// The remote decision point cannot be used.
    #[error("{0}")]
    Remote(#[from] RemoteError),
    /// A blocking task failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A running gateway: the decision service and what keeps it current.
#[derive(Debug)]
pub struct Gateway {
    options: Options,
    decider: Decider,
    metrics: Arc<Metrics>,
    /// The one caller (stdio), or the fallback of [`Who::PerRequest`].
    caller: Option<Caller>,
    /// The data directory's tokens; `None` with a remote decision point, which verifies.
    verifier: Option<Arc<arbiter_identity::Verifier>>,
    poller: Option<JoinHandle<()>>,
}

impl Gateway {
    /// Loads the pack, opens the store, starts the log writer, verifies the caller and
    /// starts the poll. The pack's warnings are logged.
    pub async fn start(options: Options) -> Result<Gateway, StartError> {
        let dir = options.pack.clone();
        let pack = tokio::task::spawn_blocking(move || Pack::load(dir))
            .await
            .map_err(std::io::Error::other)?
            .map_err(StartError::Pack)?;
        for warning in pack.warnings() {
            tracing::warn!("{warning}");
        }
        if let Some(pdp) = options.pdp.clone() {
            return Gateway::remote(options, pack, &pdp);
        }
        let opening = options.clone();
        let Opened {
            service,
            credentials,
            baseline,
        } = tokio::task::spawn_blocking(move || open(&opening, pack))
            .await
            .map_err(std::io::Error::other)??;
        let verifier = credentials.verifier();
        let caller = match &options.who {
            Who::Token(token) => Some(Caller::verified(
                token.clone(),
                &*verifier,
                options.clock.now(),
            )?),
            Who::Principal(principal)
            | Who::PerRequest {
                fallback: Some(principal),
            } => Some(configured(principal)?),
            Who::PerRequest { fallback: None } => None,
        };
        let poller = tokio::spawn(async move {
            let mut tick = tokio::time::interval(POLL_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                credentials.poll().await;
                let baseline = Arc::clone(&baseline);
                match tokio::task::spawn_blocking(move || baseline.refresh()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "reading the baseline"),
                    Err(e) => tracing::error!(error = %e, "reading the baseline"),
                }
            }
        });
        Ok(Gateway {
            options,
            decider: Decider::Local(service),
            metrics: Arc::new(Metrics::new()),
            caller,
            verifier: Some(verifier),
            poller: Some(poller),
        })
    }

    /// A gateway whose decisions a running `arbiter serve` makes: nothing is opened here
    /// (no data directory, no log). The token cannot be verified without the server's
    /// keys, so it is read for its principal only, and the server verifies it at every
    /// decision (a token it does not accept is a deny, `credential:<why>`).
    fn remote(options: Options, pack: Pack, pdp: &Pdp) -> Result<Gateway, StartError> {
        let remote = Remote::new(&pdp.url, pdp.pep_token.clone(), pdp.timeout, Arc::new(pack))?;
        let caller = match &options.who {
            Who::Token(token) => Some(Caller::presented(token.clone())?),
            Who::Principal(principal)
            | Who::PerRequest {
                fallback: Some(principal),
            } => Some(configured(principal)?),
            Who::PerRequest { fallback: None } => None,
        };
        tracing::info!(pdp = %pdp.url, timeout_ms = pdp.timeout.as_millis(), "decisions are made by the decision point; a call it does not decide in time is refused");
        Ok(Gateway {
            options,
            decider: Decider::Remote(Arc::new(remote)),
            metrics: Arc::new(Metrics::new()),
            caller,
            verifier: None,
            poller: None,
        })
    }

    /// The decision service, when decisions are made in this process.
    pub fn service(&self) -> Option<&Arc<DecisionService>> {
        match &self.decider {
            Decider::Local(service) => Some(service),
            Decider::Remote(_) => None,
        }
    }

    /// Where decisions are made.
    pub fn decider(&self) -> &Decider {
        &self.decider
    }

    /// The gateway's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The largest message read from either side.
    pub fn max_message_bytes(&self) -> usize {
        self.options.max_message_bytes
    }

    /// A new MCP session's gate for the one caller, in a new arbiter session (or the one
    /// the token binds); `None` when each request says who calls ([`Who::PerRequest`]
    /// without a fallback).
    pub fn gate(&self) -> Option<Gate> {
        let caller = self.caller.clone()?;
        Some(self.gate_for(caller, self.new_session(), &self.options.upstream))
    }

    /// A gate deciding for `caller` in the arbiter session `session` (unless the token
    /// binds one), for calls to `upstream`.
    pub fn gate_for(&self, caller: Caller, session: String, upstream: &str) -> Gate {
        Gate::new(
            self.decider.clone(),
            Arc::clone(&self.metrics),
            caller,
            session,
            upstream.to_owned(),
        )
    }

    /// The caller given at start (stdio), or the fallback of [`Who::PerRequest`].
    pub fn caller(&self) -> Option<&Caller> {
        self.caller.as_ref()
    }

    /// The verifier of the data directory's tokens, revocations applied; `None` with a
    /// remote decision point.
    pub fn verifier(&self) -> Option<Arc<arbiter_identity::Verifier>> {
        self.verifier.clone()
    }

    /// A fresh arbiter session id, `mcp-<ULID>`.
    pub fn new_session(&self) -> String {
        let millis = u64::try_from(self.options.clock.now().as_millisecond()).unwrap_or(0);
        let at = std::time::SystemTime::UNIX_EPOCH + Duration::from_millis(millis);
        format!("mcp-{}", ulid::Ulid::from_datetime(at))
    }

    /// The configured caller: the stdio one, or the fallback for a request without a token.
    pub fn configured_caller(&self) -> Option<&Caller> {
        self.caller.as_ref()
    }

    /// What a presented token establishes: verified now with the data directory's keys
    /// and revocations; with a remote decision point (no keys here), read for its
    /// principal only, and verified by the server at every decision.
    pub fn credential(&self, token: &str) -> Result<VerifiedCredential, CredentialFailure> {
        match &self.verifier {
            Some(verifier) => verifier.verify(token, self.options.clock.now()),
            None => arbiter_identity::read_unverified(token),
        }
    }

    /// Where every time comes from.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.options.clock
    }

    /// Stops the poll and drains the decision log: every decision made is written.
    pub async fn shutdown(self) {
        if let Some(poller) = &self.poller {
            poller.abort();
        }
        if let Some(service) = self.service() {
            service.drain().await;
        }
    }
}

/// A principal for local use, said to be unverified.
fn configured(principal: &str) -> Result<Caller, CallerError> {
    let caller = Caller::configured(principal)?;
    tracing::warn!(
        principal = %caller.principal(),
        "no token: the principal is taken on trust, and its decisions are logged as unverified"
    );
    Ok(caller)
}

/// What [`open`] sets up.
struct Opened {
    service: Arc<DecisionService>,
    credentials: Arc<Credentials>,
    baseline: Arc<StoreBaseline>,
}

/// Everything [`Gateway::start`] does with files and SQLite.
fn open(options: &Options, pack: Pack) -> Result<Opened, StartError> {
    let store = Store::open(&options.data)?;
    let masker = Masker::load_or_create(&options.data)?;
    let log = LogWriter::start(&store, options.durability, LOG_CAPACITY)?;
    store.record_pack_version(&PackVersion::of(&pack, options.clock.now()))?;
    let credentials = Arc::new(Credentials::open(
        &options.data,
        &store,
        &pack.config().credentials,
        options.clock.now(),
    )?);
    let baseline = Arc::new(StoreBaseline::load(&store)?);
    let engine = Engine::new(Arc::new(pack))
        .with_clock(Arc::clone(&options.clock))
        .with_time_source(TimeSource::ClockOnly)
        .with_credentials(credentials.verifier())
        .with_baseline(baseline.clone());
    let service = DecisionService::new(engine).recording(Recording { log, masker, store });
    Ok(Opened {
        service: Arc::new(service),
        credentials,
        baseline,
    })
}

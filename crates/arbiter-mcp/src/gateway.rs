//! The gateway's life in one place: [`Gateway::start`] (the pack, the store, the log
//! writer, the verifier, the caller, the one-second poll), [`Gateway::gate`] for each MCP
//! session, and [`Gateway::shutdown`] (stop the poll, drain the log). It decides through
//! the same [`DecisionService`] as `arbiter serve`, so a call is decided, logged, masked
//! and revoked exactly as a request to `POST /v1/decide` would be.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arbiter_core::clock::{Clock, SystemClock};
use arbiter_core::diag::Problems;
use arbiter_core::{Engine, Pack, TimeSource};
use arbiter_identity::Verifier;
use arbiter_service::{DecisionService, Recording, StoreBaseline};
use arbiter_store::{Durability, LogWriter, Masker, PackVersion, Store};
use tokio::task::JoinHandle;

use crate::caller::{Caller, CallerError, Credentials, CredentialsError};
use crate::gate::Gate;
use crate::jsonrpc::DEFAULT_MAX_MESSAGE_BYTES;

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
    /// No one for the whole gateway: each call presents its own token (agentgateway's
    /// hook, [`crate::ext_mcp`]), and a call that presents none is refused.
    EachCall,
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
    /// A blocking task failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A running gateway: the decision service and what keeps it current.
#[derive(Debug)]
pub struct Gateway {
    options: Options,
    service: Arc<DecisionService>,
    /// `None` with [`Who::EachCall`].
    caller: Option<Caller>,
    verifier: Arc<Verifier>,
    poller: JoinHandle<()>,
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
            Who::Principal(principal) => {
                let caller = Caller::configured(principal)?;
                tracing::warn!(
                    principal = %caller.principal(),
                    "no token: the principal is taken on trust, and its decisions are logged as unverified"
                );
                Some(caller)
            }
            Who::EachCall => None,
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
            service,
            caller,
            verifier,
            poller,
        })
    }

    /// The decision service.
    pub fn service(&self) -> &Arc<DecisionService> {
        &self.service
    }

    /// The largest message read from either side.
    pub fn max_message_bytes(&self) -> usize {
        self.options.max_message_bytes
    }

    /// The caller given at start; `None` with [`Who::EachCall`].
    pub fn caller(&self) -> Option<&Caller> {
        self.caller.as_ref()
    }

    /// The verifier of the data directory's tokens, revocations applied.
    pub fn verifier(&self) -> Arc<Verifier> {
        Arc::clone(&self.verifier)
    }

    /// Where every time comes from.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.options.clock
    }

    /// A new MCP session's gate, in a new arbiter session (or the one the token binds);
    /// `None` with [`Who::EachCall`], where no caller is known before a call.
    pub fn gate(&self) -> Option<Gate> {
        let caller = self.caller.clone()?;
        let engine = self.service.engine();
        let session = format!("mcp-{}", engine.new_decision_id(self.options.clock.now()));
        Some(Gate::new(
            Arc::clone(&self.service),
            caller,
            session,
            self.options.upstream.clone(),
        ))
    }

    /// Stops the poll and drains the decision log: every decision made is written.
    pub async fn shutdown(self) {
        self.poller.abort();
        self.service.drain().await;
    }
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

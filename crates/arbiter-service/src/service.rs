//! [`DecisionService`]: a request body in, the engine's decision and its log record out.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arbiter_core::{Decision, DecisionRequest, Engine, RequestError};
use arbiter_store::{
    DecisionRecord, LogError, LogWriter, Masker, McpCall, Refusal, Revocation, Stamp, Store,
};
use arc_swap::ArcSwap;
use serde_json::{Value, json};

use crate::shadow::{Shadow, Shadowed};

/// What a caller counts about the decisions made (the server's metrics).
pub trait Observer: Send + Sync + fmt::Debug {
    /// A decision was made, in `latency`.
    fn decided(&self, decision: &Decision, latency: Duration);
    /// A request was refused before a decision, with this error code.
    fn refused(&self, code: &str);
    /// What became of a request sampled for a candidate in shadow.
    fn shadowed(&self, _event: Shadowed) {}
}

/// Counts nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Unobserved;

impl Observer for Unobserved {
    fn decided(&self, _: &Decision, _: Duration) {}
    fn refused(&self, _: &str) {}
}

/// Where decisions are recorded: the log writer, the key `[log] mask` hashes with, and the
/// store an enforced `revoke` is made durable in.
#[derive(Debug)]
pub struct Recording {
    /// The decision log.
    pub log: LogWriter,
    /// Hashes masked request values.
    pub masker: Masker,
    /// Revocations go here.
    pub store: Store,
}

/// Why a decision could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The decision log does not accept records: a decision that cannot be recorded is
    /// not made (DESIGN §3).
    #[error("the decision log cannot accept records: {0}")]
    LogUnavailable(#[from] LogError),
}

/// One request decided: the engine's answer (or why the request is not one), and the
/// record the decision log keeps of it.
#[derive(Debug)]
pub struct Decided {
    /// The decision, or the request's own error.
    pub answer: Result<Decision, RequestError>,
    /// The record: the request as logged (credential fingerprinted, `[log] mask` applied)
    /// and the decision, typed.
    pub record: DecisionRecord,
}

/// The one decision path (ARCHITECTURE.md): every caller that decides — the HTTP server,
/// replay, shadowing, the MCP gateway — goes through here, and nothing else interprets a
/// request body, builds a log record or makes a revocation durable.
///
/// The engine in force is swapped atomically on reload; callers that decide several
/// requests as one unit (a batch) take it once with [`DecisionService::engine`] and pass it
/// to each call.
pub struct DecisionService {
    engine: ArcSwap<Engine>,
    recording: Option<Recording>,
    observer: Arc<dyn Observer>,
    shadow: Option<Arc<Shadow>>,
}

impl fmt::Debug for DecisionService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecisionService")
            .field("policy_version", &self.engine.load().pack().version())
            .field("recording", &self.recording.is_some())
            .field("observer", &self.observer)
            .field("shadow", &self.shadow)
            .finish()
    }
}

impl DecisionService {
    /// A service deciding with `engine`, recording nothing and making no revocation
    /// durable: replay's, and the building block of the others.
    pub fn new(engine: Engine) -> DecisionService {
        DecisionService {
            engine: ArcSwap::from_pointee(engine),
            recording: None,
            observer: Arc::new(Unobserved),
            shadow: None,
        }
    }

    /// Records every decision and refusal, and makes revocations durable, in `recording`.
    #[must_use]
    pub fn recording(mut self, recording: Recording) -> DecisionService {
        self.recording = Some(recording);
        self
    }

    /// Reports decisions and refusals to `observer`.
    #[must_use]
    pub fn observed_by(mut self, observer: Arc<dyn Observer>) -> DecisionService {
        self.observer = observer;
        self
    }

    /// Hands a sample of the recorded decisions to a candidate deciding in `shadow`.
    #[must_use]
    pub fn shadowed_by(mut self, shadow: Arc<Shadow>) -> DecisionService {
        self.shadow = Some(shadow);
        self
    }

    /// The candidate deciding in shadow, if there is one.
    pub fn shadow(&self) -> Option<&Arc<Shadow>> {
        self.shadow.as_ref()
    }

    /// The engine in force.
    pub fn engine(&self) -> Arc<Engine> {
        self.engine.load_full()
    }

    /// Puts `engine` in force for every decision that starts from now on.
    pub fn swap(&self, engine: Arc<Engine>) {
        self.engine.store(engine);
    }

    /// The decision log, when decisions are recorded.
    pub fn log(&self) -> Option<&LogWriter> {
        self.recording.as_ref().map(|r| &r.log)
    }

    /// Whether a decision can be recorded now: always, when nothing is recorded.
    pub fn can_record(&self) -> bool {
        self.log().is_none_or(LogWriter::is_healthy)
    }

    /// Decides `body` with `engine`, recording nothing: replay's path.
    pub fn decide_unrecorded(
        &self,
        engine: &Engine,
        body: &Value,
    ) -> Result<Decision, RequestError> {
        let started = Instant::now();
        let answer = DecisionRequest::from_value(body).and_then(|r| engine.decide(&r));
        match &answer {
            Ok(decision) => self.observer.decided(decision, started.elapsed()),
            Err(error) => self.observer.refused(error.code()),
        }
        answer
    }

    /// Decides `body` with `engine` and builds its record; no I/O, so it runs anywhere.
    /// The engine's own side effects (sessions, throttles, an in-memory revocation) happen
    /// as in every decision.
    pub fn decide_recorded(&self, engine: &Engine, body: Value) -> Decided {
        self.decide_keeping(engine, body, None).0
    }

    /// [`DecisionService::decide_recorded`], keeping the request as it came (before
    /// `[log] mask`) when `shadow` samples it: a candidate decides on what the pack in
    /// force decided on. Only a sampled request is copied.
    fn decide_keeping(
        &self,
        engine: &Engine,
        body: Value,
        shadow: Option<&Shadow>,
    ) -> (Decided, Option<Value>) {
        let started = Instant::now();
        let parsed = DecisionRequest::from_value(&body);
        let answer = parsed
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|request| engine.decide(request));
        let latency = started.elapsed();
        match &answer {
            Ok(decision) => self.observer.decided(decision, latency),
            Err(error) => self.observer.refused(error.code()),
        }
        let mut kept = None;
        let record = match (&parsed, &answer) {
            (Ok(request), answer) => {
                if shadow.is_some_and(|s| s.samples(&request.principal.to_string())) {
                    kept = Some(body.clone());
                }
                let logged = self.logged_request(engine, body);
                match answer {
                    Ok(decision) => DecisionRecord::decided(decision, request, logged, latency),
                    Err(error) => DecisionRecord::refused(
                        stamp(engine),
                        Some(request),
                        Refusal::from(error),
                        logged,
                        latency,
                    ),
                }
            }
            // Not a request: masking and fingerprinting could not reach into it, so none
            // of it is kept but its size and why it was refused.
            (Err(error), _) => {
                let record = DecisionRecord::refused(
                    stamp(engine),
                    None,
                    Refusal::from(error),
                    unparsed(serde_json::to_vec(&body).map_or(0, |b| b.len())),
                    Duration::ZERO,
                );
                if shadow.is_some_and(|s| s.samples(&record.decision_id)) {
                    kept = Some(body);
                }
                record
            }
        };
        (Decided { answer, record }, kept)
    }

    /// Decides `body` with `engine`, the whole way: the decision, a revocation made
    /// durable (on the blocking pool, before the answer), the record appended to the log.
    /// The outer error is the service's (the log is down); the inner one the request's.
    pub async fn decide(
        &self,
        engine: &Engine,
        body: Value,
    ) -> Result<Result<Decision, RequestError>, ServiceError> {
        self.decide_for(engine, body, None).await
    }

    /// [`DecisionService::decide`] for the MCP gateway: the record also keeps the MCP
    /// call the decision was made for.
    pub async fn decide_mcp(
        &self,
        engine: &Engine,
        body: Value,
        call: McpCall,
    ) -> Result<Result<Decision, RequestError>, ServiceError> {
        self.decide_for(engine, body, Some(call)).await
    }

    async fn decide_for(
        &self,
        engine: &Engine,
        body: Value,
        call: Option<McpCall>,
    ) -> Result<Result<Decision, RequestError>, ServiceError> {
        let Some(recording) = &self.recording else {
            return Ok(self.decide_unrecorded(engine, &body));
        };
        let shadow = self.shadow.as_deref();
        let (Decided { answer, mut record }, kept) = self.decide_keeping(engine, body, shadow);
        record.mcp = call.map(|call| self.logged_call(engine, call));
        if let Ok(decision) = &answer
            && !decision.revoked.is_empty()
        {
            persist_revocations(&recording.store, decision).await;
        }
        match (shadow, kept) {
            // The candidate decides only what was recorded, as it was recorded.
            (Some(shadow), Some(request)) => {
                // The candidate decides `request`; the copy needs no logged request.
                let logged = std::mem::take(&mut record.request);
                let copy = record.clone();
                record.request = logged;
                recording.log.append(record).await?;
                shadow.offer(copy, request);
            }
            _ => recording.log.append(record).await?,
        }
        Ok(answer)
    }

    /// Records a body refused before it was read as a request (too large, not JSON, not
    /// declared JSON): its size and why, nothing of what it held.
    pub async fn refuse(&self, size: usize, refusal: Refusal) -> Result<(), ServiceError> {
        self.refuse_for(unparsed(size), refusal, None).await
    }

    /// Records an MCP call the gateway could not turn into a request (an argument its
    /// mapping needs is missing or not a string): the call and why, none of its arguments.
    pub async fn refuse_mcp(&self, refusal: Refusal, call: McpCall) -> Result<(), ServiceError> {
        self.refuse_for(json!({}), refusal, Some(call)).await
    }

    async fn refuse_for(
        &self,
        logged: Value,
        refusal: Refusal,
        call: Option<McpCall>,
    ) -> Result<(), ServiceError> {
        self.observer.refused(&refusal.code);
        let Some(recording) = &self.recording else {
            return Ok(());
        };
        let engine = self.engine.load();
        let mut record =
            DecisionRecord::refused(stamp(&engine), None, refusal, logged, Duration::ZERO);
        record.mcp = call.map(|call| self.logged_call(&engine, call));
        recording.log.append(record).await?;
        Ok(())
    }

    /// Drains the decision log: every record accepted so far is written.
    pub async fn drain(&self) {
        if let Some(recording) = &self.recording
            && let Err(e) = recording.log.shutdown().await
        {
            tracing::error!(error = %e, "draining the decision log");
        }
    }

    /// An MCP call as the log keeps it: its arguments masked (see
    /// [`McpCall::arguments`]). Only an argument the tool's `[mcp]` mapping copies whole
    /// into the context, at a path `[log] mask` leaves alone, stays in clear: nothing is
    /// in clear here that the logged request does not show.
    fn logged_call(&self, engine: &Engine, mut call: McpCall) -> McpCall {
        let Some(Value::Object(arguments)) = call.arguments.take() else {
            return call;
        };
        let Some(recording) = &self.recording else {
            return call;
        };
        let pack = engine.pack();
        let mask = &pack.config().log.mask;
        let mapping = call
            .tool
            .as_deref()
            .and_then(|tool| pack.config().mcp.as_ref()?.tool(tool));
        let in_clear = |arg: &str| {
            let Some(mapping) = mapping else {
                return false;
            };
            mapping.args.iter().any(|(from, to)| {
                let to = to.get_ref();
                from.get_ref() == arg
                    && !mask.iter().any(|m| {
                        let m = m.get_ref();
                        to == m
                            || to.starts_with(&format!("{m}."))
                            || m.starts_with(&format!("{to}."))
                    })
            })
        };
        let logged = arguments
            .into_iter()
            .map(|(arg, value)| {
                let value = if in_clear(&arg) {
                    value
                } else {
                    Value::String(recording.masker.masked(&value))
                };
                (arg, value)
            })
            .collect();
        call.arguments = Some(Value::Object(logged));
        call
    }

    /// The request as the log keeps it: a presented credential replaced by its
    /// fingerprint, `[log] mask` applied. The one path by which request values reach the
    /// log.
    fn logged_request(&self, engine: &Engine, mut request: Value) -> Value {
        // A presented token is a bearer secret: the log keeps its hash, never the token.
        if let Some(token) = request
            .as_object_mut()
            .and_then(|m| m.get_mut("credential"))
            .filter(|t| t.is_string())
        {
            *token = Value::String(token_fingerprint(token.as_str().unwrap_or_default()));
        }
        let mask = &engine.pack().config().log.mask;
        if let Some(recording) = &self.recording
            && !mask.is_empty()
        {
            recording
                .masker
                .mask(&mut request, mask.iter().map(|p| p.get_ref()));
        }
        request
    }
}

/// A fresh id, the time and the pack version, for a record with no decision.
fn stamp(engine: &Engine) -> Stamp {
    let time = engine.now();
    Stamp {
        decision_id: engine.new_decision_id(time),
        time,
        policy_version: engine.pack().version().to_owned(),
    }
}

/// What is kept of a body that was not a request.
fn unparsed(size: usize) -> Value {
    json!({ "unparsed_bytes": size })
}

/// Commits the revocations an enforced `revoke` made. They are in force in this process
/// already; a failure to commit is logged, and the decision (a deny) stands.
async fn persist_revocations(store: &Store, decision: &Decision) {
    let store = store.clone();
    let records: Vec<Revocation> = decision.revoked.iter().map(Revocation::of_effect).collect();
    let committed = tokio::task::spawn_blocking(move || {
        records.iter().try_for_each(|r| store.revoke(r).map(drop))
    })
    .await;
    let failure = match committed {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    tracing::error!(
        decision = %decision.decision_id,
        error = %failure,
        "a revocation could not be persisted; it applies in memory only"
    );
}

/// `sha256:` and the first 16 bytes of the token's hash, in hex: enough to tell tokens
/// apart in the log, useless to present.
pub fn token_fingerprint(token: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(token.as_bytes());
    format!(
        "sha256:{}",
        hex::encode(digest.get(..16).unwrap_or_default())
    )
}

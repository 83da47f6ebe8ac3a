//! Shadow decisions (issue 11, `arbiter serve --candidate`): beside the pack in force, a
//! candidate pack decides a sample of live requests, off the request path, and what it
//! would have changed is kept in the store.
//!
//! - The request path samples and hands over, nothing more: [`Shadow::offer`] never
//!   blocks, and when the queue is full the request is dropped and counted.
//! - One worker thread decides what it is handed, in arrival order, through replay's
//!   engine ([`Replay::shadow`]): the candidate's own clock, set to each decision's time,
//!   its own sessions and throttle buckets, credentials as the live decision verified
//!   them, revocations that go nowhere. It compares each answer with the live decision
//!   ([`compare`](crate::replay::compare)), groups the changes as replay does
//!   ([`Report`]), and adds them to the store about twice a second
//!   ([`CandidateWriter`]).
//! - Nothing here reaches the pack in force: not its sessions, throttles or revocations,
//!   not the decision log or its findings. A candidate that fails on a request is counted,
//!   and the next request is decided by a fresh engine.
//!
//! Sampling is by principal, not by decision id: a session rule
//! (`context.session.touched`) or a throttle decides right only when the candidate's
//! engine sees every request of that principal, so a principal's sessions and throttle
//! buckets are in the sample whole, or not at all. The hash is SHA-256, the same in every
//! process and every run, so a rerun samples the same principals. A body that is not a
//! request has no principal, and is sampled by its decision id.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arbiter_core::Pack;
use arbiter_store::{
    CandidateLoad, CandidateWriter, DecisionRecord, ShadowCounts, ShadowGroup, ShadowLimits,
    ShadowTally, Store, StoreError,
};
use arc_swap::ArcSwap;
use serde_json::Value;

use crate::replay::{Counts, Group, Replay, Report};
use crate::service::{Observer, token_fingerprint};

/// Bytes of requests the queue may hold at once (as [`weight`] counts them), whatever its
/// length: 1,024 bodies of the 1 MiB the server accepts would otherwise be a gigabyte
/// waiting for a worker that is falling behind. Past it, requests are dropped and counted.
pub const MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;

/// About how many bytes `value` holds in memory: its strings and keys, and a node's
/// overhead for every value.
fn weight(value: &Value) -> usize {
    const NODE: usize = 32;
    NODE + match value {
        Value::String(s) => s.len(),
        Value::Array(items) => items.iter().map(weight).sum(),
        Value::Object(map) => map.iter().map(|(k, v)| k.len() + weight(v)).sum(),
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
    }
}

/// How often the worker adds what it found to the store, at most.
const FLUSH_EVERY: Duration = Duration::from_millis(500);

/// How long the worker lets the queue fill once it has decided everything in it. Under
/// load this turns a wake-up of the worker per sampled request (paid on the request path,
/// by the sender) into one per batch; an idle worker still wakes for the next request at
/// once. The queue holds 1,024 by default, so the worker keeps up with far more than a
/// server answers.
const LINGER: Duration = Duration::from_millis(2);

/// The fraction of principals a candidate decides for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    fraction: f64,
    /// Keys whose hash is below this are in; `None`: every key.
    below: Option<u64>,
}

/// A sample that is not a fraction in (0, 1].
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("the sample must be a fraction above 0 and at most 1, not {0}")]
pub struct SampleError(f64);

impl Sample {
    /// Every principal.
    pub const ALL: Sample = Sample {
        fraction: 1.0,
        below: None,
    };

    /// `fraction` of the principals, above 0 and at most 1.
    pub fn new(fraction: f64) -> Result<Sample, SampleError> {
        if !(fraction > 0.0 && fraction <= 1.0) {
            return Err(SampleError(fraction));
        }
        if fraction >= 1.0 {
            return Ok(Sample::ALL);
        }
        // 2^64 × fraction, below 2^64 since fraction < 1.
        let below = (fraction * 18_446_744_073_709_551_616.0) as u64;
        Ok(Sample {
            fraction,
            below: Some(below),
        })
    }

    /// The fraction asked for.
    pub fn fraction(&self) -> f64 {
        self.fraction
    }

    /// Whether `key` (a principal's Cedar uid, or a decision id) is in the sample: the
    /// same answer in every process and every run.
    pub fn includes(&self, key: &str) -> bool {
        let Some(below) = self.below else {
            return true;
        };
        use sha2::Digest;
        let digest = sha2::Sha256::new()
            .chain_update(b"arbiter shadow sample\0")
            .chain_update(key.as_bytes())
            .finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(digest.get(..8).unwrap_or(&[0; 8]));
        u64::from_be_bytes(first) < below
    }
}

/// Why a shadow could not start.
#[derive(Debug, thiserror::Error)]
pub enum ShadowError {
    /// The store could not record the candidate, or open the worker's connection.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The worker's thread could not be started.
    #[error("cannot start the shadow worker: {0}")]
    Start(#[from] std::io::Error),
}

/// A candidate pack and where it was loaded from.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The pack, loaded (and checked) like the pack in force.
    pub pack: Arc<Pack>,
    /// Its directory, to say which candidate it is.
    pub dir: PathBuf,
}

impl Candidate {
    fn load_record(&self, sample: Sample, at: jiff::Timestamp) -> CandidateLoad {
        CandidateLoad {
            version: self.pack.version().to_owned(),
            dir: self.dir.display().to_string(),
            sample: sample.fraction(),
            at,
        }
    }
}

/// How a shadow runs.
#[derive(Debug, Clone, Copy)]
pub struct ShadowOptions {
    /// Which principals the candidate decides for.
    pub sample: Sample,
    /// Sampled requests waiting for the worker, at most; past it they are dropped.
    pub queue: usize,
    /// The bounds of the aggregate in the store.
    pub limits: ShadowLimits,
}

impl Default for ShadowOptions {
    fn default() -> Self {
        ShadowOptions {
            sample: Sample::ALL,
            queue: 1024,
            limits: ShadowLimits::default(),
        }
    }
}

/// What happened to a sampled request, for an [`Observer`] (the server's metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shadowed {
    /// The candidate decided it.
    Decided,
    /// The candidate decided it with an evaluation error, or failed to decide it.
    Errored,
    /// The queue was full: the candidate never saw it.
    Dropped,
}

/// A live decision handed to the worker.
struct Job {
    /// What the job weighs against [`MAX_QUEUED_BYTES`], given back once decided.
    weight: usize,
    /// The candidate in force when the live decision was made.
    candidate: Arc<Pack>,
    /// The live decision, as logged.
    record: DecisionRecord,
    /// The request as it came, but for its token.
    request: Value,
}

enum Message {
    Decide(Box<Job>),
    Stop,
}

/// A candidate deciding in shadow: the request path's side (sampling, the queue) and the
/// worker's handle.
pub struct Shadow {
    sample: Sample,
    candidate: Arc<ArcSwap<Pack>>,
    queue: SyncSender<Message>,
    /// Bytes of the requests queued (see [`MAX_QUEUED_BYTES`]).
    queued_bytes: Arc<AtomicUsize>,
    dropped: Arc<AtomicU64>,
    observer: Arc<dyn Observer>,
    store: Store,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Shadow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shadow")
            .field("sample", &self.sample)
            .field("candidate", &self.candidate.load().version())
            .finish_non_exhaustive()
    }
}

/// The worker, before it runs: [`Shadow::run`] starts it on a thread of its own.
pub struct ShadowWorker {
    queued_bytes: Arc<AtomicUsize>,
    queue: Receiver<Message>,
    candidate: Arc<ArcSwap<Pack>>,
    dropped: Arc<AtomicU64>,
    observer: Arc<dyn Observer>,
    writer: CandidateWriter,
    limits: ShadowLimits,
}

impl std::fmt::Debug for ShadowWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShadowWorker")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Shadow {
    /// A shadow of `candidate` whose worker runs at once. Records the candidate as loaded
    /// at `now`; blocks on the store.
    pub fn start(
        candidate: Candidate,
        store: &Store,
        options: ShadowOptions,
        observer: Arc<dyn Observer>,
        now: jiff::Timestamp,
    ) -> Result<Shadow, ShadowError> {
        let (shadow, worker) = Shadow::new(candidate, store, options, observer, now)?;
        shadow.run(worker)?;
        Ok(shadow)
    }

    /// A shadow of `candidate` and its worker, not running yet: requests offered queue up
    /// (and past the queue's size are dropped) until [`Shadow::run`]. Records the
    /// candidate as loaded at `now`; blocks on the store.
    pub fn new(
        candidate: Candidate,
        store: &Store,
        options: ShadowOptions,
        observer: Arc<dyn Observer>,
        now: jiff::Timestamp,
    ) -> Result<(Shadow, ShadowWorker), StoreError> {
        store.record_candidate(&candidate.load_record(options.sample, now))?;
        let writer = store.candidate_writer()?;
        let (send, receive) = std::sync::mpsc::sync_channel(options.queue);
        let current = Arc::new(ArcSwap::new(candidate.pack));
        let dropped = Arc::new(AtomicU64::new(0));
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let worker = ShadowWorker {
            queued_bytes: Arc::clone(&queued_bytes),
            queue: receive,
            candidate: Arc::clone(&current),
            dropped: Arc::clone(&dropped),
            observer: Arc::clone(&observer),
            writer,
            limits: options.limits,
        };
        let shadow = Shadow {
            sample: options.sample,
            candidate: current,
            queue: send,
            queued_bytes,
            dropped,
            observer,
            store: store.clone(),
            worker: Mutex::new(None),
        };
        Ok((shadow, worker))
    }

    /// Starts `worker` on a thread of its own.
    pub fn run(&self, worker: ShadowWorker) -> std::io::Result<()> {
        let handle = std::thread::Builder::new()
            .name("arbiter-shadow".to_owned())
            .spawn(move || worker.run())?;
        *self.worker.lock().unwrap_or_else(PoisonError::into_inner) = Some(handle);
        Ok(())
    }

    /// Which principals the candidate decides for.
    pub fn sample(&self) -> Sample {
        self.sample
    }

    /// The candidate in force.
    pub fn candidate(&self) -> Arc<Pack> {
        self.candidate.load_full()
    }

    /// Whether a request of `key` (its principal, or the decision id of a body with
    /// none) is in the sample.
    pub fn samples(&self, key: &str) -> bool {
        self.sample.includes(key)
    }

    /// Hands a live decision to the worker: `record` as logged (its `request` is not
    /// read and may be left out), `request` as it came. Never waits: when the queue is
    /// full the request is dropped, and counted.
    pub fn offer(&self, record: DecisionRecord, mut request: Value) {
        // The candidate never verifies a token (it sees the credential as the live
        // decision verified it), so the token stays on the request path: the copy
        // carries its fingerprint, as the log does.
        if let Some(token) = request
            .as_object_mut()
            .and_then(|m| m.get_mut("credential"))
            .filter(|t| t.is_string())
        {
            *token = Value::String(token_fingerprint(token.as_str().unwrap_or_default()));
        }
        let weight = weight(&request);
        let queued = self.queued_bytes.fetch_add(weight, Ordering::Relaxed);
        let job = Job {
            weight,
            candidate: self.candidate.load_full(),
            record,
            request,
        };
        let sent = queued.saturating_add(weight) <= MAX_QUEUED_BYTES
            && self.queue.try_send(Message::Decide(Box::new(job))).is_ok();
        if !sent {
            self.queued_bytes.fetch_sub(weight, Ordering::Relaxed);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.observer.shadowed(Shadowed::Dropped);
        }
    }

    /// Puts `candidate` in shadow for every live decision from now on, recorded as loaded
    /// at `now` (blocks on the store). Its differences are kept apart from the previous
    /// candidate's, and it starts with sessions and throttles of its own.
    pub fn swap(&self, candidate: Candidate, now: jiff::Timestamp) -> Result<(), StoreError> {
        self.store
            .record_candidate(&candidate.load_record(self.sample, now))?;
        self.candidate.store(candidate.pack);
        Ok(())
    }

    /// Lets the worker decide what is queued, add it to the store, and stop; blocks until
    /// it has. Requests offered afterwards are dropped.
    pub fn stop(&self) {
        let handle = self
            .worker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(handle) = handle else { return };
        // Waits for room in the queue; a worker that is gone cannot receive, and the
        // send fails at once.
        let _ = self.queue.send(Message::Stop);
        if handle.join().is_err() {
            tracing::error!("the shadow worker stopped unexpectedly");
        }
    }
}

/// The candidate the worker decides with, and what it found since its last flush.
struct Deciding {
    replay: Replay,
    report: Report,
    errored: u64,
    first: Option<jiff::Timestamp>,
    last: Option<jiff::Timestamp>,
}

impl Deciding {
    fn new(candidate: Arc<Pack>, examples: usize) -> Deciding {
        Deciding {
            replay: Replay::new(candidate),
            report: Report::new(examples),
            errored: 0,
            first: None,
            last: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.report.replayed == 0 && self.errored == 0
    }
}

impl ShadowWorker {
    fn run(mut self) {
        let mut deciding: Option<Deciding> = None;
        let mut flushed = Instant::now();
        loop {
            let waiting = deciding.as_ref().is_some_and(|d| !d.is_empty())
                || self.dropped.load(Ordering::Relaxed) > 0;
            let mut next = if waiting {
                match self
                    .queue
                    .recv_timeout(FLUSH_EVERY.saturating_sub(flushed.elapsed()))
                {
                    Ok(message) => Some(message),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => Some(Message::Stop),
                }
            } else {
                Some(self.queue.recv().unwrap_or(Message::Stop))
            };
            let mut decided = false;
            // Everything queued, then a pause: see LINGER.
            while let Some(message) = next.take() {
                match message {
                    Message::Decide(job) => {
                        self.decide_job(&mut deciding, &mut flushed, &job);
                        self.queued_bytes.fetch_sub(job.weight, Ordering::Relaxed);
                        decided = true;
                    }
                    Message::Stop => {
                        self.flush(deciding.as_mut());
                        return;
                    }
                }
                if flushed.elapsed() >= FLUSH_EVERY {
                    self.flush(deciding.as_mut());
                    flushed = Instant::now();
                }
                next = match self.queue.try_recv() {
                    Ok(message) => Some(message),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => Some(Message::Stop),
                };
            }
            if flushed.elapsed() >= FLUSH_EVERY {
                self.flush(deciding.as_mut());
                flushed = Instant::now();
            }
            if decided {
                std::thread::sleep(LINGER);
            }
        }
    }

    /// Decides `job` with the candidate it names, switching to it (and flushing what the
    /// previous one found) when it is another.
    fn decide_job(&mut self, deciding: &mut Option<Deciding>, flushed: &mut Instant, job: &Job) {
        let switch = deciding
            .as_ref()
            .is_none_or(|d| !Arc::ptr_eq(d.replay.pack(), &job.candidate));
        if switch {
            self.flush(deciding.as_mut());
            *flushed = Instant::now();
            *deciding = Some(Deciding::new(
                Arc::clone(&job.candidate),
                self.limits.examples,
            ));
        }
        if let Some(d) = deciding.as_mut() {
            self.decide(d, job);
        }
    }

    /// Decides one live decision with the candidate and counts it.
    fn decide(&self, deciding: &mut Deciding, job: &Job) {
        let record = &job.record;
        let shadowed = std::panic::catch_unwind(AssertUnwindSafe(|| {
            deciding.replay.shadow(record, &job.request)
        }));
        let replayed = match shadowed {
            Ok(replayed) => replayed,
            Err(_) => {
                // Whatever state the engine was left in is not trusted: the next request
                // starts a fresh one.
                tracing::error!(decision = %record.decision_id,
                    "the candidate failed to decide; counted as errored");
                deciding.replay = Replay::new(Arc::clone(&job.candidate));
                deciding.errored += 1;
                self.observer.shadowed(Shadowed::Errored);
                return;
            }
        };
        let errored = replayed
            .answer
            .as_ref()
            .is_ok_and(|decision| !decision.errors.is_empty());
        deciding.report.add(record, &replayed);
        deciding.first = Some(deciding.first.map_or(record.time, |t| t.min(record.time)));
        deciding.last = Some(deciding.last.map_or(record.time, |t| t.max(record.time)));
        self.observer.shadowed(Shadowed::Decided);
        if errored {
            deciding.errored += 1;
            self.observer.shadowed(Shadowed::Errored);
        }
    }

    /// Adds what was found since the last flush to the store, and starts counting again.
    /// A tally that cannot be written is logged and lost: a shadow never holds up the
    /// server, nor grows without bound.
    fn flush(&mut self, deciding: Option<&mut Deciding>) {
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        let mut tally = ShadowTally {
            version: self.candidate.load().version().to_owned(),
            dropped,
            ..ShadowTally::default()
        };
        if let Some(d) = deciding {
            let report = std::mem::replace(&mut d.report, Report::new(self.limits.examples));
            tally.version = d.replay.pack().version().to_owned();
            tally.changes = counts(&report.changes);
            tally.errored = std::mem::take(&mut d.errored);
            tally.first = d.first.take();
            tally.last = d.last.take();
            tally.by_rule = groups(report.by_rule);
            tally.by_principal = groups(report.by_principal);
        }
        if tally.is_empty() {
            return;
        }
        if let Err(e) = self.writer.add(&tally, self.limits) {
            tracing::error!(error = %e, candidate = %tally.version,
                "adding the shadow's differences to the store; this tally is lost");
        }
    }
}

fn counts(c: &Counts) -> ShadowCounts {
    ShadowCounts {
        same: c.same,
        breaks: c.breaks,
        loosens: c.loosens,
        shifts: c.shifts,
        now_valid: c.now_valid,
        now_invalid: c.now_invalid,
    }
}

fn groups(groups: Vec<Group>) -> Vec<ShadowGroup> {
    groups
        .into_iter()
        .map(|g| ShadowGroup {
            changes: counts(&g.changes),
            key: g.key,
            examples: g.examples,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_a_fraction_above_zero_and_at_most_one() {
        for bad in [0.0, -0.1, 1.5, f64::NAN, f64::INFINITY] {
            assert!(Sample::new(bad).is_err(), "{bad}");
        }
        assert_eq!(Sample::new(1.0), Ok(Sample::ALL));
        assert_eq!(
            Sample::new(0.0).unwrap_err().to_string(),
            "the sample must be a fraction above 0 and at most 1, not 0"
        );
    }

    #[test]
    fn a_sample_takes_about_its_fraction_and_the_same_keys_every_time() {
        let tenth = Sample::new(0.1).unwrap();
        let keys: Vec<String> = (0..10_000).map(|i| format!("Agent::\"a{i}\"")).collect();
        let taken: Vec<&String> = keys.iter().filter(|k| tenth.includes(k)).collect();
        assert!((800..1200).contains(&taken.len()), "{}", taken.len());
        let again: Vec<&String> = keys.iter().filter(|k| tenth.includes(k)).collect();
        assert_eq!(taken, again);
        // A larger sample takes every key a smaller one takes.
        let half = Sample::new(0.5).unwrap();
        assert!(taken.iter().all(|k| half.includes(k)));
        assert!(keys.iter().all(|k| Sample::ALL.includes(k)));
    }
}

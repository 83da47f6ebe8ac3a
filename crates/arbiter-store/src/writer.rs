//! The batching decision-log writer (DESIGN §6).
//!
//! Decisions are answered on the async runtime; SQLite is written on one dedicated
//! thread. Between them is a bounded queue: when it is full, `append` waits (back-pressure)
//! rather than dropping a record. The thread takes whatever is queued, up to
//! [`MAX_BATCH`] records, and commits them in one transaction.
//!
//! Nothing accepted is dropped: a batch whose transaction fails is kept and retried with
//! backoff, and while it fails the writer is unhealthy and refuses new records, so the
//! caller can refuse to answer rather than answer unlogged. Shutdown stops intake, writes
//! what is queued and joins the thread.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use crate::decisions::{DecisionRecord, Row};
use crate::error::StoreError;
use crate::store::{Store, Synchronous};
use crate::{findings, outcomes, rule_days};

/// The most records one transaction commits. Pages many records touch (a principal's
/// index leaf, a finding) are written once per batch, so on a large log a bigger batch
/// writes far less: 4,096 wrote 1,000,000 decisions at 46k a second where 512 managed
/// 28k (docs/benchmarks.md).
pub const MAX_BATCH: usize = 4096;

/// How long a batched writer lets the queue fill after a commit.
const LINGER: std::time::Duration = std::time::Duration::from_millis(2);

/// The first wait before retrying a failed batch; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// How long shutdown keeps retrying a failing batch before it gives up on it.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// When `append` returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Once the record is queued. A crash can lose what is queued, not what is committed.
    Batched,
    /// Once the record's batch is committed and on disk (group commit).
    Sync,
}

/// The decision log cannot take a record; the caller should not answer as if it had.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Closed, or its last write failed and it has not recovered yet.
    #[error("the decision log cannot accept records: {0}")]
    Unavailable(String),
}

/// The batching log writer: a dedicated thread owns a connection, takes records from a
/// bounded queue and commits them one transaction per batch. Clone is cheap.
#[derive(Clone, Debug)]
pub struct LogWriter {
    queue: mpsc::Sender<Message>,
    shared: Arc<Shared>,
    thread: Arc<Mutex<Option<Running>>>,
}

/// What the writer thread receives.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "a record is moved through the queue once; boxing it would cost an allocation per decision to shrink a message sent once per shutdown"
)]
enum Message {
    Record(Pending),
    /// Take nothing more; write what is queued, then stop.
    Shutdown,
}

/// A record on its way to the database.
#[derive(Debug)]
struct Pending {
    row: Row,
    /// In [`Durability::Sync`], told once the record is committed.
    committed: Option<oneshot::Sender<()>>,
}

/// The state both sides of the queue see.
#[derive(Debug)]
struct Shared {
    db_path: PathBuf,
    durability: Durability,
    closed: AtomicBool,
    healthy: AtomicBool,
    write_errors: AtomicU64,
    /// Records handed to `append` and not yet committed.
    pending: AtomicUsize,
    last_error: Mutex<String>,
}

/// The thread, and how it reports its end.
#[derive(Debug)]
struct Running {
    handle: JoinHandle<()>,
    finished: oneshot::Receiver<Result<(), StoreError>>,
}

impl LogWriter {
    /// Starts the writer thread on a connection of its own to `store`'s database.
    ///
    /// `capacity` bounds the queue (at least 1). In [`Durability::Sync`] every commit is
    /// flushed to disk (`synchronous = FULL`).
    pub fn start(
        store: &Store,
        durability: Durability,
        capacity: usize,
    ) -> Result<LogWriter, StoreError> {
        let synchronous = match durability {
            Durability::Batched => Synchronous::Normal,
            Durability::Sync => Synchronous::Full,
        };
        let conn = store.connect_writer(synchronous)?;
        let shared = Arc::new(Shared {
            db_path: store.db_path().to_path_buf(),
            durability,
            closed: AtomicBool::new(false),
            healthy: AtomicBool::new(true),
            write_errors: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            last_error: Mutex::new(String::new()),
        });
        let (queue, rx) = mpsc::channel(capacity.max(1));
        let (report, finished) = oneshot::channel();
        let thread_shared = Arc::clone(&shared);
        let handle = thread::Builder::new()
            .name("arbiter-log-writer".to_owned())
            .spawn(move || {
                let result = run(conn, rx, &thread_shared);
                // Nobody may be waiting: every handle can be dropped without a shutdown.
                let _ = report.send(result);
            })
            .map_err(|cause| StoreError::WriterStart {
                path: store.db_path().to_path_buf(),
                cause,
            })?;
        Ok(LogWriter {
            queue,
            shared,
            thread: Arc::new(Mutex::new(Some(Running { handle, finished }))),
        })
    }

    /// Hands a record to the log.
    ///
    /// [`Durability::Batched`]: returns once the record is queued, waiting for room when
    /// the queue is full. [`Durability::Sync`]: returns once its batch is committed, which
    /// can take as long as the database keeps failing.
    ///
    /// Fails at once, without queuing, when the writer is shut down or unhealthy.
    pub async fn append(&self, record: DecisionRecord) -> Result<(), LogError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(LogError::Unavailable("it is shut down".to_owned()));
        }
        if !self.shared.healthy.load(Ordering::Acquire) {
            let last = self
                .shared
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            return Err(LogError::Unavailable(format!(
                "its last write failed ({last}); retrying"
            )));
        }
        let row = Row::new(record)
            .map_err(|e| LogError::Unavailable(format!("the record cannot be serialized: {e}")))?;
        let (committed, acknowledged) = match self.shared.durability {
            Durability::Batched => (None, None),
            Durability::Sync => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
        };
        let waiting = Waiting::count(&self.shared.pending);
        let sent = self
            .queue
            .send(Message::Record(Pending { row, committed }))
            .await;
        if sent.is_err() {
            return Err(LogError::Unavailable("it is shut down".to_owned()));
        }
        // The writer thread uncounts it once committed.
        waiting.hand_over();
        match acknowledged {
            None => Ok(()),
            Some(rx) => rx.await.map_err(|_| {
                LogError::Unavailable("it stopped before the record was committed".to_owned())
            }),
        }
    }

    /// Records handed to [`append`](Self::append) and not yet committed: waiting for room,
    /// queued, or in the batch being written.
    pub fn queue_depth(&self) -> usize {
        self.shared.pending.load(Ordering::Acquire)
    }

    /// How many batch transactions have failed since the start (each retry counts).
    pub fn write_errors(&self) -> u64 {
        self.shared.write_errors.load(Ordering::Acquire)
    }

    /// False after a failed write, until a later write succeeds.
    pub fn is_healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Acquire)
    }

    /// Stops accepting records, writes everything queued, and joins the thread.
    ///
    /// If the database keeps failing, shutdown retries for a few seconds and then returns
    /// [`StoreError::Unwritten`]; `Sync` appenders still waiting get `Unavailable`. Only the
    /// first call waits for the drain; later calls return at once.
    pub async fn shutdown(&self) -> Result<(), StoreError> {
        self.shared.closed.store(true, Ordering::Release);
        let running = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        // Behind any records already queued; fails only if the thread has already ended.
        let _ = self.queue.send(Message::Shutdown).await;
        let Some(running) = running else {
            return Ok(());
        };
        let result = running.finished.await;
        // The thread has reported, so it is returning: this join does not wait long.
        let joined = running.handle.join();
        match (result, joined) {
            (Ok(result), Ok(())) => result,
            _ => Err(StoreError::WriterPanicked {
                path: self.shared.db_path.clone(),
            }),
        }
    }
}

/// One record counted in [`LogWriter::queue_depth`] while its `append` waits for room in
/// the queue; uncounted again if the append fails or is cancelled (its future dropped).
struct Waiting<'a> {
    pending: &'a AtomicUsize,
    handed_over: bool,
}

impl<'a> Waiting<'a> {
    fn count(pending: &'a AtomicUsize) -> Self {
        pending.fetch_add(1, Ordering::AcqRel);
        Waiting {
            pending,
            handed_over: false,
        }
    }

    fn hand_over(mut self) {
        self.handed_over = true;
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.handed_over {
            self.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The writer thread: batches until the queue is closed and empty.
fn run(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Message>,
    shared: &Shared,
) -> Result<(), StoreError> {
    let mut messages = Vec::with_capacity(MAX_BATCH);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.blocking_recv_many(&mut messages, MAX_BATCH) > 0 {
        for message in messages.drain(..) {
            match message {
                Message::Record(pending) => batch.push(pending),
                // Senders now fail; what is already queued is still received.
                Message::Shutdown => rx.close(),
            }
        }
        if batch.is_empty() {
            continue;
        }
        let full = batch.len() == MAX_BATCH;
        if let Err(e) = commit_until_written(&mut conn, &mut batch, shared) {
            rx.close();
            let mut unwritten = batch.len();
            while let Ok(message) = rx.try_recv() {
                unwritten += usize::from(matches!(message, Message::Record(_)));
            }
            return Err(StoreError::Unwritten {
                path: shared.db_path.clone(),
                unwritten,
                last_error: e.to_string(),
            });
        }
        // Batched: nobody waits for a commit, so after one let the queue fill for a
        // moment (bounded by its capacity). Under load this turns a wake-up and a
        // transaction per record into one per batch; when idle, the next record is
        // still written at once. A full batch says the queue is filling faster than it
        // is written: the next one is taken at once.
        if shared.durability == Durability::Batched && !full && !rx.is_closed() {
            thread::sleep(LINGER);
        }
    }
    Ok(())
}

/// Commits `batch`, retrying with backoff until it succeeds, or, once shutdown has begun,
/// until [`SHUTDOWN_GRACE`] has passed. On success the batch is emptied and its `Sync`
/// appenders are told.
fn commit_until_written(
    conn: &mut Connection,
    batch: &mut Vec<Pending>,
    shared: &Shared,
) -> Result<(), rusqlite::Error> {
    let mut backoff = FIRST_BACKOFF;
    let mut give_up_at = None;
    let mut report = FailureReport::default();
    loop {
        match write_batch(conn, batch) {
            Ok(()) => {
                report.recovered();
                shared.pending.fetch_sub(batch.len(), Ordering::AcqRel);
                shared.healthy.store(true, Ordering::Release);
                for pending in batch.drain(..) {
                    if let Some(committed) = pending.committed {
                        // The appender may have gone away (its request was cancelled).
                        let _ = committed.send(());
                    }
                }
                return Ok(());
            }
            Err(e) => {
                report.failed(&e);
                shared.write_errors.fetch_add(1, Ordering::AcqRel);
                *shared
                    .last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = e.to_string();
                shared.healthy.store(false, Ordering::Release);
                if shared.closed.load(Ordering::Acquire) {
                    let deadline =
                        *give_up_at.get_or_insert_with(|| Instant::now() + SHUTDOWN_GRACE);
                    if Instant::now() >= deadline {
                        return Err(e);
                    }
                }
                thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// How often a failing log is reported while it keeps failing.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Failed writes, reported to the operator's log (stderr): the first at once, then at most
/// one line per [`REPORT_EVERY`] with how many failed since, and the recovery. Metrics
/// and `/readyz` show the state; this says why, where an operator looks first.
#[derive(Debug, Default)]
struct FailureReport {
    since_last: u64,
    total: u64,
    last: Option<Instant>,
}

impl FailureReport {
    fn failed(&mut self, e: &rusqlite::Error) {
        self.total += 1;
        self.since_last += 1;
        if self.last.is_none_or(|at| at.elapsed() >= REPORT_EVERY) {
            tracing::error!(
                error = %e,
                failed_writes = self.since_last,
                "the decision log cannot write; decisions are refused (503) until it can, \
                 and the batch is retried"
            );
            self.since_last = 0;
            self.last = Some(Instant::now());
        }
    }

    fn recovered(&mut self) {
        if self.total > 0 {
            tracing::warn!(failed_writes = self.total, "the decision log writes again");
        }
    }
}

/// One transaction for the whole batch: its decisions, and what they add to findings and
/// `rule_days`, so that a decision and its evidence are committed together or not at all.
fn write_batch(conn: &mut Connection, batch: &[Pending]) -> rusqlite::Result<()> {
    // A failed commit can leave the transaction open; start clean.
    if !conn.is_autocommit() {
        conn.execute_batch("ROLLBACK")?;
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut inserted = Vec::with_capacity(batch.len());
    for pending in batch {
        // A decision already stored has been counted already.
        if pending.row.insert(&tx)? {
            inserted.push(&pending.row);
        }
    }
    findings::tally(&tx, &inserted)?;
    rule_days::tally(&tx, &inserted)?;
    outcomes::tally(&tx, &inserted)?;
    tx.commit()
}

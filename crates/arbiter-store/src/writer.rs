//! The batching decision-log writer (DESIGN §6).
//!
//! Decisions are answered on the async runtime; SQLite is written on one dedicated
//! thread. Between them is a bounded queue: when it is full, `append` waits (back-pressure)
//! rather than dropping a record; so does a record that would take the records waiting
//! past [`QUEUE_BYTES`]. The thread takes whatever is queued into one transaction, and
//! keeps taking what arrives while it writes, up to [`MAX_BATCH`] records or 64 MiB
//! (group commit), then commits. A thread of its own checkpoints the write-ahead log.
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

use rusqlite::{Connection, Transaction, TransactionBehavior};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::decisions::{DecisionRecord, Row};
use crate::error::StoreError;
use crate::store::{Store, Synchronous};
use crate::{findings, outcomes, rule_days, segment, summaries};

/// The most records one transaction commits. Pages many records touch (a finding, a
/// principal's day counts, the newest leaves) are written once per transaction, so under
/// load a bigger one writes far less: on the synthetic log, 4,096 a transaction wrote
/// 47k records a second, 32,768 wrote 83k (docs/benchmarks.md).
pub const MAX_BATCH: usize = 32_768;

/// The most bytes of records (their JSON and heads) one transaction holds: a batch is
/// kept in memory until it is committed, so that a failed one can be retried, and a few
/// large requests must not make that unbounded.
const MAX_BATCH_BYTES: usize = 64 << 20;

/// The most bytes of records (JSON and heads, counted in KiB) that may wait in the queue
/// or in the batch being written, whatever their number: the queue's capacity counts
/// records, and 8,192 requests near the body limit would otherwise hold 8 GiB while the
/// log is slow. Past it, `append` waits, as it does for a full queue.
pub const QUEUE_BYTES: usize = 256 << 20;

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
    /// The record's share of [`QUEUE_BYTES`], given back when it is dropped (committed).
    _bytes: OwnedSemaphorePermit,
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
    /// KiB of records that may still be queued: see [`QUEUE_BYTES`].
    bytes: Arc<Semaphore>,
    /// All of `bytes`: what one record takes at most.
    budget_kib: u32,
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
        LogWriter::start_bounded(store, durability, capacity, QUEUE_BYTES)
    }

    /// [`LogWriter::start`], with at most `max_bytes` of records (rounded up to KiB, at
    /// least 1 KiB) waiting in the queue or the batch being written instead of
    /// [`QUEUE_BYTES`]. A record larger than that still goes, alone.
    pub fn start_bounded(
        store: &Store,
        durability: Durability,
        capacity: usize,
        max_bytes: usize,
    ) -> Result<LogWriter, StoreError> {
        let budget_kib = u32::try_from(max_bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, u32::try_from(Semaphore::MAX_PERMITS).unwrap_or(u32::MAX));
        let synchronous = match durability {
            Durability::Batched => Synchronous::Normal,
            Durability::Sync => Synchronous::Full,
        };
        let conn = store.connect_writer(synchronous)?;
        // The write-ahead log is copied into the database by a thread of its own, so
        // the writer does not stop for it; the writer's own automatic checkpoint stays,
        // at a larger size, as a backstop should that thread fall behind or be gone.
        let checkpoints = store.connect_checkpointer()?;
        if let Err(e) = conn.pragma_update(None, "wal_autocheckpoint", BACKSTOP_PAGES) {
            tracing::debug!(error = %e, "the log writer keeps SQLite's automatic checkpoint");
        }
        let shared = Arc::new(Shared {
            db_path: store.db_path().to_path_buf(),
            durability,
            closed: AtomicBool::new(false),
            healthy: AtomicBool::new(true),
            write_errors: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            bytes: Arc::new(Semaphore::new(budget_kib as usize)),
            budget_kib,
            last_error: Mutex::new(String::new()),
        });
        let (queue, rx) = mpsc::channel(capacity.max(1));
        let (report, finished) = oneshot::channel();
        let thread_shared = Arc::clone(&shared);
        let handle = thread::Builder::new()
            .name("arbiter-log-writer".to_owned())
            .spawn(move || {
                let checkpointer = Checkpointer::start(checkpoints);
                let result = run(conn, rx, &thread_shared, &checkpointer);
                checkpointer.stop();
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
        let kib = u32::try_from(row.bytes().div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.shared.budget_kib);
        let Ok(bytes) = Arc::clone(&self.shared.bytes).acquire_many_owned(kib).await else {
            return Err(LogError::Unavailable("it is shut down".to_owned()));
        };
        let sent = self
            .queue
            .send(Message::Record(Pending {
                row,
                committed,
                _bytes: bytes,
            }))
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
    checkpointer: &Checkpointer,
) -> Result<(), StoreError> {
    let mut messages = Vec::new();
    let mut batch = Vec::new();
    while rx.blocking_recv_many(&mut messages, MAX_BATCH) > 0 {
        take(&mut messages, &mut batch, &mut rx);
        if batch.is_empty() {
            continue;
        }
        // Whatever arrives while the batch is written joins its transaction, up to the
        // batch's bounds (group commit); a failed transaction is retried whole.
        let outcome = match write_growing(&mut conn, &mut batch, &mut messages, &mut rx) {
            Ok(outcome) => {
                committed(&mut batch, shared);
                Ok(outcome)
            }
            Err(e) => {
                shared.write_errors.fetch_add(1, Ordering::AcqRel);
                shared.healthy.store(false, Ordering::Release);
                *shared
                    .last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = e.to_string();
                commit_until_written(&mut conn, &mut batch, shared).map(|()| Grown::Bounded)
            }
        };
        if outcome.is_ok() {
            checkpointer.wake();
        }
        if let Err(e) = outcome {
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
        // Batched: nobody waits for a commit, so after one that emptied the queue let it
        // fill for a moment (bounded by its capacity). Under load this turns a wake-up
        // and a transaction per record into one per batch; when idle, the next record is
        // still written at once. A batch that reached its bounds says the queue is
        // filling faster than it is written: the next one is taken at once.
        if shared.durability == Durability::Batched
            && outcome.is_ok_and(|grown| grown == Grown::Drained)
            && !rx.is_closed()
        {
            thread::sleep(LINGER);
        }
    }
    Ok(())
}

/// The write-ahead log's size, in pages, past which the writer checkpoints it itself:
/// only when the checkpoint thread has fallen far behind, or could not start. A count of
/// pages: 128 MiB on a database made with 8 KiB pages (the store's page size for a new
/// one), 64 MiB on an older one's 4 KiB; the writer's rate was measured with this count.
const BACKSTOP_PAGES: i64 = 16_384;

/// Below this many pages in the write-ahead log, the checkpoint thread waits
/// [`QUIET_CHECKPOINT`] before the next checkpoint: under light load a checkpoint (two
/// `fsync`s) a second at most, under heavy load one after every commit.
const SMALL_WAL_PAGES: i64 = 1_000;

/// How long the checkpoint thread waits after a checkpoint of a small log.
const QUIET_CHECKPOINT: Duration = Duration::from_secs(1);

/// Copies the write-ahead log into the database on a thread of its own, woken after each
/// commit: 9% of the writer thread's time was its own automatic checkpoint. A passive
/// checkpoint never blocks the writer, nor readers.
#[derive(Debug)]
struct Checkpointer {
    wake: Option<std::sync::mpsc::SyncSender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread on `conn`. Should the thread not start, the writer's backstop
    /// checkpoint does the work.
    fn start(conn: Connection) -> Checkpointer {
        let (wake, woken) = std::sync::mpsc::sync_channel(1);
        let thread = thread::Builder::new()
            .name("arbiter-log-checkpoint".to_owned())
            .spawn(move || checkpoint_when_woken(&conn, &woken));
        match thread {
            Ok(thread) => Checkpointer {
                wake: Some(wake),
                thread: Some(thread),
            },
            Err(e) => {
                tracing::warn!(error = %e, "no checkpoint thread; the log writer checkpoints itself");
                Checkpointer {
                    wake: None,
                    thread: None,
                }
            }
        }
    }

    /// Asks for a checkpoint; one already asked for and not begun covers this one.
    fn wake(&self) {
        if let Some(wake) = &self.wake {
            let _ = wake.try_send(());
        }
    }

    /// Stops the thread once its checkpoint under way is done.
    fn stop(mut self) {
        drop(self.wake.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The checkpoint thread: a passive checkpoint each time it is woken, and after one of
/// a small log, a quiet while (wake-ups meanwhile make one checkpoint at its end). Ends
/// when the writer is gone.
fn checkpoint_when_woken(conn: &Connection, woken: &std::sync::mpsc::Receiver<()>) {
    let mut asked = false;
    loop {
        if !asked && woken.recv().is_err() {
            return;
        }
        asked = false;
        let pages = match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            row.get::<_, i64>(1)
        }) {
            Ok(pages) => pages,
            Err(e) => {
                tracing::debug!(error = %e, "a checkpoint of the decision log failed");
                0
            }
        };
        if pages >= SMALL_WAL_PAGES {
            continue;
        }
        let quiet_until = Instant::now() + QUIET_CHECKPOINT;
        loop {
            let left = quiet_until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match woken.recv_timeout(left) {
                Ok(()) => asked = true,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
    }
}

/// Moves received messages into the batch; a shutdown closes the queue (senders now
/// fail; what is already queued is still received).
fn take(messages: &mut Vec<Message>, batch: &mut Vec<Pending>, rx: &mut mpsc::Receiver<Message>) {
    for message in messages.drain(..) {
        match message {
            Message::Record(pending) => batch.push(pending),
            Message::Shutdown => rx.close(),
        }
    }
}

/// Why a transaction stopped taking records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Grown {
    /// The queue was empty.
    Drained,
    /// The batch reached [`MAX_BATCH`] records or [`MAX_BATCH_BYTES`].
    Bounded,
}

/// Writes `batch` in one transaction, and with it whatever the queue holds once it is
/// written, again and again while the batch is under its bounds; then counts the
/// evidence of all of it and commits. The records stay in `batch` until the caller has
/// told their appenders.
fn write_growing(
    conn: &mut Connection,
    batch: &mut Vec<Pending>,
    messages: &mut Vec<Message>,
    rx: &mut mpsc::Receiver<Message>,
) -> rusqlite::Result<Grown> {
    if !conn.is_autocommit() {
        conn.execute_batch("ROLLBACK")?;
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut stored = Vec::with_capacity(batch.len());
    let mut written = 0;
    let mut bytes = 0;
    let grown = loop {
        let rows: Vec<&Row> = batch.iter().skip(written).map(|p| &p.row).collect();
        bytes += rows.iter().map(|row| row.bytes()).sum::<usize>();
        stored.extend(
            segment::append(&tx, &rows)?
                .into_iter()
                .map(|i| i + written),
        );
        written = batch.len();
        if batch.len() >= MAX_BATCH || bytes >= MAX_BATCH_BYTES {
            break Grown::Bounded;
        }
        while messages.len() < MAX_BATCH - batch.len() {
            match rx.try_recv() {
                Ok(message) => messages.push(message),
                Err(_) => break,
            }
        }
        if messages.is_empty() {
            break Grown::Drained;
        }
        take(messages, batch, rx);
    };
    let rows: Vec<&Row> = stored
        .into_iter()
        .filter_map(|i| batch.get(i).map(|p| &p.row))
        .collect();
    count_evidence(&tx, &rows)?;
    tx.commit()?;
    Ok(grown)
}

/// Tells a committed batch's `Sync` appenders, and empties it.
fn committed(batch: &mut Vec<Pending>, shared: &Shared) {
    shared.pending.fetch_sub(batch.len(), Ordering::AcqRel);
    shared.healthy.store(true, Ordering::Release);
    for pending in batch.drain(..) {
        if let Some(committed) = pending.committed {
            // The appender may have gone away (its request was cancelled).
            let _ = committed.send(());
        }
    }
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
                committed(batch, shared);
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
    let rows: Vec<&Row> = batch.iter().map(|pending| &pending.row).collect();
    // A decision already stored has been counted already.
    let stored: Vec<&Row> = segment::append(&tx, &rows)?
        .into_iter()
        .filter_map(|i| rows.get(i).copied())
        .collect();
    count_evidence(&tx, &stored)?;
    tx.commit()
}

/// What the decisions just stored in `tx` add to findings, `rule_days` and the hours.
fn count_evidence(tx: &Transaction<'_>, rows: &[&Row]) -> rusqlite::Result<()> {
    findings::tally(tx, rows)?;
    rule_days::tally(tx, rows)?;
    outcomes::tally(tx, rows)?;
    let newest: i64 = tx.query_row(
        "SELECT coalesce(max(seg), 0) FROM log_segments",
        [],
        |row| row.get(0),
    )?;
    summaries::tally(tx, newest, rows.iter().map(|row| summaries::Facts::of(row)))
}

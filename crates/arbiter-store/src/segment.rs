//! The decision log's layout: decisions stored a batch at a time, compressed together.
//!
//! One row per decision, with an index per filter, cost the log writer most of its time:
//! every decision touched five B-trees (and three more per fired rule), and its ~600
//! bytes of JSON were written twice (the write-ahead log, then the checkpoint). Here a
//! batch becomes one **segment**:
//!
//! - `log_blobs`: the segment's decisions, in one part per batch that wrote to it (a
//!   segment's decisions are its parts' one after the other). A part holds its
//!   decisions' **heads** (a JSON array each of what the filters read: id, time,
//!   principal, action, resource, outcome, fired rules), a line each, in one zstd frame,
//!   and their records' JSON as logged, a line each, [`FRAME`] records to a zstd frame.
//!   Records that differ in a few fields compress about eightfold this way.
//! - `log_segments`: what the readers choose segments by without opening them: the
//!   smallest and largest decision id, the time range, how many records.
//! - `log_keys`: for each principal, action, outcome, fired rule, fired rule by outcome
//!   and mode a batch holds, one row (kind, key, segment): a filter reads the segments
//!   its key is in, and a batch adds a row per distinct key, not per decision.
//! - `log_ids`: decision id → segment, for reading one decision, and so that writing a
//!   batch twice stores each decision once.
//! - `log_principals`: every principal with its first and latest decision time and count.
//!
//! Compact JSON holds no raw newline, so lines split exactly. A filter decompresses and
//! reads heads, and decompresses only the frames that hold a record it keeps: a page of
//! the log, or one decision, reads a few frames of 128 records, not whole segments of
//! thousands. (Versions 7 and 8 wrote a part's heads and records in turn in one frame;
//! the migration to version 9 splits them.)
//!
//! A segment is never smaller than it must be: under light load batches hold a record or
//! two, so a batch joins the newest segment while that holds fewer than [`GROW_BELOW`]
//! decisions, as a part of its own: nothing written is read, recompressed or rewritten.
//! (Rewriting the segment whole made the writer decompress and recompress up to 256
//! records for every small batch: under HTTP load, 25 µs of the writer per decision.)

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use arbiter_core::rule::Mode;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Transaction, params, params_from_iter};
use serde::Deserialize;

use crate::decisions::{Logged, Row};

/// How many records a zstd frame of a part's records holds: a reader of a few decisions
/// decompresses their frames, not the part. (Compressed 128 to a frame, records take
/// about 15% more room than a batch compressed whole; 32 to a frame, 50%.)
const FRAME: usize = 128;

/// A segment is closed once it holds this many decisions.
const MAX_RECORDS: usize = 8192;

/// A segment is closed once its uncompressed text is this long (a few large requests
/// must not make one segment that every read of it decompresses whole).
const MAX_BYTES: usize = 16 << 20;

/// A batch joins the newest segment while that holds fewer decisions than this.
const GROW_BELOW: i64 = 256;

/// The largest uncompressed segment a reader accepts: [`MAX_BYTES`] plus one record
/// (a record is bounded by the request body limit), with room to spare. A larger length
/// in `log_segments` is corruption, not something to allocate.
const MAX_RAW: i64 = 1 << 30;

/// The zstd level: the fastest. Level 3 compresses a little better at twice the CPU, and
/// the writer's CPU is what bounds the log.
const LEVEL: i32 = 1;

/// What kind of value a `log_keys` row posts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Kind {
    Principal,
    Action,
    Decision,
    Rule,
    Mode,
    /// A rule that fired in a decision of this outcome: the dashboard's "denies by this
    /// rule" is rare in most segments that hold both a deny and the rule.
    RuleIn(Logged),
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Principal => "principal",
            Kind::Action => "action",
            Kind::Decision => "decision",
            Kind::Rule => "rule",
            Kind::Mode => "mode",
            Kind::RuleIn(Logged::Allow) => "rule/allow",
            Kind::RuleIn(Logged::Deny) => "rule/deny",
            Kind::RuleIn(Logged::Invalid) => "rule/invalid",
        }
    }
}

/// Adds the `rule/<outcome>` keys of a segment written before they were kept (schema
/// version 9 added them), from its heads.
pub(crate) fn add_rule_outcome_keys(
    tx: &Transaction<'_>,
    seg: i64,
    decoded: &Decoded,
) -> rusqlite::Result<()> {
    let mut keys: HashSet<(Kind, &str)> = HashSet::new();
    for (head, _) in decoded.entries() {
        for (rule, _) in &head.rules {
            keys.insert((Kind::RuleIn(head.decision), rule));
        }
    }
    let mut insert =
        tx.prepare_cached("INSERT OR IGNORE INTO log_keys (kind, key, seg) VALUES (?1, ?2, ?3)")?;
    for (kind, key) in keys {
        insert.execute(params![kind.as_str(), key, seg])?;
    }
    Ok(())
}

/// What a filter reads of a decision, without its record.
#[derive(Debug, Deserialize)]
pub(crate) struct Head {
    pub(crate) id: String,
    pub(crate) time_us: i64,
    pub(crate) principal: Option<String>,
    pub(crate) action: Option<String>,
    pub(crate) resource: Option<String>,
    pub(crate) decision: Logged,
    pub(crate) rules: Vec<(String, Mode)>,
}

impl Head {
    /// The head line of a decision, as a segment stores it.
    pub(crate) fn line(
        id: &str,
        time_us: i64,
        principal: Option<&str>,
        action: Option<&str>,
        resource: Option<&str>,
        decision: Logged,
        rules: &[(String, Mode)],
    ) -> Result<String, serde_json::Error> {
        serde_json::to_string(&(id, time_us, principal, action, resource, decision, rules))
    }
}

/// Some default-deny scope fired in audit or warn among `rules` (a decision's fired rules).
pub(crate) fn default_denied(rules: &[(String, Mode)]) -> bool {
    rules.iter().any(|(rule, mode)| {
        matches!(mode, Mode::Audit | Mode::Warn) && rule.starts_with("default-deny:")
    })
}

/// Some rule fired enforced among `rules`.
pub(crate) fn enforced(rules: &[(String, Mode)]) -> bool {
    rules.iter().any(|(_, mode)| *mode == Mode::Enforce)
}

/// A segment's row in `log_segments`.
#[derive(Clone, Debug)]
pub(crate) struct Meta {
    pub(crate) seg: i64,
    pub(crate) first_id: String,
    pub(crate) last_id: String,
    pub(crate) min_time_us: i64,
    pub(crate) max_time_us: i64,
    pub(crate) n: i64,
    raw_len: i64,
}

/// The columns of `log_segments`, in [`Meta::read`]'s order.
pub(crate) const META_COLUMNS: &str =
    "s.seg, s.first_id, s.last_id, s.min_time_us, s.max_time_us, s.n, s.raw_len";

impl Meta {
    /// From a row selecting [`META_COLUMNS`] first.
    pub(crate) fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<Meta> {
        Ok(Meta {
            seg: row.get(0)?,
            first_id: row.get(1)?,
            last_id: row.get(2)?,
            min_time_us: row.get(3)?,
            max_time_us: row.get(4)?,
            n: row.get(5)?,
            raw_len: row.get(6)?,
        })
    }
}

/// Why a segment could not be read: SQLite failed, or what it holds is not a segment.
#[derive(Debug)]
pub(crate) enum ReadError {
    Sqlite(rusqlite::Error),
    Corrupt(String),
}

impl From<rusqlite::Error> for ReadError {
    fn from(e: rusqlite::Error) -> ReadError {
        ReadError::Sqlite(e)
    }
}

/// A segment, read: the heads a reader kept, each with where its record is in `text`
/// (an empty range when the reader did not ask for records).
#[derive(Debug)]
pub(crate) struct Decoded {
    text: String,
    entries: Vec<(Head, Range<usize>)>,
}

impl Decoded {
    /// The decisions kept, in the order they were logged.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&Head, &str)> {
        self.entries
            .iter()
            .map(|(head, range)| (head, self.text.get(range.clone()).unwrap_or("")))
    }
}

/// Reads segment `meta` whole: every head and every record.
pub(crate) fn read(conn: &Connection, meta: &Meta) -> Result<Decoded, ReadError> {
    read_with(conn, meta, None, &|_| true, true)
}

/// Reads segment `meta`, keeping the decisions whose head holds `needle` (a filter's
/// value as JSON, see [`Filter::needle`]; a head without it cannot match, and is not
/// parsed) and that `keep` accepts. With `records`, their records too: only the frames
/// that hold one are decompressed.
pub(crate) fn read_with(
    conn: &Connection,
    meta: &Meta,
    needle: Option<&str>,
    keep: &dyn Fn(&Head) -> bool,
    records: bool,
) -> Result<Decoded, ReadError> {
    let corrupt = |what: String| ReadError::Corrupt(format!("log segment {}: {what}", meta.seg));
    if !(0..=MAX_RAW).contains(&meta.raw_len) {
        return Err(corrupt(format!("a length of {} bytes", meta.raw_len)));
    }
    // What the parts decompress to is bounded by the row's length, which is itself
    // bounded: a corrupt row cannot make a reader allocate more.
    let mut budget = usize::try_from(meta.raw_len).unwrap_or(0);
    let mut decoded = Decoded {
        text: String::new(),
        entries: Vec::new(),
    };
    let mut seen = 0_i64;
    let mut stmt =
        conn.prepare_cached("SELECT heads, records FROM log_blobs WHERE seg = ?1 ORDER BY part")?;
    let mut parts = stmt.query([meta.seg])?;
    while let Some(part) = parts.next()? {
        let Some(heads) = part
            .get_ref(0)?
            .as_blob_or_null()
            .map_err(rusqlite::Error::from)?
        else {
            return Err(corrupt(
                "a part without heads (a layout before version 9)".into(),
            ));
        };
        let heads = decompress(heads, &mut budget).map_err(corrupt)?;
        let mut kept: Vec<(usize, Head)> = Vec::new();
        for (i, line) in lines(&heads).map_err(corrupt)?.into_iter().enumerate() {
            seen += 1;
            if needle.is_some_and(|needle| !line.contains(needle)) {
                continue;
            }
            let head: Head = serde_json::from_str(line)
                .map_err(|e| corrupt(format!("head {i} of a part: {e}")))?;
            if keep(&head) {
                kept.push((i, head));
            }
        }
        if kept.is_empty() {
            continue;
        }
        if !records {
            decoded
                .entries
                .extend(kept.into_iter().map(|(_, head)| (head, 0..0)));
            continue;
        }
        let frames = part.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?;
        let mut frames = Frames::new(frames);
        for (i, head) in kept {
            let record = frames
                .record(i, &mut budget)
                .map_err(|e| corrupt(format!("record {i} of a part: {e}")))?;
            let at = decoded.text.len();
            decoded.text.push_str(record);
            decoded.entries.push((head, at..decoded.text.len()));
        }
    }
    if seen != meta.n {
        return Err(corrupt(format!(
            "{seen} decisions where its row says {}",
            meta.n
        )));
    }
    // Read whole (every frame holds a record), the segment is its row's length exactly.
    if records && decoded.entries.len() as i64 == seen && budget != 0 {
        return Err(corrupt(format!(
            "{} bytes where its row says {}",
            meta.raw_len - i64::try_from(budget).unwrap_or(0),
            meta.raw_len
        )));
    }
    Ok(decoded)
}

/// One zstd frame, decompressed, its size taken from `budget` (what is left of the
/// segment's length).
fn decompress(frame: &[u8], budget: &mut usize) -> Result<String, String> {
    // The frame says how long it is (every frame is written whole, with its size): room
    // for that, not for the whole budget. Asking for the budget (up to the segment's
    // megabytes) made each frame of 128 records a fresh allocation of all of it.
    let size = match zstd::zstd_safe::get_frame_content_size(frame) {
        Ok(Some(size)) => usize::try_from(size).unwrap_or(usize::MAX),
        Ok(None) => *budget,
        Err(_) => return Err("not a zstd frame".to_owned()),
    };
    if size > *budget {
        return Err(format!(
            "a frame of {size} bytes where {} are left of the segment",
            *budget
        ));
    }
    let mut raw = Vec::with_capacity(size);
    DECOMPRESSOR
        .with_borrow_mut(|kept| {
            let decompressor = match kept {
                Some(decompressor) => decompressor,
                None => kept.insert(zstd::bulk::Decompressor::new()?),
            };
            decompressor.decompress_to_buffer(frame, &mut raw)
        })
        .map_err(|e| format!("cannot decompress: {e}"))?;
    *budget -= raw.len().min(*budget);
    String::from_utf8(raw).map_err(|e| format!("not UTF-8: {e}"))
}

thread_local! {
    /// The thread's decompression context, kept between frames: a reader of a page of
    /// decisions or of the whole log decompresses frame after frame.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// The lines of a text in which every line ends in a newline.
fn lines(text: &str) -> Result<Vec<&str>, String> {
    let Some(body) = text.strip_suffix('\n') else {
        return if text.is_empty() {
            Ok(Vec::new())
        } else {
            Err("a text that does not end in a newline".to_owned())
        };
    };
    Ok(body.split('\n').collect())
}

/// A part's records: [`FRAME`] records to a zstd frame, the frames one after the other.
/// Frames are decompressed when a record in them is asked for, the latest kept.
struct Frames<'b> {
    blob: &'b [u8],
    /// Where the next frame not yet passed starts, and its number.
    next_at: usize,
    next: usize,
    /// The latest frame decompressed: its number and its lines' ranges.
    current: Option<(usize, String, Vec<Range<usize>>)>,
}

impl<'b> Frames<'b> {
    fn new(blob: &'b [u8]) -> Frames<'b> {
        Frames {
            blob,
            next_at: 0,
            next: 0,
            current: None,
        }
    }

    /// Record `i` of the part; records are asked for in increasing order.
    fn record(&mut self, i: usize, budget: &mut usize) -> Result<&str, String> {
        let frame = i / FRAME;
        if self.current.as_ref().is_none_or(|(n, _, _)| *n != frame) {
            if frame < self.next {
                return Err("records asked for out of order".to_owned());
            }
            loop {
                let rest = self.blob.get(self.next_at..).unwrap_or(&[]);
                if rest.is_empty() {
                    return Err(format!("no frame {frame}"));
                }
                let size = zstd::zstd_safe::find_frame_compressed_size(rest)
                    .map_err(|code| format!("frame {}: zstd error {code}", self.next))?;
                let bytes = rest
                    .get(..size)
                    .ok_or_else(|| format!("frame {} is cut", self.next))?;
                self.next_at += size;
                self.next += 1;
                if self.next - 1 == frame {
                    let text = decompress(bytes, budget)?;
                    let mut ranges = Vec::with_capacity(FRAME);
                    let mut at = 0;
                    for line in lines(&text)? {
                        ranges.push(at..at + line.len());
                        at += line.len() + 1;
                    }
                    self.current = Some((frame, text, ranges));
                    break;
                }
            }
        }
        let (_, text, ranges) = self.current.as_ref().ok_or_else(|| "no frame".to_owned())?;
        ranges
            .get(i % FRAME)
            .and_then(|r| text.get(r.clone()))
            .ok_or_else(|| format!("frame {frame} holds fewer records"))
    }
}

/// A part as versions 7 and 8 wrote it, one zstd frame of head and record lines in turn:
/// its heads and its records, each line ending in a newline.
fn interleaved(blob: &[u8], budget: &mut usize) -> Result<(String, String), String> {
    let text = decompress(blob, budget)?;
    let mut heads = String::new();
    let mut records = String::new();
    for (i, line) in lines(&text)?.into_iter().enumerate() {
        let to = if i % 2 == 0 { &mut heads } else { &mut records };
        to.push_str(line);
        to.push('\n');
    }
    if heads.matches('\n').count() != records.matches('\n').count() {
        return Err("a head without its record".to_owned());
    }
    Ok((heads, records))
}

/// Rewrites every part written before version 9 (heads and records in turn in one
/// frame) as version 9 writes them: heads in a frame of their own, records [`FRAME`] to
/// a frame. Every line is kept byte for byte; the segment's length does not change.
pub(crate) fn split_parts(tx: &Transaction<'_>) -> Result<(), String> {
    let sqlite = |e: rusqlite::Error| e.to_string();
    let mut after = 0_i64;
    loop {
        let next: Option<(i64, Vec<u8>, i64)> = tx
            .prepare_cached(
                "SELECT b.part, b.records, s.raw_len FROM log_blobs b
                 JOIN log_segments s ON s.seg = b.seg
                 WHERE b.heads IS NULL AND b.part > ?1 ORDER BY b.part LIMIT 1",
            )
            .and_then(|mut stmt| {
                stmt.query_row([after], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
                    .optional()
            })
            .map_err(sqlite)?;
        let Some((part, blob, raw_len)) = next else {
            return Ok(());
        };
        after = part;
        let mut budget = usize::try_from(raw_len.clamp(0, MAX_RAW)).unwrap_or(0);
        let (heads, records) =
            interleaved(&blob, &mut budget).map_err(|e| format!("log part {part}: {e}"))?;
        tx.prepare_cached("UPDATE log_blobs SET heads = ?2, records = ?3 WHERE part = ?1")
            .and_then(|mut stmt| stmt.execute(params![part, compress(&heads)?, frames(&records)?]))
            .map_err(sqlite)?;
    }
}

/// A part's records (lines each ending in a newline), [`FRAME`] to a zstd frame.
pub(crate) fn frames(records: &str) -> rusqlite::Result<Vec<u8>> {
    let mut blob = Vec::with_capacity(records.len() / 8);
    let mut start = 0;
    let mut n = 0;
    for (at, _) in records.match_indices('\n') {
        n += 1;
        if n == FRAME {
            compress_onto(records.get(start..=at).unwrap_or(""), &mut blob)?;
            start = at + 1;
            n = 0;
        }
    }
    if start < records.len() {
        compress_onto(records.get(start..).unwrap_or(""), &mut blob)?;
    }
    Ok(blob)
}

/// `text` as one zstd frame.
fn compress(text: &str) -> rusqlite::Result<Vec<u8>> {
    let mut frame = Vec::new();
    compress_onto(text, &mut frame)?;
    Ok(frame)
}

thread_local! {
    /// The thread's compression context, kept between frames. A context made for each
    /// frame (`zstd::bulk::compress`) set up and freed its working memory every time:
    /// under HTTP load, where a transaction holds a few dozen records, that was 5% of
    /// the server's CPU, half of all the writer's compression.
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Appends `text`, compressed as one zstd frame, to `out`.
fn compress_onto(text: &str, out: &mut Vec<u8>) -> rusqlite::Result<()> {
    let failed = |e: std::io::Error| rusqlite::Error::ToSqlConversionFailure(Box::new(e));
    COMPRESSOR.with_borrow_mut(|kept| {
        let compressor = match kept {
            Some(compressor) => compressor,
            None => kept.insert(zstd::bulk::Compressor::new(LEVEL).map_err(failed)?),
        };
        let at = out.len();
        out.reserve(zstd::zstd_safe::compress_bound(text.len()));
        let mut end = std::io::Cursor::new(&mut *out);
        end.set_position(u64::try_from(at).unwrap_or(u64::MAX));
        compressor
            .compress_to_buffer(text.as_bytes(), &mut end)
            .map_err(failed)?;
        Ok(())
    })
}

/// The distinct keys of a segment being written: values a client chose, hashed by a
/// per-process seed.
type Keys<'r> = HashSet<(Kind, &'r str), foldhash::fast::RandomState>;

/// A segment being written: a new one, or the newest one, grown.
struct Open<'r> {
    meta: Meta,
    layout: Layout,
    /// The heads of the decisions added, a line each.
    heads: String,
    /// Their records, a line each.
    records: String,
    keys: Keys<'r>,
    /// Whether `log_segments` has a row for it already.
    stored: bool,
}

impl<'r> Open<'r> {
    fn new(seg: i64, layout: Layout) -> Open<'r> {
        Open {
            layout,
            heads: String::new(),
            records: String::new(),
            meta: Meta {
                seg,
                first_id: String::new(),
                last_id: String::new(),
                min_time_us: i64::MAX,
                max_time_us: i64::MIN,
                n: 0,
                raw_len: 0,
            },
            keys: Keys::default(),
            stored: false,
        }
    }

    /// Room for a batch's heads and records (bytes), up to a segment's.
    fn reserve(&mut self, heads: usize, records: usize) {
        self.heads.reserve(heads.min(MAX_BYTES));
        self.records.reserve(records.min(MAX_BYTES));
    }

    fn full(&self) -> bool {
        usize::try_from(self.meta.n).unwrap_or(usize::MAX) >= MAX_RECORDS
            || self.heads.len() + self.records.len() >= MAX_BYTES
    }

    fn push(&mut self, row: &'r Row) {
        let m = &mut self.meta;
        if m.n == 0 || row.decision_id < m.first_id {
            m.first_id.clone_from(&row.decision_id);
        }
        if m.n == 0 || row.decision_id > m.last_id {
            m.last_id.clone_from(&row.decision_id);
        }
        m.min_time_us = m.min_time_us.min(row.time_us);
        m.max_time_us = m.max_time_us.max(row.time_us);
        m.n += 1;
        self.heads.push_str(&row.head);
        self.heads.push('\n');
        self.records.push_str(&row.json);
        self.records.push('\n');
        let mut key = |kind: Kind, value: &'r str| {
            self.keys.insert((kind, value));
        };
        if let Some(p) = &row.principal {
            key(Kind::Principal, p);
        }
        if let Some(a) = &row.action {
            key(Kind::Action, a);
        }
        key(Kind::Decision, row.decision.as_str());
        for (rule, mode) in &row.rules {
            key(Kind::Rule, rule);
            key(Kind::RuleIn(row.decision), rule);
            key(Kind::Mode, mode.as_str());
        }
    }

    /// Writes the segment: its records, its row, its new keys.
    fn write(mut self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        if self.meta.n == 0 || self.heads.is_empty() {
            return Ok(());
        }
        match self.layout {
            Layout::Split => {
                let heads = compress(&self.heads)?;
                let records = frames(&self.records)?;
                tx.prepare_cached(
                    "INSERT INTO log_blobs (seg, heads, records) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![self.meta.seg, heads, records])?;
            }
            Layout::Interleaved => {
                let mut text = String::with_capacity(self.heads.len() + self.records.len());
                for (head, record) in self.heads.lines().zip(self.records.lines()) {
                    text.push_str(head);
                    text.push('\n');
                    text.push_str(record);
                    text.push('\n');
                }
                tx.prepare_cached("INSERT INTO log_blobs (seg, records) VALUES (?1, ?2)")?
                    .execute(params![self.meta.seg, compress(&text)?])?;
            }
        }
        self.meta.raw_len = self.meta.raw_len.saturating_add(
            i64::try_from(self.heads.len() + self.records.len()).unwrap_or(i64::MAX),
        );
        let m = &self.meta;
        let sql = if self.stored {
            "UPDATE log_segments SET first_id = ?2, last_id = ?3, min_time_us = ?4,
                 max_time_us = ?5, n = ?6, raw_len = ?7 WHERE seg = ?1"
        } else {
            "INSERT INTO log_segments
                 (seg, first_id, last_id, min_time_us, max_time_us, n, raw_len)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
        };
        tx.prepare_cached(sql)?.execute(params![
            m.seg,
            m.first_id,
            m.last_id,
            m.min_time_us,
            m.max_time_us,
            m.n,
            m.raw_len
        ])?;
        // In key order: neighbouring keys share pages.
        let mut keys: Vec<(Kind, &str)> = self.keys.into_iter().collect();
        keys.sort_unstable();
        let mut post = tx.prepare_cached(
            "INSERT OR IGNORE INTO log_keys (kind, key, seg) VALUES (?1, ?2, ?3)",
        )?;
        for (kind, key) in keys {
            post.execute(params![kind.as_str(), key, m.seg])?;
        }
        Ok(())
    }
}

/// The first and latest time of a principal in a batch, and how many decisions.
struct Seen {
    first_us: i64,
    last_us: i64,
    count: i64,
}

/// Appends `rows` to the log in `tx` and returns the positions of those it stored: a
/// decision id already in the log is left out (writing a batch twice changes nothing).
pub(crate) fn append(tx: &Transaction<'_>, rows: &[&Row]) -> rusqlite::Result<Vec<usize>> {
    append_as(tx, rows, Layout::Split)
}

/// How a part is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Heads in a zstd frame of their own, records [`FRAME`] to a frame (version 9 on).
    Split,
    /// Heads and records in turn, in one zstd frame (versions 7 and 8): what the
    /// migration to version 7 writes, for the migration to version 9 to split.
    Interleaved,
}

/// [`append`], writing its parts in `layout`.
pub(crate) fn append_as(
    tx: &Transaction<'_>,
    rows: &[&Row],
    layout: Layout,
) -> rusqlite::Result<Vec<usize>> {
    let mut inserted = Vec::with_capacity(rows.len());
    if rows.is_empty() {
        return Ok(inserted);
    }
    let newest = tx
        .prepare_cached(&format!(
            "SELECT {META_COLUMNS} FROM log_segments s ORDER BY s.seg DESC LIMIT 1"
        ))?
        .query_row([], Meta::read)
        .optional()?;
    let mut open = match newest {
        Some(meta) if meta.n < GROW_BELOW => grow(meta, layout),
        Some(meta) => Open::new(meta.seg + 1, layout),
        None => Open::new(1, layout),
    };
    // Room for the batch's text up front: growing it by doubling copied it again and
    // again (4% of the writer's time).
    let heads: usize = rows.iter().map(|row| row.head.len() + 1).sum();
    let records: usize = rows.iter().map(|row| row.json.len() + 1).sum();
    open.reserve(heads, records);
    let mut principals: HashMap<&str, Seen, foldhash::fast::RandomState> = HashMap::default();
    {
        let mut insert_id =
            tx.prepare_cached("INSERT OR IGNORE INTO log_ids (decision_id, seg) VALUES (?1, ?2)")?;
        for (i, &row) in rows.iter().enumerate() {
            if open.full() {
                let next = open.meta.seg + 1;
                std::mem::replace(&mut open, Open::new(next, layout)).write(tx)?;
                open.reserve(heads, records);
            }
            if insert_id.execute(params![row.decision_id, open.meta.seg])? == 0 {
                continue;
            }
            open.push(row);
            if let Some(p) = row.principal.as_deref() {
                let seen = principals.entry(p).or_insert(Seen {
                    first_us: row.time_us,
                    last_us: row.time_us,
                    count: 0,
                });
                seen.first_us = seen.first_us.min(row.time_us);
                seen.last_us = seen.last_us.max(row.time_us);
                seen.count += 1;
            }
            inserted.push(i);
        }
    }
    open.write(tx)?;
    let mut upsert = tx.prepare_cached(
        "INSERT INTO log_principals (principal, first_us, last_us, decisions)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (principal) DO UPDATE SET
             first_us = min(first_us, excluded.first_us),
             last_us = max(last_us, excluded.last_us),
             decisions = decisions + excluded.decisions",
    )?;
    for (principal, seen) in principals {
        upsert.execute(params![principal, seen.first_us, seen.last_us, seen.count])?;
    }
    Ok(inserted)
}

/// The newest segment, opened to take more decisions.
fn grow<'r>(meta: Meta, layout: Layout) -> Open<'r> {
    Open {
        meta,
        layout,
        heads: String::new(),
        records: String::new(),
        keys: Keys::default(),
        stored: true,
    }
}

/// What a reader selects decisions by. Every filter that is set must match.
#[derive(Clone, Debug, Default)]
pub(crate) struct Filter<'a> {
    /// At or after, in unix microseconds.
    pub(crate) since_us: Option<i64>,
    /// Before, in unix microseconds.
    pub(crate) until_us: Option<i64>,
    pub(crate) principal: Option<&'a str>,
    pub(crate) action: Option<&'a str>,
    pub(crate) decision: Option<Logged>,
    pub(crate) rule: Option<&'a str>,
    pub(crate) mode: Option<Mode>,
    /// Decision ids below this one only (a page's cursor).
    pub(crate) before_id: Option<&'a str>,
}

/// The order [`Filter::segments`] lists segments in.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Order {
    /// Write order: the order the log took the decisions.
    Written,
    /// Largest decision id first.
    NewestFirst,
}

impl Filter<'_> {
    /// Whether a decision matches.
    pub(crate) fn matches(&self, head: &Head) -> bool {
        let text = |want: Option<&str>, have: &Option<String>| {
            want.is_none_or(|want| have.as_deref() == Some(want))
        };
        self.since_us.is_none_or(|t| head.time_us >= t)
            && self.until_us.is_none_or(|t| head.time_us < t)
            && text(self.principal, &head.principal)
            && text(self.action, &head.action)
            && self.decision.is_none_or(|d| head.decision == d)
            && self.before_id.is_none_or(|id| head.id.as_str() < id)
            && match (self.rule, self.mode) {
                (None, None) => true,
                (rule, mode) => head.rules.iter().any(|(r, m)| {
                    rule.is_none_or(|rule| r == rule) && mode.is_none_or(|mode| *m == mode)
                }),
            }
    }

    /// A text every matching head holds: the principal's, else the action's, else the
    /// rule's value as JSON (as the head writes it).
    pub(crate) fn needle(&self) -> Option<String> {
        let value = self.principal.or(self.action).or(self.rule)?;
        serde_json::to_string(value).ok()
    }

    /// Whether every decision of a segment is inside the time range, so that only the
    /// other filters need its heads.
    pub(crate) fn covers_time(&self, meta: &Meta) -> bool {
        self.since_us.is_none_or(|t| meta.min_time_us >= t)
            && self.until_us.is_none_or(|t| meta.max_time_us < t)
    }

    /// Whether the filter needs nothing but the time range.
    pub(crate) fn time_only(&self) -> bool {
        self.principal.is_none()
            && self.action.is_none()
            && self.decision.is_none()
            && self.rule.is_none()
            && self.mode.is_none()
            && self.before_id.is_none()
    }

    /// The segments that may hold a matching decision, in `order`: the SQL selecting
    /// [`META_COLUMNS`], and its arguments.
    pub(crate) fn segments(&self, order: Order) -> (String, Vec<SqlValue>) {
        let mut sql = format!("SELECT {META_COLUMNS} FROM log_segments s WHERE 1 = 1");
        let mut args = Vec::new();
        if let Some(t) = self.since_us {
            sql.push_str(" AND s.max_time_us >= ?");
            args.push(SqlValue::Integer(t));
        }
        if let Some(t) = self.until_us {
            sql.push_str(" AND s.min_time_us < ?");
            args.push(SqlValue::Integer(t));
        }
        if let Some(id) = self.before_id {
            sql.push_str(" AND s.first_id < ?");
            args.push(SqlValue::Text(id.to_owned()));
        }
        let keys = [
            (Kind::Principal, self.principal.map(str::to_owned)),
            (Kind::Action, self.action.map(str::to_owned)),
            (Kind::Decision, self.decision.map(|d| d.as_str().to_owned())),
            (Kind::Rule, self.rule.map(str::to_owned)),
            (Kind::Mode, self.mode.map(|m| m.as_str().to_owned())),
            (
                Kind::RuleIn(self.decision.unwrap_or(Logged::Allow)),
                self.rule
                    .filter(|_| self.decision.is_some())
                    .map(str::to_owned),
            ),
        ];
        for (kind, key) in keys {
            if let Some(key) = key {
                sql.push_str(" AND s.seg IN (SELECT seg FROM log_keys WHERE kind = ? AND key = ?)");
                args.push(SqlValue::Text(kind.as_str().to_owned()));
                args.push(SqlValue::Text(key));
            }
        }
        sql.push_str(match order {
            Order::Written => " ORDER BY s.seg",
            Order::NewestFirst => " ORDER BY s.last_id DESC, s.seg DESC",
        });
        (sql, args)
    }
}

/// Every segment that may hold a match for `filter`, in `order`.
pub(crate) fn candidates(
    conn: &Connection,
    filter: &Filter<'_>,
    order: Order,
) -> rusqlite::Result<Vec<Meta>> {
    let (sql, args) = filter.segments(order);
    let mut stmt = conn.prepare_cached(&sql)?;
    let metas = stmt
        .query_map(params_from_iter(args), Meta::read)?
        .collect::<rusqlite::Result<Vec<Meta>>>()?;
    Ok(metas)
}

/// The segment that holds decision `id`, if the log holds it.
pub(crate) fn holding(conn: &Connection, id: &str) -> rusqlite::Result<Option<Meta>> {
    conn.prepare_cached(&format!(
        "SELECT {META_COLUMNS} FROM log_ids i JOIN log_segments s ON s.seg = i.seg
         WHERE i.decision_id = ?1"
    ))?
    .query_row([id], Meta::read)
    .optional()
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use serde_json::json;
    use ulid::Ulid;

    use super::{Frames, MAX_RECORDS, append, compress, decompress, frames, interleaved, lines};
    use crate::decisions::{DecisionQuery, DecisionRecord, Logged, Row};
    use crate::store::Store;

    /// 2026-11-26T10:00:00Z.
    const BASE_MS: u64 = 1_795_687_200_000;

    fn record(n: u64) -> DecisionRecord {
        let id = Ulid::from_parts(BASE_MS + n, u128::from(n));
        DecisionRecord {
            decision_id: id.to_string(),
            time: Timestamp::from_millisecond(i64::try_from(BASE_MS + n).unwrap()).unwrap(),
            policy_version: "sha256:pack-1".to_owned(),
            principal: Some(format!(r#"Agent::"a{}""#, n % 5)),
            action: Some(r#"Action::"read""#.to_owned()),
            resource: Some(format!(r#"Ticket::"T-{n}""#)),
            session: None,
            credential_id: None,
            credential: None,
            decision: Logged::Allow,
            effect: None,
            enforced: vec![],
            warnings: vec![],
            audit: vec![],
            errors: vec![],
            reason: None,
            error: None,
            latency_us: 1,
            request: json!({"n": n}),
            novel: None,
            mcp: None,
            evidence: Default::default(),
        }
    }

    fn rows(ns: impl IntoIterator<Item = u64>) -> Vec<Row> {
        ns.into_iter()
            .map(|n| Row::new(record(n)).unwrap())
            .collect()
    }

    /// Appends each batch in a transaction of its own; returns how many each stored.
    fn write(store: &Store, batches: &[Vec<Row>]) -> Vec<usize> {
        let mut conn = store.connection();
        batches
            .iter()
            .map(|batch| {
                let tx = conn.transaction().unwrap();
                let refs: Vec<&Row> = batch.iter().collect();
                let stored = append(&tx, &refs).unwrap().len();
                tx.commit().unwrap();
                stored
            })
            .collect()
    }

    fn segments(store: &Store) -> Vec<i64> {
        let conn = store.connection();
        let mut stmt = conn
            .prepare("SELECT n FROM log_segments ORDER BY seg")
            .unwrap();
        stmt.query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn page_ids(store: &Store, limit: u32) -> Vec<u64> {
        let mut q = DecisionQuery {
            limit,
            ..DecisionQuery::default()
        };
        let mut ns = Vec::new();
        loop {
            let page = store.query_decisions(&q).unwrap();
            ns.extend(
                page.decisions
                    .iter()
                    .map(|d| d.request["n"].as_u64().unwrap()),
            );
            match page.next {
                Some(next) => q.cursor = Some(next),
                None => return ns,
            }
        }
    }

    #[test]
    fn pages_run_by_id_across_segments_whose_ids_overlap() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // The second segment holds ids older than all of the first's, and newer ones:
        // decisions a writer kept back (a failing batch retried) while others went on.
        let late: Vec<u64> = (1..300).chain(601..=700).collect();
        assert_eq!(write(&store, &[rows(300..=600), rows(late)]), [301, 399]);
        assert_eq!(segments(&store), [301, 399]);
        let expected: Vec<u64> = (1..=700).rev().collect();
        for limit in [1, 7, 50, 1000] {
            assert_eq!(page_ids(&store, limit), expected, "pages of {limit}");
        }
        for n in [1, 299, 300, 600, 601, 700] {
            let found = store.decision(&record(n).decision_id).unwrap().unwrap();
            assert_eq!(found.request["n"], n);
        }
        assert_eq!(store.count_decisions(None, None, None).unwrap(), 700);
        let since = Some(record(250).time);
        let until = Some(record(650).time);
        assert_eq!(store.count_decisions(since, until, None).unwrap(), 400);
        assert_eq!(
            store
                .count_decisions(since, until, Some(r#"Agent::"a1""#))
                .unwrap(),
            80
        );
    }

    #[test]
    fn small_batches_grow_the_newest_segment_and_a_batch_twice_is_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let singles: Vec<Vec<Row>> = (1..=300).map(|n| rows([n])).collect();
        assert!(write(&store, &singles).iter().all(|&stored| stored == 1));
        assert_eq!(segments(&store), [256, 44]);
        // Each batch a part of its own: nothing written was rewritten.
        let parts: i64 = store
            .connection()
            .query_row("SELECT count(*) FROM log_blobs WHERE seg = 1", [], |row| {
                row.get(0)
            })
            .unwrap();
        assert_eq!(parts, 256);
        assert_eq!(write(&store, &[rows(1..=300)]), [0]);
        assert_eq!(segments(&store), [256, 44]);
        let expected: Vec<u64> = (1..=300).rev().collect();
        assert_eq!(page_ids(&store, 100), expected);
        let principals = store.principals(None, 10).unwrap();
        assert_eq!(principals.len(), 5);
        assert_eq!(principals[0].principal, r#"Agent::"a0""#);
        assert_eq!(principals[0].first_seen, record(5).time);
        assert_eq!(principals[0].last_seen, record(300).time);
    }

    #[test]
    fn a_segment_whose_records_do_not_add_up_is_reported_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        write(&store, &[rows(1..=3)]);
        store
            .connection()
            .execute("UPDATE log_segments SET n = n + 1", [])
            .unwrap();
        let err = store
            .query_decisions(&DecisionQuery::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("log segment 1: 3 decisions where"), "{err}");
        store
            .connection()
            .execute(
                "UPDATE log_segments SET n = n - 1, raw_len = raw_len + 1",
                [],
            )
            .unwrap();
        let err = store
            .query_decisions(&DecisionQuery::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("log segment 1") && err.contains("bytes where"),
            "{err}"
        );
        // Parts without heads are a layout the migration to version 9 rewrote.
        store
            .connection()
            .execute_batch(
                "UPDATE log_segments SET raw_len = raw_len - 1;
                 UPDATE log_blobs SET heads = NULL;",
            )
            .unwrap();
        let err = store
            .decision(&record(2).decision_id)
            .unwrap_err()
            .to_string();
        assert!(err.contains("a part without heads"), "{err}");
    }

    #[test]
    fn a_segment_closes_at_its_most_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let n = u64::try_from(MAX_RECORDS).unwrap() + 10;
        assert_eq!(write(&store, &[rows(1..=n)]), [MAX_RECORDS + 10]);
        assert_eq!(segments(&store), [i64::try_from(MAX_RECORDS).unwrap(), 10]);
        assert_eq!(page_ids(&store, 1000).len(), MAX_RECORDS + 10);
    }

    #[test]
    fn a_parts_records_are_read_a_frame_at_a_time_and_a_cut_text_is_refused() {
        let records: String = (0..300).map(|n| format!("{{\"n\":{n}}}\n")).collect();
        let blob = frames(&records).unwrap();
        let mut budget = records.len();
        let mut read = Frames::new(&blob);
        for i in [0, 5, 127, 128, 255, 256, 299] {
            assert_eq!(
                read.record(i, &mut budget).unwrap(),
                format!("{{\"n\":{i}}}")
            );
        }
        // Only the three frames were decompressed, once each.
        assert_eq!(budget, 0);
        assert!(
            read.record(3, &mut budget)
                .unwrap_err()
                .contains("out of order")
        );
        let mut budget = records.len();
        let mut past = Frames::new(&blob);
        assert!(
            past.record(300, &mut budget)
                .unwrap_err()
                .contains("fewer records")
        );
        let mut budget = records.len();
        let mut gone = Frames::new(&blob);
        assert!(
            gone.record(384, &mut budget)
                .unwrap_err()
                .contains("no frame 3")
        );
        let cut = blob.get(..blob.len() - 3).unwrap();
        let mut budget = records.len();
        assert!(Frames::new(cut).record(299, &mut budget).is_err());

        assert_eq!(lines("a\nb\n").unwrap(), ["a", "b"]);
        assert!(lines("").unwrap().is_empty());
        assert!(lines("a\nb").unwrap_err().contains("does not end"));
        let old = zstd::bulk::compress(b"[1]\n{}\n[2]\n{}\n".as_slice(), 1).unwrap();
        let mut budget = 100;
        assert_eq!(
            interleaved(&old, &mut budget).unwrap(),
            ("[1]\n[2]\n".to_owned(), "{}\n{}\n".to_owned())
        );
        let odd = zstd::bulk::compress(b"[1]\n{}\n[2]\n".as_slice(), 1).unwrap();
        let mut budget = 100;
        assert!(
            interleaved(&odd, &mut budget)
                .unwrap_err()
                .contains("without its record")
        );
        let mut small = 3;
        assert!(interleaved(&old, &mut small).is_err());
    }

    #[test]
    fn a_frame_is_decompressed_into_the_room_it_declares_and_never_past_the_budget() {
        let text = "x".repeat(1000);
        let frame = compress(&text).unwrap();
        let mut budget = 5000;
        assert_eq!(decompress(&frame, &mut budget).unwrap(), text);
        assert_eq!(budget, 4000);
        // The kept context decompresses the next frame the same.
        assert_eq!(decompress(&frame, &mut budget).unwrap(), text);
        assert_eq!(budget, 3000);

        let mut short = 999;
        assert!(
            decompress(&frame, &mut short)
                .unwrap_err()
                .contains("a frame of 1000 bytes where 999 are left")
        );
        assert_eq!(short, 999);
        let mut budget = 5000;
        assert!(
            decompress(b"not zstd at all", &mut budget)
                .unwrap_err()
                .contains("not a zstd frame")
        );
        // A frame whose header says less than it holds is refused, not overrun. The
        // header after the magic number: a descriptor whose top bits say the size is two
        // bytes (the size less 256, little-endian), then the size.
        let mut lying = frame.clone();
        assert_eq!(lying.get(4).map(|d| d >> 6), Some(1));
        let said = (500_u16 - 256).to_le_bytes();
        lying.splice(5..7, said);
        let mut budget = 5000;
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&lying).unwrap(),
            Some(500)
        );
        assert!(decompress(&lying, &mut budget).is_err());
        // The thread's context, kept after that failure, reads a good frame whole.
        assert_eq!(decompress(&frame, &mut budget).unwrap(), text);
    }
}

//! The decision log's layout: decisions stored a batch at a time, compressed together.
//!
//! One row per decision, with an index per filter, cost the log writer most of its time:
//! every decision touched five B-trees (and three more per fired rule), and its ~600
//! bytes of JSON were written twice (the write-ahead log, then the checkpoint). Here a
//! batch becomes one **segment**:
//!
//! - `log_blobs`: the segment's records, zstd-compressed together, in one part per batch
//!   that wrote to it (a segment's text is its parts' texts one after the other). A batch
//!   of records that differ in a few fields compresses about tenfold.
//! - `log_segments`: what the readers choose segments by without opening them: the
//!   smallest and largest decision id, the time range, how many records.
//! - `log_keys`: for each principal, action, outcome, fired rule and mode a batch holds,
//!   one row (kind, key, segment): a filter reads the segments its key is in, and a
//!   batch adds a row per distinct key, not per decision.
//! - `log_ids`: decision id → segment, for reading one decision, and so that writing a
//!   batch twice stores each decision once.
//! - `log_principals`: every principal with its first and latest decision time and count.
//!
//! Inside a segment, each decision is two lines: its **head** (a JSON array of what the
//! filters read: id, time, principal, action, resource, outcome, fired rules), then the
//! record's JSON as it was logged. Compact JSON holds no raw newline, so lines split
//! exactly. A filter reads heads and parses a record only when it needs one.
//!
//! A segment is never smaller than it must be: under light load batches hold a record or
//! two, so a batch joins the newest segment while that holds fewer than [`GROW_BELOW`]
//! decisions, as a part of its own: nothing written is read, recompressed or rewritten.
//! (Rewriting the segment whole made the writer decompress and recompress up to 256
//! records for every small batch: under HTTP load, 25 µs of the writer per decision.)

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;

use arbiter_core::rule::Mode;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, Transaction, params, params_from_iter};
use serde::Deserialize;

use crate::decisions::{Logged, Row};

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
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Principal => "principal",
            Kind::Action => "action",
            Kind::Decision => "decision",
            Kind::Rule => "rule",
            Kind::Mode => "mode",
        }
    }
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

    /// Some default-deny scope fired in audit or warn.
    pub(crate) fn default_denied(&self) -> bool {
        self.rules.iter().any(|(rule, mode)| {
            matches!(mode, Mode::Audit | Mode::Warn) && rule.starts_with("default-deny:")
        })
    }

    /// Some rule fired enforced.
    pub(crate) fn enforced(&self) -> bool {
        self.rules.iter().any(|(_, mode)| *mode == Mode::Enforce)
    }
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

/// A segment, decompressed: its heads, each with where its record is in the text.
#[derive(Debug)]
pub(crate) struct Decoded {
    text: String,
    entries: Vec<(Head, Range<usize>)>,
}

impl Decoded {
    /// The decisions, in the order they were logged.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&Head, &str)> {
        self.entries
            .iter()
            .map(|(head, range)| (head, self.text.get(range.clone()).unwrap_or("")))
    }
}

/// Reads and decompresses segment `meta`.
pub(crate) fn read(conn: &Connection, meta: &Meta) -> Result<Decoded, ReadError> {
    read_with(conn, meta, None)
}

/// [`read`], keeping only the decisions whose head holds `needle` (a filter's value as
/// JSON, see [`Filter::needle`]): a head without it cannot match, and is not parsed.
pub(crate) fn read_with(
    conn: &Connection,
    meta: &Meta,
    needle: Option<&str>,
) -> Result<Decoded, ReadError> {
    let corrupt = |what: String| ReadError::Corrupt(format!("log segment {}: {what}", meta.seg));
    if !(0..=MAX_RAW).contains(&meta.raw_len) {
        return Err(corrupt(format!("a length of {} bytes", meta.raw_len)));
    }
    let want = usize::try_from(meta.raw_len).unwrap_or(0);
    // The row's length is checked against what the parts hold, not trusted for memory:
    // room for one segment as the writer makes them, more only as the parts need it.
    let mut raw = Vec::with_capacity(want.min(MAX_BYTES + (1 << 20)));
    let mut stmt =
        conn.prepare_cached("SELECT records FROM log_blobs WHERE seg = ?1 ORDER BY part")?;
    let mut parts = stmt.query([meta.seg])?;
    while let Some(part) = parts.next()? {
        let blob = part.get_ref(0)?.as_blob().map_err(rusqlite::Error::from)?;
        let room = want.saturating_sub(raw.len());
        let mut decoded = zstd::bulk::decompress(blob, room)
            .map_err(|e| corrupt(format!("cannot decompress: {e}")))?;
        raw.append(&mut decoded);
    }
    if raw.len() != want {
        return Err(corrupt(format!(
            "{} bytes of records where its row says {want}",
            raw.len()
        )));
    }
    let text = String::from_utf8(raw).map_err(|e| corrupt(format!("not UTF-8: {e}")))?;
    let entries = split(&text, needle).map_err(corrupt)?;
    Ok(Decoded { text, entries })
}

/// The heads of a segment's text, with their records' ranges.
fn split(text: &str, needle: Option<&str>) -> Result<Vec<(Head, Range<usize>)>, String> {
    let mut entries = Vec::new();
    let mut at = 0;
    while at < text.len() {
        let head_line = line_at(text, at)?;
        let record = line_at(text, head_line.end + 1)?;
        let line = text.get(head_line).unwrap_or("");
        if needle.is_none_or(|needle| line.contains(needle)) {
            let head: Head =
                serde_json::from_str(line).map_err(|e| format!("a head at byte {at}: {e}"))?;
            entries.push((head, record.clone()));
        }
        at = record.end + 1;
    }
    Ok(entries)
}

/// The line starting at `start` (its newline excluded), which must end in a newline.
fn line_at(text: &str, start: usize) -> Result<Range<usize>, String> {
    let rest = text
        .get(start..)
        .filter(|rest| !rest.is_empty())
        .ok_or_else(|| format!("the text ends at byte {start}, inside a decision"))?;
    let len = rest
        .find('\n')
        .ok_or_else(|| format!("the line at byte {start} does not end"))?;
    Ok(start..start + len)
}

/// A segment being written: a new one, or the newest one, grown.
struct Open<'r> {
    meta: Meta,
    text: String,
    keys: HashSet<(Kind, &'r str)>,
    /// Whether `log_segments` has a row for it already.
    stored: bool,
}

impl<'r> Open<'r> {
    fn new(seg: i64) -> Open<'r> {
        Open {
            meta: Meta {
                seg,
                first_id: String::new(),
                last_id: String::new(),
                min_time_us: i64::MAX,
                max_time_us: i64::MIN,
                n: 0,
                raw_len: 0,
            },
            text: String::new(),
            keys: HashSet::new(),
            stored: false,
        }
    }

    fn full(&self) -> bool {
        usize::try_from(self.meta.n).unwrap_or(usize::MAX) >= MAX_RECORDS
            || self.text.len() >= MAX_BYTES
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
        self.text.push_str(&row.head);
        self.text.push('\n');
        self.text.push_str(&row.json);
        self.text.push('\n');
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
            key(Kind::Mode, mode.as_str());
        }
    }

    /// Writes the segment: its records, its row, its new keys.
    fn write(mut self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        if self.meta.n == 0 {
            return Ok(());
        }
        if self.text.is_empty() {
            return Ok(());
        }
        let blob = zstd::bulk::compress(self.text.as_bytes(), LEVEL)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        self.meta.raw_len = self
            .meta
            .raw_len
            .saturating_add(i64::try_from(self.text.len()).unwrap_or(i64::MAX));
        let m = &self.meta;
        tx.prepare_cached("INSERT INTO log_blobs (seg, records) VALUES (?1, ?2)")?
            .execute(params![m.seg, blob])?;
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
        Some(meta) if meta.n < GROW_BELOW => grow(meta),
        Some(meta) => Open::new(meta.seg + 1),
        None => Open::new(1),
    };
    // Room for the batch's text up front: growing it by doubling copied it again and
    // again (4% of the writer's time).
    let text: usize = rows.iter().map(|row| row.bytes() + 2).sum();
    open.text.reserve(text.min(MAX_BYTES));
    let mut principals: BTreeMap<&str, Seen> = BTreeMap::new();
    {
        let mut insert_id =
            tx.prepare_cached("INSERT OR IGNORE INTO log_ids (decision_id, seg) VALUES (?1, ?2)")?;
        for (i, &row) in rows.iter().enumerate() {
            if open.full() {
                let next = open.meta.seg + 1;
                std::mem::replace(&mut open, Open::new(next)).write(tx)?;
                open.text.reserve(text.min(MAX_BYTES));
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
fn grow<'r>(meta: Meta) -> Open<'r> {
    Open {
        meta,
        text: String::new(),
        keys: HashSet::new(),
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

    use super::{MAX_RECORDS, append, line_at, split};
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
            .execute("UPDATE log_segments SET raw_len = raw_len + 1", [])
            .unwrap();
        let err = store
            .query_decisions(&DecisionQuery::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("log segment 1"), "{err}");
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
    fn a_text_that_stops_inside_a_decision_is_refused() {
        let head = r#"["01J0000000000000000000000A",1,null,null,null,"invalid",[]]"#;
        let whole = format!("{head}\n{{}}\n");
        assert_eq!(split(&whole, None).unwrap().len(), 1);
        assert_eq!(split(&whole, Some("\"nobody\"")).unwrap().len(), 0);
        let cut = format!("{head}\n{{}}");
        assert!(split(&cut, None).unwrap_err().contains("does not end"));
        let no_record = format!("{head}\n");
        assert!(
            split(&no_record, None)
                .unwrap_err()
                .contains("inside a decision")
        );
        assert!(
            split("[1]\n{}\n", None)
                .unwrap_err()
                .contains("a head at byte 0")
        );
        assert_eq!(line_at("ab\ncd\n", 3).unwrap(), 3..5);
    }
}

//! The schema, as versioned migrations: a database is brought to the latest version when
//! [`Store::open`](crate::Store::open) opens it, and never changed any other way.
//!
//! Migrations are append-only: a released step is never edited, a change is a new step.

use rusqlite::Transaction;
use rusqlite_migration::{HookError, HookResult, M, Migrations};

use crate::decisions::Row;
use crate::segment::{self, Layout};
use crate::summaries;

/// Version 1: the decision log and pack versions.
///
/// - `decisions`: one row per decision; the filterable fields as columns (time in unix
///   microseconds), the whole [`DecisionRecord`](crate::DecisionRecord) as JSON in `record`.
/// - `decision_rules`: which rule fired in which mode, for the `rule` and `mode` filters.
/// - `pack_versions` / `pack_rules`: each pack version once, with its rules' hashes;
///   `pack_loads`: every time a version was loaded.
const V1: &str = "
CREATE TABLE decisions (
    decision_id TEXT NOT NULL PRIMARY KEY,
    time_us     INTEGER NOT NULL,
    principal   TEXT,
    action      TEXT,
    decision    TEXT NOT NULL,
    record      TEXT NOT NULL
);
CREATE INDEX decisions_time ON decisions (time_us);
CREATE INDEX decisions_principal ON decisions (principal, decision_id);
CREATE INDEX decisions_action ON decisions (action, decision_id);
CREATE INDEX decisions_decision ON decisions (decision, decision_id);

CREATE TABLE decision_rules (
    decision_id TEXT NOT NULL,
    rule        TEXT NOT NULL,
    mode        TEXT NOT NULL,
    PRIMARY KEY (decision_id, rule, mode)
) WITHOUT ROWID;
CREATE INDEX decision_rules_rule ON decision_rules (rule, mode, decision_id);
CREATE INDEX decision_rules_mode ON decision_rules (mode, decision_id);

CREATE TABLE pack_versions (
    version      TEXT NOT NULL PRIMARY KEY,
    loaded_at    TEXT NOT NULL,
    loaded_at_us INTEGER NOT NULL
);

CREATE TABLE pack_rules (
    version  TEXT NOT NULL,
    position INTEGER NOT NULL,
    id       TEXT NOT NULL,
    hash     TEXT NOT NULL,
    kind     TEXT NOT NULL,
    mode     TEXT,
    effect   TEXT,
    PRIMARY KEY (version, position)
) WITHOUT ROWID;
CREATE INDEX pack_rules_id ON pack_rules (id, version);

CREATE TABLE pack_loads (
    version      TEXT NOT NULL,
    loaded_at    TEXT NOT NULL,
    loaded_at_us INTEGER NOT NULL
);
";

/// Version 2: revocations (of a token, a principal or a session), in the order they were
/// committed.
///
/// `seq` is `AUTOINCREMENT` so that a number is never handed out twice, even once expired
/// rows are pruned: a poller that has seen `seq` n asks for what is after n and must not
/// miss a row that reused it. For kind `principal`, `at_us` is the cut-off (tokens issued
/// before it are revoked); `principal` is set for kind `session` only.
const V2: &str = "
CREATE TABLE revocations (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    kind          TEXT NOT NULL CHECK (kind IN ('jti', 'principal', 'session')),
    value         TEXT NOT NULL,
    principal     TEXT CHECK (principal IS NULL OR kind = 'session'),
    reason        TEXT NOT NULL,
    \"by\"        TEXT NOT NULL,
    at            TEXT NOT NULL,
    at_us         INTEGER NOT NULL,
    expires_at_us INTEGER
);
CREATE INDEX revocations_kind_value ON revocations (kind, value);
";

/// Version 3: the evidence of the audit→enforce lifecycle (DESIGN §4).
///
/// - `findings`: audit and warn firings (default-deny scopes included) grouped by
///   (rule, principal, action, resource), kept current by the log writer in the same
///   transaction as the decisions; `decisive` counts the firings of allowed decisions.
/// - `reviews`: every verdict on a finding, never updated or deleted; the latest is the
///   finding's.
/// - `rule_days`: per rule (and default-deny scope), per UTC day and pack version, how
///   often it was in scope of a decision, fired and errored: what readiness counts.
/// - `promotions`: every promote and demote, forced or not, with who and why.
/// - `baseline_pairs` / `baselines`: the (principal, action) pairs a frozen baseline
///   holds, and each freeze.
const V3: &str = "
CREATE TABLE findings (
    id            TEXT NOT NULL PRIMARY KEY,
    rule          TEXT NOT NULL,
    mode          TEXT NOT NULL CHECK (mode IN ('audit', 'warn')),
    would         TEXT NOT NULL,
    principal     TEXT NOT NULL,
    action        TEXT NOT NULL,
    resource      TEXT NOT NULL,
    count         INTEGER NOT NULL,
    decisive      INTEGER NOT NULL,
    first_seen_us INTEGER NOT NULL,
    last_seen_us  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX findings_rule ON findings (rule, last_seen_us);
CREATE INDEX findings_principal ON findings (principal, last_seen_us);

CREATE TABLE reviews (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    finding_id TEXT NOT NULL,
    verdict    TEXT NOT NULL CHECK (verdict IN ('expected', 'legitimate')),
    \"by\"     TEXT NOT NULL,
    at         TEXT NOT NULL,
    at_us      INTEGER NOT NULL,
    note       TEXT NOT NULL
);
CREATE INDEX reviews_finding ON reviews (finding_id, seq);

CREATE TABLE rule_days (
    rule           TEXT NOT NULL,
    day            INTEGER NOT NULL,
    policy_version TEXT NOT NULL,
    evaluations    INTEGER NOT NULL,
    fired          INTEGER NOT NULL,
    errors         INTEGER NOT NULL,
    first_us       INTEGER NOT NULL,
    last_us        INTEGER NOT NULL,
    PRIMARY KEY (rule, day, policy_version)
) WITHOUT ROWID;

CREATE TABLE promotions (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    rule      TEXT NOT NULL,
    from_mode TEXT NOT NULL,
    to_mode   TEXT NOT NULL,
    forced    INTEGER NOT NULL,
    reason    TEXT,
    \"by\"    TEXT NOT NULL,
    at        TEXT NOT NULL,
    at_us     INTEGER NOT NULL,
    verdict   TEXT NOT NULL
);
CREATE INDEX promotions_rule ON promotions (rule, seq);

CREATE TABLE baselines (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    \"by\"    TEXT NOT NULL,
    at        TEXT NOT NULL,
    at_us     INTEGER NOT NULL,
    since_us  INTEGER,
    pairs     INTEGER NOT NULL
);

CREATE TABLE baseline_pairs (
    principal TEXT NOT NULL,
    action    TEXT NOT NULL,
    baseline  INTEGER NOT NULL,
    PRIMARY KEY (principal, action)
) WITHOUT ROWID;
";

/// Version 4: what candidate packs found in shadow (`arbiter serve --candidate`).
///
/// - `candidates`: one row per candidate pack version, with the latest load (directory,
///   sample, time) and its totals: each kind of change (together, the decisions made in
///   shadow), errored, dropped (the queue was full), the decision times covered, and the
///   changes left out of the groups once a kind held its most groups (`*_overflow`).
/// - `candidate_groups`: per candidate version, the changes by the rule that decided them
///   (`kind` `rule`) or by principal (`kind` `principal`), with a few example decision ids
///   (a JSON array). Keys and ids only: never a request value.
const V4: &str = "
CREATE TABLE candidates (
    version            TEXT NOT NULL PRIMARY KEY,
    dir                TEXT NOT NULL,
    sample             REAL NOT NULL,
    first_loaded_at_us INTEGER NOT NULL,
    loaded_at_us       INTEGER NOT NULL,
    same               INTEGER NOT NULL DEFAULT 0,
    breaks             INTEGER NOT NULL DEFAULT 0,
    loosens            INTEGER NOT NULL DEFAULT 0,
    shifts             INTEGER NOT NULL DEFAULT 0,
    now_valid          INTEGER NOT NULL DEFAULT 0,
    now_invalid        INTEGER NOT NULL DEFAULT 0,
    errored            INTEGER NOT NULL DEFAULT 0,
    dropped            INTEGER NOT NULL DEFAULT 0,
    first_us           INTEGER,
    last_us            INTEGER,
    rule_overflow      INTEGER NOT NULL DEFAULT 0,
    principal_overflow INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX candidates_loaded ON candidates (loaded_at_us);

CREATE TABLE candidate_groups (
    version     TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('rule', 'principal')),
    key         TEXT NOT NULL,
    breaks      INTEGER NOT NULL,
    loosens     INTEGER NOT NULL,
    shifts      INTEGER NOT NULL,
    now_valid   INTEGER NOT NULL,
    now_invalid INTEGER NOT NULL,
    examples    TEXT NOT NULL,
    PRIMARY KEY (version, kind, key)
) WITHOUT ROWID;
";

/// Version 5: the first evaluation error of each rule under each pack version, with its
/// decision and Cedar's message, kept by the log writer in the batch's transaction: a
/// rule that errors is not ready, and readiness says why in Cedar's words.
const V5: &str = "
CREATE TABLE rule_errors (
    rule           TEXT NOT NULL,
    policy_version TEXT NOT NULL,
    first_us       INTEGER NOT NULL,
    decision_id    TEXT NOT NULL,
    message        TEXT NOT NULL,
    PRIMARY KEY (rule, policy_version)
) WITHOUT ROWID;
";

/// Version 6: what the dashboard (`/ui`) draws, kept by the log writer so that no page
/// reads the decisions to draw it.
///
/// - `rule_days.decisive`: of a day's firings, those in allowed decisions (the firings
///   enforcing the rule would have changed), as findings count them.
/// - `outcome_hours`: decisions per UTC hour (hours since 1970) and outcome.
///
/// Both are filled from the log already written, in one pass each.
///
/// - `findings_rule` becomes `findings_rule_facts`: the same order (rule, last seen) with
///   what readiness reads of each finding (principal, decisive firings, first seen), so
///   that a rule's evidence is an index scan, not a table lookup per finding.
const V6: &str = "
ALTER TABLE rule_days ADD COLUMN decisive INTEGER NOT NULL DEFAULT 0;

DROP INDEX findings_rule;
CREATE INDEX findings_rule_facts
    ON findings (rule, last_seen_us, principal, decisive, first_seen_us);

CREATE TABLE outcome_hours (
    hour     INTEGER NOT NULL,
    decision TEXT NOT NULL,
    count    INTEGER NOT NULL,
    PRIMARY KEY (hour, decision)
) WITHOUT ROWID;

INSERT INTO outcome_hours (hour, decision, count)
SELECT time_us / 3600000000, decision, count(*) FROM decisions
WHERE time_us >= 0 GROUP BY 1, 2;

CREATE TEMP TABLE decisive_days AS
SELECT dr.rule AS rule, d.time_us / 86400000000 AS day,
       json_extract(d.record, '$.policy_version') AS policy_version, count(*) AS n
FROM decision_rules dr JOIN decisions d ON d.decision_id = dr.decision_id
WHERE d.decision = 'allow' AND d.time_us >= 0
GROUP BY 1, 2, 3;
CREATE INDEX temp.decisive_days_key ON decisive_days (rule, day, policy_version);

UPDATE rule_days SET decisive = coalesce((
    SELECT n FROM decisive_days t
    WHERE t.rule = rule_days.rule AND t.day = rule_days.day
      AND t.policy_version = rule_days.policy_version), 0);

DROP TABLE temp.decisive_days;
";

/// Version 7: the decision log in segments (see [`crate::segment`]): a batch of records
/// compressed together, with what filters choose segments by beside it. `decisions` and
/// `decision_rules` are read into segments of [`MIGRATION_BATCH`] decisions, in the order
/// they were written, each record kept byte for byte, and dropped. The parts are written
/// as version 7 wrote them (heads and records in turn); version 9 splits them. Findings, day counts
/// and outcome hours were counted from the same decisions already and are not touched.
const V7: &str = "
CREATE TABLE log_segments (
    seg         INTEGER PRIMARY KEY,
    first_id    TEXT NOT NULL,
    last_id     TEXT NOT NULL,
    min_time_us INTEGER NOT NULL,
    max_time_us INTEGER NOT NULL,
    n           INTEGER NOT NULL,
    raw_len     INTEGER NOT NULL
);
CREATE INDEX log_segments_newest ON log_segments (last_id, first_id);

CREATE TABLE log_blobs (
    part    INTEGER PRIMARY KEY,
    seg     INTEGER NOT NULL,
    records BLOB NOT NULL
);
CREATE INDEX log_blobs_seg ON log_blobs (seg, part);

CREATE TABLE log_ids (
    decision_id TEXT NOT NULL PRIMARY KEY,
    seg         INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE log_keys (
    kind TEXT NOT NULL,
    key  TEXT NOT NULL,
    seg  INTEGER NOT NULL,
    PRIMARY KEY (kind, key, seg)
) WITHOUT ROWID;

CREATE TABLE log_principals (
    principal TEXT NOT NULL PRIMARY KEY,
    first_us  INTEGER NOT NULL,
    last_us   INTEGER NOT NULL,
    decisions INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Version 8: findings kept in the order readiness reads them, so that adding to one
/// changes one row and no index.
///
/// Keyed by their hash `id`, with two indexes holding `last_seen_us`, every count the
/// log writer added to a finding moved its entries in both indexes and touched a page
/// chosen at random: a quarter of the writer's time. Keyed by (rule, principal, action,
/// resource) instead, a rule's findings are a range of the table (what the covering
/// `findings_rule_facts` index was for), and the indexes left hold only columns a count
/// never changes: `id` (the API's handle for a finding) and `principal`.
const V8: &str = "
CREATE TABLE findings_by_rule (
    id            TEXT NOT NULL,
    rule          TEXT NOT NULL,
    mode          TEXT NOT NULL CHECK (mode IN ('audit', 'warn')),
    would         TEXT NOT NULL,
    principal     TEXT NOT NULL,
    action        TEXT NOT NULL,
    resource      TEXT NOT NULL,
    count         INTEGER NOT NULL,
    decisive      INTEGER NOT NULL,
    first_seen_us INTEGER NOT NULL,
    last_seen_us  INTEGER NOT NULL,
    PRIMARY KEY (rule, principal, action, resource)
) WITHOUT ROWID;
INSERT INTO findings_by_rule
SELECT id, rule, mode, would, principal, action, resource, count, decisive,
       first_seen_us, last_seen_us
FROM findings;
DROP TABLE findings;
ALTER TABLE findings_by_rule RENAME TO findings;
CREATE INDEX findings_id ON findings (id);
CREATE INDEX findings_principal ON findings (principal);
";

/// Version 9: a part's heads apart from its records, and its records in small frames
/// (see [`crate::segment`]), so that a filter reads heads only and a page decompresses
/// the few frames that hold its decisions; keys for a rule by the outcome it fired in;
/// and what each identity did, summed up beside the log (see [`crate::summaries`]), so
/// that an identity's page does not read every segment that holds one of its decisions.
/// The migration rewrites every part in the new layout, line for line, then adds the
/// keys and sums up the decisions ([`summarize`]).
const V9: &str = "
ALTER TABLE log_blobs ADD COLUMN heads BLOB;

ALTER TABLE log_principals ADD COLUMN allowed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE log_principals ADD COLUMN denied INTEGER NOT NULL DEFAULT 0;
ALTER TABLE log_principals ADD COLUMN invalid INTEGER NOT NULL DEFAULT 0;
ALTER TABLE log_principals ADD COLUMN credentials_left_out INTEGER NOT NULL DEFAULT 0;

CREATE TABLE log_observed (
    principal TEXT NOT NULL,
    seg       INTEGER NOT NULL,
    counts    TEXT NOT NULL,
    PRIMARY KEY (principal, seg)
) WITHOUT ROWID;

CREATE TABLE log_credentials (
    principal  TEXT NOT NULL,
    jti        TEXT NOT NULL,
    issuer     TEXT,
    expires_at TEXT,
    first_us   INTEGER NOT NULL,
    last_us    INTEGER NOT NULL,
    decisions  INTEGER NOT NULL,
    PRIMARY KEY (principal, jti)
) WITHOUT ROWID;

CREATE TABLE log_novel (
    principal   TEXT NOT NULL,
    action      TEXT NOT NULL,
    at_us       INTEGER NOT NULL,
    decision_id TEXT NOT NULL,
    PRIMARY KEY (principal, action)
) WITHOUT ROWID;
";

/// Rewrites the log's parts in version 9's layout, then sums up the decisions it holds
/// into version 9's tables.
fn summarize(tx: &Transaction<'_>) -> HookResult {
    segment::split_parts(tx).map_err(HookError::Hook)?;
    summaries::summarize_log(tx).map_err(HookError::Hook)
}

/// How many decisions of an old log one segment takes when it is migrated.
const MIGRATION_BATCH: usize = 4096;

/// Moves the decisions of a version 6 log into segments, then drops the old tables.
fn into_segments(tx: &Transaction<'_>) -> HookResult {
    {
        let mut stmt = tx.prepare("SELECT decision_id, record FROM decisions ORDER BY rowid")?;
        let mut rows = stmt.query([])?;
        let mut batch = Vec::with_capacity(MIGRATION_BATCH);
        while let Some(row) = rows.next()? {
            let id: String = row.get(0)?;
            let row = Row::stored(row.get(1)?).map_err(|e| {
                HookError::Hook(format!("the logged decision {id} is not a record: {e}"))
            })?;
            batch.push(row);
            if batch.len() == MIGRATION_BATCH {
                let rows: Vec<&Row> = batch.iter().collect();
                segment::append_as(tx, &rows, Layout::Interleaved)?;
                batch.clear();
            }
        }
        let rows: Vec<&Row> = batch.iter().collect();
        segment::append_as(tx, &rows, Layout::Interleaved)?;
    }
    tx.execute_batch("DROP TABLE decision_rules; DROP TABLE decisions;")?;
    Ok(())
}

/// Every migration, oldest first.
pub(crate) fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(V1),
        M::up(V2),
        M::up(V3),
        M::up(V4),
        M::up(V5),
        M::up(V6),
        M::up_with_hook(V7, into_segments),
        M::up(V8),
        M::up_with_hook(V9, summarize),
    ])
}

/// The `user_version` of a database this build has migrated.
pub(crate) const LATEST_VERSION: i64 = 9;

#[cfg(test)]
mod tests {
    use super::{LATEST_VERSION, migrations};

    #[test]
    fn migrations_are_valid() {
        migrations().validate().unwrap();
    }

    #[test]
    fn the_latest_version_is_the_last_step() {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        migrations().to_latest(&mut conn).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(version, LATEST_VERSION);
    }
}

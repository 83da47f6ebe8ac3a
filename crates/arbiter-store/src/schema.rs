//! The schema, as versioned migrations: a database is brought to the latest version when
//! [`Store::open`](crate::Store::open) opens it, and never changed any other way.
//!
//! Migrations are append-only: a released step is never edited, a change is a new step.

use rusqlite_migration::{M, Migrations};

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

const STEPS: &[M<'static>] = &[M::up(V1), M::up(V2)];

/// Every migration, oldest first.
pub(crate) const MIGRATIONS: Migrations<'static> = Migrations::from_slice(STEPS);

/// The `user_version` of a database this build has migrated.
pub(crate) const LATEST_VERSION: i64 = STEPS.len() as i64;

#[cfg(test)]
mod tests {
    use super::MIGRATIONS;

    #[test]
    fn migrations_are_valid() {
        MIGRATIONS.validate().unwrap();
    }
}

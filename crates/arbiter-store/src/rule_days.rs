//! How often each rule (and default-deny scope) was in scope of a decision, fired and
//! errored, per UTC day and pack version: the evidence readiness counts (DESIGN §4).
//!
//! The log writer adds every batch's counts in the batch's transaction ([`tally`]). This
//! runs for every decision, so a batch is counted in a map keyed by values borrowed from
//! its records: nothing is allocated per in-scope rule, and SQLite sees one upsert per
//! (rule, day, version) per batch.

use std::collections::HashMap;

use jiff::Timestamp;
use rusqlite::{Transaction, params};

use crate::decisions::{Logged, Row};
use crate::error::StoreError;
use crate::store::Store;

/// Microseconds in a UTC day (days have no leap seconds in unix time).
const DAY_US: i64 = 86_400_000_000;

/// Adds a batch's counts to a row; `SET` expressions see the row as it was.
const UPSERT_RULE_DAY: &str = "
    INSERT INTO rule_days (rule, day, policy_version, evaluations, fired, errors,
                           first_us, last_us, decisive)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
    ON CONFLICT (rule, day, policy_version) DO UPDATE SET
        evaluations = evaluations + excluded.evaluations,
        fired = fired + excluded.fired,
        decisive = decisive + excluded.decisive,
        errors = errors + excluded.errors,
        first_us = min(first_us, excluded.first_us),
        last_us = max(last_us, excluded.last_us)";

/// Keeps the earliest error of a rule under a pack version.
const UPSERT_RULE_ERROR: &str = "
    INSERT INTO rule_errors (rule, policy_version, first_us, decision_id, message)
    VALUES (?1, ?2, ?3, ?4, ?5)
    ON CONFLICT (rule, policy_version) DO UPDATE SET
        first_us = excluded.first_us,
        decision_id = excluded.decision_id,
        message = excluded.message
    WHERE excluded.first_us < rule_errors.first_us";

/// The first evaluation error of a rule under one pack version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// The rule.
    pub rule: String,
    /// The pack version that decided.
    pub policy_version: String,
    /// When the first decision with the error was made.
    pub first: Timestamp,
    /// That decision.
    pub decision_id: String,
    /// Cedar's message.
    pub message: String,
}

/// One rule's (or default-deny scope's) decisions on one UTC day under one pack version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleDay {
    /// The rule, or a default-deny scope (`default-deny:<Type>`).
    pub rule: String,
    /// The UTC day, in days since 1970-01-01.
    pub day: i64,
    /// The pack version that decided.
    pub policy_version: String,
    /// Decisions that had it in scope.
    pub evaluations: u64,
    /// Of those, the ones where it fired, in any mode.
    pub fired: u64,
    /// Of those, the ones where its evaluation errored.
    pub errors: u64,
    /// Of the firings, those in allowed decisions: what enforcing it would have changed.
    pub decisive: u64,
    /// The earliest of those decisions, to the microsecond.
    pub first: Timestamp,
    /// The latest of those decisions, to the microsecond.
    pub last: Timestamp,
}

impl Store {
    /// The per-day counts of `rule`, or of every rule when `None`, ordered by rule, day
    /// and pack version.
    pub fn rule_days(&self, rule: Option<&str>) -> Result<Vec<RuleDay>, StoreError> {
        let conn = self.connection();
        let err = |cause| self.sqlite_error(cause);
        let mut stmt = conn
            .prepare_cached(
                "SELECT rule, day, policy_version, evaluations, fired, errors, first_us, last_us,
                        decisive
                 FROM rule_days WHERE ?1 IS NULL OR rule = ?1
                 ORDER BY rule, day, policy_version",
            )
            .map_err(err)?;
        let rows = stmt.query_map([rule], RuleDayRow::read).map_err(err)?;
        let mut days = Vec::new();
        for row in rows {
            days.push(self.rule_day_from(row.map_err(err)?)?);
        }
        Ok(days)
    }

    /// The first evaluation error of `rule` (of every rule when `None`) under each pack
    /// version, ordered by rule and time. Errors logged before this table existed (store
    /// version 5) are counted in [`Store::rule_days`] but have no row here.
    pub fn rule_errors(&self, rule: Option<&str>) -> Result<Vec<RuleError>, StoreError> {
        let conn = self.connection();
        let err = |cause| self.sqlite_error(cause);
        let mut stmt = conn
            .prepare_cached(
                "SELECT rule, policy_version, first_us, decision_id, message
                 FROM rule_errors WHERE ?1 IS NULL OR rule = ?1
                 ORDER BY rule, first_us",
            )
            .map_err(err)?;
        let rows = stmt
            .query_map([rule], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, String>(3)?,
                    row.get::<_, String>(4)?,
                ))
            })
            .map_err(err)?;
        let mut errors = Vec::new();
        for row in rows {
            let (rule, policy_version, first_us, decision_id, message) = row.map_err(err)?;
            let first = Timestamp::from_microsecond(first_us).map_err(|e| {
                self.corrupt(format!(
                    "rule_errors ({rule}, {policy_version}): first_us {first_us}: {e}"
                ))
            })?;
            errors.push(RuleError {
                rule,
                policy_version,
                first,
                decision_id,
                message,
            });
        }
        Ok(errors)
    }

    fn rule_day_from(&self, row: RuleDayRow) -> Result<RuleDay, StoreError> {
        let corrupt = |detail: String| {
            self.corrupt(format!(
                "rule_days ({}, {}, {}): {detail}",
                row.rule, row.day, row.policy_version
            ))
        };
        let count =
            |name: &str, n: i64| u64::try_from(n).map_err(|_| corrupt(format!("{name} is {n}")));
        let time = |name: &str, us: i64| {
            Timestamp::from_microsecond(us).map_err(|e| corrupt(format!("{name} {us}: {e}")))
        };
        Ok(RuleDay {
            evaluations: count("evaluations", row.evaluations)?,
            fired: count("fired", row.fired)?,
            errors: count("errors", row.errors)?,
            decisive: count("decisive", row.decisive)?,
            first: time("first_us", row.first_us)?,
            last: time("last_us", row.last_us)?,
            rule: row.rule,
            day: row.day,
            policy_version: row.policy_version,
        })
    }
}

/// A `rule_days` row as SQLite gives it.
struct RuleDayRow {
    rule: String,
    day: i64,
    policy_version: String,
    evaluations: i64,
    fired: i64,
    errors: i64,
    first_us: i64,
    last_us: i64,
    decisive: i64,
}

impl RuleDayRow {
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<RuleDayRow> {
        Ok(RuleDayRow {
            rule: row.get(0)?,
            day: row.get(1)?,
            policy_version: row.get(2)?,
            evaluations: row.get(3)?,
            fired: row.get(4)?,
            errors: row.get(5)?,
            first_us: row.get(6)?,
            last_us: row.get(7)?,
            decisive: row.get(8)?,
        })
    }
}

/// A batch's counts for one UTC day under one pack version, by rule (borrowed from the
/// batch).
///
/// Grouped by (day, version) first because a batch seldom spans more than one or two:
/// finding its group is a comparison. Within it, decisions are counted by the slice of
/// rules they had in scope (the engine hands out one shared slice per request shape, so
/// the pointer identifies it) and only then spread over the slice's rules: a decision
/// costs a pointer hash, not a string hash per rule in scope.
struct DayTallies<'a> {
    day: i64,
    policy_version: &'a str,
    slices: HashMap<(usize, Option<&'a str>), Slice<'a>>,
    /// (rule, whether the decision was allowed), per rule that fired, in scope.
    fired: Vec<(&'a str, bool)>,
    /// Per rule that errored, in scope.
    errored: Vec<&'a str>,
}

/// The decisions of one day and version that had the same rules in scope.
struct Slice<'a> {
    in_scope: Option<&'a [String]>,
    scope: Option<&'a str>,
    decisions: i64,
    first_us: i64,
    last_us: i64,
}

/// A batch's counts for one row.
struct Tally {
    evaluations: i64,
    fired: i64,
    decisive: i64,
    errors: i64,
    first_us: i64,
    last_us: i64,
}

/// Adds the in-scope counts of `rows`, decisions just inserted in `tx`: every rule in
/// scope and the default-deny scope count an evaluation; one that fired (in any mode) or
/// errored counts that too. Invalid requests have nothing in scope.
pub(crate) fn tally(tx: &Transaction<'_>, rows: &[&Row]) -> rusqlite::Result<()> {
    let mut days: Vec<DayTallies<'_>> = Vec::new();
    for row in rows {
        if row.in_scope.is_none() && row.scope.is_none() {
            continue;
        }
        let day = row.time_us.div_euclid(DAY_US);
        let group = match days
            .iter()
            .rposition(|d| d.day == day && d.policy_version == row.policy_version)
        {
            Some(group) => group,
            None => {
                days.push(DayTallies {
                    day,
                    policy_version: &row.policy_version,
                    slices: HashMap::new(),
                    fired: Vec::new(),
                    errored: Vec::new(),
                });
                days.len() - 1
            }
        };
        let d = days.get_mut(group).expect("found or just pushed");
        let in_scope: Option<&[String]> = row.in_scope.as_deref();
        let scope = row.scope.as_deref();
        let key = (in_scope.map_or(0, |ids| ids.as_ptr().addr()), scope);
        let slice = d.slices.entry(key).or_insert(Slice {
            in_scope,
            scope,
            decisions: 0,
            first_us: row.time_us,
            last_us: row.time_us,
        });
        slice.decisions += 1;
        slice.first_us = slice.first_us.min(row.time_us);
        slice.last_us = slice.last_us.max(row.time_us);
        // As often as the rule is in scope (once, unless a slice names it twice), and
        // once however many modes it fired in.
        let times_in_scope = |rule: &str| {
            in_scope.map_or(0, |ids| ids.iter().filter(|id| *id == rule).count())
                + usize::from(scope == Some(rule))
        };
        let allowed = row.decision == Logged::Allow;
        for (i, (rule, _)) in row.rules.iter().enumerate() {
            let first = row.rules.iter().take(i).all(|(seen, _)| seen != rule);
            if first {
                for _ in 0..times_in_scope(rule) {
                    d.fired.push((rule, allowed));
                }
            }
        }
        for (i, (rule, _)) in row.errored.iter().enumerate() {
            let first = row.errored.iter().take(i).all(|(seen, _)| seen != rule);
            if first {
                for _ in 0..times_in_scope(rule) {
                    d.errored.push(rule);
                }
            }
        }
    }
    first_errors(tx, rows)?;
    if days.is_empty() {
        return Ok(());
    }
    let mut upsert = tx.prepare_cached(UPSERT_RULE_DAY)?;
    for d in days {
        let mut tallies: HashMap<&str, Tally> = HashMap::new();
        for slice in d.slices.into_values() {
            let rules = slice.in_scope.into_iter().flatten().map(String::as_str);
            for rule in rules.chain(slice.scope) {
                let t = tallies.entry(rule).or_insert(Tally {
                    evaluations: 0,
                    fired: 0,
                    decisive: 0,
                    errors: 0,
                    first_us: slice.first_us,
                    last_us: slice.last_us,
                });
                t.evaluations += slice.decisions;
                t.first_us = t.first_us.min(slice.first_us);
                t.last_us = t.last_us.max(slice.last_us);
            }
        }
        for (rule, allowed) in d.fired {
            if let Some(t) = tallies.get_mut(rule) {
                t.fired += 1;
                t.decisive += i64::from(allowed);
            }
        }
        for rule in d.errored {
            if let Some(t) = tallies.get_mut(rule) {
                t.errors += 1;
            }
        }
        for (rule, t) in tallies {
            upsert.execute(params![
                rule,
                d.day,
                d.policy_version,
                t.evaluations,
                t.fired,
                t.errors,
                t.first_us,
                t.last_us,
                t.decisive,
            ])?;
        }
    }
    Ok(())
}

/// Keeps the batch's first error of each rule under each pack version (the table keeps
/// the earliest across batches). Errors are rare: a batch without any costs a scan.
fn first_errors(tx: &Transaction<'_>, rows: &[&Row]) -> rusqlite::Result<()> {
    let mut first: HashMap<(&str, &str), (&Row, &str)> = HashMap::new();
    for row in rows {
        for (rule, message) in &row.errored {
            first
                .entry((rule.as_str(), row.policy_version.as_str()))
                .and_modify(|(seen, seen_message)| {
                    if row.time_us < seen.time_us {
                        *seen = row;
                        *seen_message = message.as_str();
                    }
                })
                .or_insert((row, message.as_str()));
        }
    }
    if first.is_empty() {
        return Ok(());
    }
    let mut upsert = tx.prepare_cached(UPSERT_RULE_ERROR)?;
    for ((rule, version), (row, message)) in first {
        upsert.execute(params![
            rule,
            version,
            row.time_us,
            row.decision_id,
            message
        ])?;
    }
    Ok(())
}

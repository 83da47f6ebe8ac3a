//! What candidate packs found in shadow (`arbiter serve --candidate`, issue 11): per
//! candidate pack version, how its decisions on a sample of live requests differed from
//! the decisions answered, grouped by rule and by principal with a few example decision
//! ids.
//!
//! The aggregate is bounded whatever the traffic: counts per key, at most
//! [`ShadowLimits::examples`] ids per group, at most [`ShadowLimits::groups`] groups of
//! each kind per candidate (the changes past that are counted as overflow). It holds rule
//! ids, principals and decision ids, never a request value. Each candidate version keeps
//! its own rows, so a reloaded candidate starts from zero and an older one's findings stay
//! readable.
//!
//! The shadow worker writes through a [`CandidateWriter`], a connection of its own that
//! commits with `synchronous = NORMAL` (a lost second of shadow counts is not a lost
//! decision); `GET /v1/candidate` and `arbiter candidate` read with
//! [`Store::candidate_report`].

use jiff::Timestamp;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::store::{Store, Synchronous};

/// A candidate pack as loaded beside the pack in force.
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateLoad {
    /// The candidate's pack version (its content hash, as `PackVersion::of` records it).
    pub version: String,
    /// The directory it was loaded from.
    pub dir: String,
    /// The fraction of principals it decides for.
    pub sample: f64,
    /// When it was loaded.
    pub at: Timestamp,
}

/// How many of each kind of change, as replay counts them. A shadow decides on the
/// request as it came, before `[log] mask`, so nothing is unreplayable.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowCounts {
    /// Unchanged.
    pub same: u64,
    /// Allowed live, denied (or throttled) by the candidate.
    pub breaks: u64,
    /// Denied live, allowed by the candidate.
    pub loosens: u64,
    /// The same outcome, other deciding rules or effect.
    pub shifts: u64,
    /// Invalid live, accepted by the candidate's schema.
    pub now_valid: u64,
    /// Decided live, refused by the candidate.
    pub now_invalid: u64,
}

impl ShadowCounts {
    /// Every change but `same`.
    pub fn differences(&self) -> u64 {
        self.breaks + self.loosens + self.shifts + self.now_valid + self.now_invalid
    }

    /// Every decision counted.
    pub fn total(&self) -> u64 {
        self.same + self.differences()
    }
}

/// The changes of one rule or principal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShadowGroup {
    /// The rule (or `default-deny:<Type>`, or `invalid:<code>`) or the principal.
    pub key: String,
    /// Its changes (`same` is always 0: only changes are grouped).
    pub changes: ShadowCounts,
    /// The first decision ids of its changes, at most [`ShadowLimits::examples`].
    pub examples: Vec<String>,
}

/// What a shadow worker adds to a candidate's aggregate at once.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ShadowTally {
    /// The candidate's pack version.
    pub version: String,
    /// Its decisions, by kind of change.
    pub changes: ShadowCounts,
    /// Decisions of the candidate that reported an evaluation error, or that it failed to
    /// make.
    pub errored: u64,
    /// Sampled requests the candidate never saw: its queue was full.
    pub dropped: u64,
    /// The earliest decision time counted.
    pub first: Option<Timestamp>,
    /// The latest decision time counted.
    pub last: Option<Timestamp>,
    /// Changes by deciding rule.
    pub by_rule: Vec<ShadowGroup>,
    /// Changes by principal.
    pub by_principal: Vec<ShadowGroup>,
}

impl ShadowTally {
    /// Whether it adds nothing.
    pub fn is_empty(&self) -> bool {
        self.changes.total() == 0 && self.errored == 0 && self.dropped == 0
    }
}

/// The bounds of a candidate's aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShadowLimits {
    /// Example decision ids kept per group.
    pub examples: usize,
    /// Groups kept per kind (rule, principal) and candidate.
    pub groups: usize,
}

impl Default for ShadowLimits {
    fn default() -> Self {
        ShadowLimits {
            examples: 3,
            groups: 1000,
        }
    }
}

/// A candidate's differences: what `GET /v1/candidate` and `arbiter candidate --json`
/// answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateReport {
    /// Which candidate, loaded from where, sampling what.
    pub candidate: CandidateInfo,
    /// Requests it decided in shadow.
    pub shadowed: u64,
    /// Of those, decisions that reported an evaluation error (or that it failed to make).
    pub errored: u64,
    /// Sampled requests dropped because its queue was full.
    pub dropped: u64,
    /// The earliest decision time it decided.
    pub first: Option<Timestamp>,
    /// The latest.
    pub last: Option<Timestamp>,
    /// Its decisions by kind of change.
    pub changes: ShadowCounts,
    /// Changes by the candidate's deciding rules (a loosen: by the rules that decided the
    /// live deny); most changes first.
    pub by_rule: Vec<ShadowGroup>,
    /// Changes by principal; most changes first.
    pub by_principal: Vec<ShadowGroup>,
    /// Changes left out of the groups once a kind held its most groups.
    pub overflow: Overflow,
}

/// A candidate as last loaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateInfo {
    /// Its pack version.
    pub version: String,
    /// The directory it was loaded from.
    pub dir: String,
    /// The fraction of principals it decides for.
    pub sample: f64,
    /// When this version was first loaded.
    pub first_loaded_at: Timestamp,
    /// When it was last loaded.
    pub loaded_at: Timestamp,
}

/// Changes not grouped because the groups of their kind were full.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overflow {
    /// By rule.
    pub by_rule: u64,
    /// By principal.
    pub by_principal: u64,
}

/// The two kinds of group, as stored.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Rule,
    Principal,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Rule => "rule",
            Kind::Principal => "principal",
        }
    }

    fn overflow_column(self) -> &'static str {
        match self {
            Kind::Rule => "rule_overflow",
            Kind::Principal => "principal_overflow",
        }
    }
}

impl Store {
    /// Records that a candidate was loaded: a new version gets its row, a known one its
    /// latest directory, sample and time (its counts go on).
    pub fn record_candidate(&self, load: &CandidateLoad) -> Result<(), StoreError> {
        let conn = self.writable_connection()?;
        let at = load.at.as_microsecond();
        conn.execute(
            "INSERT INTO candidates (version, dir, sample, first_loaded_at_us, loaded_at_us)
             VALUES (?1, ?2, ?3, ?4, ?4)
             ON CONFLICT (version) DO UPDATE SET
                 dir = excluded.dir, sample = excluded.sample,
                 loaded_at_us = excluded.loaded_at_us",
            params![load.version, load.dir, load.sample, at],
        )
        .map_err(|cause| self.sqlite_error(cause))?;
        Ok(())
    }

    /// A connection of its own for a shadow worker's tallies.
    pub fn candidate_writer(&self) -> Result<CandidateWriter, StoreError> {
        Ok(CandidateWriter {
            conn: self.connect_writer(Synchronous::Normal)?,
            store: self.clone(),
        })
    }

    /// The differences of candidate `version`, or of the candidate loaded last when
    /// `None`; `None` when there is no such candidate.
    pub fn candidate_report(
        &self,
        version: Option<&str>,
    ) -> Result<Option<CandidateReport>, StoreError> {
        let conn = self.connection();
        let err = |cause| self.sqlite_error(cause);
        let row = conn
            .query_row(
                "SELECT version, dir, sample, first_loaded_at_us, loaded_at_us, same, breaks,
                        loosens, shifts, now_valid, now_invalid, errored, dropped, first_us,
                        last_us, rule_overflow, principal_overflow
                 FROM candidates WHERE ?1 IS NULL OR version = ?1
                 ORDER BY loaded_at_us DESC, version LIMIT 1",
                [version],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, f64>(2)?,
                        [row.get::<_, i64>(3)?, row.get::<_, i64>(4)?],
                        [
                            row.get::<_, i64>(5)?,
                            row.get(6)?,
                            row.get(7)?,
                            row.get(8)?,
                            row.get(9)?,
                            row.get(10)?,
                            row.get(11)?,
                            row.get(12)?,
                        ],
                        [row.get::<_, Option<i64>>(13)?, row.get(14)?],
                        [row.get::<_, i64>(15)?, row.get(16)?],
                    ))
                },
            )
            .optional()
            .map_err(err)?;
        let Some((version, dir, sample, [first_loaded, loaded], counts, span, overflow)) = row
        else {
            return Ok(None);
        };
        let corrupt = |what: &str| self.corrupt(format!("candidates ({version:?}): {what}"));
        let time = |us: i64| {
            Timestamp::from_microsecond(us).map_err(|e| corrupt(&format!("time {us}: {e}")))
        };
        let count = |n: i64| u64::try_from(n).map_err(|_| corrupt(&format!("count {n}")));
        let [
            same,
            breaks,
            loosens,
            shifts,
            now_valid,
            now_invalid,
            errored,
            dropped,
        ] = counts;
        let changes = ShadowCounts {
            same: count(same)?,
            breaks: count(breaks)?,
            loosens: count(loosens)?,
            shifts: count(shifts)?,
            now_valid: count(now_valid)?,
            now_invalid: count(now_invalid)?,
        };
        let by_rule = self.candidate_groups(&conn, &version, Kind::Rule)?;
        let by_principal = self.candidate_groups(&conn, &version, Kind::Principal)?;
        Ok(Some(CandidateReport {
            shadowed: changes.total(),
            errored: count(errored)?,
            dropped: count(dropped)?,
            first: span[0].map(time).transpose()?,
            last: span[1].map(time).transpose()?,
            changes,
            by_rule,
            by_principal,
            overflow: Overflow {
                by_rule: count(overflow[0])?,
                by_principal: count(overflow[1])?,
            },
            candidate: CandidateInfo {
                first_loaded_at: time(first_loaded)?,
                loaded_at: time(loaded)?,
                version,
                dir,
                sample,
            },
        }))
    }

    fn candidate_groups(
        &self,
        conn: &Connection,
        version: &str,
        kind: Kind,
    ) -> Result<Vec<ShadowGroup>, StoreError> {
        let err = |cause| self.sqlite_error(cause);
        let mut stmt = conn
            .prepare_cached(
                "SELECT key, breaks, loosens, shifts, now_valid, now_invalid, examples
                 FROM candidate_groups WHERE version = ?1 AND kind = ?2
                 ORDER BY breaks + loosens + shifts + now_valid + now_invalid DESC, key",
            )
            .map_err(err)?;
        let rows = stmt
            .query_map(params![version, kind.as_str()], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    [
                        row.get::<_, i64>(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                        row.get(5)?,
                    ],
                    row.get::<_, String>(6)?,
                ))
            })
            .map_err(err)?;
        let mut groups = Vec::new();
        for row in rows {
            let (key, counts, examples) = row.map_err(err)?;
            let corrupt = |what: String| {
                self.corrupt(format!(
                    "candidate_groups ({version:?}, {}, {key:?}): {what}",
                    kind.as_str()
                ))
            };
            let count = |n: i64| u64::try_from(n).map_err(|_| corrupt(format!("count {n}")));
            let [breaks, loosens, shifts, now_valid, now_invalid] = counts;
            let changes = ShadowCounts {
                same: 0,
                breaks: count(breaks)?,
                loosens: count(loosens)?,
                shifts: count(shifts)?,
                now_valid: count(now_valid)?,
                now_invalid: count(now_invalid)?,
            };
            let examples: Vec<String> =
                serde_json::from_str(&examples).map_err(|e| corrupt(format!("examples: {e}")))?;
            groups.push(ShadowGroup {
                key,
                changes,
                examples,
            });
        }
        Ok(groups)
    }
}

/// A shadow worker's connection: adds tallies to candidates' aggregates.
#[derive(Debug)]
pub struct CandidateWriter {
    conn: Connection,
    store: Store,
}

impl CandidateWriter {
    /// Adds `tally` to its candidate's aggregate in one transaction, within `limits`.
    /// Counts are added in SQL, so servers sharing a data directory add up.
    pub fn add(&mut self, tally: &ShadowTally, limits: ShadowLimits) -> Result<(), StoreError> {
        let store = &self.store;
        let err = |cause| store.sqlite_error(cause);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let c = &tally.changes;
        let updated = tx
            .execute(
                "UPDATE candidates SET
                     same = same + ?2, breaks = breaks + ?3, loosens = loosens + ?4,
                     shifts = shifts + ?5, now_valid = now_valid + ?6,
                     now_invalid = now_invalid + ?7, errored = errored + ?8,
                     dropped = dropped + ?9,
                     first_us = min(coalesce(first_us, ?10), coalesce(?10, first_us)),
                     last_us = max(coalesce(last_us, ?11), coalesce(?11, last_us))
                 WHERE version = ?1",
                params![
                    tally.version,
                    sql(c.same),
                    sql(c.breaks),
                    sql(c.loosens),
                    sql(c.shifts),
                    sql(c.now_valid),
                    sql(c.now_invalid),
                    sql(tally.errored),
                    sql(tally.dropped),
                    tally.first.map(Timestamp::as_microsecond),
                    tally.last.map(Timestamp::as_microsecond),
                ],
            )
            .map_err(err)?;
        if updated == 0 {
            return Err(StoreError::Invalid {
                message: format!(
                    "no candidate {:?} was recorded: record its load first",
                    tally.version
                ),
            });
        }
        for (kind, groups) in [
            (Kind::Rule, &tally.by_rule),
            (Kind::Principal, &tally.by_principal),
        ] {
            add_groups(&tx, &tally.version, kind, groups, limits).map_err(err)?;
        }
        tx.commit().map_err(err)
    }
}

/// Adds `groups` of one kind: to a group already kept, its counts and examples up to the
/// limit; a new group while there is room; else its changes to the overflow.
fn add_groups(
    tx: &Transaction<'_>,
    version: &str,
    kind: Kind,
    groups: &[ShadowGroup],
    limits: ShadowLimits,
) -> rusqlite::Result<()> {
    if groups.is_empty() {
        return Ok(());
    }
    let kept: i64 = tx.query_row(
        "SELECT count(*) FROM candidate_groups WHERE version = ?1 AND kind = ?2",
        params![version, kind.as_str()],
        |row| row.get(0),
    )?;
    let mut kept = usize::try_from(kept).unwrap_or(usize::MAX);
    let mut overflow = 0u64;
    let mut find = tx.prepare_cached(
        "SELECT examples FROM candidate_groups WHERE version = ?1 AND kind = ?2 AND key = ?3",
    )?;
    let mut update = tx.prepare_cached(
        "UPDATE candidate_groups SET
             breaks = breaks + ?4, loosens = loosens + ?5, shifts = shifts + ?6,
             now_valid = now_valid + ?7, now_invalid = now_invalid + ?8, examples = ?9
         WHERE version = ?1 AND kind = ?2 AND key = ?3",
    )?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO candidate_groups
             (version, kind, key, breaks, loosens, shifts, now_valid, now_invalid, examples)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    for group in groups {
        let c = &group.changes;
        let existing: Option<String> = find
            .query_row(params![version, kind.as_str(), group.key], |row| row.get(0))
            .optional()?;
        let examples = match &existing {
            Some(text) => {
                // A row this writer cannot read is rewritten with the new examples only.
                let mut examples: Vec<String> = serde_json::from_str(text).unwrap_or_default();
                let room = limits.examples.saturating_sub(examples.len());
                examples.extend(group.examples.iter().take(room).cloned());
                examples
            }
            None if kept < limits.groups => {
                kept += 1;
                group
                    .examples
                    .iter()
                    .take(limits.examples)
                    .cloned()
                    .collect()
            }
            None => {
                overflow += c.differences();
                continue;
            }
        };
        let examples = serde_json::to_string(&examples)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        let values = params![
            version,
            kind.as_str(),
            group.key,
            sql(c.breaks),
            sql(c.loosens),
            sql(c.shifts),
            sql(c.now_valid),
            sql(c.now_invalid),
            examples,
        ];
        if existing.is_some() {
            update.execute(values)?;
        } else {
            insert.execute(values)?;
        }
    }
    if overflow > 0 {
        tx.execute(
            &format!(
                "UPDATE candidates SET {0} = {0} + ?2 WHERE version = ?1",
                kind.overflow_column()
            ),
            params![version, sql(overflow)],
        )?;
    }
    Ok(())
}

/// A count as SQLite stores it.
fn sql(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

//! Findings (DESIGN §4): audit and warn firings grouped by (rule, principal, action,
//! resource), and the reviews that label them.
//!
//! The log writer keeps findings current in the same transaction as the decisions they
//! come from ([`tally`]), so a committed decision is always counted and never twice.
//! Reviews are only ever appended: a finding's status is its latest review's verdict, and
//! a finding that fires again keeps it while its counts grow.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use arbiter_core::rule::{Effect, Mode};
use jiff::Timestamp;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, Transaction, TransactionBehavior, params, params_from_iter};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::decisions::{DecisionRecord, Logged, Row};
use crate::error::StoreError;
use crate::store::Store;

/// The words [`Finding::status`] and [`FindingQuery::status`] take.
pub const FINDING_STATUSES: &[&str] = &["open", "expected", "legitimate"];

/// A finding with its latest review, in [`FindingRow::read`]'s column order.
const SELECT_FINDINGS: &str = "
    SELECT f.id, f.rule, f.mode, f.would, f.principal, f.action, f.resource, f.count,
           f.decisive, f.first_seen_us, f.last_seen_us, r.verdict, r.\"by\", r.at, r.note
    FROM findings f
    LEFT JOIN reviews r
      ON r.seq = (SELECT max(seq) FROM reviews WHERE finding_id = f.id)
    WHERE 1 = 1";

/// Adds a batch's counts to a finding. SQLite evaluates every `SET` against the row as it
/// was, so the `CASE`s compare with the stored `last_seen_us`, not the updated one.
const UPSERT_FINDING: &str = "
    INSERT INTO findings (id, rule, mode, would, principal, action, resource, count,
                          decisive, first_seen_us, last_seen_us)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
    ON CONFLICT (rule, principal, action, resource) DO UPDATE SET
        count = count + excluded.count,
        decisive = decisive + excluded.decisive,
        mode = CASE WHEN excluded.last_seen_us >= last_seen_us
                    THEN excluded.mode ELSE mode END,
        would = CASE WHEN excluded.last_seen_us >= last_seen_us
                     THEN excluded.would ELSE would END,
        first_seen_us = min(first_seen_us, excluded.first_seen_us),
        last_seen_us = max(last_seen_us, excluded.last_seen_us)";

/// A reviewer's verdict on a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReviewVerdict {
    /// The rule is right: this should be blocked.
    Expected,
    /// Needed work that enforcing the rule would break.
    Legitimate,
}

impl ReviewVerdict {
    /// The verdict's word, as stored and serialized: `expected` or `legitimate`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewVerdict::Expected => "expected",
            ReviewVerdict::Legitimate => "legitimate",
        }
    }
}

impl fmt::Display for ReviewVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ReviewVerdict {
    type Err = UnknownReviewVerdict;

    fn from_str(word: &str) -> Result<ReviewVerdict, UnknownReviewVerdict> {
        match word {
            "expected" => Ok(ReviewVerdict::Expected),
            "legitimate" => Ok(ReviewVerdict::Legitimate),
            _ => Err(UnknownReviewVerdict {
                word: word.to_owned(),
            }),
        }
    }
}

/// A word that is not a [`ReviewVerdict`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{word:?} is not a verdict: use `expected` (the rule is right to block this) or \
     `legitimate` (needed work the rule would break)"
)]
pub struct UnknownReviewVerdict {
    word: String,
}

/// One review of a finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    /// The reviewer's verdict.
    pub verdict: ReviewVerdict,
    /// Who reviewed: `--by` or the user (CLI), or the admin token's name (HTTP).
    pub by: String,
    /// When.
    pub at: Timestamp,
    /// Why.
    pub note: String,
}

/// Audit or warn firings of one rule for one (principal, action, resource), in DESIGN
/// §4's JSON shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// `f` and 16 hex digits, derived from (rule, principal, action, resource): the same
    /// finding has the same id in every store.
    pub id: String,
    /// The rule, or a default-deny scope (`default-deny:<Type>`).
    pub rule: String,
    /// The mode of the latest firing: `audit` or `warn`.
    pub mode: String,
    /// What the latest firing would have done enforced: `deny`, `throttle` or `revoke`.
    pub would: String,
    /// The principal's Cedar uid.
    pub principal: String,
    /// The action's Cedar uid.
    pub action: String,
    /// The resource's Cedar uid.
    pub resource: String,
    /// How many times it fired.
    pub count: u64,
    /// How many of those firings were in allowed decisions, which enforcing the rule would
    /// have changed.
    pub decisive: u64,
    /// The earliest firing, to the microsecond.
    pub first_seen: Timestamp,
    /// The latest firing, to the microsecond.
    pub last_seen: Timestamp,
    /// `open` until reviewed, then the latest review's verdict.
    pub status: String,
    /// The latest review.
    pub review: Option<Review>,
}

/// What readiness reads of a finding: whose it is, its status and its counts, without
/// the texts a person reads (action, resource, the review's note). A log has many
/// findings and few rules and principals: their names are shared, not copied per
/// finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindingFacts {
    /// The rule, or a default-deny scope.
    pub rule: Arc<str>,
    /// The principal's Cedar uid.
    pub principal: Arc<str>,
    /// `open` until reviewed, then the latest review's verdict.
    pub status: &'static str,
    /// Firings in allowed decisions.
    pub decisive: u64,
    /// The earliest firing.
    pub first_seen: Timestamp,
    /// The latest firing.
    pub last_seen: Timestamp,
}

impl From<&Finding> for FindingFacts {
    fn from(f: &Finding) -> FindingFacts {
        FindingFacts {
            rule: Arc::from(f.rule.as_str()),
            principal: Arc::from(f.principal.as_str()),
            status: status_word(Some(&f.status)),
            decisive: f.decisive,
            first_seen: f.first_seen,
            last_seen: f.last_seen,
        }
    }
}

/// A status as one of [`FINDING_STATUSES`] (an unknown verdict, which the table's
/// `CHECK` rules out, reads as `open`: not reviewed).
fn status_word(verdict: Option<&str>) -> &'static str {
    match verdict {
        Some("expected") => "expected",
        Some("legitimate") => "legitimate",
        _ => "open",
    }
}

/// One copy of each name.
#[derive(Default)]
struct Names(HashMap<Box<str>, Arc<str>>);

impl Names {
    fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(shared) = self.0.get(name) {
            return Arc::clone(shared);
        }
        let shared: Arc<str> = Arc::from(name);
        self.0.insert(Box::from(name), Arc::clone(&shared));
        shared
    }
}

/// Which findings to list. Every filter that is set must match.
#[derive(Debug, Clone, Default)]
pub struct FindingQuery {
    /// The rule (or default-deny scope), exactly.
    pub rule: Option<String>,
    /// `open`, `expected` or `legitimate`.
    pub status: Option<String>,
    /// The principal's Cedar uid, exactly.
    pub principal: Option<String>,
    /// At most this many; all when `None`.
    pub limit: Option<u32>,
}

impl Store {
    /// The findings `q` selects, the most recently seen first (then by id).
    ///
    /// A status outside [`FINDING_STATUSES`] is [`StoreError::Invalid`].
    pub fn findings(&self, q: &FindingQuery) -> Result<Vec<Finding>, StoreError> {
        let mut sql = String::from(SELECT_FINDINGS);
        let mut args = Vec::new();
        if let Some(rule) = &q.rule {
            sql.push_str(" AND f.rule = ?");
            args.push(SqlValue::Text(rule.clone()));
        }
        if let Some(principal) = &q.principal {
            sql.push_str(" AND f.principal = ?");
            args.push(SqlValue::Text(principal.clone()));
        }
        match q.status.as_deref() {
            None => {}
            Some("open") => sql.push_str(" AND r.seq IS NULL"),
            Some(word) => {
                let verdict = word
                    .parse::<ReviewVerdict>()
                    .map_err(|_| StoreError::Invalid {
                        message: format!(
                            "finding status {word:?} is not one of {}",
                            FINDING_STATUSES.join(", ")
                        ),
                    })?;
                sql.push_str(" AND r.verdict = ?");
                args.push(SqlValue::Text(verdict.as_str().to_owned()));
            }
        }
        // A negative limit is no limit to SQLite.
        sql.push_str(" ORDER BY f.last_seen_us DESC, f.id LIMIT ?");
        args.push(SqlValue::Integer(q.limit.map_or(-1, i64::from)));

        let conn = self.connection();
        self.select_findings(&conn, &sql, args)
    }

    /// The facts readiness reads of every finding of `rule` (of every rule when `None`),
    /// in no order: one pass over the findings (a rule's are a range of the table), each
    /// status from the latest reviews, read once; nothing sorted.
    pub fn finding_facts(&self, rule: Option<&str>) -> Result<Vec<FindingFacts>, StoreError> {
        // Two plain reads, not a join: joined to the reviews, SQLite walked the findings
        // through their id index and looked each row up again (20x slower on 80k findings).
        const LATEST: &str = "SELECT r.finding_id, r.verdict FROM reviews r
             WHERE r.seq = (SELECT max(seq) FROM reviews WHERE finding_id = r.finding_id)";
        const FACTS: &str =
            "SELECT rule, principal, decisive, first_seen_us, last_seen_us, id FROM findings";
        let conn = self.connection();
        let err = |cause| self.sqlite_error(cause);
        let mut verdicts: HashMap<String, String> = HashMap::new();
        {
            let mut stmt = conn.prepare_cached(LATEST).map_err(err)?;
            let rows = stmt
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
                .map_err(err)?;
            for row in rows {
                let (id, verdict) = row.map_err(err)?;
                verdicts.insert(id, verdict);
            }
        }
        let sql = match rule {
            Some(_) => format!("{FACTS} WHERE rule = ?1"),
            None => FACTS.to_owned(),
        };
        let mut stmt = conn.prepare_cached(&sql).map_err(err)?;
        let mut rows = match rule {
            Some(rule) => stmt.query([rule]),
            None => stmt.query([]),
        }
        .map_err(err)?;
        let mut names = Names::default();
        let mut facts = Vec::new();
        while let Some(row) = rows.next().map_err(err)? {
            let text = |i| -> Result<&str, StoreError> {
                row.get_ref(i)
                    .and_then(|v| v.as_str().map_err(Into::into))
                    .map_err(err)
            };
            let rule = names.get(text(0)?);
            let principal = names.get(text(1)?);
            let corrupt = |detail: String| self.corrupt(format!("a finding of {rule}: {detail}"));
            let int = |i| -> Result<i64, StoreError> { row.get(i).map_err(err) };
            let time = |us: i64| {
                Timestamp::from_microsecond(us).map_err(|e| corrupt(format!("{us}: {e}")))
            };
            let decisive = int(2)?;
            let verdict = if verdicts.is_empty() {
                None
            } else {
                verdicts.get(text(5)?).map(String::as_str)
            };
            facts.push(FindingFacts {
                decisive: u64::try_from(decisive)
                    .map_err(|_| corrupt(format!("decisive {decisive}")))?,
                first_seen: time(int(3)?)?,
                last_seen: time(int(4)?)?,
                status: status_word(verdict),
                rule,
                principal,
            });
        }
        Ok(facts)
    }

    /// The finding `id`, if there is one.
    pub fn finding(&self, id: &str) -> Result<Option<Finding>, StoreError> {
        let conn = self.connection();
        self.finding_in(&conn, id)
    }

    /// Appends `review` to the finding `id` and returns the finding as it now is.
    ///
    /// Reviews are never updated or deleted: a later review supersedes an earlier one as
    /// the finding's status, and [`Store::reviews`] keeps both. The review is on disk
    /// (`synchronous = FULL`) when this returns.
    ///
    /// An unknown finding id, or a `by` or `note` that is empty (or only white space), is
    /// [`StoreError::Invalid`]; a read-only store refuses with [`StoreError::ReadOnly`].
    pub fn review(&self, id: &str, review: &Review) -> Result<Finding, StoreError> {
        for (field, text) in [("by", &review.by), ("note", &review.note)] {
            if text.trim().is_empty() {
                return Err(StoreError::Invalid {
                    message: format!("cannot review finding {id}: the {field} is empty"),
                });
            }
        }
        let mut conn = self.writable_connection()?;
        let err = |cause| self.sqlite_error(cause);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        let inserted = tx
            .execute(
                "INSERT INTO reviews (finding_id, verdict, \"by\", at, at_us, note)
                 SELECT id, ?2, ?3, ?4, ?5, ?6 FROM findings WHERE id = ?1",
                params![
                    id,
                    review.verdict.as_str(),
                    review.by,
                    review.at.to_string(),
                    review.at.as_microsecond(),
                    review.note,
                ],
            )
            .map_err(err)?;
        if inserted == 0 {
            return Err(StoreError::Invalid {
                message: format!("cannot review finding {id:?}: there is no such finding"),
            });
        }
        let finding = self
            .finding_in(&tx, id)?
            .ok_or_else(|| self.corrupt(format!("finding {id} vanished while reviewed")))?;
        tx.commit().map_err(err)?;
        Ok(finding)
    }

    /// Every review of the finding `id`, oldest first; none for an unknown id.
    pub fn reviews(&self, id: &str) -> Result<Vec<Review>, StoreError> {
        let conn = self.connection();
        let err = |cause| self.sqlite_error(cause);
        let mut stmt = conn
            .prepare_cached(
                "SELECT verdict, \"by\", at, note FROM reviews WHERE finding_id = ?1 ORDER BY seq",
            )
            .map_err(err)?;
        let rows = stmt
            .query_map([id], |row| {
                Ok(ReviewRow {
                    verdict: row.get(0)?,
                    by: row.get(1)?,
                    at: row.get(2)?,
                    note: row.get(3)?,
                })
            })
            .map_err(err)?;
        let mut reviews = Vec::new();
        for row in rows {
            reviews.push(self.review_from(id, row.map_err(err)?)?);
        }
        Ok(reviews)
    }

    fn finding_in(&self, conn: &Connection, id: &str) -> Result<Option<Finding>, StoreError> {
        let sql = format!("{SELECT_FINDINGS} AND f.id = ?");
        let found = self.select_findings(conn, &sql, vec![SqlValue::Text(id.to_owned())])?;
        Ok(found.into_iter().next())
    }

    fn select_findings(
        &self,
        conn: &Connection,
        sql: &str,
        args: Vec<SqlValue>,
    ) -> Result<Vec<Finding>, StoreError> {
        let err = |cause| self.sqlite_error(cause);
        let mut stmt = conn.prepare_cached(sql).map_err(err)?;
        let rows = stmt
            .query_map(params_from_iter(args), FindingRow::read)
            .map_err(err)?;
        let mut findings = Vec::new();
        for row in rows {
            findings.push(self.finding_from(row.map_err(err)?)?);
        }
        Ok(findings)
    }

    fn finding_from(&self, row: FindingRow) -> Result<Finding, StoreError> {
        let id = row.id;
        let corrupt = |detail: String| self.corrupt(format!("finding {id}: {detail}"));
        let count =
            |name: &str, n: i64| u64::try_from(n).map_err(|_| corrupt(format!("{name} is {n}")));
        let time = |name: &str, us: i64| {
            Timestamp::from_microsecond(us).map_err(|e| corrupt(format!("{name} {us}: {e}")))
        };
        let review = match row.review {
            Some(review) => Some(self.review_from(&id, review)?),
            None => None,
        };
        Ok(Finding {
            count: count("count", row.count)?,
            decisive: count("decisive", row.decisive)?,
            first_seen: time("first_seen_us", row.first_seen_us)?,
            last_seen: time("last_seen_us", row.last_seen_us)?,
            status: review
                .as_ref()
                .map_or("open", |r| r.verdict.as_str())
                .to_owned(),
            review,
            rule: row.rule,
            mode: row.mode,
            would: row.would,
            principal: row.principal,
            action: row.action,
            resource: row.resource,
            id,
        })
    }

    fn review_from(&self, id: &str, row: ReviewRow) -> Result<Review, StoreError> {
        let corrupt = |detail: String| self.corrupt(format!("a review of finding {id}: {detail}"));
        Ok(Review {
            verdict: row.verdict.parse().map_err(|e| corrupt(format!("{e}")))?,
            at: row
                .at
                .parse()
                .map_err(|e| corrupt(format!("at {:?}: {e}", row.at)))?,
            by: row.by,
            note: row.note,
        })
    }
}

/// A `findings` row joined with its latest review, before its values are checked.
struct FindingRow {
    id: String,
    rule: String,
    mode: String,
    would: String,
    principal: String,
    action: String,
    resource: String,
    count: i64,
    decisive: i64,
    first_seen_us: i64,
    last_seen_us: i64,
    review: Option<ReviewRow>,
}

/// A `reviews` row as SQLite gives it.
struct ReviewRow {
    verdict: String,
    by: String,
    at: String,
    note: String,
}

impl FindingRow {
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<FindingRow> {
        let verdict: Option<String> = row.get(11)?;
        let review = match verdict {
            Some(verdict) => Some(ReviewRow {
                verdict,
                by: row.get(12)?,
                at: row.get(13)?,
                note: row.get(14)?,
            }),
            None => None,
        };
        Ok(FindingRow {
            id: row.get(0)?,
            rule: row.get(1)?,
            mode: row.get(2)?,
            would: row.get(3)?,
            principal: row.get(4)?,
            action: row.get(5)?,
            resource: row.get(6)?,
            count: row.get(7)?,
            decisive: row.get(8)?,
            first_seen_us: row.get(9)?,
            last_seen_us: row.get(10)?,
            review,
        })
    }
}

/// One audit or warn firing of a rule in a decision.
#[derive(Debug)]
pub(crate) struct Firing {
    rule: String,
    mode: Mode,
    would: Effect,
}

impl Firing {
    /// The audit and warn firings of a decision that was not invalid.
    ///
    /// A warn rule's `would` is the engine's, from the record's evidence; a rule in
    /// `warnings` that the evidence does not name (a record not built from a decision)
    /// would `deny`, the effect of a forbid that names none.
    pub(crate) fn of(record: &DecisionRecord) -> Vec<Firing> {
        let audited = record.audit.iter().map(|entry| Firing {
            rule: entry.rule.to_string(),
            mode: Mode::Audit,
            would: entry.would,
        });
        let warned = &record.evidence.warned;
        let warnings = record.warnings.iter().map(|rule| Firing {
            rule: rule.to_string(),
            mode: Mode::Warn,
            would: warned
                .iter()
                .find(|(r, _)| r == rule)
                .map_or(Effect::Deny, |(_, would)| *would),
        });
        audited.chain(warnings).collect()
    }
}

/// The group a firing counts in: (rule, principal, action, resource), borrowed from the
/// batch.
type Key<'a> = (&'a str, &'a str, &'a str, &'a str);

/// A batch's firings of one finding.
struct Tally<'a> {
    mode: Mode,
    would: &'a str,
    count: i64,
    decisive: i64,
    first_us: i64,
    last_us: i64,
}

/// Adds the firings of `rows`, decisions just inserted in `tx`, to their findings: grouped
/// in memory first, then one upsert per finding.
pub(crate) fn tally(tx: &Transaction<'_>, rows: &[&Row]) -> rusqlite::Result<()> {
    // Keys a client chose, hashed by a per-process seed (foldhash: SipHash was a tenth
    // of this function).
    let mut tallies: HashMap<Key<'_>, Tally<'_>, foldhash::fast::RandomState> = HashMap::default();
    for row in rows {
        if row.firings.is_empty() {
            continue;
        }
        // A decision that is not invalid names all three; should one be missing, its
        // firings still count, under an empty name.
        let principal = row.principal.as_deref().unwrap_or("");
        let action = row.action.as_deref().unwrap_or("");
        let resource = row.resource.as_deref().unwrap_or("");
        let decisive = i64::from(row.decision == Logged::Allow);
        for firing in &row.firings {
            let key = (firing.rule.as_str(), principal, action, resource);
            match tallies.entry(key) {
                Entry::Vacant(entry) => {
                    entry.insert(Tally {
                        mode: firing.mode,
                        would: firing.would.as_str(),
                        count: 1,
                        decisive,
                        first_us: row.time_us,
                        last_us: row.time_us,
                    });
                }
                Entry::Occupied(mut entry) => {
                    let t = entry.get_mut();
                    t.count += 1;
                    t.decisive += decisive;
                    t.first_us = t.first_us.min(row.time_us);
                    if row.time_us >= t.last_us {
                        t.last_us = row.time_us;
                        t.mode = firing.mode;
                        t.would = firing.would.as_str();
                    }
                }
            }
        }
    }
    if tallies.is_empty() {
        return Ok(());
    }
    let mut upsert = tx.prepare_cached(UPSERT_FINDING)?;
    for ((rule, principal, action, resource), t) in tallies {
        upsert.execute(params![
            finding_id(rule, principal, action, resource),
            rule,
            t.mode.as_str(),
            t.would,
            principal,
            action,
            resource,
            t.count,
            t.decisive,
            t.first_us,
            t.last_us,
        ])?;
    }
    Ok(())
}

/// `f` and the first 16 hex digits of SHA-256 over `rule \0 principal \0 action \0
/// resource`: stable across stores, and the NULs keep the values from running together.
fn finding_id(rule: &str, principal: &str, action: &str, resource: &str) -> String {
    let mut hash = Sha256::new();
    for (i, part) in [rule, principal, action, resource].into_iter().enumerate() {
        if i > 0 {
            hash.update([0]);
        }
        hash.update(part.as_bytes());
    }
    let digest = hash.finalize();
    let mut id = String::with_capacity(17);
    id.push('f');
    id.push_str(&hex::encode(digest.get(..8).unwrap_or_default()));
    id
}

#[cfg(test)]
mod tests {
    use super::finding_id;

    #[test]
    fn a_finding_id_is_f_and_16_hex_digits_of_the_separated_values() {
        // printf 'r\0a\0b\0c' | sha256sum | cut -c1-16
        assert_eq!(finding_id("r", "a", "b", "c"), "f89e621c301c43e17");
        assert_ne!(
            finding_id("r", "ab", "", "c"),
            finding_id("r", "a", "b", "c")
        );
    }
}

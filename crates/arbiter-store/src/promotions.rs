//! Every promote and demote of a rule or default-deny scope (DESIGN §4), forced or not,
//! with who, why and the readiness verdict it went against: on disk before
//! [`Store::record_promotion`] returns, never updated or deleted.

use arbiter_core::rule::Mode;
use jiff::Timestamp;
use rusqlite::{Connection, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::store::Store;

/// The columns a [`Promotion`] is read from, in [`PromotionRow::read`]'s order.
const COLUMNS: &str = "seq, rule, from_mode, to_mode, forced, reason, \"by\", at, verdict";

/// One change of a rule's mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promotion {
    /// Its place in commit order, from 1; 0 before it is stored.
    pub seq: i64,
    /// The rule, or a default-deny scope (`default-deny:<Type>`).
    pub rule: String,
    /// The mode before: `audit`, `warn` or `enforce`.
    pub from_mode: String,
    /// The mode after: `audit`, `warn` or `enforce`.
    pub to_mode: String,
    /// Whether it was made against a readiness verdict other than `ready`.
    pub forced: bool,
    /// Why; required when forced.
    pub reason: Option<String>,
    /// Who.
    pub by: String,
    /// When.
    pub at: Timestamp,
    /// The rule's readiness verdict at the time (`ready`, `needs_review`, …).
    pub verdict: String,
}

impl Store {
    /// Commits `p` and returns it as stored, with its `seq` (the `seq` given is ignored).
    /// It is on disk (`synchronous = FULL`) when this returns.
    ///
    /// [`StoreError::Invalid`] when the rule, `by` or verdict is empty, a mode is not
    /// `audit`, `warn` or `enforce`, or a forced promotion has no reason (or only white
    /// space); [`StoreError::ReadOnly`] on a read-only store.
    pub fn record_promotion(&self, p: &Promotion) -> Result<Promotion, StoreError> {
        check(p).map_err(|refused| StoreError::Invalid {
            message: refused.to_string(),
        })?;
        let mut conn = self.writable_connection()?;
        let err = |cause| self.sqlite_error(cause);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        tx.execute(
            "INSERT INTO promotions
                 (rule, from_mode, to_mode, forced, reason, \"by\", at, at_us, verdict)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                p.rule,
                p.from_mode,
                p.to_mode,
                p.forced,
                p.reason,
                p.by,
                p.at.to_string(),
                p.at.as_microsecond(),
                p.verdict,
            ],
        )
        .map_err(err)?;
        let stored = self.promotion_at(&tx, tx.last_insert_rowid())?;
        tx.commit().map_err(err)?;
        Ok(stored)
    }

    /// Every promotion and demotion of `rule`, or of every rule when `None`, oldest first.
    pub fn promotions(&self, rule: Option<&str>) -> Result<Vec<Promotion>, StoreError> {
        let conn = self.connection();
        let err = |cause| self.sqlite_error(cause);
        let mut stmt = conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM promotions WHERE ?1 IS NULL OR rule = ?1 ORDER BY seq"
            ))
            .map_err(err)?;
        let rows = stmt.query_map([rule], PromotionRow::read).map_err(err)?;
        let mut promotions = Vec::new();
        for row in rows {
            promotions.push(self.promotion_from(row.map_err(err)?)?);
        }
        Ok(promotions)
    }

    fn promotion_at(&self, conn: &Connection, seq: i64) -> Result<Promotion, StoreError> {
        let row = conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM promotions WHERE seq = ?1"),
                [seq],
                PromotionRow::read,
            )
            .map_err(|cause| self.sqlite_error(cause))?;
        self.promotion_from(row)
    }

    fn promotion_from(&self, row: PromotionRow) -> Result<Promotion, StoreError> {
        let at = row
            .at
            .parse()
            .map_err(|e| self.corrupt(format!("promotion {}: at {:?}: {e}", row.seq, row.at)))?;
        Ok(Promotion {
            seq: row.seq,
            rule: row.rule,
            from_mode: row.from_mode,
            to_mode: row.to_mode,
            forced: row.forced,
            reason: row.reason,
            by: row.by,
            at,
            verdict: row.verdict,
        })
    }
}

/// A `promotions` row as SQLite gives it, before its time is parsed.
struct PromotionRow {
    seq: i64,
    rule: String,
    from_mode: String,
    to_mode: String,
    forced: bool,
    reason: Option<String>,
    by: String,
    at: String,
    verdict: String,
}

impl PromotionRow {
    fn read(row: &rusqlite::Row<'_>) -> rusqlite::Result<PromotionRow> {
        Ok(PromotionRow {
            seq: row.get(0)?,
            rule: row.get(1)?,
            from_mode: row.get(2)?,
            to_mode: row.get(3)?,
            forced: row.get(4)?,
            reason: row.get(5)?,
            by: row.get(6)?,
            at: row.get(7)?,
            verdict: row.get(8)?,
        })
    }
}

/// A promotion that breaks the rules [`Store::record_promotion`] documents; its message
/// is the one the caller gets.
#[derive(Debug, thiserror::Error)]
#[error("cannot record the promotion of {rule:?}: {why}")]
struct Refused {
    rule: String,
    why: Why,
}

#[derive(Debug, thiserror::Error)]
enum Why {
    #[error("the {0} is empty")]
    Empty(&'static str),
    #[error("{field} {mode:?} is not one of {}", Mode::WORDS.join(", "))]
    NotAMode { field: &'static str, mode: String },
    #[error("a forced promotion needs a reason")]
    NoReason,
}

fn check(p: &Promotion) -> Result<(), Refused> {
    let refuse = |why: Why| {
        Err(Refused {
            rule: p.rule.clone(),
            why,
        })
    };
    for (field, text) in [("rule", &p.rule), ("by", &p.by), ("verdict", &p.verdict)] {
        if text.trim().is_empty() {
            return refuse(Why::Empty(field));
        }
    }
    for (field, mode) in [("from_mode", &p.from_mode), ("to_mode", &p.to_mode)] {
        if Mode::from_word(mode).is_none() {
            return refuse(Why::NotAMode {
                field,
                mode: mode.clone(),
            });
        }
    }
    if p.forced && p.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
        return refuse(Why::NoReason);
    }
    Ok(())
}

//! Decisions per UTC hour and outcome: what the dashboard's charts draw, kept by the log
//! writer in each batch's transaction so that a chart of a week never reads the week's
//! decisions.

use std::collections::HashMap;

use jiff::Timestamp;
use rusqlite::{Transaction, params};
use serde::Serialize;

use crate::decisions::{Logged, Row};
use crate::error::StoreError;
use crate::store::Store;

/// Microseconds in an hour.
const HOUR_US: i64 = 3_600_000_000;

/// Adds a batch's count to an hour's row.
const UPSERT_OUTCOME_HOUR: &str = "
    INSERT INTO outcome_hours (hour, decision, count) VALUES (?1, ?2, ?3)
    ON CONFLICT (hour, decision) DO UPDATE SET count = count + excluded.count";

/// How many decisions of one outcome one UTC hour holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OutcomeHour {
    /// The hour's start.
    pub hour: Timestamp,
    /// `allow`, `deny` or `invalid`.
    pub decision: Logged,
    /// How many.
    pub count: u64,
}

/// Adds the outcomes of `rows`, decisions just inserted in `tx`: one upsert per (hour,
/// outcome) the batch holds, seldom more than three.
pub(crate) fn tally(tx: &Transaction<'_>, rows: &[&Row]) -> rusqlite::Result<()> {
    let mut hours: HashMap<(i64, Logged), i64> = HashMap::new();
    for row in rows {
        *hours
            .entry((row.time_us.div_euclid(HOUR_US), row.decision))
            .or_default() += 1;
    }
    if hours.is_empty() {
        return Ok(());
    }
    let mut upsert = tx.prepare_cached(UPSERT_OUTCOME_HOUR)?;
    for ((hour, decision), count) in hours {
        upsert.execute(params![hour, decision.as_str(), count])?;
    }
    Ok(())
}

impl Store {
    /// Decisions per hour and outcome from the hour holding `since` on, oldest first;
    /// hours without decisions have no entry.
    pub fn outcome_hours(&self, since: Timestamp) -> Result<Vec<OutcomeHour>, StoreError> {
        let conn = self.connection();
        let err = |cause| self.sqlite_error(cause);
        let mut stmt = conn
            .prepare_cached(
                "SELECT hour, decision, count FROM outcome_hours WHERE hour >= ?1
                 ORDER BY hour, decision",
            )
            .map_err(err)?;
        let first = since.as_microsecond().div_euclid(HOUR_US);
        let rows = stmt
            .query_map([first], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })
            .map_err(err)?;
        let mut hours = Vec::new();
        for row in rows {
            let (hour, decision, count) = row.map_err(err)?;
            let corrupt = |detail: String| self.corrupt(format!("outcome_hours {hour}: {detail}"));
            let decision = match decision.as_str() {
                "allow" => Logged::Allow,
                "deny" => Logged::Deny,
                "invalid" => Logged::Invalid,
                other => return Err(corrupt(format!("unknown outcome {other:?}"))),
            };
            let hour = hour
                .checked_mul(HOUR_US)
                .and_then(|us| Timestamp::from_microsecond(us).ok())
                .ok_or_else(|| corrupt("not a time".to_owned()))?;
            let count = u64::try_from(count).map_err(|_| corrupt(format!("count {count}")))?;
            hours.push(OutcomeHour {
                hour,
                decision,
                count,
            });
        }
        Ok(hours)
    }
}

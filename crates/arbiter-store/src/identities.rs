//! Who the log has seen, and what one identity did: the principals in the log a page at a
//! time, and one principal's activity (its outcomes, the credentials it presented, the
//! actions it did for the first time after a baseline freeze). Both are read from what
//! the log writer keeps beside the log (`log_principals` and [`crate::summaries`]),
//! never from the decisions themselves.

use std::collections::BTreeMap;

use jiff::Timestamp;
use rusqlite::OptionalExtension;
use serde::Serialize;

use crate::decisions::DecisionRecord;
use crate::error::StoreError;
use crate::segment;
use crate::store::Store;

/// The most credentials [`Store::activity`] keeps for one identity: the first it presented,
/// in the order the log took its decisions. Past it, the decisions that presented another
/// are counted in [`Activity::credentials_left_out`] (a principal minting tokens without
/// end cannot grow its summary without end).
pub const MAX_CREDENTIALS: usize = 200;

/// A principal the log has seen, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Seen {
    /// The principal's Cedar uid.
    pub principal: String,
    /// Its first decision.
    pub first_seen: Timestamp,
    /// Its latest decision.
    pub last_seen: Timestamp,
}

/// What one identity did, from its decisions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Activity {
    /// Its decisions, by outcome (`allow`, `deny`, `invalid`).
    pub outcomes: BTreeMap<String, u64>,
    /// The credentials it presented, the most recently used first.
    pub credentials: Vec<CredentialSeen>,
    /// Decisions that presented a credential not listed, once [`MAX_CREDENTIALS`] were.
    pub credentials_left_out: u64,
    /// The actions flagged `novel` (done for the first time after a freeze), by action.
    pub novel: Vec<Novel>,
}

/// A credential an identity presented.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CredentialSeen {
    /// The token id.
    pub jti: String,
    /// Who issued it.
    pub issuer: Option<String>,
    /// When it expires.
    pub expires_at: Option<String>,
    /// The first decision it was presented in.
    pub first_seen: Timestamp,
    /// The latest.
    pub last_seen: Timestamp,
    /// How many decisions.
    pub decisions: u64,
}

/// An action an identity did for the first time after a baseline freeze.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Novel {
    /// The action's Cedar uid.
    pub action: String,
    /// When, and the decision.
    pub at: Timestamp,
    /// The decision that flagged it.
    pub decision_id: String,
}

impl Store {
    /// Up to `limit` principals after `after` (all when `None`), in order, with their
    /// first and latest decision: read from `log_principals`, which the log writer keeps.
    pub fn principals(&self, after: Option<&str>, limit: u32) -> Result<Vec<Seen>, StoreError> {
        let conn = self.connection();
        let err = |cause| self.sqlite_error(cause);
        let mut stmt = conn
            .prepare_cached(
                "SELECT principal, first_us, last_us FROM log_principals
                 WHERE principal > ?1 ORDER BY principal LIMIT ?2",
            )
            .map_err(err)?;
        let rows = stmt
            .query_map(rusqlite::params![after.unwrap_or(""), limit], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })
            .map_err(err)?;
        let mut seen = Vec::new();
        for row in rows {
            let (principal, first_us, last_us) = row.map_err(err)?;
            let time = |us: i64| {
                Timestamp::from_microsecond(us)
                    .map_err(|e| self.corrupt(format!("a decision of {principal}: {e}")))
            };
            seen.push(Seen {
                first_seen: time(first_us)?,
                last_seen: time(last_us)?,
                principal,
            });
        }
        Ok(seen)
    }

    /// What `principal` did: its outcomes, its credentials and its novel actions, read
    /// from the summaries the log writer keeps ([`crate::summaries`]): a few rows, however
    /// many decisions.
    pub fn activity(&self, principal: &str) -> Result<Activity, StoreError> {
        let conn = self.connection();
        let err = |cause| self.sqlite_error(cause);
        let mut activity = Activity::default();
        let totals = conn
            .prepare_cached(
                "SELECT allowed, denied, invalid, credentials_left_out FROM log_principals
                 WHERE principal = ?1",
            )
            .map_err(err)?
            .query_row([principal], |row| {
                Ok([row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?])
            })
            .optional()
            .map_err(err)?;
        let Some([allowed, denied, invalid, left_out]) = totals else {
            return Ok(activity);
        };
        let corrupt =
            |detail: String| self.corrupt(format!("the summary of {principal}: {detail}"));
        let count =
            |name: &str, n: i64| u64::try_from(n).map_err(|_| corrupt(format!("{name} is {n}")));
        let time = |us: i64| {
            Timestamp::from_microsecond(us).map_err(|e| corrupt(format!("time {us}: {e}")))
        };
        for (word, n) in [("allow", allowed), ("deny", denied), ("invalid", invalid)] {
            let n = count(word, n)?;
            if n > 0 {
                activity.outcomes.insert(word.to_owned(), n);
            }
        }
        activity.credentials_left_out = count("credentials_left_out", left_out)?;

        let mut stmt = conn
            .prepare_cached(
                "SELECT jti, issuer, expires_at, first_us, last_us, decisions
                 FROM log_credentials WHERE principal = ?1 ORDER BY last_us DESC, jti",
            )
            .map_err(err)?;
        let rows = stmt
            .query_map([principal], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, Option<String>>(1)?,
                    row.get::<_, Option<String>>(2)?,
                    row.get::<_, i64>(3)?,
                    row.get::<_, i64>(4)?,
                    row.get::<_, i64>(5)?,
                ))
            })
            .map_err(err)?;
        for row in rows {
            let (jti, issuer, expires_at, first_us, last_us, decisions) = row.map_err(err)?;
            activity.credentials.push(CredentialSeen {
                jti,
                issuer,
                expires_at,
                first_seen: time(first_us)?,
                last_seen: time(last_us)?,
                decisions: count("decisions", decisions)?,
            });
        }

        let mut stmt = conn
            .prepare_cached(
                "SELECT action, at_us, decision_id FROM log_novel WHERE principal = ?1
                 ORDER BY decision_id",
            )
            .map_err(err)?;
        let rows = stmt
            .query_map([principal], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, String>(2)?,
                ))
            })
            .map_err(err)?;
        for row in rows {
            let (action, at_us, decision_id) = row.map_err(err)?;
            activity.novel.push(Novel {
                action,
                at: time(at_us)?,
                decision_id,
            });
        }
        Ok(activity)
    }

    /// The decision `id`, if the log holds it.
    pub fn decision(&self, id: &str) -> Result<Option<DecisionRecord>, StoreError> {
        let conn = self.connection();
        let Some(meta) = segment::holding(&conn, id).map_err(|cause| self.sqlite_error(cause))?
        else {
            return Ok(None);
        };
        let decoded = segment::read_with(&conn, &meta, None, &|head| head.id == id, true)
            .map_err(|e| self.read_error(e))?;
        let Some((_, json)) = decoded.entries().find(|(head, _)| head.id == id) else {
            return Err(self.corrupt(format!(
                "decision {id} is not in log segment {}, where log_ids puts it",
                meta.seg
            )));
        };
        serde_json::from_str(json)
            .map(Some)
            .map_err(|e| self.corrupt(format!("decision {id}: {e}")))
    }
}

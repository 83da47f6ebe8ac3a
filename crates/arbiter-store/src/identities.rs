//! Who the log has seen, and what one identity did: the principals in the log a page at a
//! time, and one principal's activity (its outcomes, the credentials it presented, the
//! actions it did for the first time after a baseline freeze). Read from the decisions
//! table's principal index, so a page costs a few index seeks per principal and one
//! identity's activity costs its own decisions, never the whole log.

use std::collections::BTreeMap;

use jiff::Timestamp;
use rusqlite::OptionalExtension;
use serde::Serialize;

use crate::decisions::DecisionRecord;
use crate::error::StoreError;
use crate::store::Store;

/// The most credentials [`Store::activity`] keeps for one identity; past it, the
/// decisions that presented another are counted in [`Activity::credentials_left_out`].
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
    /// first and latest decision. A loose scan of the principal index: a few seeks per
    /// principal, whatever the size of the log.
    pub fn principals(&self, after: Option<&str>, limit: u32) -> Result<Vec<Seen>, StoreError> {
        let conn = self.connection();
        let err = |cause| self.sqlite_error(cause);
        let mut names = conn
            .prepare_cached(
                "WITH RECURSIVE p(principal) AS (
                     SELECT (SELECT min(principal) FROM decisions WHERE principal > ?1)
                     UNION ALL
                     SELECT (SELECT min(principal) FROM decisions WHERE principal > p.principal)
                     FROM p WHERE p.principal IS NOT NULL
                 )
                 SELECT principal FROM p WHERE principal IS NOT NULL LIMIT ?2",
            )
            .map_err(err)?;
        let found: Vec<String> = names
            .query_map(rusqlite::params![after.unwrap_or(""), limit], |row| {
                row.get(0)
            })
            .map_err(err)?
            .collect::<Result<_, _>>()
            .map_err(err)?;
        let mut first = conn
            .prepare_cached(
                "SELECT time_us FROM decisions WHERE principal = ?1
                 ORDER BY decision_id LIMIT 1",
            )
            .map_err(err)?;
        let mut last = conn
            .prepare_cached(
                "SELECT time_us FROM decisions WHERE principal = ?1
                 ORDER BY decision_id DESC LIMIT 1",
            )
            .map_err(err)?;
        let mut seen = Vec::with_capacity(found.len());
        for principal in found {
            let time = |stmt: &mut rusqlite::CachedStatement<'_>| -> Result<Timestamp, StoreError> {
                let us: i64 = stmt
                    .query_row([&principal], |row| row.get(0))
                    .map_err(err)?;
                Timestamp::from_microsecond(us)
                    .map_err(|e| self.corrupt(format!("a decision of {principal}: {e}")))
            };
            let first_seen = time(&mut first)?;
            let last_seen = time(&mut last)?;
            seen.push(Seen {
                principal,
                first_seen,
                last_seen,
            });
        }
        Ok(seen)
    }

    /// What `principal` did: its outcomes, its credentials and its novel actions, in one
    /// pass over its decisions (fields taken out of each record by SQLite, no record
    /// parsed).
    pub fn activity(&self, principal: &str) -> Result<Activity, StoreError> {
        let conn = self.connection();
        let err = |cause| self.sqlite_error(cause);
        let mut stmt = conn
            .prepare_cached(
                "SELECT decision_id, time_us, decision, action,
                        json_extract(record, '$.novel'),
                        json_extract(record, '$.credential.jti'),
                        json_extract(record, '$.credential.issuer'),
                        json_extract(record, '$.credential.expires_at'),
                        json_extract(record, '$.credential_id')
                 FROM decisions WHERE principal = ?1 ORDER BY decision_id",
            )
            .map_err(err)?;
        let mut rows = stmt.query([principal]).map_err(err)?;
        let mut activity = Activity::default();
        let mut credentials: BTreeMap<String, CredentialSeen> = BTreeMap::new();
        while let Some(row) = rows.next().map_err(err)? {
            let decision_id: String = row.get(0).map_err(err)?;
            let time_us: i64 = row.get(1).map_err(err)?;
            let time = Timestamp::from_microsecond(time_us)
                .map_err(|e| self.corrupt(format!("decision {decision_id}: {e}")))?;
            let outcome: String = row.get(2).map_err(err)?;
            *activity.outcomes.entry(outcome).or_default() += 1;
            let novel: Option<i64> = row.get(4).map_err(err)?;
            if novel == Some(1) {
                let action: Option<String> = row.get(3).map_err(err)?;
                if let Some(action) = action
                    && !activity.novel.iter().any(|n| n.action == action)
                {
                    activity.novel.push(Novel {
                        action,
                        at: time,
                        decision_id: decision_id.clone(),
                    });
                }
            }
            let jti: Option<String> = row.get(5).map_err(err)?;
            let credential_id: Option<String> = row.get(8).map_err(err)?;
            let Some(jti) = jti.or(credential_id) else {
                continue;
            };
            if let Some(seen) = credentials.get_mut(&jti) {
                seen.last_seen = time;
                seen.decisions += 1;
            } else if credentials.len() < MAX_CREDENTIALS {
                credentials.insert(
                    jti.clone(),
                    CredentialSeen {
                        jti,
                        issuer: row.get(6).map_err(err)?,
                        expires_at: row.get(7).map_err(err)?,
                        first_seen: time,
                        last_seen: time,
                        decisions: 1,
                    },
                );
            } else {
                activity.credentials_left_out += 1;
            }
        }
        let mut credentials: Vec<CredentialSeen> = credentials.into_values().collect();
        credentials.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then(a.jti.cmp(&b.jti)));
        activity.credentials = credentials;
        Ok(activity)
    }

    /// The decision `id`, if the log holds it.
    pub fn decision(&self, id: &str) -> Result<Option<DecisionRecord>, StoreError> {
        let conn = self.connection();
        let err = |cause| self.sqlite_error(cause);
        let json: Option<String> = conn
            .prepare_cached("SELECT record FROM decisions WHERE decision_id = ?1")
            .map_err(err)?
            .query_row([id], |row| row.get(0))
            .optional()
            .map_err(err)?;
        json.map(|json| {
            serde_json::from_str(&json).map_err(|e| self.corrupt(format!("decision {id}: {e}")))
        })
        .transpose()
    }
}

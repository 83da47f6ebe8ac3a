//! Who the log has seen, and what one identity did: the principals in the log a page at a
//! time, and one principal's activity (its outcomes, the credentials it presented, the
//! actions it did for the first time after a baseline freeze). The principals come from
//! `log_principals`, kept by the log writer; one identity's activity reads only the log
//! segments that hold its decisions, never the whole log.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::decisions::{DecisionRecord, Logged};
use crate::error::StoreError;
use crate::segment::{self, Filter};
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

    /// What `principal` did: its outcomes, its credentials and its novel actions, in one
    /// pass over its decisions in decision-id order (each record's few fields read by a
    /// parser that skips the rest).
    pub fn activity(&self, principal: &str) -> Result<Activity, StoreError> {
        let filter = Filter {
            principal: Some(principal),
            ..Filter::default()
        };
        let mut decisions: Vec<(String, i64, Logged, Option<String>, ActivityFields)> = Vec::new();
        let mut bad = None;
        {
            let conn = self.connection();
            self.each_in(&conn, &filter, |head, record| {
                match serde_json::from_str::<ActivityFields>(record) {
                    Ok(fields) => {
                        decisions.push((
                            head.id.clone(),
                            head.time_us,
                            head.decision,
                            head.action.clone(),
                            fields,
                        ));
                        true
                    }
                    Err(e) => {
                        bad = Some(format!("decision {}: {e}", head.id));
                        false
                    }
                }
            })?;
        }
        if let Some(detail) = bad {
            return Err(self.corrupt(detail));
        }
        decisions.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut activity = Activity::default();
        let mut credentials: BTreeMap<String, CredentialSeen> = BTreeMap::new();
        for (decision_id, time_us, outcome, action, fields) in decisions {
            let time = Timestamp::from_microsecond(time_us)
                .map_err(|e| self.corrupt(format!("decision {decision_id}: {e}")))?;
            *activity
                .outcomes
                .entry(outcome.as_str().to_owned())
                .or_default() += 1;
            if fields.novel == Some(true)
                && let Some(action) = action
                && !activity.novel.iter().any(|n| n.action == action)
            {
                activity.novel.push(Novel {
                    action,
                    at: time,
                    decision_id: decision_id.clone(),
                });
            }
            let credential = fields.credential.unwrap_or_default();
            let Some(jti) = credential.jti.or(fields.credential_id) else {
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
                        issuer: credential.issuer,
                        expires_at: credential.expires_at,
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
        let Some(meta) = segment::holding(&conn, id).map_err(|cause| self.sqlite_error(cause))?
        else {
            return Ok(None);
        };
        let decoded = segment::read(&conn, &meta).map_err(|e| self.read_error(e))?;
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

/// What [`Store::activity`] reads of a record; the rest is skipped unparsed.
#[derive(Debug, Default, Deserialize)]
struct ActivityFields {
    #[serde(default)]
    novel: Option<bool>,
    #[serde(default)]
    credential: Option<CredentialFields>,
    #[serde(default)]
    credential_id: Option<String>,
}

/// What [`Store::activity`] reads of a record's credential.
#[derive(Debug, Default, Deserialize)]
struct CredentialFields {
    #[serde(default)]
    jti: Option<String>,
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    expires_at: Option<String>,
}

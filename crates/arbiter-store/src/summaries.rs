//! What each identity did, summed up by the log writer in the transaction that stores its
//! decisions, so that an identity's page reads a few rows however long the log is.
//!
//! A busy principal has decisions in every segment of the log: summing them up when a
//! page is asked for read the whole log (two seconds for a million decisions). Kept here
//! instead, beside `log_principals`:
//!
//! - `log_principals`' outcome columns: decisions by outcome, and how many presented a
//!   credential past the [`MAX_CREDENTIALS`] kept;
//! - `log_observed`: per principal and segment, what the principal did (see
//!   [`crate::baseline`]) as one small JSON text: per (action, resource), the decisions
//!   allowed and those let through by a default-deny scope in audit or warn, with the
//!   first and latest. A row per (principal, action, resource) made the writer update
//!   one of 190k rows for most decisions it wrote (a third of its time); a row per
//!   principal and segment is written once per principal in a batch, and a reader sums
//!   up at most one row per segment;
//! - `log_credentials`: per (principal, credential id), who issued it, when it expires,
//!   its first and latest decision and how many; the first [`MAX_CREDENTIALS`] of each
//!   principal, in the order the log took them;
//! - `log_novel`: per (principal, action), the first decision flagged `novel`.
//!
//! A batch adds one row change per distinct key it holds, not one per decision. A log
//! written before these tables is summed up once, when it is migrated
//! ([`summarize_log`]).

use std::collections::HashMap;
use std::collections::hash_map::Entry as HashEntry;

use arbiter_core::rule::Mode;
use rusqlite::{OptionalExtension, Transaction, params};
use serde::Deserialize;

use crate::decisions::{Logged, Presented, Row};
use crate::identities::MAX_CREDENTIALS;
use crate::segment::{self, Meta};

/// The maps a batch is grouped in: keys a client chose, hashed by a per-process seed.
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// What a summary reads of one decision.
pub(crate) struct Facts<'a> {
    pub(crate) id: &'a str,
    pub(crate) time_us: i64,
    pub(crate) principal: Option<&'a str>,
    pub(crate) action: Option<&'a str>,
    pub(crate) resource: Option<&'a str>,
    pub(crate) decision: Logged,
    pub(crate) rules: &'a [(String, Mode)],
    pub(crate) presented: Option<&'a Presented>,
    pub(crate) novel: bool,
}

impl<'a> Facts<'a> {
    pub(crate) fn of(row: &'a Row) -> Facts<'a> {
        Facts {
            id: &row.decision_id,
            time_us: row.time_us,
            principal: row.principal.as_deref(),
            action: row.action.as_deref(),
            resource: row.resource.as_deref(),
            decision: row.decision,
            rules: &row.rules,
            presented: row.presented.as_deref(),
            novel: row.novel,
        }
    }
}

/// Whether a decision counts as something its principal did (DESIGN §4's baseline), and
/// if so its principal, action and resource and whether a default-deny scope in audit or
/// warn is what let it through. The engine allows what only a non-enforced scope would
/// deny; a deny with nothing enforced and such a scope fired is counted too, as the same
/// thing.
pub(crate) fn counted<'a>(
    decision: Logged,
    principal: Option<&'a str>,
    action: Option<&'a str>,
    resource: Option<&'a str>,
    rules: &[(String, Mode)],
) -> Option<(&'a str, &'a str, &'a str, bool)> {
    let default_denied = segment::default_denied(rules);
    let counts = match decision {
        Logged::Allow => true,
        Logged::Deny => default_denied && !segment::enforced(rules),
        Logged::Invalid => false,
    };
    if !counts {
        return None;
    }
    Some((
        principal?,
        action?,
        resource?,
        decision != Logged::Allow || default_denied,
    ))
}

/// The counters of one (principal, action, resource), as `log_observed` keeps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) allowed: i64,
    pub(crate) default_denied: i64,
    pub(crate) first_us: i64,
    pub(crate) last_us: i64,
}

impl Counts {
    /// Adds `other`'s counts, saturating: counts come back from the database's text, and
    /// the writer thread must not stop on a sum past `i64::MAX`.
    pub(crate) fn add(&mut self, other: Counts) {
        self.allowed = self.allowed.saturating_add(other.allowed);
        self.default_denied = self.default_denied.saturating_add(other.default_denied);
        self.first_us = self.first_us.min(other.first_us);
        self.last_us = self.last_us.max(other.last_us);
    }
}

/// One entry of a `log_observed` row's text: action, resource, allowed, let through by a
/// default-deny scope, first and latest (unix microseconds).
pub(crate) type Entry<'a> = (&'a str, &'a str, i64, i64, i64, i64);

/// A `log_observed` row's text, read: `(action, resource, counts)` for each entry. A
/// negative count is not one the writer wrote: the text is refused.
pub(crate) fn read_observed(text: &str) -> Result<Vec<(String, String, Counts)>, String> {
    let entries: Vec<(String, String, i64, i64, i64, i64)> =
        serde_json::from_str(text).map_err(|e| e.to_string())?;
    entries
        .into_iter()
        .map(
            |(action, resource, allowed, default_denied, first_us, last_us)| {
                if allowed < 0 || default_denied < 0 {
                    return Err(format!(
                        "a negative count for {} on {}",
                        action.escape_debug(),
                        resource.escape_debug()
                    ));
                }
                Ok((
                    action,
                    resource,
                    Counts {
                        allowed,
                        default_denied,
                        first_us,
                        last_us,
                    },
                ))
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{Counts, read_observed};

    #[test]
    fn stored_counts_are_checked_when_read_and_saturate_when_added() {
        let read = read_observed(r#"[["Action::\"a\"","R::\"r\"",3,1,10,20]]"#).unwrap();
        assert_eq!(read.len(), 1);
        let (action, resource, counts) = &read[0];
        assert_eq!(
            (action.as_str(), resource.as_str()),
            (r#"Action::"a""#, r#"R::"r""#)
        );
        assert_eq!((counts.allowed, counts.default_denied), (3, 1));

        let negative = read_observed(r#"[["a","r",-1,0,10,20]]"#).unwrap_err();
        assert!(
            negative.contains("a negative count for a on r"),
            "{negative}"
        );
        assert!(read_observed(r#"[["a","r",1]]"#).is_err());
        assert!(read_observed("not json").is_err());

        let mut near = Counts {
            allowed: i64::MAX - 1,
            default_denied: 5,
            first_us: 10,
            last_us: 20,
        };
        near.add(Counts {
            allowed: 7,
            default_denied: i64::MAX,
            first_us: 5,
            last_us: 30,
        });
        assert_eq!((near.allowed, near.default_denied), (i64::MAX, i64::MAX));
        assert_eq!((near.first_us, near.last_us), (5, 30));
    }
}

/// One credential's decisions in a batch.
struct Used<'a> {
    principal: &'a str,
    presented: &'a Presented,
    first_us: i64,
    last_us: i64,
    decisions: i64,
}

const OUTCOMES: &str = "UPDATE log_principals
    SET allowed = allowed + ?2, denied = denied + ?3, invalid = invalid + ?4
    WHERE principal = ?1";

const OBSERVED_NEW: &str = "INSERT INTO log_observed (principal, seg, counts) VALUES (?1, ?2, ?3)
    ON CONFLICT (principal, seg) DO NOTHING";

const OBSERVED_ROW: &str = "SELECT counts FROM log_observed WHERE principal = ?1 AND seg = ?2";

const OBSERVED_REPLACE: &str = "UPDATE log_observed SET counts = ?3
    WHERE principal = ?1 AND seg = ?2";

/// A `log_observed` row's text: `[action, resource, allowed, default-denied, first,
/// latest]` for each entry.
fn observed_text<'e>(
    entries: impl Iterator<Item = (&'e (&'e str, &'e str), &'e Counts)>,
) -> rusqlite::Result<String> {
    let entries: Vec<Entry<'_>> = entries
        .map(|(&(action, resource), c)| {
            (
                action,
                resource,
                c.allowed,
                c.default_denied,
                c.first_us,
                c.last_us,
            )
        })
        .collect();
    serde_json::to_string(&entries)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

const CREDENTIAL_USED: &str = "UPDATE log_credentials
    SET first_us = min(first_us, ?3), last_us = max(last_us, ?4), decisions = decisions + ?5
    WHERE principal = ?1 AND jti = ?2";

const CREDENTIALS_KEPT: &str = "SELECT count(*) FROM log_credentials WHERE principal = ?1";

const CREDENTIAL_NEW: &str = "INSERT INTO log_credentials
    (principal, jti, issuer, expires_at, first_us, last_us, decisions)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

const LEFT_OUT: &str = "UPDATE log_principals
    SET credentials_left_out = credentials_left_out + ?2 WHERE principal = ?1";

const NOVEL: &str = "
    INSERT INTO log_novel (principal, action, at_us, decision_id) VALUES (?1, ?2, ?3, ?4)
    ON CONFLICT (principal, action) DO UPDATE SET
        at_us = excluded.at_us, decision_id = excluded.decision_id
    WHERE excluded.decision_id < log_novel.decision_id";

/// Adds `decisions`, just stored in `tx`, to their principals' summaries; what they did
/// goes in the `log_observed` rows of segment `seg` (the newest when they were stored).
/// Every principal named has its `log_principals` row already (the segment's write made
/// it).
pub(crate) fn tally<'a>(
    tx: &Transaction<'_>,
    seg: i64,
    decisions: impl IntoIterator<Item = Facts<'a>>,
) -> rusqlite::Result<()> {
    let mut outcomes: Map<&str, [i64; 3]> = Map::default();
    let mut observed: Map<&str, Map<(&str, &str), Counts>> = Map::default();
    // In the order the batch first presented each, which decides the ones kept.
    let mut used: Vec<Used<'a>> = Vec::new();
    let mut used_at: Map<(&str, &str), usize> = Map::default();
    let mut novel: Map<(&str, &str), (&str, i64)> = Map::default();
    for d in decisions {
        let Some(principal) = d.principal else {
            continue;
        };
        let slot = match d.decision {
            Logged::Allow => 0,
            Logged::Deny => 1,
            Logged::Invalid => 2,
        };
        if let Some(n) = outcomes.entry(principal).or_default().get_mut(slot) {
            *n += 1;
        }
        if let Some((p, a, r, default_denied)) =
            counted(d.decision, d.principal, d.action, d.resource, d.rules)
        {
            let one = Counts {
                allowed: i64::from(!default_denied),
                default_denied: i64::from(default_denied),
                first_us: d.time_us,
                last_us: d.time_us,
            };
            match observed.entry(p).or_default().entry((a, r)) {
                HashEntry::Occupied(mut counts) => counts.get_mut().add(one),
                HashEntry::Vacant(slot) => {
                    slot.insert(one);
                }
            }
        }
        if let Some(presented) = d.presented {
            match used_at.entry((principal, presented.jti.as_str())) {
                HashEntry::Occupied(at) => {
                    if let Some(u) = used.get_mut(*at.get()) {
                        u.first_us = u.first_us.min(d.time_us);
                        u.last_us = u.last_us.max(d.time_us);
                        u.decisions += 1;
                    }
                }
                HashEntry::Vacant(at) => {
                    at.insert(used.len());
                    used.push(Used {
                        principal,
                        presented,
                        first_us: d.time_us,
                        last_us: d.time_us,
                        decisions: 1,
                    });
                }
            }
        }
        if d.novel
            && let Some(action) = d.action
        {
            let first = novel
                .entry((principal, action))
                .or_insert((d.id, d.time_us));
            if d.id < first.0 {
                *first = (d.id, d.time_us);
            }
        }
    }

    let mut stmt = tx.prepare_cached(OUTCOMES)?;
    for (principal, [allowed, denied, invalid]) in outcomes {
        stmt.execute(params![principal, allowed, denied, invalid])?;
    }
    // Under load a batch has a segment of its own and its rows are new: each is tried as
    // an insert first, and read, summed and replaced only when the segment has it.
    let mut insert = tx.prepare_cached(OBSERVED_NEW)?;
    let mut read = tx.prepare_cached(OBSERVED_ROW)?;
    let mut replace = tx.prepare_cached(OBSERVED_REPLACE)?;
    for (principal, did) in observed {
        if insert.execute(params![principal, seg, observed_text(did.iter())?])? > 0 {
            continue;
        }
        let stored: String = read.query_row(params![principal, seg], |row| row.get(0))?;
        let stored = read_observed(&stored).map_err(|e| {
            rusqlite::Error::ToSqlConversionFailure(
                format!("log_observed ({principal}, {seg}) is not what it should be: {e}").into(),
            )
        })?;
        let mut merged: Map<(&str, &str), Counts> = did;
        for (action, resource, counts) in &stored {
            match merged.entry((action, resource)) {
                HashEntry::Occupied(mut mine) => mine.get_mut().add(*counts),
                HashEntry::Vacant(slot) => {
                    slot.insert(*counts);
                }
            }
        }
        replace.execute(params![principal, seg, observed_text(merged.iter())?])?;
    }
    if !used.is_empty() {
        let mut update = tx.prepare_cached(CREDENTIAL_USED)?;
        let mut count = tx.prepare_cached(CREDENTIALS_KEPT)?;
        let mut insert = tx.prepare_cached(CREDENTIAL_NEW)?;
        let mut kept: HashMap<&str, usize> = HashMap::new();
        let mut left_out: HashMap<&str, i64> = HashMap::new();
        for u in &used {
            let p = &u.presented;
            if update.execute(params![
                u.principal,
                p.jti,
                u.first_us,
                u.last_us,
                u.decisions
            ])? > 0
            {
                continue;
            }
            let n = match kept.entry(u.principal) {
                HashEntry::Occupied(n) => n.into_mut(),
                HashEntry::Vacant(slot) => {
                    let n: i64 = count.query_row([u.principal], |row| row.get(0))?;
                    slot.insert(usize::try_from(n).unwrap_or(usize::MAX))
                }
            };
            if *n < MAX_CREDENTIALS {
                insert.execute(params![
                    u.principal,
                    p.jti,
                    p.issuer,
                    p.expires_at,
                    u.first_us,
                    u.last_us,
                    u.decisions
                ])?;
                *n += 1;
            } else {
                *left_out.entry(u.principal).or_default() += u.decisions;
            }
        }
        let mut stmt = tx.prepare_cached(LEFT_OUT)?;
        for (principal, n) in left_out {
            stmt.execute(params![principal, n])?;
        }
    }
    if !novel.is_empty() {
        let mut stmt = tx.prepare_cached(NOVEL)?;
        for ((principal, action), (id, time_us)) in novel {
            stmt.execute(params![principal, action, time_us, id])?;
        }
    }
    Ok(())
}

/// What a summary reads of a stored record beyond its head.
#[derive(Debug, Default, Deserialize)]
struct RecordFacts {
    #[serde(default)]
    novel: Option<bool>,
    #[serde(default)]
    credential: Option<CredentialFacts>,
    #[serde(default)]
    credential_id: Option<String>,
}

/// What a summary reads of a stored record's credential.
#[derive(Debug, Default, Deserialize)]
struct CredentialFacts {
    jti: String,
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    expires_at: Option<String>,
}

/// Sums up every decision a log already holds, a segment at a time in the order they
/// were written: for a log migrated to the version that keeps the summaries. A record
/// that does not parse is an error naming its decision.
pub(crate) fn summarize_log(tx: &Transaction<'_>) -> Result<(), String> {
    let sqlite = |e: rusqlite::Error| e.to_string();
    let mut next = 0_i64;
    loop {
        let meta = tx
            .prepare_cached(&format!(
                "SELECT {} FROM log_segments s WHERE s.seg > ?1 ORDER BY s.seg LIMIT 1",
                segment::META_COLUMNS
            ))
            .and_then(|mut stmt| stmt.query_row([next], Meta::read).optional())
            .map_err(sqlite)?;
        let Some(meta) = meta else {
            return Ok(());
        };
        next = meta.seg;
        let decoded = segment::read(tx, &meta).map_err(|e| match e {
            segment::ReadError::Sqlite(e) => e.to_string(),
            segment::ReadError::Corrupt(detail) => detail,
        })?;
        segment::add_rule_outcome_keys(tx, meta.seg, &decoded).map_err(sqlite)?;
        let mut facts = Vec::new();
        let mut extra = Vec::new();
        for (head, record) in decoded.entries() {
            if head.principal.is_none() {
                continue;
            }
            let parsed: RecordFacts = serde_json::from_str(record)
                .map_err(|e| format!("the logged decision {} is not a record: {e}", head.id))?;
            let presented = match parsed.credential {
                Some(c) => Some(Presented {
                    jti: c.jti,
                    issuer: c.issuer,
                    expires_at: c.expires_at,
                }),
                None => parsed.credential_id.map(|jti| Presented {
                    jti,
                    issuer: None,
                    expires_at: None,
                }),
            };
            extra.push((head, presented, parsed.novel == Some(true)));
        }
        for (head, presented, novel) in &extra {
            facts.push(Facts {
                id: &head.id,
                time_us: head.time_us,
                principal: head.principal.as_deref(),
                action: head.action.as_deref(),
                resource: head.resource.as_deref(),
                decision: head.decision,
                rules: &head.rules,
                presented: presented.as_ref(),
                novel: *novel,
            });
        }
        tally(tx, meta.seg, facts).map_err(sqlite)?;
    }
}

//! Revocations of a token, of a principal or of a session: on disk before
//! [`Store::revoke`] returns, and numbered in commit order so that a poller can fetch only
//! what is new.
//!
//! The store keeps every revocation as given; deciding whether a credential is revoked (the
//! latest cut-off per principal, a session for one principal or for all) is for its readers.

use arbiter_core::credential::Revoked;
use jiff::Timestamp;
use rusqlite::{Connection, Row, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::store::Store;

/// The longest value (and session principal) a revocation takes, in bytes.
pub const MAX_REVOCATION_VALUE: usize = 4096;

/// The columns a [`Revocation`] is read from, in [`RevocationRow::read`]'s order.
const COLUMNS: &str = "seq, kind, value, principal, reason, \"by\", at, expires_at_us";

/// What a revocation names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RevocationKind {
    /// One token, by its `jti`.
    Jti,
    /// A principal, by its Cedar uid (`Agent::"bot"`): every token of it issued before the
    /// revocation's `at`.
    Principal,
    /// A session, by its id: for one principal, or for every principal.
    Session,
}

impl RevocationKind {
    /// The kind's name, as stored and as serialized: `jti`, `principal` or `session`.
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationKind::Jti => "jti",
            RevocationKind::Principal => "principal",
            RevocationKind::Session => "session",
        }
    }

    fn from_name(name: &str) -> Option<RevocationKind> {
        match name {
            "jti" => Some(RevocationKind::Jti),
            "principal" => Some(RevocationKind::Principal),
            "session" => Some(RevocationKind::Session),
            _ => None,
        }
    }
}

/// One revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// Its place in commit order, from 1; 0 before it is stored.
    pub seq: i64,
    /// What `value` names.
    pub kind: RevocationKind,
    /// The jti, the principal's Cedar uid, or the session id.
    pub value: String,
    /// Kind `session` only: the session's principal. `None` revokes the session id for
    /// every principal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// Why.
    pub reason: String,
    /// Who: an admin token's name, a CLI user, or `rule:<id>` for a `revoke` effect.
    pub by: String,
    /// When. For kind `principal`, the cut-off: its tokens issued before it are revoked.
    pub at: Timestamp,
    /// When the revocation can be forgotten, for a jti the token's own expiry. Stored to
    /// the microsecond.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
}

impl Revocation {
    /// The record of `revoked`, made by `by` for `reason` at `at` (for a principal, its
    /// own cut-off is the time kept).
    pub fn of(revoked: &Revoked, reason: &str, by: &str, at: Timestamp) -> Revocation {
        let (kind, value, principal, at) = match revoked {
            Revoked::Jti(jti) => (RevocationKind::Jti, jti.clone(), None, at),
            Revoked::Principal { principal, before } => {
                (RevocationKind::Principal, principal.clone(), None, *before)
            }
            Revoked::Session { principal, id } => {
                (RevocationKind::Session, id.clone(), principal.clone(), at)
            }
        };
        Revocation {
            seq: 0,
            kind,
            value,
            principal,
            reason: reason.to_owned(),
            by: by.to_owned(),
            at,
            expires_at: None,
        }
    }

    /// The record of a revocation an enforced `revoke` rule made: by `rule:<id>`.
    pub fn of_effect(effect: &arbiter_core::response::Revocation) -> Revocation {
        Revocation::of(
            &effect.revoked,
            &format!("revoke effect of rule {}", effect.rule),
            &format!("rule:{}", effect.rule),
            effect.at,
        )
    }

    /// What this revocation revokes, as the verifier applies it.
    pub fn revoked(&self) -> Revoked {
        match self.kind {
            RevocationKind::Jti => Revoked::Jti(self.value.clone()),
            RevocationKind::Principal => Revoked::Principal {
                principal: self.value.clone(),
                before: self.at,
            },
            RevocationKind::Session => Revoked::Session {
                principal: self.principal.clone(),
                id: self.value.clone(),
            },
        }
    }
}

impl Store {
    /// Commits `r` and returns it as stored, with its `seq` (the `seq` given is ignored).
    ///
    /// When this returns the revocation is on disk (`synchronous = FULL`) and every other
    /// connection, in this process or another, sees it.
    ///
    /// Revoking the same (kind, value, principal) again is allowed and adds a row; the
    /// earlier ones stay. For kind `principal` a later revocation moves the cut-off later:
    /// readers use the latest `at` per principal.
    ///
    /// A `value` must be non-empty and at most [`MAX_REVOCATION_VALUE`] bytes, and so must a
    /// `principal`, which only kind `session` takes: otherwise [`StoreError::Invalid`]. A
    /// read-only store refuses with [`StoreError::ReadOnly`]. After a database error the
    /// revocation may or may not be committed; revoking again is harmless.
    pub fn revoke(&self, r: &Revocation) -> Result<Revocation, StoreError> {
        check(r).map_err(|refused| StoreError::Invalid {
            message: refused.to_string(),
        })?;
        let mut conn = self.writable_connection()?;
        let err = |cause| self.sqlite_error(cause);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        tx.execute(
            "INSERT INTO revocations
                 (kind, value, principal, reason, \"by\", at, at_us, expires_at_us)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                r.kind.as_str(),
                r.value,
                r.principal,
                r.reason,
                r.by,
                r.at.to_string(),
                r.at.as_microsecond(),
                r.expires_at.map(Timestamp::as_microsecond),
            ],
        )
        .map_err(err)?;
        // Read back rather than copy `r`, so the caller gets exactly what pollers will.
        let stored = self.revocation_at(&tx, tx.last_insert_rowid())?;
        tx.commit().map_err(err)?;
        Ok(stored)
    }

    /// Every revocation with a `seq` greater than `after`, oldest first; `after = 0` for
    /// all of them. A poller passes the last `seq` it has seen.
    pub fn revocations_since(&self, after: i64) -> Result<Vec<Revocation>, StoreError> {
        let conn = self.connection();
        let err = |cause| self.sqlite_error(cause);
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM revocations WHERE seq > ?1 ORDER BY seq"
            ))
            .map_err(err)?;
        let rows = stmt.query_map([after], RevocationRow::read).map_err(err)?;
        let mut revocations = Vec::new();
        for row in rows {
            revocations.push(self.revocation_from(row.map_err(err)?)?);
        }
        Ok(revocations)
    }

    fn revocation_at(&self, conn: &Connection, seq: i64) -> Result<Revocation, StoreError> {
        let row = conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM revocations WHERE seq = ?1"),
                [seq],
                RevocationRow::read,
            )
            .map_err(|cause| self.sqlite_error(cause))?;
        self.revocation_from(row)
    }

    fn revocation_from(&self, row: RevocationRow) -> Result<Revocation, StoreError> {
        let seq = row.seq;
        let corrupt = |detail: String| self.corrupt(format!("revocation {seq}: {detail}"));
        let kind = RevocationKind::from_name(&row.kind)
            .ok_or_else(|| corrupt(format!("unknown kind {:?}", row.kind)))?;
        let at = row
            .at
            .parse()
            .map_err(|e| corrupt(format!("at {:?}: {e}", row.at)))?;
        let expires_at = row
            .expires_at_us
            .map(Timestamp::from_microsecond)
            .transpose()
            .map_err(|e| corrupt(format!("expires_at_us {:?}: {e}", row.expires_at_us)))?;
        Ok(Revocation {
            seq,
            kind,
            value: row.value,
            principal: row.principal,
            reason: row.reason,
            by: row.by,
            at,
            expires_at,
        })
    }
}

/// A `revocations` row as SQLite gives it, before its text is parsed.
struct RevocationRow {
    seq: i64,
    kind: String,
    value: String,
    principal: Option<String>,
    reason: String,
    by: String,
    at: String,
    expires_at_us: Option<i64>,
}

impl RevocationRow {
    fn read(row: &Row<'_>) -> rusqlite::Result<RevocationRow> {
        Ok(RevocationRow {
            seq: row.get(0)?,
            kind: row.get(1)?,
            value: row.get(2)?,
            principal: row.get(3)?,
            reason: row.get(4)?,
            by: row.get(5)?,
            at: row.get(6)?,
            expires_at_us: row.get(7)?,
        })
    }
}

/// A revocation that breaks the rules [`Store::revoke`] documents; its message is the one
/// the caller gets.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("cannot revoke: only a session revocation takes a principal, not a {0} one")]
    PrincipalOf(&'static str),
    #[error("cannot revoke: the {0} is empty")]
    Empty(&'static str),
    #[error("cannot revoke: the {field} is {len} bytes long, more than {MAX_REVOCATION_VALUE}")]
    TooLong { field: &'static str, len: usize },
}

fn check(r: &Revocation) -> Result<(), Refused> {
    check_text("value", &r.value)?;
    if let Some(principal) = &r.principal {
        if r.kind != RevocationKind::Session {
            return Err(Refused::PrincipalOf(r.kind.as_str()));
        }
        check_text("principal", principal)?;
    }
    Ok(())
}

fn check_text(field: &'static str, text: &str) -> Result<(), Refused> {
    if text.is_empty() {
        return Err(Refused::Empty(field));
    }
    if text.len() > MAX_REVOCATION_VALUE {
        return Err(Refused::TooLong {
            field,
            len: text.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::Store;

    /// WAL with `synchronous = NORMAL` can lose the last commits on a power loss; a
    /// revocation must not be one of them.
    #[test]
    fn revocations_are_committed_with_synchronous_full() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let level: i64 = store
            .connection()
            .pragma_query_value(None, "synchronous", |row| row.get(0))
            .unwrap();
        assert_eq!(level, 2, "2 is FULL");
    }
}

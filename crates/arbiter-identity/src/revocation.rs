//! What is revoked, held in memory for the check at every decision. The server loads the
//! revocations from its store at start and applies new ones as they are committed; a
//! `revoke` effect applies here at once, and the engine reports it in the decision for
//! the caller that owns a store to make durable. This crate has no database.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{PoisonError, RwLock};

pub use arbiter_core::credential::Revoked;
use arbiter_core::credential::VerifiedCredential;
use cedar_policy::EntityUid;
use jiff::Timestamp;

/// The revocations in force. Readers never wait for each other.
#[derive(Debug, Default)]
pub struct Revocations {
    sets: RwLock<Sets>,
}

#[derive(Debug, Default)]
struct Sets {
    jtis: HashSet<String>,
    /// Principal → the latest cut-off.
    principals: HashMap<String, Timestamp>,
    /// Session ids revoked for every principal.
    sessions: HashSet<String>,
    /// Principal → its revoked session ids.
    principal_sessions: HashMap<String, HashSet<String>>,
    /// Every session id in `principal_sessions`, whoever's: most sessions asked about are
    /// not in it, and are answered without reading the principal's uid.
    principal_session_ids: HashSet<String>,
}

impl Revocations {
    /// Applies a revocation. A principal revoked twice keeps the later cut-off.
    pub fn apply(&self, revoked: &Revoked) {
        let mut sets = self.sets.write().unwrap_or_else(PoisonError::into_inner);
        match revoked {
            Revoked::Jti(jti) => {
                sets.jtis.insert(jti.clone());
            }
            Revoked::Principal { principal, before } => {
                let cut = sets
                    .principals
                    .entry(canonical(principal))
                    .or_insert(*before);
                *cut = (*cut).max(*before);
            }
            Revoked::Session {
                principal: None,
                id,
            } => {
                sets.sessions.insert(id.clone());
            }
            Revoked::Session {
                principal: Some(principal),
                id,
            } => {
                sets.principal_sessions
                    .entry(canonical(principal))
                    .or_default()
                    .insert(id.clone());
                sets.principal_session_ids.insert(id.clone());
            }
        }
    }

    /// Whether the credential is revoked: its `jti`, its principal with a cut-off after it
    /// was issued, or its session (for its principal or for all).
    pub fn is_revoked(&self, credential: &VerifiedCredential) -> bool {
        let sets = self.sets.read().unwrap_or_else(PoisonError::into_inner);
        if sets.jtis.contains(&credential.jti) {
            return true;
        }
        if sets.principals.is_empty() && sets.principal_sessions.is_empty() {
            return credential
                .session
                .as_ref()
                .is_some_and(|s| sets.sessions.contains(s));
        }
        let principal = credential.principal.to_string();
        if sets
            .principals
            .get(&principal)
            .is_some_and(|before| credential.issued_at < *before)
        {
            return true;
        }
        credential
            .session
            .as_ref()
            .is_some_and(|s| sets.session_revoked(&principal, s))
    }

    /// Whether this session of this principal (its Cedar uid) is revoked.
    ///
    /// Asked on every decision in a session: the uid is parsed (to match however it is
    /// spelled) only when some principal has a session of this id revoked.
    pub fn session_revoked(&self, principal: &str, session: &str) -> bool {
        let sets = self.sets.read().unwrap_or_else(PoisonError::into_inner);
        if sets.sessions.contains(session) {
            return true;
        }
        if !sets.principal_session_ids.contains(session) {
            return false;
        }
        sets.session_revoked(principal, session)
            || sets.session_revoked(&canonical(principal), session)
    }
}

impl Sets {
    fn session_revoked(&self, principal: &str, session: &str) -> bool {
        self.sessions.contains(session)
            || self
                .principal_sessions
                .get(principal)
                .is_some_and(|ids| ids.contains(session))
    }
}

/// A principal's uid as Cedar prints it, so that `Agent::"bot"` and `Agent :: "bot"` are
/// one principal. Text that is not a uid is kept as it is: it matches no credential.
fn canonical(principal: &str) -> String {
    principal
        .parse::<EntityUid>()
        .map_or_else(|_| principal.to_owned(), |uid| uid.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential(principal: &str, session: Option<&str>, issued: i64) -> VerifiedCredential {
        VerifiedCredential {
            jti: "j1".to_owned(),
            issuer: "arbiter".to_owned(),
            principal: principal.parse().unwrap(),
            intent: None,
            session: session.map(str::to_owned),
            issued_at: Timestamp::from_second(issued).unwrap(),
            expires_at: Timestamp::from_second(issued + 60).unwrap(),
            attributes: Default::default(),
        }
    }

    #[test]
    fn a_principal_revoked_twice_keeps_the_later_cut_off() {
        let r = Revocations::default();
        let at = |s| Timestamp::from_second(s).unwrap();
        let bot = r#"Agent::"bot""#;
        r.apply(&Revoked::Principal {
            principal: bot.to_owned(),
            before: at(200),
        });
        r.apply(&Revoked::Principal {
            principal: "Agent :: \"bot\"".to_owned(),
            before: at(100),
        });
        assert!(r.is_revoked(&credential(bot, None, 150)));
        assert!(!r.is_revoked(&credential(bot, None, 200)));
        assert!(!r.is_revoked(&credential(r#"Agent::"other""#, None, 150)));
    }

    #[test]
    fn sessions_are_revoked_for_one_principal_or_for_all() {
        let r = Revocations::default();
        r.apply(&Revoked::Session {
            principal: Some(r#"Agent::"a""#.to_owned()),
            id: "s1".to_owned(),
        });
        r.apply(&Revoked::Session {
            principal: None,
            id: "s2".to_owned(),
        });
        assert!(r.session_revoked(r#"Agent::"a""#, "s1"));
        assert!(!r.session_revoked(r#"Agent::"b""#, "s1"));
        assert!(r.session_revoked(r#"Agent::"b""#, "s2"));
        assert!(r.is_revoked(&credential(r#"Agent::"a""#, Some("s1"), 0)));
        assert!(!r.is_revoked(&credential(r#"Agent::"b""#, Some("s1"), 0)));
        assert!(r.is_revoked(&credential(r#"Agent::"b""#, Some("s2"), 0)));
        assert!(!r.is_revoked(&credential(r#"Agent::"a""#, None, 0)));
    }

    #[test]
    fn a_session_revoked_for_one_principal_is_not_revoked_for_another_or_under_another_id() {
        let r = Revocations::default();
        assert!(!r.session_revoked(r#"Agent::"a""#, "s1"));
        r.apply(&Revoked::Session {
            principal: Some(r#"Agent::"a""#.to_owned()),
            id: "s1".to_owned(),
        });
        assert!(r.session_revoked(r#"Agent::"a""#, "s1"));
        assert!(!r.session_revoked(r#"Agent::"a""#, "s3"));
        assert!(!r.session_revoked(r#"Agent::"b""#, "s1"));
        assert!(!r.session_revoked("not a uid", "s1"));
    }
}

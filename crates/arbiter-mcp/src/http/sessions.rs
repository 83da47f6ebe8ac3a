//! The MCP sessions the proxy has seen opened (session-based revisions): each upstream
//! `Mcp-Session-Id` bound to the identity that opened it and to the arbiter session its
//! decisions are made in. Bounded: past the limit the oldest binding is forgotten (its
//! session then counts as unknown, and is decided in its identity's own session).

use std::collections::{HashMap, VecDeque};

use sha2::{Digest, Sha256};

use crate::caller::Caller;

/// How many bindings are kept by default.
pub const DEFAULT_MAX_SESSIONS: usize = 10_000;

/// Who opened a session: the principal and, when verified, the token's id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    /// The principal's Cedar uid.
    pub principal: String,
    /// The token's id (`jti`), when the caller presented one.
    pub token_id: Option<String>,
}

impl Owner {
    /// The owner of `caller`'s requests, with the id of the token it presented.
    pub fn of(caller: &Caller, token_id: Option<&str>) -> Owner {
        Owner {
            principal: caller.principal().to_string(),
            token_id: token_id.map(str::to_owned),
        }
    }

    /// The arbiter session of this identity where the MCP session does not give one
    /// (the stateless revision, an unknown session id): `mcp-` and a hash of the
    /// principal and the token's id, so that no id the client chooses can reset it.
    pub fn session(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(self.principal.as_bytes());
        hash.update([0]);
        if let Some(id) = &self.token_id {
            hash.update(b"jti:");
            hash.update(id.as_bytes());
        }
        let digest = hash.finalize();
        format!("mcp-{}", hex::encode(digest.get(..16).unwrap_or_default()))
    }
}

/// One MCP session, as bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// Who opened it.
    pub owner: Owner,
    /// The arbiter session its decisions are made in.
    pub arbiter_session: String,
    /// A `revoke` ended it: its requests are refused.
    pub ended: bool,
}

/// What the table says of a request's session.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Bound to this identity: decide in this arbiter session.
    Bound(String),
    /// Bound to another identity.
    NotYours,
    /// Ended by a `revoke`.
    Ended,
    /// Not known here (never seen, deleted or forgotten).
    Unknown,
}

/// The bindings, by upstream and `Mcp-Session-Id`.
#[derive(Debug)]
pub struct Sessions {
    max: usize,
    bound: HashMap<(String, String), Binding>,
    /// Keys in the order they were bound, for eviction; may hold keys already removed.
    order: VecDeque<(String, String)>,
}

impl Sessions {
    /// An empty table of at most `max` bindings.
    pub fn new(max: usize) -> Sessions {
        Sessions {
            max: max.max(1),
            bound: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Binds `session` of `upstream` to `owner`, deciding in `arbiter_session`; a binding
    /// already there is kept (the first opener owns it).
    pub fn bind(&mut self, upstream: &str, session: &str, owner: Owner, arbiter_session: String) {
        let key = (upstream.to_owned(), session.to_owned());
        if self.bound.contains_key(&key) {
            return;
        }
        while self.bound.len() >= self.max {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            if self.bound.remove(&oldest).is_some() {
                tracing::info!("the MCP session table is full; forgot the oldest session");
            }
        }
        if self.order.len() > self.max.saturating_mul(2) {
            let bound = &self.bound;
            self.order.retain(|k| bound.contains_key(k));
        }
        self.order.push_back(key.clone());
        self.bound.insert(
            key,
            Binding {
                owner,
                arbiter_session,
                ended: false,
            },
        );
    }

    /// What is known of `session` of `upstream` for a request by `owner`.
    pub fn lookup(&self, upstream: &str, session: &str, owner: &Owner) -> Lookup {
        match self.bound.get(&(upstream.to_owned(), session.to_owned())) {
            None => Lookup::Unknown,
            Some(binding) if binding.owner != *owner => Lookup::NotYours,
            Some(binding) if binding.ended => Lookup::Ended,
            Some(binding) => Lookup::Bound(binding.arbiter_session.clone()),
        }
    }

    /// Marks a session ended: its later requests are refused.
    pub fn end(&mut self, upstream: &str, session: &str) {
        if let Some(binding) = self
            .bound
            .get_mut(&(upstream.to_owned(), session.to_owned()))
        {
            binding.ended = true;
        }
    }

    /// Forgets a session (the client deleted it).
    pub fn forget(&mut self, upstream: &str, session: &str) {
        self.bound
            .remove(&(upstream.to_owned(), session.to_owned()));
    }

    /// How many sessions are bound.
    pub fn len(&self) -> usize {
        self.bound.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.bound.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(p: &str, t: Option<&str>) -> Owner {
        Owner {
            principal: p.to_owned(),
            token_id: t.map(str::to_owned),
        }
    }

    #[test]
    fn a_session_belongs_to_who_opened_it_and_the_oldest_is_forgotten_first() {
        let mut table = Sessions::new(2);
        let bot = owner("Agent::\"bot\"", Some("t1"));
        let other = owner("Agent::\"bot\"", Some("t2"));
        table.bind("up", "a", bot.clone(), "mcp-a".to_owned());
        assert_eq!(
            table.lookup("up", "a", &bot),
            Lookup::Bound("mcp-a".to_owned())
        );
        assert_eq!(table.lookup("up", "a", &other), Lookup::NotYours);
        assert_eq!(table.lookup("other", "a", &bot), Lookup::Unknown);
        table.bind("up", "b", bot.clone(), "mcp-b".to_owned());
        table.bind("up", "c", bot.clone(), "mcp-c".to_owned());
        assert_eq!(table.len(), 2);
        assert_eq!(table.lookup("up", "a", &bot), Lookup::Unknown);
        table.end("up", "b");
        assert_eq!(table.lookup("up", "b", &bot), Lookup::Ended);
        table.forget("up", "c");
        assert_eq!(table.lookup("up", "c", &bot), Lookup::Unknown);
    }

    #[test]
    fn the_identity_session_depends_on_the_principal_and_the_token_only() {
        let a = owner("Agent::\"bot\"", Some("t1")).session();
        assert_eq!(a, owner("Agent::\"bot\"", Some("t1")).session());
        assert_ne!(a, owner("Agent::\"bot\"", Some("t2")).session());
        assert_ne!(a, owner("Agent::\"bot\"", None).session());
        assert!(a.starts_with("mcp-") && a.len() == 36, "{a}");
    }
}

//! State that outlives one decision: agent sessions and throttle buckets, behind small
//! traits so the server can later keep them in a shared store. The in-memory versions here
//! serve the offline CLI, tests, and a single server.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use jiff::Timestamp;

use crate::period::Limit;

/// A session is kept per principal and session id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKey {
    /// The principal, as a Cedar uid string.
    pub principal: String,
    /// The PEP's session id.
    pub id: String,
}

/// What a decision sees of its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    /// Bare ids of actions (and their groups) allowed earlier in the session; shared, so
    /// reading a session copies nothing.
    pub touched: Arc<BTreeSet<String>>,
    /// How many actions were allowed in the session.
    pub actions: i64,
    /// When the session was first seen.
    pub started: Timestamp,
    /// Whether an enforced `revoke` ended the session.
    pub terminated: bool,
}

/// Where sessions live.
pub trait SessionStore: Send + Sync + std::fmt::Debug {
    /// The session's state, starting it at `now` if it is new.
    fn open(&self, key: &SessionKey, now: Timestamp) -> SessionView;
    /// Records an allowed action and its groups.
    fn record_allowed(&self, key: &SessionKey, touched: &[String]);
    /// Ends the session: every later request in it is denied `session:terminated`.
    fn terminate(&self, key: &SessionKey, now: Timestamp);
}

/// Sessions in memory.
#[derive(Debug, Default)]
pub struct MemorySessions {
    sessions: Mutex<HashMap<SessionKey, SessionView>>,
}

impl SessionStore for MemorySessions {
    fn open(&self, key: &SessionKey, now: Timestamp) -> SessionView {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions
            .entry(key.clone())
            .or_insert_with(|| SessionView {
                touched: Arc::default(),
                actions: 0,
                started: now,
                terminated: false,
            })
            .clone()
    }

    fn record_allowed(&self, key: &SessionKey, touched: &[String]) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(session) = sessions.get_mut(key) {
            if touched.iter().any(|t| !session.touched.contains(t)) {
                let set = Arc::make_mut(&mut session.touched);
                set.extend(touched.iter().cloned());
            }
            session.actions = session.actions.saturating_add(1);
        }
    }

    fn terminate(&self, key: &SessionKey, now: Timestamp) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions
            .entry(key.clone())
            .or_insert_with(|| SessionView {
                touched: Arc::default(),
                actions: 0,
                started: now,
                terminated: true,
            })
            .terminated = true;
    }
}

/// A throttle bucket is kept per rule and principal; audit and warn rules use shadow
/// buckets, so promoting a rule never inherits the counts it gathered in audit.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ThrottleKey {
    /// The rule's `@id`.
    pub rule: String,
    /// The principal, as a Cedar uid string.
    pub principal: String,
    /// Whether this is a shadow bucket (the rule is not enforced).
    pub shadow: bool,
}

/// Where throttle buckets live.
pub trait ThrottleStore: Send + Sync + std::fmt::Debug {
    /// Takes one unit from the bucket: `Ok` when there was one, otherwise `Err` with the
    /// whole seconds until one is back (at least 1).
    fn take(&self, key: &ThrottleKey, limit: Limit, now: Timestamp) -> Result<(), u64>;
}

/// A token bucket that refills continuously: `count` units per `per`, holding at most
/// `count`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    tokens: f64,
    last: Timestamp,
}

impl Bucket {
    /// A full bucket.
    pub fn full(limit: Limit, now: Timestamp) -> Self {
        Self {
            tokens: f64::from(limit.count),
            last: now,
        }
    }

    /// Refills up to `now`, then takes one unit if there is one.
    pub fn take(&mut self, limit: Limit, now: Timestamp) -> Result<(), u64> {
        let capacity = f64::from(limit.count);
        let rate = capacity / limit.per.duration().as_secs_f64();
        let elapsed = now.duration_since(self.last).as_secs_f64().max(0.0);
        if now > self.last {
            self.last = now;
        }
        self.tokens = (self.tokens + elapsed * rate).min(capacity);
        // A tiny epsilon absorbs floating-point drift from many small refills.
        if self.tokens >= 1.0 - 1e-9 {
            self.tokens = (self.tokens - 1.0).max(0.0);
            Ok(())
        } else {
            // The same epsilon keeps drift from pushing a whole second into the next one.
            let wait = ((1.0 - self.tokens) / rate - 1e-9).ceil();
            Err((wait as u64).max(1))
        }
    }
}

/// Throttle buckets in memory.
#[derive(Debug, Default)]
pub struct MemoryThrottles {
    buckets: Mutex<HashMap<ThrottleKey, Bucket>>,
}

impl ThrottleStore for MemoryThrottles {
    fn take(&self, key: &ThrottleKey, limit: Limit, now: Timestamp) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        buckets
            .entry(key.clone())
            .or_insert_with(|| Bucket::full(limit, now))
            .take(limit, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::SignedDuration;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).expect("valid")
    }

    #[test]
    fn a_bucket_lets_n_through_then_refills_continuously() {
        let limit = Limit::parse("3/1m").expect("valid");
        let mut bucket = Bucket::full(limit, at(0));
        assert_eq!(bucket.take(limit, at(0)), Ok(()));
        assert_eq!(bucket.take(limit, at(0)), Ok(()));
        assert_eq!(bucket.take(limit, at(0)), Ok(()));
        // One unit comes back every 20 s.
        assert_eq!(bucket.take(limit, at(0)), Err(20));
        assert_eq!(bucket.take(limit, at(15)), Err(5));
        assert_eq!(bucket.take(limit, at(20)), Ok(()));
        assert_eq!(bucket.take(limit, at(21)), Err(19));
        // A long pause refills to capacity, never beyond.
        for _ in 0..3 {
            assert_eq!(bucket.take(limit, at(3_600)), Ok(()));
        }
        assert!(bucket.take(limit, at(3_600)).is_err());
    }

    #[test]
    fn retry_after_is_at_least_one_second() {
        let limit = Limit::parse("100/1s").expect("valid");
        let mut bucket = Bucket::full(limit, at(0));
        for _ in 0..100 {
            assert_eq!(bucket.take(limit, at(0)), Ok(()));
        }
        assert_eq!(bucket.take(limit, at(0)), Err(1));
    }

    #[test]
    fn a_clock_going_back_does_not_refill() {
        let limit = Limit::parse("1/1m").expect("valid");
        let mut bucket = Bucket::full(limit, at(100));
        assert_eq!(bucket.take(limit, at(100)), Ok(()));
        assert!(bucket.take(limit, at(0)).is_err());
        assert!(
            bucket
                .take(
                    limit,
                    at(100)
                        .saturating_add(SignedDuration::from_secs(59))
                        .expect("ok")
                )
                .is_err()
        );
    }

    #[test]
    fn sessions_remember_allowed_actions_and_termination() {
        let store = MemorySessions::default();
        let key = SessionKey {
            principal: "Agent::\"a\"".into(),
            id: "s1".into(),
        };
        let fresh = store.open(&key, at(0));
        assert_eq!((fresh.actions, fresh.terminated), (0, false));
        store.record_allowed(&key, &["read_secret".into(), "secret_read".into()]);
        let later = store.open(&key, at(10));
        assert_eq!(later.actions, 1);
        assert_eq!(later.started, at(0));
        assert!(later.touched.contains("secret_read"));
        store.terminate(&key, at(11));
        assert!(store.open(&key, at(12)).terminated);
    }
}

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

impl SessionView {
    fn new(now: Timestamp, terminated: bool) -> Self {
        Self {
            touched: Arc::default(),
            actions: 0,
            started: now,
            terminated,
        }
    }
}

/// How many sessions the in-memory store keeps by default.
pub const DEFAULT_SESSION_CAPACITY: usize = 100_000;

/// Sessions in memory, at most `capacity` of them: past it, the tenth of the live
/// sessions idle the longest are forgotten (a forgotten session starts again empty).
/// Terminated sessions are never forgotten, so a revoked session stays revoked.
#[derive(Debug)]
pub struct MemorySessions {
    sessions: Mutex<HashMap<SessionKey, (SessionView, Timestamp)>>,
    capacity: usize,
}

impl Default for MemorySessions {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_SESSION_CAPACITY)
    }
}

impl MemorySessions {
    /// A store keeping at most about `capacity` sessions.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            sessions: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// How many sessions are kept.
    pub fn len(&self) -> usize {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Whether no session is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets the longest-idle tenth of the live sessions (amortized: once per tenth of
    /// the capacity of new sessions).
    fn evict(sessions: &mut HashMap<SessionKey, (SessionView, Timestamp)>, capacity: usize) {
        let mut live: Vec<(Timestamp, SessionKey)> = sessions
            .iter()
            .filter(|(_, (view, _))| !view.terminated)
            .map(|(key, (_, seen))| (*seen, key.clone()))
            .collect();
        live.sort_unstable_by_key(|(seen, _)| *seen);
        for (_, key) in live.into_iter().take((capacity / 10).max(1)) {
            sessions.remove(&key);
        }
    }
}

impl SessionStore for MemorySessions {
    fn open(&self, key: &SessionKey, now: Timestamp) -> SessionView {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if !sessions.contains_key(key) && sessions.len() >= self.capacity {
            Self::evict(&mut sessions, self.capacity);
        }
        let (view, seen) = sessions
            .entry(key.clone())
            .or_insert_with(|| (SessionView::new(now, false), now));
        *seen = now.max(*seen);
        view.clone()
    }

    fn record_allowed(&self, key: &SessionKey, touched: &[String]) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((session, _)) = sessions.get_mut(key) {
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
            .or_insert_with(|| (SessionView::new(now, true), now))
            .0
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

/// How many throttle buckets the in-memory store keeps before it sweeps.
pub const DEFAULT_BUCKET_CAPACITY: usize = 100_000;

/// Throttle buckets in memory. Past `capacity` buckets, the ones that have refilled
/// completely are dropped: a full bucket and no bucket behave the same, so nothing a
/// throttle counts is ever forgotten. Sweeps are amortized (the next one waits until the
/// store has grown by a tenth of its capacity again).
#[derive(Debug)]
pub struct MemoryThrottles {
    buckets: Mutex<Buckets>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Buckets {
    by_key: HashMap<ThrottleKey, (Bucket, Limit)>,
    sweep_at: usize,
}

impl Default for MemoryThrottles {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_BUCKET_CAPACITY)
    }
}

impl MemoryThrottles {
    /// A store that sweeps past about `capacity` buckets.
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            buckets: Mutex::new(Buckets {
                by_key: HashMap::new(),
                sweep_at: capacity,
            }),
            capacity,
        }
    }

    /// How many buckets are kept.
    pub fn len(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_key
            .len()
    }

    /// Whether no bucket is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Bucket {
    /// Whether the bucket has refilled completely by `now`.
    fn is_full_at(&self, limit: Limit, now: Timestamp) -> bool {
        let rate = f64::from(limit.count) / limit.per.duration().as_secs_f64();
        let elapsed = now.duration_since(self.last).as_secs_f64().max(0.0);
        self.tokens + elapsed * rate >= f64::from(limit.count)
    }
}

impl ThrottleStore for MemoryThrottles {
    fn take(&self, key: &ThrottleKey, limit: Limit, now: Timestamp) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !buckets.by_key.contains_key(key) && buckets.by_key.len() >= buckets.sweep_at {
            buckets
                .by_key
                .retain(|_, (bucket, limit)| !bucket.is_full_at(*limit, now));
            buckets.sweep_at = buckets.by_key.len() + (self.capacity / 10).max(1);
            buckets.sweep_at = buckets.sweep_at.max(self.capacity);
        }
        let (bucket, kept) = buckets
            .by_key
            .entry(key.clone())
            .or_insert_with(|| (Bucket::full(limit, now), limit));
        *kept = limit;
        bucket.take(limit, now)
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

    fn key(principal: &str, id: &str) -> SessionKey {
        SessionKey {
            principal: principal.into(),
            id: id.into(),
        }
    }

    #[test]
    fn past_capacity_the_longest_idle_live_sessions_go_and_terminated_ones_stay() {
        let store = MemorySessions::with_capacity(10);
        store.terminate(&key("a", "revoked"), at(0));
        for n in 0..9 {
            store.open(&key("a", &format!("s{n}")), at(n + 1));
        }
        // s0 is used again, so s1 is now the longest idle.
        store.record_allowed(&key("a", "s0"), &["read".into()]);
        store.open(&key("a", "s0"), at(100));
        store.open(&key("a", "new"), at(101));
        assert_eq!(store.len(), 10);
        assert!(store.open(&key("a", "revoked"), at(102)).terminated);
        assert!(
            store
                .open(&key("a", "s0"), at(103))
                .touched
                .contains("read")
        );
        let sessions = store.sessions.lock().expect("lock");
        assert!(
            !sessions.contains_key(&key("a", "s1")),
            "the longest idle live session went"
        );
    }

    #[test]
    fn only_refilled_buckets_are_swept() {
        let limit = Limit::parse("1/1m").expect("valid");
        let store = MemoryThrottles::with_capacity(4);
        let bucket = |n: usize| ThrottleKey {
            rule: "r".into(),
            principal: format!("p{n}"),
            shadow: false,
        };
        // p0 and p1 are emptied late; p2 and p3 early, so they refill first.
        assert_eq!(store.take(&bucket(2), limit, at(0)), Ok(()));
        assert_eq!(store.take(&bucket(3), limit, at(0)), Ok(()));
        assert_eq!(store.take(&bucket(0), limit, at(50)), Ok(()));
        assert_eq!(store.take(&bucket(1), limit, at(50)), Ok(()));
        // At 70 s p2 and p3 have refilled and can go; p0 and p1 have not.
        assert_eq!(store.take(&bucket(4), limit, at(70)), Ok(()));
        assert_eq!(store.len(), 3);
        assert!(
            store.take(&bucket(0), limit, at(71)).is_err(),
            "p0 still counts"
        );
        assert!(
            store.take(&bucket(1), limit, at(71)).is_err(),
            "p1 still counts"
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

/// The frozen baseline (DESIGN §4): the (principal, action) pairs each identity is known
/// to do. Once one is frozen, a decision on a pair outside it is `novel`.
pub trait Baseline: Send + Sync + std::fmt::Debug {
    /// Whether a baseline is frozen (so [`Baseline::novel`] is worth asking).
    fn is_frozen(&self) -> bool;
    /// `None` while no baseline is frozen; else whether `principal` (a Cedar uid string)
    /// has never done `action` (a Cedar uid string).
    fn novel(&self, principal: &str, action: &str) -> Option<bool>;
    /// The pair was allowed: it is known from now on.
    fn seen(&self, principal: &str, action: &str);
}

/// No baseline frozen: nothing is novel.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoBaseline;

impl Baseline for NoBaseline {
    fn is_frozen(&self) -> bool {
        false
    }

    fn novel(&self, _principal: &str, _action: &str) -> Option<bool> {
        None
    }

    fn seen(&self, _principal: &str, _action: &str) {}
}

/// A frozen baseline in memory: the pairs, and those allowed since the freeze.
#[derive(Debug, Default)]
pub struct MemoryBaseline {
    /// Principal → the actions it is known to do; `None` until a baseline is frozen.
    pairs: std::sync::RwLock<Option<HashMap<String, std::collections::HashSet<String>>>>,
}

impl MemoryBaseline {
    /// Freezes `pairs` as the baseline, replacing any earlier one.
    pub fn freeze(&self, pairs: impl IntoIterator<Item = (String, String)>) {
        let mut by_principal: HashMap<String, std::collections::HashSet<String>> = HashMap::new();
        for (principal, action) in pairs {
            by_principal.entry(principal).or_default().insert(action);
        }
        *self.pairs.write().unwrap_or_else(|p| p.into_inner()) = Some(by_principal);
    }
}

impl Baseline for MemoryBaseline {
    fn is_frozen(&self) -> bool {
        self.pairs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    fn novel(&self, principal: &str, action: &str) -> Option<bool> {
        let pairs = self.pairs.read().unwrap_or_else(|p| p.into_inner());
        let known = pairs
            .as_ref()?
            .get(principal)
            .is_some_and(|actions| actions.contains(action));
        Some(!known)
    }

    fn seen(&self, principal: &str, action: &str) {
        if let Some(pairs) = self
            .pairs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            pairs
                .entry(principal.to_owned())
                .or_default()
                .insert(action.to_owned());
        }
    }
}

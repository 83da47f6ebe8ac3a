//! A bounded map from a token's SHA-256 to what verifying it established, so that a token
//! presented again costs a hash and a lookup instead of a signature verification.
//!
//! Two generations approximate least-recently-used eviction at O(1): entries go into the
//! young generation; when it is full it becomes the old one and the previous old one is
//! dropped; a hit in the old generation moves the entry back to the young one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest as _, Sha256};

/// The most entries a cache holds.
pub(crate) const CAPACITY: usize = 65_536;

/// The key of a token: its SHA-256.
pub(crate) type TokenKey = [u8; 32];

pub(crate) fn key(token: &str) -> TokenKey {
    Sha256::digest(token.as_bytes()).into()
}

#[derive(Debug)]
pub(crate) struct TokenCache<V> {
    generations: Mutex<Generations<V>>,
    per_generation: usize,
}

#[derive(Debug)]
struct Generations<V> {
    young: HashMap<TokenKey, Arc<V>>,
    old: HashMap<TokenKey, Arc<V>>,
}

impl<V> TokenCache<V> {
    /// A cache of at most `capacity` entries (at least 2).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            generations: Mutex::new(Generations {
                young: HashMap::new(),
                old: HashMap::new(),
            }),
            per_generation: (capacity / 2).max(1),
        }
    }

    pub(crate) fn get(&self, key: &TokenKey) -> Option<Arc<V>> {
        let mut g = self.lock();
        if let Some(v) = g.young.get(key) {
            return Some(Arc::clone(v));
        }
        let v = g.old.remove(key)?;
        g.insert(*key, Arc::clone(&v), self.per_generation);
        Some(v)
    }

    pub(crate) fn insert(&self, key: TokenKey, value: Arc<V>) {
        self.lock().insert(key, value, self.per_generation);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        let g = self.lock();
        g.young.len() + g.old.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations<V>> {
        // The maps stay consistent whatever panicked while holding the lock.
        self.generations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl<V> Generations<V> {
    fn insert(&mut self, key: TokenKey, value: Arc<V>, per_generation: usize) {
        if self.young.len() >= per_generation && !self.young.contains_key(&key) {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(key, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_is_bounded_and_keeps_what_is_used() {
        let cache = TokenCache::new(4);
        for i in 0..4u8 {
            cache.insert([i; 32], Arc::new(i));
        }
        assert_eq!(cache.len(), 4);
        // 0 and 1 are old now; using 0 keeps it through the next turnover.
        assert_eq!(cache.get(&[0; 32]).as_deref(), Some(&0));
        cache.insert([9; 32], Arc::new(9));
        assert!(cache.len() <= 4);
        assert_eq!(cache.get(&[0; 32]).as_deref(), Some(&0));
        assert_eq!(cache.get(&[1; 32]), None);
        assert_eq!(cache.get(&[9; 32]).as_deref(), Some(&9));
        for i in 10..100u8 {
            cache.insert([i; 32], Arc::new(i));
            assert!(cache.len() <= 4);
        }
    }
}

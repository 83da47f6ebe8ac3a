//! The store-backed implementations of the engine's seams.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use arbiter_core::credential::Revoked;
use arbiter_core::state::{Baseline, MemoryBaseline};
use arbiter_store::{Store, StoreError};

/// The revocations committed to a store, followed: every process that verifies tokens
/// (a server, the MCP gateway) keeps them in memory, and each poll hands it those
/// committed since (by `arbiter token revoke`, another process, a `revoke` effect).
#[derive(Debug)]
pub struct RevocationFeed {
    store: Store,
    /// The last revocation `seq` handed over.
    seen: AtomicI64,
}

impl RevocationFeed {
    /// Hands every revocation in the store to `apply`, and follows the store from there.
    pub fn start(store: &Store, apply: impl Fn(&Revoked)) -> Result<RevocationFeed, StoreError> {
        let all = store.revocations_since(0)?;
        for r in &all {
            apply(&r.revoked());
        }
        Ok(RevocationFeed {
            store: store.clone(),
            seen: AtomicI64::new(all.last().map_or(0, |r| r.seq)),
        })
    }

    /// Hands the revocations committed since the last poll to `apply`. The store is read
    /// on the blocking pool; a failure is logged and the next poll tries again.
    pub async fn poll(&self, apply: impl Fn(&Revoked)) {
        let store = self.store.clone();
        let after = self.seen.load(Ordering::Acquire);
        match tokio::task::spawn_blocking(move || store.revocations_since(after)).await {
            Ok(Ok(new)) => {
                for r in &new {
                    apply(&r.revoked());
                    self.seen.fetch_max(r.seq, Ordering::AcqRel);
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "reading revocations"),
            Err(e) => tracing::error!(error = %e, "reading revocations"),
        }
    }
}

/// The frozen baseline as the engine sees it: in memory, with every pair allowed since
/// the freeze written to the store, and a freeze made elsewhere picked up on poll.
#[derive(Debug)]
pub struct StoreBaseline {
    memory: MemoryBaseline,
    store: Store,
    /// The `seq` of the freeze in memory (0: none).
    frozen: AtomicI64,
    /// How many pairs the store held when they were last read.
    pairs: AtomicU64,
}

impl StoreBaseline {
    /// The baseline the store holds, if one is frozen.
    pub fn load(store: &Store) -> Result<StoreBaseline, StoreError> {
        let baseline = StoreBaseline {
            memory: MemoryBaseline::default(),
            store: store.clone(),
            frozen: AtomicI64::new(0),
            pairs: AtomicU64::new(0),
        };
        baseline.refresh()?;
        Ok(baseline)
    }

    /// Loads the frozen set again when a newer freeze was made, or when pairs were added
    /// since (another server allowed a first-seen pair).
    pub fn refresh(&self) -> Result<(), StoreError> {
        let latest = self.store.latest_baseline()?;
        if latest == 0 {
            return Ok(());
        }
        // Pairs another server allowed since are picked up too.
        let count = self.store.baseline_pair_count()?;
        let newer = latest != self.frozen.load(Ordering::Acquire);
        if (newer || count != self.pairs.load(Ordering::Acquire))
            && let Some(pairs) = self.store.baseline_pairs()?
        {
            self.pairs.store(pairs.len() as u64, Ordering::Release);
            self.memory.freeze(pairs);
            self.frozen.store(latest, Ordering::Release);
            if newer {
                tracing::info!(
                    baseline = latest,
                    "baseline frozen; first-seen pairs are novel"
                );
            }
        }
        Ok(())
    }
}

impl Baseline for StoreBaseline {
    fn is_frozen(&self) -> bool {
        self.memory.is_frozen()
    }

    fn novel(&self, principal: &str, action: &str) -> Option<bool> {
        self.memory.novel(principal, action)
    }

    fn seen(&self, principal: &str, action: &str) {
        self.memory.seen(principal, action);
        // Once per pair: a lost write only makes the pair novel once more after a restart.
        // The decision path runs on a runtime worker, and this write waits for the shared
        // connection, SQLite's write lock (the log writer's batches) and an fsync: it goes
        // to the blocking pool.
        let store = self.store.clone();
        let (principal, action) = (principal.to_owned(), action.to_owned());
        let write = move || {
            if let Err(e) = store.add_baseline_pair(&principal, &action) {
                tracing::error!(error = %e, %principal, %action, "recording a pair in the baseline");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(write)),
            Err(_) => write(),
        }
    }
}

//! The baseline workflow (DESIGN §4, Baseline): least-privilege permits suggested from
//! what the store says identities did, and freezing what they do now so that a first-seen
//! (principal, action) pair is `novel` from then on.
//!
//! [`crate::permits`] is the pure part (observed rows in, a `.cedar` file out); this
//! module reads the store around it. The clock is the caller's: [`freeze`] takes `now`.

use std::collections::HashSet;

use arbiter_core::Pack;
use arbiter_store::{BaselineQuery, FindingQuery, Store, StoreError};
use jiff::Timestamp;

use crate::permits::{self, SuggestError, Suggestion};

/// Permits suggested from the store, and what they were drawn from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suggested {
    /// The `.cedar` file and its notes.
    pub suggestion: Suggestion,
    /// Observed (principal, action, resource) rows the suggestion was drawn from.
    pub observed: usize,
    /// Observed rows left out because reviewers marked them `expected`: a rule is right
    /// to block them, so they are not suggested as allowed.
    pub left_out: usize,
}

/// Why no suggestion could be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SuggestionError {
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The suggestion failed its own check (a bug in arbiter).
    #[error(transparent)]
    Suggest(#[from] SuggestError),
}

/// Suggests least-privilege permits for what `query` selects of the decision log, leaving
/// out what reviewers said a rule is right to block. `progress` is told (rows read, rows
/// in all) as the log is read.
pub fn suggest(
    pack: &Pack,
    store: &Store,
    query: &BaselineQuery,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Suggested, SuggestionError> {
    let observed = store.observed(query, progress)?;
    let blocked: HashSet<(String, String, String)> = store
        .findings(&FindingQuery {
            status: Some("expected".to_owned()),
            ..FindingQuery::default()
        })?
        .into_iter()
        .map(|f| (f.principal, f.action, f.resource))
        .collect();
    let before = observed.len();
    let observed: Vec<_> = observed
        .into_iter()
        .filter(|o| !blocked.contains(&(o.principal.clone(), o.action.clone(), o.resource.clone())))
        .collect();
    let suggestion = permits::suggest(pack, &observed)?;
    Ok(Suggested {
        suggestion,
        observed: observed.len(),
        left_out: before - observed.len(),
    })
}

/// A frozen baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frozen {
    /// Its number: a later freeze has a larger one.
    pub seq: i64,
    /// How many (principal, action) pairs it holds.
    pub pairs: u64,
}

/// Freezes what each identity did (since `since`, when given) as the baseline, recorded as
/// made by `by` at `now`. A running server picks it up on its next poll.
pub fn freeze(
    store: &Store,
    by: &str,
    since: Option<Timestamp>,
    now: Timestamp,
) -> Result<Frozen, StoreError> {
    let (seq, pairs) = store.freeze_baseline(by, since, now)?;
    Ok(Frozen { seq, pairs })
}

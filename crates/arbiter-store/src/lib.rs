//! arbiter's embedded store (DESIGN §4, §6): the decision log, the evidence of the
//! audit→enforce lifecycle, pack versions, revocations and the masking key, in SQLite
//! under one data directory.
//!
//! The server opens a [`Store`] and starts a [`LogWriter`] on it; `arbiter log` opens the
//! same directory with [`Store::open_read_only`] while the server runs. The `Store`'s
//! methods block on SQLite: async callers run them on `spawn_blocking`. The writer does
//! its SQLite work on a thread of its own, so [`LogWriter::append`] only waits on a queue.
//!
//! - `store`: opening the database (WAL, busy timeout, migrations), the shared connection,
//!   the readiness probe.
//! - `schema`: the versioned migrations.
//! - `decisions`: [`DecisionRecord`], and reading the log a page at a time
//!   ([`DecisionQuery`], [`DecisionPage`]).
//! - `writer`: [`LogWriter`], batching with back-pressure, retry and drain; each batch
//!   also brings findings and `rule_days` up to date in its transaction.
//! - `findings`: [`Finding`]s, audit and warn firings grouped by (rule, principal, action,
//!   resource), and their append-only [`Review`]s ([`Store::findings`], [`Store::review`]).
//! - `identities`: the principals the log has seen ([`Store::principals`]) and what one
//!   did ([`Store::activity`]), and one decision by id ([`Store::decision`]).
//! - `summaries`: what each identity did, summed up by the log writer (outcomes,
//!   credentials, novel actions, what it did), for [`Store::activity`] and
//!   [`Store::observed`].
//! - `rule_days`: [`RuleDay`], per rule, UTC day and pack version, how often it was in
//!   scope, fired and errored: what readiness counts ([`Store::rule_days`]).
//! - `outcomes`: decisions per UTC hour and outcome ([`Store::outcome_hours`]), for the
//!   dashboard's charts.
//! - `promotions`: every [`Promotion`] and demotion of a rule's mode, with who and why.
//! - `packs`: [`PackVersion`]s and their rules' hashes, and every load.
//! - `candidates`: what candidate packs found in shadow (`serve --candidate`): per
//!   candidate version, its changes by rule and by principal, bounded
//!   ([`CandidateWriter`], [`Store::candidate_report`]).
//! - `revocations`: [`Revocation`]s of tokens, principals and sessions, durable when
//!   [`Store::revoke`] returns, read back in commit order with [`Store::revocations_since`].
//! - `mask`: [`Masker`], keyed hashing of request values before they are logged.
//! - `error`: [`StoreError`].
//!
//! Data directory layout: `arbiter.db` (with SQLite's `-wal` and `-shm` beside it) and
//! `mask.key`.

#![forbid(unsafe_code)]

mod baseline;
mod candidates;
mod decisions;
mod error;
mod findings;
mod identities;
mod mask;
mod outcomes;
mod packs;
mod promotions;
mod revocations;
mod rule_days;
mod schema;
mod segment;
mod store;
mod summaries;
mod writer;

pub use baseline::{BaselineQuery, Observed};
pub use candidates::{
    CandidateInfo, CandidateLoad, CandidateReport, CandidateWriter, Overflow, ShadowCounts,
    ShadowGroup, ShadowLimits, ShadowTally,
};
pub use decisions::{
    DECISIONS, DecisionEvidence, DecisionPage, DecisionQuery, DecisionRecord, Logged,
    LoggedCredential, MAX_PAGE, McpCall, McpIdentity, Refusal, Stamp, StoredDecision, Usage,
};
pub use error::StoreError;
pub use findings::{
    FINDING_STATUSES, Finding, FindingFacts, FindingQuery, Review, ReviewVerdict,
    UnknownReviewVerdict,
};
pub use identities::{Activity, CredentialSeen, MAX_CREDENTIALS, Novel, Seen};
pub use mask::{MASK_KEY_FILE, MASK_PREFIX, Masker};
pub use outcomes::OutcomeHour;
pub use packs::{PackLoad, PackVersion, RuleVersion, SCOPE_KIND};
pub use promotions::Promotion;
pub use revocations::{MAX_REVOCATION_VALUE, Revocation, RevocationKind};
pub use rule_days::{RuleDay, RuleError};
pub use store::{DB_FILE, Store};
pub use writer::{Durability, LogError, LogWriter, MAX_BATCH, QUEUE_BYTES};

/// For tests of the migrations only: creates the database in `data_dir` at schema
/// `version`, as an older arbiter left it, with nothing in it.
#[doc(hidden)]
pub fn create_at_version(data_dir: &std::path::Path, version: usize) -> Result<(), StoreError> {
    let path = data_dir.join(DB_FILE);
    let mut conn = rusqlite::Connection::open(&path).map_err(|cause| StoreError::Open {
        path: path.clone(),
        cause,
    })?;
    schema::migrations()
        .to_version(&mut conn, version)
        .map_err(|cause| StoreError::Migrate { path, cause })
}

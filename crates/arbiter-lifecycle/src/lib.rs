//! The audit→enforce lifecycle (DESIGN §4): what the evidence says about each rule that is
//! not enforced yet, and the reviewable change that promotes it.
//!
//! The workflows the CLI runs (and the server, where it offers them) live here, so that a
//! command is argument parsing, printing and an exit code around one library call. Time is
//! always the caller's: nothing here reads the wall clock.
//!
//! - [`readiness`]: the verdict for every non-enforced rule and default-deny scope, with
//!   its reasons and evidence; [`readiness::assess`] gathers it from a store.
//! - [`promote`]: rewriting a rule's `@mode` (or a scope's mode in `arbiter.toml`) in
//!   place, every other byte kept.
//! - [`promotion`]: the promote/demote workflow around that edit: the readiness gate,
//!   forcing with a reason, the record in the store, undo when it cannot be recorded.
//! - [`permits`]: least-privilege permits from what each identity was observed doing
//!   (rows in, a `.cedar` file out).
//! - [`drift`]: the rule-level difference between two packs, downgrades first
//!   (`arbiter diff`).
//! - [`baseline`]: the baseline workflow on a store: suggesting permits from the decision
//!   log, and freezing the baseline.

#![forbid(unsafe_code)]

pub mod baseline;
pub mod chains;
pub mod drift;
pub mod permits;
pub mod promote;
pub mod promotion;
pub mod readiness;
pub mod report;

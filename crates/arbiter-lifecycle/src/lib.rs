//! The audit→enforce lifecycle (DESIGN §4): what the evidence says about each rule that is
//! not enforced yet, and the reviewable change that promotes it.
//!
//! - [`readiness`]: the verdict for every non-enforced rule and default-deny scope, with
//!   its reasons and evidence.
//! - [`promote`]: rewriting a rule's `@mode` (or a scope's mode in `arbiter.toml`) in
//!   place, every other byte kept.
//! - [`baseline`]: what each identity actually does, and least-privilege permits
//!   suggested from it.

#![forbid(unsafe_code)]

pub mod baseline;
pub mod promote;
pub mod readiness;

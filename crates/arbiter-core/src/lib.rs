//! arbiter's core: policy packs and the decision engine.
//!
//! This crate has no network and no database in it: it loads a pack (DESIGN §2), and
//! decides requests against it (DESIGN §3) with injected time and pluggable session,
//! throttle and credential state. The CLI, the server and replay all decide through
//! [`Engine::decide`].
//!
//! - [`pack`]: loading and validating a pack, with every problem located.
//! - [`engine`]: the decision algorithm.
//! - [`request`], [`response`]: the wire shapes of a decision; [`json`]: JSON read strictly.
//! - [`rule`]: modes, effects and the other annotation values.
//! - [`state`]: sessions and throttle buckets.
//! - [`credential`]: the seam for credential verification, and what a revocation names;
//!   [`jwk`]: which keys of an issuer's JWKS can verify its tokens.
//! - [`catalog`]: the framework catalog `@maps` ids are checked against.
//! - [`policy_tests`]: `arbiter test`, policy tests as data.
//! - [`fs`]: files written atomically (keys, tokens, edited pack files).
//! - [`clock`], [`period`], [`config`], [`diag`]: the pieces around them.
//!
//! ```
//! use std::sync::Arc;
//! use arbiter_core::{DecisionRequest, Engine, Pack, TimeSource};
//! use arbiter_core::response::Outcome;
//!
//! let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/agents-and-pipelines");
//! let pack = Arc::new(Pack::load(dir).expect("the example pack loads"));
//! let engine = Engine::new(pack).with_time_source(TimeSource::RequestMaySet);
//! let request = DecisionRequest::from_json(r#"{
//!     "principal": "Agent::\"support-bot\"", "action": "Action::\"read_ticket\"",
//!     "resource": "Ticket::\"T-1\"", "time": "2026-11-26T10:00:00Z"}"#).expect("well-formed");
//! let decision = engine.decide(&request).expect("valid");
//! assert_eq!(decision.decision, Outcome::Allow);
//! ```

#![forbid(unsafe_code)]

pub mod catalog;
pub mod clock;
pub mod config;
mod context;
pub mod credential;
pub mod diag;
pub mod engine;
pub mod fs;
mod guard;
mod index;
pub mod json;
pub mod jwk;
mod needs;
pub mod pack;
pub mod period;
mod plan;
pub mod policy_tests;
pub mod request;
pub mod response;
pub mod rule;
pub mod state;

pub use engine::{Engine, Explanation, TimeSource};
pub use pack::Pack;
pub use request::{DecisionRequest, RequestError};
pub use response::Decision;

//! arbiter's decision service (see README.md): the one path by which a request body
//! becomes a decision and a decision-log record, for every caller.
//!
//! - [`DecisionService`]: decide, record, make a `revoke` durable, observe.
//! - [`adapters`]: the store-backed seams the engine calls ([`StoreBaseline`]), and the
//!   revocations a store holds, followed ([`RevocationFeed`]).
//! - [`replay`]: a candidate pack deciding logged requests again, compared with the log.
//! - [`shadow`]: a candidate pack deciding a sample of live requests off the request path
//!   (`arbiter serve --candidate`), its differences kept in the store.

#![forbid(unsafe_code)]

pub mod adapters;
pub mod replay;
mod service;
pub mod shadow;

pub use adapters::{RevocationFeed, StoreBaseline};
pub use service::{
    Decided, DecisionService, Observer, Recording, ServiceError, Unobserved, token_fingerprint,
};

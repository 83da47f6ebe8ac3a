//! arbiter's credentials (DESIGN §3 step 2): the short-lived tokens arbiter issues to
//! non-human identities, their verification at every decision, their revocation, and the
//! exchange of upstream workload tokens (a CI job's OIDC token, a Kubernetes
//! service-account token, a SPIFFE JWT-SVID) for them.
//!
//! The server and the CLI use this crate; it has no network and no database in it. Time is
//! always passed in, never read from the system clock, and every input a caller can send
//! returns an error rather than a panic.
//!
//! - [`Keyring`]: arbiter's Ed25519 signing keys on disk, their rotation and their JWKS.
//! - [`mint`]: a token for a principal, within `[credentials]` and `[intents]` limits.
//! - [`Verifier`]: arbiter's own tokens at every decision, with a cache of verified tokens;
//!   it is the [`CredentialVerifier`](arbiter_core::credential::CredentialVerifier) the engine
//!   calls.
//! - [`Revocations`]: what is revoked, in memory; a [`RevocationSink`] makes new ones
//!   durable.
//! - [`Upstream`]: tokens of the pack's `[[issuers]]`, verified and mapped to a principal.

#![forbid(unsafe_code)]

mod cache;
mod jws;
mod keyring;
mod mint;
mod revocation;
mod upstream;
mod verify;

pub use keyring::{IdentityError, KeyFileError, Keyring};
pub use mint::{MintError, MintRequest, Minted, mint};
pub use revocation::{Revocations, Revoked};
pub use upstream::{ExchangeError, Exchanged, JwksError, Upstream, UpstreamError};
pub use verify::{Verifier, read_unverified};

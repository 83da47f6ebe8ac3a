//! Who calls the tools: the agent behind the proxy. Either an arbiter token, verified when
//! the proxy starts and again at every decision (expiry and revocation apply mid-session),
//! or a principal configured for local use, which nothing proves and the log says so.
//!
//! The verifier is `serve`'s: the data directory's signing keys and every revocation in
//! its store, with revocations made elsewhere (`arbiter token revoke`, a server's `revoke`
//! effect) picked up by [`Credentials::poll`].

use std::path::Path;
use std::sync::Arc;

use arbiter_core::credential::{CredentialFailure, CredentialVerifier};
use arbiter_identity::{Keyring, Revocations, Verifier};
use arbiter_service::RevocationFeed;
use arbiter_store::{McpIdentity, Store};
use cedar_policy::EntityUid;
use jiff::Timestamp;

/// The agent, as the decisions name it.
#[derive(Debug, Clone)]
pub enum Caller {
    /// An arbiter token, presented with every decision.
    Verified {
        /// The principal the token names.
        principal: EntityUid,
        /// The token.
        token: String,
        /// The session the token is bound to, if any: the decisions are made in it.
        session: Option<String>,
    },
    /// A principal configured for local use, taken on trust.
    Unverified {
        /// The principal.
        principal: EntityUid,
    },
}

/// Why the proxy cannot say who calls.
#[derive(Debug, thiserror::Error)]
pub enum CallerError {
    /// The token does not verify now.
    #[error("the arbiter token does not verify: credential:{}", .0.as_str())]
    Token(CredentialFailure),
    /// The configured principal is not a Cedar entity uid.
    #[error("`{text}` is not a principal like `Agent::\"bot\"`: {cause}")]
    Principal {
        /// As given.
        text: String,
        /// What Cedar says.
        cause: String,
    },
}

impl Caller {
    /// The caller a token names, verified at `now`.
    pub fn verified(
        token: String,
        verifier: &dyn CredentialVerifier,
        now: Timestamp,
    ) -> Result<Caller, CallerError> {
        let credential = verifier.verify(&token, now).map_err(CallerError::Token)?;
        Ok(Caller::Verified {
            principal: credential.principal,
            token,
            session: credential.session,
        })
    }

    /// The caller a token names, for a remote decision point to verify: the token is read,
    /// not verified ([`arbiter_identity::read_unverified`]); every decision presents it,
    /// and the decision point verifies it then.
    pub fn presented(token: String) -> Result<Caller, CallerError> {
        let credential = arbiter_identity::read_unverified(&token).map_err(CallerError::Token)?;
        Ok(Caller::Verified {
            principal: credential.principal,
            token,
            session: credential.session,
        })
    }

    /// A principal for local use, unverified.
    pub fn configured(principal: &str) -> Result<Caller, CallerError> {
        let principal = principal
            .parse::<EntityUid>()
            .map_err(|e| CallerError::Principal {
                text: principal.to_owned(),
                cause: e.to_string(),
            })?;
        Ok(Caller::Unverified { principal })
    }

    /// The principal.
    pub fn principal(&self) -> &EntityUid {
        match self {
            Caller::Verified { principal, .. } | Caller::Unverified { principal } => principal,
        }
    }

    /// The token, when verified.
    pub fn token(&self) -> Option<&str> {
        match self {
            Caller::Verified { token, .. } => Some(token),
            Caller::Unverified { .. } => None,
        }
    }

    /// The session the token binds, if any.
    pub fn bound_session(&self) -> Option<&str> {
        match self {
            Caller::Verified { session, .. } => session.as_deref(),
            Caller::Unverified { .. } => None,
        }
    }

    /// How the decision log records it.
    pub fn identity(&self) -> McpIdentity {
        match self {
            Caller::Verified { .. } => McpIdentity::Verified,
            Caller::Unverified { .. } => McpIdentity::Unverified,
        }
    }
}

/// The verifier of the data directory's tokens, and the revocations behind it.
#[derive(Debug)]
pub struct Credentials {
    verifier: Arc<Verifier>,
    revocations: Arc<Revocations>,
    feed: RevocationFeed,
}

impl Credentials {
    /// The signing keys of `data` (made on first use, as `serve` does) and every
    /// revocation in `store`, verifying as `[credentials]` of the pack says.
    pub fn open(
        data: &Path,
        store: &Store,
        credentials: &arbiter_core::config::Credentials,
        now: Timestamp,
    ) -> Result<Credentials, CredentialsError> {
        let keyring = Keyring::load_or_create(data, now)?;
        let revocations = Arc::new(Revocations::default());
        let feed = RevocationFeed::start(store, |r| revocations.apply(r))?;
        Ok(Credentials {
            verifier: Arc::new(Verifier::new(
                keyring,
                credentials,
                Arc::clone(&revocations),
            )),
            revocations,
            feed,
        })
    }

    /// The verifier, for the engine.
    pub fn verifier(&self) -> Arc<Verifier> {
        Arc::clone(&self.verifier)
    }

    /// Applies the revocations committed since the last poll (by another process, or by
    /// this one's `revoke` effects). Runs the store read on the blocking pool.
    pub async fn poll(&self) {
        self.feed.poll(|r| self.revocations.apply(r)).await;
    }
}

/// Why the verifier could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The signing keys could not be read or made.
    #[error("{0}")]
    Keys(#[from] arbiter_identity::IdentityError),
    /// The revocations could not be read.
    #[error("{0}")]
    Store(#[from] arbiter_store::StoreError),
}

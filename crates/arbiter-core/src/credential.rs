//! The seam for DESIGN §3 step 2: verifying a presented credential. Until an issuer is
//! configured no credential can be verified, so a presented one is refused
//! (`credential:unknown_issuer`) rather than trusted.

use cedar_policy::EntityUid;
use jiff::Timestamp;

/// What a verified credential tells the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCredential {
    /// The token's id, for revocation.
    pub jti: String,
    /// Who issued it.
    pub issuer: String,
    /// The principal it names.
    pub principal: EntityUid,
    /// The task intent it carries.
    pub intent: Option<String>,
    /// The session it is bound to.
    pub session: Option<String>,
    /// When it was issued.
    pub issued_at: Timestamp,
    /// When it expires.
    pub expires_at: Timestamp,
    /// Principal attributes it vouches for (claims an exchange copied from the upstream
    /// token). They describe the principal only when the pack's entities do not.
    pub attributes: std::collections::BTreeMap<String, String>,
}

/// Why a credential does not count; the decision's reason is `credential:<why>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialFailure {
    /// The principal type requires one and none was presented.
    Missing,
    /// Past `exp`.
    Expired,
    /// Before `nbf`.
    NotYetValid,
    /// Lives longer (`exp` minus `iat`, or minus `nbf` when earlier) than the
    /// `[credentials] max_ttl` in force: signed with a stolen or leftover key, or minted
    /// before `max_ttl` was lowered.
    LifetimeExceedsMaxTtl,
    /// The signature does not verify.
    BadSignature,
    /// No configured issuer accepts it.
    UnknownIssuer,
    /// Not meant for this audience.
    WrongAudience,
    /// Revoked (token, principal or session).
    Revoked,
    /// Names another principal than the request.
    PrincipalMismatch,
    /// Bound to another session than the request's.
    SessionMismatch,
    /// Not a well-formed token.
    Malformed,
}

impl CredentialFailure {
    /// The word after `credential:` in the decision's reason.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialFailure::Missing => "missing",
            CredentialFailure::Expired => "expired",
            CredentialFailure::NotYetValid => "not_yet_valid",
            CredentialFailure::LifetimeExceedsMaxTtl => "lifetime_exceeds_max_ttl",
            CredentialFailure::BadSignature => "bad_signature",
            CredentialFailure::UnknownIssuer => "unknown_issuer",
            CredentialFailure::WrongAudience => "wrong_audience",
            CredentialFailure::Revoked => "revoked",
            CredentialFailure::PrincipalMismatch => "principal_mismatch",
            CredentialFailure::SessionMismatch => "session_mismatch",
            CredentialFailure::Malformed => "malformed",
        }
    }

    /// The failure a word names (as in `credential:<word>`), if any.
    pub fn from_word(word: &str) -> Option<CredentialFailure> {
        [
            CredentialFailure::Missing,
            CredentialFailure::Expired,
            CredentialFailure::NotYetValid,
            CredentialFailure::LifetimeExceedsMaxTtl,
            CredentialFailure::BadSignature,
            CredentialFailure::UnknownIssuer,
            CredentialFailure::WrongAudience,
            CredentialFailure::Revoked,
            CredentialFailure::PrincipalMismatch,
            CredentialFailure::SessionMismatch,
            CredentialFailure::Malformed,
        ]
        .into_iter()
        .find(|f| f.as_str() == word)
    }
}

/// Verifies credentials and revokes them.
pub trait CredentialVerifier: Send + Sync + std::fmt::Debug {
    /// Verifies a compact token at `now`.
    fn verify(&self, token: &str, now: Timestamp) -> Result<VerifiedCredential, CredentialFailure>;
    /// Puts a revocation made by an enforced `revoke` rule in force in this process, at
    /// once. It does no I/O: the engine reports the revocation in
    /// [`Decision::revoked`](crate::Decision::revoked), and the caller that owns a store
    /// makes it durable off the async runtime.
    fn revoke(&self, revoked: &Revoked);
    /// Whether the session `id` of `principal` (a Cedar uid string) has been revoked, by
    /// an administrator or by a `revoke` effect before a restart.
    fn session_revoked(&self, _principal: &str, _id: &str) -> bool {
        false
    }
}

/// One revocation: of a token, of every token of a principal issued before a time, or of
/// a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// One token, by its `jti`.
    Jti(String),
    /// Every token of a principal (its Cedar uid, `Agent::"bot"`) issued before `before`.
    Principal {
        /// The principal's Cedar uid.
        principal: String,
        /// The cut-off: tokens issued earlier are revoked, later ones are not.
        before: Timestamp,
    },
    /// A session: of one principal, or of every principal when `principal` is `None`.
    Session {
        /// The session's principal (its Cedar uid).
        principal: Option<String>,
        /// The session id.
        id: String,
    },
}

/// No issuer is configured: nothing verifies.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoIssuers;

impl CredentialVerifier for NoIssuers {
    fn verify(
        &self,
        token: &str,
        _now: Timestamp,
    ) -> Result<VerifiedCredential, CredentialFailure> {
        if token.split('.').count() != 3 {
            return Err(CredentialFailure::Malformed);
        }
        Err(CredentialFailure::UnknownIssuer)
    }

    fn revoke(&self, _revoked: &Revoked) {}
}

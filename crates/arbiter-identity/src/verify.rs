//! Verification of arbiter's own tokens, at every decision that presents one (DESIGN §3
//! step 2). Signature, issuer and audience are checked once per token and remembered; the
//! lifetime against `[credentials] max_ttl`, the time window and revocation are checked on
//! every call, against the settings in force and the `now` it is given.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use arbiter_core::config::Credentials;
use arbiter_core::credential::{CredentialFailure, CredentialVerifier, VerifiedCredential};
use arc_swap::ArcSwap;
use cedar_policy::EntityUid;
use jiff::{SignedDuration, Timestamp};
use jsonwebtoken::Validation;
use jsonwebtoken::errors::ErrorKind;
use serde::de::IgnoredAny;
use serde_json::Value;

use crate::cache::{self, TokenCache};
use crate::jws::{self, ClaimError, Object, Validity};
use crate::keyring::Keyring;
use crate::revocation::{Revocations, Revoked};

/// Verifies arbiter's tokens and revokes them; the engine's
/// [`CredentialVerifier`].
pub struct Verifier {
    state: ArcSwap<State>,
    issuer: String,
    audience: String,
    leeway: SignedDuration,
    /// `[credentials] max_ttl` of the pack in force: no token lives longer, whatever key
    /// signed it and whenever it was minted.
    max_ttl: SignedDuration,
    revocations: Arc<Revocations>,
}

/// The keys and what was verified with them: a new keyring starts a new cache, so no
/// token is taken on the word of a key that is gone.
struct State {
    keyring: Keyring,
    cache: TokenCache<Verified>,
}

/// What a token's signature established; the same whenever it is presented.
#[derive(Debug)]
struct Verified {
    credential: VerifiedCredential,
    /// `nbf`, or `iat` when it has none.
    not_before: Timestamp,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("keyring", &self.state.load().keyring)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .field("max_ttl", &self.max_ttl)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier of tokens signed by `keyring`'s keys, issued and meant as `credentials`
    /// says.
    pub fn new(
        keyring: Keyring,
        credentials: &Credentials,
        revocations: Arc<Revocations>,
    ) -> Verifier {
        Verifier {
            state: ArcSwap::from_pointee(State::new(keyring)),
            issuer: credentials.issuer.clone(),
            audience: credentials.audience.clone(),
            leeway: jws::leeway(credentials.leeway),
            // Periods are at most a hundred years; saturating changes nothing real.
            max_ttl: SignedDuration::try_from(credentials.max_ttl.duration())
                .unwrap_or(SignedDuration::MAX),
            revocations,
        }
    }

    /// Verifies with these keys from now on (after a rotation).
    pub fn set_keyring(&self, keyring: Keyring) {
        self.state.store(Arc::new(State::new(keyring)));
    }

    /// The keys it verifies with; the active one is the one to mint with.
    pub fn keyring(&self) -> Keyring {
        self.state.load().keyring.clone()
    }

    /// Checks signature, issuer, audience and claim types: what does not change with time.
    ///
    /// The token is read by [`jws::split`] first, and judged by arbiter's rules before
    /// jsonwebtoken sees it: the size limit, a `crit` header, header and claims as JSON
    /// objects without duplicate keys, `alg` exactly `EdDSA`, `iss`, and a `kid` of this
    /// keyring. jsonwebtoken then verifies the signature (and reads the header into its
    /// own struct); every claim is judged by arbiter again, from the same text.
    fn verify_signed(&self, keyring: &Keyring, token: &str) -> Result<Verified, CredentialFailure> {
        let compact = jws::split(token).map_err(|_| CredentialFailure::Malformed)?;
        // Only EdDSA: `none`, HMAC (a public key used as a shared secret) and the other
        // algorithms never reach a key.
        if jws::alg(&compact.header) != Some("EdDSA") {
            return Err(CredentialFailure::BadSignature);
        }
        // Read before the signature only to refuse early; nothing is trusted yet.
        match compact.claims.get("iss") {
            Some(Value::String(iss)) if *iss == self.issuer => {}
            Some(Value::String(_)) | None => return Err(CredentialFailure::UnknownIssuer),
            Some(_) => return Err(CredentialFailure::Malformed),
        }
        let key = compact
            .header
            .get("kid")
            .and_then(Value::as_str)
            .and_then(|kid| keyring.decoding_key(kid))
            .ok_or(CredentialFailure::BadSignature)?;
        match jsonwebtoken::decode::<IgnoredAny>(token, key, &signature_only()) {
            Ok(_) => {}
            // A header member jsonwebtoken cannot read (`"typ": 5`): not a header arbiter
            // writes.
            Err(e) if matches!(e.kind(), ErrorKind::Json(_)) => {
                return Err(CredentialFailure::Malformed);
            }
            Err(_) => return Err(CredentialFailure::BadSignature),
        }
        // Signed by arbiter from here on.
        match jws::audience_contains(&compact.claims, &self.audience) {
            Ok(true) => {}
            Ok(false) => return Err(CredentialFailure::WrongAudience),
            Err(_) => return Err(CredentialFailure::Malformed),
        }
        credential(&compact.claims).map_err(|_| CredentialFailure::Malformed)
    }

    /// Checks what changes with time or with the settings: the lifetime against the
    /// `max_ttl` in force, the validity window at `now`, and revocation. Run on every call,
    /// cached or not, so a lower `max_ttl` (after a reload) applies to tokens already seen.
    fn check_now(&self, verified: &Verified, now: Timestamp) -> Result<(), CredentialFailure> {
        // From the earliest moment the token claims to be usable: a backdated `nbf` would
        // otherwise stretch its window past what `exp - iat` shows.
        let start = verified.not_before.min(verified.credential.issued_at);
        if verified.credential.expires_at.duration_since(start) > self.max_ttl {
            return Err(CredentialFailure::LifetimeExceedsMaxTtl);
        }
        match jws::validity(
            now,
            Some(verified.not_before),
            verified.credential.expires_at,
            self.leeway,
        ) {
            Validity::Valid => {}
            Validity::Expired => return Err(CredentialFailure::Expired),
            Validity::NotYetValid => return Err(CredentialFailure::NotYetValid),
        }
        if self.revocations.is_revoked(&verified.credential) {
            return Err(CredentialFailure::Revoked);
        }
        Ok(())
    }
}

impl State {
    fn new(keyring: Keyring) -> State {
        State {
            keyring,
            cache: TokenCache::new(cache::CAPACITY),
        }
    }
}

/// What jsonwebtoken is asked to check of arbiter's tokens: the EdDSA signature, nothing
/// else. Time is arbiter's (checked against the `now` each call is given, never the
/// system clock), and so are `iss`, `aud` and every other claim; with these settings
/// jsonwebtoken reads no clock and requires no claim.
fn signature_only() -> Validation {
    let mut validation = Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    validation.leeway = 0;
    validation
}

/// The credential a signed token's claims describe.
fn credential(claims: &Object) -> Result<Verified, ClaimError> {
    let required_string = |name: &str| -> Result<String, ClaimError> {
        match jws::optional_string(claims, name)? {
            Some(s) if !s.is_empty() => Ok(s.to_owned()),
            _ => Err(ClaimError::MissingOrEmpty(name.to_owned())),
        }
    };
    let optional = |name: &str| -> Result<Option<String>, ClaimError> {
        match jws::optional_string(claims, name)? {
            Some("") => Err(ClaimError::Empty(name.to_owned())),
            other => Ok(other.map(str::to_owned)),
        }
    };
    let required_date = |name: &str| -> Result<Timestamp, ClaimError> {
        jws::optional_date(claims, name)?.ok_or_else(|| ClaimError::Missing(name.to_owned()))
    };
    let sub = required_string("sub")?;
    let principal = sub
        .parse::<EntityUid>()
        .map_err(|e| ClaimError::NotAnEntityUid(Box::new(e)))?;
    let issued_at = required_date("iat")?;
    let iss = required_string("iss")?;
    let via = optional("via")?;
    let attributes = match claims.get("attrs") {
        None => BTreeMap::new(),
        Some(Value::Object(attrs)) => attrs
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => Err(ClaimError::Attribute {
                    attribute: k.clone(),
                    found: jws::kind(other),
                }),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(jws::wrong_type("attrs", other, "an object")),
    };
    Ok(Verified {
        not_before: jws::optional_date(claims, "nbf")?.unwrap_or(issued_at),
        credential: VerifiedCredential {
            jti: required_string("jti")?,
            issuer: via.unwrap_or(iss),
            principal,
            intent: optional("intent")?,
            session: optional("session")?,
            issued_at,
            expires_at: required_date("exp")?,
            attributes,
        },
    })
}

impl CredentialVerifier for Verifier {
    fn verify(&self, token: &str, now: Timestamp) -> Result<VerifiedCredential, CredentialFailure> {
        if token.len() > jws::MAX_TOKEN_BYTES {
            return Err(CredentialFailure::Malformed);
        }
        let state = self.state.load();
        let key = cache::key(token);
        let verified = match state.cache.get(&key) {
            Some(verified) => verified,
            None => {
                let verified = Arc::new(self.verify_signed(&state.keyring, token)?);
                state.cache.insert(key, Arc::clone(&verified));
                verified
            }
        };
        self.check_now(&verified, now)?;
        Ok(verified.credential.clone())
    }

    /// In force at once, in memory; the engine reports it in the decision, and the
    /// caller that owns the store makes it durable.
    fn revoke(&self, revoked: &Revoked) {
        self.revocations.apply(revoked);
    }

    fn session_revoked(&self, principal: &str, id: &str) -> bool {
        self.revocations.session_revoked(principal, id)
    }
}

/// What a token says, read WITHOUT checking its signature, issuer, audience or times:
/// for an enforcement point that cannot verify (it lacks the keys) and must still name
/// the principal in its requests, to a decision point that verifies the same token at
/// every decision. Never a ground for any decision by itself.
pub fn read_unverified(token: &str) -> Result<VerifiedCredential, CredentialFailure> {
    let compact = jws::split(token).map_err(|_| CredentialFailure::Malformed)?;
    credential(&compact.claims)
        .map(|verified| verified.credential)
        .map_err(|_| CredentialFailure::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeat_is_served_from_the_cache_and_still_checked_in_time() {
        let dir = tempfile::tempdir().unwrap();
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let keyring = Keyring::load_or_create(dir.path(), now).unwrap();
        let credentials = Credentials::default();
        let verifier = Verifier::new(keyring.clone(), &credentials, Arc::default());
        let request = crate::MintRequest {
            principal: r#"Agent::"bot""#.parse().unwrap(),
            ttl: std::time::Duration::from_secs(60),
            intent: None,
            session: None,
            audience: None,
            attributes: BTreeMap::new(),
            via: None,
        };
        let minted = crate::mint(&keyring, &credentials, &BTreeMap::new(), &request, now).unwrap();
        let first = verifier.verify(&minted.token, now).unwrap();
        let state = verifier.state.load();
        assert_eq!(state.cache.len(), 1);

        // Mark the cached entry: a repeat returns it rather than verifying again.
        let mut marked = first.clone();
        marked.jti = "from-the-cache".to_owned();
        state.cache.insert(
            cache::key(&minted.token),
            Arc::new(Verified {
                credential: marked,
                not_before: now,
            }),
        );
        assert_eq!(
            verifier.verify(&minted.token, now).unwrap().jti,
            "from-the-cache"
        );
        let late = now.checked_add(SignedDuration::from_secs(90)).unwrap();
        assert_eq!(
            verifier.verify(&minted.token, late),
            Err(CredentialFailure::Expired)
        );

        // New keys, new cache.
        verifier.set_keyring(keyring);
        assert_eq!(verifier.state.load().cache.len(), 0);
        assert_eq!(verifier.verify(&minted.token, now), Ok(first));
    }
}

//! Upstream token exchange (`POST /v1/token`): a token of one of the pack's `[[issuers]]`
//! (a CI job's OIDC token, a Kubernetes service-account token, a SPIFFE JWT-SVID) is
//! verified with that issuer's keys and algorithms and mapped to a principal and its
//! attributes, for a short-lived arbiter token. The HTTP endpoint and the fetching of
//! `jwks_url` keys are the server's; this module only verifies and maps.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use arbiter_core::Pack;
use arbiter_core::config::{Preset, PrincipalTemplate};
use arbiter_core::jwk::{self, Algorithm, PublicKey, UsableKey};
use cedar_policy::EntityUid;
use jiff::{SignedDuration, Timestamp};
use jsonwebtoken::DecodingKey;
use serde_json::Value;

use crate::jws::{self, Object, Validity};

/// A token that an exchange accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchanged {
    /// The `[[issuers]]` name.
    pub issuer: String,
    /// The principal its template maps the token to.
    pub principal: EntityUid,
    /// The configured attributes, copied from claims.
    pub attributes: BTreeMap<String, String>,
    /// The intents the issuer's workloads may ask for (`None`: any of the pack's).
    pub allowed_intents: Option<Vec<String>>,
    /// The upstream token's `exp`.
    pub expires_at: Timestamp,
}

/// Why an upstream token was refused.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// Not a well-formed token, or a claim of the wrong shape.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// No `[[issuers]]` entry has this `iss`.
    #[error("no [[issuers]] entry has iss `{0}`")]
    UnknownIssuer(String),
    /// The algorithm is not one the issuer signs with, or no key of the issuer verifies
    /// the signature.
    #[error("the signature does not verify with the issuer's keys and algorithms")]
    BadSignature,
    /// Past `exp`.
    #[error("the token has expired")]
    Expired,
    /// Before `nbf`.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `aud` does not hold the issuer's `audience`.
    #[error("the token is not meant for this audience")]
    WrongAudience,
    /// A `require`d claim has another value.
    #[error("claim `{claim}` does not have the value the issuer requires")]
    ClaimMismatch {
        /// The claim.
        claim: String,
    },
    /// A claim the issuer's mapping needs is missing.
    #[error("the token has no claim `{0}`")]
    MissingClaim(String),
    /// The issuer's keys (`jwks_url`) have not been fetched yet.
    #[error("no keys of issuer `{0}` are known yet")]
    NoKeys(String),
}

/// A token or claim that cannot be read, as an exchange error.
fn malformed(error: impl std::fmt::Display) -> ExchangeError {
    ExchangeError::Malformed(error.to_string())
}

impl ExchangeError {
    /// A short stable code for the error, for the HTTP error body.
    pub fn code(&self) -> &'static str {
        match self {
            ExchangeError::Malformed(_) => "malformed",
            ExchangeError::UnknownIssuer(_) => "unknown_issuer",
            ExchangeError::BadSignature => "bad_signature",
            ExchangeError::Expired => "expired",
            ExchangeError::NotYetValid => "not_yet_valid",
            ExchangeError::WrongAudience => "wrong_audience",
            ExchangeError::ClaimMismatch { .. } => "claim_mismatch",
            ExchangeError::MissingClaim(_) => "missing_claim",
            ExchangeError::NoKeys(_) => "no_keys",
        }
    }
}

/// Why the pack's issuers could not be made ready, or a fetched JWKS not used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// The pack loader did not check the issuer (a pack not loaded by [`Pack::load`]).
    #[error("[[issuers]] `{0}` was not checked by the pack loader")]
    NotChecked(String),
    /// The issuer has no `iss` (no `issuer`, and a preset without a default).
    #[error("[[issuers]] `{0}` has no `issuer`")]
    NoIss(String),
    /// An algorithm arbiter does not accept.
    #[error("[[issuers]] `{issuer}`: algorithm `{algorithm}` is not accepted")]
    Algorithm {
        /// The issuer's name.
        issuer: String,
        /// The algorithm.
        algorithm: String,
    },
    /// Neither `jwks_file` nor `jwks_url`.
    #[error("[[issuers]] `{0}` has no keys")]
    NoKeys(String),
    /// The issuer's `jwks_file` cannot be used.
    #[error("[[issuers]] `{issuer}` jwks_file: {source}")]
    JwksFile {
        /// The issuer's name.
        issuer: String,
        /// What is wrong with its key set.
        source: JwksError,
    },
    /// No `[[issuers]]` entry has the name the keys were fetched for.
    #[error("no [[issuers]] entry is named `{0}`")]
    UnknownIssuer(String),
    /// The issuer's keys come from its `jwks_file`, not from a URL.
    #[error("[[issuers]] `{0}` reads its keys from its jwks_file, not a URL")]
    NotFromUrl(String),
    /// The key set fetched from the issuer's `jwks_url` cannot be used.
    #[error("[[issuers]] `{issuer}` jwks_url: {source}")]
    JwksUrl {
        /// The issuer's name.
        issuer: String,
        /// What is wrong with its key set.
        source: JwksError,
    },
}

/// Why a JWKS document gives no key to verify with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    /// Not JSON.
    #[error("not a JWKS: {0}")]
    NotJson(#[source] serde_json::Error),
    /// JSON, but not an object with a `keys` array.
    #[error("not a JWKS: it must be an object with a `keys` array")]
    NoKeysArray,
    /// No key of the set is usable for the issuer's algorithms.
    #[error("no key in it can verify {}: {}", algorithms.join(", "), jwk::RULE)]
    NoUsableKey {
        /// The issuer's algorithms.
        algorithms: Vec<&'static str>,
    },
}

/// The pack's `[[issuers]]`, ready to verify their tokens.
#[derive(Debug)]
pub struct Upstream {
    issuers: Vec<Issuer>,
    leeway: SignedDuration,
}

#[derive(Debug)]
struct Issuer {
    name: String,
    iss: String,
    audience: String,
    algorithms: Vec<Algorithm>,
    preset: Option<Preset>,
    principal: PrincipalTemplate,
    attributes: BTreeMap<String, String>,
    require: BTreeMap<String, String>,
    intents: Option<Vec<String>>,
    /// Where its keys come from: `None` for a `jwks_file`.
    url: Option<KeyUrl>,
    keys: RwLock<Keys>,
}

#[derive(Debug)]
struct KeyUrl {
    url: String,
    refresh: SignedDuration,
}

#[derive(Debug, Default)]
struct Keys {
    keys: Arc<[Key]>,
    fetched_at: Option<Timestamp>,
}

/// A public key of an issuer, checked when its JWKS was read.
#[derive(Debug)]
struct Key {
    kid: Option<String>,
    /// The one algorithm it verifies: its type decides (and its own `alg`, if any, agrees).
    alg: Algorithm,
    key: DecodingKey,
}

impl Upstream {
    /// The issuers of a loaded pack. Keys of a `jwks_file` are read now; a `jwks_url`
    /// issuer has none until [`Upstream::set_jwks`].
    pub fn from_pack(pack: &Pack) -> Result<Upstream, UpstreamError> {
        let config = pack.config();
        let mut issuers = Vec::new();
        for issuer in &config.issuers {
            let name = issuer.name.get_ref().clone();
            let checked = pack
                .issuer_keys(&name)
                .ok_or_else(|| UpstreamError::NotChecked(name.clone()))?;
            let iss = issuer
                .iss()
                .ok_or_else(|| UpstreamError::NoIss(name.clone()))?
                .to_owned();
            let algorithms = issuer
                .algorithms()
                .into_iter()
                .map(|a| {
                    Algorithm::from_name(a).ok_or_else(|| UpstreamError::Algorithm {
                        issuer: name.clone(),
                        algorithm: a.to_owned(),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let mut keys = Keys::default();
            let url = match (&checked.jwks, &issuer.jwks_url) {
                (Some(text), _) => {
                    keys.keys = parse_jwks(text, &algorithms).map_err(|source| {
                        UpstreamError::JwksFile {
                            issuer: name.clone(),
                            source,
                        }
                    })?;
                    None
                }
                (None, Some(url)) => Some(KeyUrl {
                    url: url.get_ref().clone(),
                    refresh: jws::leeway(issuer.jwks_refresh),
                }),
                (None, None) => return Err(UpstreamError::NoKeys(name)),
            };
            issuers.push(Issuer {
                iss,
                audience: issuer.audience.get_ref().clone(),
                algorithms,
                preset: issuer.preset,
                principal: checked.principal.clone(),
                attributes: issuer.attributes.clone(),
                require: issuer.require.clone(),
                intents: issuer
                    .intents
                    .as_ref()
                    .map(|list| list.iter().map(|i| i.get_ref().clone()).collect()),
                url,
                keys: RwLock::new(keys),
                name,
            });
        }
        Ok(Upstream {
            issuers,
            leeway: jws::leeway(config.credentials.leeway),
        })
    }

    /// Verifies an upstream token at `now` and maps it to its principal.
    pub fn exchange(&self, token: &str, now: Timestamp) -> Result<Exchanged, ExchangeError> {
        let compact = jws::split(token).map_err(malformed)?;
        let iss = match compact.claims.get("iss") {
            Some(Value::String(iss)) => iss,
            Some(other) => return Err(malformed(jws::wrong_type("iss", other, "a string"))),
            None => {
                return Err(ExchangeError::Malformed(
                    "the token has no `iss`".to_owned(),
                ));
            }
        };
        // The unverified `iss` (and `aud`, when issuers share an `iss`) only choose whose
        // keys to verify with; every claim is checked again once the signature holds.
        let issuer = self.issuer_for(iss, &compact.claims)?;
        let alg = jws::alg(&compact.header)
            .and_then(Algorithm::from_name)
            .filter(|alg| issuer.algorithms.contains(alg))
            .ok_or(ExchangeError::BadSignature)?;
        let kid = match compact.header.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.as_str()),
            Some(other) => {
                return Err(ExchangeError::Malformed(format!(
                    "header `kid` is {}, not a string",
                    jws::kind(other)
                )));
            }
        };
        let keys = issuer.keys();
        if keys.is_empty() {
            return Err(ExchangeError::NoKeys(issuer.name.clone()));
        }
        let signature = jws::decode(compact.signature).ok_or(ExchangeError::BadSignature)?;
        let verified = keys
            .iter()
            .filter(|key| key.alg == alg)
            .filter(|key| match (kid, &key.kid) {
                (Some(wanted), Some(has)) => wanted == has,
                _ => true,
            })
            .any(|key| key.verifies(compact.signing_input.as_bytes(), &signature));
        if !verified {
            return Err(ExchangeError::BadSignature);
        }
        // Signed by the issuer from here on.
        issuer.map(&compact.claims, now, self.leeway)
    }

    /// The `jwks_url` issuers whose keys are due: never fetched, or fetched
    /// `jwks_refresh` ago or longer. Pairs of the issuer's name and the URL.
    pub fn due_for_fetch(&self, now: Timestamp) -> Vec<(String, String)> {
        self.issuers
            .iter()
            .filter_map(|issuer| {
                let url = issuer.url.as_ref()?;
                let fetched_at = issuer.read_keys().fetched_at;
                let due = fetched_at
                    .and_then(|at| at.checked_add(url.refresh).ok())
                    .is_none_or(|next| now >= next);
                due.then(|| (issuer.name.clone(), url.url.clone()))
            })
            .collect()
    }

    /// Replaces the keys of the `jwks_url` issuer `name` with a JWKS the server fetched at
    /// `now`. On `Err` the issuer keeps the keys it had.
    pub fn set_jwks(
        &self,
        name: &str,
        jwks_json: &str,
        now: Timestamp,
    ) -> Result<(), UpstreamError> {
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.name == name)
            .ok_or_else(|| UpstreamError::UnknownIssuer(name.to_owned()))?;
        if issuer.url.is_none() {
            return Err(UpstreamError::NotFromUrl(name.to_owned()));
        }
        let keys =
            parse_jwks(jwks_json, &issuer.algorithms).map_err(|source| UpstreamError::JwksUrl {
                issuer: name.to_owned(),
                source,
            })?;
        let mut current = issuer.keys.write().unwrap_or_else(PoisonError::into_inner);
        *current = Keys {
            keys,
            fetched_at: Some(now),
        };
        Ok(())
    }

    fn issuer_for(&self, iss: &str, claims: &Object) -> Result<&Issuer, ExchangeError> {
        let mut candidates = self.issuers.iter().filter(|i| i.iss == iss).peekable();
        let first = candidates
            .peek()
            .copied()
            .ok_or_else(|| ExchangeError::UnknownIssuer(iss.to_owned()))?;
        Ok(candidates
            .find(|i| jws::audience_contains(claims, &i.audience).unwrap_or(false))
            .unwrap_or(first))
    }
}

impl Issuer {
    fn read_keys(&self) -> std::sync::RwLockReadGuard<'_, Keys> {
        self.keys.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn keys(&self) -> Arc<[Key]> {
        Arc::clone(&self.read_keys().keys)
    }

    /// The checks and the mapping that follow a good signature.
    fn map(
        &self,
        claims: &Object,
        now: Timestamp,
        leeway: SignedDuration,
    ) -> Result<Exchanged, ExchangeError> {
        match jws::audience_contains(claims, &self.audience) {
            Ok(true) => {}
            Ok(false) => return Err(ExchangeError::WrongAudience),
            Err(e) => return Err(malformed(e)),
        }
        let date = |name: &str| jws::optional_date(claims, name).map_err(malformed);
        let expires_at =
            date("exp")?.ok_or_else(|| ExchangeError::MissingClaim("exp".to_owned()))?;
        let not_before = match date("nbf")? {
            Some(nbf) => Some(nbf),
            None => date("iat")?,
        };
        match jws::validity(now, not_before, expires_at, leeway) {
            Validity::Valid => {}
            Validity::Expired => return Err(ExchangeError::Expired),
            Validity::NotYetValid => return Err(ExchangeError::NotYetValid),
        }
        let claims = Claims {
            derived: derived_claims(self.preset, claims)?,
            token: claims,
        };
        for (claim, value) in &self.require {
            if claims.string(claim)? != value {
                return Err(ExchangeError::ClaimMismatch {
                    claim: claim.clone(),
                });
            }
        }
        for claim in self.principal.claims() {
            if claims.string(claim)?.is_empty() {
                return Err(ExchangeError::MissingClaim(claim.to_owned()));
            }
        }
        let principal = self
            .principal
            .render(|claim| claims.string(claim).ok())
            .map_err(|missing| ExchangeError::MissingClaim(missing.0))?;
        let attributes = self
            .attributes
            .iter()
            .map(|(attribute, claim)| Ok((attribute.clone(), claims.string(claim)?.to_owned())))
            .collect::<Result<_, ExchangeError>>()?;
        Ok(Exchanged {
            issuer: self.name.clone(),
            principal,
            attributes,
            allowed_intents: self.intents.clone(),
            expires_at,
        })
    }
}

/// A verified token's claims, with those its preset derives from `sub`.
struct Claims<'a> {
    token: &'a Object,
    derived: Vec<(&'static str, String)>,
}

impl Claims<'_> {
    /// A claim that a mapping uses: a string (a derived claim wins over the token's own).
    fn string(&self, name: &str) -> Result<&str, ExchangeError> {
        if let Some((_, value)) = self.derived.iter().find(|(n, _)| *n == name) {
            return Ok(value);
        }
        match self.token.get(name) {
            Some(Value::String(s)) => Ok(s),
            None | Some(Value::Null) => Err(ExchangeError::MissingClaim(name.to_owned())),
            Some(other) => Err(malformed(jws::wrong_type(name, other, "a string"))),
        }
    }
}

/// The claims a preset derives from `sub` (DESIGN: Kubernetes `namespace` and
/// `serviceaccount`, SPIFFE `trust_domain` and `path`).
fn derived_claims(
    preset: Option<Preset>,
    claims: &Object,
) -> Result<Vec<(&'static str, String)>, ExchangeError> {
    let sub = || match claims.get("sub") {
        Some(Value::String(sub)) => Ok(sub.as_str()),
        None => Err(ExchangeError::MissingClaim("sub".to_owned())),
        Some(other) => Err(malformed(jws::wrong_type("sub", other, "a string"))),
    };
    match preset {
        None | Some(Preset::GithubActions) => Ok(Vec::new()),
        Some(Preset::Kubernetes) => {
            let sub = sub()?;
            let (namespace, account) = kubernetes_subject(sub).ok_or_else(|| {
                ExchangeError::Malformed(format!(
                    "`sub` `{sub}` is not `system:serviceaccount:NAMESPACE:NAME`"
                ))
            })?;
            Ok(vec![
                ("namespace", namespace.to_owned()),
                ("serviceaccount", account.to_owned()),
            ])
        }
        Some(Preset::Spiffe) => {
            let sub = sub()?;
            let (trust_domain, path) = spiffe_id(sub).ok_or_else(|| {
                ExchangeError::Malformed(format!(
                    "`sub` `{sub}` is not a SPIFFE ID `spiffe://TRUST_DOMAIN/PATH`"
                ))
            })?;
            Ok(vec![
                ("trust_domain", trust_domain.to_owned()),
                ("path", path.to_owned()),
            ])
        }
    }
}

/// `system:serviceaccount:NS:NAME` → (NS, NAME).
fn kubernetes_subject(sub: &str) -> Option<(&str, &str)> {
    let (namespace, name) = sub
        .strip_prefix("system:serviceaccount:")?
        .split_once(':')?;
    let valid = |part: &str| !part.is_empty() && !part.contains(':');
    (valid(namespace) && valid(name)).then_some((namespace, name))
}

/// `spiffe://TRUST_DOMAIN/PATH` → (TRUST_DOMAIN, PATH without its leading `/`), by the
/// SPIFFE ID rules: a trust domain of lowercase letters, digits, `.`, `-` and `_`; a
/// non-empty path of segments of letters, digits, `.`, `-` and `_`, none empty, `.` or
/// `..`.
fn spiffe_id(sub: &str) -> Option<(&str, &str)> {
    let (trust_domain, path) = sub.strip_prefix("spiffe://")?.split_once('/')?;
    let domain_ok = !trust_domain.is_empty()
        && trust_domain.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        });
    let path_ok = path.split('/').all(|segment| {
        !segment.is_empty()
            && segment != "."
            && segment != ".."
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    });
    (domain_ok && path_ok).then_some((trust_domain, path))
}

/// The usable keys of a JWKS for these algorithms, by [`jwk::usable_key`]: the rule the
/// pack loader applies to a `jwks_file`. A set with no usable key is an error.
fn parse_jwks(text: &str, algorithms: &[Algorithm]) -> Result<Arc<[Key]>, JwksError> {
    let set: Value = serde_json::from_str(text).map_err(JwksError::NotJson)?;
    let Some(members) = set.get("keys").and_then(Value::as_array) else {
        return Err(JwksError::NoKeysArray);
    };
    let keys: Vec<Key> = members
        .iter()
        .filter_map(|member| jwk::usable_key(member, algorithms))
        .filter_map(Key::new)
        .collect();
    if keys.is_empty() {
        return Err(JwksError::NoUsableKey {
            algorithms: algorithms.iter().map(|a| a.name()).collect(),
        });
    }
    Ok(keys.into())
}

impl Key {
    /// jsonwebtoken's key for a usable JWK; `None` only if jsonwebtoken refused numbers
    /// the rule already checked.
    fn new(usable: UsableKey) -> Option<Key> {
        let key = match &usable.key {
            PublicKey::Rsa { n, e } => DecodingKey::from_rsa_raw_components(n, e),
            PublicKey::P256 { x, y } => {
                DecodingKey::from_ec_components(&jws::encode(x), &jws::encode(y)).ok()?
            }
            PublicKey::Ed25519 { x } => DecodingKey::from_ed_components(&jws::encode(x)).ok()?,
        };
        Some(Key {
            kid: usable.kid,
            alg: usable.algorithm,
            key,
        })
    }

    fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        // The RustCrypto provider, called directly: no process-wide provider to depend on.
        let provider = &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER;
        (provider.verifier_factory)(&jws::jsonwebtoken_algorithm(self.alg), &self.key)
            .is_ok_and(|verifier| verifier.verify(message, &signature.to_vec()).is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_subjects() {
        assert_eq!(
            kubernetes_subject("system:serviceaccount:payments:api"),
            Some(("payments", "api"))
        );
        for bad in [
            "system:serviceaccount:payments",
            "system:serviceaccount::api",
            "system:serviceaccount:payments:",
            "system:serviceaccount:a:b:c",
            "system:node:x:y",
        ] {
            assert_eq!(kubernetes_subject(bad), None, "{bad}");
        }
    }

    #[test]
    fn spiffe_ids() {
        assert_eq!(
            spiffe_id("spiffe://prod.acme.com/ns/payments/sa/api"),
            Some(("prod.acme.com", "ns/payments/sa/api"))
        );
        for bad in [
            "spiffe://prod.acme.com",
            "spiffe://prod.acme.com/",
            "spiffe:///x",
            "spiffe://Prod/x",
            "spiffe://td/a//b",
            "spiffe://td/a/../b",
            "spiffe://td/a b",
            "https://td/x",
        ] {
            assert_eq!(spiffe_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn keys_that_cannot_be_used_are_skipped() {
        let x = jws::encode(
            ed25519_dalek::SigningKey::from_bytes(&[7; 32])
                .verifying_key()
                .as_bytes(),
        );
        let set = |key: &str| format!(r#"{{"keys":[{key}]}}"#);
        let ed = |extra: &str| {
            set(&format!(
                r#"{{"kty":"OKP","crv":"Ed25519","x":"{x}"{extra}}}"#
            ))
        };
        assert!(parse_jwks(&ed(""), &[Algorithm::EdDsa]).is_ok());
        for bad in [
            ed(r#","use":"enc""#),
            ed(r#","alg":"RS256""#),
            ed(r#","alg":"RSA-OAEP""#),
            set(r#"{"kty":"OKP","crv":"Ed25519","x":"AAAA"}"#),
            set(r#"{"kty":"oct","k":"c2VjcmV0"}"#),
            set(r#"{"kty":"EC","crv":"P-256","x":"AAAA","y":"AAAA"}"#),
            set(r#"{"kty":"RSA","n":"AQAB","e":"AQAB"}"#),
        ] {
            assert!(
                parse_jwks(
                    &bad,
                    &[Algorithm::EdDsa, Algorithm::Es256, Algorithm::Rs256]
                )
                .is_err(),
                "{bad}"
            );
        }
        assert!(parse_jwks(&ed(""), &[Algorithm::Rs256]).is_err());
        assert!(parse_jwks("[]", &[Algorithm::EdDsa]).is_err());
    }
}

//! The compact JWS serialization, read without trusting it: splitting a token, decoding its
//! parts, and typed access to claims. Nothing here verifies a signature (jsonwebtoken
//! does); callers trust a claim only after the signature has verified.
//!
//! jsonwebtoken reads tokens too, but not as arbiter must before trusting one: it has no
//! size limit, does not refuse a `crit` header, keeps the last of duplicate keys in
//! claims it does not know, and reports a header it cannot read, a missing `alg` and a
//! bad signature through error kinds that do not map onto arbiter's failures
//! (`malformed` before `unknown_issuer` before `bad_signature`). [`split`] is that first
//! reading; it is also where `iss` and `kid` are read to choose the key.

use std::fmt;

use arbiter_core::jwk::Algorithm;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value};

/// Tokens longer than this are refused before anything is decoded. Real workload tokens
/// are a few kilobytes at most.
pub(crate) const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// A decoded JSON object: a token's header or its claims.
pub(crate) type Object = Map<String, Value>;

/// A token split into its parts, header and claims decoded. Untrusted.
#[derive(Debug)]
pub(crate) struct Compact<'t> {
    pub header: Object,
    pub claims: Object,
    /// `header.payload` as sent: what the signature covers.
    pub signing_input: &'t str,
    /// The signature part, still encoded: an `alg` is judged before the signature is read.
    pub signature: &'t str,
}

/// Why a token could not be read as a compact JWS of two JSON objects. The messages name
/// the part, never its content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TokenError {
    #[error("the token is longer than {MAX_TOKEN_BYTES} bytes")]
    TooLong,
    #[error("not a compact JWS (three base64url parts separated by `.`)")]
    NotCompact,
    #[error("the header has critical extensions (`crit`), which arbiter does not support")]
    Critical,
    #[error("the {0} is not base64url")]
    NotBase64(Part),
    #[error("the {0} is not UTF-8 JSON")]
    NotJson(Part),
    #[error("the {0} has a key twice")]
    DuplicateKey(Part),
    #[error("the {0} is not a JSON object")]
    NotAnObject(Part),
}

/// The part of a token a [`TokenError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    Header,
    Payload,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::Header => "header",
            Part::Payload => "payload",
        })
    }
}

/// Why a claim cannot be used. The messages name the claim and the kind of its value,
/// never the value.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClaimError {
    #[error("claim `{claim}` is {found}, not {expected}")]
    WrongType {
        claim: String,
        found: &'static str,
        expected: &'static str,
    },
    #[error("claim `aud` holds {0}, not strings")]
    AudienceItem(&'static str),
    #[error("claim `{0}` is not a representable time")]
    NotATime(String),
    #[error("claim `{0}` is missing")]
    Missing(String),
    #[error("claim `{0}` is missing or empty")]
    MissingOrEmpty(String),
    #[error("claim `{0}` is empty")]
    Empty(String),
    #[error("claim `sub` is not a Cedar entity uid: {0}")]
    NotAnEntityUid(#[source] Box<cedar_policy::ParseErrors>),
    #[error("attribute `{attribute}` is {found}, not a string")]
    Attribute {
        attribute: String,
        found: &'static str,
    },
}

/// Splits a compact JWS into its three parts and decodes header and claims as JSON
/// objects. A JWS with critical extensions (`crit`) is refused: arbiter knows none.
pub(crate) fn split(token: &str) -> Result<Compact<'_>, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLong);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::NotCompact);
    };
    let signing_input = token
        .get(..header.len() + 1 + payload.len())
        .ok_or(TokenError::NotCompact)?;
    let header_object = object(header, Part::Header)?;
    if header_object.contains_key("crit") {
        return Err(TokenError::Critical);
    }
    Ok(Compact {
        claims: object(payload, Part::Payload)?,
        header: header_object,
        signing_input,
        signature,
    })
}

/// A part as a JSON object, read strictly: a duplicate key is refused rather than the last
/// one kept, so that what arbiter reads of a token is what jsonwebtoken reads (its header
/// and claim structs refuse duplicates) and what any other verifier of the same token
/// reads.
fn object(text: &str, part: Part) -> Result<Object, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| TokenError::NotBase64(part))?;
    match arbiter_core::json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(TokenError::NotAnObject(part)),
        // The only data error of the strict parse: a duplicate key.
        Err(e) if e.is_data() => Err(TokenError::DuplicateKey(part)),
        Err(_) => Err(TokenError::NotJson(part)),
    }
}

/// base64url without padding, as JWS uses everywhere.
pub(crate) fn encode(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url without padding, strictly (no padding, no stray bits).
pub(crate) fn decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// The header's `alg`, when it is a string.
pub(crate) fn alg(header: &Object) -> Option<&str> {
    header.get("alg").and_then(Value::as_str)
}

/// jsonwebtoken's name for an algorithm arbiter accepts.
pub(crate) fn jsonwebtoken_algorithm(alg: Algorithm) -> jsonwebtoken::Algorithm {
    match alg {
        Algorithm::EdDsa => jsonwebtoken::Algorithm::EdDSA,
        Algorithm::Es256 => jsonwebtoken::Algorithm::ES256,
        Algorithm::Rs256 => jsonwebtoken::Algorithm::RS256,
    }
}

/// An optional string claim; `Err` when it is there with another type.
pub(crate) fn optional_string<'a>(
    claims: &'a Object,
    name: &str,
) -> Result<Option<&'a str>, ClaimError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(wrong_type(name, other, "a string")),
    }
}

/// A claim `name` whose value `found` is not of the kind `expected`.
pub(crate) fn wrong_type(name: &str, found: &Value, expected: &'static str) -> ClaimError {
    ClaimError::WrongType {
        claim: name.to_owned(),
        found: kind(found),
        expected,
    }
}

/// An optional NumericDate claim (seconds since the epoch; a fraction is dropped).
pub(crate) fn optional_date(claims: &Object, name: &str) -> Result<Option<Timestamp>, ClaimError> {
    let Some(value) = claims.get(name) else {
        return Ok(None);
    };
    let Value::Number(number) = value else {
        return Err(wrong_type(name, value, "a number"));
    };
    let seconds = match (number.as_i64(), number.as_f64()) {
        (Some(i), _) => Some(i),
        // Beyond ±1e13 s no Timestamp exists anyway; the bound keeps the cast exact.
        (None, Some(f)) if f.is_finite() && f.abs() < 1e13 => Some(f.floor() as i64),
        _ => None,
    };
    seconds
        .and_then(|s| Timestamp::from_second(s).ok())
        .map(Some)
        .ok_or_else(|| ClaimError::NotATime(name.to_owned()))
}

/// Whether `aud` (a string or an array of strings) contains `audience`. A token without
/// `aud` is for no one.
pub(crate) fn audience_contains(claims: &Object, audience: &str) -> Result<bool, ClaimError> {
    match claims.get("aud") {
        None => Ok(false),
        Some(Value::String(s)) => Ok(s == audience),
        Some(Value::Array(items)) => {
            let mut found = false;
            for item in items {
                match item {
                    Value::String(s) => found |= s == audience,
                    other => return Err(ClaimError::AudienceItem(kind(other))),
                }
            }
            Ok(found)
        }
        Some(other) => Err(wrong_type("aud", other, "a string")),
    }
}

/// A JSON value's kind, for messages: the one wording arbiter uses for it.
pub(crate) use arbiter_core::json::kind_of as kind;

/// Where a token stands in time at `now`, with `leeway` of clock skew either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Validity {
    Valid,
    Expired,
    NotYetValid,
}

/// A token is expired from `exp + leeway` on (RFC 7519: valid only before `exp`), and not
/// yet valid before `not_before - leeway`.
pub(crate) fn validity(
    now: Timestamp,
    not_before: Option<Timestamp>,
    expires_at: Timestamp,
    leeway: SignedDuration,
) -> Validity {
    let deadline = expires_at.checked_add(leeway).unwrap_or(Timestamp::MAX);
    if now >= deadline {
        return Validity::Expired;
    }
    let skewed = now.checked_add(leeway).unwrap_or(Timestamp::MAX);
    match not_before {
        Some(nbf) if skewed < nbf => Validity::NotYetValid,
        _ => Validity::Valid,
    }
}

/// A period of leeway as a signed duration (periods are at most a hundred years).
pub(crate) fn leeway(period: arbiter_core::period::Period) -> SignedDuration {
    SignedDuration::try_from(period.duration()).unwrap_or(SignedDuration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        encode(s.as_bytes())
    }

    #[test]
    fn split_refuses_every_shape_but_three_parts_of_objects() {
        let good = format!("{}.{}.sig", b64(r#"{"alg":"EdDSA"}"#), b64(r#"{"a":1}"#));
        assert!(split(&good).is_ok());
        for bad in [
            String::new(),
            "..".to_owned(),
            "...".to_owned(),
            "a.b".to_owned(),
            format!("{good}.x"),
            format!("{}.{}.s", b64("[1,2]"), b64("{}")),
            format!("{}.{}.s", b64("{}"), b64("[1,2]")),
            format!("{}.{}.s", b64("{}"), encode([0xff, 0xfe, 0x7b])),
            format!("{}=.{}.s", b64("{}"), b64("{}")),
            format!("{}.{}.s", b64(r#"{"crit":["b64"]}"#), b64("{}")),
            "x".repeat(MAX_TOKEN_BYTES + 1),
        ] {
            assert!(split(&bad).is_err(), "{bad:.80}");
        }
    }

    #[test]
    fn errors_name_the_part_or_the_claim_and_never_the_value() {
        let err = |token: &str| split(token).unwrap_err().to_string();
        assert_eq!(
            err(&format!("{}.{}.s", b64(r#"{"a":1,"a":2}"#), b64("{}"))),
            "the header has a key twice"
        );
        assert_eq!(
            err(&format!("{}.{}.s", b64("{}"), b64("[1]"))),
            "the payload is not a JSON object"
        );
        assert_eq!(
            err(&format!("{}.{}.s", b64("{}"), b64("{"))),
            "the payload is not UTF-8 JSON"
        );
        assert_eq!(err("!.e30.s"), "the header is not base64url");
        assert_eq!(
            err("a.b"),
            "not a compact JWS (three base64url parts separated by `.`)"
        );
        let claims: Object =
            serde_json::from_str(r#"{"sub": 7, "aud": ["x", {"secret": 1}], "exp": "soon"}"#)
                .unwrap();
        assert_eq!(
            optional_string(&claims, "sub").unwrap_err().to_string(),
            "claim `sub` is a number, not a string"
        );
        assert_eq!(
            audience_contains(&claims, "x").unwrap_err().to_string(),
            "claim `aud` holds an object, not strings"
        );
        assert_eq!(
            optional_date(&claims, "exp").unwrap_err().to_string(),
            "claim `exp` is a string, not a number"
        );
    }

    #[test]
    fn dates_are_numbers_in_range() {
        let claims: Object = serde_json::from_str(
            r#"{"a": 10, "b": 10.9, "c": "10", "d": 1e300, "e": 99999999999999999}"#,
        )
        .unwrap();
        assert_eq!(
            optional_date(&claims, "a").unwrap(),
            Some(Timestamp::from_second(10).unwrap())
        );
        assert_eq!(
            optional_date(&claims, "b").unwrap(),
            Some(Timestamp::from_second(10).unwrap())
        );
        assert_eq!(optional_date(&claims, "z").unwrap(), None);
        for bad in ["c", "d", "e"] {
            assert!(optional_date(&claims, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn audience_is_a_string_or_strings() {
        let claims = |aud: &str| -> Object {
            serde_json::from_str(&format!(r#"{{"aud": {aud}}}"#)).unwrap()
        };
        assert_eq!(audience_contains(&claims(r#""x""#), "x").ok(), Some(true));
        assert_eq!(
            audience_contains(&claims(r#"["y","x"]"#), "x").ok(),
            Some(true)
        );
        assert_eq!(
            audience_contains(&claims(r#"["y"]"#), "x").ok(),
            Some(false)
        );
        assert!(audience_contains(&claims(r#"["x", 1]"#), "x").is_err());
        assert!(audience_contains(&claims("7"), "x").is_err());
        assert_eq!(audience_contains(&Object::new(), "x").ok(), Some(false));
    }

    #[test]
    fn validity_at_the_edges_of_leeway() {
        let t = |s| Timestamp::from_second(s).unwrap();
        let leeway = SignedDuration::from_secs(30);
        assert_eq!(validity(t(129), None, t(100), leeway), Validity::Valid);
        assert_eq!(validity(t(130), None, t(100), leeway), Validity::Expired);
        assert_eq!(
            validity(t(70), Some(t(100)), t(200), leeway),
            Validity::Valid
        );
        assert_eq!(
            validity(t(69), Some(t(100)), t(200), leeway),
            Validity::NotYetValid
        );
    }
}

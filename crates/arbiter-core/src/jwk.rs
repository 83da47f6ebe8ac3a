//! Which keys of a JWKS arbiter can verify signatures with: one rule, used where a pack's
//! `jwks_file` is loaded (a pack whose issuer has no usable key does not load) and where
//! the identity crate reads a JWKS (a `jwks_file` when the server starts, a `jwks_url` at
//! each fetch), so that `arbiter validate` and the server never disagree about a key.
//!
//! A key is usable for exactly one algorithm, decided by its type and curve: RS256 needs
//! `"kty": "RSA"` with a modulus of 2048 to 4096 bits and an exponent of at most 8 bytes,
//! ES256 `"kty": "EC"`, `"crv": "P-256"` and coordinates of 32 bytes, EdDSA
//! `"kty": "OKP"`, `"crv": "Ed25519"` and an `x` that is a point of the curve of more than
//! small order. A key with `use` other than `sig`, an `alg` naming another algorithm, or a
//! member of the wrong type is not usable; so is a key without `kty` (RFC 7517 §4.1). Keys
//! that are not usable are skipped, never a reason to refuse the set (RFC 7517 §5).
//!
//! Numbers are decoded as base64url without padding, strictly, as JWS encodes them.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

/// What a key needs to be usable, in a sentence for error messages.
pub const RULE: &str =
    "RS256 needs an RSA key of 2048 to 4096 bits, ES256 an EC P-256 key, EdDSA an OKP Ed25519 key";

/// A signature algorithm of upstream tokens: those of
/// [`config::ALGORITHMS`](crate::config::ALGORITHMS). `none` and HMAC have no variant, so
/// no key is ever usable for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Ed25519.
    EdDsa,
    /// ECDSA on P-256 with SHA-256.
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
}

impl Algorithm {
    /// The algorithm a JWS `alg` (or an `algorithms` entry) names, if arbiter has it.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        match name {
            "EdDSA" => Some(Algorithm::EdDsa),
            "ES256" => Some(Algorithm::Es256),
            "RS256" => Some(Algorithm::Rs256),
            _ => None,
        }
    }

    /// Its JWS name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::EdDsa => "EdDSA",
            Algorithm::Es256 => "ES256",
            Algorithm::Rs256 => "RS256",
        }
    }
}

/// The public numbers of a usable key, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// An RSA key: modulus (without leading zero bytes) and exponent, big-endian.
    Rsa {
        /// The modulus, 2048 to 4096 bits.
        n: Vec<u8>,
        /// The public exponent, 1 to 8 bytes.
        e: Vec<u8>,
    },
    /// A P-256 key: its coordinates, big-endian.
    P256 {
        /// The x coordinate.
        x: [u8; 32],
        /// The y coordinate.
        y: [u8; 32],
    },
    /// An Ed25519 key: the compressed point.
    Ed25519 {
        /// The public key, as RFC 8037 `x` encodes it.
        x: [u8; 32],
    },
}

/// A key of a JWKS that arbiter can verify with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsableKey {
    /// Its `kid`, when it has one.
    pub kid: Option<String>,
    /// The one algorithm it verifies.
    pub algorithm: Algorithm,
    /// Its numbers.
    pub key: PublicKey,
}

/// `key` (one member of a JWKS's `keys`) as a key for one of `algorithms`, when arbiter can
/// use it for that algorithm; `None` when it cannot (see the module's rule).
pub fn usable_key(key: &Value, algorithms: &[Algorithm]) -> Option<UsableKey> {
    let member = |name: &str| key.get(name);
    // An optional string member: absent (or null) is `Ok(None)`, another type `Err`.
    let optional = |name: &str| match member(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(()),
    };
    let number = |name: &str| member(name)?.as_str().and_then(decode);
    let coordinate = |name: &str| -> Option<[u8; 32]> { number(name)?.try_into().ok() };
    let kty = member("kty")?.as_str()?;
    if !matches!(optional("use").ok()?, None | Some("sig")) {
        return None;
    }
    let declared = optional("alg").ok()?;
    let kid = optional("kid").ok()?.map(str::to_owned);
    let crv = optional("crv").ok()?;
    let (algorithm, public) = match (kty, crv) {
        ("RSA", _) => {
            let n = number("n")?;
            let e = number("e")?;
            let n = n.get(n.iter().position(|b| *b != 0)?..)?.to_vec();
            let bits = n.len() * 8 - n.first()?.leading_zeros() as usize;
            if !(2048..=4096).contains(&bits) || e.is_empty() || e.len() > 8 {
                return None;
            }
            (Algorithm::Rs256, PublicKey::Rsa { n, e })
        }
        ("EC", Some("P-256")) => {
            let (x, y) = (coordinate("x")?, coordinate("y")?);
            (Algorithm::Es256, PublicKey::P256 { x, y })
        }
        ("OKP", Some("Ed25519")) => {
            let x = coordinate("x")?;
            // A point of small order verifies forged signatures: no key at all.
            let point = ed25519_dalek::VerifyingKey::from_bytes(&x).ok()?;
            if point.is_weak() {
                return None;
            }
            (Algorithm::EdDsa, PublicKey::Ed25519 { x })
        }
        _ => return None,
    };
    // A key that names its own algorithm is used for that one only.
    if declared.is_some_and(|alg| alg != algorithm.name()) || !algorithms.contains(&algorithm) {
        return None;
    }
    Some(UsableKey {
        kid,
        algorithm,
        key: public,
    })
}

fn decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const ALL: &[Algorithm] = &[Algorithm::EdDsa, Algorithm::Es256, Algorithm::Rs256];

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// A public key of the curve, from a fixed seed.
    fn ed25519_x() -> String {
        b64(ed25519_dalek::SigningKey::from_bytes(&[7; 32])
            .verifying_key()
            .as_bytes())
    }

    fn rsa(bits: usize) -> Value {
        // The top bit set, so the modulus has exactly `bits` bits.
        let mut n = vec![0x5a; bits / 8];
        n[0] = 0x80;
        json!({"kty": "RSA", "n": b64(&n), "e": "AQAB"})
    }

    fn with(mut key: Value, name: &str, value: Value) -> Value {
        key[name] = value;
        key
    }

    #[test]
    fn each_type_is_usable_for_its_one_algorithm() {
        let ed = json!({"kty": "OKP", "crv": "Ed25519", "x": ed25519_x(), "kid": "k1"});
        let usable = usable_key(&ed, ALL).unwrap();
        assert_eq!(usable.algorithm, Algorithm::EdDsa);
        assert_eq!(usable.kid.as_deref(), Some("k1"));
        let ec = json!({"kty": "EC", "crv": "P-256", "x": b64(&[1; 32]), "y": b64(&[2; 32])});
        assert_eq!(
            usable_key(&ec, ALL).unwrap().key,
            PublicKey::P256 {
                x: [1; 32],
                y: [2; 32]
            }
        );
        assert_eq!(
            usable_key(&rsa(2048), ALL).unwrap().algorithm,
            Algorithm::Rs256
        );
        // Only for an algorithm asked for.
        assert!(usable_key(&ed, &[Algorithm::Rs256, Algorithm::Es256]).is_none());
        assert!(usable_key(&rsa(2048), &[]).is_none());
    }

    #[test]
    fn rsa_moduli_of_2048_to_4096_bits_with_leading_zeros_dropped() {
        for (bits, usable) in [(2040, false), (2048, true), (4096, true), (4104, false)] {
            assert_eq!(usable_key(&rsa(bits), ALL).is_some(), usable, "{bits}");
        }
        let mut padded = vec![0, 0, 0x80];
        padded.extend([0x5a; 255]);
        let key = json!({"kty": "RSA", "n": b64(&padded), "e": "AQAB"});
        let Some(UsableKey {
            key: PublicKey::Rsa { n, e },
            ..
        }) = usable_key(&key, ALL)
        else {
            panic!("a 2048-bit modulus with zero bytes in front is usable");
        };
        assert_eq!((n.len(), e), (256, vec![1, 0, 1]));
        for e in ["", "AQAB=", "AAAAAAAAAAAA", "!!"] {
            assert!(
                usable_key(&with(rsa(2048), "e", json!(e)), ALL).is_none(),
                "{e}"
            );
        }
        assert!(usable_key(&with(rsa(2048), "n", json!(b64(&[0; 300]))), ALL).is_none());
    }

    #[test]
    fn keys_arbiter_cannot_use_are_not_usable() {
        let x = ed25519_x();
        let ed = |extra: Value| {
            let mut key = json!({"kty": "OKP", "crv": "Ed25519", "x": x});
            for (k, v) in extra.as_object().unwrap() {
                key[k] = v.clone();
            }
            key
        };
        // The identity point: 32 bytes, on the curve, of order 1.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        for bad in [
            json!(1),
            json!("key"),
            json!({"crv": "Ed25519", "x": x}),
            ed(json!({"kty": "okp"})),
            ed(json!({"kty": 7})),
            ed(json!({"use": "enc"})),
            ed(json!({"use": 1})),
            ed(json!({"alg": "RS256"})),
            ed(json!({"alg": "RSA-OAEP"})),
            ed(json!({"alg": ["EdDSA"]})),
            ed(json!({"kid": 7})),
            ed(json!({"crv": "X25519"})),
            ed(json!({"crv": 1})),
            ed(json!({"x": "AAAA"})),
            ed(json!({"x": format!("{x}=")})),
            ed(json!({"x": b64(&identity)})),
            json!({"kty": "EC", "crv": "P-384", "x": b64(&[1; 32]), "y": b64(&[2; 32])}),
            json!({"kty": "EC", "crv": "P-256", "x": b64(&[1; 31]), "y": b64(&[2; 32])}),
            json!({"kty": "EC", "crv": "P-256", "x": b64(&[1; 32])}),
            json!({"kty": "RSA", "n": 7, "e": "AQAB"}),
            json!({"kty": "oct", "k": "c2VjcmV0"}),
        ] {
            assert!(usable_key(&bad, ALL).is_none(), "{bad}");
        }
        // What does not concern verification is no reason to skip a key.
        for good in [
            ed(json!({"use": "sig", "alg": "EdDSA"})),
            ed(json!({"kid": null, "key_ops": ["verify"]})),
        ] {
            assert!(usable_key(&good, ALL).is_some(), "{good}");
        }
    }
}

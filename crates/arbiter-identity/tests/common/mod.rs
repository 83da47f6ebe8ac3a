//! Helpers shared by the integration tests: fixed times, a pack's settings, and forging
//! tokens by hand.

#![allow(dead_code, reason = "each test file uses some of the helpers")]

use std::path::Path;
use std::sync::Arc;

use arbiter_core::config::Config;
use arbiter_identity::{Keyring, Revocations, Verifier};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signer as _, SigningKey};
use jiff::Timestamp;
use serde_json::Value;

/// A fixed time, `HH:MM:SS` on the day every test happens.
pub fn at(time: &str) -> Timestamp {
    format!("2026-03-02T{time}Z").parse().unwrap()
}

/// `[credentials]` (leeway 30s, max_ttl 1h, issuer and audience `arbiter`) and an intent
/// `triage` of at most 30m.
pub fn config() -> Config {
    toml::from_str(
        r#"
[credentials]
max_ttl = "1h"
leeway = "30s"

[intents.triage]
actions = ["read_ticket"]
max_ttl = "30m"
"#,
    )
    .unwrap()
}

/// A verifier for `keyring` with the settings of [`config`].
pub fn verifier(keyring: &Keyring) -> (Verifier, Arc<Revocations>) {
    let revocations = Arc::new(Revocations::default());
    let verifier = Verifier::new(
        keyring.clone(),
        &config().credentials,
        Arc::clone(&revocations),
    );
    (verifier, revocations)
}

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token's header or claims, decoded.
pub fn part(token: &str, index: usize) -> Value {
    let text = token.split('.').nth(index).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(text).unwrap()).unwrap()
}

/// The private key of `kid` from the keyring's files, to forge tokens arbiter would sign.
pub fn signing_key(data_dir: &Path, kid: &str) -> SigningKey {
    let file: Value = serde_json::from_slice(
        &std::fs::read(data_dir.join("keys").join(format!("{kid}.json"))).unwrap(),
    )
    .unwrap();
    let d = URL_SAFE_NO_PAD.decode(file["d"].as_str().unwrap()).unwrap();
    SigningKey::from_bytes(&d.try_into().unwrap())
}

/// A compact JWS of this header and these claims, signed by `key` with EdDSA.
pub fn forge(header: &Value, claims: &Value, key: &SigningKey) -> String {
    let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    let signature = key.sign(input.as_bytes());
    format!("{input}.{}", b64(signature.to_bytes()))
}

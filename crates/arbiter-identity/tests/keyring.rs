//! The signing keyring on disk: private files, stable across restarts, and rotation that
//! keeps old tokens verifying until their key is retired long enough to delete.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::Duration;

use arbiter_core::credential::{CredentialFailure, CredentialVerifier};
use arbiter_identity::{Keyring, MintRequest, mint};
use common::{at, config, part, verifier};
use serde_json::Value;

const HOUR: Duration = Duration::from_secs(3600);

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn key_files(data: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(data.join("keys"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn token(keyring: &Keyring, time: &str) -> String {
    let config = config();
    let request = MintRequest {
        principal: r#"Agent::"bot""#.parse().unwrap(),
        ttl: Duration::from_secs(600),
        intent: None,
        session: None,
        audience: None,
        attributes: BTreeMap::new(),
        via: None,
    };
    mint(
        keyring,
        &config.credentials,
        &config.intents,
        &request,
        at(time),
    )
    .unwrap()
    .token
}

#[test]
fn the_first_key_is_created_private_and_reloads_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let keyring = Keyring::load_or_create(&data, at("09:00:00")).unwrap();
    assert_eq!(mode(&data.join("keys")), 0o700);
    let files = key_files(&data);
    assert_eq!(files, [format!("{}.json", keyring.active_kid())]);
    assert_eq!(mode(&data.join("keys").join(&files[0])), 0o600);
    assert_eq!(keyring.kids(), [keyring.active_kid()]);

    let jwks = keyring.jwks();
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "OKP");
    assert_eq!(key["crv"], "Ed25519");
    assert_eq!(key["alg"], "EdDSA");
    assert_eq!(key["use"], "sig");
    assert_eq!(key["kid"], keyring.active_kid());
    assert_eq!(
        key.as_object().unwrap().len(),
        6,
        "public parts only: {key}"
    );
    let secret: Value =
        serde_json::from_slice(&fs::read(data.join("keys").join(&files[0])).unwrap()).unwrap();
    assert!(!format!("{keyring:?}").contains(secret["d"].as_str().unwrap()));

    let again = Keyring::load_or_create(&data, at("11:00:00")).unwrap();
    assert_eq!(again.active_kid(), keyring.active_kid());
    assert_eq!(again.jwks(), jwks);
    assert_eq!(key_files(&data).len(), 1);
}

#[test]
fn a_key_file_others_can_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let keyring = Keyring::load_or_create(dir.path(), at("09:00:00")).unwrap();
    let file = dir
        .path()
        .join("keys")
        .join(format!("{}.json", keyring.active_kid()));
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    let error = Keyring::load_or_create(dir.path(), at("09:00:00"))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("mode 644 lets others read a signing key"),
        "{error}"
    );
}

#[test]
fn a_key_file_whose_kid_is_not_its_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let keyring = Keyring::load_or_create(dir.path(), at("09:00:00")).unwrap();
    let file = dir
        .path()
        .join("keys")
        .join(format!("{}.json", keyring.active_kid()));
    let mut key: Value = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
    key["x"] = Value::from(common::b64([9u8; 32]));
    fs::write(&file, key.to_string()).unwrap();
    let error = Keyring::load_or_create(dir.path(), at("09:00:00"))
        .unwrap_err()
        .to_string();
    assert!(error.contains(keyring.active_kid()), "{error}");
}

#[test]
fn rotation_signs_with_a_new_key_and_keeps_the_old_one_until_keep_for() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let first = Keyring::load_or_create(data, at("09:00:00")).unwrap();
    let old_token = token(&first, "10:00:00");

    let second = Keyring::rotate(data, at("10:01:00"), HOUR).unwrap();
    assert_ne!(second.active_kid(), first.active_kid());
    assert_eq!(second.kids(), [second.active_kid(), first.active_kid()]);
    let listed: Vec<Value> = second.jwks()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].clone())
        .collect();
    assert_eq!(listed, [second.active_kid(), first.active_kid()]);
    // The retired key's file keeps its public part only.
    let retired: Value = serde_json::from_slice(
        &fs::read(
            data.join("keys")
                .join(format!("{}.json", first.active_kid())),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(retired.get("d").is_none(), "{retired}");
    assert!(retired.get("retired_at").is_some(), "{retired}");

    let new_token = token(&second, "10:02:00");
    assert_eq!(part(&new_token, 0)["kid"], second.active_kid());
    let (verifier, _) = verifier(&first);
    verifier.set_keyring(second.clone());
    assert!(verifier.verify(&old_token, at("10:05:00")).is_ok());
    assert!(verifier.verify(&new_token, at("10:05:00")).is_ok());

    // A restart finds the same keys, the new one active.
    let reloaded = Keyring::load_or_create(data, at("10:03:00")).unwrap();
    assert_eq!(reloaded.kids(), second.kids());

    // Before keep_for has passed, another rotation keeps the first key...
    let third = Keyring::rotate(data, at("10:30:00"), HOUR).unwrap();
    assert_eq!(
        third.kids(),
        [third.active_kid(), second.active_kid(), first.active_kid()]
    );
    // ...and once it has, the next one deletes it.
    let fourth = Keyring::rotate(data, at("11:01:00"), HOUR).unwrap();
    assert_eq!(
        fourth.kids(),
        [fourth.active_kid(), third.active_kid(), second.active_kid()]
    );
    assert_eq!(key_files(data).len(), 3);
    verifier.set_keyring(fourth);
    assert_eq!(
        verifier.verify(&old_token, at("10:05:00")),
        Err(CredentialFailure::BadSignature)
    );
    assert!(verifier.verify(&new_token, at("10:05:00")).is_ok());
}

/// jsonwebtoken verifies with ed25519-dalek's `verify`, which accepts signatures anyone can
/// forge for a public key of small order; arbiter refuses such a key when it loads its key
/// files. Only a retired key file (public part only) can hold one: a private key's own
/// public key is never of small order.
#[test]
fn a_key_file_whose_public_key_is_of_small_order_is_refused() {
    use sha2::Digest as _;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    Keyring::load_or_create(data, at("09:00:00")).unwrap();
    // The identity point (y = 1): on the curve, of order 1.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let x = common::b64(identity);
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    let kid = common::b64(sha2::Sha256::digest(canonical.as_bytes()));
    let path = data.join("keys").join(format!("{kid}.json"));
    let file = serde_json::json!({
        "kid": kid, "x": x,
        "created_at": "2026-03-01T00:00:00Z", "retired_at": "2026-03-02T00:00:00Z",
    });
    fs::write(&path, file.to_string()).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let error = Keyring::load_or_create(data, at("09:00:00")).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{}: `x` is a point of small order, not a key",
            path.display()
        )
    );
}

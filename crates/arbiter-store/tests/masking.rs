//! Keyed masking of request values, and the key file.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

use std::fs;
use std::os::unix::fs::PermissionsExt;

use arbiter_store::{Masker, StoreError};
use serde_json::{Value, json};

fn paths(ps: &[&str]) -> Vec<String> {
    ps.iter().map(|p| (*p).to_owned()).collect()
}

fn request() -> Value {
    json!({
        "principal": "Agent::\"bot\"",
        "context": {
            "args": {"password": "hunter2", "user": "alice", "opts": {"b": 2, "a": [1, "x"]}},
            "headers": {"authorization": "Bearer abc"},
            "tokens": ["t0", "t1"]
        }
    })
}

fn is_mask(value: &Value) -> bool {
    let text = value.as_str().unwrap();
    let hex = text.strip_prefix("hmac-sha256:").unwrap();
    hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

#[test]
fn masking_replaces_nested_values_and_leaves_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let masker = Masker::load_or_create(dir.path()).unwrap();
    let mut req = request();
    masker.mask(
        &mut req,
        paths(&[
            "context.args.password",
            "context.args.opts",
            "context.headers.authorization",
            "context.tokens.1",
            "context.absent.deeper",
            "context.args.password.inside",
            "context.tokens.7",
        ]),
    );

    assert!(is_mask(&req["context"]["args"]["password"]));
    assert!(is_mask(&req["context"]["args"]["opts"]));
    assert!(is_mask(&req["context"]["headers"]["authorization"]));
    assert!(is_mask(&req["context"]["tokens"][1]));
    assert_eq!(req["context"]["tokens"][0], "t0");
    assert_eq!(req["context"]["args"]["user"], "alice");
    assert_eq!(req["principal"], "Agent::\"bot\"");
    assert!(req["context"].get("absent").is_none());
}

#[test]
fn the_same_key_masks_the_same_value_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let first = Masker::load_or_create(dir.path()).unwrap();
    let again = Masker::load_or_create(dir.path()).unwrap();
    let p = paths(&["context.args.password", "context.args.opts"]);

    let (mut a, mut b) = (request(), request());
    first.mask(&mut a, &p);
    again.mask(&mut b, &p);
    assert_eq!(a, b);

    // Equal values mask equally wherever they are, whatever their keys' order.
    assert_eq!(
        first.masked(&json!("hunter2")),
        a["context"]["args"]["password"]
    );
    let reordered: Value = serde_json::from_str(r#"{"a": [1, "x"], "b": 2}"#).unwrap();
    assert_eq!(first.masked(&reordered), a["context"]["args"]["opts"]);
    // Different values do not.
    assert_ne!(
        first.masked(&json!("hunter3")),
        a["context"]["args"]["password"]
    );
    assert_ne!(first.masked(&json!(1)), first.masked(&json!("1")));
}

#[test]
fn different_keys_mask_differently() {
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let one = Masker::load_or_create(one.path()).unwrap();
    let two = Masker::load_or_create(two.path()).unwrap();
    assert_ne!(one.masked(&json!("hunter2")), two.masked(&json!("hunter2")));
}

#[test]
fn the_key_is_32_bytes_readable_by_its_owner_only() {
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("data");
    Masker::load_or_create(&data).unwrap();

    let key = data.join("mask.key");
    let meta = fs::metadata(&key).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.len(), 32);
    assert_eq!(
        fs::metadata(&data).unwrap().permissions().mode() & 0o777,
        0o700
    );
    // No temporary file is left behind.
    assert_eq!(fs::read_dir(&data).unwrap().count(), 1);
}

/// Two processes starting on a new data directory at once (a server and `arbiter log`)
/// must not end up with two keys: the key file is created only if absent, and the loser
/// of the race reads the winner's key.
#[test]
fn processes_creating_the_key_at_once_all_use_the_one_that_was_written() {
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("data");
    let maskers: Vec<Masker> = std::thread::scope(|scope| {
        let starts: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| Masker::load_or_create(&data).unwrap()))
            .collect();
        starts.into_iter().map(|s| s.join().unwrap()).collect()
    });
    let masked = maskers[0].masked(&json!("hunter2"));
    for masker in &maskers {
        assert_eq!(masker.masked(&json!("hunter2")), masked);
    }
    assert_eq!(
        Masker::load_or_create(&data)
            .unwrap()
            .masked(&json!("hunter2")),
        masked
    );
    assert_eq!(
        fs::read_dir(&data).unwrap().count(),
        1,
        "no temporary file left"
    );
}

#[test]
fn a_key_others_can_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    Masker::load_or_create(dir.path()).unwrap();
    let key = dir.path().join("mask.key");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();

    let err = Masker::load_or_create(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::MaskKey { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "the mask key {} can be read by other users (mode 644); run `chmod 600` on it",
            key.display()
        )
    );
}

#[test]
fn a_key_of_the_wrong_length_is_refused_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("mask.key");
    fs::write(&key, b"short").unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();

    let err = Masker::load_or_create(dir.path()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the mask key {} holds 5 bytes where a key is 32; restore it from a backup, or remove \
             it to start a new key (masked values already logged will no longer match)",
            key.display()
        )
    );
    assert_eq!(fs::read(&key).unwrap(), b"short");
}

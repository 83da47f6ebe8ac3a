//! Pack versions: recorded once, loaded many times.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

use arbiter_store::{PackLoad, PackVersion, RuleVersion, Store, StoreError};
use jiff::Timestamp;

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn version(name: &str, loaded_at: &str) -> PackVersion {
    PackVersion {
        version: name.to_owned(),
        loaded_at: at(loaded_at),
        rules: vec![
            RuleVersion {
                id: "allow-reads".to_owned(),
                hash: format!("sha256:{name}-a"),
                kind: "permit".to_owned(),
                mode: None,
                effect: None,
            },
            RuleVersion {
                id: "no-secrets".to_owned(),
                hash: format!("sha256:{name}-b"),
                kind: "forbid".to_owned(),
                mode: Some("audit".to_owned()),
                effect: Some("deny".to_owned()),
            },
        ],
    }
}

#[test]
fn a_version_is_recorded_once_and_every_load_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let v1 = version("v1", "2026-11-01T09:00:00.5Z");
    let v2 = version("v2", "2026-11-02T09:00:00Z");

    store.record_pack_version(&v1).unwrap();
    store.record_pack_version(&v2).unwrap();
    // v1 again (a reload back to it): its first load time and rules stay.
    let mut v1_again = version("v1", "2026-11-03T09:00:00Z");
    v1_again.rules.clear();
    store.record_pack_version(&v1_again).unwrap();

    assert_eq!(store.pack_versions().unwrap(), vec![v1.clone(), v2.clone()]);
    let load = |v: &str, t: &str| PackLoad {
        version: v.to_owned(),
        loaded_at: at(t),
    };
    assert_eq!(
        store.pack_loads().unwrap(),
        vec![
            load("v1", "2026-11-01T09:00:00.5Z"),
            load("v2", "2026-11-02T09:00:00Z"),
            load("v1", "2026-11-03T09:00:00Z"),
        ]
    );

    // Another process reads the same.
    let reader = Store::open_read_only(dir.path()).unwrap();
    assert_eq!(reader.pack_versions().unwrap(), vec![v1.clone(), v2]);
    let err = reader.record_pack_version(&v1).unwrap_err();
    assert!(matches!(err, StoreError::ReadOnly { .. }), "{err}");
}

#[test]
fn versions_are_listed_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let later = version("later", "2026-11-02T00:00:00Z");
    let earlier = version("earlier", "2026-11-01T00:00:00Z");
    store.record_pack_version(&later).unwrap();
    store.record_pack_version(&earlier).unwrap();

    let names: Vec<String> = store
        .pack_versions()
        .unwrap()
        .into_iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(names, ["earlier", "later"]);
}

#[test]
fn a_fresh_store_has_no_versions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.pack_versions().unwrap(), vec![]);
    assert_eq!(store.pack_loads().unwrap(), vec![]);
}

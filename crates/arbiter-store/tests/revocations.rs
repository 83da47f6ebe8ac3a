//! Revocations: committed before `revoke` returns, kept across restarts, read back in
//! commit order.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

mod common;

use arbiter_store::{DecisionQuery, Revocation, RevocationKind, Store, StoreError};
use common::{all_ids, ids_of, record};
use jiff::Timestamp;
use serde_json::json;

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

/// An unstored revocation of `kind` for `value`, made at `time`.
fn revocation(kind: RevocationKind, value: &str, time: &str) -> Revocation {
    Revocation {
        seq: 0,
        kind,
        value: value.to_owned(),
        principal: None,
        reason: "compromised".to_owned(),
        by: "admin:alice".to_owned(),
        at: at(time),
        expires_at: None,
    }
}

fn seqs(revocations: &[Revocation]) -> Vec<i64> {
    revocations.iter().map(|r| r.seq).collect()
}

#[test]
fn revoke_returns_the_revocation_as_listed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut jti = revocation(
        RevocationKind::Jti,
        "tok-1",
        "2026-11-26T10:00:00.123456789Z",
    );
    jti.expires_at = Some(at("2026-11-27T10:00:00.123456789Z"));
    let principal = revocation(
        RevocationKind::Principal,
        r#"Agent::"bot""#,
        "2026-11-26T11:00:00Z",
    );
    let mut session = revocation(RevocationKind::Session, "s-1", "2026-11-26T12:00:00Z");
    session.principal = Some(r#"Agent::"bot""#.to_owned());
    session.by = "rule:no-secrets".to_owned();

    let stored: Vec<Revocation> = [&jti, &principal, &session]
        .into_iter()
        .map(|r| store.revoke(r).unwrap())
        .collect();

    assert_eq!(seqs(&stored), [1, 2, 3]);
    // `at` is kept exactly; `expires_at` to the microsecond.
    let mut jti_stored = Revocation { seq: 1, ..jti };
    jti_stored.expires_at = Some(at("2026-11-27T10:00:00.123456Z"));
    assert_eq!(stored[0], jti_stored);
    assert_eq!(
        stored[1],
        Revocation {
            seq: 2,
            ..principal
        }
    );
    assert_eq!(stored[2], Revocation { seq: 3, ..session });
    assert_eq!(store.revocations_since(0).unwrap(), stored);
}

#[test]
fn revocations_survive_closing_and_reopening_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let first = store
        .revoke(&revocation(
            RevocationKind::Jti,
            "tok-1",
            "2026-11-26T10:00:00Z",
        ))
        .unwrap();
    drop(store);

    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.revocations_since(0).unwrap(), vec![first.clone()]);
    // Numbering carries on after the reopen.
    let second = store
        .revoke(&revocation(
            RevocationKind::Jti,
            "tok-2",
            "2026-11-26T10:01:00Z",
        ))
        .unwrap();
    assert_eq!(second.seq, 2);
    assert_eq!(store.revocations_since(0).unwrap(), vec![first, second]);
}

#[test]
fn revocations_since_returns_only_newer_ones_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // Committed out of time order: `seq` follows commits, not `at`.
    for (value, time) in [
        ("tok-1", "2026-11-26T10:00:00Z"),
        ("tok-2", "2026-11-26T09:00:00Z"),
        ("tok-3", "2026-11-26T11:00:00Z"),
        ("tok-4", "2026-11-26T08:00:00Z"),
    ] {
        store
            .revoke(&revocation(RevocationKind::Jti, value, time))
            .unwrap();
    }

    let values = |after| -> Vec<String> {
        store
            .revocations_since(after)
            .unwrap()
            .into_iter()
            .map(|r| r.value)
            .collect()
    };
    assert_eq!(values(0), ["tok-1", "tok-2", "tok-3", "tok-4"]);
    assert_eq!(values(2), ["tok-3", "tok-4"]);
    assert_eq!(values(4), Vec::<String>::new());
    assert_eq!(values(-1), values(0));
}

#[test]
fn revoking_a_principal_again_keeps_both_cut_offs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let first = store
        .revoke(&revocation(
            RevocationKind::Principal,
            r#"Agent::"bot""#,
            "2026-11-26T10:00:00Z",
        ))
        .unwrap();
    let later = store
        .revoke(&revocation(
            RevocationKind::Principal,
            r#"Agent::"bot""#,
            "2026-11-26T12:00:00Z",
        ))
        .unwrap();

    assert_eq!(store.revocations_since(0).unwrap(), vec![first, later]);
}

#[test]
fn a_read_only_store_sees_a_revocation_as_soon_as_revoke_returns() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let reader = Store::open_read_only(dir.path()).unwrap();
    assert_eq!(reader.revocations_since(0).unwrap(), vec![]);

    for n in 1..=3 {
        let r = store
            .revoke(&revocation(
                RevocationKind::Session,
                &format!("s-{n}"),
                "2026-11-26T10:00:00Z",
            ))
            .unwrap();
        assert_eq!(reader.revocations_since(n - 1).unwrap(), vec![r]);
    }

    let err = reader
        .revoke(&revocation(
            RevocationKind::Jti,
            "tok-1",
            "2026-11-26T10:00:00Z",
        ))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the database {} is open read-only",
            dir.path().join("arbiter.db").display()
        )
    );
    assert_eq!(store.revocations_since(0).unwrap().len(), 3);
}

#[test]
fn invalid_revocations_are_refused_and_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let time = "2026-11-26T10:00:00Z";
    let mut session_of_nobody = revocation(RevocationKind::Session, "s-1", time);
    session_of_nobody.principal = Some(String::new());
    let mut jti_with_principal = revocation(RevocationKind::Jti, "tok-1", time);
    jti_with_principal.principal = Some(r#"Agent::"bot""#.to_owned());
    let mut principal_with_principal =
        revocation(RevocationKind::Principal, r#"Agent::"bot""#, time);
    principal_with_principal.principal = Some(r#"Agent::"bot""#.to_owned());

    let cases = [
        (
            revocation(RevocationKind::Jti, "", time),
            "cannot revoke: the value is empty",
        ),
        (
            revocation(RevocationKind::Session, &"s".repeat(4097), time),
            "cannot revoke: the value is 4097 bytes long, more than 4096",
        ),
        (session_of_nobody, "cannot revoke: the principal is empty"),
        (
            jti_with_principal,
            "cannot revoke: only a session revocation takes a principal, not a jti one",
        ),
        (
            principal_with_principal,
            "cannot revoke: only a session revocation takes a principal, not a principal one",
        ),
    ];
    for (r, message) in cases {
        let err = store.revoke(&r).unwrap_err();
        assert!(matches!(err, StoreError::Invalid { .. }), "{err:?}");
        assert_eq!(err.to_string(), message);
    }
    assert_eq!(store.revocations_since(0).unwrap(), vec![]);

    // The limit is inclusive.
    let longest = revocation(RevocationKind::Session, &"s".repeat(4096), time);
    assert_eq!(store.revoke(&longest).unwrap().value.len(), 4096);
}

#[test]
fn a_revocation_serializes_with_rfc3339_times_and_without_empty_options() {
    let mut r = revocation(RevocationKind::Jti, "tok-1", "2026-11-26T10:00:00Z");
    r.seq = 7;
    assert_eq!(
        serde_json::to_value(&r).unwrap(),
        json!({
            "seq": 7,
            "kind": "jti",
            "value": "tok-1",
            "reason": "compromised",
            "by": "admin:alice",
            "at": "2026-11-26T10:00:00Z",
        })
    );

    let mut session = revocation(RevocationKind::Session, "s-1", "2026-11-26T10:00:00Z");
    session.principal = Some(r#"Agent::"bot""#.to_owned());
    session.expires_at = Some(at("2026-11-27T10:00:00Z"));
    let value = serde_json::to_value(&session).unwrap();
    assert_eq!(value["kind"], "session");
    assert_eq!(value["principal"], r#"Agent::"bot""#);
    assert_eq!(value["expires_at"], "2026-11-27T10:00:00Z");
    assert_eq!(
        serde_json::from_value::<Revocation>(value).unwrap(),
        session
    );
}

#[tokio::test]
async fn a_version_1_database_gains_revocations_and_keeps_its_decisions() {
    // Two decisions, as an arbiter of version 1 logged them.
    let dir = tempfile::tempdir().unwrap();
    let nothing_counted = tempfile::tempdir().unwrap();
    common::old_log(
        dir.path(),
        1,
        &[record(1), record(2)],
        nothing_counted.path(),
    );

    let err = Store::open_read_only(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::SchemaVersion {
                found: 1,
                expected: 9,
                ..
            }
        ),
        "{err}"
    );

    let store = Store::open(dir.path()).unwrap();
    assert_eq!(all_ids(&store, &DecisionQuery::default()), ids_of(&[1, 2]));
    let r = store
        .revoke(&revocation(
            RevocationKind::Jti,
            "tok-1",
            "2026-11-26T10:00:00Z",
        ))
        .unwrap();
    assert_eq!(r.seq, 1);

    let reader = Store::open_read_only(dir.path()).unwrap();
    assert_eq!(reader.revocations_since(0).unwrap(), vec![r]);
    assert_eq!(all_ids(&reader, &DecisionQuery::default()), ids_of(&[1, 2]));
}

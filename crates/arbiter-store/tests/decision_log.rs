//! Reading the decision log back: round trip, filters, paging, read-only access.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

mod common;

use std::os::unix::fs::PermissionsExt;

use arbiter_core::response::{AuditEntry, EvalError};
use arbiter_core::rule::{Effect, OnError, RuleRef};
use arbiter_store::{
    DecisionQuery, DecisionRecord, Durability, LogWriter, Logged, Refusal, Store, StoreError,
};
use common::{BASE_MS, all_ids, ids_of, record};
use jiff::Timestamp;
use serde_json::json;

/// Writes `records` through a writer and shuts it down, which commits them all.
async fn write_all(store: &Store, records: Vec<DecisionRecord>) {
    let writer = LogWriter::start(store, Durability::Batched, 64).unwrap();
    for r in records {
        writer.append(r).await.unwrap();
    }
    writer.shutdown().await.unwrap();
}

fn page(store: &Store, query: DecisionQuery) -> Vec<String> {
    all_ids(store, &query)
}

/// `rule` fired in audit, and would have denied.
fn audit(rule: &str) -> AuditEntry {
    AuditEntry {
        rule: RuleRef::from(rule),
        would: Effect::Deny,
    }
}

#[tokio::test]
async fn a_record_reads_back_exactly_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut r = record(1);
    r.time = "2026-11-26T10:00:00.123456789Z".parse().unwrap();
    r.session = Some("s-1".to_owned());
    r.credential_id = Some("cred-9".to_owned());
    r.decision = Logged::Deny;
    r.effect = Some(Effect::Revoke);
    r.enforced = vec![RuleRef::from("no-secrets")];
    r.warnings = vec![RuleRef::from("late-night")];
    r.audit = vec![audit("egress")];
    r.errors = vec![EvalError {
        rule: "size".to_owned(),
        message: "overflow".to_owned(),
        handled_as: OnError::Deny,
    }];
    r.reason = Some("secrets are off limits".to_owned());
    r.latency_us = 987;
    r.request["context"] = json!({"args": {"password": "hmac-sha256:00", "n": [1, 2.5, null]}});

    write_all(&store, vec![r.clone()]).await;

    let page = store
        .query_decisions(&DecisionQuery {
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(page.decisions, vec![r]);
    assert_eq!(page.next, None);
}

#[tokio::test]
async fn an_invalid_request_is_logged_without_uids() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut r = record(1);
    r.principal = None;
    r.action = None;
    r.resource = None;
    r.decision = Logged::Invalid;
    r.error = Some(Refusal {
        code: "invalid_request".to_owned(),
        message: "missing field `action`".to_owned(),
    });
    r.request = json!({"principal": 7});

    write_all(&store, vec![r.clone()]).await;

    let q = DecisionQuery {
        decision: Some("invalid".to_owned()),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(store.query_decisions(&q).unwrap().decisions, vec![r]);
}

/// Ten records: 0–9, one millisecond apart.
///
/// - principals: `Agent::"bot"`, except 3 and 4 are `User::"alice"`
/// - actions: `read_ticket`, except 5 is `delete_ticket`
/// - decisions: `allow`, except 2 and 6 `deny` (enforced `no-delete`), 7 `invalid`
/// - `late-night` warns on 1 and 6; `egress` audits on 3 and 6; `no-delete` audits on 8
fn filter_fixture() -> Vec<DecisionRecord> {
    (0..10)
        .map(|n| {
            let mut r = record(n);
            if n == 3 || n == 4 {
                r.principal = Some(r#"User::"alice""#.to_owned());
            }
            if n == 5 {
                r.action = Some(r#"Action::"delete_ticket""#.to_owned());
            }
            if n == 2 || n == 6 {
                r.decision = Logged::Deny;
                r.effect = Some(Effect::Deny);
                r.enforced = vec![RuleRef::from("no-delete")];
            }
            if n == 7 {
                r.decision = Logged::Invalid;
            }
            if n == 1 || n == 6 {
                r.warnings = vec![RuleRef::from("late-night")];
            }
            if n == 3 || n == 6 {
                r.audit.push(audit("egress"));
            }
            if n == 8 {
                r.audit.push(audit("no-delete"));
            }
            r
        })
        .collect()
}

#[tokio::test]
async fn every_filter_selects_exactly_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    write_all(&store, filter_fixture()).await;
    let at = |n: i64| Some(Timestamp::from_millisecond(BASE_MS + n).unwrap());
    let text = |s: &str| Some(s.to_owned());
    let q = DecisionQuery::default;

    assert_eq!(page(&store, q()), ids_of(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]));
    assert_eq!(
        page(
            &store,
            DecisionQuery {
                since: at(7),
                ..q()
            }
        ),
        ids_of(&[7, 8, 9])
    );
    assert_eq!(
        page(
            &store,
            DecisionQuery {
                until: at(2),
                ..q()
            }
        ),
        ids_of(&[0, 1])
    );
    assert_eq!(
        page(
            &store,
            DecisionQuery {
                since: at(2),
                until: at(4),
                ..q()
            }
        ),
        ids_of(&[2, 3])
    );
    assert_eq!(
        page(
            &store,
            DecisionQuery {
                principal: text(r#"User::"alice""#),
                ..q()
            }
        ),
        ids_of(&[3, 4])
    );
    assert_eq!(
        page(
            &store,
            DecisionQuery {
                action: text(r#"Action::"delete_ticket""#),
                ..q()
            }
        ),
        ids_of(&[5])
    );
    assert_eq!(
        page(
            &store,
            DecisionQuery {
                decision: text("deny"),
                ..q()
            }
        ),
        ids_of(&[2, 6])
    );
    assert_eq!(
        page(
            &store,
            DecisionQuery {
                decision: text("invalid"),
                ..q()
            }
        ),
        ids_of(&[7])
    );
    assert_eq!(
        page(
            &store,
            DecisionQuery {
                decision: text("allow"),
                ..q()
            }
        ),
        ids_of(&[0, 1, 3, 4, 5, 8, 9])
    );

    // A rule, in whichever mode it fired.
    assert_eq!(
        page(
            &store,
            DecisionQuery {
                rule: text("no-delete"),
                ..q()
            }
        ),
        ids_of(&[2, 6, 8])
    );
    assert_eq!(
        page(
            &store,
            DecisionQuery {
                rule: text("late-night"),
                ..q()
            }
        ),
        ids_of(&[1, 6])
    );
    assert_eq!(
        page(
            &store,
            DecisionQuery {
                rule: text("egress"),
                ..q()
            }
        ),
        ids_of(&[3, 6])
    );
    assert_eq!(
        page(
            &store,
            DecisionQuery {
                rule: text("nothing"),
                ..q()
            }
        ),
        ids_of(&[])
    );

    // A mode, for any rule.
    assert_eq!(
        page(
            &store,
            DecisionQuery {
                mode: text("enforce"),
                ..q()
            }
        ),
        ids_of(&[2, 6])
    );
    assert_eq!(
        page(
            &store,
            DecisionQuery {
                mode: text("warn"),
                ..q()
            }
        ),
        ids_of(&[1, 6])
    );
    assert_eq!(
        page(
            &store,
            DecisionQuery {
                mode: text("audit"),
                ..q()
            }
        ),
        ids_of(&[3, 6, 8])
    );

    // A rule in a mode.
    let rule_in = |rule: &str, mode: &str| DecisionQuery {
        rule: text(rule),
        mode: text(mode),
        ..q()
    };
    assert_eq!(page(&store, rule_in("no-delete", "audit")), ids_of(&[8]));
    assert_eq!(
        page(&store, rule_in("no-delete", "enforce")),
        ids_of(&[2, 6])
    );
    assert_eq!(page(&store, rule_in("egress", "enforce")), ids_of(&[]));

    // Filters combine.
    assert_eq!(
        page(
            &store,
            DecisionQuery {
                rule: text("egress"),
                principal: text(r#"User::"alice""#),
                ..q()
            }
        ),
        ids_of(&[3])
    );
    assert_eq!(
        page(
            &store,
            DecisionQuery {
                mode: text("warn"),
                decision: text("deny"),
                ..q()
            }
        ),
        ids_of(&[6])
    );
}

#[tokio::test]
async fn words_outside_the_vocabulary_and_foreign_cursors_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let q = |mode: Option<&str>, decision: Option<&str>, cursor: Option<&str>| DecisionQuery {
        mode: mode.map(str::to_owned),
        decision: decision.map(str::to_owned),
        cursor: cursor.map(str::to_owned),
        limit: 10,
        ..Default::default()
    };

    let err = store
        .query_decisions(&q(Some("shadow"), None, None))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"invalid decision query: mode "shadow" is not one of audit, warn, enforce"#
    );
    let err = store
        .query_decisions(&q(None, Some("maybe"), None))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"invalid decision query: decision "maybe" is not one of allow, deny, invalid"#
    );
    let err = store
        .query_decisions(&q(None, None, Some("page-2")))
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidCursor { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        r#"invalid cursor "page-2": pass the `next` value of a previous page"#
    );
}

#[tokio::test]
async fn cursors_walk_every_page_without_duplicates_or_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    write_all(&store, (0..250).map(record).collect()).await;

    let mut query = DecisionQuery {
        limit: 100,
        ..Default::default()
    };
    let mut pages = Vec::new();
    loop {
        let page = store.query_decisions(&query).unwrap();
        pages.push(
            page.decisions
                .iter()
                .map(|d| d.decision_id.clone())
                .collect::<Vec<_>>(),
        );
        match page.next {
            Some(next) => query.cursor = Some(next),
            None => break,
        }
    }

    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        [100, 100, 50]
    );
    let all: Vec<u64> = (0..250).collect();
    assert_eq!(pages.concat(), ids_of(&all));
}

#[tokio::test]
async fn a_last_page_that_is_exactly_full_has_no_next() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    write_all(&store, (0..4).map(record).collect()).await;

    let first = store
        .query_decisions(&DecisionQuery {
            limit: 2,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(first.next.as_deref(), Some(record(2).decision_id.as_str()));
    let second = store
        .query_decisions(&DecisionQuery {
            limit: 2,
            cursor: first.next,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(second.decisions.len(), 2);
    assert_eq!(second.next, None);
}

#[tokio::test]
async fn cursors_combine_with_filters() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let records = (0..30).map(|n| {
        let mut r = record(n);
        if n % 3 == 0 {
            r.warnings = vec![RuleRef::from("late-night")];
        }
        r
    });
    write_all(&store, records.collect()).await;

    let query = DecisionQuery {
        rule: Some("late-night".to_owned()),
        limit: 3,
        ..Default::default()
    };
    let expected: Vec<u64> = (0..30).filter(|n| n % 3 == 0).collect();
    assert_eq!(all_ids(&store, &query), ids_of(&expected));
}

#[tokio::test]
async fn a_sync_append_is_visible_to_a_read_only_store_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let writer = LogWriter::start(&store, Durability::Sync, 16).unwrap();
    let reader = Store::open_read_only(dir.path()).unwrap();
    let q = DecisionQuery {
        limit: 10,
        ..Default::default()
    };

    for n in 0..5 {
        writer.append(record(n)).await.unwrap();
        let newest = reader.query_decisions(&q).unwrap().decisions;
        assert_eq!(
            newest.first().map(|d| d.decision_id.clone()),
            Some(record(n).decision_id)
        );
        // A store opened after the commit sees it too.
        let late = Store::open_read_only(dir.path()).unwrap();
        assert_eq!(
            late.query_decisions(&q).unwrap().decisions.len(),
            usize::try_from(n).unwrap() + 1
        );
    }
    writer.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_read_only_store_opens_after_the_writer_has_closed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        write_all(&store, vec![record(1)]).await;
    }
    let reader = Store::open_read_only(dir.path()).unwrap();
    let page = reader
        .query_decisions(&DecisionQuery {
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(page.decisions, vec![record(1)]);
}

/// What a directory holds: each entry's name, length and modification time.
fn listing(dir: &std::path::Path) -> Vec<(String, u64, std::time::SystemTime)> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                meta.len(),
                meta.modified().unwrap(),
            )
        })
        .collect();
    entries.sort();
    entries
}

/// Finding 13: reading a cleanly closed WAL database created its `-wal` and `-shm`
/// beside it, which a read-only data directory refuses. (Root ignores permission bits,
/// so the test asserts what a read-only directory needs: nothing created or changed.)
/// The directory's name has characters a URI would misread.
#[tokio::test]
async fn reading_a_cleanly_closed_store_creates_and_changes_no_file_in_its_directory() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data ?#%20");
    {
        let store = Store::open(&dir).unwrap();
        write_all(&store, vec![record(1), record(2)]).await;
    }
    let before = listing(&dir);
    assert_eq!(
        before.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
        ["arbiter.db"]
    );
    let dir_modified = std::fs::metadata(&dir).unwrap().modified().unwrap();
    {
        let reader = Store::open_read_only(&dir).unwrap();
        assert_eq!(page(&reader, DecisionQuery::default()), ids_of(&[1, 2]));
    }
    assert_eq!(listing(&dir), before);
    assert_eq!(
        std::fs::metadata(&dir).unwrap().modified().unwrap(),
        dir_modified
    );
}

#[test]
fn a_read_only_store_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.check_writable().unwrap();

    let reader = Store::open_read_only(dir.path()).unwrap();
    let db = dir.path().join("arbiter.db");
    let read_only = format!("the database {} is open read-only", db.display());
    assert_eq!(reader.check_writable().unwrap_err().to_string(), read_only);
    let err = LogWriter::start(&reader, Durability::Batched, 1).unwrap_err();
    assert_eq!(err.to_string(), read_only);
}

#[test]
fn read_only_needs_an_existing_database() {
    let dir = tempfile::tempdir().unwrap();
    let err = Store::open_read_only(dir.path()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "there is no arbiter database at {}: start a server with this data directory first",
            dir.path().join("arbiter.db").display()
        )
    );
    assert!(!dir.path().join("arbiter.db").exists());
}

#[test]
fn open_creates_a_private_data_directory_and_reopens_it() {
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("arbiter-data");
    let store = Store::open(&data).unwrap();
    assert_eq!(store.data_dir(), data);
    let mode = std::fs::metadata(&data).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    drop(store);

    // Migrations are idempotent: a second open changes nothing and works.
    let store = Store::open(&data).unwrap();
    store.check_writable().unwrap();
}

#[test]
fn a_database_from_a_newer_arbiter_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    let db = dir.path().join("arbiter.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();

    let err = Store::open_read_only(dir.path()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the database {} has schema version 99 and this arbiter reads version 9: \
             it was written by a newer arbiter; upgrade this one",
            db.display()
        )
    );
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Migrate { .. }), "{err}");
}

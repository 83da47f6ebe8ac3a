//! A log written before version 7, one row per decision, is moved into segments when a
//! store opens it: every decision is still there, byte for byte, and every reader
//! answers as it does for the same decisions logged into segments.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

mod common;

use arbiter_core::response::AuditEntry;
use arbiter_core::rule::{Effect, RuleRef};
use arbiter_store::{
    BaselineQuery, DecisionQuery, DecisionRecord, Durability, LogWriter, Logged, Store,
};
use common::{all_ids, credential, record};

async fn log(store: &Store, records: Vec<DecisionRecord>) {
    let writer = LogWriter::start(store, Durability::Batched, 1024).unwrap();
    for r in records {
        writer.append(r).await.unwrap();
    }
    writer.shutdown().await.unwrap();
}

/// 5,000 decisions (more than one migrated segment) of three principals, some denied,
/// some refused, some with a rule fired in audit or a default-deny scope in warn.
fn decisions() -> Vec<DecisionRecord> {
    (1..=5000_u64)
        .map(|n| {
            let mut r = record(n);
            r.principal = Some(format!(r#"Agent::"a{}""#, n % 3));
            match n % 7 {
                0 => r.decision = Logged::Deny,
                1 => {
                    r.decision = Logged::Invalid;
                    r.principal = None;
                    r.action = None;
                    r.resource = None;
                }
                2 => {
                    r.audit = vec![AuditEntry {
                        rule: RuleRef::from("r.audit"),
                        would: Effect::Deny,
                    }];
                }
                3 => {
                    r.decision = Logged::Deny;
                    r.warnings = vec![RuleRef::from("default-deny:Agent")];
                }
                _ => {}
            }
            if n % 5 == 0 {
                r.credential = Some(credential(&format!("jti-{}", n % 11)));
            } else if n % 5 == 1 {
                r.credential_id = Some(format!("id-{}", n % 13));
            }
            if n % 17 == 0 {
                r.novel = Some(true);
                r.action = Some(format!(r#"Action::"a{}""#, n % 4));
            }
            r
        })
        .collect()
}

#[tokio::test]
async fn a_version_6_log_is_read_the_same_after_its_move_into_segments() {
    let records = decisions();
    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = Store::open(fresh_dir.path()).unwrap();
    log(&fresh, records.clone()).await;

    let old_dir = tempfile::tempdir().unwrap();
    common::old_log(old_dir.path(), 6, &records, fresh_dir.path());
    let migrated = Store::open(old_dir.path()).unwrap();

    // The old tables are gone.
    let db = rusqlite::Connection::open(old_dir.path().join(arbiter_store::DB_FILE)).unwrap();
    let old: i64 = db
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name IN ('decisions', 'decision_rules')",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(old, 0);

    // A new database is made with 8 KiB pages; one made before keeps its own (SQLite
    // cannot change the page size of a database in WAL mode), and is read the same.
    let page_size = |dir: &std::path::Path| -> i64 {
        rusqlite::Connection::open(dir.join(arbiter_store::DB_FILE))
            .unwrap()
            .query_row("PRAGMA page_size", [], |row| row.get(0))
            .unwrap()
    };
    assert_eq!(page_size(fresh_dir.path()), 8192);
    assert_eq!(page_size(old_dir.path()), 4096);

    // Every record, byte for byte as it was logged.
    for r in records.iter().step_by(97) {
        assert_eq!(migrated.decision(&r.decision_id).unwrap().as_ref(), Some(r));
    }
    assert_eq!(
        migrated.decision("01J00000000000000000000000").unwrap(),
        None
    );

    let queries = [
        DecisionQuery::default(),
        DecisionQuery {
            principal: Some(r#"Agent::"a1""#.to_owned()),
            ..DecisionQuery::default()
        },
        DecisionQuery {
            decision: Some("invalid".to_owned()),
            ..DecisionQuery::default()
        },
        DecisionQuery {
            rule: Some("r.audit".to_owned()),
            mode: Some("audit".to_owned()),
            ..DecisionQuery::default()
        },
        DecisionQuery {
            rule: Some("default-deny:Agent".to_owned()),
            decision: Some("deny".to_owned()),
            ..DecisionQuery::default()
        },
        DecisionQuery {
            rule: Some("r.audit".to_owned()),
            decision: Some("allow".to_owned()),
            limit: 9,
            ..DecisionQuery::default()
        },
        DecisionQuery {
            mode: Some("warn".to_owned()),
            since: Some(records[2000].time),
            until: Some(records[4000].time),
            limit: 7,
            ..DecisionQuery::default()
        },
    ];
    for q in &queries {
        let ids = all_ids(&migrated, q);
        assert!(!ids.is_empty(), "{q:?}");
        assert_eq!(ids, all_ids(&fresh, q), "{q:?}");
    }
    assert_eq!(all_ids(&migrated, &queries[0]).len(), records.len());
    // The rule's denies are every one of them, read through the keys that name a rule
    // by the outcome it fired in (added to old segments by the migration).
    let denied_by_scope = records
        .iter()
        .filter(|r| {
            r.decision == Logged::Deny && r.warnings.iter().any(|w| *w == "default-deny:Agent")
        })
        .count();
    assert_eq!(all_ids(&migrated, &queries[4]).len(), denied_by_scope);

    assert_eq!(
        migrated.count_decisions(None, None, None).unwrap(),
        records.len() as u64
    );
    assert_eq!(
        migrated
            .count_decisions(Some(records[100].time), None, Some(r#"Agent::"a2""#))
            .unwrap(),
        fresh
            .count_decisions(Some(records[100].time), None, Some(r#"Agent::"a2""#))
            .unwrap()
    );
    assert_eq!(
        migrated.principals(None, 10).unwrap(),
        fresh.principals(None, 10).unwrap()
    );
    // What each identity did, summed up by the migration as the writer sums it up.
    for p in 0..3 {
        let principal = format!(r#"Agent::"a{p}""#);
        let activity = migrated.activity(&principal).unwrap();
        assert!(!activity.credentials.is_empty() && !activity.novel.is_empty());
        assert_eq!(activity, fresh.activity(&principal).unwrap(), "{principal}");
    }
    let observed = |store: &Store| {
        store
            .observed(&BaselineQuery::default(), &mut |_, _| {})
            .unwrap()
    };
    assert_eq!(observed(&migrated), observed(&fresh));

    // A walk hands the decisions over in the order they were written.
    let mut walked = Vec::new();
    migrated
        .walk_decisions(None, None, None, |d| {
            walked.push(d.decision_id().to_owned());
            true
        })
        .unwrap();
    let written: Vec<String> = records.iter().map(|r| r.decision_id.clone()).collect();
    assert_eq!(walked, written);
}

#[test]
fn a_logged_decision_that_is_not_a_record_stops_the_migration_and_says_which() {
    let counted = tempfile::tempdir().unwrap();
    drop(Store::open(counted.path()).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let records = vec![record(1), record(2)];
    common::old_log(dir.path(), 6, &records, counted.path());
    let db = rusqlite::Connection::open(dir.path().join(arbiter_store::DB_FILE)).unwrap();
    db.execute(
        "UPDATE decisions SET record = '{\"not\": \"a record\"}' WHERE decision_id = ?1",
        [&records[1].decision_id],
    )
    .unwrap();
    drop(db);

    let err = Store::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains(&records[1].decision_id), "{err}");
    // Nothing was lost: the log is still at version 6, with both decisions.
    let db = rusqlite::Connection::open(dir.path().join(arbiter_store::DB_FILE)).unwrap();
    let (version, rows): (i64, i64) = db
        .query_row(
            "SELECT (SELECT user_version FROM pragma_user_version),
                    (SELECT count(*) FROM decisions)",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert_eq!((version, rows), (6, 2));
}

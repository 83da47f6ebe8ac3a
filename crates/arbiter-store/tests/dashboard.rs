//! What the dashboard reads without scanning the log: decisions per hour and outcome, the
//! principals seen, one identity's activity, one decision by id; and the migration that
//! fills the first two from a log written before they existed.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "a test"
)]

mod common;

use std::sync::Arc;

use arbiter_core::response::AuditEntry;
use arbiter_core::rule::{Effect, RuleRef};
use arbiter_store::{
    DecisionRecord, Durability, LogWriter, Logged, LoggedCredential, OutcomeHour, Store,
};
use common::{BASE_MS, record};
use jiff::Timestamp;

/// Milliseconds in an hour.
const HOUR_MS: u64 = 3_600_000;

async fn log(store: &Store, records: Vec<DecisionRecord>) {
    let writer = LogWriter::start(store, Durability::Batched, 1024).unwrap();
    for r in records {
        writer.append(r).await.unwrap();
    }
    writer.shutdown().await.unwrap();
}

fn of(n: u64, principal: &str, decision: Logged) -> DecisionRecord {
    let mut r = record(n);
    r.principal = Some(principal.to_owned());
    r.decision = decision;
    r
}

fn hour_of(n: u64) -> Timestamp {
    let ms = BASE_MS + i64::try_from(n).unwrap();
    Timestamp::from_millisecond(ms - ms.rem_euclid(3_600_000)).unwrap()
}

fn credential(jti: &str) -> LoggedCredential {
    LoggedCredential {
        jti: jti.to_owned(),
        issuer: "https://arbiter.test".to_owned(),
        principal: r#"Agent::"a""#.to_owned(),
        intent: None,
        session: None,
        issued_at: "2026-11-26T09:00:00Z".parse().unwrap(),
        expires_at: "2026-11-26T11:00:00Z".parse().unwrap(),
        attributes: Default::default(),
    }
}

fn three_hours() -> Vec<DecisionRecord> {
    vec![
        of(1, r#"Agent::"a""#, Logged::Allow),
        of(2, r#"Agent::"a""#, Logged::Deny),
        of(3, r#"Agent::"b""#, Logged::Allow),
        of(HOUR_MS + 1, r#"Agent::"b""#, Logged::Invalid),
        of(2 * HOUR_MS + 1, r#"Agent::"c""#, Logged::Allow),
    ]
}

fn expected_hours() -> Vec<OutcomeHour> {
    let h = |n, decision, count| OutcomeHour {
        hour: hour_of(n),
        decision,
        count,
    };
    vec![
        h(1, Logged::Allow, 2),
        h(1, Logged::Deny, 1),
        h(HOUR_MS + 1, Logged::Invalid, 1),
        h(2 * HOUR_MS + 1, Logged::Allow, 1),
    ]
}

#[tokio::test]
async fn decisions_are_counted_per_hour_and_outcome_as_they_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    log(&store, three_hours()).await;
    // Written again (a retried batch): counted once.
    log(&store, three_hours()).await;
    assert_eq!(store.outcome_hours(hour_of(0)).unwrap(), expected_hours());
    // From the second hour on.
    assert_eq!(
        store.outcome_hours(hour_of(HOUR_MS + 5)).unwrap(),
        expected_hours()[2..].to_vec()
    );
}

#[tokio::test]
async fn principals_are_listed_in_order_a_page_at_a_time_with_first_and_last_seen() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    log(&store, three_hours()).await;
    let all = store.principals(None, 10).unwrap();
    let names: Vec<&str> = all.iter().map(|s| s.principal.as_str()).collect();
    assert_eq!(names, [r#"Agent::"a""#, r#"Agent::"b""#, r#"Agent::"c""#]);
    assert_eq!(all[1].first_seen, record(3).time);
    assert_eq!(all[1].last_seen, record(HOUR_MS + 1).time);
    let first = store.principals(None, 2).unwrap();
    assert_eq!(first.len(), 2);
    let rest = store.principals(Some(&first[1].principal), 2).unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].principal, r#"Agent::"c""#);
    assert!(
        store
            .principals(Some(r#"Agent::"c""#), 2)
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn an_identitys_activity_counts_outcomes_credentials_and_novel_actions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut a1 = of(1, r#"Agent::"a""#, Logged::Allow);
    a1.credential = Some(credential("jti-1"));
    a1.credential_id = Some("jti-1".to_owned());
    let mut a2 = of(2, r#"Agent::"a""#, Logged::Deny);
    a2.credential = Some(credential("jti-1"));
    a2.novel = Some(true);
    a2.action = Some(r#"Action::"delete""#.to_owned());
    let mut a3 = of(3, r#"Agent::"a""#, Logged::Allow);
    a3.credential = Some(credential("jti-2"));
    a3.novel = Some(false);
    let other = of(4, r#"Agent::"b""#, Logged::Allow);
    log(&store, vec![a1, a2.clone(), a3, other]).await;

    let a = store.activity(r#"Agent::"a""#).unwrap();
    assert_eq!(a.outcomes.get("allow"), Some(&2));
    assert_eq!(a.outcomes.get("deny"), Some(&1));
    let jtis: Vec<(&str, u64)> = a
        .credentials
        .iter()
        .map(|c| (c.jti.as_str(), c.decisions))
        .collect();
    // The most recently used first.
    assert_eq!(jtis, [("jti-2", 1), ("jti-1", 2)]);
    assert_eq!(
        a.credentials[1].issuer.as_deref(),
        Some("https://arbiter.test")
    );
    assert_eq!(a.credentials[1].first_seen, record(1).time);
    assert_eq!(a.credentials[1].last_seen, record(2).time);
    assert_eq!(a.novel.len(), 1);
    assert_eq!(a.novel[0].action, r#"Action::"delete""#);
    assert_eq!(a.novel[0].decision_id, a2.decision_id);
    assert!(store.activity("nobody").unwrap().outcomes.is_empty());

    assert_eq!(store.decision(&a2.decision_id).unwrap(), Some(a2));
    assert_eq!(store.decision("01NOTANID").unwrap(), None);
}

#[tokio::test]
async fn a_log_written_before_version_6_gets_its_hours_and_decisive_firings_on_open() {
    let counted = tempfile::tempdir().unwrap();
    let store = Store::open(counted.path()).unwrap();
    let slice: Arc<[String]> = Arc::from(vec!["r.audit".to_owned()]);
    let audited = |n: u64, decision: Logged| {
        let mut r = of(n, r#"Agent::"a""#, decision);
        r.audit = vec![AuditEntry {
            rule: RuleRef::from("r.audit"),
            would: Effect::Deny,
        }];
        r.evidence.in_scope = Some(Arc::clone(&slice));
        r
    };
    let mut records = three_hours();
    records.push(audited(10, Logged::Allow));
    records.push(audited(11, Logged::Allow));
    records.push(audited(12, Logged::Deny));
    log(&store, records.clone()).await;
    let hours = store.outcome_hours(hour_of(0)).unwrap();
    let days = store.rule_days(Some("r.audit")).unwrap();
    assert_eq!(days[0].fired, 3);
    assert_eq!(days[0].decisive, 2);
    drop(store);

    // The same decisions, as an arbiter of version 5 left them.
    let dir = tempfile::tempdir().unwrap();
    common::old_log(dir.path(), 5, &records, counted.path());

    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.outcome_hours(hour_of(0)).unwrap(), hours);
    assert_eq!(store.rule_days(Some("r.audit")).unwrap(), days);
    // A rule's evidence is a range of the findings table.
    let db = rusqlite::Connection::open(dir.path().join("arbiter.db")).unwrap();
    let plan: String = db
        .query_row(
            "EXPLAIN QUERY PLAN SELECT f.principal, f.decisive, f.first_seen_us, f.last_seen_us
             FROM findings f WHERE f.rule = 'r.audit'",
            [],
            |row| row.get(3),
        )
        .unwrap();
    assert!(plan.contains("USING PRIMARY KEY (rule=?)"), "{plan}");
}

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
use arbiter_store::{DecisionRecord, Durability, LogWriter, Logged, OutcomeHour, Store};
use common::{BASE_MS, credential, record};
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

#[tokio::test]
async fn an_identity_keeps_its_first_credentials_and_counts_the_decisions_of_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let max = arbiter_store::MAX_CREDENTIALS as u64;
    let presenting = |n: u64, jti: u64| {
        let mut r = of(n, r#"Agent::"a""#, Logged::Allow);
        r.credential = Some(credential(&format!("jti-{jti:04}")));
        r
    };
    // Every credential once, in two writers' batches; then the first kept one again and
    // one left out again; then the first batch again (a retry), which counts nothing.
    let first: Vec<DecisionRecord> = (0..max / 2).map(|n| presenting(n + 1, n)).collect();
    log(&store, first.clone()).await;
    log(
        &store,
        (max / 2..max + 5).map(|n| presenting(n + 1, n)).collect(),
    )
    .await;
    log(
        &store,
        vec![presenting(1_000, 0), presenting(1_001, max + 1)],
    )
    .await;
    log(&store, first).await;

    let a = store.activity(r#"Agent::"a""#).unwrap();
    assert_eq!(a.credentials.len() as u64, max);
    assert_eq!(a.credentials_left_out, 6);
    assert_eq!(a.outcomes.get("allow"), Some(&(max + 7)));
    // The most recently used first: the kept one presented again.
    assert_eq!(a.credentials[0].jti, "jti-0000");
    assert_eq!(a.credentials[0].decisions, 2);
    assert_eq!(a.credentials[0].first_seen, record(1).time);
    assert_eq!(a.credentials[0].last_seen, record(1_000).time);
    assert!(
        a.credentials
            .iter()
            .all(|c| c.jti < format!("jti-{max:04}"))
    );
}

/// A small generator, so the log below is the same on every run.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// 3,000 decisions of five principals: outcomes of every kind, rules fired in every mode
/// (default-deny scopes too), credentials by claims and by id only, novel actions; some
/// decisions out of time order.
fn varied() -> Vec<DecisionRecord> {
    let mut rng = Lcg(7);
    (1..=3000_u64)
        .map(|n| {
            let t = if rng.below(10) == 0 { n + 5_000 } else { n };
            let mut r = record(t);
            r.decision_id = record(n).decision_id;
            r.principal = Some(format!(r#"Agent::"a{}""#, rng.below(5)));
            r.action = Some(format!(r#"Action::"act{}""#, rng.below(4)));
            r.resource = Some(format!(r#"Ticket::"T-{}""#, rng.below(6)));
            r.decision = match rng.below(10) {
                0..=5 => Logged::Allow,
                6..=8 => Logged::Deny,
                _ => Logged::Invalid,
            };
            match rng.below(5) {
                0 => r.warnings = vec![RuleRef::from("default-deny:Agent")],
                1 => {
                    r.audit = vec![AuditEntry {
                        rule: RuleRef::from("default-deny:Agent"),
                        would: Effect::Deny,
                    }];
                }
                2 => r.enforced = vec![RuleRef::from("r.enforced")],
                3 => {
                    r.warnings = vec![RuleRef::from("default-deny:Agent")];
                    r.enforced = vec![RuleRef::from("r.enforced")];
                }
                _ => {}
            }
            match rng.below(4) {
                0 => r.credential = Some(credential(&format!("jti-{}", rng.below(30)))),
                1 => r.credential_id = Some(format!("id-{}", rng.below(30))),
                _ => {}
            }
            if rng.below(8) == 0 {
                r.novel = Some(true);
            }
            if r.decision == Logged::Invalid && rng.below(2) == 0 {
                r.principal = None;
                r.action = None;
                r.resource = None;
            }
            r
        })
        .collect()
}

/// The credential a decision presented: its verified id, else the request's.
fn presented(r: &DecisionRecord) -> Option<&str> {
    r.credential
        .as_ref()
        .map(|c| c.jti.as_str())
        .or(r.credential_id.as_deref())
}

#[tokio::test]
async fn the_summaries_say_what_reading_every_decision_says() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let records = varied();
    log(&store, records[..1200].to_vec()).await;
    log(&store, records[1000..].to_vec()).await;

    // `observed` of one principal over the whole log reads its summary; with a `since`
    // before every decision it reads the decisions.
    let whole = |principal: Option<&str>| arbiter_store::BaselineQuery {
        principal: principal.map(str::to_owned),
        since: None,
    };
    let scanned = |principal: Option<&str>| arbiter_store::BaselineQuery {
        principal: principal.map(str::to_owned),
        since: Some(Timestamp::MIN),
    };
    for principal in [None, Some(r#"Agent::"a3""#), Some("nobody")] {
        let summed = store.observed(&whole(principal), &mut |_, _| {}).unwrap();
        let read = store.observed(&scanned(principal), &mut |_, _| {}).unwrap();
        assert_eq!(summed, read, "{principal:?}");
        assert_eq!(summed.is_empty(), principal == Some("nobody"));
    }

    // Each identity's activity, from the records themselves.
    for p in 0..5 {
        let principal = format!(r#"Agent::"a{p}""#);
        let mine: Vec<&DecisionRecord> = records
            .iter()
            .filter(|r| r.principal.as_deref() == Some(&principal))
            .collect();
        let a = store.activity(&principal).unwrap();
        for (word, outcome) in [
            ("allow", Logged::Allow),
            ("deny", Logged::Deny),
            ("invalid", Logged::Invalid),
        ] {
            let n = mine.iter().filter(|r| r.decision == outcome).count() as u64;
            assert_eq!(
                a.outcomes.get(word).copied(),
                (n > 0).then_some(n),
                "{p} {word}"
            );
        }
        let mut novel: Vec<(&str, &str)> = Vec::new();
        for r in &mine {
            let action = r.action.as_deref().unwrap();
            if r.novel == Some(true) && !novel.iter().any(|(a, _)| *a == action) {
                novel.push((action, &r.decision_id));
            }
        }
        let got: Vec<(&str, &str)> = a
            .novel
            .iter()
            .map(|n| (n.action.as_str(), n.decision_id.as_str()))
            .collect();
        assert_eq!(got, novel, "{p}");
        for c in &a.credentials {
            let using: Vec<&&DecisionRecord> = mine
                .iter()
                .filter(|r| presented(r) == Some(c.jti.as_str()))
                .collect();
            assert_eq!(c.decisions, using.len() as u64, "{p} {}", c.jti);
            assert_eq!(Some(c.first_seen), using.iter().map(|r| r.time).min());
            assert_eq!(Some(c.last_seen), using.iter().map(|r| r.time).max());
            assert_eq!(c.issuer.is_some(), c.jti.starts_with("jti-"));
        }
        let distinct: std::collections::HashSet<&str> =
            mine.iter().filter_map(|r| presented(r)).collect();
        assert_eq!(a.credentials.len(), distinct.len(), "{p}");
        assert_eq!(a.credentials_left_out, 0);
    }

    // A freeze of the whole log holds the pairs the decisions hold.
    let (_, pairs) = store
        .freeze_baseline("test", None, record(9_000).time)
        .unwrap();
    let summed: std::collections::BTreeSet<(String, String)> = store
        .baseline_pairs()
        .unwrap()
        .unwrap()
        .into_iter()
        .collect();
    let (_, again) = store
        .freeze_baseline("test", Some(Timestamp::MIN), record(9_001).time)
        .unwrap();
    let read: std::collections::BTreeSet<(String, String)> = store
        .baseline_pairs()
        .unwrap()
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(pairs, again);
    assert!(pairs > 10);
    assert_eq!(summed, read);
}

/// A summary row that is not what the writer wrote (a negative count, text that is not
/// its JSON) is a located error for its readers, and the writer refuses to add to it:
/// the batch is not committed, the log says why, and no thread panics.
#[tokio::test]
async fn a_tampered_summary_row_is_refused_by_readers_and_by_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    log(&store, vec![of(1, r#"Agent::"a""#, Logged::Allow)]).await;
    let db = rusqlite::Connection::open(dir.path().join(arbiter_store::DB_FILE)).unwrap();
    let tamper = |counts: &str| {
        let changed = db
            .execute(
                "UPDATE log_observed SET counts = ?1 WHERE principal = ?2",
                rusqlite::params![counts, r#"Agent::"a""#],
            )
            .unwrap();
        assert_eq!(changed, 1);
    };
    let query = arbiter_store::BaselineQuery {
        principal: Some(r#"Agent::"a""#.to_owned()),
        since: None,
    };

    tamper(r#"[["Action::\"read\"","R::\"r\"",-5,0,1,2]]"#);
    let negative = store.observed(&query, &mut |_, _| {}).unwrap_err();
    assert!(
        matches!(negative, arbiter_store::StoreError::Corrupt { .. }),
        "{negative}"
    );
    let said = negative.to_string();
    assert!(said.contains("log_observed"), "{said}");
    assert!(said.contains("a negative count"), "{said}");

    // The writer merges the next decision of the same principal and segment into that
    // row: the transaction fails, is retried, and at shutdown the batch is reported
    // unwritten, saying why. Nothing of it is committed.
    let writer = LogWriter::start(&store, Durability::Batched, 16).unwrap();
    writer
        .append(of(2, r#"Agent::"a""#, Logged::Allow))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while writer.write_errors() == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(writer.write_errors() > 0);
    assert!(!writer.is_healthy());
    let Err(arbiter_store::StoreError::Unwritten {
        unwritten,
        last_error,
        ..
    }) = writer.shutdown().await
    else {
        panic!("the batch was written on a tampered summary");
    };
    assert_eq!(unwritten, 1);
    assert!(last_error.contains("log_observed"), "{last_error}");
    assert!(last_error.contains("a negative count"), "{last_error}");
    assert_eq!(
        store
            .activity(r#"Agent::"a""#)
            .unwrap()
            .outcomes
            .get("allow"),
        Some(&1)
    );

    tamper("not json");
    let unreadable = store.observed(&query, &mut |_, _| {}).unwrap_err();
    assert!(
        unreadable.to_string().contains("log_observed"),
        "{unreadable}"
    );
}

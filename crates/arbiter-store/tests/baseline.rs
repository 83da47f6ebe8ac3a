//! The baseline: what identities did, read from the decision log, and the frozen
//! (principal, action) pairs that tell a novel pair from a known one.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

mod common;

use std::collections::HashSet;

use arbiter_core::response::AuditEntry;
use arbiter_core::rule::{Effect, RuleRef};
use arbiter_store::{
    BaselineQuery, DecisionRecord, Durability, LogWriter, Logged, Observed, Refusal, Store,
    StoreError,
};
use common::{BASE_MS, record};
use jiff::Timestamp;
use serde_json::json;

const BOT: &str = r#"Agent::"bot""#;
const CI: &str = r#"CiJob::"deploy""#;
const READ: &str = r#"Action::"read_ticket""#;
const COMMENT: &str = r#"Action::"comment_ticket""#;
const DEPLOY: &str = r#"Action::"deploy""#;
const T1: &str = r#"Ticket::"T-1""#;
const T2: &str = r#"Ticket::"T-2""#;
const BILLING: &str = r#"Service::"billing-api""#;

/// Record `n` (made `n` ms after [`BASE_MS`]): `principal` did `action` on `resource`
/// and it was allowed, nothing fired.
fn allowed(n: u64, principal: &str, action: &str, resource: &str) -> DecisionRecord {
    let mut r = record(n);
    r.principal = Some(principal.to_owned());
    r.action = Some(action.to_owned());
    r.resource = Some(resource.to_owned());
    r.request = json!({"principal": principal, "action": action, "resource": resource});
    r
}

/// Allowed because the principal type's default-deny scope is in audit.
fn default_denied_in_audit(
    n: u64,
    principal: &str,
    action: &str,
    resource: &str,
) -> DecisionRecord {
    let mut r = allowed(n, principal, action, resource);
    let ty = principal.split("::").next().unwrap();
    r.audit = vec![AuditEntry {
        rule: RuleRef::default_deny(ty),
        would: Effect::Deny,
    }];
    r
}

/// Allowed because the principal type's default-deny scope is in warn.
fn default_denied_in_warn(n: u64, principal: &str, action: &str, resource: &str) -> DecisionRecord {
    let mut r = allowed(n, principal, action, resource);
    let ty = principal.split("::").next().unwrap();
    r.warnings = vec![RuleRef::default_deny(ty)];
    r
}

/// Denied by an enforced rule (or scope).
fn enforced_deny(
    n: u64,
    principal: &str,
    action: &str,
    resource: &str,
    rule: &str,
) -> DecisionRecord {
    let mut r = allowed(n, principal, action, resource);
    r.decision = Logged::Deny;
    r.effect = Some(Effect::Deny);
    r.enforced = vec![RuleRef::from(rule)];
    r.reason = Some(format!("rule:{rule}"));
    r
}

fn at_ms(n: u64) -> Timestamp {
    Timestamp::from_millisecond(BASE_MS + i64::try_from(n).unwrap()).unwrap()
}

fn observed(
    principal: &str,
    action: &str,
    resource: &str,
    seen: (u64, u64),
    allowed: u64,
    default_denied_in_audit: u64,
) -> Observed {
    Observed {
        principal: principal.to_owned(),
        action: action.to_owned(),
        resource: resource.to_owned(),
        resource_type: resource.split("::").next().unwrap().to_owned(),
        count: allowed + default_denied_in_audit,
        first_seen: at_ms(seen.0),
        last_seen: at_ms(seen.1),
        allowed,
        default_denied_in_audit,
    }
}

async fn write(store: &Store, records: Vec<DecisionRecord>) {
    // Batched: `shutdown` drains the queue, and many records need no fsync each.
    let writer = LogWriter::start(store, Durability::Batched, 1024).unwrap();
    for r in records {
        writer.append(r).await.unwrap();
    }
    writer.shutdown().await.unwrap();
}

/// Every kind of decision, numbered by time: what counts and what does not.
fn mixed_log() -> Vec<DecisionRecord> {
    let mut invalid = record(20);
    invalid.principal = None;
    invalid.action = None;
    invalid.resource = None;
    invalid.decision = Logged::Invalid;
    invalid.error = Some(Refusal {
        code: "invalid_request".to_owned(),
        message: "bad".to_owned(),
    });

    let mut credential_deny = allowed(21, BOT, READ, T1);
    credential_deny.decision = Logged::Deny;
    credential_deny.reason = Some("credential:expired".to_owned());

    let mut audited_forbid = allowed(5, BOT, READ, T2);
    audited_forbid.audit = vec![AuditEntry {
        rule: RuleRef::from("tickets.outage-only"),
        would: Effect::Deny,
    }];

    // A deny by an enforced rule while the scope was also in audit: enforced wins.
    let mut enforced_and_scope = default_denied_in_audit(23, CI, DEPLOY, BILLING);
    enforced_and_scope.decision = Logged::Deny;
    enforced_and_scope.enforced = vec![RuleRef::from("ci.prod-from-main")];

    vec![
        allowed(1, BOT, READ, T1),
        allowed(2, BOT, READ, T2),
        allowed(3, BOT, READ, T1),
        default_denied_in_audit(4, BOT, COMMENT, T1),
        audited_forbid,
        default_denied_in_warn(6, CI, DEPLOY, BILLING),
        allowed(7, CI, DEPLOY, BILLING),
        default_denied_in_audit(8, BOT, READ, T1),
        invalid,
        credential_deny,
        enforced_deny(22, BOT, COMMENT, T2, "agent.no-comments"),
        enforced_deny(24, BOT, READ, r#"Ticket::"T-9""#, "default-deny:Agent"),
        enforced_and_scope,
    ]
}

fn no_progress() -> impl FnMut(u64, u64) {
    |_, _| {}
}

#[tokio::test]
async fn observed_counts_allowed_and_default_denied_in_audit_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    write(&store, mixed_log()).await;

    let rows = store
        .observed(&BaselineQuery::default(), &mut no_progress())
        .unwrap();

    assert_eq!(
        rows,
        [
            observed(BOT, COMMENT, T1, (4, 4), 0, 1),
            observed(BOT, READ, T1, (1, 8), 2, 1),
            observed(BOT, READ, T2, (2, 5), 2, 0),
            observed(CI, DEPLOY, BILLING, (6, 7), 1, 1),
        ]
    );
}

#[tokio::test]
async fn observed_filters_by_principal_and_since() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    write(&store, mixed_log()).await;

    let bot = BaselineQuery {
        principal: Some(BOT.to_owned()),
        since: None,
    };
    let rows = store.observed(&bot, &mut no_progress()).unwrap();
    assert!(rows.iter().all(|o| o.principal == BOT));
    assert_eq!(rows.len(), 3);

    let since = BaselineQuery {
        principal: None,
        since: Some(at_ms(3)),
    };
    let rows = store.observed(&since, &mut no_progress()).unwrap();
    assert_eq!(
        rows,
        [
            observed(BOT, COMMENT, T1, (4, 4), 0, 1),
            observed(BOT, READ, T1, (3, 8), 1, 1),
            observed(BOT, READ, T2, (5, 5), 1, 0),
            observed(CI, DEPLOY, BILLING, (6, 7), 1, 1),
        ]
    );

    let both = BaselineQuery {
        principal: Some(CI.to_owned()),
        since: Some(at_ms(7)),
    };
    let rows = store.observed(&both, &mut no_progress()).unwrap();
    assert_eq!(rows, [observed(CI, DEPLOY, BILLING, (7, 7), 1, 0)]);
}

#[tokio::test]
async fn observed_reports_progress_until_every_decision_in_range_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    // Every fifth one denied: progress counts the decisions read, counted or not.
    let records = (0..25_000)
        .map(|n| {
            let resource = format!(r#"Ticket::"T-{}""#, n % 7);
            if n % 5 == 0 {
                enforced_deny(n, BOT, READ, &resource, "agent.no-tickets")
            } else {
                allowed(n, BOT, READ, &resource)
            }
        })
        .collect();
    write(&store, records).await;

    let mut calls = Vec::new();
    let rows = store
        .observed(
            &BaselineQuery {
                principal: None,
                since: Some(at_ms(1_000)),
            },
            &mut |done, total| calls.push((done, total)),
        )
        .unwrap();

    assert_eq!(rows.len(), 7);
    assert_eq!(rows.iter().map(|o| o.count).sum::<u64>(), 19_200);
    let total = 24_000;
    assert_eq!(calls.first(), Some(&(0, total)));
    assert_eq!(calls.last(), Some(&(total, total)));
    assert!(calls.len() >= 4, "some progress in between: {calls:?}");
    assert!(calls.iter().all(|&(_, t)| t == total));
    assert!(calls.windows(2).all(|w| w[0].0 <= w[1].0), "{calls:?}");
}

#[tokio::test]
async fn an_empty_log_observes_nothing_and_reports_zero_of_zero() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut calls = Vec::new();
    let rows = store
        .observed(&BaselineQuery::default(), &mut |done, total| {
            calls.push((done, total));
        })
        .unwrap();
    assert!(rows.is_empty());
    assert_eq!(calls.last(), Some(&(0, 0)));
}

fn pairs(list: &[(&str, &str)]) -> HashSet<(String, String)> {
    list.iter()
        .map(|(p, a)| ((*p).to_owned(), (*a).to_owned()))
        .collect()
}

#[tokio::test]
async fn freezing_stores_the_observed_pairs_and_replaces_the_previous_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    write(&store, mixed_log()).await;
    let now = at_ms(100_000);

    let (seq, count) = store.freeze_baseline("alice", None, now).unwrap();
    assert_eq!((seq, count), (1, 3));
    assert_eq!(
        store.baseline_pairs().unwrap(),
        Some(pairs(&[(BOT, READ), (BOT, COMMENT), (CI, DEPLOY)]))
    );

    // Later freezes replace the set; `since` leaves out what came before it.
    let (seq, count) = store.freeze_baseline("bob", Some(at_ms(5)), now).unwrap();
    assert_eq!((seq, count), (2, 2));
    assert_eq!(
        store.baseline_pairs().unwrap(),
        Some(pairs(&[(BOT, READ), (CI, DEPLOY)]))
    );

    // A since after every decision freezes an empty baseline, which still exists.
    let (seq, count) = store
        .freeze_baseline("bob", Some(at_ms(50_000)), now)
        .unwrap();
    assert_eq!((seq, count), (3, 0));
    assert_eq!(store.baseline_pairs().unwrap(), Some(HashSet::new()));
}

#[tokio::test]
async fn freezes_and_added_pairs_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        write(&store, mixed_log()).await;
        store
            .freeze_baseline("alice", None, at_ms(100_000))
            .unwrap();
        store.add_baseline_pair(BOT, DEPLOY).unwrap();
        store.add_baseline_pair(BOT, DEPLOY).unwrap();
        // Already in the baseline: nothing changes.
        store.add_baseline_pair(BOT, READ).unwrap();
    }

    let store = Store::open_read_only(dir.path()).unwrap();
    assert_eq!(
        store.baseline_pairs().unwrap(),
        Some(pairs(&[
            (BOT, READ),
            (BOT, COMMENT),
            (CI, DEPLOY),
            (BOT, DEPLOY)
        ]))
    );
    assert!(matches!(
        store.freeze_baseline("alice", None, at_ms(0)),
        Err(StoreError::ReadOnly { .. })
    ));
    assert!(matches!(
        store.add_baseline_pair(BOT, COMMENT),
        Err(StoreError::ReadOnly { .. })
    ));
}

#[tokio::test]
async fn a_new_freeze_forgets_pairs_added_after_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    write(&store, mixed_log()).await;
    store
        .freeze_baseline("alice", None, at_ms(100_000))
        .unwrap();
    store.add_baseline_pair(BOT, DEPLOY).unwrap();

    store
        .freeze_baseline("alice", None, at_ms(200_000))
        .unwrap();

    assert_eq!(
        store.baseline_pairs().unwrap(),
        Some(pairs(&[(BOT, READ), (BOT, COMMENT), (CI, DEPLOY)]))
    );
}

#[tokio::test]
async fn without_a_freeze_there_is_no_baseline_and_nothing_to_add_to() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    write(&store, mixed_log()).await;

    assert_eq!(store.baseline_pairs().unwrap(), None);
    store.add_baseline_pair(BOT, DEPLOY).unwrap();
    assert_eq!(store.baseline_pairs().unwrap(), None);

    store
        .freeze_baseline("alice", None, at_ms(100_000))
        .unwrap();
    let frozen = store.baseline_pairs().unwrap().unwrap();
    assert!(!frozen.contains(&(BOT.to_owned(), DEPLOY.to_owned())));
}

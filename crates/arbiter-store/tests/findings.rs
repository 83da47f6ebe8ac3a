//! Findings, reviews, per-rule-per-day counts and promotions: what the log writer keeps
//! current with every batch, and what reviewers and promotions add.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

mod common;

use std::sync::Arc;

use arbiter_core::response::{AuditEntry, EvalError};
use arbiter_core::rule::{Effect, OnError, RuleRef};
use arbiter_store::{
    DecisionRecord, Durability, Finding, FindingFacts, FindingQuery, LogWriter, Logged, Promotion,
    Review, ReviewVerdict, RuleDay, Store, StoreError,
};
use common::{BASE_MS, record};
use jiff::Timestamp;
use serde_json::json;
use sha2::{Digest, Sha256};

const BOT: &str = r#"Agent::"bot""#;
const READ: &str = r#"Action::"read_ticket""#;
const T1: &str = r#"Ticket::"T-1""#;

/// Microseconds in a day.
const DAY_US: i64 = 86_400_000_000;
/// Milliseconds in a day, to make record `n + DAY_MS` a day after record `n`.
const DAY_MS: u64 = 86_400_000;

/// Record `n` on `T-1`, with `rule` fired in audit mode, would `deny`.
fn audited(n: u64, rule: &str) -> DecisionRecord {
    let mut r = record(n);
    r.resource = Some(T1.to_owned());
    r.audit = vec![audit(rule, Effect::Deny)];
    r
}

/// `rule` fired in audit, and would have done `would`.
fn audit(rule: &str, would: Effect) -> AuditEntry {
    AuditEntry {
        rule: RuleRef::from(rule),
        would,
    }
}

fn denied(mut r: DecisionRecord) -> DecisionRecord {
    r.decision = Logged::Deny;
    r
}

/// When record `n` was made, to the microsecond.
fn time_of(n: u64) -> Timestamp {
    record(n).time
}

/// The UTC day of record `n`.
fn day_of(n: u64) -> i64 {
    time_of(n).as_microsecond().div_euclid(DAY_US)
}

/// The id DESIGN gives the finding: `f` and 16 hex digits of SHA-256 over the group.
fn id_of(rule: &str, principal: &str, action: &str, resource: &str) -> String {
    let digest = Sha256::digest(format!("{rule}\0{principal}\0{action}\0{resource}"));
    format!("f{}", &hex::encode(digest)[..16])
}

/// Logs `records` through a writer of its own, and waits until they are committed.
async fn log(store: &Store, durability: Durability, records: Vec<DecisionRecord>) {
    let writer = LogWriter::start(store, durability, 1024).unwrap();
    for r in records {
        writer.append(r).await.unwrap();
    }
    writer.shutdown().await.unwrap();
}

fn all(store: &Store) -> Vec<Finding> {
    store.findings(&FindingQuery::default()).unwrap()
}

fn only(store: &Store) -> Finding {
    let mut findings = all(store);
    assert_eq!(findings.len(), 1, "{findings:#?}");
    findings.remove(0)
}

fn review(verdict: ReviewVerdict, note: &str) -> Review {
    Review {
        verdict,
        by: "alice".to_owned(),
        at: "2026-11-27T09:30:00Z".parse().unwrap(),
        note: note.to_owned(),
    }
}

/// Asserts that `result` is [`StoreError::Invalid`] with `message`.
#[track_caller]
fn assert_invalid<T: std::fmt::Debug>(result: Result<T, StoreError>, message: &str) {
    match result {
        Err(StoreError::Invalid { message: m }) => assert_eq!(m, message),
        other => panic!("expected Invalid({message:?}), got {other:?}"),
    }
}

#[tokio::test]
async fn findings_group_firings_across_batches_and_writers() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut other_resource = audited(3, "r.export");
    other_resource.resource = Some(r#"Ticket::"T-2""#.to_owned());

    log(
        &store,
        Durability::Batched,
        vec![
            audited(1, "r.export"),
            audited(2, "r.export"),
            other_resource,
        ],
    )
    .await;
    log(
        &store,
        Durability::Sync,
        vec![audited(4, "r.export"), audited(5, "r.export")],
    )
    .await;

    let findings = all(&store);
    let counts: Vec<_> = findings
        .iter()
        .map(|f| (f.id.as_str(), f.resource.as_str(), f.count))
        .collect();
    let t1 = id_of("r.export", BOT, READ, T1);
    let t2 = id_of("r.export", BOT, READ, r#"Ticket::"T-2""#);
    assert_eq!(
        counts,
        [(t1.as_str(), T1, 4), (t2.as_str(), r#"Ticket::"T-2""#, 1)],
        "the most recently seen first"
    );
    assert_eq!(store.finding(&t1).unwrap().unwrap(), findings[0]);
    assert_eq!(store.finding("f0000000000000000").unwrap(), None);
}

#[tokio::test]
async fn a_decision_logged_twice_counts_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut r = audited(1, "r.export");
    r.evidence.in_scope = Some(Arc::from(vec!["r.export".to_owned()]));
    log(&store, Durability::Sync, vec![r.clone()]).await;
    log(&store, Durability::Sync, vec![r]).await;

    assert_eq!(only(&store).count, 1);
    let days = store.rule_days(None).unwrap();
    assert_eq!((days.len(), days[0].evaluations, days[0].fired), (1, 1, 1));
}

#[tokio::test]
async fn only_firings_in_allowed_decisions_are_decisive() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let records = vec![
        audited(1, "r.export"),
        denied(audited(2, "r.export")),
        audited(3, "r.export"),
        denied(audited(4, "r.export")),
        denied(audited(5, "r.export")),
    ];
    log(&store, Durability::Batched, records).await;

    let finding = only(&store);
    assert_eq!((finding.count, finding.decisive), (5, 2));
}

#[tokio::test]
async fn first_and_last_seen_hold_when_records_arrive_out_of_time_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut latest = audited(90, "r.export");
    latest.audit = vec![audit("r.export", Effect::Throttle)];

    log(
        &store,
        Durability::Batched,
        vec![audited(50, "r.export"), latest, audited(30, "r.export")],
    )
    .await;
    log(&store, Durability::Sync, vec![audited(10, "r.export")]).await;
    log(&store, Durability::Sync, vec![audited(70, "r.export")]).await;

    let finding = only(&store);
    assert_eq!(finding.count, 5);
    assert_eq!(finding.first_seen, time_of(10));
    assert_eq!(finding.last_seen, time_of(90));
    assert_eq!(
        finding.would, "throttle",
        "what the latest firing in time would do, not the last to arrive"
    );
}

#[tokio::test]
async fn warn_firings_carry_what_they_would_do() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut r = record(1);
    r.warnings = vec![RuleRef::from("r.slow-down"), RuleRef::from("r.older")];
    r.evidence.warned = vec![(RuleRef::from("r.slow-down"), Effect::Throttle)];

    log(&store, Durability::Sync, vec![r]).await;

    let seen: Vec<_> = all(&store)
        .into_iter()
        .map(|f| (f.rule, f.mode, f.would))
        .collect();
    let expected = [
        ("r.older", "warn", "deny"),
        ("r.slow-down", "warn", "throttle"),
    ]
    .map(|(rule, mode, would)| (rule.to_owned(), mode.to_owned(), would.to_owned()));
    let mut seen = seen;
    seen.sort();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn a_finding_that_moves_from_audit_to_warn_shows_its_latest_mode() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut warned = record(2);
    warned.resource = Some(T1.to_owned());
    warned.warnings = vec![RuleRef::from("r.export")];
    warned.evidence.warned = vec![(RuleRef::from("r.export"), Effect::Revoke)];

    log(&store, Durability::Sync, vec![audited(1, "r.export")]).await;
    log(&store, Durability::Sync, vec![warned]).await;

    let finding = only(&store);
    assert_eq!(
        (finding.mode.as_str(), finding.would.as_str(), finding.count),
        ("warn", "revoke", 2)
    );
}

#[tokio::test]
async fn default_deny_scope_firings_are_findings() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    log(
        &store,
        Durability::Sync,
        vec![audited(1, "default-deny:Agent")],
    )
    .await;

    let finding = only(&store);
    assert_eq!(finding.id, id_of("default-deny:Agent", BOT, READ, T1));
    assert_eq!(
        (
            finding.rule.as_str(),
            finding.mode.as_str(),
            finding.would.as_str()
        ),
        ("default-deny:Agent", "audit", "deny")
    );
}

#[tokio::test]
async fn invalid_requests_add_no_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut r = audited(1, "r.export");
    r.decision = Logged::Invalid;
    r.warnings = vec![RuleRef::from("r.warn")];
    r.evidence.in_scope = Some(Arc::from(vec!["r.export".to_owned()]));
    r.evidence.scope = Some(RuleRef::default_deny("Agent"));

    log(&store, Durability::Sync, vec![r]).await;

    assert!(all(&store).is_empty());
    assert!(store.rule_days(None).unwrap().is_empty());
}

#[tokio::test]
async fn a_review_keeps_its_verdict_when_the_finding_fires_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    log(&store, Durability::Sync, vec![audited(1, "r.export")]).await;
    let id = only(&store).id;
    assert_eq!(only(&store).status, "open");

    let expected = review(
        ReviewVerdict::Expected,
        "bulk export is what this rule is for",
    );
    let reviewed = store.review(&id, &expected).unwrap();
    assert_eq!(reviewed.status, "expected");
    assert_eq!(reviewed.review.as_ref(), Some(&expected));
    assert_eq!(reviewed, only(&store));

    log(
        &store,
        Durability::Batched,
        vec![audited(2, "r.export"), audited(3, "r.export")],
    )
    .await;

    let fired_again = only(&store);
    assert_eq!(fired_again.count, 3);
    assert_eq!(fired_again.last_seen, time_of(3));
    assert_eq!(fired_again.status, "expected");
    assert_eq!(fired_again.review, Some(expected));
}

#[tokio::test]
async fn a_second_review_supersedes_the_first_and_both_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    log(&store, Durability::Sync, vec![audited(1, "r.export")]).await;
    let id = only(&store).id;

    let first = review(ReviewVerdict::Expected, "looks like exfiltration");
    let mut second = review(ReviewVerdict::Legitimate, "the nightly backup job");
    second.by = "bob".to_owned();
    second.at = "2026-11-28T08:00:00.123456789Z".parse().unwrap();
    store.review(&id, &first).unwrap();
    let now = store.review(&id, &second).unwrap();

    assert_eq!(now.status, "legitimate");
    assert_eq!(now.review, Some(second.clone()));
    assert_eq!(store.reviews(&id).unwrap(), [first, second]);
    assert!(store.reviews("f0000000000000000").unwrap().is_empty());
}

#[tokio::test]
async fn a_review_of_an_unknown_finding_or_without_a_note_or_reviewer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    log(&store, Durability::Sync, vec![audited(1, "r.export")]).await;
    let id = only(&store).id;

    assert_invalid(
        store.review("f0000000000000000", &review(ReviewVerdict::Expected, "why")),
        r#"cannot review finding "f0000000000000000": there is no such finding"#,
    );
    assert_invalid(
        store.review(&id, &review(ReviewVerdict::Expected, "  ")),
        &format!("cannot review finding {id}: the note is empty"),
    );
    let mut nobody = review(ReviewVerdict::Expected, "why");
    nobody.by = String::new();
    assert_invalid(
        store.review(&id, &nobody),
        &format!("cannot review finding {id}: the by is empty"),
    );

    assert!(store.reviews(&id).unwrap().is_empty());
    assert_eq!(only(&store).status, "open");
}

#[test]
fn a_verdict_is_one_of_two_words() {
    assert_eq!(
        "expected".parse::<ReviewVerdict>().unwrap(),
        ReviewVerdict::Expected
    );
    assert_eq!(
        "legitimate".parse::<ReviewVerdict>().unwrap(),
        ReviewVerdict::Legitimate
    );
    assert_eq!(ReviewVerdict::Legitimate.as_str(), "legitimate");
    assert_eq!(
        "ok".parse::<ReviewVerdict>().unwrap_err().to_string(),
        "\"ok\" is not a verdict: use `expected` (the rule is right to block this) or \
         `legitimate` (needed work the rule would break)"
    );
}

#[tokio::test]
async fn findings_filter_by_rule_status_and_principal() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut ci = audited(4, "r.export");
    ci.principal = Some(r#"Agent::"ci""#.to_owned());
    log(
        &store,
        Durability::Batched,
        vec![
            audited(1, "r.export"),
            audited(2, "r.delete"),
            audited(3, "r.wipe"),
            ci,
        ],
    )
    .await;
    let export: &str = &id_of("r.export", BOT, READ, T1);
    let delete: &str = &id_of("r.delete", BOT, READ, T1);
    let wipe: &str = &id_of("r.wipe", BOT, READ, T1);
    let ci_export: &str = &id_of("r.export", r#"Agent::"ci""#, READ, T1);
    store
        .review(delete, &review(ReviewVerdict::Expected, "right"))
        .unwrap();
    store
        .review(wipe, &review(ReviewVerdict::Legitimate, "needed"))
        .unwrap();

    let ids = |q: FindingQuery| -> Vec<String> {
        store
            .findings(&q)
            .unwrap()
            .into_iter()
            .map(|f| f.id)
            .collect()
    };
    let text = |s: &str| Some(s.to_owned());
    assert_eq!(
        ids(FindingQuery::default()),
        [ci_export, wipe, delete, export]
    );
    assert_eq!(
        ids(FindingQuery {
            rule: text("r.export"),
            ..Default::default()
        }),
        [ci_export, export]
    );
    assert_eq!(
        ids(FindingQuery {
            status: text("open"),
            ..Default::default()
        }),
        [ci_export, export]
    );
    assert_eq!(
        ids(FindingQuery {
            status: text("expected"),
            ..Default::default()
        }),
        [delete]
    );
    assert_eq!(
        ids(FindingQuery {
            status: text("legitimate"),
            ..Default::default()
        }),
        [wipe]
    );
    assert_eq!(
        ids(FindingQuery {
            principal: text(BOT),
            status: text("open"),
            ..Default::default()
        }),
        [export]
    );
    assert_eq!(
        ids(FindingQuery {
            limit: Some(2),
            ..Default::default()
        }),
        [ci_export, wipe]
    );
    assert_invalid(
        store.findings(&FindingQuery {
            status: text("closed"),
            ..Default::default()
        }),
        r#"finding status "closed" is not one of open, expected, legitimate"#,
    );
}

#[tokio::test]
async fn a_finding_in_json_has_designs_shape() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    log(&store, Durability::Sync, vec![audited(1, "r.export")]).await;
    let id = id_of("r.export", BOT, READ, T1);

    let open = serde_json::to_string(&only(&store)).unwrap();
    assert_eq!(
        open,
        format!(
            r#"{{"id":"{id}","rule":"r.export","mode":"audit","would":"deny","principal":"Agent::\"bot\"","action":"Action::\"read_ticket\"","resource":"Ticket::\"T-1\"","count":1,"decisive":1,"first_seen":"2026-11-26T10:00:00.001Z","last_seen":"2026-11-26T10:00:00.001Z","status":"open","review":null}}"#
        )
    );

    let reviewed = store
        .review(&id, &review(ReviewVerdict::Legitimate, "nightly backup"))
        .unwrap();
    let reviewed = serde_json::to_value(&reviewed).unwrap();
    assert_eq!(reviewed["status"], "legitimate");
    assert_eq!(
        reviewed["review"],
        json!({"verdict": "legitimate", "by": "alice", "at": "2026-11-27T09:30:00Z", "note": "nightly backup"})
    );
    let back: Finding = serde_json::from_value(reviewed).unwrap();
    assert_eq!(back, only(&store));
}

#[tokio::test]
async fn rule_days_count_evaluations_firings_decisive_firings_and_errors_per_day_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let slice: Arc<[String]> = Arc::from(vec![
        "r.audit".to_owned(),
        "r.enforce".to_owned(),
        "r.error".to_owned(),
        "r.warn".to_owned(),
    ]);
    let in_scope = |mut r: DecisionRecord| {
        r.evidence.in_scope = Some(Arc::clone(&slice));
        r.evidence.scope = Some(RuleRef::default_deny("Agent"));
        r
    };
    // Day one, pack 1: r.audit fires in 2 of 3, r.enforce in 1, r.error errors in 1,
    // r.warn in 1; the scope fires in 1. Decisive firings are those of allowed decisions:
    // r.audit's in `a` (not in the denied `b`), r.warn's and the scope's in `c`.
    let mut a = in_scope(audited(20, "r.audit"));
    a.errors = vec![EvalError {
        rule: "r.error".to_owned(),
        message: "boom".to_owned(),
        handled_as: OnError::Skip,
    }];
    let mut b = denied(in_scope(audited(10, "r.audit")));
    b.enforced = vec![RuleRef::from("r.enforce")];
    let mut c = in_scope(record(30));
    c.warnings = vec![RuleRef::from("r.warn")];
    c.audit = vec![audit("default-deny:Agent", Effect::Deny)];
    // Day one, pack 2, and day two, pack 1; a decision without evidence counts nothing.
    let mut d = in_scope(record(40));
    d.policy_version = "sha256:pack-2".to_owned();
    let e = in_scope(record(DAY_MS + 5));
    let untracked = audited(50, "r.audit");

    log(&store, Durability::Batched, vec![a, b, untracked]).await;
    log(&store, Durability::Sync, vec![c, d, e]).await;

    let day = day_of(0);
    let row =
        |rule: &str, day: i64, version: &str, counts: [u64; 4], first: u64, last: u64| RuleDay {
            rule: rule.to_owned(),
            day,
            policy_version: format!("sha256:{version}"),
            evaluations: counts[0],
            fired: counts[1],
            errors: counts[2],
            decisive: counts[3],
            first: time_of(first),
            last: time_of(last),
        };
    let next = DAY_MS + 5;
    let expected = vec![
        row("default-deny:Agent", day, "pack-1", [3, 1, 0, 1], 10, 30),
        row("default-deny:Agent", day, "pack-2", [1, 0, 0, 0], 40, 40),
        row(
            "default-deny:Agent",
            day + 1,
            "pack-1",
            [1, 0, 0, 0],
            next,
            next,
        ),
        row("r.audit", day, "pack-1", [3, 2, 0, 1], 10, 30),
        row("r.audit", day, "pack-2", [1, 0, 0, 0], 40, 40),
        row("r.audit", day + 1, "pack-1", [1, 0, 0, 0], next, next),
        row("r.enforce", day, "pack-1", [3, 1, 0, 0], 10, 30),
        row("r.enforce", day, "pack-2", [1, 0, 0, 0], 40, 40),
        row("r.enforce", day + 1, "pack-1", [1, 0, 0, 0], next, next),
        row("r.error", day, "pack-1", [3, 0, 1, 0], 10, 30),
        row("r.error", day, "pack-2", [1, 0, 0, 0], 40, 40),
        row("r.error", day + 1, "pack-1", [1, 0, 0, 0], next, next),
        row("r.warn", day, "pack-1", [3, 1, 0, 1], 10, 30),
        row("r.warn", day, "pack-2", [1, 0, 0, 0], 40, 40),
        row("r.warn", day + 1, "pack-1", [1, 0, 0, 0], next, next),
    ];
    assert_eq!(store.rule_days(None).unwrap(), expected);
    let warn_only: Vec<_> = expected
        .iter()
        .filter(|d| d.rule == "r.warn")
        .cloned()
        .collect();
    assert_eq!(store.rule_days(Some("r.warn")).unwrap(), warn_only);
    assert!(store.rule_days(Some("r.unknown")).unwrap().is_empty());
}

#[test]
fn a_day_is_a_utc_day() {
    // BASE_MS is 10:00 UTC: 14 hours later is the next day, 10 hours earlier the same.
    let base = BASE_MS * 1000;
    let day = base.div_euclid(DAY_US);
    assert_eq!((base + 14 * 3_600_000_000).div_euclid(DAY_US), day + 1);
    assert_eq!((base - 10 * 3_600_000_000).div_euclid(DAY_US), day);
}

fn promotion(rule: &str, forced: bool, reason: Option<&str>) -> Promotion {
    Promotion {
        seq: 0,
        rule: rule.to_owned(),
        from_mode: "audit".to_owned(),
        to_mode: "enforce".to_owned(),
        forced,
        reason: reason.map(str::to_owned),
        by: "alice".to_owned(),
        at: "2026-12-01T12:00:00Z".parse().unwrap(),
        verdict: if forced { "needs_review" } else { "ready" }.to_owned(),
    }
}

#[test]
fn promotions_are_recorded_and_listed_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();

    let first = store
        .record_promotion(&promotion("r.export", false, None))
        .unwrap();
    let forced = store
        .record_promotion(&promotion("r.wipe", true, Some("incident 42")))
        .unwrap();
    let mut demote = promotion("r.export", false, Some("too noisy"));
    demote.from_mode = "enforce".to_owned();
    demote.to_mode = "warn".to_owned();
    let demoted = store.record_promotion(&demote).unwrap();

    assert_eq!((first.seq, forced.seq, demoted.seq), (1, 2, 3));
    assert_eq!(
        first,
        Promotion {
            seq: 1,
            ..promotion("r.export", false, None)
        }
    );
    assert_eq!(demoted, Promotion { seq: 3, ..demote });
    assert_eq!(
        store.promotions(None).unwrap(),
        [first.clone(), forced.clone(), demoted.clone()]
    );
    assert_eq!(
        store.promotions(Some("r.export")).unwrap(),
        [first, demoted]
    );
    assert!(store.promotions(Some("r.none")).unwrap().is_empty());
}

#[test]
fn a_forced_promotion_without_a_reason_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let refused = r#"cannot record the promotion of "r.wipe": a forced promotion needs a reason"#;

    assert_invalid(
        store.record_promotion(&promotion("r.wipe", true, None)),
        refused,
    );
    assert_invalid(
        store.record_promotion(&promotion("r.wipe", true, Some(" "))),
        refused,
    );
    let mut bad_mode = promotion("r.wipe", false, None);
    bad_mode.to_mode = "block".to_owned();
    assert_invalid(
        store.record_promotion(&bad_mode),
        r#"cannot record the promotion of "r.wipe": to_mode "block" is not one of audit, warn, enforce"#,
    );
    assert!(store.promotions(None).unwrap().is_empty());
}

#[tokio::test]
async fn a_reopened_store_keeps_findings_reviews_rule_days_and_promotions() {
    let dir = tempfile::tempdir().unwrap();
    let (finding, reviews, days, promotions) = {
        let store = Store::open(dir.path()).unwrap();
        let mut r = audited(1, "r.export");
        r.evidence.in_scope = Some(Arc::from(vec!["r.export".to_owned()]));
        log(&store, Durability::Sync, vec![r]).await;
        let id = only(&store).id;
        store
            .review(&id, &review(ReviewVerdict::Expected, "right"))
            .unwrap();
        store
            .record_promotion(&promotion("r.export", false, None))
            .unwrap();
        (
            only(&store),
            store.reviews(&id).unwrap(),
            store.rule_days(None).unwrap(),
            store.promotions(None).unwrap(),
        )
    };
    assert_eq!(finding.status, "expected");
    assert_eq!(days.len(), 1);

    for store in [
        Store::open(dir.path()).unwrap(),
        Store::open_read_only(dir.path()).unwrap(),
    ] {
        assert_eq!(only(&store), finding);
        assert_eq!(store.reviews(&finding.id).unwrap(), reviews);
        assert_eq!(store.rule_days(None).unwrap(), days);
        assert_eq!(store.promotions(None).unwrap(), promotions);
    }
}

#[tokio::test]
async fn a_read_only_store_refuses_reviews_and_promotions() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    log(&store, Durability::Sync, vec![audited(1, "r.export")]).await;
    let id = only(&store).id;
    let read_only = Store::open_read_only(dir.path()).unwrap();

    let err = read_only
        .review(&id, &review(ReviewVerdict::Expected, "right"))
        .unwrap_err();
    assert!(matches!(err, StoreError::ReadOnly { .. }), "{err:?}");
    let err = read_only
        .record_promotion(&promotion("r.export", false, None))
        .unwrap_err();
    assert!(matches!(err, StoreError::ReadOnly { .. }), "{err:?}");
}

#[tokio::test]
async fn finding_facts_are_the_findings_readiness_reads_with_their_latest_status() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut other = audited(2, "r.other");
    other.resource = Some(r#"Ticket::"T-2""#.to_owned());
    log(
        &store,
        Durability::Sync,
        vec![audited(1, "r.audit"), other, audited(3, "r.audit")],
    )
    .await;
    let id = id_of("r.audit", BOT, READ, T1);
    store
        .review(&id, &review(ReviewVerdict::Expected, "fine"))
        .unwrap();
    store
        .review(&id, &review(ReviewVerdict::Legitimate, "on second thought"))
        .unwrap();
    let mut facts = store.finding_facts(None).unwrap();
    facts.sort_by(|a, b| a.rule.cmp(&b.rule));
    let mut expected: Vec<FindingFacts> = all(&store).iter().map(FindingFacts::from).collect();
    expected.sort_by(|a, b| a.rule.cmp(&b.rule));
    assert_eq!(facts, expected);
    assert_eq!(facts[0].status, "legitimate");
    assert_eq!(facts[1].status, "open");
    assert_eq!(
        store.finding_facts(Some("r.other")).unwrap(),
        vec![expected[1].clone()]
    );
    assert!(store.finding_facts(Some("r.none")).unwrap().is_empty());
}

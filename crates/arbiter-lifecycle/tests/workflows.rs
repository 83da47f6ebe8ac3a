//! The promotion and baseline workflows driven as the CLI drives them, without the CLI: a
//! copy of the example pack, a real SQLite store, decisions made by the real engine on an
//! injected clock and written by the real log writer; then plans, changes, records and
//! suggestions, asserted on the pack's files and the store's records.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use arbiter_core::clock::{Clock, ManualClock};
use arbiter_core::rule::Mode;
use arbiter_core::{DecisionRequest, Engine, Pack, TimeSource};
use arbiter_lifecycle::baseline::{self, Frozen};
use arbiter_lifecycle::promotion::{self, Gate, ModeChange, PromotionError, Refusal, Restored};
use arbiter_lifecycle::readiness::{self, Verdict};
use arbiter_store::{
    BaselineQuery, DecisionEvidence, DecisionRecord, Durability, FindingQuery, LogWriter,
    Promotion, Review, ReviewVerdict, Store,
};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/agents-and-pipelines"
);

/// The audit rule under study: it fires on tokens asked for longer than an hour.
const LONG_TTL: &str = "tokens.long-ttl";

/// The example pack's own files (configuration, schema, entities, policies) in `to`; its
/// requests and policy tests stay behind.
fn copy_example(to: &Path) {
    for dir in ["", "policies"] {
        fs::create_dir_all(to.join(dir)).unwrap();
        for entry in fs::read_dir(Path::new(EXAMPLE).join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                fs::copy(&path, to.join(dir).join(path.file_name().unwrap())).unwrap();
            }
        }
    }
}

/// A service asks for a token living `ttl_s` seconds (over 3600, `tokens.long-ttl` fires).
fn token(ttl_s: u64) -> Value {
    json!({"principal": "Service::\"billing-api\"", "action": "Action::\"create_token\"",
           "resource": "Service::\"ledger-api\"",
           "context": {"ttl_s": ttl_s, "scopes": ["ledger:write"]}})
}

/// The support agent reads a ticket: allowed, nothing fires.
fn read_ticket(ticket: &str) -> Value {
    json!({"principal": "Agent::\"support-bot\"", "action": "Action::\"read_ticket\"",
           "resource": format!("Ticket::\"{ticket}\"")})
}

/// A copy of the example pack, a store a server would have written, and the clock.
struct Platform {
    dir: tempfile::TempDir,
    store: Store,
    writer: Option<LogWriter>,
    engine: Engine,
    clock: Arc<ManualClock>,
}

impl Platform {
    /// The pack as a server loaded it at 09:00 UTC on day 0.
    fn new() -> Platform {
        let dir = tempfile::tempdir().unwrap();
        copy_example(&dir.path().join("pack"));
        let store = Store::open(&dir.path().join("data")).unwrap();
        let clock = Arc::new(ManualClock::new(Platform::day(0)));
        let pack = Arc::new(Pack::load(dir.path().join("pack")).unwrap());
        store
            .record_pack_version(&arbiter_store::PackVersion::of(&pack, clock.now()))
            .unwrap();
        let engine = Engine::new(pack)
            .with_clock(clock.clone())
            .with_time_source(TimeSource::ClockOnly);
        let writer = Some(LogWriter::start(&store, Durability::Sync, 64).unwrap());
        Platform {
            dir,
            store,
            writer,
            engine,
            clock,
        }
    }

    fn day(n: i64) -> Timestamp {
        "2026-11-01T09:00:00Z"
            .parse::<Timestamp>()
            .unwrap()
            .checked_add(SignedDuration::from_hours(24 * n))
            .unwrap()
    }

    fn pack_dir(&self) -> PathBuf {
        self.dir.path().join("pack")
    }

    /// The pack as it is on disk now.
    fn pack(&self) -> Pack {
        Pack::load(self.pack_dir()).unwrap_or_else(|p| panic!("{p}"))
    }

    /// Every file of the pack, by path, to compare byte for byte.
    fn files(&self) -> Vec<(PathBuf, Vec<u8>)> {
        let policies = self.pack_dir().join("policies");
        let mut files: Vec<_> = fs::read_dir(&policies)
            .unwrap()
            .map(|e| e.unwrap().path())
            .chain([self.pack_dir().join("arbiter.toml")])
            .map(|path| (path.clone(), fs::read(&path).unwrap()))
            .collect();
        files.sort();
        files
    }

    /// One decision on day `n`, logged as the server logs it.
    async fn decide(&self, n: i64, request: Value) {
        self.clock.set(Platform::day(n));
        let parsed = DecisionRequest::from_value(&request).unwrap();
        let d = self.engine.decide(&parsed).unwrap();
        let mut record: DecisionRecord = serde_json::from_value(json!({
            "decision_id": d.decision_id, "time": self.clock.now(),
            "policy_version": d.policy_version,
            "principal": request["principal"], "action": request["action"],
            "resource": request["resource"],
            "decision": serde_json::to_value(d.decision).unwrap(),
            "enforced": d.enforced,
            "warnings": d.warnings.iter().map(|w| w.rule.clone()).collect::<Vec<_>>(),
            "audit": d.audit, "errors": [], "latency_us": 1, "request": request,
        }))
        .unwrap();
        record.evidence = DecisionEvidence {
            in_scope: d.in_scope.clone(),
            scope: d.scope.clone(),
            warned: vec![],
        };
        self.writer.as_ref().unwrap().append(record).await.unwrap();
    }

    /// Every record is committed and the writer is gone: what the store holds is final.
    async fn drain(&mut self) {
        if let Some(writer) = self.writer.take() {
            writer.shutdown().await.unwrap();
        }
    }

    fn review_findings_of(&self, rule: &str, verdict: ReviewVerdict) {
        let query = FindingQuery {
            rule: Some(rule.to_owned()),
            ..FindingQuery::default()
        };
        for finding in self.store.findings(&query).unwrap() {
            let review = Review {
                verdict,
                by: "alice".to_owned(),
                at: self.clock.now(),
                note: "looked at it".to_owned(),
            };
            self.store.review(&finding.id, &review).unwrap();
        }
    }

    fn change(&self, name: &str, to: Mode) -> ModeChange {
        ModeChange {
            name: name.to_owned(),
            to,
            force: false,
            reason: None,
            by: "carol".to_owned(),
        }
    }
}

/// Two long-lived tokens on day 0: `tokens.long-ttl` has an open finding.
async fn unreviewed() -> Platform {
    let mut platform = Platform::new();
    platform.decide(0, token(86_400)).await;
    platform.decide(0, token(86_400)).await;
    platform.drain().await;
    platform.clock.set(Platform::day(20));
    platform
}

#[tokio::test]
async fn a_promotion_the_evidence_does_not_support_is_refused_and_changes_nothing() {
    let platform = unreviewed().await;
    let before = platform.files();
    let pack = platform.pack();
    let change = platform.change(LONG_TTL, Mode::Enforce);

    let plan =
        promotion::plan(&pack, Some(&platform.store), &change, platform.clock.now()).unwrap();
    assert!(plan.promoting());
    let Some(Refusal::NotReady(readiness)) = plan.refusal() else {
        panic!("{:#?}", plan.gate);
    };
    assert_eq!(readiness.verdict, Verdict::NeedsReview);
    assert!(
        readiness.reasons[0].starts_with("1 finding(s) nobody has reviewed"),
        "{readiness:#?}"
    );
    // The diff is worked out all the same: a dry run shows it.
    assert!(plan.edit.diff().contains("+@mode(\"enforce\")"));

    let refused = promotion::apply(&plan, &platform.store, platform.clock.now()).unwrap_err();
    assert!(
        matches!(refused, PromotionError::Refused { .. }),
        "{refused:?}"
    );
    assert_eq!(
        refused.to_string(),
        "`tokens.long-ttl` was not changed: it is needs_review"
    );
    assert_eq!(platform.files(), before, "byte for byte");
    assert!(platform.store.promotions(None).unwrap().is_empty());
}

#[tokio::test]
async fn a_forced_promotion_needs_a_reason_then_writes_the_mode_and_records_who_and_why() {
    let platform = unreviewed().await;
    let before = platform.files();
    let pack = platform.pack();
    let now = platform.clock.now();
    let mut change = platform.change(LONG_TTL, Mode::Enforce);
    change.force = true;

    for reason in [None, Some("  ".to_owned())] {
        change.reason = reason;
        let plan = promotion::plan(&pack, Some(&platform.store), &change, now).unwrap();
        assert!(
            matches!(plan.gate, Gate::Forced(Some(_))),
            "{:#?}",
            plan.gate
        );
        let refused = promotion::apply(&plan, &platform.store, now).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "`tokens.long-ttl` is not ready: forcing its promotion needs a reason"
        );
        assert_eq!(platform.files(), before, "nothing written without a reason");
    }

    change.reason = Some("the ledger team moved to 1h tokens".to_owned());
    let plan = promotion::plan(&pack, Some(&platform.store), &change, now).unwrap();
    let applied = promotion::apply(&plan, &platform.store, now).unwrap();
    assert_eq!(applied.file, Path::new("policies/tokens.cedar"));
    let recorded = &applied.promotion;
    let expected = Promotion {
        seq: recorded.seq,
        rule: LONG_TTL.to_owned(),
        from_mode: "audit".to_owned(),
        to_mode: "enforce".to_owned(),
        forced: true,
        reason: Some("the ledger team moved to 1h tokens".to_owned()),
        by: "carol".to_owned(),
        // The caller's clock, not the wall clock.
        at: now,
        verdict: "needs_review".to_owned(),
    };
    assert_eq!(recorded, &expected);
    assert_eq!(
        platform.store.promotions(Some(LONG_TTL)).unwrap(),
        std::slice::from_ref(recorded)
    );

    // The file says enforce, and the pack loads with the rule enforced.
    let text = fs::read_to_string(platform.pack_dir().join(&applied.file)).unwrap();
    assert_eq!(text.matches("@mode(\"enforce\")").count(), 2, "{text}");
    assert_eq!(
        platform.pack().rule(LONG_TTL).unwrap().mode,
        Some(Mode::Enforce)
    );
    // An enforced rule has no readiness, though the pack still has it.
    let pack = platform.pack();
    assert!(readiness::in_pack(&pack, LONG_TTL));
    assert!(
        readiness::assess(&pack, &platform.store, Some(LONG_TTL), now)
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_demotion_needs_no_evidence_and_is_recorded_unforced() {
    let platform = unreviewed().await;
    let before = platform.files();
    let pack = platform.pack();
    let now = platform.clock.now();

    // `agent.no-links-in-comments` is in warn; no decision was ever in its scope. A
    // downgrade is never silent: without a reason it is refused, and `apply` will not
    // make it either.
    let mut change = platform.change("agent.no-links-in-comments", Mode::Audit);
    let plan = promotion::plan(&pack, Some(&platform.store), &change, now).unwrap();
    assert_eq!(plan.gate, Gate::Refused(Refusal::NoReason));
    assert!(promotion::apply(&plan, &platform.store, now).is_err());
    assert_eq!(platform.files(), before);
    change.reason = Some("noisy on the support queue".to_owned());
    let plan = promotion::plan(&pack, Some(&platform.store), &change, now).unwrap();
    assert!(!plan.promoting());
    assert_eq!(plan.gate, Gate::NotNeeded);
    let applied = promotion::apply(&plan, &platform.store, now).unwrap();
    assert!(!applied.promotion.forced);
    assert_eq!(applied.promotion.by, "carol");
    assert_eq!(
        applied.promotion.reason.as_deref(),
        Some("noisy on the support queue")
    );
    assert_eq!(applied.promotion.verdict, "none");
    assert_eq!(
        (
            applied.promotion.from_mode.as_str(),
            applied.promotion.to_mode.as_str()
        ),
        ("warn", "audit")
    );
    assert_eq!(
        platform
            .pack()
            .rule("agent.no-links-in-comments")
            .unwrap()
            .mode,
        Some(Mode::Audit)
    );

    // Undoing it is the same workflow the other way: the file is as it was.
    let pack = platform.pack();
    let back = platform.change("agent.no-links-in-comments", Mode::Warn);
    let plan = promotion::plan(&pack, Some(&platform.store), &back, now).unwrap();
    assert!(matches!(plan.gate, Gate::Refused(Refusal::NotReady(_))));
    let mut forced = back.clone();
    forced.force = true;
    forced.reason = Some("back as it was".to_owned());
    let plan = promotion::plan(&pack, Some(&platform.store), &forced, now).unwrap();
    promotion::apply(&plan, &platform.store, now).unwrap();
    assert_eq!(platform.files(), before, "byte for byte");
    assert_eq!(platform.store.promotions(None).unwrap().len(), 2);

    // Scopes demote the same way, in arbiter.toml.
    let pack = platform.pack();
    let mut scope = platform.change("default-deny:Agent", Mode::Audit);
    scope.reason = Some("agents are being re-registered".to_owned());
    let plan = promotion::plan(&pack, Some(&platform.store), &scope, now).unwrap();
    let applied = promotion::apply(&plan, &platform.store, now).unwrap();
    assert_eq!(applied.file, Path::new("arbiter.toml"));
    assert_eq!(
        platform.pack().default_deny_scopes().get("Agent"),
        Some(&Mode::Audit)
    );
}

#[tokio::test]
async fn a_rule_with_two_weeks_of_clean_evidence_is_promoted_without_force() {
    let mut platform = Platform::new();
    for n in 0..=15 {
        platform.decide(n, token(600)).await;
    }
    platform.drain().await;
    platform.clock.set(Platform::day(16));
    let pack = platform.pack();
    let now = platform.clock.now();

    let change = platform.change(LONG_TTL, Mode::Warn);
    let plan = promotion::plan(&pack, Some(&platform.store), &change, now).unwrap();
    let Gate::Ready(readiness) = &plan.gate else {
        panic!("{:#?}", plan.gate);
    };
    assert_eq!(readiness.evidence.evaluations, 16);
    let applied = promotion::apply(&plan, &platform.store, now).unwrap();
    assert!(!applied.promotion.forced);
    assert_eq!(applied.promotion.verdict, "ready");
    assert_eq!(applied.promotion.to_mode, "warn");
}

#[tokio::test]
async fn without_a_store_a_promotion_has_no_evidence() {
    let platform = Platform::new();
    let pack = platform.pack();
    let now = platform.clock.now();
    let mut change = platform.change(LONG_TTL, Mode::Enforce);
    let plan = promotion::plan(&pack, None, &change, now).unwrap();
    assert_eq!(plan.gate, Gate::Refused(Refusal::NoEvidence));
    assert!(plan.readiness().is_none());
    change.force = true;
    let plan = promotion::plan(&pack, None, &change, now).unwrap();
    assert_eq!(plan.gate, Gate::Forced(None));
}

#[tokio::test]
async fn a_change_the_store_cannot_record_is_undone() {
    let platform = unreviewed().await;
    let before = platform.files();
    let pack = platform.pack();
    let now = platform.clock.now();
    let read_only = Store::open_read_only(&platform.dir.path().join("data")).unwrap();
    let mut change = platform.change("agent.no-links-in-comments", Mode::Audit);
    change.reason = Some("a test".to_owned());
    let plan = promotion::plan(&pack, Some(&read_only), &change, now).unwrap();

    let error = promotion::apply(&plan, &read_only, now).unwrap_err();
    assert!(
        matches!(
            &error,
            PromotionError::Unrecorded {
                restored: Restored::Yes,
                ..
            }
        ),
        "{error:?}"
    );
    let said = error.to_string();
    assert!(
        said.starts_with("the change could not be recorded (the database ")
            && said.ends_with(" is open read-only); the file is restored"),
        "{said}"
    );
    assert_eq!(platform.files(), before, "byte for byte");
}

#[tokio::test]
async fn edits_the_pack_refuses_are_errors_of_the_plan() {
    let platform = Platform::new();
    let pack = platform.pack();
    let now = platform.clock.now();
    for (name, to, said) in [
        (
            "no.such-rule",
            Mode::Enforce,
            "no rule `no.such-rule` in the pack",
        ),
        (
            LONG_TTL,
            Mode::Audit,
            "`tokens.long-ttl` is already in audit",
        ),
        (
            "default-deny:Nobody",
            Mode::Enforce,
            "no default-deny scope `default-deny:Nobody` in the pack (there is one, \
             `default-deny:<PrincipalType>`, for each principal type of the schema)",
        ),
    ] {
        let change = platform.change(name, to);
        let error = promotion::plan(&pack, Some(&platform.store), &change, now).unwrap_err();
        assert!(matches!(error, PromotionError::Edit(_)), "{error:?}");
        assert_eq!(error.to_string(), said);
    }
}

#[tokio::test]
async fn readiness_is_assessed_from_the_store_for_rules_and_scopes_the_pack_has() {
    let platform = unreviewed().await;
    let pack = platform.pack();
    let now = platform.clock.now();
    for (name, known) in [
        (LONG_TTL, true),
        ("agent.support-handles-tickets", true),
        ("default-deny:CiJob", true),
        ("default-deny:Nobody", false),
        ("no.such-rule", false),
    ] {
        assert_eq!(readiness::in_pack(&pack, name), known, "{name}");
    }
    let all = readiness::assess(&pack, &platform.store, None, now).unwrap();
    let names: Vec<&str> = all.iter().map(|r| r.rule.as_str()).collect();
    assert!(names.contains(&LONG_TTL) && names.contains(&"default-deny:CiJob"));
    assert!(
        !names.contains(&"agent.support-handles-tickets"),
        "a permit"
    );
    assert!(!names.contains(&"default-deny:Agent"), "enforced");

    let one = readiness::assess(&pack, &platform.store, Some(LONG_TTL), now).unwrap();
    assert_eq!(one.len(), 1);
    let e = &one[0].evidence;
    assert_eq!((e.evaluations, e.would_fire, e.open_findings), (2, 2, 1));
    assert_eq!(
        one[0].evidence,
        all.iter().find(|r| r.rule == LONG_TTL).unwrap().evidence
    );
}

#[tokio::test]
async fn suggestions_cover_what_was_observed_except_what_reviewers_expected_blocked() {
    let mut platform = Platform::new();
    platform.decide(0, read_ticket("T-1")).await;
    platform.decide(1, read_ticket("T-2")).await;
    platform.decide(1, token(86_400)).await;
    platform.drain().await;
    platform.review_findings_of(LONG_TTL, ReviewVerdict::Expected);
    let pack = platform.pack();

    let mut reads = Vec::new();
    let suggested = baseline::suggest(
        &pack,
        &platform.store,
        &BaselineQuery::default(),
        &mut |done, total| reads.push((done, total)),
    )
    .unwrap();
    assert_eq!(reads.last(), Some(&(3, 3)), "{reads:?}");
    assert_eq!((suggested.observed, suggested.left_out), (2, 1));
    let s = &suggested.suggestion;
    assert_eq!(s.policies, 1, "{}", s.cedar);
    assert!(s.notes.is_empty(), "{:?}", s.notes);
    let set = cedar_policy::PolicySet::from_str(&s.cedar).unwrap();
    let permit = set.policies().next().unwrap();
    assert_eq!(permit.annotation("id"), Some("baseline.support-bot.1"));
    assert!(
        s.cedar.contains(
            "    principal == Agent::\"support-bot\",\n    action == Action::\"read_ticket\",\n"
        ),
        "{}",
        s.cedar
    );
    assert!(
        s.cedar.contains("Ticket::\"T-1\", Ticket::\"T-2\""),
        "{}",
        s.cedar
    );
    assert!(
        !s.cedar.contains("create_token"),
        "reviewed as expected: {}",
        s.cedar
    );

    // Only what the query selects: since day 1, one ticket.
    let since = BaselineQuery {
        since: Some(Platform::day(1)),
        ..BaselineQuery::default()
    };
    let later = baseline::suggest(&pack, &platform.store, &since, &mut |_, _| {}).unwrap();
    assert_eq!((later.observed, later.left_out), (1, 1));
    assert!(
        later
            .suggestion
            .cedar
            .contains("resource == Ticket::\"T-2\"")
    );
}

#[tokio::test]
async fn a_freeze_counts_its_pairs_and_each_freeze_is_numbered() {
    let mut platform = Platform::new();
    platform.decide(0, read_ticket("T-1")).await;
    platform.decide(0, read_ticket("T-2")).await;
    platform.decide(0, token(600)).await;
    platform.drain().await;
    let now = platform.clock.now();

    let first = baseline::freeze(&platform.store, "alice", None, now).unwrap();
    assert_eq!(first, Frozen { seq: 1, pairs: 2 });
    let since = Some(Platform::day(1));
    let second = baseline::freeze(&platform.store, "alice", since, now).unwrap();
    assert_eq!(second, Frozen { seq: 2, pairs: 0 });
    assert_eq!(platform.store.latest_baseline().unwrap(), 2);
}

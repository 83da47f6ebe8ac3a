//! Readiness from a synthetic history over weeks: decisions made by the real engine on
//! an injected clock, written by the real log writer into a real SQLite store, pack
//! versions loaded on given days; then every verdict and its reasons.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

use std::fs;
use std::sync::Arc;
use std::time::Duration;

use arbiter_core::clock::ManualClock;
use arbiter_core::{DecisionRequest, Engine, Pack, TimeSource};
use arbiter_lifecycle::readiness::{self, History, Readiness, Verdict};
use arbiter_store::{
    DecisionRecord, Durability, FindingQuery, LogWriter, PackVersion, Review, ReviewVerdict, Store,
};
use jiff::{SignedDuration, Timestamp};
use serde_json::json;

const SCHEMA: &str = "entity Agent;\nentity Tool;\n\
    action call appliesTo { principal: [Agent], resource: [Tool], context: {} };\n";

const CONFIG: &str = "[readiness]\nmin_days = 14\ncycle = \"7d\"\nmax_audit_days = 60\n";

/// `danger` is the rule under study; `quiet` is in scope of every call and never fires.
fn policies(danger_condition: &str) -> String {
    format!(
        "@id(\"allow\")\npermit(principal, action, resource);\n\n\
         @id(\"danger\")\n@mode(\"audit\")\n@audit_until(\"2027-06-30\")\n\
         forbid(principal, action, resource) when {{ {danger_condition} }};\n\n\
         @id(\"quiet\")\n@mode(\"audit\")\n\
         forbid(principal == Agent::\"nobody\", action, resource);\n"
    )
}

const DAY0: &str = "2026-11-01T09:00:00Z";

fn day(n: i64) -> Timestamp {
    DAY0.parse::<Timestamp>()
        .unwrap()
        .checked_add(SignedDuration::from_hours(24 * n))
        .unwrap()
}

/// A history: a pack directory, a store, and a clock to write decisions at.
struct Lab {
    dir: tempfile::TempDir,
    store: Store,
    writer: LogWriter,
    engine: Engine,
    clock: Arc<ManualClock>,
}

impl Lab {
    fn new() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let pack = dir.path().join("pack");
        fs::create_dir_all(pack.join("policies")).unwrap();
        fs::write(pack.join("schema.cedarschema"), SCHEMA).unwrap();
        fs::write(pack.join("arbiter.toml"), CONFIG).unwrap();
        fs::write(
            pack.join("policies/rules.cedar"),
            policies("resource == Tool::\"danger\""),
        )
        .unwrap();
        let store = Store::open(&dir.path().join("data")).unwrap();
        let writer = LogWriter::start(&store, Durability::Sync, 64).unwrap();
        let clock = Arc::new(ManualClock::new(day(0)));
        let engine = Engine::new(Arc::new(Pack::load(&pack).unwrap()))
            .with_clock(clock.clone())
            .with_time_source(TimeSource::ClockOnly);
        let mut lab = Lab {
            dir,
            store,
            writer,
            engine,
            clock,
        };
        lab.load_pack(0);
        lab
    }

    fn pack_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("pack")
    }

    /// A server loads the pack as it is on disk, on day `n`.
    fn load_pack(&mut self, n: i64) {
        let pack = Arc::new(Pack::load(self.pack_dir()).unwrap());
        self.store
            .record_pack_version(&PackVersion::of(&pack, day(n)))
            .unwrap();
        self.engine = self.engine.with_pack(pack);
    }

    /// One decision by `who` calling `tool`, `hours` after day `n` began, logged as the
    /// server logs it.
    async fn call(&self, n: i64, hours: i64, who: &str, tool: &str) {
        self.clock.set(
            day(n)
                .checked_add(SignedDuration::from_hours(hours))
                .unwrap(),
        );
        let request = DecisionRequest::from_value(&json!({
            "principal": format!("Agent::\"{who}\""), "action": "Action::\"call\"",
            "resource": format!("Tool::\"{tool}\""), "context": {}}))
        .unwrap();
        let d = self.engine.decide(&request).unwrap();
        let record = DecisionRecord::decided(&d, &request, json!({}), Duration::from_micros(1));
        self.writer.append(record).await.unwrap();
    }

    /// Ordinary traffic: `bot` calls a safe tool every day from `from` to `to`.
    async fn daily(&self, from: i64, to: i64) {
        for n in from..=to {
            self.call(n, 1, "bot", "safe").await;
        }
    }

    fn readiness(&self, n: i64, rule: &str) -> Readiness {
        let pack = Pack::load(self.pack_dir()).unwrap();
        let versions = self.store.pack_versions().unwrap();
        let loads = self.store.pack_loads().unwrap();
        let days = self.store.rule_days(None).unwrap();
        let findings = self.store.finding_facts(None).unwrap();
        let errors = self.store.rule_errors(None).unwrap();
        let history = History {
            versions: &versions,
            loads: &loads,
            days: &days,
            findings: &findings,
            errors: &errors,
        };
        let all = readiness::readiness(&pack, history, day(n), None);
        all.into_iter()
            .find(|r| r.rule == rule)
            .unwrap_or_else(|| panic!("no readiness for {rule}"))
    }

    fn review(&self, n: i64, verdict: ReviewVerdict) {
        let finding = &self
            .store
            .findings(&FindingQuery {
                rule: Some("danger".into()),
                ..FindingQuery::default()
            })
            .unwrap()[0];
        self.store
            .review(
                &finding.id,
                &Review {
                    verdict,
                    by: "alice".into(),
                    at: day(n),
                    note: "looked at it".into(),
                },
            )
            .unwrap();
    }
}

fn says(r: &Readiness, words: &str) -> bool {
    r.reasons.iter().any(|reason| reason.contains(words))
}

#[tokio::test]
async fn a_reviewed_rule_with_two_weeks_of_traffic_is_ready() {
    let lab = Lab::new();
    lab.daily(0, 15).await;
    lab.call(3, 2, "bot", "danger").await;
    lab.review(4, ReviewVerdict::Expected);
    let r = lab.readiness(16, "danger");
    assert_eq!(r.verdict, Verdict::Ready, "{r:#?}");
    assert!(!r.overdue);
    let e = &r.evidence;
    assert_eq!(
        (
            e.days_in_mode,
            e.evaluations,
            e.days_with_traffic,
            e.would_fire
        ),
        (16, 17, 16, 1)
    );
    assert_eq!(
        (e.expected_findings, e.open_findings, e.distinct_principals),
        (1, 0, 1)
    );
    assert!(e.spans_cycle);
    // The quiet rule saw the same traffic and never fired: ready too.
    assert_eq!(lab.readiness(16, "quiet").verdict, Verdict::Ready);
}

#[tokio::test]
async fn an_unreviewed_finding_needs_review_and_says_how_old_it_is() {
    let lab = Lab::new();
    lab.daily(0, 15).await;
    lab.call(3, 2, "bot", "danger").await;
    let r = lab.readiness(16, "danger");
    assert_eq!(r.verdict, Verdict::NeedsReview, "{r:#?}");
    assert!(
        says(
            &r,
            "1 finding(s) nobody has reviewed, the oldest first seen 12 day(s) ago"
        ),
        "{r:#?}"
    );
    assert_eq!(r.evidence.oldest_open_finding_days, Some(12));
}

#[tokio::test]
async fn too_little_time_or_traffic_is_insufficient_evidence() {
    let lab = Lab::new();
    lab.daily(0, 9).await;
    let early = lab.readiness(10, "quiet");
    assert_eq!(early.verdict, Verdict::InsufficientEvidence);
    assert!(
        says(&early, "in audit for 10 day(s), fewer than the 14 required"),
        "{early:#?}"
    );

    // Traffic on days 0–3 only: by day 20 the time is there, a whole cycle is not.
    let lab = Lab::new();
    lab.daily(0, 3).await;
    let short = lab.readiness(20, "quiet");
    assert_eq!(short.verdict, Verdict::InsufficientEvidence, "{short:#?}");
    assert!(says(&short, "spans less than one 7d cycle"), "{short:#?}");
    assert!(!says(&short, "fewer than the 14 required"));

    // No traffic at all.
    let lab = Lab::new();
    let none = lab.readiness(20, "quiet");
    assert!(
        says(&none, "no decision has been in its scope"),
        "{none:#?}"
    );
}

#[tokio::test]
async fn a_legitimate_finding_makes_it_noisy_until_a_change_and_new_evidence() {
    let mut lab = Lab::new();
    lab.daily(0, 15).await;
    lab.call(3, 2, "bot", "danger").await;
    lab.review(5, ReviewVerdict::Legitimate);
    let noisy = lab.readiness(16, "danger");
    assert_eq!(noisy.verdict, Verdict::Noisy, "{noisy:#?}");
    assert!(says(&noisy, "reviewed as legitimate work"), "{noisy:#?}");

    // The rule is fixed (it now spares `bot`), and a server loads the fix on day 16.
    fs::write(
        lab.pack_dir().join("policies/rules.cedar"),
        policies("resource == Tool::\"danger\" && principal != Agent::\"bot\""),
    )
    .unwrap();
    lab.load_pack(16);
    lab.daily(16, 18).await;
    lab.call(17, 2, "bot", "danger").await;
    let fixed = lab.readiness(18, "danger");
    // Not noisy any more (the legitimate finding predates the change and has not fired
    // since), but the evidence since the change is two days old.
    assert_eq!(fixed.verdict, Verdict::InsufficientEvidence, "{fixed:#?}");
    assert!(says(&fixed, "spans less than one 7d cycle"), "{fixed:#?}");
    assert_eq!(fixed.evidence.legitimate_findings, 0);
    // Still in audit since day 0: the change did not reset time in mode.
    assert_eq!(fixed.evidence.days_in_mode, 18);

    lab.daily(19, 24).await;
    // A late review of the firings from before the fix judges the old rule, not this one.
    lab.review(20, ReviewVerdict::Legitimate);
    let ready = lab.readiness(24, "danger");
    assert_eq!(ready.verdict, Verdict::Ready, "{ready:#?}");
    assert!(
        says(
            &ready,
            "10 in-scope decision(s) over 9 day(s); it never would have fired"
        ),
        "{ready:#?}"
    );
    assert_eq!(ready.evidence.last_changed, Some(day(16)));
}

#[tokio::test]
async fn a_rule_left_in_audit_too_long_is_overdue_whatever_its_verdict() {
    let lab = Lab::new();
    lab.daily(0, 61).await;
    let r = lab.readiness(61, "quiet");
    assert!(r.overdue, "{r:#?}");
    assert_eq!(r.verdict, Verdict::Ready);
    assert!(says(&r, "longer than max_audit_days = 60"), "{r:#?}");
    // `danger` says when it is due: past its @audit_until it is overdue.
    let past = lab.readiness(250, "danger");
    assert!(
        past.overdue && says(&past, "past its @audit_until (2027-06-30)"),
        "{past:#?}"
    );
}

#[tokio::test]
async fn the_default_deny_scope_has_readiness_too_and_enforced_rules_have_none() {
    let lab = Lab::new();
    lab.daily(0, 15).await;
    let scope = lab.readiness(16, "default-deny:Agent");
    assert_eq!(scope.verdict, Verdict::Ready, "{scope:#?}");
    assert_eq!(scope.evidence.evaluations, 16);
    let pack = Pack::load(lab.pack_dir()).unwrap();
    let history = History {
        versions: &[],
        loads: &[],
        days: &[],
        findings: &[],
        errors: &[],
    };
    let never_served = readiness::readiness(&pack, history, day(16), Some("danger"));
    assert_eq!(never_served[0].verdict, Verdict::InsufficientEvidence);
    assert!(says(
        &never_served[0],
        "does not have this rule in audit as it is now"
    ));
    assert!(
        readiness::readiness(&pack, history, day(16), Some("allow")).is_empty(),
        "a permit has no readiness"
    );
}

#[tokio::test]
async fn a_rule_whose_condition_errors_is_erroring_until_it_is_fixed_and_cannot_be_promoted() {
    let mut lab = Lab::new();
    // In scope of every call: every evaluation overflows. An erroring forbid counts as
    // satisfied, so it also has a finding; `erroring` comes before `needs_review`.
    fs::write(
        lab.pack_dir().join("policies/rules.cedar"),
        policies("resource == Tool::\"danger\" || 9223372036854775807 + 1 > 0"),
    )
    .unwrap();
    lab.load_pack(0);
    lab.daily(0, 15).await;
    let r = lab.readiness(16, "danger");
    assert_eq!(r.verdict, Verdict::Erroring, "{r:#?}");
    assert_eq!(r.evidence.errors, 16, "{r:#?}");
    assert_eq!(r.evidence.open_findings, 1, "{r:#?}");
    let first = r
        .evidence
        .first_error
        .clone()
        .expect("the first error is kept");
    assert_eq!(
        first.at,
        day(0).checked_add(SignedDuration::from_hours(1)).unwrap()
    );
    assert!(first.message.contains("overflow"), "{first:#?}");
    assert!(
        says(
            &r,
            "16 evaluation error(s) in scope since the rule last changed"
        ) && says(&r, &first.decision_id)
            && says(&r, &first.message),
        "{r:#?}"
    );
    // The quiet rule saw the same traffic and ran cleanly.
    assert_eq!(lab.readiness(16, "quiet").verdict, Verdict::Ready);

    // Promotion is refused, like any verdict but `ready`.
    let pack = Pack::load(lab.pack_dir()).unwrap();
    let change = arbiter_lifecycle::promotion::ModeChange {
        name: "danger".into(),
        to: arbiter_core::rule::Mode::Enforce,
        force: false,
        reason: None,
        by: "alice".into(),
    };
    let plan =
        arbiter_lifecycle::promotion::plan(&pack, Some(&lab.store), &change, day(16)).unwrap();
    match plan.gate {
        arbiter_lifecycle::promotion::Gate::Refused(
            arbiter_lifecycle::promotion::Refusal::NotReady(r),
        ) => assert_eq!(r.verdict, Verdict::Erroring),
        other => panic!("{other:?}"),
    }

    // Fixed on day 16: the errors before the change no longer count.
    fs::write(
        lab.pack_dir().join("policies/rules.cedar"),
        policies("resource == Tool::\"danger\""),
    )
    .unwrap();
    lab.load_pack(16);
    lab.daily(16, 24).await;
    let fixed = lab.readiness(24, "danger");
    assert_eq!(fixed.verdict, Verdict::Ready, "{fixed:#?}");
    assert_eq!(
        (fixed.evidence.errors, fixed.evidence.first_error.clone()),
        (0, None)
    );
}

//! Replay against a real log written by the decision service: the pack in force replayed
//! over its own log changes nothing (sessions, revokes and throttles re-simulated from
//! the logged times); a candidate that enforces an audit rule shows exactly the breaks
//! the log's audit firings predict; a rule that reads a masked value is unreplayable.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

use std::fs;
use std::path::Path;
use std::sync::Arc;

use arbiter_core::clock::{Clock, ManualClock};
use arbiter_core::{Engine, Pack, TimeSource};
use arbiter_service::replay::{Change, Replay, Walk};
use arbiter_service::{DecisionService, Recording};
use arbiter_store::{DecisionRecord, Durability, LogWriter, Logged, Masker, Store};
use proptest::prelude::*;
use serde_json::{Value, json};

mod common;

use common::{copy_dir, example};

/// Traffic with sessions (a secret read, then egress: revoked), throttled token mints,
/// unapproved egress (audited), masked comment bodies, default-denied requests and
/// invalid ones, a few seconds apart.
fn traffic() -> Vec<Value> {
    let agents = ["Agent::\"support-bot\"", "Agent::\"ops-copilot\""];
    let endpoints = ["api.github.com", "pastebin.com", "hooks.slack.com"];
    let mut requests = Vec::new();
    for round in 0..12 {
        let agent = agents[round % 2];
        let session = format!("s{round}");
        requests.push(
            json!({"principal": agent, "action": "Action::\"read_secret\"",
            "resource": "Secret::\"staging/db-password\"", "session": session}),
        );
        requests.push(
            json!({"principal": agent, "action": "Action::\"http_request\"",
            "resource": format!("Endpoint::\"{}\"", endpoints[round % 3]),
            "context": {"method": "GET", "path": "/"}, "session": session}),
        );
        requests.push(
            json!({"principal": agent, "action": "Action::\"read_ticket\"",
            "resource": "Ticket::\"T-1\"", "session": session}),
        );
        requests.push(
            json!({"principal": agent, "action": "Action::\"comment_ticket\"",
            "resource": "Ticket::\"T-2\"",
            "context": {"body": if round % 3 == 0 { "see https://x.example" } else { "done" }}}),
        );
        requests.push(json!({"principal": "CiJob::\"pr-checks\"",
            "action": "Action::\"upload_file\"",
            "resource": format!("Endpoint::\"{}\"", endpoints[round % 3]),
            "context": {"filename": "report.txt", "bytes": 10}}));
        for _ in 0..4 {
            requests.push(
                json!({"principal": agent, "action": "Action::\"create_token\"",
                "resource": "Service::\"billing-api\"", "context": {"ttl_s": 300, "scopes": []}}),
            );
        }
        requests.push(json!({"principal": agent, "action": "Action::\"fly\"",
            "resource": "Ticket::\"T-1\""}));
    }
    requests
}

/// Writes `traffic()` to a fresh store through the decision service, on `pack_dir`.
async fn logged(pack_dir: &Path, data: &Path) -> Store {
    let paced = traffic().into_iter().map(|r| (3, r)).collect();
    logged_paced(pack_dir, data, paced).await
}

/// Writes each request to a fresh store through the decision service, on `pack_dir`, the
/// clock moved on by its number of seconds before it is decided.
async fn logged_paced(pack_dir: &Path, data: &Path, paced: Vec<(i64, Value)>) -> Store {
    let store = Store::open(data).unwrap();
    let clock = Arc::new(ManualClock::new("2026-11-02T09:00:00Z".parse().unwrap()));
    let engine = Engine::new(Arc::new(Pack::load(pack_dir).unwrap()))
        .with_clock(Arc::clone(&clock) as Arc<dyn Clock>)
        .with_time_source(TimeSource::ClockOnly);
    let service = DecisionService::new(engine).recording(Recording {
        log: LogWriter::start(&store, Durability::Batched, 256).unwrap(),
        masker: Masker::load_or_create(data).unwrap(),
        store: store.clone(),
    });
    for (gap, request) in paced {
        clock.advance(jiff::SignedDuration::from_secs(gap));
        let engine = service.engine();
        service.decide(&engine, request).await.unwrap().ok();
    }
    service.drain().await;
    store
}

fn replayed(store: &Store, candidate: &Path) -> Vec<(DecisionRecord, Change)> {
    let replay = Replay::new(Arc::new(Pack::load(candidate).unwrap()));
    let mut out = Vec::new();
    store
        .walk_decisions(None, None, None, |stored| {
            let record = stored.read(store).unwrap();
            let change = replay.replay(&record).change;
            out.push((record, change));
            true
        })
        .unwrap();
    out
}

#[tokio::test]
async fn the_pack_in_force_replayed_over_its_own_log_changes_nothing() {
    let dirs = tempfile::tempdir().unwrap();
    let store = logged(&example(), dirs.path()).await;
    let all = replayed(&store, &example());
    assert_eq!(all.len(), traffic().len());
    // The log has what makes this a real check: revokes, throttles, invalid requests.
    let effects: Vec<_> = all.iter().filter_map(|(r, _)| r.effect).collect();
    assert!(
        effects.contains(&arbiter_core::rule::Effect::Revoke),
        "{effects:?}"
    );
    assert!(
        effects.contains(&arbiter_core::rule::Effect::Throttle),
        "{effects:?}"
    );
    assert!(all.iter().any(|(r, _)| r.decision == Logged::Invalid));
    for (record, change) in &all {
        match change {
            Change::Same => {}
            // A comment's body is masked in the log and a rule reads it.
            Change::Unreplayable(path) => assert_eq!(path, "context.body", "{record:?}"),
            other => panic!("{other:?} for {}", serde_json::to_string(record).unwrap()),
        }
    }
    assert!(
        all.iter()
            .any(|(_, c)| *c == Change::Unreplayable("context.body".into()))
    );
}

#[tokio::test]
async fn enforcing_an_audit_rule_breaks_exactly_what_it_audited_in_allowed_decisions() {
    let dirs = tempfile::tempdir().unwrap();
    let store = logged(&example(), &dirs.path().join("data")).await;
    let candidate = dirs.path().join("candidate");
    copy_dir(&example(), &candidate);
    let egress = candidate.join("policies/egress.cedar");
    let text = fs::read_to_string(&egress).unwrap();
    let tightened = text.replacen(
        "@id(\"egress.unapproved-endpoint\")\n@mode(\"audit\")",
        "@id(\"egress.unapproved-endpoint\")\n@mode(\"enforce\")",
        1,
    );
    assert_ne!(tightened, text);
    fs::write(&egress, tightened).unwrap();

    let all = replayed(&store, &candidate);
    let predicted: Vec<&str> = all
        .iter()
        .filter(|(r, _)| {
            r.decision == Logged::Allow
                && r.audit
                    .iter()
                    .any(|a| a.rule == "egress.unapproved-endpoint")
        })
        .map(|(r, _)| r.decision_id.as_str())
        .collect();
    let breaks: Vec<&str> = all
        .iter()
        .filter(|(_, c)| *c == Change::Breaks)
        .map(|(r, _)| r.decision_id.as_str())
        .collect();
    assert!(!predicted.is_empty());
    assert_eq!(breaks, predicted);
    assert!(!all.iter().any(|(_, c)| *c == Change::Loosens));
}

#[tokio::test]
async fn the_log_split_by_principal_over_threads_reports_what_one_thread_does() {
    let dirs = tempfile::tempdir().unwrap();
    let store = logged(&example(), &dirs.path().join("data")).await;
    let candidate = dirs.path().join("candidate");
    copy_dir(&example(), &candidate);
    let egress = candidate.join("policies/egress.cedar");
    let text = fs::read_to_string(&egress).unwrap();
    fs::write(
        &egress,
        text.replacen("@mode(\"audit\")", "@mode(\"enforce\")", 1),
    )
    .unwrap();
    let pack = Arc::new(Pack::load(&candidate).unwrap());
    let window = arbiter_service::replay::Window::default();
    let one =
        arbiter_service::replay::replay_window(&pack, &store, &window, 2, &Walk::on(1)).unwrap();
    assert!(one.changes.breaks > 0, "{one:?}");
    for workers in [2, 3] {
        let many =
            arbiter_service::replay::replay_window(&pack, &store, &window, 2, &Walk::on(workers))
                .unwrap();
        assert_eq!(
            serde_json::to_value(&many).unwrap(),
            serde_json::to_value(&one).unwrap(),
            "{workers} workers"
        );
    }
}

/// One generated request: which kind, by which agent, in which session (or none), and
/// how many seconds after the one before.
fn generated() -> impl Strategy<Value = Vec<(i64, Value)>> {
    let step = (
        0usize..7,
        0usize..3,
        proptest::option::of(0usize..3),
        0i64..90,
    );
    proptest::collection::vec(step, 1..80).prop_map(|steps| {
        let agents = [
            "Agent::\"support-bot\"",
            "Agent::\"ops-copilot\"",
            "CiJob::\"pr-checks\"",
        ];
        steps
            .into_iter()
            .map(|(kind, who, session, gap)| {
                let principal = agents[who];
                let mut request = match kind {
                    0 => json!({"action": "Action::\"read_secret\"",
                                "resource": "Secret::\"staging/db-password\""}),
                    1 => json!({"action": "Action::\"http_request\"",
                                "resource": "Endpoint::\"pastebin.com\"",
                                "context": {"method": "GET", "path": "/"}}),
                    2 => json!({"action": "Action::\"http_request\"",
                                "resource": "Endpoint::\"api.github.com\"",
                                "context": {"method": "POST", "path": "/repos"}}),
                    3 => json!({"action": "Action::\"create_token\"",
                                "resource": "Service::\"billing-api\"",
                                "context": {"ttl_s": 300, "scopes": []}}),
                    4 => json!({"action": "Action::\"read_ticket\"",
                                "resource": "Ticket::\"T-1\""}),
                    5 => json!({"action": "Action::\"upload_file\"",
                                "resource": "Endpoint::\"hooks.slack.com\"",
                                "context": {"filename": "r.txt", "bytes": 10}}),
                    _ => json!({"action": "Action::\"fly\"", "resource": "Ticket::\"T-1\""}),
                };
                request["principal"] = json!(principal);
                if let Some(session) = session {
                    request["session"] = json!(format!("s{session}"));
                }
                (gap, request)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Whatever the traffic (sessions that read a secret then egress and are revoked,
    /// throttled token mints, requests at the same second or minutes apart, invalid
    /// ones), the pack in force replayed over its own log, split over two workers, finds
    /// no difference: replay decides as `serve` decided.
    #[test]
    fn the_pack_in_force_replays_its_own_log_identically(paced in generated()) {
        let n = paced.len() as u64;
        let dirs = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let store = runtime.block_on(logged_paced(&example(), dirs.path(), paced));
        let pack = Arc::new(Pack::load(example()).unwrap());
        let report = arbiter_service::replay::replay_window(
            &pack, &store, &Default::default(), 3, &Walk::on(2),
        ).unwrap();
        prop_assert_eq!(report.replayed, n);
        let c = report.changes;
        prop_assert_eq!(
            (c.breaks, c.loosens, c.shifts, c.now_valid, c.now_invalid),
            (0, 0, 0, 0, 0),
            "{}", serde_json::to_string(&report).unwrap()
        );
        prop_assert_eq!(c.same, n);
    }
}

/// A walk told to stop (what Ctrl-C does) stops at the next batch, replays the prefix of
/// the log it read, no more and no less, and says it was interrupted.
#[tokio::test]
async fn a_stopped_walk_reports_the_prefix_it_replayed_and_says_so() {
    let dirs = tempfile::tempdir().unwrap();
    let paced: Vec<(i64, Value)> = std::iter::repeat_n(traffic(), 5)
        .flatten()
        .map(|r| (1, r))
        .collect();
    assert_eq!(paced.len(), 600);
    let store = logged_paced(&example(), dirs.path(), paced).await;
    let pack = Arc::new(Pack::load(example()).unwrap());
    let stop = std::sync::atomic::AtomicBool::new(false);
    let heard = std::sync::Mutex::new(Vec::new());
    let progress = |done: u64| {
        heard.lock().unwrap().push(done);
        // Ctrl-C, as soon as the first progress is reported (after 255 records).
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    };
    let walk = Walk {
        workers: 2,
        stop: Some(&stop),
        progress: Some(&progress),
    };
    let report =
        arbiter_service::replay::replay_window(&pack, &store, &Default::default(), 3, &walk)
            .unwrap();
    assert!(report.interrupted);
    // The check is once a batch: the 512th record is where the walk stops, unreplayed.
    assert_eq!(report.replayed, 511);
    assert_eq!(*heard.lock().unwrap(), vec![255, 511]);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["interrupted"], true);
    // Not stopped: the whole log, and no `interrupted` in the document.
    let whole =
        arbiter_service::replay::replay_window(&pack, &store, &Default::default(), 3, &Walk::on(2))
            .unwrap();
    assert_eq!(whole.replayed, 600);
    assert!(!whole.interrupted);
    assert!(
        serde_json::to_value(&whole)
            .unwrap()
            .get("interrupted")
            .is_none()
    );
}

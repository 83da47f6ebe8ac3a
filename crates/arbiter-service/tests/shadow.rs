//! A candidate in shadow, driven through the decision service without HTTP: the pack in
//! force shadowing itself finds no difference (sessions, revokes, throttles and masked
//! values included); a full queue drops and counts, and never blocks the caller; the
//! aggregate in the store keeps at most its groups and examples, and counts the rest.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arbiter_core::clock::{Clock, ManualClock};
use arbiter_core::{Decision, Engine, Pack, TimeSource};
use arbiter_service::shadow::{Candidate, Sample, Shadow, ShadowOptions, Shadowed};
use arbiter_service::{DecisionService, Observer, Recording};
use arbiter_store::{
    CandidateReport, DecisionRecord, Durability, LogWriter, Masker, ShadowLimits, Store,
};
use serde_json::{Value, json};

mod common;

use common::{copy_dir, example};

fn start() -> jiff::Timestamp {
    "2026-11-26T10:00:00Z".parse().unwrap()
}

/// Counts what the shadow reports.
#[derive(Debug, Default)]
struct Counted {
    decided: AtomicU64,
    errored: AtomicU64,
    dropped: AtomicU64,
}

impl Observer for Counted {
    fn decided(&self, _: &Decision, _: Duration) {}
    fn refused(&self, _: &str) {}
    fn shadowed(&self, event: Shadowed) {
        let counter = match event {
            Shadowed::Decided => &self.decided,
            Shadowed::Errored => &self.errored,
            Shadowed::Dropped => &self.dropped,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

fn candidate(pack: Arc<Pack>) -> Candidate {
    Candidate {
        pack,
        dir: example(),
    }
}

/// Sessions a revoke ends, throttled mints, masked comment bodies a warn rule reads,
/// default-denied and invalid requests, a few seconds apart.
fn traffic() -> Vec<Value> {
    let mut requests = Vec::new();
    for round in 0..6 {
        let agent = ["Agent::\"support-bot\"", "Agent::\"ops-copilot\""][round % 2];
        let session = format!("s{round}");
        requests.push(
            json!({"principal": agent, "action": "Action::\"read_secret\"",
            "resource": "Secret::\"staging/db-password\"", "session": session}),
        );
        requests.push(
            json!({"principal": agent, "action": "Action::\"http_request\"",
            "resource": "Endpoint::\"api.github.com\"",
            "context": {"method": "GET", "path": "/"}, "session": session}),
        );
        requests.push(
            json!({"principal": agent, "action": "Action::\"read_ticket\"",
            "resource": "Ticket::\"T-1\"", "session": session}),
        );
        requests.push(
            json!({"principal": agent, "action": "Action::\"comment_ticket\"",
            "resource": "Ticket::\"T-2\"",
            "context": {"body": if round % 2 == 0 { "see https://x.example" } else { "ok" }}}),
        );
        for _ in 0..4 {
            requests.push(
                json!({"principal": agent, "action": "Action::\"create_token\"",
                "resource": "Service::\"billing-api\"", "context": {"ttl_s": 300, "scopes": []}}),
            );
        }
        requests.push(json!({"principal": agent, "action": "Action::\"fly\"",
            "resource": "Ticket::\"T-1\""}));
        requests.push(json!({"principal": [agent]}));
    }
    requests
}

#[tokio::test]
async fn the_pack_in_force_in_shadow_of_itself_finds_no_difference() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let pack = Arc::new(Pack::load(example()).unwrap());
    let clock = Arc::new(ManualClock::new(start()));
    let observer = Arc::new(Counted::default());
    let shadow = Shadow::start(
        candidate(Arc::clone(&pack)),
        &store,
        ShadowOptions::default(),
        observer.clone(),
        start(),
    )
    .unwrap();
    let shadow = Arc::new(shadow);
    let engine = Engine::new(pack)
        .with_clock(Arc::clone(&clock) as Arc<dyn Clock>)
        .with_time_source(TimeSource::ClockOnly);
    let service = DecisionService::new(engine)
        .recording(Recording {
            log: LogWriter::start(&store, Durability::Batched, 1024).unwrap(),
            masker: Masker::load_or_create(dir.path()).unwrap(),
            store: store.clone(),
        })
        .shadowed_by(Arc::clone(&shadow));
    let traffic = traffic();
    let mut denied = 0;
    for request in &traffic {
        clock.advance(jiff::SignedDuration::from_secs(7));
        let engine = service.engine();
        let answer = service.decide(&engine, request.clone()).await.unwrap();
        denied +=
            usize::from(answer.is_ok_and(|d| d.decision != arbiter_core::response::Outcome::Allow));
    }
    assert!(denied > 0);
    shadow.stop();
    service.drain().await;
    let report = store.candidate_report(None).unwrap().unwrap();
    assert_eq!(report.shadowed, traffic.len() as u64, "{report:#?}");
    assert_eq!(report.changes.differences(), 0, "{report:#?}");
    assert!(report.by_rule.is_empty() && report.by_principal.is_empty());
    assert_eq!(
        report.first,
        Some(start() + jiff::SignedDuration::from_secs(7))
    );
    assert_eq!(
        observer.decided.load(Ordering::Relaxed),
        traffic.len() as u64
    );
    assert_eq!(observer.dropped.load(Ordering::Relaxed), 0);
}

/// A live decision of `request` by the pack in force, as the service records it.
fn decided(service: &DecisionService, request: Value) -> DecisionRecord {
    service.decide_recorded(&service.engine(), request).record
}

#[test]
fn a_full_queue_drops_and_counts_and_never_blocks_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let pack = Arc::new(Pack::load(example()).unwrap());
    let observer = Arc::new(Counted::default());
    let options = ShadowOptions {
        sample: Sample::ALL,
        queue: 4,
        limits: ShadowLimits::default(),
    };
    // The worker does not run yet: nothing takes from the queue.
    let (shadow, worker) = Shadow::new(
        candidate(Arc::clone(&pack)),
        &store,
        options,
        observer.clone(),
        start(),
    )
    .unwrap();
    let shadow = Arc::new(shadow);
    let service = DecisionService::new(Engine::new(pack));
    let request = json!({"principal": "Agent::\"support-bot\"",
        "action": "Action::\"read_ticket\"", "resource": "Ticket::\"T-1\""});
    let records: Vec<DecisionRecord> = (0..10)
        .map(|_| decided(&service, request.clone()))
        .collect();
    // Offered from a thread of their own: were an offer to wait for room, it would
    // wait forever, and the deadline below would say so.
    let (done, finished) = std::sync::mpsc::channel();
    let offering = Arc::clone(&shadow);
    let offered = request.clone();
    std::thread::spawn(move || {
        for record in records {
            offering.offer(record, offered.clone());
        }
        done.send(()).unwrap();
    });
    finished
        .recv_timeout(Duration::from_secs(10))
        .expect("offering to a full queue returns at once");
    assert_eq!(observer.dropped.load(Ordering::Relaxed), 6);

    shadow.run(worker).unwrap();
    shadow.stop();
    let report = store.candidate_report(None).unwrap().unwrap();
    assert_eq!(report.shadowed, 4, "{report:#?}");
    assert_eq!(report.dropped, 6);
    assert_eq!(report.changes.same, 4);
    assert_eq!(observer.decided.load(Ordering::Relaxed), 4);
    // Stopped: what is offered now is dropped too.
    shadow.offer(decided(&service, request.clone()), request);
    assert_eq!(observer.dropped.load(Ordering::Relaxed), 7);
}

/// The queue is bounded in bytes as well as in length: large bodies are dropped and
/// counted long before its length is reached, and the room comes back once decided.
#[test]
fn large_requests_are_dropped_past_the_queues_byte_budget() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let pack = Arc::new(Pack::load(example()).unwrap());
    let observer = Arc::new(Counted::default());
    let options = ShadowOptions {
        sample: Sample::ALL,
        queue: 1024,
        limits: ShadowLimits::default(),
    };
    let (shadow, worker) = Shadow::new(
        candidate(Arc::clone(&pack)),
        &store,
        options,
        observer.clone(),
        start(),
    )
    .unwrap();
    let service = DecisionService::new(Engine::new(pack));
    // A body of about 1 MiB (a comment the server would accept whole).
    let big = json!({"principal": "Agent::\"support-bot\"",
        "action": "Action::\"comment_ticket\"", "resource": "Ticket::\"T-1\"",
        "context": {"body": "x".repeat(1024 * 1024 - 200)}});
    let fits = arbiter_service::shadow::MAX_QUEUED_BYTES / (1024 * 1024);
    for _ in 0..fits + 10 {
        shadow.offer(decided(&service, big.clone()), big.clone());
    }
    // The worker is not running: everything past the budget was dropped.
    let dropped = observer.dropped.load(Ordering::Relaxed);
    assert!(
        (10..=11).contains(&dropped),
        "{dropped} dropped of {}",
        fits + 10
    );
    shadow.run(worker).unwrap();
    shadow.stop();
    let report = store.candidate_report(None).unwrap().unwrap();
    assert_eq!(
        report.shadowed + report.dropped,
        (fits + 10) as u64,
        "{report:#?}"
    );
}

#[test]
fn the_aggregate_keeps_at_most_its_groups_and_examples_and_counts_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let live = Arc::new(Pack::load(example()).unwrap());
    // The candidate denies every agent everything.
    let copy = dir.path().join("candidate");
    copy_dir(&example(), &copy);
    std::fs::write(
        copy.join("policies/deny.cedar"),
        "@id(\"cand.no-agents\")\n@mode(\"enforce\")\nforbid (principal is Agent, action, resource);\n",
    )
    .unwrap();
    let options = ShadowOptions {
        sample: Sample::ALL,
        queue: 64,
        limits: ShadowLimits {
            examples: 2,
            groups: 2,
        },
    };
    let shadow = Shadow::start(
        Candidate {
            pack: Arc::new(Pack::load(&copy).unwrap()),
            dir: copy,
        },
        &store,
        options,
        Arc::new(Counted::default()),
        start(),
    )
    .unwrap();
    let service = DecisionService::new(Engine::new(live));
    // Five agents, three tickets each: the first two agents' groups are kept.
    for i in 0..5 {
        for ticket in ["T-1", "T-2", "T-1"] {
            let request = json!({"principal": format!("Agent::\"a{i}\""),
                "action": "Action::\"read_ticket\"", "resource": format!("Ticket::\"{ticket}\"")});
            shadow.offer(decided(&service, request.clone()), request);
        }
    }
    shadow.stop();
    let report: CandidateReport = store.candidate_report(None).unwrap().unwrap();
    assert_eq!(report.shadowed, 15);
    // Default-denied live, denied by the candidate's rule: shifts.
    assert_eq!(report.changes.shifts, 15, "{report:#?}");
    assert_eq!(report.by_principal.len(), 2);
    assert_eq!(report.overflow.by_principal, 9);
    assert!(
        report
            .by_principal
            .iter()
            .all(|g| g.changes.shifts == 3 && g.examples.len() == 2)
    );
    assert_eq!(report.by_rule.len(), 1);
    assert_eq!(report.by_rule[0].key, "cand.no-agents");
    assert_eq!(report.by_rule[0].changes.shifts, 15);
    assert_eq!(report.overflow.by_rule, 0);
}

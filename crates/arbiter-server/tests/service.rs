//! The server holds no decision logic: the decision service, driven directly without
//! HTTP, makes the same decisions and writes the same log records as the server does
//! over HTTP. And no store call runs on an async worker: while an enforced `revoke`
//! waits for SQLite's write lock, the server keeps answering.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

mod common;

use std::fs;
use std::sync::Arc;

use arbiter_core::clock::{Clock, ManualClock};
use arbiter_core::{Engine, Pack, TimeSource};
use arbiter_service::{DecisionService, Recording};
use arbiter_store::{DecisionQuery, DecisionRecord, Durability, LogWriter, Masker, Store};
use common::{ADMIN, SECOND, Server, copy_dir, eventually, example};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The requests both paths decide: a session that reads a secret and is revoked for its
/// egress, a request after that in the terminated session, masked context values, a
/// presented credential that does not verify, a default-denied one, and bad requests.
fn requests() -> Vec<Value> {
    let agent = "Agent::\"ops-copilot\"";
    vec![
        json!({"principal": agent, "action": "Action::\"read_secret\"",
               "resource": "Secret::\"staging/db-password\"", "session": "s1"}),
        json!({"principal": agent, "action": "Action::\"http_request\"",
               "resource": "Endpoint::\"api.github.com\"",
               "context": {"method": "GET", "path": "/repos/acme/billing"}, "session": "s1"}),
        json!({"principal": agent, "action": "Action::\"read_secret\"",
               "resource": "Secret::\"staging/db-password\"", "session": "s1"}),
        json!({"principal": "CiJob::\"deploy-billing\"", "action": "Action::\"update_config\"",
               "resource": "Config::\"billing/flags\"",
               "context": {"key": "feature.x", "value": "the secret value"}}),
        json!({"principal": "Agent::\"support-bot\"", "action": "Action::\"comment_ticket\"",
               "resource": "Ticket::\"T-1\"", "context": {"body": "private words"},
               "credential": "not-a-token"}),
        json!({"principal": "Agent::\"support-bot\"", "action": "Action::\"upload_file\"",
               "resource": "Endpoint::\"pastebin.com\"",
               "context": {"filename": "dump.txt", "bytes": 4096}}),
        json!({"principal": agent, "action": "Action::\"fly\"", "resource": "Secret::\"x\""}),
        json!({"principal": agent, "action": "Action::\"read_secret\""}),
    ]
}

/// A record with what differs between two runs by design (the id's random part, the
/// time spent) set aside.
fn comparable(record: &DecisionRecord) -> Value {
    let mut value = serde_json::to_value(record).unwrap();
    value["decision_id"] = Value::Null;
    value["latency_us"] = Value::Null;
    value
}

/// An answer, without its id.
fn answer(mut value: Value) -> Value {
    if let Some(map) = value.as_object_mut() {
        map.remove("decision_id");
    }
    value
}

fn every_record(store: &Store) -> Vec<Value> {
    let mut page = store
        .query_decisions(&DecisionQuery {
            limit: 1000,
            ..DecisionQuery::default()
        })
        .unwrap();
    page.decisions.reverse();
    page.decisions.iter().map(comparable).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_decision_service_decides_and_records_as_the_server_does() {
    let dirs = tempfile::tempdir().unwrap();
    let pack = dirs.path().join("pack");
    copy_dir(&example(), &pack);
    let start: jiff::Timestamp = "2026-11-26T10:00:00Z".parse().unwrap();
    let server_clock = Arc::new(ManualClock::new(start));
    let data = dirs.path().join("data");
    let mut server = {
        let clock = Arc::clone(&server_clock);
        Server::start_with(
            tempfile::tempdir().unwrap(),
            pack.clone(),
            data.clone(),
            |o| {
                o.clock = clock;
            },
        )
        .await
    };

    // Over HTTP, one request a second.
    let mut over_http = Vec::new();
    for request in requests() {
        server_clock.advance(jiff::SignedDuration::from_secs(1));
        let (_, body, _) = server.post("/v1/decide", &request).await;
        over_http.push(answer(body));
    }
    server.stop().await;

    // Directly, through the service, at the same times, with the same masking key.
    let direct_data = dirs.path().join("direct");
    fs::create_dir_all(&direct_data).unwrap();
    fs::copy(data.join("mask.key"), direct_data.join("mask.key")).unwrap();
    let store = Store::open(&direct_data).unwrap();
    let clock = Arc::new(ManualClock::new(start));
    let engine = Engine::new(Arc::new(Pack::load(&pack).unwrap()))
        .with_clock(Arc::clone(&clock) as Arc<dyn Clock>)
        .with_time_source(TimeSource::ClockOnly);
    let service = DecisionService::new(engine).recording(Recording {
        log: LogWriter::start(&store, Durability::Batched, 64).unwrap(),
        masker: Masker::load_or_create(&direct_data).unwrap(),
        store: store.clone(),
    });
    let mut direct = Vec::new();
    for request in requests() {
        clock.advance(jiff::SignedDuration::from_secs(1));
        let engine = service.engine();
        let decided = service.decide(&engine, request).await.unwrap();
        direct.push(answer(match decided {
            Ok(decision) => serde_json::to_value(&decision).unwrap(),
            Err(error) => error.to_json(),
        }));
    }
    service.drain().await;

    assert_eq!(direct, over_http);
    assert_eq!(over_http[1]["effect"], "revoke");
    assert_eq!(over_http[2]["reason"], "session:terminated");
    assert_eq!(over_http[6]["error"]["code"], "invalid_request");
    let from_server = every_record(&Store::open_read_only(&data).unwrap());
    let from_service = every_record(&store);
    assert_eq!(from_service.len(), requests().len());
    assert_eq!(from_service, from_server);
    // The one record path did its work on both: masked, fingerprinted, revocation kept.
    let text = serde_json::to_string(&from_server).unwrap();
    assert!(!text.contains("the secret value") && !text.contains("private words"));
    assert!(!text.contains("not-a-token"));
    let revoked = |store: &Store| {
        store
            .revocations_since(0)
            .unwrap()
            .iter()
            .map(|r| (r.kind, r.value.clone(), r.by.clone(), r.at))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        revoked(&store),
        revoked(&Store::open_read_only(&data).unwrap())
    );
    assert_eq!(revoked(&store).len(), 1);
}

/// One runtime thread: if the revoke effect's commit ran on it, the whole server would
/// stop while SQLite waits for the write lock. It runs on the blocking pool, so the
/// server keeps deciding, and the revoke is answered once the lock is free.
#[tokio::test(flavor = "current_thread")]
async fn a_revoke_waiting_for_the_store_does_not_stop_the_server() {
    let server = Server::start(Durability::Batched).await;
    let agent = "Agent::\"ops-copilot\"";
    let read = json!({"principal": agent, "action": "Action::\"read_secret\"",
                      "resource": "Secret::\"staging/db-password\"", "session": "s1"});
    let egress = json!({"principal": agent, "action": "Action::\"http_request\"",
                        "resource": "Endpoint::\"api.github.com\"",
                        "context": {"method": "GET", "path": "/"}, "session": "s1"});
    let (status, _, _) = server.post("/v1/decide", &read).await;
    assert_eq!(status, StatusCode::OK);

    // Another connection takes SQLite's write lock and holds it.
    let lock = rusqlite::Connection::open(server.data.join(arbiter_store::DB_FILE)).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();

    let client = server.client.clone();
    let url = format!("{}/v1/decide", server.base);
    let revoking = tokio::spawn(async move {
        let response = client.post(url).json(&egress).send().await.unwrap();
        response.json::<Value>().await.unwrap()
    });
    // The revocation applies in memory at once: a later request in the session is
    // refused while the first still waits to commit it.
    let terminated = eventually(10 * SECOND, || async {
        let (_, body, _) = server.post("/v1/decide", &read).await;
        body["reason"] == "session:terminated"
    })
    .await;
    assert!(
        terminated,
        "the server stopped answering while a revoke waited"
    );
    assert!(
        !revoking.is_finished(),
        "the revoke was answered before its revocation could be committed"
    );
    let (status, _, _) = server.admin(Method::GET, "/healthz", None).await;
    assert_eq!(status, StatusCode::OK);

    lock.execute_batch("ROLLBACK").unwrap();
    let answered = revoking.await.unwrap();
    assert_eq!(answered["effect"], "revoke");
    let (_, revocations, _) = server
        .admin(Method::GET, "/v1/revocations", Some(ADMIN))
        .await;
    let by = revocations["revocations"][0]["by"].clone();
    assert_eq!(by, "rule:agent.no-egress-after-secret");
}

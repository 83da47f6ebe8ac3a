//! The real server on a loopback port, spoken to over HTTP: decisions equal the offline
//! engine's, admin endpoints refuse missing or wrong tokens, a broken reload keeps the
//! running pack, bad input gets the right 4xx and the server stays healthy, and every
//! decision lands in the log.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

use std::fs;
use std::sync::Arc;

use arbiter_core::{DecisionRequest, Engine, Pack, TimeSource};
use arbiter_server::{App, Durability, Options};

mod common;
use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn session_requests() -> Vec<Value> {
    let text = fs::read_to_string(example().join("requests/agent-session.jsonl")).unwrap();
    text.lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            // The server uses its own clock.
            v.as_object_mut().unwrap().remove("time");
            v
        })
        .collect()
}

fn without_ids(mut v: Value) -> Value {
    if let Some(map) = v.as_object_mut() {
        map.remove("decision_id");
    }
    v
}

#[tokio::test]
async fn decisions_over_http_equal_the_offline_engine() {
    let mut server = Server::start(Durability::Batched).await;
    let pack = Arc::new(Pack::load(&server.pack).unwrap());
    let offline = Engine::new(pack).with_time_source(TimeSource::ClockOnly);
    let requests = session_requests();
    let mut over_http = Vec::new();
    for r in &requests {
        let (status, body, _) = server.post("/v1/decide", r).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        over_http.push(without_ids(body));
    }
    let expected: Vec<Value> = requests
        .iter()
        .map(|r| {
            let d = offline
                .decide(&DecisionRequest::from_value(r).unwrap())
                .unwrap();
            without_ids(serde_json::to_value(d).unwrap())
        })
        .collect();
    assert_eq!(over_http, expected);
    assert_eq!(over_http[1]["effect"], "revoke");
    assert_eq!(over_http[2]["reason"], "session:terminated");

    // The batch endpoint answers in order, with a fresh session id so state starts clean.
    let batch: Vec<Value> = requests
        .iter()
        .map(|r| {
            let mut r = r.clone();
            if r.get("session").is_some() {
                r["session"] = json!("batch-1");
            }
            r
        })
        .collect();
    let (status, body, _) = server
        .post("/v1/decide/batch", &json!({ "requests": batch }))
        .await;
    assert_eq!(status, StatusCode::OK);
    let answers: Vec<Value> = body["responses"]
        .as_array()
        .unwrap()
        .iter()
        .cloned()
        .map(without_ids)
        .collect();
    assert_eq!(answers, expected);
    server.stop().await;
}

#[tokio::test]
async fn admin_endpoints_refuse_missing_or_wrong_tokens() {
    let mut server = Server::start(Durability::Batched).await;
    for (method, path) in [
        (reqwest::Method::GET, "/v1/policy"),
        (reqwest::Method::POST, "/v1/policy/reload"),
        (reqwest::Method::GET, "/v1/decisions"),
    ] {
        for token in [None, Some("wrong"), Some("")] {
            let (status, body, headers) = server.admin(method.clone(), path, token).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {token:?}"
            );
            assert_eq!(body["error"]["code"], "unauthorized");
            assert_eq!(headers.get("www-authenticate").unwrap(), "Bearer");
        }
        let (status, _, _) = server.admin(method.clone(), path, Some(ADMIN)).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{method} {path} with the admin token"
        );
    }
    // Probes are open.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (status, _, _) = server.admin(reqwest::Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_broken_reload_keeps_the_running_pack_and_state_survives_a_good_one() {
    let mut server = Server::start(Durability::Batched).await;
    let (_, policy, _) = server
        .admin(reqwest::Method::GET, "/v1/policy", Some(ADMIN))
        .await;
    let before = policy["policy_version"].as_str().unwrap().to_owned();
    // A session reads a secret: the next egress in it will be revoked.
    let requests = session_requests();
    assert_eq!(
        server.post("/v1/decide", &requests[0]).await.1["decision"],
        "allow"
    );

    let file = server.pack.join("policies/agents.cedar");
    let good = fs::read_to_string(&file).unwrap();
    fs::write(
        &file,
        format!(
            "{good}\n@id(\"broken\")\n@mode(\"sometimes\")\nforbid(principal, action, resource);\n"
        ),
    )
    .unwrap();
    let (status, body, _) = server
        .admin(reqwest::Method::POST, "/v1/policy/reload", Some(ADMIN))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_pack");
    assert!(
        body["error"]["details"][0]
            .as_str()
            .unwrap()
            .contains("policies/agents.cedar"),
        "{body}"
    );
    let (_, policy, _) = server
        .admin(reqwest::Method::GET, "/v1/policy", Some(ADMIN))
        .await;
    assert_eq!(policy["policy_version"], before.as_str());
    // Still serving with the old pack.
    let (status, _, _) = server.post("/v1/decide", &requests[3]).await;
    assert_eq!(status, StatusCode::OK);

    // A good change reloads, and the session's state carries over.
    fs::write(&file, format!("{good}\n// a harmless change\n")).unwrap();
    let (status, body, _) = server
        .admin(reqwest::Method::POST, "/v1/policy/reload", Some(ADMIN))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_ne!(body["policy_version"], before.as_str());
    let (_, after, _) = server.post("/v1/decide", &requests[1]).await;
    assert_eq!(after["effect"], "revoke", "{after}");
    assert_eq!(after["policy_version"], body["policy_version"]);
    server.stop().await;
}

#[tokio::test]
async fn malformed_requests_get_the_right_4xx_and_the_server_stays_healthy() {
    let mut server = Server::start(Durability::Batched).await;
    let ok = json!({"principal": "Agent::\"support-bot\"", "action": "Action::\"read_ticket\"", "resource": "Ticket::\"T-1\""});
    let with = |key: &str, value: Value| {
        let mut v = ok.clone();
        v[key] = value;
        v
    };
    let deep = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"".to_vec(), 400, "malformed_request"),
        (b"{".to_vec(), 400, "malformed_request"),
        (b"null".to_vec(), 400, "malformed_request"),
        (b"[]".to_vec(), 400, "malformed_request"),
        (b"\"text\"".to_vec(), 400, "malformed_request"),
        (b"{}".to_vec(), 400, "malformed_request"),
        (vec![0xff, 0xfe, 0x00], 400, "malformed_request"),
        (deep.into_bytes(), 400, "malformed_request"),
        (json!({"principal": 1, "action": "Action::\"read_ticket\"", "resource": "Ticket::\"T-1\""}).to_string().into_bytes(), 400, "malformed_request"),
        (with("extra", json!(1)).to_string().into_bytes(), 400, "malformed_request"),
        (with("principal", json!("Agent::bot")).to_string().into_bytes(), 400, "malformed_request"),
        (with("principal", json!({"type": "Agent"})).to_string().into_bytes(), 400, "malformed_request"),
        (with("principal", json!({"type": "Agent", "id": "a", "x": 1})).to_string().into_bytes(), 400, "malformed_request"),
        (with("context", json!([1, 2])).to_string().into_bytes(), 400, "malformed_request"),
        (with("context", json!("x")).to_string().into_bytes(), 400, "malformed_request"),
        (with("session", json!(5)).to_string().into_bytes(), 400, "malformed_request"),
        (with("credential", json!({"t": 1})).to_string().into_bytes(), 400, "malformed_request"),
        (with("time", json!("2026-11-26T10:00:00Z")).to_string().into_bytes(), 422, "time_not_allowed"),
        (with("action", json!("Action::\"launch\"")).to_string().into_bytes(), 422, "invalid_request"),
        (with("principal", json!("Robot::\"r2\"")).to_string().into_bytes(), 422, "invalid_request"),
        (with("resource", json!("Secret::\"prod/db-password\"")).to_string().into_bytes(), 422, "invalid_request"),
        (with("context", json!({"unexpected": true})).to_string().into_bytes(), 422, "invalid_request"),
        (with("session", json!("")).to_string().into_bytes(), 422, "invalid_request"),
        (with("session", json!("x".repeat(300))).to_string().into_bytes(), 422, "invalid_request"),
        (with("context", json!({"session": {}})).to_string().into_bytes(), 422, "reserved_context_key"),
        (with("context", json!({"now": "2026"})).to_string().into_bytes(), 422, "reserved_context_key"),
        (with("context", json!({"credential": {}})).to_string().into_bytes(), 422, "reserved_context_key"),
        (with("context", json!({"in_intent": true})).to_string().into_bytes(), 422, "reserved_context_key"),
        (with("context", json!({"novel": false})).to_string().into_bytes(), 422, "reserved_context_key"),
        (with("entities", json!([{"uid": {"type": "Ticket", "id": "T-9"}, "attrs": {}, "parents": []}])).to_string().into_bytes(), 422, "invalid_entities"),
        (vec![b' '; 2 * 1024 * 1024], 413, "payload_too_large"),
    ];
    assert!(cases.len() >= 30);
    for (n, (body, status, code)) in cases.into_iter().enumerate() {
        let (got, answer) = server.raw("/v1/decide", body).await;
        assert_eq!(got.as_u16(), status, "case {n}: {answer}");
        assert_eq!(answer["error"]["code"], code, "case {n}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "case {n}"
        );
    }
    // Errors made outside the handlers are JSON too.
    let response = server
        .client
        .get(format!("{}/v1/decide", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(response.headers().get("allow").is_some());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "method_not_allowed");
    let (status, body, _) = server
        .admin(reqwest::Method::GET, "/v2/nothing", None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    // Batches: not the shape, too many.
    let (status, _) = server.raw("/v1/decide/batch", b"[]".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let many: Vec<Value> = (0..1001).map(|_| ok.clone()).collect();
    let (status, body, _) = server
        .post("/v1/decide/batch", &json!({ "requests": many }))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    // Still healthy and deciding.
    let (status, _, _) = server.admin(reqwest::Method::GET, "/readyz", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body, _) = server.post("/v1/decide", &ok).await;
    assert_eq!(
        (status, body["decision"].as_str()),
        (StatusCode::OK, Some("allow"))
    );
    server.stop().await;
}

#[tokio::test]
async fn every_decision_is_in_the_log_and_queryable() {
    let mut server = Server::start(Durability::Sync).await;
    let mut ids = Vec::new();
    for r in session_requests() {
        let (_, body, _) = server.post("/v1/decide", &r).await;
        ids.push(body["decision_id"].as_str().unwrap().to_owned());
    }
    let (status, _) = server.raw("/v1/decide", b"{".to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Sync durability: committed before the answer, so visible at once.
    let (status, page, _) = server
        .admin(
            reqwest::Method::GET,
            "/v1/decisions?limit=1000",
            Some(ADMIN),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let logged: Vec<&str> = page["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["decision_id"].as_str().unwrap())
        .collect();
    for id in &ids {
        assert!(logged.contains(&id.as_str()), "{id} is logged");
    }
    assert_eq!(
        logged.len(),
        ids.len() + 1,
        "the invalid request is logged too"
    );
    let (_, invalid, _) = server
        .admin(
            reqwest::Method::GET,
            "/v1/decisions?decision=invalid",
            Some(ADMIN),
        )
        .await;
    assert_eq!(invalid["decisions"].as_array().unwrap().len(), 1);
    assert_eq!(
        invalid["decisions"][0]["error"]["code"],
        "malformed_request"
    );
    // The bytes of a body that is not a request are not kept (masking cannot reach them).
    assert_eq!(
        invalid["decisions"][0]["request"],
        json!({"unparsed_bytes": 1})
    );
    let (_, revoked, _) = server
        .admin(
            reqwest::Method::GET,
            "/v1/decisions?rule=agent.no-egress-after-secret&mode=enforce",
            Some(ADMIN),
        )
        .await;
    assert_eq!(revoked["decisions"].as_array().unwrap().len(), 1);
    let (_, paged, _) = server
        .admin(reqwest::Method::GET, "/v1/decisions?limit=2", Some(ADMIN))
        .await;
    assert_eq!(paged["decisions"].as_array().unwrap().len(), 2);
    assert!(paged["next"].is_string());
    for bad in [
        "/v1/decisions?limit=0",
        "/v1/decisions?limit=1001",
        "/v1/decisions?since=yesterday",
        "/v1/decisions?colour=red",
        "/v1/decisions?cursor=not-a-ulid",
        "/v1/decisions?mode=sometimes",
    ] {
        let (status, body, _) = server.admin(reqwest::Method::GET, bad, Some(ADMIN)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    // Metrics count what happened.
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("arbiter_decisions_total{decision=\"deny\",effect=\"revoke\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains(
        "arbiter_rule_fired_total{rule=\"agent.no-egress-after-secret\",mode=\"enforce\"} 1"
    ));
    assert!(metrics.contains("arbiter_invalid_requests_total{code=\"malformed_request\"} 1"));
    assert!(metrics.contains("arbiter_decision_latency_seconds_count"));
    assert!(metrics.contains("arbiter_log_queue_depth"));
    server.stop().await;
}

#[tokio::test]
async fn batched_decisions_are_visible_within_a_second_and_drained_on_shutdown() {
    let mut server = Server::start(Durability::Batched).await;
    let request = json!({"principal": "Agent::\"support-bot\"", "action": "Action::\"read_ticket\"", "resource": "Ticket::\"T-1\""});
    let mut ids = Vec::new();
    for _ in 0..200 {
        let (_, body, _) = server.post("/v1/decide", &request).await;
        ids.push(body["decision_id"].as_str().unwrap().to_owned());
    }
    let last = ids.last().unwrap().clone();
    // Ids increase in arrival order, so the last answer is the newest record.
    let seen = eventually(SECOND, || async {
        let (_, page, _) = server
            .admin(reqwest::Method::GET, "/v1/decisions?limit=1", Some(ADMIN))
            .await;
        page["decisions"][0]["decision_id"] == last.as_str()
    })
    .await;
    assert!(seen, "the newest decision is visible within 1 s");
    server.stop().await;
    let store = arbiter_store::Store::open_read_only(&server.data).unwrap();
    let page = store
        .query_decisions(&arbiter_store::DecisionQuery {
            limit: 1000,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(page.decisions.len(), ids.len());
}

#[tokio::test]
async fn pep_tokens_guard_decisions_when_configured_and_throttles_set_retry_after() {
    let dirs = tempfile::tempdir().unwrap();
    let pack = dirs.path().join("pack");
    copy_dir(&example(), &pack);
    add_pep_token(&pack, b"pep-secret");
    let data = dirs.path().join("data");
    let mut server = Server::start_in(dirs, pack, data, Durability::Batched).await;
    let request = json!({"principal": "Agent::\"ops-copilot\"", "action": "Action::\"create_token\"",
        "resource": "Service::\"billing-api-staging\"", "context": {"ttl_s": 600, "scopes": ["read"]}});
    let (status, body, _) = server.post("/v1/decide", &request).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let call = || {
        server
            .client
            .post(format!("{}/v1/decide", server.base))
            .bearer_auth("pep-secret")
            .json(&request)
            .send()
    };
    let mut throttled = None;
    for _ in 0..5 {
        let response = call().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let retry = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let body: Value = response.json().await.unwrap();
        if body["effect"] == "throttle" {
            throttled = Some((retry, body));
            break;
        }
    }
    let (retry, body) = throttled.expect("the fourth mint within a minute is throttled");
    assert_eq!(
        retry.as_deref(),
        Some(body["retry_after_s"].to_string().as_str())
    );
    server.stop().await;
}

#[tokio::test]
async fn watch_reloads_a_changed_pack_and_refuses_a_broken_one() {
    let dirs = tempfile::tempdir().unwrap();
    let pack = dirs.path().join("pack");
    copy_dir(&example(), &pack);
    let mut options = Options::new(&pack, dirs.path().join("data"));
    options.admin_token = Some(ADMIN.to_owned());
    let (app, _) = App::start(options).await.unwrap();
    let _watcher = arbiter_server::watch::watch(Arc::clone(&app)).unwrap();
    let before = app.policy_version();
    let file = pack.join("policies/agents.cedar");
    let good = fs::read_to_string(&file).unwrap();
    // A broken save: refused, the running pack stays.
    fs::write(
        &file,
        format!("{good}\n@id(\"broken\")\nforbid(principal, action, resource\n"),
    )
    .unwrap();
    // File events arrive when they arrive: wait for the refusal, bounded.
    let rejected = "arbiter_pack_reloads_total{code=\"rejected\"} 1";
    assert!(
        eventually(10 * SECOND, || async {
            app.metrics_text().contains(rejected)
        })
        .await
    );
    assert_eq!(
        app.policy_version(),
        before,
        "a broken pack is never swapped in"
    );
    fs::write(&file, format!("{good}\n// edited\n")).unwrap();
    let reloaded = eventually(10 * SECOND, || async { app.policy_version() != before }).await;
    assert!(reloaded, "the edited pack was reloaded");
    assert_ne!(app.policy_version(), before, "the edited pack was reloaded");
    app.shutdown().await;
}

#[tokio::test]
async fn while_the_log_cannot_write_no_decision_is_made_and_readyz_says_so() {
    let mut server = Server::start(Durability::Batched).await;
    let request = json!({"principal": "Agent::\"support-bot\"", "action": "Action::\"read_ticket\"", "resource": "Ticket::\"T-1\""});
    let (status, first, _) = server.post("/v1/decide", &request).await;
    assert_eq!(status, StatusCode::OK);
    // The first decision is committed before the disk breaks (batched: answered first).
    let committed = eventually(10 * SECOND, || async {
        let (_, page, _) = server
            .admin(reqwest::Method::GET, "/v1/decisions", Some(ADMIN))
            .await;
        page["decisions"].as_array().is_some_and(|d| !d.is_empty())
    })
    .await;
    assert!(committed, "the first decision reached the log");
    // Every insert now fails, as a full or broken disk would make it.
    let db = rusqlite::Connection::open(server.data.join(arbiter_store::DB_FILE)).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
    db.execute_batch(
        "CREATE TRIGGER fail_inserts BEFORE INSERT ON log_ids BEGIN SELECT RAISE(ABORT, 'disk on fire'); END;",
    )
    .unwrap();
    let (status, second, _) = server.post("/v1/decide", &request).await;
    assert_eq!(status, StatusCode::OK, "queued before the failure is known");
    let refused = std::sync::Mutex::new(None);
    eventually(10 * SECOND, || async {
        let (status, body, _) = server.post("/v1/decide", &request).await;
        let unavailable = status == StatusCode::SERVICE_UNAVAILABLE;
        if unavailable {
            *refused.lock().unwrap() = Some(body);
        }
        unavailable
    })
    .await;
    let refused = refused
        .into_inner()
        .unwrap()
        .expect("decisions are refused while the log cannot write");
    assert_eq!(refused["error"]["code"], "log_unavailable");
    let (status, ready, _) = server.admin(reqwest::Method::GET, "/readyz", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{ready}");
    let metrics = server.metrics().await;
    assert!(!metrics.contains("arbiter_log_write_errors 0"), "{metrics}");

    // The disk recovers: the held records land and decisions resume.
    db.execute_batch("DROP TRIGGER fail_inserts;").unwrap();
    let ready = eventually(10 * SECOND, || async {
        server.admin(reqwest::Method::GET, "/readyz", None).await.0 == StatusCode::OK
    })
    .await;
    assert!(ready, "ready again once the disk recovers");
    let (status, _, _) = server.post("/v1/decide", &request).await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
    let store = arbiter_store::Store::open_read_only(&server.data).unwrap();
    let logged: Vec<String> = store
        .query_decisions(&arbiter_store::DecisionQuery {
            limit: 1000,
            ..Default::default()
        })
        .unwrap()
        .decisions
        .into_iter()
        .map(|d| d.decision_id)
        .collect();
    for acknowledged in [&first, &second] {
        let id = acknowledged["decision_id"].as_str().unwrap();
        assert!(
            logged.iter().any(|l| l == id),
            "{id} was acknowledged and must be logged"
        );
    }
}

#[tokio::test]
async fn masked_context_values_never_reach_the_log() {
    let mut server = Server::start(Durability::Sync).await;
    let request = json!({"principal": "Agent::\"support-bot\"", "action": "Action::\"comment_ticket\"",
        "resource": "Ticket::\"T-1\"", "context": {"body": "the customer's card is 4111 1111 1111 1111"}});
    let (status, decision, _) = server.post("/v1/decide", &request).await;
    assert_eq!(status, StatusCode::OK, "{decision}");
    let (_, page, _) = server
        .admin(reqwest::Method::GET, "/v1/decisions", Some(ADMIN))
        .await;
    let logged = &page["decisions"][0];
    assert_eq!(logged["decision_id"], decision["decision_id"]);
    let body = logged["request"]["context"]["body"].as_str().unwrap();
    assert!(body.starts_with(arbiter_store::MASK_PREFIX), "{body}");
    assert!(
        !page.to_string().contains("4111"),
        "the secret is nowhere in the log"
    );
    server.stop().await;
}

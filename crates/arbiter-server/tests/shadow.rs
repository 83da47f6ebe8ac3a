//! A candidate pack in shadow (`Options::candidate`), on the real server over HTTP: it
//! never changes an answer, the log or the findings; what it would change is in
//! `GET /v1/candidate` exactly (breaks, loosens, shifts by rule and principal, with their
//! decision ids); a broken candidate is refused on reload and the old one keeps deciding;
//! the sample takes whole principals, the same ones every run; and a candidate whose
//! rules error is counted, not fatal.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arbiter_core::clock::ManualClock;
use arbiter_server::Durability;
use arbiter_service::shadow::Sample;
use arbiter_store::MASK_PREFIX;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

mod common;
use common::*;

/// A copy of the example pack at `dir/candidate`, with `edit` applied to its files.
fn candidate(dir: &Path, edit: impl FnOnce(&Path)) -> PathBuf {
    let path = dir.join("candidate");
    copy_dir(&example(), &path);
    edit(&path);
    path
}

/// Replaces `from` by `to` in the pack file `file`; it must be there.
fn replace(pack: &Path, file: &str, from: &str, to: &str) {
    let path = pack.join(file);
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{file} holds {from:?}");
    fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

/// `egress.unapproved-endpoint` moved from audit to enforce.
fn tighten(pack: &Path) {
    replace(
        pack,
        "policies/egress.cedar",
        "@id(\"egress.unapproved-endpoint\")\n@mode(\"audit\")",
        "@id(\"egress.unapproved-endpoint\")\n@mode(\"enforce\")",
    );
}

/// A server on the example pack, on a clock that stands still (throttles and sessions
/// decide the same in every run), with `candidate` in shadow for `sample` of the
/// principals.
async fn serve(candidate: Option<PathBuf>, sample: f64) -> Server {
    let dirs = tempfile::tempdir().unwrap();
    let pack = dirs.path().join("pack");
    copy_dir(&example(), &pack);
    let data = dirs.path().join("data");
    let start: jiff::Timestamp = "2026-11-26T10:00:00Z".parse().unwrap();
    Server::start_with(dirs, pack, data, |options| {
        options.clock = Arc::new(ManualClock::new(start));
        options.candidate = candidate;
        options.candidate_sample = Sample::new(sample).unwrap();
    })
    .await
}

async fn report(server: &Server) -> Value {
    let (status, body, _) = server
        .admin(Method::GET, "/v1/candidate", Some(ADMIN))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Waits (bounded) until the candidate has decided `n` requests in shadow; its report.
async fn shadowed(server: &Server, n: u64) -> Value {
    let deadline = std::time::Instant::now() + 10 * SECOND;
    loop {
        let last = report(server).await;
        if last["shadowed"] == n {
            return last;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the candidate decided {n} requests: {last:#}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// The decision id of an answer.
fn id(answer: &Value) -> String {
    answer["decision_id"].as_str().unwrap().to_owned()
}

/// The group `key` of a report's `kind` (`by_rule`, `by_principal`).
fn group<'a>(report: &'a Value, kind: &str, key: &str) -> &'a Value {
    report[kind]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["key"] == key)
        .unwrap_or_else(|| panic!("{kind} has {key}: {report:#}"))
}

fn keys(report: &Value, kind: &str) -> BTreeSet<String> {
    report[kind]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["key"].as_str().unwrap().to_owned())
        .collect()
}

fn request(principal: &str, action: &str, resource: &str, context: Value) -> Value {
    json!({"principal": principal, "action": format!("Action::\"{action}\""),
           "resource": resource, "context": context})
}

/// Traffic that exercises every state the candidate must not touch: a session a revoke
/// ends (live) or would end (candidate), a throttle, audit and warn findings, masked
/// values, an invalid request and a body that is not a request.
fn traffic() -> Vec<Value> {
    let ops = "Agent::\"ops-copilot\"";
    let session = |action: &str, resource: &str, context: Value| {
        let mut r = request(ops, action, resource, context);
        r["session"] = json!("s1");
        r
    };
    let mut all = vec![
        session("read_secret", "Secret::\"staging/db-password\"", json!({})),
        session(
            "http_request",
            "Endpoint::\"api.github.com\"",
            json!({"method": "GET", "path": "/"}),
        ),
        session("read_secret", "Secret::\"staging/db-password\"", json!({})),
    ];
    let other = |r: Value| {
        let mut r = r;
        r["session"] = json!("s2");
        r
    };
    all.push(other(request(
        ops,
        "upload_file",
        "Endpoint::\"pastebin.com\"",
        json!({"filename": "dump.txt", "bytes": 4096}),
    )));
    all.push(other(request(
        ops,
        "read_secret",
        "Secret::\"staging/db-password\"",
        json!({}),
    )));
    for _ in 0..5 {
        all.push(request(
            ops,
            "create_token",
            "Service::\"billing-api-staging\"",
            json!({"ttl_s": 600, "scopes": []}),
        ));
    }
    all.push(request(
        "CiJob::\"pr-checks\"",
        "http_request",
        "Endpoint::\"pastebin.com\"",
        json!({"method": "GET", "path": "/raw/x"}),
    ));
    all.push(request(
        "Agent::\"support-bot\"",
        "comment_ticket",
        "Ticket::\"T-1\"",
        json!({"body": "SECRET-COMMENT see https://example.com"}),
    ));
    all.push(request(
        "Service::\"billing-api\"",
        "create_token",
        "Service::\"ledger-api\"",
        json!({"ttl_s": 86400, "scopes": ["ledger:write"]}),
    ));
    all.push(request(
        "Agent::\"support-bot\"",
        "no_such_action",
        "Ticket::\"T-1\"",
        json!({}),
    ));
    all.push(json!({"principal": 7, "action": "Action::\"read_ticket\""}));
    all
}

/// The answer without what differs between any two servers: the decision id.
fn answer(status: StatusCode, mut body: Value) -> (StatusCode, Value) {
    if let Some(map) = body.as_object_mut() {
        map.remove("decision_id");
    }
    (status, body)
}

/// Every logged record, oldest first, without its id and latency.
async fn log(server: &Server) -> Vec<Value> {
    let (_, page, _) = server
        .admin(Method::GET, "/v1/decisions?limit=1000", Some(ADMIN))
        .await;
    let mut records: Vec<Value> = page["decisions"].as_array().unwrap().clone();
    records.reverse();
    for r in &mut records {
        let map = r.as_object_mut().unwrap();
        map.remove("decision_id");
        map.remove("latency_us");
        // Each data directory masks with a key of its own.
        if let Some(body) = r.pointer_mut("/request/context/body") {
            assert!(body.as_str().unwrap().starts_with(MASK_PREFIX));
            *body = json!("masked");
        }
    }
    records
}

async fn findings(server: &Server) -> Vec<Value> {
    let (_, page, _) = server.admin(Method::GET, "/v1/findings", Some(ADMIN)).await;
    page["findings"].as_array().unwrap().clone()
}

/// Every byte in the data directory, for looking for a value that must not be there.
fn data_bytes(dir: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            bytes.extend(fs::read(path).unwrap());
        }
    }
    bytes
}

#[tokio::test]
async fn a_candidate_in_shadow_never_changes_a_response_the_log_or_the_findings() {
    let dir = tempfile::tempdir().unwrap();
    // A candidate that differs everywhere the traffic goes: the egress rule enforced with
    // `revoke` (it would end the session the live pack keeps), the egress-after-secret
    // rule in audit (it would keep the session the live pack ends), the mint rate at one
    // a minute.
    let candidate = candidate(dir.path(), |pack| {
        tighten(pack);
        replace(
            pack,
            "policies/egress.cedar",
            "@mode(\"enforce\")\n@effect(\"deny\")",
            "@mode(\"enforce\")\n@effect(\"revoke\")",
        );
        replace(
            pack,
            "policies/agents.cedar",
            "@id(\"agent.no-egress-after-secret\")\n@mode(\"enforce\")",
            "@id(\"agent.no-egress-after-secret\")\n@mode(\"audit\")",
        );
        replace(pack, "policies/tokens.cedar", "3/1m", "1/1m");
    });
    let mut live = serve(None, 1.0).await;
    let mut shadowed_server = serve(Some(candidate), 1.0).await;
    let traffic = traffic();
    let mut answers = Vec::new();
    for (n, request) in traffic.iter().enumerate() {
        let (status, body, _) = live.post("/v1/decide", request).await;
        let alone = answer(status, body);
        let (status, body, _) = shadowed_server.post("/v1/decide", request).await;
        let beside = answer(status, body);
        assert_eq!(beside, alone, "request {n}: {request}");
        answers.push(alone);
    }
    // What the traffic met: a revoke, a terminated session, a throttle, a 422, a 400.
    let met = |field: &str, value: &str| answers.iter().any(|(_, a)| a[field] == value);
    assert!(met("effect", "revoke") && met("reason", "session:terminated"));
    assert!(met("effect", "throttle"));
    let statuses: BTreeSet<u16> = answers.iter().map(|(s, _)| s.as_u16()).collect();
    assert_eq!(statuses, BTreeSet::from([200, 400, 422]));

    // Every request was a JSON object, so every one was decided in shadow, and the
    // candidate would have answered differently.
    let report = shadowed(&shadowed_server, traffic.len() as u64).await;
    assert!(
        report["changes"]["breaks"].as_u64().unwrap() > 0,
        "{report:#}"
    );
    assert!(
        report["changes"]["loosens"].as_u64().unwrap() > 0,
        "{report:#}"
    );
    assert_eq!(report["dropped"], 0);

    // The same log (but for ids and latency) and the same findings.
    for server in [&live, &shadowed_server] {
        let logged = eventually(10 * SECOND, || async {
            log(server).await.len() == traffic.len()
        })
        .await;
        assert!(logged);
    }
    assert_eq!(log(&shadowed_server).await, log(&live).await);
    let found = findings(&live).await;
    assert!(!found.is_empty());
    assert_eq!(findings(&shadowed_server).await, found);

    // The masked value reached the candidate, and nothing of it was kept.
    shadowed_server.stop().await;
    live.stop().await;
    let bytes = data_bytes(&shadowed_server.data);
    assert!(
        !bytes
            .windows(b"SECRET-COMMENT".len())
            .any(|w| w == b"SECRET-COMMENT")
    );
}

#[tokio::test]
async fn a_tightened_candidate_shows_the_exact_breaks_and_shifts() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve(Some(candidate(dir.path(), tighten)), 1.0).await;
    let fetch = request(
        "CiJob::\"pr-checks\"",
        "http_request",
        "Endpoint::\"pastebin.com\"",
        json!({"method": "GET", "path": "/raw/x"}),
    );
    let upload = request(
        "Agent::\"ops-copilot\"",
        "upload_file",
        "Endpoint::\"pastebin.com\"",
        json!({"filename": "dump.txt", "bytes": 1}),
    );
    let read = request(
        "Agent::\"support-bot\"",
        "read_ticket",
        "Ticket::\"T-1\"",
        json!({}),
    );
    let mut breaks = Vec::new();
    let mut shifts = Vec::new();
    for (request, kind) in [
        (&fetch, "break"),
        (&read, "same"),
        (&upload, "shift"),
        (&fetch, "break"),
    ] {
        let (status, answer, _) = server.post("/v1/decide", request).await;
        assert_eq!(status, StatusCode::OK);
        match kind {
            "break" => {
                assert_eq!(answer["decision"], "allow");
                breaks.push(id(&answer));
            }
            "shift" => {
                assert_eq!(answer["enforced"], json!(["default-deny:Agent"]));
                shifts.push(id(&answer));
            }
            _ => {}
        }
    }
    let report = shadowed(&server, 4).await;
    assert_eq!(
        report["changes"],
        json!({"same": 1, "breaks": 2, "loosens": 0, "shifts": 1, "now_valid": 0,
               "now_invalid": 0}),
        "{report:#}"
    );
    let rule = group(&report, "by_rule", "egress.unapproved-endpoint");
    assert_eq!(rule["changes"]["breaks"], 2);
    assert_eq!(rule["changes"]["shifts"], 1);
    assert_eq!(
        rule["examples"],
        json!([breaks[0], shifts[0], breaks[1]]),
        "in arrival order"
    );
    assert_eq!(
        keys(&report, "by_rule"),
        BTreeSet::from(["egress.unapproved-endpoint".to_owned()])
    );
    let jobs = group(&report, "by_principal", "CiJob::\"pr-checks\"");
    assert_eq!(jobs["changes"]["breaks"], 2);
    assert_eq!(jobs["examples"], json!(breaks));
    let agent = group(&report, "by_principal", "Agent::\"ops-copilot\"");
    assert_eq!(agent["changes"]["shifts"], 1);
    assert_eq!(agent["examples"], json!(shifts));
    assert_eq!(report["errored"], 0);
    assert_eq!(report["overflow"], json!({"by_rule": 0, "by_principal": 0}));
    assert_eq!(report["candidate"]["sample"], 1.0);
    assert!(
        report["candidate"]["version"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("arbiter_shadow_requests_total{outcome=\"decided\"} 4"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_widened_permit_shows_the_loosens_under_the_rule_that_denied() {
    let dir = tempfile::tempdir().unwrap();
    let candidate = candidate(dir.path(), |pack| {
        fs::write(
            pack.join("policies/widen.cedar"),
            "@id(\"agent.support-reads-staging-secrets\")\n\
             permit (principal == Agent::\"support-bot\", action == Action::\"read_secret\", \
             resource) when { resource.env == \"staging\" };\n",
        )
        .unwrap();
    });
    let mut server = serve(Some(candidate), 1.0).await;
    let staging = request(
        "Agent::\"support-bot\"",
        "read_secret",
        "Secret::\"staging/db-password\"",
        json!({}),
    );
    let prod = request(
        "Agent::\"support-bot\"",
        "read_secret",
        "Secret::\"prod/stripe-key\"",
        json!({}),
    );
    let (_, loosened, _) = server.post("/v1/decide", &staging).await;
    assert_eq!(loosened["decision"], "deny");
    let (_, still_denied, _) = server.post("/v1/decide", &prod).await;
    assert_eq!(still_denied["decision"], "deny");
    let report = shadowed(&server, 2).await;
    assert_eq!(report["changes"]["loosens"], 1, "{report:#}");
    assert_eq!(report["changes"]["breaks"], 0);
    assert_eq!(report["changes"]["same"], 1);
    let rule = group(&report, "by_rule", "default-deny:Agent");
    assert_eq!(rule["changes"]["loosens"], 1);
    assert_eq!(rule["examples"], json!([id(&loosened)]));
    let principal = group(&report, "by_principal", "Agent::\"support-bot\"");
    assert_eq!(principal["examples"], json!([id(&loosened)]));
    server.stop().await;
}

#[tokio::test]
async fn a_broken_candidate_is_refused_on_reload_and_the_old_one_keeps_deciding() {
    let dir = tempfile::tempdir().unwrap();
    let candidate = candidate(dir.path(), tighten);
    let mut server = serve(Some(candidate.clone()), 1.0).await;
    let fetch = request(
        "CiJob::\"pr-checks\"",
        "http_request",
        "Endpoint::\"pastebin.com\"",
        json!({"method": "GET", "path": "/raw/x"}),
    );
    server.post("/v1/decide", &fetch).await;
    let before = shadowed(&server, 1).await;
    let version = before["candidate"]["version"].clone();

    fs::write(candidate.join("policies/broken.cedar"), "forbid (principal").unwrap();
    let (status, body, _) = server
        .admin(Method::POST, "/v1/candidate/reload", Some(ADMIN))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_pack");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(version.as_str().unwrap()), "{message}");
    assert!(
        body["error"]["details"][0]
            .as_str()
            .unwrap()
            .starts_with("policies/broken.cedar:1:"),
        "{body}"
    );
    // The old candidate stays, and keeps deciding.
    server.post("/v1/decide", &fetch).await;
    let after = shadowed(&server, 2).await;
    assert_eq!(after["candidate"]["version"], version);
    assert_eq!(after["changes"]["breaks"], 2);

    // A good candidate is put in shadow; its differences start from nothing.
    fs::remove_file(candidate.join("policies/broken.cedar")).unwrap();
    replace(
        &candidate,
        "policies/egress.cedar",
        "@mode(\"enforce\")",
        "@mode(\"audit\")",
    );
    let (status, body, _) = server
        .admin(Method::POST, "/v1/candidate/reload", Some(ADMIN))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_ne!(body["candidate_version"], version);
    let fresh = report(&server).await;
    assert_eq!(fresh["candidate"]["version"], body["candidate_version"]);
    assert_eq!(fresh["shadowed"], 0);
    server.post("/v1/decide", &fetch).await;
    let fresh = shadowed(&server, 1).await;
    assert_eq!(fresh["changes"]["same"], 1);

    // Admin only; no body; nothing to reload without a candidate.
    for token in [None, Some("wrong")] {
        for (method, path) in [
            (Method::GET, "/v1/candidate"),
            (Method::POST, "/v1/candidate/reload"),
        ] {
            let (status, _, _) = server.admin(method, path, token).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
        }
    }
    let response = server
        .client
        .post(format!("{}/v1/candidate/reload", server.base))
        .bearer_auth(ADMIN)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "malformed_request");
    server.stop().await;

    let mut plain = serve(None, 1.0).await;
    for (method, path) in [
        (Method::GET, "/v1/candidate"),
        (Method::POST, "/v1/candidate/reload"),
    ] {
        let (status, body, _) = plain.admin(method, path, Some(ADMIN)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(body["error"]["code"], "no_candidate");
    }
    plain.stop().await;
}

/// Each of 40 unknown agents reads a ticket, then comments on it, in a session: the
/// pack in force denies both (default-deny:Agent). The candidate allows everything, but
/// a comment after a ticket was read in the session: a loosen, then a shift, for a
/// principal whose session the candidate saw whole.
async fn sessions_in_shadow(sample: f64) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let candidate = candidate(dir.path(), |pack| {
        fs::write(
            pack.join("policies/candidate.cedar"),
            "@id(\"cand.permit-all\")\npermit (principal, action, resource);\n\
             @id(\"cand.no-comment-after-read\")\n@mode(\"enforce\")\n\
             forbid (principal is Agent, action == Action::\"comment_ticket\", resource)\n\
             when { context.session.touched.contains(\"read_ticket\") };\n",
        )
        .unwrap();
    });
    let mut server = serve(Some(candidate), sample).await;
    let agents: Vec<String> = (0..40).map(|i| format!("Agent::\"p{i}\"")).collect();
    for (action, context) in [
        ("read_ticket", json!({})),
        ("comment_ticket", json!({"body": "done"})),
    ] {
        for agent in &agents {
            let mut r = request(agent, action, "Ticket::\"T-1\"", context.clone());
            r["session"] = json!("s");
            let (_, answer, _) = server.post("/v1/decide", &r).await;
            assert_eq!(answer["decision"], "deny");
        }
    }
    let sample = Sample::new(sample).unwrap();
    let taken = agents.iter().filter(|a| sample.includes(a)).count() as u64;
    let report = shadowed(&server, 2 * taken).await;
    server.stop().await;
    report
}

#[tokio::test]
async fn sampling_is_by_principal_keeps_sessions_whole_and_is_the_same_every_run() {
    let report = sessions_in_shadow(0.3).await;
    let sample = Sample::new(0.3).unwrap();
    let expected: BTreeSet<String> = (0..40)
        .map(|i| format!("Agent::\"p{i}\""))
        .filter(|a| sample.includes(a))
        .collect();
    assert!(!expected.is_empty() && expected.len() < 40, "{expected:?}");
    assert_eq!(keys(&report, "by_principal"), expected);
    for principal in report["by_principal"].as_array().unwrap() {
        // The read loosened, and the comment saw the read in its session.
        assert_eq!(principal["changes"]["loosens"], 1, "{principal}");
        assert_eq!(principal["changes"]["shifts"], 1, "{principal}");
    }
    let n = expected.len() as u64;
    assert_eq!(report["changes"]["loosens"], n);
    assert_eq!(report["changes"]["shifts"], n);
    assert_eq!(
        group(&report, "by_rule", "cand.no-comment-after-read")["changes"]["shifts"],
        n
    );
    // Another server, another run: the same principals.
    let again = sessions_in_shadow(0.3).await;
    assert_eq!(keys(&again, "by_principal"), expected);
}

#[tokio::test]
async fn a_candidate_whose_rule_errors_is_counted_and_the_server_answers_as_before() {
    let dir = tempfile::tempdir().unwrap();
    // Overflows on a day-long token: an evaluation error, counted as a deny (on_error).
    let candidate = candidate(dir.path(), |pack| {
        fs::write(
            pack.join("policies/overflow.cedar"),
            "@id(\"cand.overflows\")\n@mode(\"enforce\")\n\
             forbid (principal, action == Action::\"create_token\", resource)\n\
             when { context.ttl_s * 1000000000000000 < 0 };\n",
        )
        .unwrap();
    });
    let mut server = serve(Some(candidate), 1.0).await;
    let mint = |ttl: i64| {
        request(
            "Service::\"billing-api\"",
            "create_token",
            "Service::\"ledger-api\"",
            json!({"ttl_s": ttl, "scopes": []}),
        )
    };
    for ttl in [86_400, 60, 86_400] {
        let (status, answer, _) = server.post("/v1/decide", &mint(ttl)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(answer["decision"], "allow", "{answer}");
        assert_eq!(answer["errors"], json!([]));
    }
    let report = shadowed(&server, 3).await;
    assert_eq!(report["errored"], 2, "{report:#}");
    assert_eq!(report["changes"]["breaks"], 2);
    assert_eq!(report["changes"]["same"], 1);
    assert_eq!(
        group(&report, "by_rule", "cand.overflows")["changes"]["breaks"],
        2
    );
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("arbiter_shadow_requests_total{outcome=\"errored\"} 2"),
        "{metrics}"
    );
    let (status, _, _) = server.admin(Method::GET, "/readyz", None).await;
    assert_eq!(status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn a_candidate_that_does_not_load_stops_the_start_with_its_problems() {
    let dir = tempfile::tempdir().unwrap();
    let candidate = candidate(dir.path(), |pack| {
        fs::write(pack.join("policies/broken.cedar"), "forbid (principal").unwrap();
    });
    let pack = dir.path().join("pack");
    copy_dir(&example(), &pack);
    let mut options = arbiter_server::Options::new(&pack, dir.path().join("data"));
    options.durability = Durability::Batched;
    options.candidate = Some(candidate.clone());
    let error = arbiter_server::App::start(options).await.unwrap_err();
    let text = error.to_string();
    assert!(
        text.starts_with(&format!("the candidate pack {}:", candidate.display())),
        "{text}"
    );
    assert!(text.contains("policies/broken.cedar:1:"), "{text}");
}

//! What a hostile probe of the running server found, each as a regression test named
//! after the finding (docs/security.md lists them). Every test talks HTTP to the real
//! server on a loopback port.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use arbiter_server::Durability;
use common::{ADMIN, SECOND, Server, add_pep_token, copy_dir, eventually, example};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The whole decision log, as the admin API answers it, as text.
async fn log_text(server: &Server) -> String {
    // The writer batches: give it time to land what was answered.
    let deadline = std::time::Instant::now() + 10 * SECOND;
    loop {
        let (_, page, _) = server
            .admin(Method::GET, "/v1/decisions?limit=1000", Some(ADMIN))
            .await;
        let landed = page["decisions"].as_array().is_some_and(|d| !d.is_empty());
        if landed || std::time::Instant::now() >= deadline {
            return page.to_string();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn post_raw(
    server: &Server,
    path: &str,
    content_type: &str,
    body: &str,
) -> (StatusCode, Value) {
    let response = server
        .client
        .post(format!("{}{path}", server.base))
        .header("content-type", content_type)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Finding 1 (high): an array body was decided, and its token and masked value were
/// stored in clear. Now refused, and logged by size only.
#[tokio::test]
async fn a_request_sent_as_a_json_array_is_refused_and_nothing_of_it_is_logged() {
    let server = Server::start(Durability::Sync).await;
    let array = json!(["Agent::\"ops-copilot\"", "Action::\"update_config\"",
        "Config::\"staging/billing-api\"", {"key": "db_url", "value": "SECRET-VALUE"}, null,
        "TOKEN-IN-CLEAR", null, null]);
    let (status, body, _) = server.post("/v1/decide", &array).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "malformed_request");
    let (status, body, _) = server
        .post("/v1/decide/batch", &json!({"requests": [array]}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["responses"][0]["error"]["code"], "malformed_request");
    let odd = json!({"principal": "Agent::\"ops-copilot\"", "action": "Action::\"update_config\"",
        "resource": "Config::\"staging/billing-api\"", "credential": ["TOKEN-IN-CLEAR"],
        "context": {"key": "db_url", "value": "SECRET-VALUE"}});
    let (status, _, _) = server.post("/v1/decide", &odd).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let log = log_text(&server).await;
    assert!(log.contains("unparsed_bytes"), "{log}");
    for secret in ["TOKEN-IN-CLEAR", "SECRET-VALUE", "db_url"] {
        assert!(!log.contains(secret), "{secret} reached the log: {log}");
    }
}

/// Finding 3 (medium): the 422 for a context value of the wrong type quoted the value, and
/// the stored record's `error` did too.
#[tokio::test]
async fn masked_values_never_appear_in_an_error_or_the_logged_error() {
    let server = Server::start(Durability::Sync).await;
    for value in [
        json!({"inner": "SECRET-VALUE"}),
        json!(424242),
        json!(["SECRET-VALUE"]),
    ] {
        let request = json!({"principal": "Agent::\"ops-copilot\"",
            "action": "Action::\"update_config\"", "resource": "Config::\"staging/billing-api\"",
            "context": {"key": "k", "value": value}});
        let (status, body, _) = server.post("/v1/decide", &request).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let said = body.to_string();
        assert!(said.contains("context.value"), "{said}");
        assert!(
            !said.contains("SECRET-VALUE") && !said.contains("424242"),
            "{said}"
        );
    }
    let log = log_text(&server).await;
    assert!(
        !log.contains("SECRET-VALUE") && !log.contains("424242"),
        "{log}"
    );
}

/// Finding 2 (high): a reload of a policy nested 1,000 deep killed the running server.
#[tokio::test]
async fn a_reload_with_a_deeply_nested_policy_is_refused_and_the_server_keeps_answering() {
    let server = Server::start(Durability::Batched).await;
    fs::write(
        server.pack.join("policies/deep.cedar"),
        format!(
            "@id(\"deep\")\nforbid(principal, action, resource) when {{ {}true{} }};\n",
            "(".repeat(1_000),
            ")".repeat(1_000)
        ),
    )
    .unwrap();
    let (status, body, _) = server
        .admin(Method::POST, "/v1/policy/reload", Some(ADMIN))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "invalid_pack");
    assert!(body.to_string().contains("policies/deep.cedar:2"), "{body}");
    let (status, _, _) = server.admin(Method::GET, "/healthz", None).await;
    assert_eq!(status, StatusCode::OK);
}

/// Finding 4 (medium): connections that send half a header and then nothing were held
/// forever, and enough of them stopped the server from answering.
#[tokio::test]
async fn slow_clients_are_dropped_and_cannot_stop_the_server_answering() {
    let dirs = tempfile::tempdir().unwrap();
    let pack = dirs.path().join("pack");
    copy_dir(&example(), &pack);
    let data = dirs.path().join("data");
    let server = Server::start_with(dirs, pack, data, |o| {
        o.header_read_timeout = Duration::from_secs(1);
        o.max_connections = 16;
    })
    .await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let slow: Vec<TcpStream> = (0..40)
        .filter_map(|_| {
            let mut stream = TcpStream::connect(&addr).ok()?;
            stream
                .write_all(b"POST /v1/decide HTTP/1.1\r\nHost: x\r\n")
                .ok()?;
            Some(stream)
        })
        .collect();
    assert_eq!(slow.len(), 40, "the listen backlog takes them all");
    // The server answers anyway, once the header timeout frees a slot.
    let answered = eventually(10 * SECOND, || async {
        matches!(
            server
                .client
                .get(format!("{}/healthz", server.base))
                .timeout(Duration::from_secs(2))
                .send()
                .await,
            Ok(r) if r.status() == StatusCode::OK
        )
    })
    .await;
    assert!(
        answered,
        "/healthz answered while slow clients held connections"
    );
    // And every slow connection is closed by the server.
    let addr_closed = tokio::task::spawn_blocking(move || {
        slow.into_iter().all(|mut stream| {
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut buf = [0u8; 512];
            // Closed: EOF, a reset, or a 408 followed by EOF.
            loop {
                match stream.read(&mut buf) {
                    Ok(0) => return true,
                    Ok(_) => continue,
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut =>
                    {
                        return false;
                    }
                    Err(_) => return true,
                }
            }
        })
    })
    .await
    .unwrap();
    assert!(addr_closed, "every slow connection was closed");
}

/// Finding 5 (medium): a reload of a pack whose policies were gone answered `200
/// reloaded`, and a request an enforced rule denied was then allowed.
#[tokio::test]
async fn a_reload_that_would_remove_every_enforced_control_is_refused_unless_forced() {
    let mut server = Server::start(Durability::Sync).await;
    let denied = json!({"principal": "Agent::\"support-bot\"", "action": "Action::\"read_secret\"",
        "resource": "Secret::\"prod/db\""});
    let (_, before, _) = server.post("/v1/decide", &denied).await;
    assert_eq!(before["decision"], "deny", "{before}");

    // policies/ gone: an invalid pack.
    let policies = server.pack.join("policies");
    let kept = server.pack.join("kept-policies");
    fs::rename(&policies, &kept).unwrap();
    let (status, body, _) = server
        .admin(Method::POST, "/v1/policy/reload", Some(ADMIN))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("no policy"), "{body}");

    // Only a permit, and no enforced default-deny: refused unless forced.
    fs::create_dir(&policies).unwrap();
    fs::write(
        policies.join("open.cedar"),
        "@id(\"open\")\npermit(principal, action, resource);\n",
    )
    .unwrap();
    let config = fs::read_to_string(server.pack.join("arbiter.toml")).unwrap();
    fs::write(
        server.pack.join("arbiter.toml"),
        config.replace("principal_types = { Agent = \"enforce\" }", ""),
    )
    .unwrap();
    let (status, body, _) = server
        .admin(Method::POST, "/v1/policy/reload", Some(ADMIN))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "reload_needs_force");
    let (_, still, _) = server.post("/v1/decide", &denied).await;
    assert_eq!(still["decision"], "deny", "the running pack stays: {still}");

    // Forced without a reason: refused.
    let forced = |reason: &str| {
        server
            .client
            .post(format!("{}/v1/policy/reload", server.base))
            .bearer_auth(ADMIN)
            .json(&json!({"force": true, "reason": reason}))
            .send()
    };
    assert_eq!(
        forced("  ").await.unwrap().status(),
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let response = forced("incident 42: open everything while the IdP is down")
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (_, after, _) = server.post("/v1/decide", &denied).await;
    assert_eq!(after["decision"], "allow", "{after}");
    server.stop().await;

    // Recorded like a forced demotion of each enforced control it removed.
    let store = arbiter_store::Store::open(&server.data).unwrap();
    let recorded = store.promotions(None).unwrap();
    assert!(
        recorded.iter().any(|p| p.rule == "default-deny:Agent"),
        "{recorded:?}"
    );
    assert!(recorded.iter().all(|p| {
        p.forced
            && p.verdict == "removed_by_reload"
            && p.reason
                .as_deref()
                .is_some_and(|r| r.contains("incident 42"))
    }));
}

/// Finding 6 (low): a reload that dropped `[server] pep_tokens` opened the decision
/// endpoints of a server that listens beyond loopback.
#[tokio::test]
async fn a_reload_that_drops_pep_tokens_is_refused_where_they_are_required() {
    let dirs = tempfile::tempdir().unwrap();
    let pack = dirs.path().join("pack");
    copy_dir(&example(), &pack);
    let config = add_pep_token(&pack, b"pep-secret");
    let data = dirs.path().join("data");
    let server =
        Server::start_with(dirs, pack.clone(), data, |o| o.require_pep_tokens = true).await;
    fs::write(pack.join("arbiter.toml"), &config).unwrap();
    let (status, body, _) = server
        .admin(Method::POST, "/v1/policy/reload", Some(ADMIN))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("pep_tokens"), "{body}");
    // The running pack, with its PEP tokens, stays.
    let request = json!({"principal": "Agent::\"support-bot\"",
        "action": "Action::\"read_ticket\"", "resource": "Ticket::\"T-1\""});
    let (status, _, _) = server.post("/v1/decide", &request).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// Finding 9 (low): a `text/plain` POST, which a page may send cross-site without a
/// preflight, was decided and ran its effects.
#[tokio::test]
async fn decisions_are_refused_unless_the_body_is_declared_json() {
    let server = Server::start(Durability::Sync).await;
    let request = r#"{"principal": "Agent::\"support-bot\"", "action": "Action::\"read_ticket\"", "resource": "Ticket::\"T-1\""}"#;
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ] {
        for path in ["/v1/decide", "/v1/decide/batch"] {
            let (status, body) = post_raw(&server, path, content_type, request).await;
            assert_eq!(
                status,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{path} {content_type}: {body}"
            );
            assert_eq!(body["error"]["code"], "unsupported_media_type");
        }
    }
    let (status, _) = post_raw(
        &server,
        "/v1/decide",
        "application/json; charset=utf-8",
        request,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

/// Finding 10 (low): duplicate keys were last-wins.
#[tokio::test]
async fn duplicate_keys_in_a_body_are_refused() {
    let server = Server::start(Durability::Sync).await;
    let body = r#"{"principal": "Agent::\"support-bot\"", "principal": "Agent::\"ops-copilot\"",
        "action": "Action::\"read_ticket\"", "resource": "Ticket::\"T-1\""}"#;
    let (status, answer) = post_raw(&server, "/v1/decide", "application/json", body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(answer.to_string().contains("duplicate key"), "{answer}");
}

/// Finding 15 (low): unknown query parameters were ignored on some endpoints, and
/// `/v1/token` echoed a bare JSON string body (a token) in its error.
#[tokio::test]
async fn unknown_query_parameters_are_refused_and_no_body_is_echoed() {
    let server = Server::start(Durability::Sync).await;
    for (method, path) in [
        (Method::GET, "/healthz?verbose=1"),
        (Method::GET, "/v1/policy?format=x"),
        (Method::POST, "/v1/decide?dry_run=true"),
        (Method::GET, "/v1/findings?rule=x&typo=1"),
    ] {
        let (status, body, _) = server.admin(method, path, Some(ADMIN)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["error"]["code"], "bad_query", "{path}: {body}");
    }
    let (status, body) = post_raw(
        &server,
        "/v1/token",
        "application/json",
        "\"eyJ.TOKEN-IN-CLEAR.x\"",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(!body.to_string().contains("TOKEN-IN-CLEAR"), "{body}");
    let (status, body) = post_raw(
        &server,
        "/v1/token",
        "application/json",
        r#"{"grant_type": 7, "subject_token": ["TOKEN-IN-CLEAR"], "subject_token_type": "x"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(!body.to_string().contains("TOKEN-IN-CLEAR"), "{body}");
}

/// `mcp` beside a request (an `arbiter mcp-proxy --pdp` describing its call) is kept in
/// the record; its identity is the server's to say (no credential: unverified, whatever
/// the proxy claims), and one that is not the documented shape is refused and recorded.
#[tokio::test]
async fn an_mcp_call_beside_a_request_is_recorded_and_a_malformed_one_refused() {
    let server = Server::start(Durability::Sync).await;
    let request = |mcp: Value| {
        json!({"principal": "Agent::\"support-bot\"", "action": "Action::\"read_ticket\"",
               "resource": "Ticket::\"T-1\"", "mcp": mcp})
    };
    let (status, decided, _) = server
        .post(
            "/v1/decide",
            &request(json!({"method": "tools/call", "tool": "read_ticket",
                            "upstream": "helpdesk", "identity": "verified"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{decided}");
    let id = decided["decision_id"].as_str().unwrap().to_owned();
    for bad in [
        json!("tools/call"),
        json!({"method": "tools/call"}),
        json!({"method": "tools/call", "upstream": "h", "extra": 1}),
        json!({"method": "", "upstream": "h"}),
        json!({"method": "x".repeat(2000), "upstream": "h"}),
    ] {
        let (status, body, _) = server.post("/v1/decide", &request(bad.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("`mcp`"),
            "{body}"
        );
    }
    let deadline = std::time::Instant::now() + 10 * SECOND;
    loop {
        let (_, page, _) = server
            .admin(Method::GET, "/v1/decisions?limit=1000", Some(ADMIN))
            .await;
        let decisions = page["decisions"].as_array().unwrap().clone();
        if decisions.len() >= 6 {
            let record = decisions.iter().find(|d| d["decision_id"] == id).unwrap();
            assert_eq!(
                record["mcp"],
                json!({"method": "tools/call", "tool": "read_ticket",
                       "upstream": "helpdesk", "identity": "unverified"})
            );
            let invalid = decisions
                .iter()
                .filter(|d| d["decision"] == "invalid")
                .count();
            assert_eq!(invalid, 5, "{page}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{page}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

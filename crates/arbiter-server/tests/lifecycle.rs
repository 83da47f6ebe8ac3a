//! The audit→enforce lifecycle over HTTP (DESIGN §4, §5), on the real server and the
//! example pack: findings grouped and counted as decisions come in, filtered, reviewed by
//! the admin token's name and keeping their verdict when they fire again; readiness of
//! every rule and scope not enforced; and a frozen baseline that marks first-seen pairs
//! `novel` in the decision log once the server has picked it up.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

use std::cell::RefCell;
use std::collections::BTreeSet;

use arbiter_server::Durability;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

mod common;
use common::*;

// ------------------------------------------------------------------ the requests

/// A day-long token: allowed (a permit matches), `tokens.long-ttl` audits a deny.
fn long_ttl() -> Value {
    json!({"principal": "Service::\"billing-api\"", "action": "Action::\"create_token\"",
           "resource": "Service::\"ledger-api\"",
           "context": {"ttl_s": 86400, "scopes": ["ledger:write"]}})
}

/// An agent reaching for a prod secret: `default-deny:Agent` (enforced) denies, and
/// `secrets.agents-never-read-prod` audits a revoke that would not have changed anything.
fn agent_prod_secret() -> Value {
    json!({"principal": "Agent::\"support-bot\"", "action": "Action::\"read_secret\"",
           "resource": "Secret::\"prod/stripe-key\""})
}

/// A link in an agent's comment: allowed with the `agent.no-links-in-comments` warning.
fn comment_with_link() -> Value {
    json!({"principal": "Agent::\"support-bot\"", "action": "Action::\"comment_ticket\"",
           "resource": "Ticket::\"T-1\"",
           "context": {"body": "see https://login.example.com/reset"}})
}

/// A PR job deploying to staging: no permit, `default-deny:CiJob` (audit) would deny.
fn pr_deploy() -> Value {
    json!({"principal": "CiJob::\"pr-checks\"", "action": "Action::\"deploy\"",
           "resource": "Service::\"billing-api-staging\"", "context": {"version": "pr-1"}})
}

/// A CI fetch from an unapproved endpoint: allowed (CI may GET anywhere), and
/// `egress.unapproved-endpoint` audits a deny.
fn ci_fetch_unapproved() -> Value {
    json!({"principal": "CiJob::\"pr-checks\"", "action": "Action::\"http_request\"",
           "resource": "Endpoint::\"pastebin.com\"",
           "context": {"method": "GET", "path": "/raw/x"}})
}

/// A plain allowed request no rule fires on.
fn read_ticket() -> Value {
    json!({"principal": "Agent::\"support-bot\"", "action": "Action::\"read_ticket\"",
           "resource": "Ticket::\"T-1\""})
}

// --------------------------------------------------------------------- helpers

/// Decides `request` and returns the answer; it must be a decision.
async fn decide(server: &Server, request: &Value) -> Value {
    let (status, body, _) = server.post("/v1/decide", request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// `GET path` with the admin token; the status must be 200.
async fn get(server: &Server, path: &str) -> Value {
    let (status, body, _) = server.admin(Method::GET, path, Some(ADMIN)).await;
    assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
    body
}

/// The findings `GET /v1/findings{query}` lists.
async fn findings(server: &Server, query: &str) -> Vec<Value> {
    get(server, &format!("/v1/findings{query}")).await["findings"]
        .as_array()
        .expect("`findings` is a list")
        .clone()
}

/// The one finding of `rule`.
async fn finding_of(server: &Server, rule: &str) -> Value {
    let found = findings(server, &format!("?rule={rule}")).await;
    assert_eq!(found.len(), 1, "one finding of {rule}: {found:?}");
    found[0].clone()
}

/// Waits (bounded) until `GET /v1/findings` lists `n` findings whose counts add up to
/// `firings`: the log writer commits findings with the decisions, in batches.
async fn wait_for_findings(server: &Server, n: usize, firings: u64) -> Vec<Value> {
    let last = RefCell::new(Vec::new());
    let held = eventually(SECOND, || async {
        let found = findings(server, "").await;
        let total: u64 = found.iter().map(|f| f["count"].as_u64().unwrap()).sum();
        let done = found.len() == n && total == firings;
        *last.borrow_mut() = found;
        done
    })
    .await;
    let last = last.into_inner();
    assert!(
        held,
        "{n} findings with {firings} firings in all: {last:#?}"
    );
    last
}

/// `POST /v1/findings/{id}/review` with `body` and `token`.
async fn review(
    server: &Server,
    id: &str,
    token: Option<&str>,
    body: &Value,
) -> (StatusCode, Value) {
    let mut request = server
        .client
        .post(format!("{}/v1/findings/{id}/review", server.base))
        .json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Readiness of every rule and scope, by rule.
async fn readiness(server: &Server, query: &str) -> Vec<Value> {
    get(server, &format!("/v1/readiness{query}")).await["readiness"]
        .as_array()
        .expect("`readiness` is a list")
        .clone()
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

// ----------------------------------------------------------------------- findings

#[tokio::test]
async fn findings_are_grouped_by_rule_principal_action_resource_and_counted() {
    let mut server = Server::start(Durability::Batched).await;
    for _ in 0..3 {
        decide(&server, &long_ttl()).await;
    }
    for _ in 0..2 {
        decide(&server, &agent_prod_secret()).await;
    }
    decide(&server, &comment_with_link()).await;
    decide(&server, &pr_deploy()).await;
    decide(&server, &ci_fetch_unapproved()).await;
    decide(&server, &read_ticket()).await;

    let all = wait_for_findings(&server, 5, 8).await;
    let shape: BTreeSet<&str> = [
        "id",
        "rule",
        "mode",
        "would",
        "principal",
        "action",
        "resource",
        "count",
        "decisive",
        "first_seen",
        "last_seen",
        "status",
        "review",
    ]
    .into();
    for f in &all {
        assert_eq!(keys(f), shape, "DESIGN §4's shape: {f}");
        assert_eq!(f["status"], "open");
        assert_eq!(f["review"], Value::Null);
        let first: jiff::Timestamp = f["first_seen"].as_str().unwrap().parse().unwrap();
        let last: jiff::Timestamp = f["last_seen"].as_str().unwrap().parse().unwrap();
        assert!(first <= last, "{f}");
    }

    let long = finding_of(&server, "tokens.long-ttl").await;
    assert_eq!(
        (&long["mode"], &long["would"]),
        (&json!("audit"), &json!("deny"))
    );
    assert_eq!(long["principal"], "Service::\"billing-api\"");
    assert_eq!(long["action"], "Action::\"create_token\"");
    assert_eq!(long["resource"], "Service::\"ledger-api\"");
    assert_eq!((&long["count"], &long["decisive"]), (&json!(3), &json!(3)));
    assert!(
        long["first_seen"] != long["last_seen"],
        "three firings: {long}"
    );

    // Something else (the enforced default-deny scope) already denied: not decisive.
    let prod = finding_of(&server, "secrets.agents-never-read-prod").await;
    assert_eq!(
        (&prod["mode"], &prod["would"]),
        (&json!("audit"), &json!("revoke"))
    );
    assert_eq!((&prod["count"], &prod["decisive"]), (&json!(2), &json!(0)));

    let link = finding_of(&server, "agent.no-links-in-comments").await;
    assert_eq!(
        (&link["mode"], &link["would"]),
        (&json!("warn"), &json!("deny"))
    );
    assert_eq!((&link["count"], &link["decisive"]), (&json!(1), &json!(1)));

    // The default-deny scope in audit is a finding like a rule.
    let scope = finding_of(&server, "default-deny:CiJob").await;
    assert_eq!(
        (&scope["mode"], &scope["would"]),
        (&json!("audit"), &json!("deny"))
    );
    assert_eq!(scope["principal"], "CiJob::\"pr-checks\"");
    assert_eq!(scope["action"], "Action::\"deploy\"");
    assert_eq!(
        (&scope["count"], &scope["decisive"]),
        (&json!(1), &json!(1))
    );

    // Enforced rules make no findings, and neither does a quiet request.
    for f in &all {
        assert_ne!(f["rule"], "default-deny:Agent");
        assert_ne!(f["action"], "Action::\"read_ticket\"");
    }
    // The most recently seen first.
    let seen: Vec<&str> = all
        .iter()
        .map(|f| f["last_seen"].as_str().unwrap())
        .collect();
    let mut sorted: Vec<jiff::Timestamp> = seen.iter().map(|t| t.parse().unwrap()).collect();
    sorted.sort_by(|a, b| b.cmp(a));
    let newest_first: Vec<jiff::Timestamp> = seen.iter().map(|t| t.parse().unwrap()).collect();
    assert_eq!(newest_first, sorted);
    server.stop().await;
}

#[tokio::test]
async fn findings_are_filtered_by_rule_status_and_principal() {
    let mut server = Server::start(Durability::Sync).await;
    decide(&server, &long_ttl()).await;
    decide(&server, &agent_prod_secret()).await;
    decide(&server, &comment_with_link()).await;
    decide(&server, &pr_deploy()).await;
    decide(&server, &ci_fetch_unapproved()).await;
    wait_for_findings(&server, 5, 5).await;

    let rules = |found: &[Value]| -> BTreeSet<String> {
        found
            .iter()
            .map(|f| f["rule"].as_str().unwrap().to_owned())
            .collect()
    };
    let by_rule = findings(&server, "?rule=egress.unapproved-endpoint").await;
    assert_eq!(
        rules(&by_rule),
        ["egress.unapproved-endpoint".to_owned()].into()
    );
    let by_principal = findings(&server, "?principal=CiJob::%22pr-checks%22").await;
    assert_eq!(
        rules(&by_principal),
        [
            "default-deny:CiJob".to_owned(),
            "egress.unapproved-endpoint".to_owned()
        ]
        .into()
    );
    let both = findings(
        &server,
        "?principal=CiJob::%22pr-checks%22&rule=default-deny:CiJob",
    )
    .await;
    assert_eq!(rules(&both), ["default-deny:CiJob".to_owned()].into());
    assert!(findings(&server, "?rule=no.such-rule").await.is_empty());
    assert_eq!(findings(&server, "?limit=2").await.len(), 2);

    let link = finding_of(&server, "agent.no-links-in-comments").await;
    let (status, _) = review(
        &server,
        link["id"].as_str().unwrap(),
        Some(ADMIN),
        &json!({"verdict": "legitimate", "note": "support links to the reset page"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let open = findings(&server, "?status=open").await;
    assert_eq!(open.len(), 4);
    assert!(!rules(&open).contains("agent.no-links-in-comments"));
    let legitimate = findings(&server, "?status=legitimate").await;
    assert_eq!(
        rules(&legitimate),
        ["agent.no-links-in-comments".to_owned()].into()
    );
    assert!(findings(&server, "?status=expected").await.is_empty());

    for bad in ["?status=closed", "?limit=0", "?limit=many", "?colour=red"] {
        let (status, body, _) = server
            .admin(Method::GET, &format!("/v1/findings{bad}"), Some(ADMIN))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(error_code(&body), "bad_query", "{bad}: {body}");
    }
    server.stop().await;
}

// ------------------------------------------------------------------------ reviews

#[tokio::test]
async fn a_review_records_the_admin_token_name_and_survives_new_firings() {
    let mut server = Server::start(Durability::Sync).await;
    decide(&server, &long_ttl()).await;
    decide(&server, &long_ttl()).await;
    let before = finding_of(&server, "tokens.long-ttl").await;
    let id = before["id"].as_str().unwrap();

    let (status, reviewed) = review(
        &server,
        id,
        Some(ADMIN),
        &json!({"verdict": "expected", "note": "day-long tokens must go"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{reviewed}");
    assert_eq!(reviewed["id"], before["id"]);
    assert_eq!(reviewed["status"], "expected");
    assert_eq!(reviewed["count"], 2);
    let r = &reviewed["review"];
    assert_eq!(
        keys(r),
        ["at", "by", "note", "verdict"].into(),
        "DESIGN §4's review: {r}"
    );
    assert_eq!(r["verdict"], "expected");
    assert_eq!(r["by"], "admin", "who reviewed is the admin token's name");
    assert_eq!(r["note"], "day-long tokens must go");
    let at: jiff::Timestamp = r["at"].as_str().unwrap().parse().unwrap();
    assert!(at >= before["last_seen"].as_str().unwrap().parse().unwrap());
    // It is stored, not only answered.
    assert_eq!(finding_of(&server, "tokens.long-ttl").await, reviewed);

    // The finding fires again: the verdict stays and the count grows.
    decide(&server, &long_ttl()).await;
    let after = finding_of(&server, "tokens.long-ttl").await;
    assert_eq!(after["status"], "expected");
    assert_eq!(after["review"], reviewed["review"]);
    assert_eq!(
        (&after["count"], &after["decisive"]),
        (&json!(3), &json!(3))
    );
    assert!(
        after["last_seen"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap()
            > before["last_seen"].as_str().unwrap().parse().unwrap()
    );

    // A later review supersedes the earlier one.
    let (status, again) = review(
        &server,
        id,
        Some(ADMIN),
        &json!({"verdict": "legitimate", "note": "the ledger batch needs them"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(again["status"], "legitimate");
    assert_eq!(again["review"]["note"], "the ledger batch needs them");
    server.stop().await;
}

#[tokio::test]
async fn bad_reviews_are_refused() {
    let mut server = Server::start(Durability::Sync).await;
    decide(&server, &long_ttl()).await;
    let finding = finding_of(&server, "tokens.long-ttl").await;
    let id = finding["id"].as_str().unwrap();

    let (status, body) = review(
        &server,
        "f0000000000000000",
        Some(ADMIN),
        &json!({"verdict": "expected", "note": "n"}),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(error_code(&body), "not_found");

    for (body, want, code) in [
        (
            json!({"verdict": "approve", "note": "n"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            json!({"verdict": "expected", "note": "  "}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            json!({"verdict": "expected"}),
            StatusCode::BAD_REQUEST,
            "malformed_request",
        ),
        (
            json!({"verdict": "expected", "note": "n", "by": "mallory"}),
            StatusCode::BAD_REQUEST,
            "malformed_request",
        ),
    ] {
        let (status, answer) = review(&server, id, Some(ADMIN), &body).await;
        assert_eq!(status, want, "{body}: {answer}");
        assert_eq!(error_code(&answer), code, "{body}: {answer}");
    }
    // None of them was recorded.
    let unchanged = finding_of(&server, "tokens.long-ttl").await;
    assert_eq!(unchanged["status"], "open");
    assert_eq!(unchanged["review"], Value::Null);
    server.stop().await;
}

#[tokio::test]
async fn the_lifecycle_endpoints_need_the_admin_token() {
    let mut server = Server::start(Durability::Sync).await;
    decide(&server, &long_ttl()).await;
    let id = finding_of(&server, "tokens.long-ttl").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = json!({"verdict": "expected", "note": "n"});
    for token in [None, Some("wrong-token")] {
        for path in ["/v1/findings", "/v1/readiness", "/v1/chains"] {
            let (status, answer, headers) = server.admin(Method::GET, path, token).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} {token:?}");
            assert_eq!(error_code(&answer), "unauthorized", "{answer}");
            assert!(
                headers.get("www-authenticate").is_some(),
                "{path} {token:?}: WWW-Authenticate"
            );
        }
        let (status, answer) = review(&server, &id, token, &body).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "review {token:?}: {answer}"
        );
        // An unknown finding is not revealed to a caller without the token either.
        let (status, _) = review(&server, "f0000000000000000", token, &body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    // The refused reviews were not recorded.
    assert_eq!(
        finding_of(&server, "tokens.long-ttl").await["status"],
        "open"
    );
    server.stop().await;
}

// ---------------------------------------------------------------------- readiness

/// The rules and scopes of the example pack that are not enforced.
const NOT_ENFORCED: [&str; 7] = [
    "agent.no-links-in-comments",
    "changes.prod-outside-hours",
    "default-deny:CiJob",
    "default-deny:Service",
    "egress.unapproved-endpoint",
    "secrets.agents-never-read-prod",
    "tokens.long-ttl",
];

#[tokio::test]
async fn readiness_lists_every_rule_and_scope_not_enforced() {
    let mut server = Server::start(Durability::Sync).await;
    let all = readiness(&server, "").await;
    let listed: BTreeSet<&str> = all.iter().map(|r| r["rule"].as_str().unwrap()).collect();
    assert_eq!(
        listed,
        NOT_ENFORCED.into(),
        "enforced rules and permits are not listed"
    );
    assert_eq!(all.len(), NOT_ENFORCED.len(), "each once");
    for r in &all {
        assert_eq!(
            keys(r),
            ["evidence", "mode", "overdue", "reasons", "rule", "verdict"].into(),
            "{r}"
        );
        // A fresh server: no time in mode yet, no traffic.
        assert_eq!(r["verdict"], "insufficient_evidence", "{r}");
        assert!(r["overdue"].is_boolean(), "{r}");
        assert!(!r["reasons"].as_array().unwrap().is_empty(), "{r}");
        assert!(
            r["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .all(Value::is_string)
        );
        let e = &r["evidence"];
        for key in [
            "days_in_mode",
            "evaluations",
            "days_with_traffic",
            "would_fire",
            "distinct_principals",
            "open_findings",
            "expected_findings",
            "legitimate_findings",
            "errors",
        ] {
            assert!(e[key].is_u64() || e[key].is_i64(), "evidence.{key}: {r}");
        }
        assert_eq!(e["days_in_mode"], 0, "{r}");
        assert_eq!(e["evaluations"], 0, "{r}");
    }
    let mode = |rule: &str| {
        all.iter()
            .find(|r| r["rule"] == rule)
            .map(|r| r["mode"].clone())
            .unwrap()
    };
    assert_eq!(mode("agent.no-links-in-comments"), "warn");
    assert_eq!(mode("tokens.long-ttl"), "audit");
    assert_eq!(mode("default-deny:CiJob"), "audit");

    // The filter: one rule, one scope, or nothing for a rule that is not listed.
    let one = readiness(&server, "?rule=tokens.long-ttl").await;
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["rule"], "tokens.long-ttl");
    let scope = readiness(&server, "?rule=default-deny:CiJob").await;
    assert_eq!(scope.len(), 1);
    assert_eq!(scope[0]["rule"], "default-deny:CiJob");
    assert!(
        readiness(&server, "?rule=secrets.no-prod-from-pr-jobs")
            .await
            .is_empty(),
        "an enforced rule has no readiness"
    );
    let (status, body, _) = server
        .admin(Method::GET, "/v1/readiness?colour=red", Some(ADMIN))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_code(&body), "bad_query");
    let (status, body, _) = server
        .admin(Method::GET, "/v1/readiness?rule=no.such.rule", Some(ADMIN))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(error_code(&body), "not_found");
    server.stop().await;
}

#[tokio::test]
async fn an_open_finding_makes_a_rule_need_review_and_a_legitimate_one_noisy() {
    let mut server = Server::start(Durability::Batched).await;
    decide(&server, &long_ttl()).await;
    decide(&server, &pr_deploy()).await;
    wait_for_findings(&server, 2, 2).await;

    let verdict_of = |all: &[Value], rule: &str| -> Value {
        all.iter().find(|r| r["rule"] == rule).unwrap().clone()
    };
    let all = readiness(&server, "").await;
    let long = verdict_of(&all, "tokens.long-ttl");
    assert_eq!(long["verdict"], "needs_review", "{long}");
    assert_eq!(long["evidence"]["open_findings"], 1, "{long}");
    assert_eq!(long["evidence"]["would_fire"], 1, "{long}");
    assert_eq!(long["evidence"]["evaluations"], 1, "{long}");
    assert_eq!(long["evidence"]["distinct_principals"], 1, "{long}");
    assert!(
        long["reasons"].as_array().unwrap().len() >= 2,
        "unreviewed findings, and too little time in audit: {long}"
    );
    let scope = verdict_of(&all, "default-deny:CiJob");
    assert_eq!(scope["verdict"], "needs_review", "{scope}");
    assert_eq!(scope["evidence"]["open_findings"], 1, "{scope}");
    // Rules that did not fire are still short of evidence.
    assert_eq!(
        verdict_of(&all, "egress.unapproved-endpoint")["verdict"],
        "insufficient_evidence"
    );

    // Reviewed expected: nothing left to review, but still too new.
    let id = finding_of(&server, "tokens.long-ttl").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = review(
        &server,
        &id,
        Some(ADMIN),
        &json!({"verdict": "expected", "note": "right"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let long = readiness(&server, "?rule=tokens.long-ttl").await.remove(0);
    assert_eq!(long["verdict"], "insufficient_evidence", "{long}");
    assert_eq!(long["evidence"]["expected_findings"], 1, "{long}");
    assert_eq!(long["evidence"]["open_findings"], 0, "{long}");

    // Reviewed legitimate: enforcing it would break needed work.
    let (status, _) = review(
        &server,
        &id,
        Some(ADMIN),
        &json!({"verdict": "legitimate", "note": "needed after all"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let long = readiness(&server, "?rule=tokens.long-ttl").await.remove(0);
    assert_eq!(long["verdict"], "noisy", "{long}");
    assert_eq!(long["evidence"]["legitimate_findings"], 1, "{long}");
    server.stop().await;
}

// ----------------------------------------------------------------------- baseline

/// The logged record of the decision `id` (sync durability: it is in the log already).
async fn record(server: &Server, id: &str) -> Value {
    let page = get(server, "/v1/decisions?limit=1000").await;
    page["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["decision_id"] == id)
        .unwrap_or_else(|| panic!("decision {id} is logged"))
        .clone()
}

/// Decides `request` and returns its logged record.
async fn decide_and_record(server: &Server, request: &Value) -> Value {
    let answer = decide(server, request).await;
    record(server, answer["decision_id"].as_str().unwrap()).await
}

#[tokio::test]
async fn a_frozen_baseline_marks_first_seen_pairs_novel_in_the_log() {
    let mut server = Server::start(Durability::Sync).await;
    let before = decide_and_record(&server, &read_ticket()).await;
    assert_eq!(before["decision"], "allow");
    assert!(
        before.get("novel").is_none(),
        "nothing is novel before a freeze: {before}"
    );
    decide(&server, &long_ttl()).await;

    // A freeze made by another process (the CLI) on the server's data directory.
    let store = arbiter_store::Store::open(&server.data).unwrap();
    let (_, pairs) = store
        .freeze_baseline(
            "test",
            None,
            arbiter_core::clock::Clock::now(&arbiter_core::clock::SystemClock),
        )
        .unwrap();
    assert_eq!(
        pairs, 2,
        "(support-bot, read_ticket) and (billing-api, create_token)"
    );

    // The server polls for it: a pair in the baseline is soon logged `novel: false`.
    let last = RefCell::new(Value::Null);
    let picked_up = eventually(2 * SECOND, || async {
        let logged = decide_and_record(&server, &read_ticket()).await;
        let known = logged.get("novel") == Some(&json!(false));
        *last.borrow_mut() = logged;
        known
    })
    .await;
    assert!(picked_up, "the freeze is picked up: {}", last.borrow());

    // A pair never seen is novel the first time it is allowed, and known after.
    let comment = json!({"principal": "Agent::\"support-bot\"",
        "action": "Action::\"comment_ticket\"", "resource": "Ticket::\"T-2\"",
        "context": {"body": "on it"}});
    let first = decide_and_record(&server, &comment).await;
    assert_eq!(first["decision"], "allow");
    assert_eq!(first["novel"], true, "{first}");
    let second = decide_and_record(&server, &comment).await;
    assert_eq!(second["novel"], false, "{second}");
    // The pair is kept in the store (off the decision path), so it is not novel again
    // after a restart.
    let pair = (
        "Agent::\"support-bot\"".to_owned(),
        "Action::\"comment_ticket\"".to_owned(),
    );
    let stored = eventually(SECOND, || async {
        store.baseline_pairs().unwrap().unwrap().contains(&pair)
    })
    .await;
    assert!(
        stored,
        "the first-seen pair is added to the stored baseline"
    );

    // A denied first-seen pair stays novel: it was never done.
    let denied = json!({"principal": "Agent::\"support-bot\"",
        "action": "Action::\"update_config\"", "resource": "Config::\"staging/billing-api\"",
        "context": {"key": "k", "value": "v"}});
    for _ in 0..2 {
        let logged = decide_and_record(&server, &denied).await;
        assert_eq!(logged["decision"], "deny");
        assert_eq!(logged["novel"], true, "{logged}");
    }
    // The principal's other pair in the baseline is not novel.
    let known = decide_and_record(&server, &long_ttl()).await;
    assert_eq!(known["novel"], false, "{known}");
    server.stop().await;
}

#[tokio::test]
async fn recording_a_first_seen_pair_does_not_hold_up_the_decision() {
    let mut server = Server::start(Durability::Batched).await;
    decide(&server, &read_ticket()).await;
    let store = arbiter_store::Store::open(&server.data).unwrap();
    // Wait for the decision to be logged, then freeze it as the baseline.
    let logged = eventually(SECOND, || async {
        !get(&server, "/v1/decisions").await["decisions"]
            .as_array()
            .unwrap()
            .is_empty()
    })
    .await;
    assert!(logged);
    store
        .freeze_baseline(
            "test",
            None,
            arbiter_core::clock::Clock::now(&arbiter_core::clock::SystemClock),
        )
        .unwrap();
    let picked_up = eventually(2 * SECOND, || async {
        decide(&server, &read_ticket()).await;
        get(&server, "/v1/decisions?limit=1000").await["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d.get("novel") == Some(&json!(false)))
    })
    .await;
    assert!(picked_up, "the freeze is picked up");

    // Another process holds the database's write lock (a CLI freeze, a long review):
    // a first-seen pair must still be answered at once, its write waiting elsewhere.
    let db = server.data.join(arbiter_store::DB_FILE);
    let locker = rusqlite::Connection::open(&db).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let comment = json!({"principal": "Agent::\"support-bot\"",
        "action": "Action::\"comment_ticket\"", "resource": "Ticket::\"T-2\"",
        "context": {"body": "on it"}});
    let started = std::time::Instant::now();
    let answer = decide(&server, &comment).await;
    let took = started.elapsed();
    locker.execute_batch("COMMIT").unwrap();
    assert_eq!(answer["decision"], "allow");
    assert!(
        took < SECOND,
        "the decision waited {took:?} for the baseline write (SQLite's busy timeout is 5 s)"
    );
    let pair = (
        "Agent::\"support-bot\"".to_owned(),
        "Action::\"comment_ticket\"".to_owned(),
    );
    let stored = eventually(2 * SECOND, || async {
        store.baseline_pairs().unwrap().unwrap().contains(&pair)
    })
    .await;
    assert!(stored, "the pair is stored once the lock is released");
    server.stop().await;
}

// ------------------------------------------------------------------------- chains

#[tokio::test]
async fn chains_show_each_identitys_steps_with_the_traffic_of_the_window() {
    let server = Server::start(Durability::Sync).await;
    for _ in 0..2 {
        decide(&server, &long_ttl()).await;
    }
    let principal = long_ttl()["principal"].as_str().unwrap().to_owned();
    let found = get(&server, "/v1/chains?chain=secret-exposure").await;
    let chain = &found["chains"][0];
    assert_eq!(chain["name"], "secret-exposure", "{found}");
    assert_eq!(
        chain["steps"],
        json!(["secret_read", "token_create", "config_change", "egress"])
    );
    let identity = chain["identities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["principal"] == principal.as_str())
        .unwrap_or_else(|| panic!("{principal} in {found}"));
    let token_create = &identity["steps"][1];
    assert_eq!(token_create["step"], "token_create");
    assert_eq!(token_create["traffic"]["requests"], 2, "{identity}");
    let level = identity["level"].as_str().unwrap();
    assert!(
        [
            "uncontrolled",
            "audited",
            "warned",
            "partially-enforced",
            "enforced"
        ]
        .contains(&level),
        "{identity}"
    );
    for (query, status, code) in [
        ("?chain=no-such-chain", StatusCode::NOT_FOUND, "not_found"),
        (
            "?principal=not%20a%20uid",
            StatusCode::BAD_REQUEST,
            "bad_query",
        ),
        ("?window=forever", StatusCode::BAD_REQUEST, "bad_query"),
        ("?colour=red", StatusCode::BAD_REQUEST, "bad_query"),
    ] {
        let (got, body, _) = server
            .admin(Method::GET, &format!("/v1/chains{query}"), Some(ADMIN))
            .await;
        assert_eq!(got, status, "{query}: {body}");
        assert_eq!(error_code(&body), code, "{query}: {body}");
    }
}

//! The proxy against a fake MCP server written here, over in-memory pipes: what reaches
//! the server, what the agent is answered, and what the decision log keeps, for allowed,
//! denied, throttled and revoked calls and for every kind of bad input either side can
//! send. Every wait is bounded (10 s); nothing sleeps.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

use std::collections::BTreeMap;
use std::time::Duration;

use arbiter_core::clock::{Clock, SystemClock};
use arbiter_core::credential::Revoked;
mod common;

use arbiter_mcp::{Ended, Who};
use arbiter_store::{Revocation, Store};
use common::{DEADLINE, Session};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

/// Small, so that an oversized message is cheap to make.
const MAX_MESSAGE: usize = 4096;

const SCHEMA: &str = r#"
entity Agent;
entity Tool;
entity Url;
action "echo", "get-env" appliesTo {
    principal: [Agent], resource: [Tool], context: { args?: { message?: String } } };
action "fetch" appliesTo { principal: [Agent], resource: [Url] };
action "burst", "self-destruct" appliesTo { principal: [Agent], resource: [Tool] };
"#;

const POLICIES: &str = r#"
@id("agents.may-use-tools")
permit(principal is Agent, action, resource);

@id("mcp.no-env")
@mode("enforce")
@reason("Reading the environment can expose secrets")
forbid(principal, action == Action::"get-env", resource);

@id("mcp.burst-limit")
@mode("enforce")
@effect("throttle")
@limit("1/1h")
@reason("One burst an hour")
forbid(principal, action == Action::"burst", resource);

@id("mcp.self-destruct")
@mode("enforce")
@effect("revoke")
@reason("Nobody self-destructs")
forbid(principal, action == Action::"self-destruct", resource);
"#;

const CONFIG: &str = r#"
[mcp.tools.echo]
args = { message = "context.args.message" }

[mcp.tools.fetch]
resource = { type = "Url", arg = "url" }

[log]
mask = ["context.args.message"]
"#;

/// One MCP session through the proxy: the agent's end, the fake server's end, the pump.
fn write_pack() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/mcp.cedar"), POLICIES).unwrap();
    std::fs::write(dir.path().join("schema.cedarschema"), SCHEMA).unwrap();
    std::fs::write(dir.path().join("arbiter.toml"), CONFIG).unwrap();
    dir
}

/// A session as `Agent::"dev"`, the configured principal.
async fn start() -> Session {
    start_as(|_| Who::Principal(r#"Agent::"dev""#.to_owned())).await
}

/// A session whose caller is made from the data directory (to mint a token in it).
async fn start_as(who: impl FnOnce(&std::path::Path) -> Who) -> Session {
    Session::start(write_pack(), who, MAX_MESSAGE).await
}

fn call(id: u64, tool: &str, arguments: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": tool, "arguments": arguments}})
    .to_string()
}

fn text_of(result: &Value) -> &str {
    result["content"][0]["text"].as_str().unwrap()
}

#[tokio::test]
async fn an_allowed_call_reaches_the_server_byte_for_byte_and_its_answer_comes_back() {
    let mut s = start().await;
    // Spacing, key order and a field no MCP revision has: all kept.
    let request = r#"{ "params": {"name":"echo", "arguments": {"message": "hi"}, "x-later": [1, 2.50]}, "method":"tools/call","id":1,"jsonrpc":"2.0" }"#;
    s.send(request).await;
    assert_eq!(s.server_reads().await, request);
    let response = r#"{"result":{"content":[{"type":"text","text":"Echo: hi"}]},"jsonrpc":"2.0","id":1,"x-extra":true}"#;
    s.server_says(response).await;
    assert_eq!(s.answer_line().await, response);

    let (ended, decisions, _) = s.finish().await;
    assert_eq!(ended, Ended::ClientClosed);
    let [allowed] = decisions.as_slice() else {
        panic!("{decisions:#?}")
    };
    assert_eq!(allowed.decision.as_str(), "allow");
    assert_eq!(allowed.action.as_deref(), Some(r#"Action::"echo""#));
    // `[log] mask` applies to the arguments the mapping copied into the context, and to
    // the same arguments in the record of the call.
    let logged = allowed.request["context"]["args"]["message"]
        .as_str()
        .unwrap();
    assert!(logged.starts_with("hmac-sha256:"), "{logged}");
    let mcp = serde_json::to_value(allowed.mcp.as_ref().unwrap()).unwrap();
    assert_eq!(
        mcp,
        json!({"method": "tools/call", "tool": "echo", "upstream": "fake",
               "identity": "unverified", "arguments": {"message": logged}})
    );
    assert!(allowed.session.as_deref().unwrap().starts_with("mcp-"));
}

#[tokio::test]
async fn a_denied_call_is_answered_with_the_rule_and_never_reaches_the_server() {
    let mut s = start().await;
    s.send(&call(2, "get-env", json!({}))).await;
    let answer = s.answer().await;
    assert_eq!(answer["id"], 2);
    let result = &answer["result"];
    assert_eq!(result["isError"], true);
    let text = text_of(result);
    assert!(text.contains("rule `mcp.no-env`"), "{text}");
    assert!(
        text.contains("Reading the environment can expose secrets"),
        "{text}"
    );
    let meta = &result["_meta"]["arbiter/decision"];
    assert_eq!(meta["rules"], json!(["mcp.no-env"]));
    assert_eq!(meta["effect"], "deny");
    // The next thing the server hears is what came after: the call never went there.
    s.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
        .await;
    assert_eq!(
        s.server_reads().await,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#
    );

    let (_, decisions, _) = s.finish().await;
    let [denied] = decisions.as_slice() else {
        panic!("{decisions:#?}")
    };
    assert_eq!(denied.decision.as_str(), "deny");
    assert_eq!(denied.decision_id, meta["decision_id"].as_str().unwrap());
    assert_eq!(
        denied.mcp.as_ref().unwrap().tool.as_deref(),
        Some("get-env")
    );
}

#[tokio::test]
async fn a_throttled_call_says_when_to_retry() {
    let mut s = start().await;
    s.send(&call(1, "burst", json!({}))).await;
    s.server_reads().await;
    s.server_says(r#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#)
        .await;
    assert_eq!(s.answer().await["id"], 1);
    s.send(&call(2, "burst", json!({}))).await;
    let answer = s.answer().await;
    let result = &answer["result"];
    assert_eq!(result["isError"], true);
    let meta = &result["_meta"]["arbiter/decision"];
    assert_eq!(meta["effect"], "throttle");
    let retry = meta["retry_after_s"].as_u64().unwrap();
    assert!(retry >= 1, "{meta}");
    let text = text_of(result);
    assert!(text.contains("throttled"), "{text}");
    assert!(text.contains(&format!("retry after {retry} s")), "{text}");
    assert!(
        text.contains("rule `mcp.burst-limit`: One burst an hour"),
        "{text}"
    );
}

#[tokio::test]
async fn a_revoke_ends_the_session_answers_what_was_waiting_and_is_made_durable() {
    let mut s = start().await;
    s.send(&call(10, "echo", json!({"message": "slow"}))).await;
    s.server_reads().await;
    // The server has not answered call 10 when call 11 ends the session.
    s.send(&call(11, "self-destruct", json!({}))).await;
    let revoked = s.answer().await;
    assert_eq!(revoked["id"], 11);
    let text = text_of(&revoked["result"]);
    assert!(text.contains("revoked the credential"), "{text}");
    assert!(text.contains("this session is ended"), "{text}");
    let waiting = s.answer().await;
    assert_eq!(waiting["id"], 10);
    assert_eq!(waiting["error"]["code"], -32603);

    let (ended, decisions, store) = s.finish().await;
    assert_eq!(ended, Ended::Revoked);
    assert_eq!(decisions.last().unwrap().effect.unwrap().as_str(), "revoke");
    let session = decisions.last().unwrap().session.clone().unwrap();
    let revocations = store.revocations_since(0).unwrap();
    assert!(
        revocations.iter().any(|r| r.revoked()
            == Revoked::Session {
                principal: Some(r#"Agent::"dev""#.to_owned()),
                id: session.clone()
            }),
        "{revocations:#?}"
    );
}

#[tokio::test]
async fn malformed_oversized_and_batched_messages_are_answered_and_never_forwarded() {
    let mut s = start().await;
    s.send("not json").await;
    let answer = s.answer().await;
    assert_eq!(answer["id"], Value::Null);
    assert_eq!(answer["error"]["code"], -32700);

    s.send(&call(
        3,
        "echo",
        json!({"message": "x".repeat(MAX_MESSAGE)}),
    ))
    .await;
    let answer = s.answer().await;
    assert_eq!(answer["error"]["code"], -32600);
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("larger than 4096 bytes"), "{message}");

    // A batch could carry a call past the gate: it is refused whole.
    s.send(&format!("[{}]", call(4, "get-env", json!({}))))
        .await;
    let answer = s.answer().await;
    assert_eq!(answer["error"]["code"], -32600);
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("batch")
    );

    // The proxy must decide on what the server would read: a key twice is refused.
    s.send(r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"echo","name":"get-env"}}"#)
        .await;
    assert_eq!(s.answer().await["error"]["code"], -32700);

    s.send(r#"{"jsonrpc":"1.0","id":6,"method":"ping"}"#).await;
    let answer = s.answer().await;
    assert_eq!(answer["id"], 6);
    assert_eq!(answer["error"]["code"], -32600);

    s.send(r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"arguments":{}}}"#)
        .await;
    let answer = s.answer().await;
    assert_eq!(answer["id"], 7);
    assert_eq!(answer["error"]["code"], -32602);

    // None of it reached the server: the first thing it reads is this ping.
    s.send(r#"{"jsonrpc":"2.0","id":8,"method":"ping"}"#).await;
    assert_eq!(
        s.server_reads().await,
        r#"{"jsonrpc":"2.0","id":8,"method":"ping"}"#
    );

    let (ended, decisions, _) = s.finish().await;
    assert_eq!(ended, Ended::ClientClosed);
    // The call without a name is recorded as invalid; nothing is recorded as allowed.
    assert!(
        decisions.iter().all(|d| d.decision.as_str() == "invalid"),
        "{decisions:#?}"
    );
    assert_eq!(decisions.len(), 1, "{decisions:#?}");
    assert_eq!(
        decisions[0].error.as_ref().unwrap().code,
        "mcp_invalid_params"
    );
}

#[tokio::test]
async fn responses_reach_only_the_peer_that_asked() {
    let mut s = start().await;
    // The server answers a request nobody sent: dropped.
    s.server_says(r#"{"jsonrpc":"2.0","id":99,"result":{}}"#)
        .await;
    // The server asks the agent something (roots, sampling): passed on, and the agent's
    // answer goes back.
    let ask = r#"{"jsonrpc":"2.0","id":"s-1","method":"roots/list"}"#;
    s.server_says(ask).await;
    assert_eq!(s.answer_line().await, ask);
    // The agent answers a request the server never sent: dropped.
    s.send(r#"{"jsonrpc":"2.0","id":"s-2","result":{}}"#).await;
    let reply = r#"{"jsonrpc":"2.0","id":"s-1","result":{"roots":[]}}"#;
    s.send(reply).await;
    assert_eq!(s.server_reads().await, reply);
    // A second answer to the same request: dropped too.
    s.send(reply).await;
    s.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
        .await;
    assert_eq!(
        s.server_reads().await,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#
    );
    // An id already waiting for its answer cannot be sent again.
    s.send(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).await;
    s.server_reads().await;
    s.send(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#).await;
    let answer = s.answer().await;
    assert_eq!(answer["id"], 1);
    assert_eq!(answer["error"]["code"], -32600);
    // The real answer still reaches the agent.
    s.server_says(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#)
        .await;
    assert_eq!(
        s.answer_line().await,
        r#"{"jsonrpc":"2.0","id":1,"result":{}}"#
    );
}

#[tokio::test]
async fn when_the_server_dies_mid_call_the_agent_is_answered_with_an_error() {
    let mut s = start().await;
    s.send(&call(3, "echo", json!({"message": "hi"}))).await;
    s.server_reads().await;
    s.server_dies();
    let answer = s.answer().await;
    assert_eq!(answer["id"], 3);
    assert_eq!(answer["error"]["code"], -32603);
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("closed before answering"), "{message}");
    let (ended, decisions, _) = s.finish().await;
    assert_eq!(ended, Ended::UpstreamClosed);
    // The call was allowed (and forwarded); it is the only decision.
    assert_eq!(decisions.len(), 1);
}

#[tokio::test]
async fn answers_still_owed_are_delivered_after_the_agent_closes_its_input() {
    let mut s = start().await;
    s.send(&call(1, "echo", json!({"message": "hi"}))).await;
    s.server_reads().await;
    s.agent_closes().await;
    let response = r#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#;
    s.server_says(response).await;
    assert_eq!(s.answer_line().await, response);
    let (ended, _, _) = s.finish().await;
    assert_eq!(ended, Ended::ClientClosed);
}

#[tokio::test]
async fn a_call_its_mapping_cannot_read_is_refused_and_recorded_as_invalid() {
    let mut s = start().await;
    s.send(&call(1, "fetch", json!({"other": "https://x.test/"})))
        .await;
    let answer = s.answer().await;
    let text = text_of(&answer["result"]);
    assert!(
        text.contains("the call has no argument `url`, which names its resource"),
        "{text}"
    );
    // A tool the schema does not know: the engine refuses the request, fail closed.
    s.send(&call(2, "unknown-tool", json!({}))).await;
    let answer = s.answer().await;
    assert_eq!(answer["result"]["isError"], true);
    assert_eq!(
        answer["result"]["_meta"]["arbiter/decision"]["decision"],
        "invalid"
    );
    let (_, decisions, _) = s.finish().await;
    assert_eq!(decisions.len(), 2);
    assert!(decisions.iter().all(|d| d.decision.as_str() == "invalid"));
    assert_eq!(decisions[0].error.as_ref().unwrap().code, "mcp_unmapped");
    assert_eq!(
        decisions[0].mcp.as_ref().unwrap().tool.as_deref(),
        Some("fetch")
    );
}

#[tokio::test]
async fn a_verified_token_is_checked_at_every_call_and_its_revocation_applies_mid_session() {
    let mut jti = String::new();
    let mut s = start_as(|data| {
        let now = SystemClock.now();
        let keyring = arbiter_identity::Keyring::load_or_create(data, now).unwrap();
        let minted = arbiter_identity::mint(
            &keyring,
            &arbiter_core::config::Credentials::default(),
            &BTreeMap::new(),
            &arbiter_identity::MintRequest {
                principal: r#"Agent::"bot""#.parse().unwrap(),
                ttl: Duration::from_secs(600),
                intent: None,
                session: None,
                audience: None,
                attributes: BTreeMap::new(),
                via: None,
            },
            now,
        )
        .unwrap();
        jti = minted.jti.clone();
        Who::Token(minted.token)
    })
    .await;
    s.send(&call(1, "echo", json!({"message": "hi"}))).await;
    s.server_reads().await;
    s.server_says(r#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#)
        .await;
    s.answer().await;

    // Revoked elsewhere (as `arbiter token revoke` does): the proxy picks it up within a
    // poll, and the calls after that are denied.
    let store = Store::open(s.data.path()).unwrap();
    store
        .revoke(&Revocation::of(
            &Revoked::Jti(jti.clone()),
            "test",
            "test",
            SystemClock.now(),
        ))
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut id = 2;
    let denied = loop {
        assert!(started.elapsed() < DEADLINE, "the revocation never applied");
        s.send(&call(id, "echo", json!({"message": "hi"}))).await;
        // Either the proxy answers (denied), or the server gets the call (allowed).
        let forwarded = s.forwarded_or_answered().await;
        let answer: Value = match forwarded {
            Err(answer) => serde_json::from_str(&answer).unwrap(),
            Ok(call) => {
                assert!(call.contains("echo"), "{call}");
                s.server_says(&format!(
                    r#"{{"jsonrpc":"2.0","id":{id},"result":{{"content":[]}}}}"#
                ))
                .await;
                s.answer().await
            }
        };
        if answer["result"]["isError"] == true {
            break answer;
        }
        id += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let text = text_of(&denied["result"]);
    assert!(text.contains("credential:revoked"), "{text}");

    let (_, decisions, _) = s.finish().await;
    let first = &decisions[0];
    assert_eq!(first.principal.as_deref(), Some(r#"Agent::"bot""#));
    assert_eq!(first.credential_id.as_deref(), Some(jti.as_str()));
    assert_eq!(
        serde_json::to_value(first.mcp.as_ref().unwrap().identity).unwrap(),
        "verified"
    );
    // The token itself is never logged.
    assert!(
        first.request["credential"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
}

#[tokio::test]
async fn the_tool_list_leaves_out_what_this_caller_is_denied_in_every_case() {
    let mut s = start().await;
    let list = r#"{"jsonrpc":"2.0","id":"l","method":"tools/list"}"#;
    s.send(list).await;
    assert_eq!(s.server_reads().await, list);
    let tools = [
        "echo",
        "get-env",
        "fetch",
        "burst",
        "self-destruct",
        "not-in-schema",
    ];
    let listed: Vec<Value> = tools
        .iter()
        .map(|t| json!({"name": t, "inputSchema": {"type": "object"}}))
        .collect();
    s.server_says(
        &json!({"jsonrpc": "2.0", "id": "l", "result": {"tools": listed, "nextCursor": "c2"}})
            .to_string(),
    )
    .await;
    let answer = s.answer().await;
    let names: Vec<&str> = answer["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    // `get-env` (enforced deny) and `self-destruct` (enforced revoke) are denied whatever
    // the arguments; a throttle, a permitted tool and a tool the schema lacks stay.
    assert_eq!(names, ["echo", "fetch", "burst", "not-in-schema"]);
    assert_eq!(answer["result"]["nextCursor"], "c2");
    // Other answers pass untouched, and a hidden tool called by name is still denied.
    s.send(&call(2, "get-env", json!({}))).await;
    assert_eq!(s.answer().await["result"]["isError"], true);
}

#[tokio::test]
async fn metrics_count_each_call_by_tool_and_outcome_and_are_served() {
    let mut s = start().await;
    s.send(&call(1, "echo", json!({"message": "hi"}))).await;
    s.server_reads().await;
    s.server_says(r#"{"jsonrpc":"2.0","id":1,"result":{"content":[]}}"#)
        .await;
    s.answer().await;
    s.send(&call(2, "get-env", json!({}))).await;
    s.answer().await;
    s.send(&call(3, "burst", json!({}))).await;
    s.server_reads().await;
    s.server_says(r#"{"jsonrpc":"2.0","id":3,"result":{"content":[]}}"#)
        .await;
    s.answer().await;
    s.send(&call(4, "burst", json!({}))).await;
    s.answer().await;
    let list = r#"{"jsonrpc":"2.0","id":"l","method":"tools/list"}"#;
    s.send(list).await;
    s.server_reads().await;
    s.server_says(
        r#"{"jsonrpc":"2.0","id":"l","result":{"tools":[{"name":"get-env","inputSchema":{}}]}}"#,
    )
    .await;
    s.answer().await;

    // A read is counted by method only: its URI is not a label.
    s.send(r#"{"jsonrpc":"2.0","id":9,"method":"resources/read","params":{"uri":"file:///x?token=SECRET"}}"#)
        .await;
    s.answer().await;

    let served = arbiter_mcp::metrics::serve(
        "127.0.0.1:0".parse().unwrap(),
        std::sync::Arc::clone(s.gateway.metrics()),
    )
    .await
    .unwrap();
    let mut stream = tokio::net::TcpStream::connect(served.addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    tokio::time::timeout(DEADLINE, async {
        tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut text).await
    })
    .await
    .expect("the metrics within the deadline")
    .unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    for line in [
        r#"arbiter_mcp_requests_total{upstream="fake",method="tools/call",tool="echo",outcome="allowed"} 1"#,
        r#"arbiter_mcp_requests_total{upstream="fake",method="tools/call",tool="get-env",outcome="denied"} 1"#,
        r#"arbiter_mcp_requests_total{upstream="fake",method="tools/call",tool="burst",outcome="allowed"} 1"#,
        r#"arbiter_mcp_requests_total{upstream="fake",method="tools/call",tool="burst",outcome="throttled"} 1"#,
        r#"arbiter_mcp_tools_hidden_total{upstream="fake",tool="get-env",rule="mcp.no-env",mode="enforce"} 1"#,
        r#"arbiter_mcp_decision_seconds_count{upstream="fake",method="tools/call"} 4"#,
        r#"arbiter_mcp_requests_total{upstream="fake",method="resources/read",tool="",outcome="invalid"} 1"#,
    ] {
        assert!(text.contains(line), "{line} in:\n{text}");
    }
    assert!(!text.contains("SECRET"), "{text}");
    s.finish().await;
}

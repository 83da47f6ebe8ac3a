//! End-to-end tests of `arbiter mcp-proxy` with peers no one here wrote: the official MCP
//! Python SDK as the agent (`tests/fixtures/mcp_agent.py`) talks through the real binary,
//! over stdio, to `@modelcontextprotocol/server-everything`. `.ci/run` installs both
//! (`source .ci/mcp-peers.sh`) and exports where they are; without them these tests fail
//! and say how to install them. One more test drives the binary without Python, against a
//! fake server written here in `sh`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

use common::mcp::{self, Ran, peer};

/// How long a whole agent session may take before the test gives up on it: a guard
/// against a hang (two interpreters start on two busy cores), not a measure.
const SESSION_DEADLINE: Duration = Duration::from_secs(90);

const ARBITER: &str = env!("CARGO_BIN_EXE_arbiter");

/// The schema, policies and `[mcp]` mapping for server-everything's tools, with the rule
/// on `get-env` (for `Agent::"bot"` only) in `mode`.
fn write_pack(mode: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(
        dir.path().join("schema.cedarschema"),
        r#"
entity Agent;
entity Tool;
action "echo" appliesTo {
    principal: [Agent], resource: [Tool], context: { args?: { message?: String } } };
action "get-env", "get-sum" appliesTo { principal: [Agent], resource: [Tool] };
"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("policies/mcp.cedar"),
        format!(
            r#"
@id("agents.may-use-tools")
permit(principal is Agent, action, resource);

@id("mcp.no-env")
@mode("{mode}")
@reason("Reading the environment can expose secrets")
forbid(principal == Agent::"bot", action == Action::"get-env", resource);
"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("arbiter.toml"),
        r#"
[mcp.tools.echo]
args = { message = "context.args.message" }

[log]
mask = ["context.args.message"]
"#,
    )
    .unwrap();
    dir
}

/// Runs `command` to its end, within the session deadline.
fn run(command: Command, stdin: &[u8]) -> Ran {
    mcp::run(command, stdin, SESSION_DEADLINE)
}

fn arbiter(args: &[&str]) -> Ran {
    let mut command = Command::new(ARBITER);
    command.args(args);
    run(command, b"")
}

/// The Python SDK agent, running `steps` against server-everything behind the proxy;
/// one JSON value per line it printed.
fn agent(pack: &Path, data: &Path, identity: &[(&str, &str)], steps: Value) -> Vec<Value> {
    let everything = peer(
        "ARBITER_MCP_EVERYTHING",
        "@modelcontextprotocol/server-everything (npm)",
    );
    let node = std::env::var_os("ARBITER_MCP_NODE").unwrap_or_else(|| OsString::from("node"));
    let mut command = vec![
        ARBITER.to_owned(),
        "mcp-proxy".to_owned(),
        "--pack".to_owned(),
        pack.display().to_string(),
        "--data".to_owned(),
        data.display().to_string(),
    ];
    let mut env = serde_json::Map::new();
    for var in ["PATH", "HOME"] {
        if let Some(value) = std::env::var_os(var) {
            env.insert(var.to_owned(), json!(value.to_string_lossy()));
        }
    }
    for (flag, value) in identity {
        if let Some(var) = flag.strip_prefix('$') {
            env.insert(var.to_owned(), json!(value));
        } else {
            command.push((*flag).to_owned());
            command.push((*value).to_owned());
        }
    }
    command.extend([
        "--".to_owned(),
        node.to_string_lossy().into_owned(),
        everything.display().to_string(),
        "stdio".to_owned(),
    ]);
    let plan = json!({"command": command, "env": env, "steps": steps});
    let mut python = Command::new(mcp::python());
    python
        .arg(mcp::fixture("mcp_agent.py"))
        .arg(plan.to_string());
    let ran = run(python, b"");
    assert_eq!(ran.code, Some(0), "the agent failed:\n{}", ran.stderr);
    ran.json_lines()
}

fn text_of(step: &Value) -> &str {
    step["result"]["content"][0]["text"].as_str().unwrap()
}

#[test]
fn an_agent_lists_and_calls_tools_and_an_enforced_rule_denies_one_with_its_reason() {
    let pack = write_pack("enforce");
    let data = tempfile::tempdir().unwrap();
    let token = mcp::token(pack.path(), data.path(), r#"Agent::"bot""#);

    let out = agent(
        pack.path(),
        data.path(),
        &[("$ARBITER_TOKEN", &token)],
        json!([
            {"do": "list_tools"},
            {"do": "call", "tool": "echo", "arguments": {"message": "hello"}},
            {"do": "call", "tool": "get-env"},
        ]),
    );
    let [hello, listed, echo, env] = out.as_slice() else {
        panic!("{out:#?}")
    };
    assert!(
        hello["server"].as_str().unwrap().contains("everything"),
        "{hello}"
    );
    // The tool an enforced rule denies this agent whatever the arguments is not listed.
    let tools = listed["tools"].as_array().unwrap();
    assert!(tools.contains(&json!("echo")), "{listed}");
    assert!(!tools.contains(&json!("get-env")), "{listed}");
    // Allowed: the server's own answer, untouched.
    assert_eq!(text_of(echo), "Echo: hello");
    assert_ne!(echo["result"]["isError"], true);
    // Called by name anyway, it is denied: the agent sees which rule and why, and the
    // server never ran the tool.
    assert_eq!(env["result"]["isError"], true, "{env}");
    let text = text_of(env);
    assert!(text.contains("rule `mcp.no-env`"), "{text}");
    assert!(
        text.contains("Reading the environment can expose secrets"),
        "{text}"
    );
    assert!(!text.contains("PATH"), "{text}");

    // Another agent, whom the rule does not name, sees the tool.
    let other = agent(
        pack.path(),
        data.path(),
        &[("--principal", r#"Agent::"dev""#)],
        json!([{"do": "list_tools"}]),
    );
    assert!(
        other[1]["tools"]
            .as_array()
            .unwrap()
            .contains(&json!("get-env")),
        "{other:#?}"
    );

    // Listing decides nothing: the log holds the two calls.
    let decisions = mcp::decisions(data.path());
    let [allowed, denied] = decisions.as_slice() else {
        panic!("{decisions:#?}")
    };
    assert_eq!(allowed["decision"], "allow");
    assert_eq!(allowed["mcp"]["method"], "tools/call");
    assert_eq!(allowed["mcp"]["tool"], "echo");
    assert_eq!(allowed["mcp"]["identity"], "verified");
    assert_eq!(allowed["principal"], r#"Agent::"bot""#);
    assert!(allowed["credential_id"].is_string(), "{allowed}");
    assert_eq!(denied["decision"], "deny");
    assert_eq!(denied["mcp"]["method"], "tools/call");
    assert_eq!(denied["mcp"]["tool"], "get-env");
    assert_eq!(denied["enforced"], json!(["mcp.no-env"]));
    // The argument the mapping copied is masked in the log.
    let message = allowed["request"]["context"]["args"]["message"]
        .as_str()
        .unwrap();
    assert!(message.starts_with("hmac-sha256:"), "{message}");
    // So is the argument it came from, in the record of the call.
    assert_eq!(allowed["mcp"]["arguments"]["message"], message, "{allowed}");
}

#[test]
fn the_same_rule_in_audit_lets_the_call_through_and_records_the_finding() {
    let pack = write_pack("audit");
    let data = tempfile::tempdir().unwrap();
    let out = agent(
        pack.path(),
        data.path(),
        &[("--principal", r#"Agent::"bot""#)],
        json!([{"do": "list_tools"}, {"do": "call", "tool": "get-env"}]),
    );
    let [_, listed, env] = out.as_slice() else {
        panic!("{out:#?}")
    };
    // An audit rule hides nothing.
    assert!(
        listed["tools"]
            .as_array()
            .unwrap()
            .contains(&json!("get-env")),
        "{listed}"
    );
    assert_ne!(env["result"]["isError"], true, "{env}");
    assert!(text_of(env).contains("PATH"), "{env}");

    let decisions = mcp::decisions(data.path());
    let [audited] = decisions.as_slice() else {
        panic!("{decisions:#?}")
    };
    assert_eq!(audited["decision"], "allow");
    assert_eq!(
        audited["audit"],
        json!([{"rule": "mcp.no-env", "would": "deny"}])
    );
    assert_eq!(audited["mcp"]["tool"], "get-env");
    assert_eq!(audited["mcp"]["identity"], "unverified");
    assert_eq!(audited["principal"], r#"Agent::"bot""#);

    let findings = arbiter(&[
        "findings",
        "--data",
        data.path().to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(findings.code, Some(0), "{}", findings.stderr);
    let findings: Value = serde_json::from_str(&findings.stdout).unwrap();
    let found = findings
        .as_array()
        .or_else(|| findings["findings"].as_array())
        .unwrap();
    let [finding] = found.as_slice() else {
        panic!("{findings:#}")
    };
    assert_eq!(finding["rule"], "mcp.no-env");
    assert_eq!(finding["principal"], r#"Agent::"bot""#);
    assert_eq!(finding["count"], 1);
    assert_eq!(finding["decisive"], 1);
}

#[test]
fn bad_input_and_a_dying_server_get_json_rpc_errors_on_stdout_and_nothing_else() {
    let pack = write_pack("enforce");
    let data = tempfile::tempdir().unwrap();
    let mut command = Command::new(ARBITER);
    command.args([
        "mcp-proxy",
        "--pack",
        pack.path().to_str().unwrap(),
        "--data",
        data.path().to_str().unwrap(),
        "--principal",
        r#"Agent::"dev""#,
        "--max-message-bytes",
        "1024",
        "--",
        // A fake server: it reads one message and dies without answering.
        "sh",
        "-c",
        "IFS= read -r message; exit 3",
    ]);
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                      "params": {"name": "echo", "arguments": {"message": "hi"}}});
    let input = format!(
        "not json\n{}\n[{call}]\n{call}\n",
        json!({"jsonrpc": "2.0", "id": 0, "method": "ping", "params": {"pad": "x".repeat(2000)}})
    );
    let ran = run(command, input.as_bytes());
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("the MCP server ended the session"),
        "{}",
        ran.stderr
    );
    // Standard output carries JSON-RPC and nothing else.
    let answers: Vec<Value> = ran
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let codes: Vec<(Value, Value)> = answers
        .iter()
        .map(|a| (a["id"].clone(), a["error"]["code"].clone()))
        .collect();
    assert_eq!(
        codes,
        [
            (Value::Null, json!(-32700)),
            (Value::Null, json!(-32600)),
            (Value::Null, json!(-32600)),
            (json!(1), json!(-32603)),
        ],
        "{answers:#?}"
    );
    assert!(
        answers[1]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("larger than 1024 bytes")
    );
    // Only the call that was forwarded was decided, and it was allowed.
    let decisions = mcp::decisions(data.path());
    let [allowed] = decisions.as_slice() else {
        panic!("{decisions:#?}")
    };
    assert_eq!(allowed["decision"], "allow");
    assert_eq!(allowed["mcp"]["tool"], "echo");
}

#[test]
fn the_proxy_needs_an_identity_and_a_pack_whose_mapping_fits_the_schema() {
    let pack = write_pack("enforce");
    let data = tempfile::tempdir().unwrap();
    let mut command = Command::new(ARBITER);
    command
        .args([
            "mcp-proxy",
            "--pack",
            pack.path().to_str().unwrap(),
            "--data",
            data.path().to_str().unwrap(),
            "--",
            "true",
        ])
        .env_remove("ARBITER_TOKEN")
        .env_remove("ARBITER_MCP_PRINCIPAL");
    let ran = run(command, b"");
    assert_eq!(ran.code, Some(2));
    assert!(ran.stderr.contains("who is the agent?"), "{}", ran.stderr);
    assert!(ran.stdout.is_empty());

    std::fs::write(
        pack.path().join("arbiter.toml"),
        "[mcp.tools.fetch]\nresource = { type = \"Url\", arg = \"url\" }\n",
    )
    .unwrap();
    let validated = arbiter(&["validate", pack.path().to_str().unwrap()]);
    assert_eq!(validated.code, Some(2));
    assert!(
        validated
            .stderr
            .contains("arbiter.toml:1:12: [mcp.tools.fetch]: the schema has no action `fetch`"),
        "{}",
        validated.stderr
    );
    assert!(
        validated
            .stderr
            .contains("arbiter.toml:2:21: [mcp.tools.fetch] resource: `Url` is not an entity type of the schema"),
        "{}",
        validated.stderr
    );
}

/// A pack for the secret-then-egress story on server-everything's tools: `get-env` reads
/// secrets (`secret_read`), `echo` sends a message out (`egress`), and the rule that
/// forbids egress after a secret in the same session has `mode` and `effect`; `extra` is
/// appended to `arbiter.toml`.
fn write_chain_pack(mode: &str, effect: &str, extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(
        dir.path().join("schema.cedarschema"),
        r#"
entity Agent;
entity Tool;
entity McpResource;
entity Prompt;
action secret_read, egress;
action "get-env" in [secret_read] appliesTo { principal: [Agent], resource: [Tool] };
action "echo" in [egress] appliesTo {
    principal: [Agent], resource: [Tool], context: { args?: { message?: String } } };
action "get-sum" appliesTo { principal: [Agent], resource: [Tool] };
action "resources/read" appliesTo { principal: [Agent], resource: [McpResource] };
action "prompts/get" appliesTo { principal: [Agent], resource: [Prompt] };
"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("policies/agents.cedar"),
        format!(
            r#"
@id("agents.may-use-tools")
permit(principal is Agent, action, resource);

@id("agent.no-egress-after-secret")
@mode("{mode}")
@effect("{effect}")
@reason("Egress after reading a secret in the same session")
forbid(principal is Agent, action in Action::"egress", resource)
when {{ context.session.touched.contains("secret_read") }};

@id("agent.sums-per-minute")
@mode("enforce")
@effect("throttle")
@limit("2/1m")
forbid(principal is Agent, action == Action::"get-sum", resource);

@id("agent.no-blob-resources")
@mode("enforce")
@reason("Blob resources are not for agents")
forbid(principal is Agent, action == Action::"resources/read",
       resource == McpResource::"demo://resource/dynamic/blob/1");
"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("arbiter.toml"),
        format!("[mcp.tools.echo]\nargs = {{ message = \"context.args.message\" }}\n{extra}"),
    )
    .unwrap();
    dir
}

#[test]
fn secret_then_egress_passes_in_audit_is_denied_once_promoted_and_a_revoke_reaches_serve() {
    let pack = write_chain_pack("audit", "revoke", "");
    let data = tempfile::tempdir().unwrap();
    let token = mcp::token(pack.path(), data.path(), r#"Agent::"bot""#);
    let session = json!([
        {"do": "call", "tool": "get-env"},
        {"do": "call", "tool": "echo", "arguments": {"message": "the secret"}},
    ]);

    // In audit, the egress passes and the finding is recorded.
    let out = agent(
        pack.path(),
        data.path(),
        &[("$ARBITER_TOKEN", &token)],
        session.clone(),
    );
    assert_eq!(text_of(&out[2]), "Echo: the secret", "{out:#?}");
    let findings = arbiter(&[
        "findings",
        "--data",
        data.path().to_str().unwrap(),
        "--json",
    ]);
    let findings: Value = serde_json::from_str(&findings.stdout).unwrap();
    let found = findings
        .as_array()
        .or_else(|| findings["findings"].as_array())
        .unwrap();
    assert!(
        found
            .iter()
            .any(|f| f["rule"] == "agent.no-egress-after-secret" && f["decisive"] == 1),
        "{findings:#}"
    );

    // A server on the same data directory accepts the token.
    let served = common::Served::start(pack.path(), data.path(), &[]);
    let probe = json!({"principal": r#"Agent::"bot""#, "action": {"type": "Action", "id": "get-sum"},
                       "resource": {"type": "Tool", "id": "get-sum"}, "credential": token});
    assert_eq!(served.decide(&probe)["decision"], "allow");

    // Promoted (the evidence is one finding: forced, with a reason), the egress is
    // denied with the reason shown to the agent, the credential revoked and the session
    // ended.
    let promoted = arbiter(&[
        "promote",
        "agent.no-egress-after-secret",
        "--pack",
        pack.path().to_str().unwrap(),
        "--data",
        data.path().to_str().unwrap(),
        "--force",
        "--reason",
        "the audit finding is the exposure we mean to stop",
    ]);
    assert_eq!(promoted.code, Some(0), "{}", promoted.stderr);
    let out = agent(
        pack.path(),
        data.path(),
        &[("$ARBITER_TOKEN", &token)],
        session,
    );
    let egress = &out[2];
    assert_eq!(egress["result"]["isError"], true, "{out:#?}");
    let text = text_of(egress);
    assert!(
        text.contains("rule `agent.no-egress-after-secret`"),
        "{text}"
    );
    assert!(text.contains("Egress after reading a secret"), "{text}");
    assert!(text.contains("revoked the credential"), "{text}");
    assert_eq!(
        egress["result"]["_meta"]["arbiter/decision"]["effect"],
        "revoke"
    );

    // The token stops working at `arbiter serve` too: it follows the store's revocations.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let decided = served.decide(&probe);
        if decided["reason"] == "credential:revoked" {
            assert_eq!(decided["decision"], "deny");
            break;
        }
        assert!(Instant::now() < deadline, "still accepted: {decided}");
        std::thread::sleep(Duration::from_millis(100));
    }
    served.stop();
}

#[test]
fn denials_as_json_rpc_errors_and_reads_and_prompts_are_decisions() {
    let pack = write_chain_pack("enforce", "deny", "\n[mcp]\ndenials = \"error\"\n");
    let data = tempfile::tempdir().unwrap();
    let out = agent(
        pack.path(),
        data.path(),
        &[("--principal", r#"Agent::"bot""#)],
        json!([
            {"do": "call", "tool": "get-sum", "arguments": {"a": 1, "b": 2}},
            {"do": "call", "tool": "get-sum", "arguments": {"a": 1, "b": 2}},
            {"do": "call", "tool": "get-sum", "arguments": {"a": 1, "b": 2}},
            {"do": "call", "tool": "get-env"},
            {"do": "call", "tool": "echo", "arguments": {"message": "out"}},
            {"do": "read_resource", "uri": "demo://resource/dynamic/text/1"},
            {"do": "read_resource", "uri": "demo://resource/dynamic/blob/1"},
            {"do": "get_prompt", "name": "simple-prompt"},
        ]),
    );
    let [_, sum1, sum2, sum3, _env, echo, text, blob, prompt] = out.as_slice() else {
        panic!("{out:#?}")
    };
    assert!(sum1["result"]["content"].is_array(), "{sum1}");
    assert!(sum2["result"]["content"].is_array(), "{sum2}");
    // The third call in the minute is throttled: -32003, when to retry in `data`.
    assert_eq!(sum3["error"]["code"], -32003, "{sum3}");
    assert_eq!(sum3["error"]["data"]["rule"], "agent.sums-per-minute");
    assert!(sum3["error"]["data"]["retry_after_s"].as_u64().unwrap() >= 1);
    assert!(sum3["error"]["data"]["decision_id"].is_string());
    // Egress after the secret: -32001, the rule and the decision in `data`.
    assert_eq!(echo["error"]["code"], -32001, "{echo}");
    assert_eq!(
        echo["error"]["data"]["rule"],
        "agent.no-egress-after-secret"
    );
    assert!(
        echo["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Egress after reading a secret"),
        "{echo}"
    );
    // Reads and prompts are decided like calls.
    assert!(text["result"]["contents"].is_array(), "{text}");
    assert_eq!(blob["error"]["code"], -32001, "{blob}");
    assert_eq!(blob["error"]["data"]["rule"], "agent.no-blob-resources");
    assert!(prompt["result"]["messages"].is_array(), "{prompt}");

    let decisions = mcp::decisions_when(data.path(), 8);
    let shapes: Vec<(String, String, String)> = decisions
        .iter()
        .map(|d| {
            (
                d["mcp"]["method"].as_str().unwrap().to_owned(),
                d["mcp"]["tool"].as_str().unwrap().to_owned(),
                d["decision"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    // The arguments are recorded: in clear only what the mapping copies into the context
    // unmasked (`echo`'s message), every other one as its keyed hash.
    assert_eq!(decisions[4]["mcp"]["arguments"], json!({"message": "out"}));
    let sum = &decisions[0]["mcp"]["arguments"];
    assert!(
        sum["a"].as_str().unwrap().starts_with("hmac-sha256:"),
        "{sum}"
    );
    assert_eq!(sum["a"], decisions[1]["mcp"]["arguments"]["a"]);
    assert_ne!(sum["a"], sum["b"]);
    let shape = |m: &str, t: &str, d: &str| (m.to_owned(), t.to_owned(), d.to_owned());
    assert_eq!(
        shapes,
        [
            shape("tools/call", "get-sum", "allow"),
            shape("tools/call", "get-sum", "allow"),
            shape("tools/call", "get-sum", "deny"),
            shape("tools/call", "get-env", "allow"),
            shape("tools/call", "echo", "deny"),
            shape("resources/read", "demo://resource/dynamic/text/1", "allow"),
            shape("resources/read", "demo://resource/dynamic/blob/1", "deny"),
            shape("prompts/get", "simple-prompt", "allow"),
        ]
    );
}

/// A PEP token and its `[server] pep_tokens` entry.
fn pep_token() -> (&'static str, String) {
    use sha2::Digest;
    let token = "mcp-proxy-pep-token-for-tests";
    (
        token,
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(token))),
    )
}

#[test]
fn a_remote_decision_point_decides_and_records_and_a_silent_one_fails_closed() {
    let (pep, hash) = pep_token();
    let pack = write_chain_pack(
        "enforce",
        "revoke",
        &format!("\n[server]\npep_tokens = [\"{hash}\"]\n"),
    );
    let server_data = tempfile::tempdir().unwrap();
    let proxy_data = tempfile::tempdir().unwrap();
    let token = mcp::token(pack.path(), server_data.path(), r#"Agent::"bot""#);
    let served = common::Served::start(pack.path(), server_data.path(), &[]);
    let base = served.base.clone();

    // The server decides: the secret read passes, the egress after it is denied and the
    // credential revoked there; the proxy ends the session.
    let out = agent(
        pack.path(),
        proxy_data.path(),
        &[
            ("$ARBITER_TOKEN", &token),
            ("$ARBITER_PEP_TOKEN", pep),
            ("--pdp", &base),
            ("--pdp-timeout-ms", "10000"),
        ],
        json!([
            {"do": "call", "tool": "get-env"},
            {"do": "call", "tool": "echo", "arguments": {"message": "x"}},
        ]),
    );
    assert!(text_of(&out[1]).contains("PATH"), "{out:#?}");
    assert_eq!(out[2]["result"]["isError"], true, "{out:#?}");
    assert!(text_of(&out[2]).contains("agent.no-egress-after-secret"));
    // Recorded by the server, with the MCP call; nothing in the proxy's directory.
    let decisions = mcp::decisions_when(server_data.path(), 2);
    let [read, egress] = decisions.as_slice() else {
        panic!("{decisions:#?}")
    };
    assert_eq!(read["decision"], "allow");
    assert_eq!(read["mcp"]["tool"], "get-env");
    assert_eq!(read["mcp"]["identity"], "verified");
    assert_eq!(egress["decision"], "deny");
    assert_eq!(egress["mcp"]["method"], "tools/call");
    assert_eq!(egress["mcp"]["upstream"], "node");
    assert!(!proxy_data.path().join("arbiter.db").exists());
    let revoked = json!({"principal": r#"Agent::"bot""#,
                         "action": {"type": "Action", "id": "get-sum"},
                         "resource": {"type": "Tool", "id": "get-sum"}, "credential": token});
    let answer = served
        .client()
        .post(format!("{base}/v1/decide"))
        .bearer_auth(pep)
        .json(&revoked)
        .send()
        .unwrap();
    let answer: Value = answer.json().unwrap();
    assert_eq!(answer["reason"], "credential:revoked", "{answer}");

    // A wrong PEP token decides nothing: refused, and the proxy says why.
    let out = agent(
        pack.path(),
        proxy_data.path(),
        &[
            ("--principal", r#"Agent::"dev""#),
            ("$ARBITER_PEP_TOKEN", "not-the-token"),
            ("--pdp", &base),
            ("--pdp-timeout-ms", "10000"),
        ],
        json!([{"do": "call", "tool": "get-sum", "arguments": {"a": 1, "b": 1}}]),
    );
    assert_eq!(out[1]["error"]["code"], -32603, "{out:#?}");
    assert!(
        out[1]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("refused the proxy (401"),
        "{out:#?}"
    );
    served.stop();

    // A decision point that accepts the connection and never answers: the call is
    // refused when the timeout runs out, and the session goes on.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let held = std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming().take(2) {
            held.push(stream);
        }
        std::thread::sleep(Duration::from_secs(3));
    });
    let out = agent(
        pack.path(),
        proxy_data.path(),
        &[
            ("--principal", r#"Agent::"dev""#),
            ("--pdp", &silent_url),
            ("--pdp-timeout-ms", "300"),
        ],
        json!([
            {"do": "call", "tool": "get-sum", "arguments": {"a": 1, "b": 1}},
            {"do": "list_tools"},
        ]),
    );
    assert_eq!(out[1]["error"]["code"], -32603, "{out:#?}");
    assert!(
        out[1]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did not answer within 300 ms"),
        "{out:#?}"
    );
    assert!(out[2]["tools"].is_array(), "{out:#?}");
    drop(held);
}

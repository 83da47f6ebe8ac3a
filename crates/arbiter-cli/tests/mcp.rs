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
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How long a whole agent session may take before the test gives up on it: a guard
/// against a hang (two interpreters start on two busy cores), not a measure.
const SESSION_DEADLINE: Duration = Duration::from_secs(90);

const ARBITER: &str = env!("CARGO_BIN_EXE_arbiter");

/// A peer's location from the environment `.ci/mcp-peers.sh` sets up.
fn peer(var: &str, what: &str) -> PathBuf {
    match std::env::var_os(var).map(PathBuf::from) {
        Some(path) if path.exists() => path,
        found => panic!(
            "{what} is needed for this test and was not found ({var} = {found:?}). Install the \
             MCP peers and export their locations with `source .ci/mcp-peers.sh` (what \
             .ci/run does: pip's `mcp` into a venv and npm's \
             `@modelcontextprotocol/server-everything`, under ~/.cache/arbiter-ci), then run \
             the tests again"
        ),
    }
}

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

/// What a finished process did.
#[derive(Debug)]
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `command` to its end (killed past the deadline), with `stdin` as its input.
fn run(mut command: Command, stdin: &[u8]) -> Ran {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let _ = input.write_all(&stdin);
    });
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let stdout = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).unwrap();
        s
    });
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).unwrap();
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > SESSION_DEADLINE {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!(
                "still running after {SESSION_DEADLINE:?}; stderr:\n{}",
                stderr.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    writer.join().unwrap();
    Ran {
        code: status.code(),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

fn arbiter(args: &[&str]) -> Ran {
    let mut command = Command::new(ARBITER);
    command.args(args);
    run(command, b"")
}

/// The Python SDK agent, running `steps` against server-everything behind the proxy;
/// one JSON value per line it printed.
fn agent(pack: &Path, data: &Path, identity: &[(&str, &str)], steps: Value) -> Vec<Value> {
    let python = peer("ARBITER_MCP_PYTHON", "the MCP Python SDK (pip `mcp`)");
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
    let mut python = Command::new(python);
    python
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mcp_agent.py"))
        .arg(plan.to_string());
    let ran = run(python, b"");
    assert_eq!(ran.code, Some(0), "the agent failed:\n{}", ran.stderr);
    ran.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The decisions the proxy recorded, oldest first.
fn mcp_decisions(data: &Path) -> Vec<Value> {
    let log = arbiter(&["log", "--data", data.to_str().unwrap(), "--json"]);
    assert_eq!(log.code, Some(0), "{}", log.stderr);
    let page: Value = serde_json::from_str(&log.stdout).unwrap();
    let mut decisions: Vec<Value> = page["decisions"].as_array().unwrap().clone();
    decisions.reverse();
    decisions
}

fn text_of(step: &Value) -> &str {
    step["result"]["content"][0]["text"].as_str().unwrap()
}

#[test]
fn an_agent_lists_and_calls_tools_and_an_enforced_rule_denies_one_with_its_reason() {
    let pack = write_pack("enforce");
    let data = tempfile::tempdir().unwrap();
    let issued = arbiter(&[
        "token",
        "issue",
        "--pack",
        pack.path().to_str().unwrap(),
        "--data",
        data.path().to_str().unwrap(),
        "--principal",
        r#"Agent::"bot""#,
        "--ttl",
        "10m",
    ]);
    assert_eq!(issued.code, Some(0), "{}", issued.stderr);
    let token = issued.stdout.trim().to_owned();

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
    let decisions = mcp_decisions(data.path());
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

    let decisions = mcp_decisions(data.path());
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
    let decisions = mcp_decisions(data.path());
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

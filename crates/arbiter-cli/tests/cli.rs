//! End-to-end tests of the `arbiter` binary: `validate`, `check` and `test` on the example
//! pack and on broken packs, their output (human and `--json`) and their exit codes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::{Value, json};

// ------------------------------------------------------------------------- helpers

/// The example pack shipped with the repository.
fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/agents-and-pipelines")
}

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Each non-empty stdout line, parsed as JSON.
    fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| {
                    panic!(
                        "stdout line is not JSON ({e}): {l}\n--- stderr:\n{}",
                        self.stderr
                    )
                })
            })
            .collect()
    }
}

/// Runs `arbiter ARGS`, with `stdin` as standard input (empty when `None`).
fn arbiter<const N: usize>(args: [&str; N], stdin: Option<&str>) -> Run {
    let mut cmd = Command::cargo_bin("arbiter").unwrap();
    cmd.args(args);
    cmd.write_stdin(stdin.unwrap_or_default());
    let output = cmd.output().unwrap();
    Run {
        code: output
            .status
            .code()
            .expect("arbiter was killed by a signal"),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// A path as an argument (the test paths are UTF-8).
fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// Copies a directory tree.
fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A copy of the example pack in a fresh temporary directory.
fn example_copy() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let pack = tmp.path().join("pack");
    copy_dir(&example(), &pack);
    (tmp, pack)
}

/// Writes a JSON Lines file of these requests and returns its path.
fn jsonl(dir: &Path, name: &str, requests: &[Value]) -> PathBuf {
    let text: String = requests.iter().map(|r| format!("{r}\n")).collect();
    let path = dir.join(name);
    fs::write(&path, text).unwrap();
    path
}

/// A decision without the fields that differ on every run.
fn stable(decision: &Value) -> Value {
    let mut d = decision.clone();
    if let Some(obj) = d.as_object_mut() {
        obj.remove("decision_id");
    }
    d
}

/// The 1-based number of the first line of `text` that contains `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("`{needle}` is not in the text"))
        + 1
}

/// A `create_token` request by ops-copilot for a staging service (permitted, so only
/// `tokens.agent-mint-rate` can refuse it), at `time`.
fn mint(time: &str) -> Value {
    json!({
        "principal": "Agent::\"ops-copilot\"",
        "action": "Action::\"create_token\"",
        "resource": "Service::\"billing-api-staging\"",
        "context": {"ttl_s": 900, "scopes": ["billing:read"]},
        "time": time,
    })
}

/// The number of tests in the example pack: its test files are top-level YAML lists, one
/// `- name:` line per test.
fn example_test_count() -> usize {
    let mut n = 0;
    for entry in fs::read_dir(example().join("tests")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            let text = fs::read_to_string(&path).unwrap();
            n += text.lines().filter(|l| l.starts_with("- name:")).count();
        }
    }
    assert!(n > 0, "the example pack has no tests");
    n
}

// ------------------------------------------------------------------------ validate

#[test]
fn validate_example_summarises_modes_and_default_deny_scopes() {
    let pack = example();
    let human = arbiter(["validate", path_str(&pack)], None);
    assert_eq!(human.code, 0, "stderr: {}", human.stderr);

    let machine = arbiter(["validate", path_str(&pack), "--json"], None);
    assert_eq!(machine.code, 0, "stderr: {}", machine.stderr);
    let lines = machine.json_lines();
    assert_eq!(lines.len(), 1, "one JSON document: {}", machine.stdout);
    let summary = &lines[0];
    assert_eq!(summary["valid"], true);
    let version = summary["policy_version"].as_str().unwrap();
    let hex = version.strip_prefix("sha256:").expect("sha256: version");
    assert_eq!(hex.len(), 64, "{version}");
    assert!(hex.chars().all(|c| c.is_ascii_hexdigit()), "{version}");

    // The counts agree with the policy sources (every forbid in the example names its mode).
    let mut by_mode: BTreeMap<String, u64> = BTreeMap::new();
    let (mut permits, mut forbids) = (0u64, 0u64);
    for entry in fs::read_dir(pack.join("policies")).unwrap() {
        let text = fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines().map(str::trim_start) {
            if line.starts_with("permit (") || line.starts_with("permit(") {
                permits += 1;
            } else if line.starts_with("forbid (") || line.starts_with("forbid(") {
                forbids += 1;
            } else if let Some(rest) = line.strip_prefix("@mode(\"") {
                let mode = rest.split('"').next().unwrap();
                *by_mode.entry(mode.to_owned()).or_default() += 1;
            }
        }
    }
    assert_eq!(by_mode.values().sum::<u64>(), forbids);
    assert_eq!(summary["permits"], permits);
    assert_eq!(summary["forbids"], forbids);
    assert_eq!(summary["rules"], permits + forbids);
    assert_eq!(summary["by_mode"], json!(by_mode));

    // arbiter.toml: Agent enforced, every other principal type audited.
    assert_eq!(summary["default_deny"]["mode"], "audit");
    let scopes = &summary["default_deny"]["scopes"];
    assert_eq!(scopes["default-deny:Agent"], "enforce");
    assert_eq!(scopes["default-deny:CiJob"], "audit");
    assert_eq!(scopes["default-deny:Service"], "audit");

    // The human summary says the same.
    let out = &human.stdout;
    assert!(
        out.contains(&format!(
            "{} rules ({permits} permits, {forbids} forbids)",
            permits + forbids
        )),
        "{out}"
    );
    let mode_line = out
        .lines()
        .find(|l| l.contains("by mode"))
        .unwrap_or_else(|| panic!("no `by mode` line: {out}"));
    for (mode, n) in &by_mode {
        assert!(mode_line.contains(&format!("{mode} {n}")), "{mode_line}");
    }
    for (name, mode) in scopes.as_object().unwrap() {
        let mode = mode.as_str().unwrap();
        assert!(out.contains(&format!("{name} {mode}")), "{out}");
    }
    assert!(out.contains(version), "{out}");
}

/// Three problems in two policy files of a pack written to a temporary directory.
fn broken_pack() -> (tempfile::TempDir, Vec<(&'static str, usize, &'static str)>) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::create_dir(dir.join("policies")).unwrap();
    fs::write(dir.join("arbiter.toml"), "[defaults]\nmode = \"audit\"\n").unwrap();
    fs::write(
        dir.join("schema.cedarschema"),
        "entity User { team: String };\n\
         entity Doc;\n\
         action read appliesTo { principal: [User], resource: [Doc], context: {} };\n",
    )
    .unwrap();
    let a = "// two annotation problems\n\
             @id(\"a.bad-mode\")\n\
             @mode(\"sometimes\")\n\
             forbid (principal, action, resource);\n\
             \n\
             @id(\"a.throttle-without-limit\")\n\
             @mode(\"enforce\")\n\
             @effect(\"throttle\")\n\
             forbid (principal, action == Action::\"read\", resource);\n";
    let b = "@id(\"b.ok\")\n\
             permit (principal, action == Action::\"read\", resource);\n\
             \n\
             @id(\"b.unknown-attr\")\n\
             forbid (principal is User, action == Action::\"read\", resource)\n\
             when { principal.department == \"x\" };\n";
    fs::write(dir.join("policies/a.cedar"), a).unwrap();
    fs::write(dir.join("policies/b.cedar"), b).unwrap();
    let expected = vec![
        ("policies/a.cedar", line_of(a, "@mode("), "a.bad-mode"),
        (
            "policies/a.cedar",
            line_of(a, "@effect("),
            "a.throttle-without-limit",
        ),
        (
            "policies/b.cedar",
            line_of(b, "principal.department"),
            "b.unknown-attr",
        ),
    ];
    (tmp, expected)
}

/// `error: FILE:LINE[:COL]: rule `ID`: message` → (file, line, rule).
fn parse_problem(line: &str) -> (String, usize, String) {
    let rest = line
        .strip_prefix("error: ")
        .unwrap_or_else(|| panic!("not an error line: {line}"));
    let (location, rest) = rest
        .split_once(": rule `")
        .unwrap_or_else(|| panic!("no rule id: {line}"));
    let rule = rest.split('`').next().unwrap().to_owned();
    let mut parts = location.split(':');
    let file = parts.next().unwrap().to_owned();
    let line_no = parts
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no line number: {line}"));
    (file, line_no, rule)
}

#[test]
fn validate_reports_every_problem_with_file_line_and_rule() {
    let (tmp, expected) = broken_pack();
    let run = arbiter(["validate", path_str(tmp.path())], None);
    assert_eq!(
        run.code, 2,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    assert!(
        run.stdout.trim().is_empty(),
        "nothing on stdout: {}",
        run.stdout
    );
    let found: HashSet<(String, usize, String)> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .map(parse_problem)
        .collect();
    let want: HashSet<(String, usize, String)> = expected
        .iter()
        .map(|(f, l, r)| ((*f).to_owned(), *l, (*r).to_owned()))
        .collect();
    assert_eq!(found, want, "stderr:\n{}", run.stderr);

    // --json does not hide the problems or the exit code.
    let json = arbiter(["validate", path_str(tmp.path()), "--json"], None);
    assert_eq!(json.code, 2);
    assert_eq!(
        json.stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .count(),
        want.len(),
        "{}",
        json.stderr
    );
}

#[test]
fn check_and_test_refuse_a_broken_pack() {
    let (tmp, _) = broken_pack();
    let request = jsonl(tmp.path(), "r.jsonl", &[mint("2026-11-26T10:00:00Z")]);
    let check = arbiter(
        [
            "check",
            path_str(tmp.path()),
            "--requests",
            path_str(&request),
            "--json",
        ],
        None,
    );
    assert_eq!(check.code, 2, "{}", check.stderr);
    assert!(check.stdout.trim().is_empty(), "{}", check.stdout);
    assert!(check.stderr.contains("a.bad-mode"), "{}", check.stderr);

    let test = arbiter(["test", path_str(tmp.path())], None);
    assert_eq!(test.code, 2, "{}", test.stderr);
    assert!(test.stderr.contains("a.bad-mode"), "{}", test.stderr);
}

// --------------------------------------------------------------------------- check

fn session_file() -> PathBuf {
    example().join("requests/agent-session.jsonl")
}

fn check_json_file(file: &Path) -> Run {
    let pack = example();
    arbiter(
        [
            "check",
            path_str(&pack),
            "--requests",
            path_str(file),
            "--json",
        ],
        None,
    )
}

#[test]
fn check_decides_the_example_agent_session() {
    let run = check_json_file(&session_file());
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let d = run.json_lines();
    assert_eq!(d.len(), 4, "{}", run.stdout);

    // Every response has the full shape.
    for decision in &d {
        for key in [
            "decision",
            "effect",
            "retry_after_s",
            "enforced",
            "warnings",
            "audit",
            "errors",
            "reason",
            "decision_id",
            "policy_version",
        ] {
            assert!(decision.get(key).is_some(), "no `{key}` in {decision}");
        }
    }

    // 1. A staging secret read: allowed, nothing fired.
    assert_eq!(d[0]["decision"], "allow");
    assert_eq!(d[0]["effect"], Value::Null);
    assert_eq!(d[0]["enforced"], json!([]));
    assert_eq!(d[0]["audit"], json!([]));

    // 2. Egress in the same session: revoked.
    assert_eq!(d[1]["decision"], "deny");
    assert_eq!(d[1]["effect"], "revoke");
    assert_eq!(d[1]["enforced"], json!(["agent.no-egress-after-secret"]));

    // 3. The session is terminated.
    assert_eq!(d[2]["decision"], "deny");
    assert_eq!(d[2]["reason"], "session:terminated");

    // 4. Outside the support agent's allow-list; the audit rule is still recorded.
    assert_eq!(d[3]["decision"], "deny");
    assert_eq!(d[3]["effect"], "deny");
    assert_eq!(d[3]["enforced"], json!(["default-deny:Agent"]));
    let audit = d[3]["audit"].as_array().unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a["rule"] == "egress.unapproved-endpoint" && a["would"] == "deny"),
        "{}",
        d[3]
    );

    // Decision ids are distinct ULIDs; the policy version is the pack's.
    let ids: HashSet<&str> = d
        .iter()
        .map(|x| x["decision_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 4, "{ids:?}");
    for id in &ids {
        assert_eq!(id.len(), 26, "{id}");
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric()), "{id}");
    }
    let pack = example();
    let validate = arbiter(["validate", path_str(&pack), "--json"], None);
    let version = &validate.json_lines()[0]["policy_version"];
    for decision in &d {
        assert_eq!(&decision["policy_version"], version);
    }
}

#[test]
fn check_reads_standard_input_like_a_file() {
    let from_file: Vec<Value> = check_json_file(&session_file())
        .json_lines()
        .iter()
        .map(stable)
        .collect();
    assert_eq!(from_file.len(), 4);
    let text = fs::read_to_string(session_file()).unwrap();
    let pack = example();

    let dash = arbiter(
        ["check", path_str(&pack), "--requests", "-", "--json"],
        Some(&text),
    );
    assert_eq!(dash.code, 0, "{}", dash.stderr);
    let dash: Vec<Value> = dash.json_lines().iter().map(stable).collect();
    assert_eq!(dash, from_file);

    let bare = arbiter(["check", path_str(&pack), "--json"], Some(&text));
    assert_eq!(bare.code, 0, "{}", bare.stderr);
    let bare: Vec<Value> = bare.json_lines().iter().map(stable).collect();
    assert_eq!(bare, from_file);
}

#[test]
fn check_human_output_numbers_lines_and_names_outcomes() {
    let pack = example();
    let file = session_file();
    let run = arbiter(
        ["check", path_str(&pack), "--requests", path_str(&file)],
        None,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", run.stdout);
    assert!(lines[0].starts_with("1: ALLOW"), "{}", lines[0]);
    assert!(lines[1].starts_with("2: DENY (revoke)"), "{}", lines[1]);
    assert!(
        lines[1].contains("agent.no-egress-after-secret"),
        "{}",
        lines[1]
    );
    assert!(lines[2].contains("session:terminated"), "{}", lines[2]);
    assert!(lines[3].contains("default-deny:Agent"), "{}", lines[3]);
}

#[test]
fn check_single_request_file() {
    let pack = example();
    let file = pack.join("requests/support-bot-reads-ticket.json");
    let run = arbiter(
        [
            "check",
            path_str(&pack),
            "--json",
            "--request",
            path_str(&file),
        ],
        None,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let d = run.json_lines();
    assert_eq!(d.len(), 1, "{}", run.stdout);
    assert_eq!(d[0]["decision"], "allow");
    assert_eq!(d[0]["enforced"], json!([]));
}

#[test]
fn check_reports_invalid_lines_in_place_and_keeps_going() {
    let tmp = tempfile::tempdir().unwrap();
    let read_secret = json!({
        "principal": "Agent::\"ops-copilot\"",
        "action": "Action::\"read_secret\"",
        "resource": "Secret::\"staging/db-password\"",
        "session": "s1",
        "time": "2026-11-26T10:00:00Z",
    });
    let mut unknown_field = read_secret.clone();
    unknown_field["colour"] = json!("red");
    let mut reserved = read_secret.clone();
    reserved["context"] = json!({"session": {"id": "forged", "touched": []}});
    let mut unknown_action = read_secret.clone();
    unknown_action["action"] = json!("Action::\"launch_rockets\"");
    let egress = json!({
        "principal": "Agent::\"ops-copilot\"",
        "action": "Action::\"http_request\"",
        "resource": "Endpoint::\"api.github.com\"",
        "context": {"method": "GET", "path": "/"},
        "session": "s1",
        "time": "2026-11-26T10:00:30Z",
    });
    let lines = [
        read_secret.to_string(),
        r#"{"principal": "Agent::\"ops-copilot\"", "#.to_owned(),
        unknown_field.to_string(),
        reserved.to_string(),
        String::new(),
        unknown_action.to_string(),
        egress.to_string(),
    ];
    let path = tmp.path().join("mixed.jsonl");
    fs::write(&path, lines.join("\n") + "\n").unwrap();

    let run = check_json_file(&path);
    assert_eq!(run.code, 2, "stderr: {}", run.stderr);
    assert!(
        run.stderr.contains('4'),
        "the count of invalid requests: {}",
        run.stderr
    );
    let out = run.json_lines();
    // One output line per non-blank input line, in order.
    assert_eq!(out.len(), 6, "{}", run.stdout);
    let code = |v: &Value| v["error"]["code"].as_str().map(str::to_owned);
    assert_eq!(out[0]["decision"], "allow");
    assert_eq!(
        code(&out[1]).as_deref(),
        Some("malformed_request"),
        "{}",
        out[1]
    );
    assert_eq!(
        code(&out[2]).as_deref(),
        Some("malformed_request"),
        "{}",
        out[2]
    );
    assert_eq!(
        code(&out[3]).as_deref(),
        Some("reserved_context_key"),
        "{}",
        out[3]
    );
    assert_eq!(
        code(&out[4]).as_deref(),
        Some("invalid_request"),
        "{}",
        out[4]
    );
    for refused in &out[1..5] {
        let message = refused["error"]["message"].as_str().unwrap();
        assert!(!message.is_empty(), "{refused}");
        assert!(refused.get("decision").is_none(), "{refused}");
    }
    assert!(
        out[2]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("colour"),
        "{}",
        out[2]
    );
    assert!(
        out[3]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("session"),
        "{}",
        out[3]
    );
    assert!(
        out[4]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("launch_rockets"),
        "{}",
        out[4]
    );
    // The session survived the invalid lines in between: egress after the secret read is
    // still the revoke.
    assert_eq!(out[5]["decision"], "deny", "{}", out[5]);
    assert_eq!(out[5]["effect"], "revoke", "{}", out[5]);
}

/// Four tokens minted at 10:00:00, :01, :02 and :03, then one more `after` seconds after
/// the fourth for each of `after`; the decisions and the fourth's `retry_after_s`.
fn mint_burst(after: &[u64]) -> (Vec<Value>, u64) {
    let tmp = tempfile::tempdir().unwrap();
    let at = |s: u64| format!("2026-11-26T10:{:02}:{:02}Z", (3 + s) / 60, (3 + s) % 60);
    let mut requests = vec![
        mint("2026-11-26T10:00:00Z"),
        mint("2026-11-26T10:00:01Z"),
        mint("2026-11-26T10:00:02Z"),
        mint(&at(0)),
    ];
    requests.extend(after.iter().map(|s| mint(&at(*s))));
    let run = check_json_file(&jsonl(tmp.path(), "mint.jsonl", &requests));
    assert_eq!(run.code, 0, "{}", run.stderr);
    let d = run.json_lines();
    assert_eq!(d.len(), requests.len(), "{}", run.stdout);
    for allowed in &d[..3] {
        assert_eq!(allowed["decision"], "allow", "{allowed}");
        assert_eq!(allowed["retry_after_s"], Value::Null, "{allowed}");
    }
    let fourth = &d[3];
    assert_eq!(fourth["decision"], "deny", "{fourth}");
    assert_eq!(fourth["effect"], "throttle", "{fourth}");
    assert_eq!(
        fourth["enforced"],
        json!(["tokens.agent-mint-rate"]),
        "{fourth}"
    );
    let retry = fourth["retry_after_s"].as_u64().expect("retry_after_s");
    // 3/1m refills one token every 20 s.
    assert!((1..=20).contains(&retry), "{fourth}");
    (d, retry)
}

#[test]
fn check_throttles_the_fourth_token_and_refills() {
    let (_, retry) = mint_burst(&[]);
    // One second before `retry_after_s` is up, still throttled; at it, allowed.
    let (d, again) = mint_burst(&[retry - 1, retry]);
    assert_eq!(again, retry, "same requests, same retry_after_s");
    assert_eq!(d[4]["decision"], "deny", "{}", d[4]);
    assert_eq!(d[4]["effect"], "throttle", "{}", d[4]);
    assert!(d[4]["retry_after_s"].as_u64().unwrap() >= 1, "{}", d[4]);
    assert_eq!(d[5]["decision"], "allow", "{}", d[5]);
    assert_eq!(d[5]["enforced"], json!([]), "{}", d[5]);
}

/// One second before the unit is back, `retry_after_s` says 1.
#[test]
fn retry_after_counts_down_to_one() {
    let (_, retry) = mint_burst(&[]);
    let (d, _) = mint_burst(&[retry - 1]);
    assert_eq!(d[4]["effect"], "throttle", "{}", d[4]);
    assert_eq!(d[4]["retry_after_s"], 1, "{}", d[4]);
}

#[test]
fn sessions_are_kept_per_principal() {
    let tmp = tempfile::tempdir().unwrap();
    // ops-copilot's session s1 is terminated by the example session; support-bot's s1 is
    // another session.
    let mut requests: Vec<Value> = fs::read_to_string(session_file())
        .unwrap()
        .lines()
        .take(2)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    requests.push(json!({
        "principal": "Agent::\"support-bot\"",
        "action": "Action::\"read_ticket\"",
        "resource": "Ticket::\"T-1\"",
        "session": "s1",
        "time": "2026-11-26T10:01:00Z",
    }));
    let run = check_json_file(&jsonl(tmp.path(), "two.jsonl", &requests));
    assert_eq!(run.code, 0, "{}", run.stderr);
    let d = run.json_lines();
    assert_eq!(d.len(), 3, "{}", run.stdout);
    assert_eq!(d[1]["effect"], "revoke", "{}", d[1]);
    assert_eq!(d[2]["decision"], "allow", "{}", d[2]);
}

#[test]
fn check_names_a_missing_request_file() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-request.json");
    let pack = example();
    for flag in ["--request", "--requests"] {
        let run = arbiter(
            ["check", path_str(&pack), flag, path_str(&missing), "--json"],
            None,
        );
        assert_eq!(run.code, 2, "{flag}: {}", run.stderr);
        assert!(run.stdout.trim().is_empty(), "{flag}: {}", run.stdout);
        assert!(
            run.stderr.contains("no-such-request.json"),
            "{flag}: {}",
            run.stderr
        );
    }
}

/// A line that is not UTF-8 is an invalid request like any other: reported on its line,
/// the lines after it still decided, exit 2 at the end.
#[test]
fn check_keeps_going_after_a_line_that_is_not_utf8() {
    let tmp = tempfile::tempdir().unwrap();
    let text = fs::read_to_string(session_file()).unwrap();
    let mut bytes = Vec::new();
    let first = text.lines().next().unwrap();
    let last = text.lines().last().unwrap();
    bytes.extend_from_slice(first.as_bytes());
    bytes.extend_from_slice(b"\n\xff\xfe\n");
    bytes.extend_from_slice(last.as_bytes());
    bytes.push(b'\n');
    let path = tmp.path().join("bytes.jsonl");
    fs::write(&path, bytes).unwrap();
    let run = check_json_file(&path);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let d = run.json_lines();
    assert_eq!(d.len(), 3, "{}", run.stdout);
    assert_eq!(d[0]["decision"], "allow");
    assert_eq!(d[1]["error"]["code"], "malformed_request");
    assert_eq!(d[2]["decision"], "deny");
}

// ---------------------------------------------------------------------------- test

#[test]
fn test_runs_the_example_pack_tests() {
    let n = example_test_count();
    let pack = example();
    let run = arbiter(["test", path_str(&pack)], None);
    assert_eq!(
        run.code, 0,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    assert!(
        run.stdout.contains(&format!("running {n} tests")),
        "{}",
        run.stdout
    );
    assert_eq!(
        run.stdout
            .lines()
            .filter(|l| l.starts_with("test ") && l.ends_with(" ... ok"))
            .count(),
        n,
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("FAILED"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains(&format!("test result: ok. {n} passed, 0 failed")),
        "{}",
        run.stdout
    );
}

#[test]
fn test_reports_a_wrong_expectation_with_its_step_and_field() {
    let (_tmp, pack) = example_copy();
    let file = pack.join("tests/enforce.yaml");
    let text = fs::read_to_string(&file).unwrap();
    let right = "retry_after_s: 18";
    assert_eq!(
        text.matches(right).count(),
        1,
        "the example's throttle test changed; pick another expectation to break"
    );
    // The throttled request is the 4th step of its test.
    fs::write(&file, text.replace(right, "retry_after_s: 5")).unwrap();

    let n = example_test_count();
    let run = arbiter(["test", path_str(&pack)], None);
    assert_eq!(
        run.code, 1,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    let out = &run.stdout;
    let failed: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("test ") && l.ends_with(" ... FAILED"))
        .collect();
    assert_eq!(failed.len(), 1, "{out}");
    assert!(failed[0].contains("tests/enforce.yaml::"), "{}", failed[0]);
    assert!(failed[0].contains("throttle"), "{}", failed[0]);
    let why = out
        .lines()
        .find(|l| l.contains("retry_after_s"))
        .unwrap_or_else(|| panic!("no failure line naming the field: {out}"));
    assert!(why.contains("step 4"), "{why}");
    assert!(why.contains('5') && why.contains("18"), "{why}");
    assert!(
        out.contains(&format!("test result: FAILED. {} passed, 1 failed", n - 1)),
        "{out}"
    );
}

#[test]
fn test_names_every_broken_test_file() {
    let (_tmp, pack) = example_copy();
    // Not YAML at all.
    fs::write(
        pack.join("tests/zz-syntax.yaml"),
        "- name: broken\n  steps: [unclosed\n",
    )
    .unwrap();
    // YAML, but the expectation has a misspelt key.
    fs::write(
        pack.join("tests/zz-typo.yml"),
        "- name: typo\n  steps:\n    - request:\n        principal: 'Agent::\"support-bot\"'\n        \
         action: 'Action::\"read_ticket\"'\n        resource: 'Ticket::\"T-1\"'\n      \
         expect: { decison: allow }\n",
    )
    .unwrap();
    let run = arbiter(["test", path_str(&pack)], None);
    assert_eq!(
        run.code, 2,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    assert!(
        !run.stdout.contains("test result"),
        "no tests run: {}",
        run.stdout
    );
    assert!(
        run.stderr.contains("tests/zz-syntax.yaml:"),
        "{}",
        run.stderr
    );
    let typo = run
        .stderr
        .lines()
        .find(|l| l.contains("tests/zz-typo.yml"))
        .unwrap_or_else(|| panic!("the misspelt file is not named: {}", run.stderr));
    assert!(typo.contains("decison"), "{typo}");
}

// ------------------------------------------------------------------------- token

#[test]
fn token_issue_revoke_list_and_rotate_on_a_data_directory() {
    let data = tempfile::tempdir().unwrap();
    let d = data.path().to_str().unwrap();
    let pack = example();
    let p = pack.to_str().unwrap();
    let issued = arbiter(
        [
            "token",
            "issue",
            "--pack",
            p,
            "--data",
            d,
            "--principal",
            "Agent::\"support-bot\"",
            "--ttl",
            "10m",
            "--intent",
            "triage",
            "--session",
            "s1",
            "--json",
        ],
        None,
    );
    assert_eq!(issued.code, 0, "{}", issued.stderr);
    let minted = &issued.json_lines()[0];
    let token = minted["token"].as_str().unwrap();
    assert_eq!(token.split('.').count(), 3);
    let jti = minted["jti"].as_str().unwrap();

    // Too long for the intent, an unknown intent, an unknown type: exit 2, and why.
    for (args, says) in [
        (["--ttl", "45m", "--intent", "triage"], "triage"),
        (["--ttl", "2h", "--session", "s"], "max_ttl"),
        (["--ttl", "5m", "--intent", "nope"], "nope"),
    ] {
        let mut all = vec![
            "token",
            "issue",
            "--pack",
            p,
            "--data",
            d,
            "--principal",
            "Agent::\"support-bot\"",
        ];
        all.extend(args);
        let mut cmd = Command::cargo_bin("arbiter").unwrap();
        let out = cmd.args(&all).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{all:?}: {stderr}");
        assert!(stderr.contains(says), "{stderr} mentions {says}");
    }
    let robot = arbiter(
        [
            "token",
            "issue",
            "--pack",
            p,
            "--data",
            d,
            "--principal",
            "Robot::\"r\"",
            "--ttl",
            "5m",
        ],
        None,
    );
    assert_eq!(robot.code, 2);
    assert!(
        robot.stderr.contains("no entity type `Robot`"),
        "{}",
        robot.stderr
    );

    let revoked = arbiter(
        [
            "token", "revoke", "--data", d, "--jti", jti, "--reason", "test", "--by", "ci",
        ],
        None,
    );
    assert_eq!(revoked.code, 0, "{}", revoked.stderr);
    assert!(
        revoked.stdout.starts_with(&format!("revoked jti {jti}")),
        "{}",
        revoked.stdout
    );
    let session = arbiter(
        [
            "token",
            "revoke",
            "--data",
            d,
            "--session",
            "s1",
            "--principal",
            "Agent::\"support-bot\"",
            "--reason",
            "done",
        ],
        None,
    );
    assert_eq!(session.code, 0, "{}", session.stderr);
    let neither = arbiter(["token", "revoke", "--data", d, "--reason", "x"], None);
    assert_eq!(neither.code, 2);
    let listed = arbiter(["token", "revocations", "--data", d, "--json"], None);
    let all = &listed.json_lines()[0]["revocations"];
    assert_eq!(all.as_array().unwrap().len(), 2, "{all}");
    assert_eq!(
        (&all[0]["kind"], &all[0]["value"], &all[0]["by"]),
        (&json!("jti"), &json!(jti), &json!("ci"))
    );
    assert_eq!(
        (&all[1]["kind"], &all[1]["principal"]),
        (&json!("session"), &json!("Agent::\"support-bot\""))
    );

    let kid = |token: &str| -> String {
        use base64::Engine as _;
        let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap();
        serde_json::from_slice::<Value>(&header).unwrap()["kid"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let rotated = arbiter(["token", "rotate-key", "--pack", p, "--data", d], None);
    assert_eq!(rotated.code, 0, "{}", rotated.stderr);
    assert_eq!(fs::read_dir(data.path().join("keys")).unwrap().count(), 2);
    let again = arbiter(
        [
            "token",
            "issue",
            "--pack",
            p,
            "--data",
            d,
            "--principal",
            "Agent::\"support-bot\"",
            "--ttl",
            "1m",
        ],
        None,
    );
    let new_kid = kid(again.stdout.trim());
    assert_ne!(new_kid, kid(token));
    assert!(
        rotated
            .stdout
            .starts_with(&format!("new signing key {new_kid}")),
        "{}",
        rotated.stdout
    );
}

// ------------------------------------------------- finding 8: only regular files, bounded

/// Runs `arbiter ARGS`, killing it past a bounded deadline: a FIFO used to block
/// `validate` forever, and a symlink to `/dev/zero` to read until memory ran out.
fn arbiter_within_deadline(args: &[&str]) -> Run {
    let output = Command::cargo_bin("arbiter")
        .unwrap()
        .args(args)
        .timeout(std::time::Duration::from_secs(60))
        .output()
        .unwrap();
    Run {
        code: output
            .status
            .code()
            .expect("arbiter finished before the deadline (it was killed)"),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

#[cfg(unix)]
fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

#[cfg(unix)]
#[test]
fn validate_pack_file_that_is_a_fifo_or_a_symlink_to_dev_zero_exits_2_naming_the_file() {
    let (_tmp, pack) = example_copy();
    mkfifo(&pack.join("policies/fifo.cedar"));
    std::os::unix::fs::symlink("/dev/zero", pack.join("policies/zero.cedar")).unwrap();
    let run = arbiter_within_deadline(&["validate", path_str(&pack)]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "error: policies/fifo.cedar: not a regular file (it is a FIFO): only regular files are read"
        ),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("error: policies/zero.cedar: not a regular file (it is a character device)"),
        "{}",
        run.stderr
    );
}

#[cfg(unix)]
#[test]
fn check_request_files_that_are_a_fifo_or_dev_zero_are_errors_not_a_hang() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("requests.jsonl");
    mkfifo(&fifo);
    let pack = example();
    for (flag, file) in [("--requests", path_str(&fifo)), ("--request", "/dev/zero")] {
        let run = arbiter_within_deadline(&["check", path_str(&pack), flag, file, "--json"]);
        assert_eq!(run.code, 2, "{flag}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "{flag}: {}", run.stdout);
        assert!(
            run.stderr.contains(&format!("{file}: not a regular file")),
            "{flag}: {}",
            run.stderr
        );
    }
}

#[test]
fn check_requests_line_longer_than_16_mib_is_an_error_not_an_unbounded_read() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("long.jsonl");
    // Sparse, and without a newline: one line one byte past the limit.
    fs::File::create(&path)
        .unwrap()
        .set_len(16 * 1024 * 1024 + 1)
        .unwrap();
    let run = arbiter_within_deadline(&[
        "check",
        path_str(&example()),
        "--requests",
        path_str(&path),
        "--json",
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("long.jsonl: line 1 is longer than the limit of 16777216 bytes (16 MiB)"),
        "{}",
        run.stderr
    );
}

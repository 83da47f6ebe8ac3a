//! `arbiter serve` as a process: it answers on a loopback port, and nothing it
//! acknowledged is lost — under `--durability sync` even when killed with SIGKILL, by
//! default when stopped with SIGTERM (the log drains). `arbiter log` reads the result.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/agents-and-pipelines")
}

struct Running {
    child: Child,
    base: String,
}

/// Starts the server on an ephemeral loopback port and reads the address it prints.
fn start(data: &Path, durability: &str) -> Running {
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("arbiter"))
        .args(["serve", "--pack"])
        .arg(example())
        .arg("--data")
        .arg(data)
        .args(["--listen", "127.0.0.1:0", "--durability", durability])
        .env("ARBITER_ADMIN_TOKEN", "admin-secret")
        .env("ARBITER_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let base = loop {
        let line = lines
            .next()
            .expect("the server prints its address")
            .unwrap();
        if let Some(addr) = line.strip_prefix("arbiter listening on ") {
            break addr.trim().to_owned();
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Running { child, base }
}

/// Clients deciding in a loop until `stop` is set or `max` answers came back; returns
/// the decision ids they received.
fn load(base: &str, clients: usize, max: usize, stop: Arc<Mutex<bool>>) -> Arc<Mutex<Vec<String>>> {
    let received = Arc::new(Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for c in 0..clients {
        let base = base.to_owned();
        let received = Arc::clone(&received);
        let stop = Arc::clone(&stop);
        handles.push(std::thread::spawn(move || {
            let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
            let body = json!({"principal": "Agent::\"support-bot\"", "action": "Action::\"read_ticket\"",
                "resource": "Ticket::\"T-1\"", "session": format!("load-{c}")});
            loop {
                if *stop.lock().unwrap() || received.lock().unwrap().len() >= max {
                    break;
                }
                let Ok(response) = client.post(format!("{base}/v1/decide")).json(&body).send() else {
                    break;
                };
                let Ok(answer) = response.json::<Value>() else { break };
                if let Some(id) = answer["decision_id"].as_str() {
                    received.lock().unwrap().push(id.to_owned());
                }
            }
        }));
    }
    std::thread::spawn(move || {
        for h in handles {
            let _ = h.join();
        }
    })
    .join()
    .unwrap();
    received
}

fn logged_ids(data: &Path) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut cmd = assert_cmd::Command::cargo_bin("arbiter").unwrap();
        cmd.args(["log", "--json", "--limit", "1000", "--data"])
            .arg(data);
        if let Some(c) = &cursor {
            cmd.args(["--cursor", c]);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let page: Value = serde_json::from_slice(&out.stdout).unwrap();
        for d in page["decisions"].as_array().unwrap() {
            ids.insert(d["decision_id"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    ids
}

#[test]
fn sync_durability_loses_nothing_acknowledged_under_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = start(&data, "sync");
    let stop = Arc::new(Mutex::new(false));
    let base = server.base.clone();
    let stopper = Arc::clone(&stop);
    let loader = std::thread::spawn(move || load(&base, 4, 100_000, stopper));
    // Kill once some answers are in (bounded wait), while clients are still sending.
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if server.child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::yield_now();
        if logged_count_hint(&data) >= 150 {
            break;
        }
    }
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    *stop.lock().unwrap() = true;
    let received: Vec<String> = loader.join().unwrap().lock().unwrap().clone();
    assert!(
        !received.is_empty(),
        "the clients got answers before the kill"
    );
    let logged = logged_ids(&data);
    let missing: Vec<&String> = received.iter().filter(|id| !logged.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged decisions are missing after SIGKILL",
        missing.len()
    );
}

/// How many decisions the log holds (through `arbiter log`), to time the kill.
fn logged_count_hint(data: &Path) -> usize {
    let out = assert_cmd::Command::cargo_bin("arbiter")
        .unwrap()
        .args(["log", "--json", "--limit", "1000", "--data"])
        .arg(data)
        .output()
        .unwrap();
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|p| p["decisions"].as_array().map(Vec::len))
        .unwrap_or(0)
}

#[test]
fn batched_durability_drains_everything_acknowledged_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = start(&data, "batched");
    let stop = Arc::new(Mutex::new(false));
    let received: Vec<String> = load(&server.base, 4, 400, Arc::clone(&stop))
        .lock()
        .unwrap()
        .clone();
    assert!(received.len() >= 400, "{} answers", received.len());
    let status = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "a clean stop on SIGTERM: {exit:?}");
    let logged = logged_ids(&data);
    assert!(
        received.iter().all(|id| logged.contains(id)),
        "every acknowledged decision is in the log"
    );
    assert_eq!(logged.len(), received.len());
}

/// A data directory holding `n` logged decisions, written through the store's own log
/// writer (as a server writes them, without the cost of `n` HTTP requests) and then
/// closed cleanly, as a stopped server leaves it: no `-wal` or `-shm` file beside the
/// database.
fn logged_data_dir(n: u64) -> tempfile::TempDir {
    use arbiter_store::{DecisionRecord, Durability, LogWriter, Logged, Store};
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = Store::open(dir.path()).unwrap();
        let writer = LogWriter::start(&store, Durability::Batched, 1024).unwrap();
        let start = jiff::Timestamp::from_second(1_795_687_200).unwrap();
        for i in 0..n {
            let time = start
                .checked_add(jiff::SignedDuration::from_millis(i64::try_from(i).unwrap()))
                .unwrap();
            let principal = format!(r#"Agent::"bot-{i}""#);
            let resource = format!(r#"Ticket::"T-{i}""#);
            writer
                .append(DecisionRecord {
                    decision_id: format!("01KDECISION{i:015}"),
                    time,
                    policy_version: "sha256:pack".to_owned(),
                    principal: Some(principal.clone()),
                    action: Some(r#"Action::"read_ticket""#.to_owned()),
                    resource: Some(resource.clone()),
                    session: None,
                    credential_id: None,
                    credential: None,
                    decision: Logged::Allow,
                    effect: None,
                    enforced: vec![],
                    warnings: vec![],
                    audit: vec![],
                    errors: vec![],
                    reason: None,
                    error: None,
                    latency_us: 10,
                    request: json!({"principal": principal, "action": r#"Action::"read_ticket""#,
                        "resource": resource, "context": {}}),
                    novel: None,
                    mcp: None,
                    evidence: Default::default(),
                })
                .await
                .unwrap();
        }
        writer.shutdown().await.unwrap();
    });
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.ends_with("-wal") || n.ends_with("-shm")),
        "a clean close leaves no -wal or -shm: {names:?}"
    );
    dir
}

/// Finding 11: `println!` panicked (exit 101, "failed printing to stdout") when the
/// reader closed the pipe early. More output than a pipe buffers (1,000 rows, well over
/// 64 KiB) makes the writer meet the closed pipe for certain.
#[test]
fn log_into_a_reader_that_closes_after_the_first_line_exits_quietly_not_with_a_panic() {
    use std::io::Read as _;
    let data = logged_data_dir(1000);
    for json in [false, true] {
        let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("arbiter"));
        cmd.args(["log", "--limit", "1000", "--data"])
            .arg(data.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if json {
            cmd.arg("--json");
        }
        let mut child = cmd.spawn().unwrap();
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        if json {
            // One long line: read its start only.
            let mut start = [0_u8; 64];
            reader.read_exact(&mut start).unwrap();
            first = String::from_utf8_lossy(&start).into_owned();
        } else {
            reader.read_line(&mut first).unwrap();
        }
        assert!(!first.is_empty());
        drop(reader);
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "--json {json}: {stderr}");
        assert!(!stderr.contains("panicked"), "--json {json}: {stderr}");
        assert!(stderr.is_empty(), "quietly: {stderr}");
    }
}

/// What a directory holds: each entry's name, length, mode and modification time.
fn listing(dir: &Path) -> BTreeSet<(String, u64, u32, std::time::SystemTime)> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut entries = BTreeSet::new();
    for path in std::iter::once(dir.to_owned())
        .chain(std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()))
    {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        entries.insert((
            path.file_name().unwrap().to_string_lossy().into_owned(),
            meta.len(),
            meta.permissions().mode(),
            meta.modified().unwrap(),
        ));
    }
    entries
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Finding 13: the read-only commands opened the database read-only but still needed to
/// create SQLite's `-wal` and `-shm` files beside it, so they failed on a read-only data
/// directory (a backup, a mounted snapshot, a directory owned by the server's user).
/// Tests run as root, which ignores permission bits, so this asserts what a read-only
/// directory requires: the commands create and change nothing in it.
#[test]
fn read_only_commands_on_a_read_only_data_directory_create_and_change_nothing() {
    let data = logged_data_dir(50);
    let d = data.path().to_str().unwrap().to_owned();
    let pack = example();
    let p = pack.to_str().unwrap().to_owned();
    for entry in std::fs::read_dir(data.path()).unwrap() {
        set_mode(&entry.unwrap().path(), 0o444);
    }
    set_mode(data.path(), 0o555);
    let before = listing(data.path());
    let commands: [&[&str]; 6] = [
        &["log", "--data", &d],
        &["log", "--json", "--data", &d],
        &["findings", "--data", &d],
        &["readiness", "--pack", &p, "--data", &d],
        &["baseline", "--data", &d],
        &["token", "revocations", "--data", &d],
    ];
    for args in commands {
        let out = assert_cmd::Command::cargo_bin("arbiter")
            .unwrap()
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            listing(data.path()),
            before,
            "{args:?} changed the data directory"
        );
    }
    let out = assert_cmd::Command::cargo_bin("arbiter")
        .unwrap()
        .args(["log", "--json", "--limit", "1000", "--data", &d])
        .output()
        .unwrap();
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(page["decisions"].as_array().unwrap().len(), 50);
    set_mode(data.path(), 0o755);
}

/// Finding 14: `arbiter serve` refused a signing key or `mask.key` others could read, but
/// used an `admin.token` with mode 0644 without a word. Now it refuses to start (exit 2,
/// like every start error) and says which file, its mode and the fix. The deadline
/// bounds the run: before the fix the server started and served.
#[test]
fn serve_refuses_an_admin_token_readable_by_others() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let token = data.join("admin.token");
    std::fs::write(&token, "arb_0123456789abcdef").unwrap();
    set_mode(&token, 0o644);
    let out = assert_cmd::Command::cargo_bin("arbiter")
        .unwrap()
        .args(["serve", "--listen", "127.0.0.1:0", "--pack"])
        .arg(example())
        .arg("--data")
        .arg(&data)
        .env_remove("ARBITER_ADMIN_TOKEN")
        .env("ARBITER_LOG", "warn")
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{} can be read by other users (mode 644); run `chmod 600` on it",
            token.display()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("listening"), "{stderr}");
}

/// The process log on a pipe (a log collector, systemd, a container runtime) is plain
/// text: no colour escapes.
#[test]
fn the_process_log_on_a_pipe_has_no_colour_escapes() {
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("arbiter"))
        .args(["serve", "--pack"])
        .arg(example())
        .arg("--data")
        .arg(data.path())
        .args(["--listen", "127.0.0.1:0"])
        .env("ARBITER_LOG", "info")
        .env_remove("ARBITER_DATA")
        .env_remove("ARBITER_LISTEN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    // Up to the line after "listening" (the server's own "accepting connections").
    while let Some(Ok(line)) = lines.next() {
        let listening = line.starts_with("arbiter listening on ");
        seen.push(line);
        if listening {
            if let Some(Ok(next)) = lines.next() {
                seen.push(next);
            }
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen.iter().any(|l| l.contains(" INFO ")), "{seen:#?}");
    assert!(!seen.iter().any(|l| l.contains('\u{1b}')), "{seen:#?}");
}

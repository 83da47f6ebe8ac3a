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

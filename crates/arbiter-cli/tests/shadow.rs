//! `arbiter serve --candidate` as a process, and `arbiter candidate`: the candidate's
//! exact breaks are in the store, read by the CLI (read-only, while the server runs) as
//! `GET /v1/candidate` answers them; SIGHUP reloads the candidate, refusing a broken one
//! with its problems while the old one keeps deciding; bad flags and a broken candidate
//! exit 2 with what is wrong.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const ADMIN: &str = "admin-secret";
const WITHIN: Duration = Duration::from_secs(10);

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/agents-and-pipelines")
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn s(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// Sets the mode of `egress.unapproved-endpoint` in the pack at `pack`.
fn egress_mode(pack: &Path, from: &str, to: &str) {
    let file = pack.join("policies/egress.cedar");
    let text = fs::read_to_string(&file).unwrap();
    let from = format!("@id(\"egress.unapproved-endpoint\")\n@mode(\"{from}\")");
    assert!(text.contains(&from));
    let to = format!("@id(\"egress.unapproved-endpoint\")\n@mode(\"{to}\")");
    fs::write(&file, text.replacen(&from, &to, 1)).unwrap();
}

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn arbiter(args: &[&str]) -> Run {
    let output = assert_cmd::Command::cargo_bin("arbiter")
        .unwrap()
        .args(args)
        .env_remove("ARBITER_DATA")
        .env_remove("ARBITER_LISTEN")
        .output()
        .unwrap();
    Run {
        code: output.status.code().expect("not killed by a signal"),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// `arbiter serve` with a candidate, as a child process on a loopback port; its stderr
/// lines come through `lines`. Killed if the test fails.
struct Served {
    child: Child,
    base: String,
    lines: Receiver<String>,
    client: reqwest::blocking::Client,
}

impl Served {
    fn start(pack: &Path, candidate: &Path, data: &Path) -> Served {
        let mut child = Command::new(assert_cmd::cargo::cargo_bin("arbiter"))
            .args(["serve", "--pack", s(pack), "--data", s(data)])
            .args(["--candidate", s(candidate), "--candidate-sample", "1"])
            .args(["--listen", "127.0.0.1:0"])
            .env("ARBITER_ADMIN_TOKEN", ADMIN)
            .env("ARBITER_LOG", "warn")
            .env_remove("ARBITER_DATA")
            .env_remove("ARBITER_LISTEN")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (send, lines) = std::sync::mpsc::channel();
        // Forwards every line, and keeps draining so the server never blocks on a pipe.
        std::thread::spawn(move || {
            for line in stderr.lines() {
                let Ok(line) = line else { return };
                let _ = send.send(line);
            }
        });
        let mut served = Served {
            child,
            base: String::new(),
            lines,
            client: reqwest::blocking::Client::builder()
                .timeout(WITHIN)
                .build()
                .unwrap(),
        };
        let line = served.wait_for("arbiter listening on ");
        served.base = line
            .strip_prefix("arbiter listening on ")
            .unwrap()
            .trim()
            .to_owned();
        served
    }

    /// The first stderr line from now on that starts with `prefix`, within the deadline.
    fn wait_for(&self, prefix: &str) -> String {
        let deadline = Instant::now() + WITHIN;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    panic!("the server printed no line starting with {prefix:?}")
                }
            }
        }
    }

    fn decide(&self, request: &Value) -> Value {
        let response = self
            .client
            .post(format!("{}/v1/decide", self.base))
            .json(request)
            .send()
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().unwrap()
    }

    fn candidate(&self) -> Value {
        let response = self
            .client
            .get(format!("{}/v1/candidate", self.base))
            .bearer_auth(ADMIN)
            .send()
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().unwrap()
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM, and a clean exit.
    fn stop(mut self) {
        self.signal("TERM");
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "a clean stop: {exit:?}");
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `arbiter candidate --data DATA --json ARGS`, polled (bounded) until it reports `n`
/// requests decided in shadow.
fn shadowed(data: &Path, args: &[&str], n: u64) -> Value {
    let deadline = Instant::now() + WITHIN;
    loop {
        let mut all = vec!["candidate", "--data", s(data), "--json"];
        all.extend_from_slice(args);
        let run = arbiter(&all);
        assert_eq!(run.code, 0, "{run:?}");
        let report: Value = serde_json::from_str(&run.stdout).unwrap();
        if report["shadowed"] == n {
            return report;
        }
        assert!(
            Instant::now() < deadline,
            "{n} decided in shadow: {report:#}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn fetch() -> Value {
    json!({"principal": "CiJob::\"pr-checks\"", "action": "Action::\"http_request\"",
           "resource": "Endpoint::\"pastebin.com\"",
           "context": {"method": "GET", "path": "/raw/x"}})
}

fn read_ticket() -> Value {
    json!({"principal": "Agent::\"support-bot\"", "action": "Action::\"read_ticket\"",
           "resource": "Ticket::\"T-1\""})
}

#[test]
fn the_breaks_of_a_tightened_candidate_and_its_reload_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let pack = dir.path().join("pack");
    copy_dir(&example(), &pack);
    let candidate = dir.path().join("candidate");
    copy_dir(&example(), &candidate);
    egress_mode(&candidate, "audit", "enforce");
    let data = dir.path().join("data");
    let server = Served::start(&pack, &candidate, &data);

    let mut breaks = Vec::new();
    for request in [fetch(), read_ticket(), fetch()] {
        let answer = server.decide(&request);
        assert_eq!(answer["decision"], "allow");
        if request == fetch() {
            breaks.push(answer["decision_id"].clone());
        }
    }
    let report = shadowed(&data, &[], 3);
    assert_eq!(
        report["changes"],
        json!({"same": 1, "breaks": 2, "loosens": 0, "shifts": 0, "now_valid": 0,
               "now_invalid": 0})
    );
    assert_eq!(
        report["by_rule"],
        json!([{"key": "egress.unapproved-endpoint",
                "changes": {"same": 0, "breaks": 2, "loosens": 0, "shifts": 0,
                            "now_valid": 0, "now_invalid": 0},
                "examples": breaks}])
    );
    assert_eq!(report["by_principal"][0]["key"], "CiJob::\"pr-checks\"");
    assert_eq!(report["candidate"]["dir"], s(&candidate));
    // The CLI reads what the server answers.
    assert_eq!(server.candidate(), report);
    let human = arbiter(&["candidate", "--data", s(&data)]);
    assert_eq!(human.code, 0, "{human:?}");
    assert!(
        human.stdout.contains("\n3 decided in shadow from "),
        "{}",
        human.stdout
    );
    assert!(
        human.stdout.contains(
            "  egress.unapproved-endpoint: 2 breaks, 0 loosens, 0 shifts, 0 now valid, \
             0 now invalid  e.g. "
        ),
        "{}",
        human.stdout
    );
    let old = report["candidate"]["version"].as_str().unwrap().to_owned();

    // A broken candidate is refused on SIGHUP, with its problems; the old one decides on.
    fs::write(candidate.join("policies/broken.cedar"), "forbid (principal").unwrap();
    server.signal("HUP");
    server.wait_for("SIGHUP: candidate reload refused, the running candidate stays:");
    assert!(
        server
            .wait_for("error: ")
            .starts_with("error: policies/broken.cedar:1:")
    );
    server.decide(&fetch());
    let report = shadowed(&data, &[], 4);
    assert_eq!(report["candidate"]["version"], old.as_str());
    assert_eq!(report["changes"]["breaks"], 3);

    // A good one is put in shadow; the old one's differences stay readable.
    fs::remove_file(candidate.join("policies/broken.cedar")).unwrap();
    egress_mode(&candidate, "enforce", "audit");
    server.signal("HUP");
    let line = server.wait_for("SIGHUP: reloaded the candidate ");
    let new = line.rsplit(' ').next().unwrap().to_owned();
    assert_ne!(new, old);
    server.decide(&fetch());
    let report = shadowed(&data, &[], 1);
    assert_eq!(report["candidate"]["version"], new.as_str());
    assert_eq!(report["changes"]["same"], 1);
    let before = shadowed(&data, &["--version", &old], 4);
    assert_eq!(before["changes"]["breaks"], 3);
    server.stop();
}

#[test]
fn bad_flags_and_a_broken_candidate_exit_2_with_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let pack = example();
    let data = dir.path().join("data");
    for (flags, says) in [
        (
            vec!["--candidate", s(&pack), "--candidate-sample", "0"],
            "above 0",
        ),
        (
            vec!["--candidate", s(&pack), "--candidate-sample", "1.5"],
            "at most 1",
        ),
        (
            vec!["--candidate", s(&pack), "--candidate-sample", "a tenth"],
            "not a number",
        ),
        (vec!["--candidate-sample", "0.5"], "--candidate"),
    ] {
        let mut args = vec!["serve", "--pack", s(&pack), "--data", s(&data)];
        args.extend(flags.iter().copied());
        let run = arbiter(&args);
        assert_eq!(run.code, 2, "{flags:?}: {run:?}");
        assert!(run.stderr.contains(says), "{flags:?}: {}", run.stderr);
    }

    let candidate = dir.path().join("candidate");
    copy_dir(&example(), &candidate);
    fs::write(candidate.join("policies/broken.cedar"), "forbid (principal").unwrap();
    let run = arbiter(&[
        "serve",
        "--pack",
        s(&pack),
        "--data",
        s(&data),
        "--candidate",
        s(&candidate),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("the candidate pack {}:", candidate.display())),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("error: policies/broken.cedar:1:"),
        "{}",
        run.stderr
    );

    // No store; a store no candidate ever decided in; a version it does not hold.
    let run = arbiter(&["candidate", "--data", s(&data)]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("there is no arbiter database"),
        "{}",
        run.stderr
    );
    drop(arbiter_store::Store::open(&data).unwrap());
    let run = arbiter(&["candidate", "--data", s(&data), "--json"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("no candidate has decided in shadow here (serve with --candidate DIR)"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stdout, "");
    let run = arbiter(&["candidate", "--data", s(&data), "--version", "sha256:00"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("no candidate sha256:00 has decided in shadow here"),
        "{}",
        run.stderr
    );
}

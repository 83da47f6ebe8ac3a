//! What the CLI's end-to-end tests share: the example pack, running the binary, and
//! `arbiter serve` as a child process on a loopback port; the MCP peers (`mcp`) and a
//! headless browser (`browser`).

#![allow(dead_code, reason = "each test crate uses a part of it")]

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod browser;
pub mod mcp;

/// The admin token the servers of these tests take.
pub const ADMIN: &str = "cli-tests-admin-token";

/// How long a test waits for an event.
pub const WITHIN: Duration = Duration::from_secs(10);

pub fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/agents-and-pipelines")
}

pub fn copy_dir(from: &Path, to: &Path) {
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

pub fn s(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// `pack` with `from` replaced by `to` once in its file `file`.
pub fn edited(pack: &Path, file: &str, from: &str, to: &str) {
    let path = pack.join(file);
    let text = fs::read_to_string(&path).unwrap();
    let changed = text.replacen(from, to, 1);
    assert_ne!(changed, text, "{file} holds {from}");
    fs::write(path, changed).unwrap();
}

/// Sets the mode of `egress.unapproved-endpoint` (audit in the example) in `pack`.
pub fn egress_mode(pack: &Path, from: &str, to: &str) {
    edited(
        pack,
        "policies/egress.cedar",
        &format!("@id(\"egress.unapproved-endpoint\")\n@mode(\"{from}\")"),
        &format!("@id(\"egress.unapproved-endpoint\")\n@mode(\"{to}\")"),
    );
}

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\n--- stderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// Runs `arbiter ARGS` with `envs` set, and no `ARBITER_DATA` or `ARBITER_LISTEN` from
/// the caller's environment.
pub fn arbiter_with(args: &[&str], envs: &[(&str, &str)]) -> Run {
    let mut cmd = assert_cmd::Command::cargo_bin("arbiter").unwrap();
    cmd.args(args)
        .env_remove("ARBITER_DATA")
        .env_remove("ARBITER_LISTEN");
    for (key, value) in envs {
        cmd.env(key, value);
    }
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

pub fn arbiter(args: &[&str]) -> Run {
    arbiter_with(args, &[])
}

/// Runs `arbiter ARGS` and requires exit 0.
pub fn ok(args: &[&str]) -> Run {
    let run = arbiter(args);
    assert_eq!(run.code, 0, "arbiter {args:?}: {run:#?}");
    run
}

/// `arbiter serve` as a child process on a loopback port; its stderr lines come through
/// `wait_for`. Killed if the test fails.
pub struct Served {
    child: Child,
    pub base: String,
    lines: Receiver<String>,
    client: reqwest::blocking::Client,
}

impl Served {
    /// `arbiter serve --pack PACK --data DATA EXTRA…` with [`ADMIN`] as its admin token.
    pub fn start(pack: &Path, data: &Path, extra: &[&str]) -> Served {
        let mut child = Command::new(assert_cmd::cargo::cargo_bin("arbiter"))
            .args(["serve", "--pack", s(pack), "--data", s(data)])
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
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
    pub fn wait_for(&self, prefix: &str) -> String {
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

    /// The HTTP client the helpers use (its timeout is the deadline).
    pub fn client(&self) -> &reqwest::blocking::Client {
        &self.client
    }

    /// Decides `request`; it must be a decision.
    pub fn decide(&self, request: &Value) -> Value {
        let response = self
            .client
            .post(format!("{}/v1/decide", self.base))
            .json(request)
            .send()
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().unwrap()
    }

    /// `GET PATH` as the admin; it must answer 200.
    pub fn admin_get(&self, path: &str) -> Value {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(ADMIN)
            .send()
            .unwrap();
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().unwrap()
    }

    /// The logged record of decision `id`.
    pub fn record(&self, id: &str) -> Value {
        let page = self.admin_get("/v1/decisions?limit=1000");
        page["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["decision_id"] == id)
            .unwrap_or_else(|| panic!("decision {id} is logged"))
            .clone()
    }

    /// Sends signal `name` (`HUP`, `TERM`, …) to the server.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM, and a clean exit once the log is drained.
    pub fn stop(mut self) {
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

//! What the MCP end-to-end tests share: the peers `.ci/mcp-peers.sh` installs, a child
//! process run to its end under a deadline, a token for an agent, and the decisions a
//! data directory recorded.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{ok, s};

/// A peer's location from the environment `.ci/mcp-peers.sh` sets up.
pub fn peer(var: &str, what: &str) -> PathBuf {
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

/// The Python of the MCP SDK's venv.
pub fn python() -> PathBuf {
    peer("ARBITER_MCP_PYTHON", "the MCP Python SDK (pip `mcp`)")
}

/// A test fixture's path.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// What a finished process did.
#[derive(Debug)]
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    /// One JSON value per line of standard output.
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

/// Runs `command` to its end with `stdin` as its input; past `deadline` it is killed and
/// the test fails (a guard against a hang, not a measure).
pub fn run(mut command: Command, stdin: &[u8], deadline: Duration) -> Ran {
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
        if started.elapsed() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!(
                "still running after {deadline:?}; stderr:\n{}",
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

/// `arbiter token issue` for `principal`, against `data`'s keys, for ten minutes.
pub fn token(pack: &Path, data: &Path, principal: &str) -> String {
    let issued = ok(&[
        "token",
        "issue",
        "--pack",
        s(pack),
        "--data",
        s(data),
        "--principal",
        principal,
        "--ttl",
        "10m",
    ]);
    issued.stdout.trim().to_owned()
}

/// The decisions `data` recorded, oldest first.
pub fn decisions(data: &Path) -> Vec<Value> {
    let page = ok(&["log", "--data", s(data), "--json"]).json();
    let mut decisions = page["decisions"].as_array().unwrap().clone();
    decisions.reverse();
    decisions
}

/// [`decisions`], polled until there are at least `n` (the log writer batches) or 10 s
/// have passed.
pub fn decisions_when(data: &Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + super::WITHIN;
    loop {
        let decisions = decisions(data);
        if decisions.len() >= n || Instant::now() > deadline {
            return decisions;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

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
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;

use common::*;

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
    let server = Served::start(
        &pack,
        &data,
        &["--candidate", s(&candidate), "--candidate-sample", "1"],
    );

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
    assert_eq!(server.admin_get("/v1/candidate"), report);
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

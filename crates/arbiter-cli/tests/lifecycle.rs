//! The audit→enforce lifecycle from the command line (DESIGN §4, §5): `findings`,
//! `review`, `readiness`, `promote`, `demote` and `baseline` on the data directory a real
//! `arbiter serve` wrote, and on a copy of the example pack they edit.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::time::{Duration, Instant};

use arbiter_core::rule::Mode;
use arbiter_store::Store;
use serde_json::{Value, json};

mod common;

use common::*;

// ------------------------------------------------------------------------- helpers

/// Every file under `dir` with its bytes, by path relative to `dir`.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, files: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, files);
            } else {
                let bytes = fs::read(&path).unwrap();
                files.insert(path.strip_prefix(root).unwrap().to_path_buf(), bytes);
            }
        }
    }
    let mut files = BTreeMap::new();
    walk(dir, dir, &mut files);
    files
}

/// What one run of the binary did.
/// A day-long token: allowed, `tokens.long-ttl` audits a deny.
fn long_ttl() -> Value {
    json!({"principal": "Service::\"billing-api\"", "action": "Action::\"create_token\"",
           "resource": "Service::\"ledger-api\"",
           "context": {"ttl_s": 86400, "scopes": ["ledger:write"]}})
}

/// A plain allowed request no rule fires on.
fn read_ticket() -> Value {
    json!({"principal": "Agent::\"support-bot\"", "action": "Action::\"read_ticket\"",
           "resource": "Ticket::\"T-1\""})
}

/// What the example pack's rules make of a small, varied workload.
fn workload() -> Vec<Value> {
    vec![
        long_ttl(),
        long_ttl(),
        // Denied by default-deny:Agent (enforced); secrets.agents-never-read-prod audits.
        json!({"principal": "Agent::\"support-bot\"", "action": "Action::\"read_secret\"",
               "resource": "Secret::\"prod/stripe-key\""}),
        // agent.no-links-in-comments warns.
        json!({"principal": "Agent::\"support-bot\"", "action": "Action::\"comment_ticket\"",
               "resource": "Ticket::\"T-1\"",
               "context": {"body": "see https://login.example.com/reset"}}),
        // No permit: default-deny:CiJob (audit) would deny.
        json!({"principal": "CiJob::\"pr-checks\"", "action": "Action::\"deploy\"",
               "resource": "Service::\"billing-api-staging\"",
               "context": {"version": "pr-1"}}),
        // egress.unapproved-endpoint audits.
        json!({"principal": "CiJob::\"pr-checks\"", "action": "Action::\"http_request\"",
               "resource": "Endpoint::\"pastebin.com\"",
               "context": {"method": "GET", "path": "/raw/x"}}),
        read_ticket(),
    ]
}

/// A copy of the example pack and a data directory with the workload's evidence.
struct Evidence {
    _dir: tempfile::TempDir,
    pack: PathBuf,
    data: PathBuf,
}

impl Evidence {
    /// The workload decided by a server that is still running.
    fn serving() -> (Evidence, Served) {
        let dir = tempfile::tempdir().unwrap();
        let pack = dir.path().join("pack");
        copy_dir(&example(), &pack);
        let data = dir.path().join("data");
        let server = Served::start(&pack, &data, &["--durability", "sync"]);
        for request in workload() {
            server.decide(&request);
        }
        let evidence = Evidence {
            _dir: dir,
            pack,
            data,
        };
        (evidence, server)
    }

    /// The workload decided by a server that has stopped since.
    fn recorded() -> Evidence {
        let (evidence, server) = Evidence::serving();
        server.stop();
        evidence
    }

    fn pack(&self) -> &str {
        s(&self.pack)
    }

    fn data(&self) -> &str {
        s(&self.data)
    }

    /// `arbiter findings --data D --json ARGS`'s findings.
    fn findings(&self, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["findings", "--data", self.data(), "--json"];
        all.extend_from_slice(args);
        ok(&all).json()["findings"].as_array().unwrap().clone()
    }

    /// The one finding of `rule`.
    fn finding_of(&self, rule: &str) -> Value {
        let found = self.findings(&["--rule", rule]);
        assert_eq!(found.len(), 1, "{found:#?}");
        found[0].clone()
    }

    /// `arbiter readiness --json` for one rule.
    fn readiness_of(&self, rule: &str) -> Value {
        let run = arbiter(&[
            "readiness",
            rule,
            "--pack",
            self.pack(),
            "--data",
            self.data(),
            "--json",
        ]);
        let all = run.json()["readiness"].as_array().unwrap().clone();
        assert_eq!(all.len(), 1, "{run:#?}");
        all[0].clone()
    }

    fn promotions(&self, rule: &str) -> Vec<arbiter_store::Promotion> {
        Store::open_read_only(&self.data)
            .unwrap()
            .promotions(Some(rule))
            .unwrap()
    }

    fn file(&self, name: &str) -> String {
        fs::read_to_string(self.pack.join(name)).unwrap()
    }
}

/// Applies a one-file unified diff to `before`, checking every context and removed
/// line against it.
fn apply(diff: &str, before: &str) -> String {
    let old: Vec<&str> = before.split_inclusive('\n').collect();
    let mut out = String::new();
    let mut next = 0; // the next line of `old` not yet copied
    let mut lines = diff.split_inclusive('\n').peekable();
    assert!(lines.next().unwrap().starts_with("--- a/"), "{diff}");
    assert!(lines.next().unwrap().starts_with("+++ b/"), "{diff}");
    while let Some(header) = lines.next() {
        let range = header
            .strip_prefix("@@ -")
            .unwrap_or_else(|| panic!("a hunk header, not {header:?}"));
        let start: usize = range.split([',', ' ']).next().unwrap().parse().unwrap();
        while next + 1 < start {
            out.push_str(old[next]);
            next += 1;
        }
        while let Some(line) = lines.next_if(|l| !l.starts_with("@@")) {
            let (tag, text) = line.split_at(1);
            match tag {
                " " => {
                    assert_eq!(old[next], text, "context line {}", next + 1);
                    out.push_str(text);
                    next += 1;
                }
                "-" => {
                    assert_eq!(old[next], text, "removed line {}", next + 1);
                    next += 1;
                }
                "+" => out.push_str(text),
                _ => panic!("not a diff line: {line:?}"),
            }
        }
    }
    for line in &old[next..] {
        out.push_str(line);
    }
    out
}

/// The lines of `before` and `after` that differ, as (before, after); both must have
/// the same number of lines.
fn changed_lines<'a>(before: &'a str, after: &'a str) -> Vec<(&'a str, &'a str)> {
    let (b, a): (Vec<&str>, Vec<&str>) = (
        before.split_inclusive('\n').collect(),
        after.split_inclusive('\n').collect(),
    );
    assert_eq!(
        b.len(),
        a.len(),
        "only lines changed, none added or removed"
    );
    b.into_iter().zip(a).filter(|(x, y)| x != y).collect()
}

fn mode_in_pack(pack: &Path, rule: &str) -> Mode {
    let pack = arbiter_core::Pack::load(pack).unwrap();
    match rule.strip_prefix("default-deny:") {
        Some(ty) => pack.default_deny_scopes()[ty],
        None => pack.rule(rule).unwrap().mode.unwrap(),
    }
}

/// The `@mode` line of `rule`'s annotations in `text`.
fn mode_line_of<'a>(text: &'a str, rule: &str) -> &'a str {
    let at = text
        .find(&format!("@id(\"{rule}\")"))
        .expect("the rule is in the file");
    text[at..]
        .lines()
        .find(|l| l.starts_with("@mode("))
        .expect("the rule has a @mode")
}

// ----------------------------------------------------------------------- findings

#[test]
fn findings_lists_what_the_server_recorded() {
    let e = Evidence::recorded();
    let all = e.findings(&[]);
    let counts: BTreeMap<&str, (u64, u64)> = all
        .iter()
        .map(|f| {
            (
                f["rule"].as_str().unwrap(),
                (
                    f["count"].as_u64().unwrap(),
                    f["decisive"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(
        counts,
        BTreeMap::from([
            ("agent.no-links-in-comments", (1, 1)),
            ("default-deny:CiJob", (1, 1)),
            ("egress.unapproved-endpoint", (1, 1)),
            ("secrets.agents-never-read-prod", (1, 0)),
            ("tokens.long-ttl", (2, 2)),
        ]),
        "{all:#?}"
    );
    let shape: BTreeSet<&str> = [
        "id",
        "rule",
        "mode",
        "would",
        "principal",
        "action",
        "resource",
        "count",
        "decisive",
        "first_seen",
        "last_seen",
        "status",
        "review",
    ]
    .into();
    for f in &all {
        let keys: BTreeSet<&str> = f.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, shape, "{f}");
        assert_eq!((&f["status"], &f["review"]), (&json!("open"), &Value::Null));
    }

    // Filters.
    let ci = e.findings(&["--principal", "CiJob::\"pr-checks\""]);
    let ci_rules: BTreeSet<&str> = ci.iter().map(|f| f["rule"].as_str().unwrap()).collect();
    assert_eq!(
        ci_rules,
        ["default-deny:CiJob", "egress.unapproved-endpoint"].into()
    );
    assert_eq!(e.findings(&["--status", "open"]).len(), 5);
    assert!(e.findings(&["--status", "expected"]).is_empty());
    assert!(e.findings(&["--rule", "no.such-rule"]).is_empty());

    // The human table: one row per finding, and what to do about the open ones.
    let human = ok(&["findings", "--data", e.data()]);
    for f in &all {
        let row = human
            .stdout
            .lines()
            .find(|l| l.contains(f["id"].as_str().unwrap()))
            .unwrap_or_else(|| panic!("a row for {f}:\n{}", human.stdout));
        for column in ["rule", "mode", "would", "principal", "action", "resource"] {
            assert!(row.contains(f[column].as_str().unwrap()), "{column}: {row}");
        }
        assert!(row.contains("open"), "{row}");
    }
    assert!(
        human.stdout.contains("5 open finding(s)"),
        "{}",
        human.stdout
    );

    // Bad input.
    let bad = arbiter(&["findings", "--data", e.data(), "--status", "closed"]);
    assert_eq!(bad.code, 2, "{bad:#?}");
    let missing = e.data.with_file_name("no-such-data");
    let missing = arbiter(&["findings", "--data", s(&missing)]);
    assert_eq!(missing.code, 2, "{missing:#?}");
    assert!(!missing.stderr.is_empty());
}

#[test]
fn the_data_directory_comes_from_arbiter_data_like_for_serve_and_log() {
    let e = Evidence::recorded();
    let dir = tempfile::tempdir().unwrap();
    let run = assert_cmd::Command::cargo_bin("arbiter")
        .unwrap()
        .args(["findings", "--json"])
        .env("ARBITER_DATA", e.data())
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(run.status.success(), "{run:?}");
    let found: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(found["findings"].as_array().unwrap().len(), 5);
    assert!(
        !dir.path().join("arbiter-data").exists(),
        "./arbiter-data was not used"
    );
}

#[test]
fn commands_that_write_refuse_a_data_directory_without_a_store() {
    let e = Evidence::recorded();
    let before = snapshot(&e.pack);
    let missing = e.data.with_file_name("mistyped-data");
    let id = e.finding_of("tokens.long-ttl")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for args in [
        vec!["baseline", "freeze", "--data", s(&missing)],
        vec![
            "review",
            &id,
            "--verdict",
            "expected",
            "--note",
            "n",
            "--data",
            s(&missing),
        ],
        vec![
            "promote",
            "tokens.long-ttl",
            "--force",
            "--reason",
            "r",
            "--pack",
            e.pack(),
            "--data",
            s(&missing),
        ],
        vec![
            "demote",
            "agent.no-links-in-comments",
            "--pack",
            e.pack(),
            "--data",
            s(&missing),
        ],
    ] {
        let run = arbiter(&args);
        assert_eq!(run.code, 2, "{args:?}: {run:#?}");
        assert!(run.stderr.contains("mistyped-data"), "{}", run.stderr);
        assert!(!missing.exists(), "{args:?} created no store");
    }
    assert_eq!(snapshot(&e.pack), before, "no rule changed mode unrecorded");
}

// ------------------------------------------------------------------------- review

#[test]
fn a_review_shows_in_findings_and_survives_new_firings_while_the_server_runs() {
    let (e, server) = Evidence::serving();
    let id = e.finding_of("tokens.long-ttl")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let run = ok(&[
        "review",
        &id,
        "--verdict",
        "expected",
        "--note",
        "day-long tokens must go",
        "--by",
        "alice",
        "--data",
        e.data(),
    ]);
    assert!(run.stdout.contains(&id), "{run:#?}");
    assert!(run.stdout.contains("expected by alice"), "{run:#?}");

    let reviewed = e.finding_of("tokens.long-ttl");
    assert_eq!(reviewed["status"], "expected");
    assert_eq!(reviewed["review"]["verdict"], "expected");
    assert_eq!(reviewed["review"]["by"], "alice");
    assert_eq!(reviewed["review"]["note"], "day-long tokens must go");
    let human = ok(&["findings", "--data", e.data()]);
    let row = human.stdout.lines().find(|l| l.contains(&id)).unwrap();
    assert!(row.contains("expected (alice)"), "{row}");
    assert!(
        human.stdout.contains("4 open finding(s)"),
        "{}",
        human.stdout
    );
    assert_eq!(
        e.findings(&["--status", "expected"]),
        vec![reviewed.clone()]
    );

    // It fires again on the running server: the verdict stays, the count grows.
    server.decide(&long_ttl());
    let again = e.finding_of("tokens.long-ttl");
    assert_eq!(again["status"], "expected");
    assert_eq!(again["review"], reviewed["review"]);
    assert_eq!(
        (&again["count"], &again["decisive"]),
        (&json!(3), &json!(3))
    );

    // Without --by, the user running the command.
    let link = e.finding_of("agent.no-links-in-comments")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let run = arbiter_with(
        &[
            "review",
            &link,
            "--verdict",
            "legitimate",
            "--note",
            "support links to the reset page",
            "--data",
            e.data(),
        ],
        &[("USER", "bob"), ("LOGNAME", "bob")],
    );
    assert_eq!(run.code, 0, "{run:#?}");
    let link = e.finding_of("agent.no-links-in-comments");
    assert_eq!(link["status"], "legitimate");
    assert_eq!(link["review"]["by"], "bob");
    server.stop();
}

#[test]
fn bad_reviews_are_refused_and_change_nothing() {
    let e = Evidence::recorded();
    let id = e.finding_of("tokens.long-ttl")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let data = e.data();
    for args in [
        vec![
            "review",
            "f0000000000000000",
            "--verdict",
            "expected",
            "--note",
            "n",
        ],
        vec!["review", &id, "--verdict", "approve", "--note", "n"],
        vec!["review", &id, "--verdict", "expected", "--note", " "],
        vec!["review", &id, "--verdict", "expected"],
        vec!["review", &id, "--note", "n"],
    ] {
        let mut args = args;
        args.extend(["--data", data]);
        let run = arbiter(&args);
        assert_eq!(run.code, 2, "{args:?}: {run:#?}");
        assert!(!run.stderr.is_empty(), "{args:?} says why");
    }
    assert_eq!(e.findings(&["--status", "open"]).len(), 5);
}

// ---------------------------------------------------------------------- readiness

#[test]
fn readiness_in_json_and_one_rule_with_its_exit_code() {
    let e = Evidence::recorded();
    let run = ok(&[
        "readiness",
        "--pack",
        e.pack(),
        "--data",
        e.data(),
        "--json",
    ]);
    let all = run.json()["readiness"].as_array().unwrap().clone();
    let rules: BTreeSet<&str> = all.iter().map(|r| r["rule"].as_str().unwrap()).collect();
    assert_eq!(
        rules,
        [
            "agent.no-links-in-comments",
            "changes.prod-outside-hours",
            "default-deny:CiJob",
            "default-deny:Service",
            "egress.unapproved-endpoint",
            "secrets.agents-never-read-prod",
            "tokens.long-ttl",
        ]
        .into()
    );
    for r in &all {
        let keys: BTreeSet<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["evidence", "mode", "overdue", "reasons", "rule", "verdict"].into(),
            "{r}"
        );
        assert!(
            ["ready", "insufficient_evidence", "needs_review", "noisy"]
                .contains(&r["verdict"].as_str().unwrap()),
            "{r}"
        );
        assert!(r["overdue"].is_boolean());
        assert!(r["evidence"].is_object());
        assert!(!r["reasons"].as_array().unwrap().is_empty(), "{r}");
    }
    let verdict = |rule: &str| {
        all.iter()
            .find(|r| r["rule"] == rule)
            .map(|r| r["verdict"].as_str().unwrap().to_owned())
            .unwrap()
    };
    assert_eq!(verdict("tokens.long-ttl"), "needs_review");
    assert_eq!(verdict("default-deny:CiJob"), "needs_review");
    assert_eq!(
        verdict("changes.prod-outside-hours"),
        "insufficient_evidence"
    );
    let long = all.iter().find(|r| r["rule"] == "tokens.long-ttl").unwrap();
    assert_eq!(long["evidence"]["open_findings"], 1, "{long}");
    assert_eq!(long["evidence"]["would_fire"], 2, "{long}");

    // One rule that is not ready: exit 1, the verdict word and every reason.
    let one = arbiter(&[
        "readiness",
        "tokens.long-ttl",
        "--pack",
        e.pack(),
        "--data",
        e.data(),
    ]);
    assert_eq!(one.code, 1, "{one:#?}");
    assert!(one.stdout.contains("tokens.long-ttl"), "{}", one.stdout);
    assert!(one.stdout.contains("needs_review"), "{}", one.stdout);
    for reason in long["reasons"].as_array().unwrap() {
        let reason = reason.as_str().unwrap();
        assert!(
            one.stdout.contains(&format!("- {reason}")),
            "{reason:?} in\n{}",
            one.stdout
        );
    }
    let json_one = e.readiness_of("changes.prod-outside-hours");
    assert_eq!(json_one["verdict"], "insufficient_evidence");
    let quiet = arbiter(&[
        "readiness",
        "changes.prod-outside-hours",
        "--pack",
        e.pack(),
        "--data",
        e.data(),
    ]);
    assert_eq!(quiet.code, 1);
    assert!(
        quiet.stdout.contains("insufficient_evidence"),
        "{}",
        quiet.stdout
    );

    // All rules: exit 0 whatever their verdicts.
    let human = ok(&["readiness", "--pack", e.pack(), "--data", e.data()]);
    for rule in &rules {
        assert!(human.stdout.contains(rule), "{rule}: {}", human.stdout);
    }

    // A rule that is enforced, or not in the pack: input errors.
    for rule in [
        "secrets.no-prod-from-pr-jobs",
        "no.such-rule",
        "default-deny:Agent",
    ] {
        let run = arbiter(&["readiness", rule, "--pack", e.pack(), "--data", e.data()]);
        assert_eq!(run.code, 2, "{rule}: {run:#?}");
        assert!(run.stderr.contains(rule), "{run:#?}");
    }
}

// ------------------------------------------------------------------ promote, demote

#[test]
fn promote_refuses_a_rule_that_is_not_ready_and_changes_nothing() {
    let e = Evidence::recorded();
    let pack_before = snapshot(&e.pack);
    let reasons = e.readiness_of("tokens.long-ttl")["reasons"].clone();
    let run = arbiter(&[
        "promote",
        "tokens.long-ttl",
        "--pack",
        e.pack(),
        "--data",
        e.data(),
    ]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.contains("refused"), "{}", run.stderr);
    assert!(run.stderr.contains("needs_review"), "{}", run.stderr);
    for reason in reasons.as_array().unwrap() {
        assert!(
            run.stderr.contains(reason.as_str().unwrap()),
            "{reason} in\n{}",
            run.stderr
        );
    }
    assert_eq!(snapshot(&e.pack), pack_before, "byte for byte");
    assert!(e.promotions("tokens.long-ttl").is_empty());

    // A dry run of the same: nothing changes either, and it says it would refuse.
    let dry = arbiter(&[
        "promote",
        "tokens.long-ttl",
        "--dry-run",
        "--pack",
        e.pack(),
        "--data",
        e.data(),
    ]);
    assert_eq!(dry.code, 1, "{dry:#?}");
    assert!(dry.stderr.contains("refused"), "{}", dry.stderr);
    assert_eq!(snapshot(&e.pack), pack_before);

    // Unknown rules, permits and a mode already set are input errors.
    for (rule, extra) in [
        ("no.such-rule", None),
        ("agent.support-handles-tickets", None),
        ("secrets.no-prod-from-pr-jobs", None),
        ("default-deny:Agent", None),
        ("tokens.long-ttl", Some("audit")),
    ] {
        let mut args = vec!["promote", rule, "--pack", e.pack(), "--data", e.data()];
        if let Some(to) = extra {
            args.extend(["--to", to]);
        }
        let run = arbiter(&args);
        assert_eq!(run.code, 2, "{args:?}: {run:#?}");
    }
    assert_eq!(snapshot(&e.pack), pack_before);
}

#[test]
fn force_needs_a_reason() {
    let e = Evidence::recorded();
    let before = snapshot(&e.pack);
    let run = arbiter(&[
        "promote",
        "tokens.long-ttl",
        "--force",
        "--pack",
        e.pack(),
        "--data",
        e.data(),
    ]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("--reason"), "{}", run.stderr);
    assert_eq!(snapshot(&e.pack), before);
    assert!(e.promotions("tokens.long-ttl").is_empty());
}

#[test]
fn a_dry_run_prints_the_diff_and_changes_nothing() {
    let e = Evidence::recorded();
    let before = snapshot(&e.pack);
    let original = e.file("policies/tokens.cedar");
    let dry = ok(&[
        "promote",
        "tokens.long-ttl",
        "--dry-run",
        "--force",
        "--reason",
        "try it",
        "--pack",
        e.pack(),
        "--data",
        e.data(),
    ]);
    assert!(
        dry.stdout
            .starts_with("--- a/policies/tokens.cedar\n+++ b/policies/tokens.cedar\n@@ -"),
        "{}",
        dry.stdout
    );
    let removed: Vec<&str> = dry.stdout.lines().filter(|l| l.starts_with("-@")).collect();
    let added: Vec<&str> = dry.stdout.lines().filter(|l| l.starts_with("+@")).collect();
    assert_eq!(removed, ["-@mode(\"audit\")"], "{}", dry.stdout);
    assert_eq!(added, ["+@mode(\"enforce\")"], "{}", dry.stdout);
    assert!(dry.stderr.contains("dry run"), "{}", dry.stderr);
    assert_eq!(snapshot(&e.pack), before, "nothing written");
    assert!(
        e.promotions("tokens.long-ttl").is_empty(),
        "nothing recorded"
    );

    // The diff is exactly what the promotion then writes.
    ok(&[
        "promote",
        "tokens.long-ttl",
        "--force",
        "--reason",
        "for real",
        "--pack",
        e.pack(),
        "--data",
        e.data(),
    ]);
    assert_eq!(
        apply(&dry.stdout, &original),
        e.file("policies/tokens.cedar")
    );

    // A demotion's dry run: without a reason it would be refused, and says so.
    let before = snapshot(&e.pack);
    let unexplained = arbiter(&[
        "demote",
        "agent.no-links-in-comments",
        "--dry-run",
        "--pack",
        e.pack(),
        "--data",
        e.data(),
    ]);
    assert_eq!(unexplained.code, 1, "{unexplained:#?}");
    assert!(
        unexplained.stderr.contains("needs --reason"),
        "{}",
        unexplained.stderr
    );
    let dry = ok(&[
        "demote",
        "agent.no-links-in-comments",
        "--dry-run",
        "--reason",
        "too noisy",
        "--pack",
        e.pack(),
        "--data",
        e.data(),
    ]);
    assert!(
        dry.stdout.contains("\n-@mode(\"warn\")\n"),
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout.contains("\n+@mode(\"audit\")\n"),
        "{}",
        dry.stdout
    );
    assert_eq!(snapshot(&e.pack), before);
    assert!(e.promotions("agent.no-links-in-comments").is_empty());
}

#[test]
fn a_forced_promotion_rewrites_only_the_mode_line_and_is_recorded() {
    let e = Evidence::recorded();
    let others = {
        let mut all = snapshot(&e.pack);
        all.remove(Path::new("policies/tokens.cedar"));
        all
    };
    let original = e.file("policies/tokens.cedar");
    let run = arbiter_with(
        &[
            "promote",
            "tokens.long-ttl",
            "--force",
            "--reason",
            "the ledger team moved to 1h tokens",
            "--pack",
            e.pack(),
            "--data",
            e.data(),
        ],
        &[("USER", "carol"), ("LOGNAME", "carol")],
    );
    assert_eq!(run.code, 0, "{run:#?}");
    assert!(run.stderr.contains("forced"), "{}", run.stderr);

    // One line changed, the rule's @mode; every other byte and file is as it was.
    let promoted = e.file("policies/tokens.cedar");
    assert_eq!(
        changed_lines(&original, &promoted),
        [("@mode(\"audit\")\n", "@mode(\"enforce\")\n")]
    );
    assert_eq!(
        mode_line_of(&promoted, "tokens.long-ttl"),
        "@mode(\"enforce\")"
    );
    assert_eq!(
        promoted,
        original.replacen("@mode(\"audit\")", "@mode(\"enforce\")", 1)
    );
    let mut rest = snapshot(&e.pack);
    rest.remove(Path::new("policies/tokens.cedar"));
    assert_eq!(rest, others);

    // The pack still validates, with the rule enforced.
    let valid = ok(&["validate", e.pack(), "--json"]).json();
    assert_eq!(
        valid["by_mode"],
        json!({"audit": 2, "enforce": 4, "warn": 2})
    );
    assert_eq!(mode_in_pack(&e.pack, "tokens.long-ttl"), Mode::Enforce);

    // Recorded: who, why, forced, against which verdict.
    let recorded = e.promotions("tokens.long-ttl");
    assert_eq!(recorded.len(), 1, "{recorded:#?}");
    let p = &recorded[0];
    assert_eq!(
        (p.from_mode.as_str(), p.to_mode.as_str()),
        ("audit", "enforce")
    );
    assert!(p.forced);
    assert_eq!(
        p.reason.as_deref(),
        Some("the ledger team moved to 1h tokens")
    );
    assert_eq!(p.by, "carol");
    assert_eq!(p.verdict, "needs_review");

    // An enforced rule has no readiness any more.
    let gone = arbiter(&[
        "readiness",
        "tokens.long-ttl",
        "--pack",
        e.pack(),
        "--data",
        e.data(),
    ]);
    assert_eq!(gone.code, 2, "{gone:#?}");

    // Demote: a downgrade is never silent. Without a reason (or with a blank one) it is
    // refused and nothing changes; with one, back to audit, the file as it was, byte for
    // byte; demotion needs no evidence and is recorded unforced, with who and why.
    let enforced = e.file("policies/tokens.cedar");
    for blank in [&[][..], &["--reason", "  "][..]] {
        let mut args = vec![
            "demote",
            "tokens.long-ttl",
            "--pack",
            e.pack(),
            "--data",
            e.data(),
        ];
        args.extend_from_slice(blank);
        let refused = arbiter(&args);
        assert_eq!(refused.code, 1, "{refused:#?}");
        assert!(
            refused
                .stderr
                .contains("away from enforcement needs --reason"),
            "{}",
            refused.stderr
        );
        assert_eq!(e.file("policies/tokens.cedar"), enforced);
    }
    let run = ok(&[
        "demote",
        "tokens.long-ttl",
        "--by",
        "dave",
        "--reason",
        "pages the on-call at night",
        "--pack",
        e.pack(),
        "--data",
        e.data(),
    ]);
    assert!(run.stdout.contains("+@mode(\"audit\")"), "{}", run.stdout);
    assert_eq!(e.file("policies/tokens.cedar"), original);
    assert_eq!(mode_in_pack(&e.pack, "tokens.long-ttl"), Mode::Audit);
    let recorded = e.promotions("tokens.long-ttl");
    assert_eq!(recorded.len(), 2);
    let d = &recorded[1];
    assert_eq!(
        (d.from_mode.as_str(), d.to_mode.as_str()),
        ("enforce", "audit")
    );
    assert!(!d.forced);
    assert_eq!(d.by, "dave");
    assert_eq!(d.reason.as_deref(), Some("pages the on-call at night"));
    assert!(d.seq > p.seq);
}

#[test]
fn promoting_a_default_deny_scope_edits_arbiter_toml() {
    let e = Evidence::recorded();
    let original = e.file("arbiter.toml");
    let policies = {
        let mut all = snapshot(&e.pack);
        all.remove(Path::new("arbiter.toml"));
        all
    };
    let refused = arbiter(&[
        "promote",
        "default-deny:CiJob",
        "--pack",
        e.pack(),
        "--data",
        e.data(),
    ]);
    assert_eq!(refused.code, 1, "{refused:#?}");
    assert!(
        refused.stderr.contains("needs_review"),
        "{}",
        refused.stderr
    );
    assert_eq!(e.file("arbiter.toml"), original);

    ok(&[
        "promote",
        "default-deny:CiJob",
        "--force",
        "--reason",
        "the CI allow-list is complete",
        "--pack",
        e.pack(),
        "--data",
        e.data(),
    ]);
    let promoted = e.file("arbiter.toml");
    let changed = changed_lines(&original, &promoted);
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert!(changed[0].1.contains("CiJob = \"enforce\""), "{changed:?}");
    assert!(changed[0].1.contains("Agent = \"enforce\""), "{changed:?}");
    let mut rest = snapshot(&e.pack);
    rest.remove(Path::new("arbiter.toml"));
    assert_eq!(rest, policies, "only arbiter.toml changed");
    let valid = ok(&["validate", e.pack(), "--json"]).json();
    assert_eq!(
        valid["default_deny"]["scopes"]["default-deny:CiJob"],
        "enforce"
    );
    assert_eq!(
        valid["default_deny"]["scopes"]["default-deny:Service"],
        "audit"
    );
    let recorded = e.promotions("default-deny:CiJob");
    assert_eq!(recorded.len(), 1);
    assert!(recorded[0].forced);
    assert_eq!(
        (recorded[0].from_mode.as_str(), recorded[0].to_mode.as_str()),
        ("audit", "enforce")
    );

    ok(&[
        "demote",
        "default-deny:CiJob",
        "--reason",
        "the scope's evidence was wrong",
        "--pack",
        e.pack(),
        "--data",
        e.data(),
    ]);
    assert_eq!(mode_in_pack(&e.pack, "default-deny:CiJob"), Mode::Audit);
    ok(&["validate", e.pack()]);
}

// ----------------------------------------------------------------------- baseline

#[test]
fn baseline_lists_what_identities_did_and_suggests_permits_that_load() {
    let e = Evidence::recorded();
    let json = ok(&["baseline", "--pack", e.pack(), "--data", e.data(), "--json"]).json();
    let rows: BTreeSet<(&str, &str, &str)> = json["observed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["principal"].as_str().unwrap(),
                o["action"].as_str().unwrap(),
                o["resource"].as_str().unwrap(),
            )
        })
        .collect();
    // Allowed decisions, and those only a default-deny scope in audit denied; not the
    // agent's read of a prod secret, which was denied.
    assert_eq!(
        rows,
        [
            (
                "Agent::\"support-bot\"",
                "Action::\"comment_ticket\"",
                "Ticket::\"T-1\""
            ),
            (
                "Agent::\"support-bot\"",
                "Action::\"read_ticket\"",
                "Ticket::\"T-1\""
            ),
            (
                "CiJob::\"pr-checks\"",
                "Action::\"deploy\"",
                "Service::\"billing-api-staging\""
            ),
            (
                "CiJob::\"pr-checks\"",
                "Action::\"http_request\"",
                "Endpoint::\"pastebin.com\""
            ),
            (
                "Service::\"billing-api\"",
                "Action::\"create_token\"",
                "Service::\"ledger-api\""
            ),
        ]
        .into(),
        "{json:#}"
    );
    let tokens = json["observed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["action"] == "Action::\"create_token\"")
        .unwrap();
    assert_eq!(tokens["count"], 2);
    assert_eq!(tokens["resource_type"], "Service");

    let human = ok(&["baseline", "--pack", e.pack(), "--data", e.data()]);
    for (principal, action, resource) in &rows {
        assert!(
            human
                .stdout
                .lines()
                .any(|l| l.contains(principal) && l.contains(action) && l.contains(resource)),
            "a row for {principal} {action} {resource}:\n{}",
            human.stdout
        );
    }

    // --suggest: stdout is a .cedar file Cedar parses, everything else on stderr.
    let suggest = ok(&[
        "baseline",
        "--pack",
        e.pack(),
        "--data",
        e.data(),
        "--suggest",
    ]);
    let set = cedar_policy::PolicySet::from_str(&suggest.stdout)
        .unwrap_or_else(|err| panic!("{err}:\n{}", suggest.stdout));
    assert!(set.policies().count() > 0, "{}", suggest.stdout);
    let mut ids = BTreeSet::new();
    for policy in set.policies() {
        assert_eq!(policy.effect(), cedar_policy::Effect::Permit, "{policy}");
        let id = policy.annotation("id").expect("an @id").to_owned();
        assert!(id.starts_with("baseline."), "{id}");
        assert!(ids.insert(id.clone()), "{id} is unique");
    }
    assert!(suggest.stderr.contains("permit(s)"), "{}", suggest.stderr);
    // It drops into the pack as it is.
    fs::write(e.pack.join("policies/baseline.cedar"), &suggest.stdout).unwrap();
    let valid = arbiter(&["validate", e.pack()]);
    assert_eq!(valid.code, 0, "{valid:#?}\n{}", suggest.stdout);

    // --suggest needs the pack.
    let no_pack = arbiter(&["baseline", "--data", e.data(), "--suggest"]);
    assert_eq!(no_pack.code, 2, "{no_pack:#?}");

    // What a reviewer marked `expected` (the rule is right to block it) is not suggested.
    fs::remove_file(e.pack.join("policies/baseline.cedar")).unwrap();
    let pastebin = e.finding_of("egress.unapproved-endpoint");
    ok(&[
        "review",
        pastebin["id"].as_str().unwrap(),
        "--verdict",
        "expected",
        "--note",
        "no uploads to pastebin",
        "--data",
        e.data(),
    ]);
    let after = ok(&[
        "baseline",
        "--pack",
        e.pack(),
        "--data",
        e.data(),
        "--suggest",
    ]);
    assert!(!after.stdout.contains("pastebin.com"), "{}", after.stdout);
    assert!(
        suggest.stdout.contains("pastebin.com"),
        "{}",
        suggest.stdout
    );
    assert!(
        after.stderr.contains("left out 1 observed"),
        "{}",
        after.stderr
    );
}

#[test]
fn baseline_freeze_prints_the_pair_count_and_a_running_server_marks_novel_pairs() {
    let (e, server) = Evidence::serving();
    let run = ok(&["baseline", "freeze", "--data", e.data(), "--by", "erin"]);
    // Five (principal, action) pairs: the workload's allowed ones.
    assert!(
        run.stdout
            .contains("baseline #1 frozen: 5 (principal, action) pair(s)"),
        "{}",
        run.stdout
    );
    let store = Store::open_read_only(&e.data).unwrap();
    assert_eq!(store.latest_baseline().unwrap(), 1);
    assert_eq!(store.baseline_pairs().unwrap().unwrap().len(), 5);

    // The server picks the freeze up on its own (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut last;
    loop {
        let id = server.decide(&read_ticket())["decision_id"]
            .as_str()
            .unwrap()
            .to_owned();
        last = server.record(&id);
        if last.get("novel") == Some(&json!(false)) || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(last["novel"], false, "the freeze was picked up: {last}");
    let new_pair = json!({"principal": "Service::\"billing-api\"",
        "action": "Action::\"read_secret\"", "resource": "Secret::\"prod/db-password\""});
    let id = server.decide(&new_pair)["decision_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let logged = server.record(&id);
    assert_eq!(logged["decision"], "allow", "{logged}");
    assert_eq!(logged["novel"], true, "{logged}");

    // A second freeze replaces the first.
    let run = ok(&["baseline", "freeze", "--data", e.data()]);
    assert!(
        run.stdout.contains("baseline #2 frozen: 6"),
        "{}",
        run.stdout
    );
    server.stop();
}

/// Finding 5 of the hostile-input probe: a pack that would enforce nothing is refused by
/// `arbiter reload` (exit 1) until an operator forces it with a reason.
#[test]
fn a_reload_that_would_enforce_nothing_needs_force_and_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let pack = dir.path().join("pack");
    copy_dir(&example(), &pack);
    let served = Served::start(&pack, &dir.path().join("data"), &["--durability", "sync"]);
    fs::remove_dir_all(pack.join("policies")).unwrap();
    fs::create_dir(pack.join("policies")).unwrap();
    fs::write(
        pack.join("policies/open.cedar"),
        "@id(\"open\")\npermit(principal, action, resource);\n",
    )
    .unwrap();
    let config = fs::read_to_string(pack.join("arbiter.toml")).unwrap();
    fs::write(
        pack.join("arbiter.toml"),
        config.replace("principal_types = { Agent = \"enforce\" }", ""),
    )
    .unwrap();
    let reload = |extra: &[&str]| {
        Command::new(assert_cmd::cargo::cargo_bin("arbiter"))
            .args(["reload", "--url", &served.base])
            .args(extra)
            .env("ARBITER_ADMIN_TOKEN", ADMIN)
            .output()
            .unwrap()
    };
    let refused = reload(&[]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{said}");
    assert!(
        said.contains("enforces nothing") && said.contains("--force"),
        "{said}"
    );
    assert_eq!(reload(&["--force"]).status.code(), Some(2), "no reason");
    let forced = reload(&["--force", "--reason", "lockdown drill"]);
    assert_eq!(
        forced.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    assert!(String::from_utf8_lossy(&forced.stdout).starts_with("reloaded: sha256:"));
}

#[test]
fn replay_of_the_pack_in_force_over_its_own_log_finds_no_difference() {
    let evidence = Evidence::recorded();
    let run = arbiter(&[
        "replay",
        "--pack",
        evidence.pack(),
        "--data",
        evidence.data(),
        "--json",
        "--fail-on",
        "any",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report = run.json();
    assert_eq!(report["replayed"], json!(workload().len()), "{report}");
    let changes = &report["changes"];
    for kind in ["breaks", "loosens", "shifts", "now_valid", "now_invalid"] {
        assert_eq!(changes[kind], 0, "{kind}: {report}");
    }
}

#[test]
fn replay_of_a_tightened_candidate_shows_the_breaks_and_gates_on_them() {
    let evidence = Evidence::recorded();
    let candidate = evidence._dir.path().join("candidate");
    copy_dir(&evidence.pack, &candidate);
    egress_mode(&candidate, "audit", "enforce");
    let predicted = audited_allowed(&evidence);

    let run = arbiter(&[
        "replay",
        "--pack",
        s(&candidate),
        "--data",
        evidence.data(),
        "--json",
        "--fail-on",
        "breaks",
        "--examples",
        "100",
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = run.json();
    assert_eq!(
        report["changes"]["breaks"],
        json!(predicted.len()),
        "{report}"
    );
    assert_eq!(report["changes"]["loosens"], 0);
    let group = report["by_rule"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["key"] == "egress.unapproved-endpoint")
        .unwrap();
    let mut examples: Vec<String> = group["examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_owned())
        .collect();
    examples.sort();
    assert_eq!(examples, predicted);
    // Without --fail-on, the same findings exit 0; a candidate that does not load, 2.
    let plain = arbiter(&["replay", "--pack", s(&candidate), "--data", evidence.data()]);
    assert_eq!(plain.code, 0, "{}", plain.stderr);
    assert!(plain.stdout.contains("breaks"), "{}", plain.stdout);
    fs::write(candidate.join("policies/broken.cedar"), "forbid (principal").unwrap();
    let broken = arbiter(&["replay", "--pack", s(&candidate), "--data", evidence.data()]);
    assert_eq!(broken.code, 2);
    assert!(broken.stderr.contains("broken.cedar"), "{}", broken.stderr);
}

#[test]
fn replay_of_a_widened_permit_shows_the_loosens() {
    let evidence = Evidence::recorded();
    let candidate = evidence._dir.path().join("candidate");
    copy_dir(&evidence.pack, &candidate);
    // The support bot may now read every secret: default-deny:Agent denied it.
    fs::write(
        candidate.join("policies/widen.cedar"),
        "@id(\"widen.support-reads-secrets\")\n\
         permit (principal == Agent::\"support-bot\", action == Action::\"read_secret\", resource);\n",
    )
    .unwrap();
    let denied = ok(&[
        "log",
        "--data",
        evidence.data(),
        "--json",
        "--decision",
        "deny",
        "--principal",
        "Agent::\"support-bot\"",
        "--action",
        "Action::\"read_secret\"",
    ])
    .json();
    let predicted: Vec<&str> = denied["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["decision_id"].as_str().unwrap())
        .collect();
    assert_eq!(predicted.len(), 1, "{denied}");

    let run = arbiter(&[
        "replay",
        "--pack",
        s(&candidate),
        "--data",
        evidence.data(),
        "--json",
        "--fail-on",
        "loosens",
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = run.json();
    assert_eq!(report["changes"]["loosens"], 1, "{report}");
    assert_eq!(report["changes"]["breaks"], 0, "{report}");
    // A loosen is grouped under the rule that denied it then.
    let group = &report["by_rule"][0];
    assert_eq!(group["key"], "default-deny:Agent", "{report}");
    assert_eq!(group["examples"], json!(predicted));
    let bot = report["by_principal"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["key"] == "Agent::\"support-bot\"")
        .unwrap();
    assert_eq!(bot["changes"]["loosens"], 1);
}

/// What the log says `egress.unapproved-endpoint` audited in decisions that were
/// allowed (what enforcing it breaks), sorted; never empty.
fn audited_allowed(evidence: &Evidence) -> Vec<String> {
    let logged = ok(&[
        "log",
        "--data",
        evidence.data(),
        "--json",
        "--rule",
        "egress.unapproved-endpoint",
        "--mode",
        "audit",
        "--decision",
        "allow",
    ])
    .json();
    let mut ids: Vec<String> = logged["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["decision_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    assert!(!ids.is_empty());
    ids
}

#[test]
fn diff_lists_downgrades_first_and_gates_on_them_and_on_breaks() {
    let evidence = Evidence::recorded();
    let head = evidence._dir.path().join("head");
    copy_dir(&evidence.pack, &head);
    // A downgrade (a revoke rule to audit) and an upgrade (an audit rule to enforce).
    edited(
        &head,
        "policies/agents.cedar",
        "@id(\"agent.no-egress-after-secret\")\n@mode(\"enforce\")",
        "@id(\"agent.no-egress-after-secret\")\n@mode(\"audit\")",
    );
    egress_mode(&head, "audit", "enforce");
    let run = arbiter(&[
        "diff",
        evidence.pack(),
        s(&head),
        "--format",
        "json",
        "--fail-on",
        "downgrades",
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let document = run.json();
    let rules = &document["rules"];
    assert_eq!(rules["downgrades"], 1, "{document}");
    assert_eq!(rules["upgrades"], 1, "{document}");
    let changes = rules["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 2, "{document}");
    assert_eq!(changes[0]["rule"], "agent.no-egress-after-secret");
    assert_eq!(changes[0]["direction"], "downgrade");
    assert_eq!(
        changes[0]["fields"],
        json!([{"field": "mode", "base": "enforce", "head": "audit"}])
    );
    assert_eq!(changes[1]["rule"], "egress.unapproved-endpoint");
    assert_eq!(changes[1]["direction"], "upgrade");
    assert_eq!(document["replay"], Value::Null);
    // Breaks need the log; asked for without it, a usage error.
    let no_data = arbiter(&["diff", evidence.pack(), s(&head), "--fail-on", "breaks"]);
    assert_eq!(no_data.code, 2, "{no_data:?}");

    // On the log: enforcing the audit rule breaks what it audited in allowed decisions,
    // judged against BASE today.
    let predicted = audited_allowed(&evidence).len();
    let run = arbiter(&[
        "diff",
        evidence.pack(),
        s(&head),
        "--data",
        evidence.data(),
        "--format",
        "json",
        "--fail-on",
        "breaks",
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let replay = &run.json()["replay"];
    assert_eq!(
        replay["change"]["changes"]["breaks"],
        json!(predicted),
        "{replay}"
    );
    assert_eq!(
        replay["change"]["by_rule"][0]["key"],
        "egress.unapproved-endpoint"
    );
    // BASE is the pack that wrote the log: against the log it changes nothing.
    for kind in ["breaks", "loosens", "shifts"] {
        assert_eq!(replay["base"]["changes"][kind], 0, "{replay}");
    }

    // Only the upgrade: no downgrade to fail on. The text names it.
    copy_dir(&evidence.pack, &head.join("../upgrade-only"));
    let upgrade_only = head.join("../upgrade-only");
    egress_mode(&upgrade_only, "audit", "enforce");
    let run = arbiter(&[
        "diff",
        evidence.pack(),
        s(&upgrade_only),
        "--fail-on",
        "downgrades",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("0 downgrades, 1 upgrade"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("from `audit` to `enforce`"),
        "{}",
        run.stdout
    );
}

/// Runs `git ARGS` in `dir`; it must succeed.
fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.name=ci", "-c", "user.email=ci@example.com"])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `arbiter …` command lines of the CI jobs in `docs/ci.md`, in order.
fn ci_commands() -> Vec<String> {
    let doc =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/ci.md")).unwrap();
    let mut commands = Vec::new();
    let mut in_yaml = false;
    for line in doc.lines() {
        match line.trim() {
            "```yaml" => in_yaml = true,
            "```" => in_yaml = false,
            text if in_yaml => {
                let text = text.trim_start_matches("- ");
                if text.starts_with("arbiter ") {
                    commands.push(text.to_owned());
                }
            }
            _ => {}
        }
    }
    commands
}

/// Runs each command with `sh` in `dir`, `arbiter` on the path; their exit codes.
fn run_ci(dir: &Path, commands: &[String], base: &str) -> Vec<(String, i32, String)> {
    let bin = assert_cmd::cargo::cargo_bin("arbiter");
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    commands
        .iter()
        .map(|command| {
            let out = Command::new("sh")
                .args(["-c", command])
                .current_dir(dir)
                .env("PATH", &path)
                .env("BASE", base)
                .env_remove("ARBITER_DATA")
                .output()
                .unwrap();
            (
                command.clone(),
                out.status.code().unwrap(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
        .collect()
}

#[test]
fn the_ci_jobs_commands_gate_a_pull_request_in_a_real_git_repository() {
    let commands = ci_commands();
    // Both jobs: validate, test, diff.
    assert_eq!(commands.len(), 6, "{commands:#?}");
    assert_eq!(
        commands[..3],
        commands[3..],
        "the two jobs run the same commands"
    );
    let commands = &commands[..3];
    let evidence = Evidence::recorded();
    let root = evidence._dir.path();
    // A bare origin with `main` holding the example pack in policy/.
    let origin = root.join("origin.git");
    fs::create_dir(&origin).unwrap();
    git(&origin, &["init", "--bare", "-q"]);
    let work = root.join("work");
    fs::create_dir(&work).unwrap();
    git(&work, &["init", "-q"]);
    copy_dir(&evidence.pack, &work.join("policy"));
    copy_dir(&evidence.data, &work.join("evidence"));
    fs::write(work.join(".gitignore"), "evidence/\narbiter-diff.md\n").unwrap();
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "the pack"]);
    git(&work, &["remote", "add", "origin", s(&origin)]);
    git(&work, &["push", "-q", "origin", "main"]);
    git(&work, &["fetch", "-q", "origin"]);

    // A harmless pull request: a rule's owner changes. Every command passes.
    git(&work, &["checkout", "-q", "-b", "owner"]);
    edited(
        &work.join("policy"),
        "policies/egress.cedar",
        "@owner(\"network-security\")",
        "@owner(\"netsec-oncall\")",
    );
    git(&work, &["commit", "-q", "-am", "new owner"]);
    let before = snapshot(&work.join("policy"));
    for (command, code, stderr) in run_ci(&work, commands, "origin/main") {
        assert_eq!(code, 0, "{command}: {stderr}");
    }
    let comment = fs::read_to_string(work.join("arbiter-diff.md")).unwrap();
    assert!(
        comment.starts_with("### arbiter diff: 0 downgrades, 0 upgrades, 1 other rule change"),
        "{comment}"
    );
    assert!(
        comment.contains("on 7 logged decisions: 0 breaks, 0 loosens"),
        "{comment}"
    );
    // Reading the revisions left the working tree as it was.
    assert_eq!(snapshot(&work.join("policy")), before);

    // A sneaky one: a rule skips its evaluation errors, and the test that caught it goes.
    git(&work, &["checkout", "-q", "-b", "skip", "origin/main"]);
    edited(
        &work.join("policy"),
        "policies/secrets.cedar",
        "@on_error(\"deny\")\n@severity(\"critical\")",
        "@on_error(\"skip\")\n@severity(\"critical\")",
    );
    git(&work, &["rm", "-q", "policy/tests/on-error.yaml"]);
    git(&work, &["commit", "-q", "-am", "fewer errors"]);
    let codes = run_ci(&work, commands, "origin/main");
    assert_eq!(codes[0].1, 0, "validate: {}", codes[0].2);
    assert_eq!(codes[1].1, 0, "test: {}", codes[1].2);
    assert_eq!(codes[2].1, 1, "diff: {}", codes[2].2);
    let comment = fs::read_to_string(work.join("arbiter-diff.md")).unwrap();
    assert!(
        comment.starts_with("### arbiter diff: **1 downgrade**"),
        "{comment}"
    );
    let downgrades = comment
        .split("#### Downgrades")
        .nth(1)
        .expect("a downgrades section");
    assert!(
        downgrades.contains("`secrets.no-prod-from-pr-jobs`")
            && downgrades.contains("skips its evaluation errors"),
        "{comment}"
    );

    // A revision that does not exist, and a pack holding a symbolic link: exit 2, named.
    let missing = arbiter_in(
        &work,
        &["diff", "git:no-such-branch:policy", "git:HEAD:policy"],
    );
    assert_eq!(missing.1, 2);
    assert!(missing.2.contains("no-such-branch"), "{}", missing.2);
    std::os::unix::fs::symlink("/etc/hostname", work.join("policy/policies/link.cedar")).unwrap();
    git(&work, &["add", "policy/policies/link.cedar"]);
    git(&work, &["commit", "-q", "-m", "a link"]);
    let linked = arbiter_in(
        &work,
        &["diff", "git:origin/main:policy", "git:HEAD:policy"],
    );
    assert_eq!(linked.1, 2);
    assert!(
        linked.2.contains("link.cedar") && linked.2.contains("symbolic link"),
        "{}",
        linked.2
    );
}

/// Runs `arbiter ARGS` in `dir`: stdout, exit code, stderr.
fn arbiter_in(dir: &Path, args: &[&str]) -> (String, i32, String) {
    let out = Command::new(assert_cmd::cargo::cargo_bin("arbiter"))
        .args(args)
        .current_dir(dir)
        .env_remove("ARBITER_DATA")
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

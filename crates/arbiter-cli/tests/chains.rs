//! `arbiter chains` and `arbiter report` from the command line: the table, the JSON,
//! `--fail-below` as a CI gate, each report format; bad arguments exit 2 with a reason.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

use std::fs;
use std::process::{Command, Output};

use serde_json::Value;

const ARBITER: &str = env!("CARGO_BIN_EXE_arbiter");

/// `egress` is enforced for everyone; `change_config`, just before it, is decided by a
/// permit alone.
fn write_pack() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("policies")).unwrap();
    fs::write(
        dir.path().join("schema.cedarschema"),
        "entity Agent;\nentity Config;\nentity Endpoint;\n\
         action change_config appliesTo { principal: [Agent], resource: [Config] };\n\
         action http_request appliesTo { principal: [Agent], resource: [Endpoint] };\n",
    )
    .unwrap();
    fs::write(
        dir.path().join("entities.json"),
        r#"[{"uid": {"type": "Agent", "id": "bot"}, "attrs": {}, "parents": []}]"#,
    )
    .unwrap();
    fs::write(
        dir.path().join("arbiter.toml"),
        "[chains.exfiltration]\nsteps = [\"change_config\", \"http_request\"]\n",
    )
    .unwrap();
    fs::write(
        dir.path().join("policies/rules.cedar"),
        "@id(\"open\")\npermit(principal, action, resource);\n\n\
         @id(\"no-egress\")\n@mode(\"enforce\")\n\
         forbid(principal, action == Action::\"http_request\", resource);\n",
    )
    .unwrap();
    dir
}

fn chains(pack: &std::path::Path, extra: &[&str]) -> Output {
    Command::new(ARBITER)
        .arg("chains")
        .arg("--pack")
        .arg(pack)
        .args(extra)
        .env_remove("ARBITER_DATA")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_table_marks_the_weakest_step_and_the_bypass() {
    let pack = write_pack();
    let out = chains(pack.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("chain exfiltration: change_config -> http_request"),
        "{stdout}"
    );
    let row = stdout
        .lines()
        .find(|l| l.contains(r#"Agent::"bot""#))
        .unwrap_or_else(|| panic!("{stdout}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells,
        [
            r#"Agent::"bot""#,
            "uncontrolled*",
            "enforced",
            "uncontrolled"
        ],
        "{stdout}"
    );
    assert!(
        stdout.contains(
            r#"! `http_request` is enforced, but `change_config` just before it is uncontrolled for Agent::"bot""#
        ),
        "{stdout}"
    );
}

#[test]
fn json_is_one_document_and_fail_below_is_a_gate() {
    let pack = write_pack();
    let out = chains(pack.path(), &["--json"]);
    assert_eq!(out.status.code(), Some(0));
    let found: Value = serde_json::from_slice(&out.stdout).unwrap();
    let bot = &found["chains"][0]["identities"][0];
    assert_eq!(bot["principal"], r#"Agent::"bot""#);
    assert_eq!(bot["level"], "uncontrolled");
    assert_eq!(bot["weakest"], serde_json::json!(["change_config"]));

    let out = chains(pack.path(), &["--fail-below", "audited"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let out = chains(pack.path(), &["--fail-below", "uncontrolled"]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn bad_arguments_exit_2_with_the_reason() {
    let pack = write_pack();
    for (args, says) in [
        (vec!["--fail-below", "strong"], "--fail-below `strong`"),
        (
            vec!["--chain", "nope"],
            "the pack has no chain `nope` (its chains: exfiltration)",
        ),
        (vec!["--principal", "bot"], "`bot` is not a principal uid"),
        (vec!["--window", "soon"], "--window `soon`"),
        (
            vec!["--data", "/nonexistent/arbiter-data"],
            "no arbiter store in /nonexistent/arbiter-data",
        ),
    ] {
        let out = chains(pack.path(), &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

// ------------------------------------------------------------------------- report

fn report(pack: &std::path::Path, data: &std::path::Path, extra: &[&str]) -> Output {
    Command::new(ARBITER)
        .arg("report")
        .arg("--pack")
        .arg(pack)
        .arg("--data")
        .arg(data)
        .args(extra)
        .env_remove("ARBITER_DATA")
        .output()
        .unwrap()
}

#[test]
fn report_writes_each_format_and_refuses_bad_input() {
    let pack = write_pack();
    let data = tempfile::tempdir().unwrap();
    drop(arbiter_store::Store::open(data.path()).unwrap());
    let out_file = data.path().join("report.html");
    let out = report(
        pack.path(),
        data.path(),
        &["--format", "html", "--out", out_file.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    let html = fs::read_to_string(&out_file).unwrap();
    assert!(
        html.contains("<svg ") && html.contains("exfiltration"),
        "{html}"
    );
    let out = report(pack.path(), data.path(), &["--format", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["chains"][0]["name"], "exfiltration");
    let out = report(pack.path(), data.path(), &["--format", "markdown"]);
    assert!(text(&out.stdout).starts_with("# arbiter evidence report"));

    for (args, says) in [
        (vec!["--format", "pdf"], "invalid value 'pdf'"),
        (
            vec!["--format", "json", "--framework", "ISO"],
            "no framework `ISO`",
        ),
    ] {
        let out = report(pack.path(), data.path(), &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            text(&out.stderr).contains(says),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let out = report(
        pack.path(),
        &data.path().join("nothing"),
        &["--format", "json"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no arbiter store"));
}

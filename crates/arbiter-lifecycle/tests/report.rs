//! The evidence report from a real store: each control's status from the rules that map
//! to it, an erroring rule's verdict, the would-fire series, and the three renderings.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

use std::fs;
use std::sync::Arc;
use std::time::Duration;

use arbiter_core::clock::ManualClock;
use arbiter_core::{DecisionRequest, Engine, Pack, TimeSource};
use arbiter_lifecycle::report::{self, Format, Options, Status};
use arbiter_store::{DecisionRecord, Durability, LogWriter, PackVersion, Store};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

const SCHEMA: &str = "entity Agent;\nentity Tool;\n\
    action call appliesTo { principal: [Agent], resource: [Tool], context: {} };\n";

/// `block-danger` (enforced) implements NHI7 with `watch-danger` (audit): NHI7 is
/// partially enforced, NHI5 (only `watch-danger`) audit only, NHI2 (only `block-danger`)
/// enforced; `broken` (audit, maps ASI02) errors on every call.
const POLICIES: &str = r#"
@id("allow")
permit(principal, action, resource);

@id("block-danger")
@mode("enforce")
@maps("OWASP-NHI:NHI2, OWASP-NHI:NHI7")
forbid(principal, action, resource == Tool::"danger");

@id("watch-danger")
@mode("audit")
@maps("OWASP-NHI:NHI5, OWASP-NHI:NHI7")
forbid(principal, action, resource) when { resource == Tool::"risky" };

@id("broken")
@mode("audit")
@maps("OWASP-ASI:ASI02, NIST-CSF-1.1:PR.AC-4")
forbid(principal, action, resource) when { 9223372036854775807 + 1 > 0 };
"#;

fn day(n: i64) -> Timestamp {
    "2026-11-01T09:00:00Z"
        .parse::<Timestamp>()
        .unwrap()
        .checked_add(SignedDuration::from_hours(24 * n))
        .unwrap()
}

async fn lab() -> (tempfile::TempDir, Pack, Store) {
    let dir = tempfile::tempdir().unwrap();
    let pack_dir = dir.path().join("pack");
    fs::create_dir_all(pack_dir.join("policies")).unwrap();
    fs::write(pack_dir.join("schema.cedarschema"), SCHEMA).unwrap();
    fs::write(pack_dir.join("policies/rules.cedar"), POLICIES).unwrap();
    let pack = Arc::new(Pack::load(&pack_dir).unwrap());
    let store = Store::open(&dir.path().join("data")).unwrap();
    store
        .record_pack_version(&PackVersion::of(&pack, day(0)))
        .unwrap();
    let writer = LogWriter::start(&store, Durability::Sync, 64).unwrap();
    let clock = Arc::new(ManualClock::new(day(0)));
    let engine = Engine::new(Arc::clone(&pack))
        .with_clock(clock.clone())
        .with_time_source(TimeSource::ClockOnly);
    // Day 2: three risky calls; day 3: one dangerous, one safe.
    for (n, tool) in [
        (2, "risky"),
        (2, "risky"),
        (2, "risky"),
        (3, "danger"),
        (3, "safe"),
    ] {
        clock.set(day(n));
        let request = DecisionRequest::from_value(&json!({
            "principal": "Agent::\"bot\"", "action": "Action::\"call\"",
            "resource": format!("Tool::\"{tool}\""), "context": {}}))
        .unwrap();
        let d = engine.decide(&request).unwrap();
        let record = DecisionRecord::decided(&d, &request, json!({}), Duration::from_micros(1));
        writer.append(record).await.unwrap();
    }
    writer.shutdown().await.unwrap();
    let pack = Pack::load(&pack_dir).unwrap();
    (dir, pack, store)
}

fn options() -> Options {
    Options {
        framework: None,
        window_days: 7,
    }
}

#[tokio::test]
async fn each_control_has_the_status_its_rules_give_it_and_uncovered_ones_come_first() {
    let (_dir, pack, store) = lab().await;
    let found = report::gather(&pack, "pack", &store, &options(), day(5)).unwrap();
    let nhi = found
        .frameworks
        .iter()
        .find(|f| f.name == "OWASP-NHI")
        .unwrap();
    let status = |id: &str| {
        let c = nhi.controls.iter().find(|c| c.id == id).unwrap();
        (c.status, c.rules.clone())
    };
    assert_eq!(status("OWASP-NHI:NHI1"), (Status::NotCovered, vec![]));
    assert_eq!(
        status("OWASP-NHI:NHI5"),
        (Status::AuditOnly, vec!["watch-danger".to_owned()])
    );
    assert_eq!(
        status("OWASP-NHI:NHI7"),
        (
            Status::PartiallyEnforced,
            vec!["block-danger".to_owned(), "watch-danger".to_owned()]
        )
    );
    assert_eq!(
        status("OWASP-NHI:NHI2"),
        (Status::Enforced, vec!["block-danger".to_owned()])
    );
    let order: Vec<Status> = nhi.controls.iter().map(|c| c.status).collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "controls with no enforced rule first");
    // A CSF 1.1 id in @maps lands on its 2.0 successor, shown beside it.
    let csf = found
        .frameworks
        .iter()
        .find(|f| f.name == "NIST-CSF-2.0")
        .unwrap();
    let aa05 = csf
        .controls
        .iter()
        .find(|c| c.id == "NIST-CSF-2.0:PR.AA-05")
        .unwrap();
    assert_eq!(aa05.rules, ["broken"]);
    assert!(
        aa05.csf_1_1.contains(&"NIST-CSF-1.1:PR.AC-4".to_owned()),
        "{aa05:?}"
    );

    let rule = |id: &str| found.rules.iter().find(|r| r.rule == id).unwrap();
    let broken = rule("broken");
    assert_eq!(broken.verdict.map(|v| v.as_str()), Some("erroring"));
    assert_eq!(broken.errors, 5);
    let watch = rule("watch-danger");
    assert_eq!((watch.in_scope, watch.would_fire), (5, 3));
    assert_eq!(watch.findings.open, 1);
    // Seven days of series up to day 5: the firings on day 2.
    let series: Vec<u64> = watch.would_fire_per_day.iter().map(|d| d.count).collect();
    assert_eq!(series.len(), 8, "{series:?}");
    assert_eq!(series.iter().sum::<u64>(), 3);
    assert_eq!(rule("block-danger").verdict, None);
    assert!(found.summary.controls_by_status["audit only"] >= 1);
}

#[tokio::test]
async fn html_is_self_contained_with_charts_markdown_has_none_and_json_is_the_data() {
    let (_dir, pack, store) = lab().await;
    let found = report::gather(&pack, "pack", &store, &options(), day(5)).unwrap();
    let html = report::render(&found, Format::Html).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    // Nothing to run, nothing fetched: no script, no source, no link or import outside.
    for never in ["<script", "src=", "href=\"http", "url(", "@import", "<link"] {
        assert!(!html.contains(never), "{never}");
    }
    // The two summary charts and one per rule (three forbids, the scope).
    assert_eq!(
        html.matches("<svg ").count(),
        2 + found.rules.len(),
        "{html}"
    );
    assert!(html.contains("OWASP-NHI:NHI7") && html.contains("watch-danger"));
    let markdown = report::render(&found, Format::Markdown).unwrap();
    assert!(!markdown.contains("<svg"));
    assert!(
        markdown.contains(
            "| `OWASP-NHI:NHI5` Overprivileged NHI | audit only | `watch-danger` (audit, "
        ),
        "{markdown}"
    );
    let json: Value = serde_json::from_str(&report::render(&found, Format::Json).unwrap()).unwrap();
    assert_eq!(json["frameworks"][0]["name"], "OWASP-NHI");
    assert!(json["rules"][0].get("chart").is_none());

    let only = Options {
        framework: Some("OWASP-ASI".to_owned()),
        ..options()
    };
    let found = report::gather(&pack, "pack", &store, &only, day(5)).unwrap();
    assert_eq!(found.frameworks.len(), 1);
    let err = report::gather(
        &pack,
        "pack",
        &store,
        &Options {
            framework: Some("ISO".to_owned()),
            ..options()
        },
        day(5),
    )
    .unwrap_err();
    assert!(err.to_string().starts_with("no framework `ISO`"), "{err}");
}

#[tokio::test]
async fn a_logged_value_cannot_break_out_of_the_page_or_the_table() {
    let (_dir, pack, store) = lab().await;
    let mut found = report::gather(
        &pack,
        "<script>alert(1)</script>",
        &store,
        &options(),
        day(5),
    )
    .unwrap();
    found.chains.push(report::ChainSummary {
        name: "c".to_owned(),
        steps: vec!["a".to_owned(), "b".to_owned()],
        identities: vec![report::ChainIdentity {
            principal: "Agent::\"<img src=x onerror=alert(1)>|x\"".to_owned(),
            level: arbiter_lifecycle::chains::Level::Audited,
            level_text: "audited",
            weakest: vec!["a".to_owned()],
            bypasses: vec!["line\nbreak | pipe".to_owned()],
        }],
    });
    let html = report::render(&found, Format::Html).unwrap();
    assert!(
        !html.contains("<script>alert") && !html.contains("<img src=x"),
        "escaped"
    );
    assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
    let markdown = report::render(&found, Format::Markdown).unwrap();
    assert!(!markdown.contains("<img") && !markdown.contains("<script>"));
    assert!(markdown.contains("line break \\| pipe"), "{markdown}");
}

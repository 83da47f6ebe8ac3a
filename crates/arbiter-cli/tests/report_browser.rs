//! The HTML report of the example pack over a synthetic month of log, opened in headless
//! Chromium: no console error, every chart drawn with a size, a known rule and control on
//! the page, at a laptop's and a phone's width; the screenshots are kept as artifacts
//! (`ARBITER_SCREENSHOTS=docs` refreshes the one docs/report.md shows).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use arbiter_core::clock::{Clock, ManualClock, SystemClock};
use arbiter_core::{DecisionRequest, Engine, Pack, TimeSource};
use arbiter_store::{DecisionRecord, Durability, LogWriter, PackVersion, Store};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

mod common;

use common::browser::{Browser, LAPTOP, PHONE};
use common::{example, s};

const ARBITER: &str = env!("CARGO_BIN_EXE_arbiter");

/// What the example's rules make of a varied day: audits, warns, enforced denies and
/// plain allows, from agents, CI jobs and services.
fn day_of_work(n: i64) -> Vec<Value> {
    let mut day = vec![
        json!({"principal": "Service::\"billing-api\"", "action": "Action::\"create_token\"",
               "resource": "Service::\"ledger-api\"",
               "context": {"ttl_s": 86400, "scopes": ["ledger:write"]}}),
        json!({"principal": "Agent::\"support-bot\"", "action": "Action::\"read_secret\"",
               "resource": "Secret::\"prod/stripe-key\""}),
        json!({"principal": "CiJob::\"pr-checks\"", "action": "Action::\"http_request\"",
               "resource": "Endpoint::\"pastebin.com\"",
               "context": {"method": "GET", "path": "/raw/x"}}),
        json!({"principal": "Agent::\"support-bot\"", "action": "Action::\"read_ticket\"",
               "resource": "Ticket::\"T-1\""}),
    ];
    if n % 3 == 0 {
        day.push(
            json!({"principal": "Agent::\"support-bot\"", "action": "Action::\"comment_ticket\"",
               "resource": "Ticket::\"T-1\"",
               "context": {"body": "see https://login.example.com/reset"}}),
        );
    }
    day
}

/// Thirty days of decisions by the engine on an injected clock, written by the real log
/// writer, the pack loaded on the first day.
async fn month_of_log(pack: &Path, data: &Path, start: Timestamp) {
    let pack = Arc::new(Pack::load(pack).unwrap());
    let store = Store::open(data).unwrap();
    store
        .record_pack_version(&PackVersion::of(&pack, start))
        .unwrap();
    let writer = LogWriter::start(&store, Durability::Batched, 1024).unwrap();
    let clock = Arc::new(ManualClock::new(start));
    let engine = Engine::new(pack)
        .with_clock(clock.clone())
        .with_time_source(TimeSource::ClockOnly);
    for n in 0..30 {
        for (i, request) in day_of_work(n).iter().enumerate() {
            let at = start
                .checked_add(SignedDuration::from_hours(24 * n + 2 * i as i64))
                .unwrap();
            clock.set(at);
            let request = DecisionRequest::from_value(request).unwrap();
            let d = engine.decide(&request).unwrap();
            let record = DecisionRecord::decided(&d, &request, json!({}), Duration::from_micros(5));
            writer.append(record).await.unwrap();
        }
    }
    writer.shutdown().await.unwrap();
}

#[test]
fn the_html_report_renders_in_a_browser_without_errors_and_with_its_charts() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The month that ends today: the binary's series are the last 30 days to its wall
    // clock, so the log is written on the same clock.
    let start = SystemClock
        .now()
        .checked_sub(SignedDuration::from_hours(24 * 30))
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(month_of_log(&example(), &data, start));
    let html = dir.path().join("report.html");
    // From the repository's root, so the page names the pack as a reader would.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(ARBITER)
        .current_dir(&root)
        .args([
            "report",
            "--pack",
            "examples/agents-and-pipelines",
            "--data",
            s(&data),
        ])
        .args(["--format", "html", "--out", s(&html)])
        .env_remove("ARBITER_DATA")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut browser = Browser::start();
    browser.set_size(LAPTOP);
    browser.open_file(&html);
    browser.wait_for("h1");
    assert_eq!(browser.text("h1"), "arbiter evidence report");
    // A known control, and the rule that implements it.
    let page = browser.text("body");
    assert!(page.contains("OWASP-NHI:NHI7 Long-Lived Secrets"), "{page}");
    assert!(page.contains("tokens.long-ttl"), "{page}");
    // Every chart drawn with a size: two in the summary, one per forbid and scope.
    let charts = browser.svg_boxes();
    let rules = browser.eval("return document.querySelectorAll('.rule').length;");
    assert_eq!(
        charts.len() as u64,
        2 + rules.as_u64().unwrap(),
        "{charts:?}"
    );
    assert!(
        charts.iter().all(|r| r.width > 0.0 && r.height > 0.0),
        "{charts:?}"
    );
    // The bars of the month's firings are there, not an empty axis.
    let bars = browser.eval(
        "return Array.from(document.querySelectorAll('.rule svg rect'))\
         .filter(r => r.getBBox().height > 0).length;",
    );
    assert!(bars.as_u64().unwrap() > 10, "{bars}");
    browser.screenshot("report");
    browser.set_size(PHONE);
    // No sideways scrolling at a phone's width.
    let wide = browser.eval("return document.documentElement.scrollWidth;");
    assert!(
        wide.as_f64().unwrap() <= f64::from(PHONE.width) + 1.0,
        "{wide}"
    );
    browser.screenshot("report-phone");
    browser.assert_no_console_errors();
}

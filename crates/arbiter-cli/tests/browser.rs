//! Tests of the browser helper the report and dashboard tests are built on
//! (`tests/common/browser.rs`): headless Chromium through chromedriver, both installed by
//! `source .ci/browser.sh`. The pages are `tests/fixtures/browser/`, opened from disk or
//! served by a small axum server on a loopback port.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};

mod common;

use common::WITHIN;
use common::browser::{self, Browser, LAPTOP, PHONE};

fn page(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/browser")
        .join(name)
}

/// A PNG's first eight bytes.
const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// The width and height a PNG's header gives.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap();
    assert!(bytes.len() > 24, "{} is a PNG", path.display());
    assert_eq!(&bytes[..8], PNG_SIGNATURE, "{} is a PNG", path.display());
    assert_eq!(&bytes[12..16], b"IHDR");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    (width, height)
}

#[test]
fn a_page_of_charts_is_measured_and_photographed_at_a_laptops_and_a_phones_size() {
    let mut browser = Browser::start();
    assert_eq!(
        browser.viewport(),
        LAPTOP,
        "a session starts at a laptop's size"
    );
    browser.open_file(&page("charts.html"));
    assert_eq!(browser.text("h1"), "Decisions");

    let charts = browser.svg_boxes();
    assert_eq!(charts.len(), 2, "both charts: {charts:?}");
    for chart in &charts {
        assert!(chart.width > 0.0 && chart.height > 0.0, "{chart:?}");
        assert!(
            chart.x + chart.width <= f64::from(LAPTOP.width),
            "{chart:?}"
        );
    }
    // Side by side on a laptop.
    assert_eq!(charts[0].y, charts[1].y, "{charts:?}");
    browser.assert_no_console_errors();
    let laptop = browser.screenshot("browser-helper-laptop");
    assert_eq!(png_size(&laptop), (LAPTOP.width, LAPTOP.height));

    browser.set_size(PHONE);
    assert_eq!(browser.viewport(), PHONE);
    let charts = browser.svg_boxes();
    assert_eq!(charts.len(), 2);
    for chart in &charts {
        assert!(chart.width > 0.0 && chart.height > 0.0, "{chart:?}");
        assert!(
            chart.x + chart.width <= f64::from(PHONE.width),
            "fits a phone's width: {chart:?}"
        );
    }
    // Stacked on a phone.
    assert!(
        charts[1].y > charts[0].y + charts[0].height - 1.0,
        "{charts:?}"
    );
    let phone = browser.screenshot("browser-helper-phone");
    assert_eq!(png_size(&phone), (PHONE.width, PHONE.height));
    assert!(phone.starts_with(browser::screenshots_dir()));
    assert!(std::fs::metadata(&phone).unwrap().len() > 0);

    // JSON both ways through a script.
    assert_eq!(
        browser.eval("return {title: document.title, forms: document.forms.length}"),
        serde_json::json!({"title": "charts and a form", "forms": 1})
    );
    browser.assert_no_console_errors();
}

#[test]
fn every_kind_of_console_error_is_seen_and_a_clean_page_has_none() {
    let mut browser = Browser::start();
    let cases = [
        (
            "console-error.html",
            "console-api",
            "arbiter-test: a chart has no data",
        ),
        (
            "throws.html",
            "javascript",
            "TypeError: arbiter-test: rows is undefined",
        ),
        (
            "rejects.html",
            "javascript",
            "Uncaught Error: arbiter-test: fetch failed",
        ),
        (
            "missing-resource.html",
            "network",
            "arbiter-test-missing.css",
        ),
        ("outside.html", "network", "cdn.example.com/arbiter-test.js"),
    ];
    for (file, source, says) in cases {
        browser.open_file(&page(file));
        let errors = browser.console_errors();
        assert!(
            errors
                .iter()
                .any(|e| e.source == source && e.message.contains(says)),
            "{file}: a {source} error saying {says:?} in {errors:#?}"
        );
        // Taken: the next look starts empty.
        assert_eq!(browser.console_errors(), Vec::new(), "{file}");
    }

    // A warning is on the console, not among the errors.
    browser.open_file(&page("charts.html"));
    browser.eval("console.warn('arbiter-test: a warning'); console.log('a line'); return null");
    let console = browser.take_console();
    assert!(
        console
            .iter()
            .any(|e| e.level == "WARNING" && e.message.contains("arbiter-test: a warning")),
        "{console:#?}"
    );
    assert!(console.iter().all(|e| e.level != "SEVERE"), "{console:#?}");

    // An error a script logs after the page loaded (a chart drawn late) is seen too.
    browser.eval("setTimeout(() => console.error('arbiter-test: late'), 50); return null");
    let deadline = Instant::now() + WITHIN;
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|e: &browser::LogEntry| e.message.contains("arbiter-test: late"))
    {
        assert!(Instant::now() < deadline, "the late error: {seen:#?}");
        std::thread::sleep(Duration::from_millis(50));
        seen.extend(browser.console_errors());
    }
}

/// The sign-in of the served fixture: `token` must be `letmein`.
async fn sign_in(axum::Form(form): axum::Form<HashMap<String, String>>) -> Response {
    let name = form.get("name").cloned().unwrap_or_default();
    if form.get("token").map(String::as_str) != Some("letmein") || name.is_empty() {
        return (
            StatusCode::UNAUTHORIZED,
            Html("<!doctype html><title>no</title><p id=\"who\">not signed in</p>"),
        )
            .into_response();
    }
    let mut headers = HeaderMap::new();
    headers.insert(
        header::SET_COOKIE,
        format!("arbiter_test_session=s-{name}; Path=/; HttpOnly; SameSite=Strict")
            .parse()
            .unwrap(),
    );
    (headers, Redirect::to("/signed-in")).into_response()
}

async fn signed_in(headers: HeaderMap) -> Html<String> {
    let cookie = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let who = cookie
        .split("; ")
        .find_map(|c| c.strip_prefix("arbiter_test_session=s-"))
        .unwrap_or("nobody");
    Html(format!(
        "<!doctype html><html lang=\"en\"><title>signed in</title><p id=\"who\">{who}</p></html>"
    ))
}

/// The fixture `charts.html` at `/`, its form's sign-in, and the page after it, on a
/// loopback port; the server lives as long as the test.
fn serve_fixture() -> String {
    let charts = std::fs::read_to_string(page("charts.html")).unwrap();
    let app = axum::Router::new()
        .route("/", axum::routing::get(move || async move { Html(charts) }))
        .route("/sign-in", axum::routing::post(sign_in))
        .route("/signed-in", axum::routing::get(signed_in));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    format!("http://{addr}")
}

#[test]
fn a_form_is_filled_and_submitted_and_its_session_cookie_read_back() {
    let base = serve_fixture();
    let mut browser = Browser::start();
    browser.goto(&format!("{base}/"));
    assert_eq!(browser.svg_boxes().len(), 2);
    assert_eq!(browser.cookies(), Vec::new());

    // A wrong token: refused, no cookie.
    browser.fill("#name", "alice");
    browser.fill("#token", "guess");
    browser.submit("#sign-in");
    assert_eq!(browser.text("#who"), "not signed in");
    assert_eq!(browser.cookie("arbiter_test_session"), None);
    // The 401 itself is a failed load on the console.
    let errors = browser.console_errors();
    assert!(
        errors.iter().any(|e| e.message.contains("401")),
        "{errors:#?}"
    );

    browser.goto(&format!("{base}/"));
    browser.fill("#name", "alice");
    browser.fill("#token", "letmein");
    browser.click("button[type=submit]");
    browser.wait_until("return location.pathname === '/signed-in'");
    assert_eq!(browser.text("#who"), "alice", "the cookie went back");
    assert_eq!(browser.url(), format!("{base}/signed-in"));
    let cookie = browser
        .cookie("arbiter_test_session")
        .expect("the session cookie");
    assert_eq!(cookie.value, "s-alice");
    assert_eq!(cookie.path.as_deref(), Some("/"));
    assert!(cookie.http_only, "{cookie:?}");
    assert_eq!(cookie.same_site.as_deref(), Some("Strict"), "{cookie:?}");
    // HttpOnly: the helper reads it, the page's scripts cannot.
    assert_eq!(browser.eval("return document.cookie"), "");
    browser.assert_no_console_errors();
    let shot = browser.screenshot("browser-helper-signed-in");
    assert_eq!(png_size(&shot), (LAPTOP.width, LAPTOP.height));
}

/// The processes of process group `group` that are still running (not zombies).
fn alive_in_group(group: u32) -> Vec<String> {
    let mut alive = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "PID (COMM) STATE PPID PGRP …"; COMM may hold spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let fields: Vec<&str> = rest.split(' ').collect();
        if fields.len() > 2 && fields[0] != "Z" && fields[2] == group.to_string() {
            alive.push(stat);
        }
    }
    alive
}

#[test]
fn dropping_the_browser_ends_the_driver_and_the_browser() {
    let browser = Browser::start();
    browser.goto("about:blank");
    let group = browser.driver_pid();
    assert!(
        alive_in_group(group).len() >= 2,
        "the driver and the browser run in the driver's group"
    );
    drop(browser);
    let deadline = Instant::now() + WITHIN;
    loop {
        let alive = alive_in_group(group);
        if alive.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "still running: {alive:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_missing_browser_fails_the_test_saying_how_to_install_it() {
    let unset = browser::binary(
        None,
        "ARBITER_CHROMIUM",
        "/nonexistent/chromium",
        "Chromium",
    )
    .unwrap_err();
    assert!(unset.contains("ARBITER_CHROMIUM is unset"), "{unset}");
    assert!(unset.contains("/nonexistent/chromium"), "{unset}");
    assert!(unset.contains("source .ci/browser.sh"), "{unset}");

    let wrong = browser::binary(
        Some("/nonexistent/chromedriver".into()),
        "ARBITER_CHROMEDRIVER",
        "/usr/bin/chromedriver",
        "chromedriver",
    )
    .unwrap_err();
    assert!(
        wrong.contains("ARBITER_CHROMEDRIVER = /nonexistent/chromedriver"),
        "{wrong}"
    );
    assert!(wrong.contains("source .ci/browser.sh"), "{wrong}");

    // What `.ci/browser.sh` installs is found (this machine ran it, as CI does).
    let (chromium, chromedriver) = browser::binaries().unwrap_or_else(|e| panic!("{e}"));
    assert!(chromium.is_file() && chromedriver.is_file());
}

#[test]
fn a_file_url_escapes_what_a_url_cannot_hold() {
    assert_eq!(
        browser::file_url(Path::new("/tmp/a report/r#1 100%.html")),
        "file:///tmp/a%20report/r%231%20100%25.html"
    );
    assert_eq!(
        browser::file_url(Path::new("/tmp/été.html")),
        "file:///tmp/%C3%A9t%C3%A9.html"
    );
}

//! The dashboard as a person uses it, in headless Chromium against the real server on a
//! loopback port, its clock injected: sign in; see an audit rule with open findings
//! marked not ready; review its findings; watch its verdict become `ready` as the clock
//! moves on (the session expiring on the way); promote it from its page and see the
//! `.cedar` file changed and the next matching request denied; sign out and be refused.
//! No console error on any page (a CSP violation would be one), no sideways scrolling at
//! a phone's width. `ARBITER_SCREENSHOTS=docs/screenshots` refreshes the README's
//! screenshots of the overview and a rule's page.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

use std::sync::Arc;

use arbiter_core::clock::ManualClock;
use arbiter_server::{App, Durability, Options};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

mod common;

use common::browser::{Browser, LAPTOP, PHONE, Size};
use common::{ADMIN, copy_dir, example};

const RULE: &str = "egress.unapproved-endpoint";

/// The real server, in-process on a runtime of its own (the browser's calls block), on
/// an injected clock.
struct Dashboard {
    base: String,
    clock: Arc<ManualClock>,
    http: reqwest::blocking::Client,
    pack: std::path::PathBuf,
    _runtime: tokio::runtime::Runtime,
    _dirs: tempfile::TempDir,
}

impl Dashboard {
    fn start(at: Timestamp) -> Dashboard {
        let dirs = tempfile::tempdir().unwrap();
        let pack = dirs.path().join("pack");
        copy_dir(&example(), &pack);
        let clock = Arc::new(ManualClock::new(at));
        let mut options = Options::new(&pack, dirs.path().join("data"));
        options.admin_token = Some(ADMIN.to_owned());
        options.clock = clock.clone();
        options.durability = Durability::Sync;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let base = runtime.block_on(async {
            let (app, _) = App::start(options).await.unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(arbiter_server::serve(app, listener, std::future::pending()));
            base
        });
        Dashboard {
            base,
            clock,
            http: reqwest::blocking::Client::new(),
            pack,
            _runtime: runtime,
            _dirs: dirs,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn decide(&self, request: &Value) -> Value {
        let response = self
            .http
            .post(self.url("/v1/decide"))
            .json(request)
            .send()
            .unwrap();
        assert!(response.status().is_success());
        response.json().unwrap()
    }
}

/// A CI job fetching from pastebin: the audit rule fires on it.
fn pastebin(path: &str) -> Value {
    json!({"principal": "CiJob::\"pr-checks\"", "action": "Action::\"http_request\"",
           "resource": "Endpoint::\"pastebin.com\"", "context": {"method": "GET", "path": path}})
}

/// The rest of a working day, so the overview has something to draw.
fn background(d: &Dashboard) {
    for request in [
        json!({"principal": "Agent::\"support-bot\"", "action": "Action::\"read_ticket\"",
               "resource": "Ticket::\"T-1\""}),
        json!({"principal": "Agent::\"support-bot\"", "action": "Action::\"read_secret\"",
               "resource": "Secret::\"prod/stripe-key\""}),
        json!({"principal": "Service::\"billing-api\"", "action": "Action::\"create_token\"",
               "resource": "Service::\"ledger-api\"",
               "context": {"ttl_s": 86400, "scopes": ["ledger:write"]}}),
    ] {
        d.decide(&request);
    }
}

fn sign_in(browser: &Browser, d: &Dashboard) {
    browser.goto(&d.url("/ui"));
    assert!(browser.url().ends_with("/ui/signin"), "{}", browser.url());
    browser.fill("#token", ADMIN);
    browser.submit("#signin");
    assert!(
        browser.url().ends_with("/ui"),
        "{}: {}",
        browser.url(),
        browser.text("main")
    );
}

/// A screenshot of the page's top, a laptop's width and a tall window's height (what the
/// README shows).
fn tall_screenshot(browser: &Browser, name: &str) {
    browser.set_size(Size {
        width: 1280,
        height: 1400,
    });
    browser.screenshot(name);
    browser.set_size(LAPTOP);
}

fn no_sideways_scroll(browser: &Browser) {
    browser.set_size(PHONE);
    let wide = browser.eval("return document.documentElement.scrollWidth;");
    assert!(
        wide.as_f64().unwrap() <= f64::from(PHONE.width) + 1.0,
        "{} scrolls sideways on a phone: {wide}",
        browser.url()
    );
    browser.set_size(LAPTOP);
}

#[test]
fn a_rule_goes_from_audit_to_enforce_through_the_dashboard() {
    let start: Timestamp = "2026-11-02T09:00:00Z".parse().unwrap();
    let d = Dashboard::start(start);
    // Two days of audit: the rule fires on three different paths... of one endpoint,
    // one finding (the group is principal, action, resource).
    for (hours, path) in [(1, "/raw/a"), (5, "/raw/b"), (26, "/raw/c")] {
        d.clock.set(
            start
                .checked_add(SignedDuration::from_hours(hours))
                .unwrap(),
        );
        let decided = d.decide(&pastebin(path));
        assert_eq!(
            decided["decision"], "allow",
            "audit only records: {decided}"
        );
        background(&d);
    }
    d.clock
        .set(start.checked_add(SignedDuration::from_hours(30)).unwrap());

    let mut browser = Browser::start();
    browser.set_size(LAPTOP);
    sign_in(&browser, &d);
    let session = browser.cookie("arbiter_ui").expect("a session cookie");
    assert!(session.http_only, "{session:?}");
    assert_eq!(session.same_site.as_deref(), Some("Strict"), "{session:?}");

    // The overview: charts drawn, the open finding counted.
    assert_eq!(browser.text("h1"), "Overview");
    // The pastebin fetch and what the background traffic's audit rules found.
    let open: u64 = browser.text("#open-findings").parse().unwrap();
    assert!(open >= 1, "{open}");
    let charts = browser.svg_boxes();
    assert_eq!(charts.len(), 2, "{charts:?}");
    assert!(charts.iter().all(|r| r.width > 0.0 && r.height > 0.0));
    no_sideways_scroll(&browser);

    // The rules: the audit rule with an open finding is not ready.
    browser.click("a[href='/ui/rules']");
    browser.wait_for("#rules");
    let verdict = browser.text(&format!("tr[data-rule='{RULE}'] td.verdict"));
    assert_eq!(verdict, "needs_review");
    no_sideways_scroll(&browser);

    // Its page: the source, the refusal with its reasons, the diff it would write.
    browser.click(&format!("tr[data-rule='{RULE}'] a"));
    browser.wait_for("#rule-name");
    assert_eq!(browser.text("#rule-name"), RULE);
    assert!(
        browser
            .text("#source")
            .contains("@id(\"egress.unapproved-endpoint\")")
    );
    assert_eq!(browser.text("#verdict"), "needs_review");
    assert!(
        browser
            .text("#not-ready")
            .contains("finding(s) nobody has reviewed")
    );
    let diff = browser.text("#diff");
    assert!(
        diff.contains("-@mode(\"audit\")") && diff.contains("+@mode(\"enforce\")"),
        "{diff}"
    );
    browser.screenshot("dashboard-rule-not-ready");
    no_sideways_scroll(&browser);

    // Promoting now is refused, with the reasons, and the file is untouched.
    let cedar = d.pack.join("policies/egress.cedar");
    let before = std::fs::read_to_string(&cedar).unwrap();
    browser.submit("#promote");
    assert!(
        browser
            .text("#notice")
            .contains("was not promoted: it is needs_review")
    );
    assert_eq!(std::fs::read_to_string(&cedar).unwrap(), before);
    // The refusal's status is the only thing the console has to say so far (the browser
    // may log it a moment after the page has loaded: wait for it).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut logged: Vec<String> = Vec::new();
    while !logged.iter().any(|m| m.contains("/ui/rule/promote")) {
        assert!(std::time::Instant::now() < deadline, "{logged:?}");
        logged.extend(
            browser
                .take_console()
                .into_iter()
                .filter(|e| e.level == "SEVERE")
                .map(|e| e.message),
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(logged.len() == 1 && logged[0].contains("409"), "{logged:?}");

    // Review every open finding as expected.
    let findings = browser.eval("return document.querySelectorAll('form.review').length;");
    assert_eq!(findings, json!(1));
    browser.fill(
        "form.review input[name='note']",
        "CI fetches a fixture from pastebin: block it",
    );
    browser.submit("form.review");
    browser.wait_for("#rule-name");
    assert_eq!(
        browser.eval("return document.querySelectorAll('form.review').length;"),
        json!(0)
    );
    // Reviewed, but one day in audit is not fourteen.
    assert_eq!(browser.text("#verdict"), "insufficient_evidence");
    assert!(
        browser
            .text("#reasons")
            .contains("fewer than the 14 required")
    );

    // Fifteen days on, the rule still firing as reviewed: ready. The session has
    // expired on the way.
    d.clock.set(
        start
            .checked_add(SignedDuration::from_hours(24 * 15))
            .unwrap(),
    );
    d.decide(&pastebin("/raw/d"));
    background(&d);
    browser.goto(&d.url(&format!("/ui/rule?name={RULE}")));
    assert!(
        browser.url().ends_with("/ui/signin"),
        "expired: {}",
        browser.url()
    );
    sign_in(&browser, &d);
    tall_screenshot(&browser, "dashboard-overview");
    browser.goto(&d.url(&format!("/ui/rule?name={RULE}")));
    assert_eq!(browser.text("#verdict"), "ready");
    assert!(browser.text("#ready").contains("ready to enforce"));
    tall_screenshot(&browser, "dashboard-rule");

    // Promote from the page: the file changes, the record names the admin, the server
    // reloads and the next matching request is denied.
    browser.submit("#promote");
    browser.wait_for("#rule-name");
    assert_eq!(browser.text("#mode"), "enforce");
    let after = std::fs::read_to_string(&cedar).unwrap();
    assert_ne!(after, before);
    assert!(
        after.contains("@id(\"egress.unapproved-endpoint\")\n@mode(\"enforce\")"),
        "{after}"
    );
    assert!(
        browser
            .text("#promotions")
            .contains("audit enforce admin ready no")
    );
    // A minute later, so it is the newest decision in the log (ids order by time, and
    // the injected clock stands still between requests).
    d.clock.advance(SignedDuration::from_mins(1));
    let decided = d.decide(&pastebin("/raw/e"));
    assert_eq!(decided["decision"], "deny", "{decided}");
    assert_eq!(decided["enforced"], json!([RULE]), "{decided}");

    // The decision shows in the log, and on its own page.
    browser.goto(&d.url("/ui/decisions?decision=deny"));
    browser.click("#decisions tr.deny a");
    assert_eq!(browser.text("#outcome"), "deny");
    assert!(browser.text("#fired").contains(RULE));
    no_sideways_scroll(&browser);

    // The CI job's page: what it did, and a revocation.
    browser.click("#principal");
    browser.wait_for("#baseline");
    assert!(browser.text("#baseline").contains("pastebin.com"));
    browser.fill("#revoke-reason", "pr-checks leaked a token");
    browser.submit("#revoke");
    assert!(
        browser
            .text("#revocations")
            .contains("pr-checks leaked a token")
    );
    no_sideways_scroll(&browser);

    // Sign out: the cookie is gone and the pages are refused.
    browser.submit("form.signout");
    assert!(browser.url().ends_with("/ui/signin"), "{}", browser.url());
    assert!(browser.cookie("arbiter_ui").is_none());
    browser.goto(&d.url("/ui/rules"));
    assert!(browser.url().ends_with("/ui/signin"), "{}", browser.url());
    browser.assert_no_console_errors();
}

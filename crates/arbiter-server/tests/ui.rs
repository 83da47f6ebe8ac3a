//! The dashboard over HTTP, as a hostile client would try it: no page without a session,
//! a sign-in only with an admin token and the form's own cookie, forms refused without
//! the session's CSRF token or from another site, sessions that expire on the server's
//! clock and end at sign-out, logged values escaped, and the headers that keep the page
//! from loading or running anything else. The browser test (arbiter-cli) walks the
//! lifecycle through the same pages.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

mod common;

use std::sync::Arc;

use arbiter_core::clock::ManualClock;
use common::{ADMIN, Server, copy_dir, example};
use jiff::SignedDuration;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use serde_json::json;

struct Ui {
    server: Server,
    clock: Arc<ManualClock>,
    http: reqwest::Client,
}

const START: &str = "2026-12-01T09:00:00Z";

/// A pastebin request: `egress.unapproved-endpoint` (audit) fires on it.
fn pastebin() -> serde_json::Value {
    json!({"principal": "CiJob::\"pr-checks\"", "action": "Action::\"http_request\"",
           "resource": "Endpoint::\"pastebin.com\"", "context": {"method": "GET", "path": "/x"}})
}

impl Ui {
    async fn start() -> Ui {
        let dirs = tempfile::tempdir().unwrap();
        let pack = dirs.path().join("pack");
        copy_dir(&example(), &pack);
        let data = dirs.path().join("data");
        let clock = Arc::new(ManualClock::new(START.parse().unwrap()));
        let server_clock = Arc::clone(&clock);
        // Decisions are committed before they are answered, so a page read next shows them.
        let server = Server::start_with(dirs, pack, data, move |o| {
            o.clock = server_clock;
            o.durability = arbiter_server::Durability::Sync;
        })
        .await;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Ui {
            server,
            clock,
            http,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.base)
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> (StatusCode, HeaderMap, String) {
        let mut request = self.http.get(self.url(path));
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        (status, headers, response.text().await.unwrap())
    }

    async fn post_form(
        &self,
        path: &str,
        cookie: Option<&str>,
        form: &[(&str, &str)],
        extra: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, String) {
        let mut request = self
            .http
            .post(self.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(form).unwrap());
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        for (k, v) in extra {
            request = request.header(*k, *v);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        (status, headers, response.text().await.unwrap())
    }

    /// Signs in with `token`; the session cookie (`name=value`) and its `Set-Cookie`.
    async fn sign_in(&self, token: &str) -> (StatusCode, Option<(String, String)>) {
        let (status, headers, page) = self.get("/ui/signin", None).await;
        assert_eq!(status, StatusCode::OK);
        let signin_cookie = cookie_pair(&headers, "arbiter_signin").unwrap();
        let value = hidden(&page, "signin");
        let (status, headers, _) = self
            .post_form(
                "/ui/signin",
                Some(&signin_cookie),
                &[("token", token), ("signin", &value)],
                &[],
            )
            .await;
        let session = headers
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .find(|v| v.starts_with("arbiter_ui="))
            .map(|set| (set.split(';').next().unwrap().to_owned(), set));
        (status, session)
    }

    async fn signed_in(&self) -> String {
        let (status, session) = self.sign_in(ADMIN).await;
        assert_eq!(status, StatusCode::SEE_OTHER);
        session.unwrap().0
    }

    /// The CSRF token of the session, from a page's forms.
    async fn csrf(&self, cookie: &str) -> String {
        let (status, _, page) = self.get("/ui", Some(cookie)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        hidden(&page, "csrf")
    }

    async fn decide(&self, request: serde_json::Value) -> serde_json::Value {
        let (status, body, _) = self.server.post("/v1/decide", &request).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    async fn open_findings(&self, rule: &str) -> Vec<serde_json::Value> {
        let path = format!("/v1/findings?rule={rule}&status=open");
        let (status, body, _) = self
            .server
            .admin(reqwest::Method::GET, &path, Some(ADMIN))
            .await;
        assert_eq!(status, StatusCode::OK);
        body["findings"].as_array().unwrap().clone()
    }
}

/// `name=value` of the cookie a response sets.
fn cookie_pair(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap().to_owned())
}

/// The value of the first hidden input `name` on `page`.
fn hidden(page: &str, name: &str) -> String {
    let marker = format!(r#"name="{name}" value=""#);
    let start = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {page}"))
        + marker.len();
    let end = page[start..].find('"').unwrap();
    page[start..start + end].to_owned()
}

fn redirected_to_sign_in(status: StatusCode, headers: &HeaderMap) -> bool {
    status == StatusCode::SEE_OTHER
        && headers.get(LOCATION).and_then(|v| v.to_str().ok()) == Some("/ui/signin")
}

#[tokio::test]
async fn no_page_and_no_form_without_a_session() {
    let ui = Ui::start().await;
    ui.decide(pastebin()).await;
    for path in [
        "/ui",
        "/ui/rules",
        "/ui/rule?name=egress.unapproved-endpoint",
        "/ui/decisions",
        "/ui/identities",
        "/ui/identity?principal=CiJob%3A%3A%22pr-checks%22",
        "/ui/decision?id=x",
        "/ui/nothing-here",
    ] {
        let (status, headers, body) = ui.get(path, None).await;
        assert!(redirected_to_sign_in(status, &headers), "{path}: {status}");
        assert!(!body.contains("pastebin"), "{path} showed data: {body}");
        // A made-up session is no session.
        let (status, headers, _) = ui.get(path, Some("arbiter_ui=00ff")).await;
        assert!(redirected_to_sign_in(status, &headers), "{path}: {status}");
    }
    let finding = ui.open_findings("egress.unapproved-endpoint").await;
    let id = finding[0]["id"].as_str().unwrap();
    let (status, headers, _) = ui
        .post_form(
            "/ui/rule/review",
            None,
            &[
                ("csrf", "x"),
                ("rule", "egress.unapproved-endpoint"),
                ("finding", id),
                ("verdict", "expected"),
                ("note", "fine"),
            ],
            &[],
        )
        .await;
    assert!(redirected_to_sign_in(status, &headers), "{status}");
    assert_eq!(
        ui.open_findings("egress.unapproved-endpoint").await.len(),
        1
    );
}

#[tokio::test]
async fn signing_in_takes_an_admin_token_and_the_forms_own_cookie() {
    let ui = Ui::start().await;
    let (status, session) = ui.sign_in("not-the-token").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(session.is_none());

    // Without the sign-in form's cookie (a form posted from another site): refused.
    let (_, _, page) = ui.get("/ui/signin", None).await;
    let value = hidden(&page, "signin");
    let (status, headers, _) = ui
        .post_form(
            "/ui/signin",
            None,
            &[("token", ADMIN), ("signin", &value)],
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(cookie_pair(&headers, "arbiter_ui").is_none());

    let (status, session) = ui.sign_in(ADMIN).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let (cookie, set) = session.unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=28800"] {
        assert!(set.contains(attribute), "{set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    let (status, _, page) = ui.get("/ui", Some(&cookie)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("Sign out") && page.contains("admin"),
        "{page}"
    );
}

#[tokio::test]
async fn behind_tls_the_cookie_is_secure() {
    let ui = Ui::start().await;
    let (_, headers, page) = ui.get("/ui/signin", None).await;
    let signin_cookie = cookie_pair(&headers, "arbiter_signin").unwrap();
    let value = hidden(&page, "signin");
    let (status, headers, _) = ui
        .post_form(
            "/ui/signin",
            Some(&signin_cookie),
            &[("token", ADMIN), ("signin", &value)],
            &[("x-forwarded-proto", "https")],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let set = headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|v| v.starts_with("arbiter_ui="))
        .unwrap();
    assert!(set.contains("; Secure"), "{set}");
}

#[tokio::test]
async fn a_form_without_the_sessions_csrf_token_or_from_another_site_is_refused() {
    let ui = Ui::start().await;
    ui.decide(pastebin()).await;
    let cookie = ui.signed_in().await;
    let csrf = ui.csrf(&cookie).await;
    let findings = ui.open_findings("egress.unapproved-endpoint").await;
    let id = findings[0]["id"].as_str().unwrap().to_owned();
    let review = |token: &'static str| {
        vec![
            ("csrf", token),
            ("rule", "egress.unapproved-endpoint"),
            ("verdict", "expected"),
            ("note", "seen it"),
        ]
    };
    // A forged token, and none.
    let mut forged = review("0000000000000000000000000000000000000000000000000000000000000000");
    forged.push(("finding", &id));
    let (status, _, page) = ui
        .post_form("/ui/rule/review", Some(&cookie), &forged, &[])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{page}");
    let mut missing = review("");
    missing.push(("finding", &id));
    let (status, _, _) = ui
        .post_form("/ui/rule/review", Some(&cookie), &missing, &[])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // The right token from another site's page.
    let good: Vec<(&str, &str)> = vec![
        ("csrf", &csrf),
        ("rule", "egress.unapproved-endpoint"),
        ("finding", &id),
        ("verdict", "expected"),
        ("note", "seen it"),
    ];
    let (status, _, _) = ui
        .post_form(
            "/ui/rule/review",
            Some(&cookie),
            &good,
            &[("origin", "https://evil.example")],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = ui
        .post_form(
            "/ui/rule/review",
            Some(&cookie),
            &good,
            &[("sec-fetch-site", "cross-site")],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A form that is not a form.
    let response = ui
        .http
        .post(ui.url("/ui/rule/review"))
        .header("cookie", &cookie)
        .header("content-type", "text/plain")
        .body("csrf=x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        ui.open_findings("egress.unapproved-endpoint").await.len(),
        1
    );

    // The same form, done right, is recorded with the admin token's name.
    let (status, headers, _) = ui
        .post_form("/ui/rule/review", Some(&cookie), &good, &[])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(
        headers.get(LOCATION).unwrap(),
        "/ui/rule?name=egress.unapproved-endpoint"
    );
    assert!(
        ui.open_findings("egress.unapproved-endpoint")
            .await
            .is_empty()
    );
    let (_, body, _) = ui
        .server
        .admin(
            reqwest::Method::GET,
            "/v1/findings?rule=egress.unapproved-endpoint",
            Some(ADMIN),
        )
        .await;
    assert_eq!(body["findings"][0]["review"]["by"], "admin");
    assert_eq!(body["findings"][0]["review"]["note"], "seen it");
}

#[tokio::test]
async fn a_session_expires_on_the_servers_clock_and_ends_at_sign_out() {
    let ui = Ui::start().await;
    let cookie = ui.signed_in().await;
    assert_eq!(ui.get("/ui", Some(&cookie)).await.0, StatusCode::OK);
    ui.clock.advance(SignedDuration::from_hours(8));
    let (status, headers, _) = ui.get("/ui", Some(&cookie)).await;
    assert!(redirected_to_sign_in(status, &headers), "expired: {status}");

    let cookie = ui.signed_in().await;
    let csrf = ui.csrf(&cookie).await;
    // Signing out needs the token too: another site cannot sign anyone out.
    let (status, _, _) = ui
        .post_form("/ui/signout", Some(&cookie), &[("csrf", "nope")], &[])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, headers, _) = ui
        .post_form("/ui/signout", Some(&cookie), &[("csrf", &csrf)], &[])
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let cleared = headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|v| v.starts_with("arbiter_ui="))
        .unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    // The old cookie, replayed, is refused.
    let (status, headers, _) = ui.get("/ui/rules", Some(&cookie)).await;
    assert!(redirected_to_sign_in(status, &headers), "{status}");
}

#[tokio::test]
async fn html_in_a_logged_value_is_escaped_on_every_page() {
    let ui = Ui::start().await;
    let evil = r#"<script>alert(1)</script>"#;
    let principal = format!("Agent::\"{evil}\"");
    let decided = ui
        .decide(
            json!({"principal": principal, "action": "Action::\"read_ticket\"",
                       "resource": "Ticket::\"<img src=x onerror=alert(2)>\""}),
        )
        .await;
    let id = decided["decision_id"].as_str().unwrap().to_owned();
    ui.decide(json!({"principal": "CiJob::\"pr-checks\"", "action": "Action::\"http_request\"",
                     "resource": format!("Endpoint::\"{evil}\""), "context": {"method": "GET", "path": evil}}))
        .await;
    let cookie = ui.signed_in().await;
    let principal_q = serde_urlencoded::to_string([("principal", &principal)]).unwrap();
    for path in [
        "/ui/decisions".to_owned(),
        format!("/ui/decision?id={id}"),
        "/ui/identities".to_owned(),
        format!("/ui/identity?{principal_q}"),
        "/ui/rule?name=egress.unapproved-endpoint&status=all".to_owned(),
        "/ui/rule?name=%3Cscript%3E".to_owned(),
    ] {
        let (status, _, page) = ui.get(&path, Some(&cookie)).await;
        assert!(
            status == StatusCode::OK || status == StatusCode::NOT_FOUND,
            "{path}: {status}"
        );
        assert!(!page.contains("<script>"), "{path}: {page}");
        assert!(!page.contains("<img"), "{path}: {page}");
        assert!(
            page.contains("&lt;script&gt;"),
            "{path} lost the value: {page}"
        );
    }
}

#[tokio::test]
async fn every_answer_forbids_scripts_framing_caching_and_outside_assets() {
    let ui = Ui::start().await;
    let cookie = ui.signed_in().await;
    for (path, with) in [
        ("/ui/signin", None),
        ("/ui", Some(cookie.as_str())),
        ("/ui/rules", Some(cookie.as_str())),
        ("/ui/rule?name=nope", Some(cookie.as_str())),
        ("/ui/decisions?decision=maybe", Some(cookie.as_str())),
    ] {
        let (status, headers, page) = ui.get(path, with).await;
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
        assert_eq!(headers["x-frame-options"], "DENY");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["cache-control"], "no-store");
        let timing = headers["server-timing"].to_str().unwrap();
        assert!(timing.starts_with("page;dur="), "{timing}");
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"),
            "{path}"
        );
        assert!(!page.contains("<script"), "{path}");
        // Nothing is fetched from anywhere (the SVG namespace is a name, not a fetch).
        let page = page.replace(r#"xmlns="http://www.w3.org/2000/svg""#, "");
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "{path}: {page}"
        );
        match path {
            "/ui/rule?name=nope" => assert_eq!(status, StatusCode::NOT_FOUND),
            "/ui/decisions?decision=maybe" => {
                assert_eq!(status, StatusCode::BAD_REQUEST);
                assert!(
                    page.contains("`decision` must be allow, deny or invalid"),
                    "{page}"
                );
            }
            _ => assert_eq!(status, StatusCode::OK, "{path}"),
        }
    }
    let (status, headers, css) = ui.get("/ui/style.css", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    assert!(!css.contains("url("), "no asset from anywhere");
}

#[tokio::test]
async fn a_promotion_the_evidence_does_not_support_is_refused_with_the_reasons_and_forcing_needs_one()
 {
    let ui = Ui::start().await;
    ui.decide(pastebin()).await;
    let cookie = ui.signed_in().await;
    let csrf = ui.csrf(&cookie).await;
    let rule = "egress.unapproved-endpoint";
    let cedar = ui.server.pack.join("policies/egress.cedar");
    let before = std::fs::read_to_string(&cedar).unwrap();
    let (status, _, page) = ui
        .post_form(
            "/ui/rule/promote",
            Some(&cookie),
            &[("csrf", &csrf), ("name", rule), ("to", "enforce")],
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{page}");
    assert!(
        page.contains("was not promoted: it is needs_review"),
        "{page}"
    );
    assert!(page.contains("finding(s) nobody has reviewed"), "{page}");
    // Forced without a reason: refused too.
    let (status, _, page) = ui
        .post_form(
            "/ui/rule/promote",
            Some(&cookie),
            &[
                ("csrf", &csrf),
                ("name", rule),
                ("to", "enforce"),
                ("force", "on"),
                ("reason", " "),
            ],
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{page}");
    assert_eq!(std::fs::read_to_string(&cedar).unwrap(), before);

    // Forced with a reason: written, recorded, loaded.
    let (status, headers, page) = ui
        .post_form(
            "/ui/rule/promote",
            Some(&cookie),
            &[
                ("csrf", &csrf),
                ("name", rule),
                ("to", "enforce"),
                ("force", "on"),
                ("reason", "incident 42: block pastebin now"),
            ],
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{page}");
    assert!(
        headers[LOCATION]
            .to_str()
            .unwrap()
            .starts_with("/ui/rule?name=")
    );
    assert_ne!(std::fs::read_to_string(&cedar).unwrap(), before);
    let decided = ui.decide(pastebin()).await;
    assert_eq!(decided["decision"], "deny", "{decided}");
    let (_, _, page) = ui
        .get(&format!("/ui/rule?name={rule}"), Some(&cookie))
        .await;
    assert!(page.contains("incident 42: block pastebin now"), "{page}");
    assert!(page.contains(r#"id="mode">enforce<"#), "{page}");
}

#[tokio::test]
async fn a_server_told_no_ui_has_no_dashboard() {
    let dirs = tempfile::tempdir().unwrap();
    let pack = dirs.path().join("pack");
    copy_dir(&example(), &pack);
    let data = dirs.path().join("data");
    let server = Server::start_with(dirs, pack, data, |o| o.ui = false).await;
    for path in ["/ui", "/ui/signin", "/ui/style.css"] {
        let (status, body, _) = server.admin(reqwest::Method::GET, path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(body["error"]["code"], "not_found", "{path}");
    }
}

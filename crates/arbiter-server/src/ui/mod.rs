//! The dashboard (`/ui`): the evidence of the audit→enforce lifecycle for the people who
//! decide whether a rule goes to enforce, as server-rendered pages.
//!
//! Everything it shows comes from the same library calls as the JSON API (readiness,
//! the report's gathering, chains, the decision log's pages, promotion's plan and
//! apply, reviews and revocations); it keeps no copy of any of them. The pages are
//! minijinja templates and one stylesheet, all embedded in the binary: no script, no
//! asset fetched from anywhere, and a Content-Security-Policy that says so.
//!
//! - [`session`]: sign-in with the admin token, the session cookie, CSRF tokens.
//! - [`pages`]: the pages (overview, rules, a rule, decisions, a decision, identities,
//!   an identity).
//! - [`actions`]: the forms that change something (review, promote, revoke), each
//!   checked for a live session and its CSRF token.
//!
//! The dashboard has its own concurrency bound and body limit, so however hard someone
//! reloads it, decisions keep theirs.

pub mod actions;
pub mod pages;
pub mod session;

use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{any, get, post};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::App;
use session::Session;

/// Dashboard requests handled at once; more wait. Decisions have their own bound.
const CONCURRENCY: usize = 16;

/// The largest form the dashboard accepts.
const BODY_LIMIT: usize = 64 * 1024;

/// What every dashboard answer says about itself: nothing runs but the page, nothing
/// loads from elsewhere, it is never framed or cached, and its URLs never leave as a
/// referrer.
const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The dashboard's routes, with their own layers; merged into the server's router.
pub(crate) fn router(app: &Arc<App>) -> Router<Arc<App>> {
    Router::new()
        .route("/ui", get(pages::overview))
        .route("/ui/", get(|| async { Redirect::to("/ui") }))
        .route("/ui/signin", get(pages::signin_form).post(actions::signin))
        .route("/ui/signout", post(actions::signout))
        .route("/ui/rules", get(pages::rules))
        .route("/ui/rule", get(pages::rule))
        .route("/ui/rule/promote", post(actions::promote))
        .route("/ui/rule/review", post(actions::review))
        .route("/ui/decisions", get(pages::decisions))
        .route("/ui/decision", get(pages::decision))
        .route("/ui/identities", get(pages::identities))
        .route("/ui/identity", get(pages::identity))
        .route("/ui/identity/revoke", post(actions::revoke))
        .route("/ui/style.css", get(style))
        .route("/ui/{*rest}", any(not_found))
        .layer(axum::middleware::map_response(security_headers))
        .layer(axum::middleware::from_fn(server_timing))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            app.options().request_timeout,
        ))
        .layer(tower::limit::ConcurrencyLimitLayer::new(CONCURRENCY))
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // `same-origin`, not `no-referrer`: under `no-referrer` a browser sends `Origin: null`
    // with a form, and the forms' origin check needs the real one.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Says how long the server took over a page (`Server-Timing: page;dur=…`, in ms), so
/// a browser's developer tools, and `docs/benchmarks.md`, see the server's share apart
/// from the network's. Elapsed time only: nothing is decided by it.
async fn server_timing(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let started = std::time::Instant::now();
    let mut response = next.run(request).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if let Ok(value) = HeaderValue::from_str(&format!("page;dur={ms:.1}")) {
        response.headers_mut().insert("server-timing", value);
    }
    response
}

const STYLE: &str = include_str!("style.css");

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "private, max-age=300"),
        ],
        STYLE,
    )
        .into_response()
}

async fn not_found(
    headers: HeaderMap,
    axum::extract::State(app): axum::extract::State<Arc<App>>,
) -> UiError {
    match app.sessions().find(&headers, app.now()) {
        Some(_) => UiError::NotFound("there is no such page".to_owned()),
        None => UiError::SignIn,
    }
}

/// Why a page or a form was not served.
#[derive(Debug)]
pub enum UiError {
    /// No live session: to the sign-in page.
    SignIn,
    /// A form without a good CSRF token, or from another site.
    Forbidden(String),
    /// A query or form that does not make sense.
    BadRequest(String),
    /// Nothing by that name.
    NotFound(String),
    /// What the library call behind the page said.
    Api(ApiError),
}

impl From<ApiError> for UiError {
    fn from(e: ApiError) -> UiError {
        UiError::Api(e)
    }
}

impl From<arbiter_store::StoreError> for UiError {
    fn from(e: arbiter_store::StoreError) -> UiError {
        UiError::Api(ApiError::Store(e))
    }
}

impl From<tokio::task::JoinError> for UiError {
    fn from(e: tokio::task::JoinError) -> UiError {
        UiError::Api(ApiError::internal(e))
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let (status, title, message) = match self {
            UiError::SignIn => return Redirect::to("/ui/signin").into_response(),
            UiError::Forbidden(m) => (StatusCode::FORBIDDEN, "Refused", m),
            UiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "Not understood", m),
            UiError::NotFound(m) => (StatusCode::NOT_FOUND, "Not found", m),
            UiError::Api(e) => {
                let status = e.status();
                if status.is_server_error() {
                    tracing::error!(error = %e.message(), "a dashboard page failed");
                }
                (status, "Could not be done", e.message())
            }
        };
        let body = render(
            "error.html",
            &serde_json::json!({ "title": title, "message": message, "status": status.as_u16() }),
        )
        .unwrap_or_else(|_| Html(String::from("<!doctype html><title>error</title>error")));
        (status, body).into_response()
    }
}

/// The templates, parsed once.
static TEMPLATES: LazyLock<minijinja::Environment<'static>> = LazyLock::new(|| {
    let mut env = minijinja::Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    // Every template is HTML: every value is escaped unless marked safe (the SVG charts,
    // which escape what they draw).
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
    for (name, text) in [
        ("base.html", include_str!("templates/base.html")),
        ("error.html", include_str!("templates/error.html")),
        ("signin.html", include_str!("templates/signin.html")),
        ("overview.html", include_str!("templates/overview.html")),
        ("rules.html", include_str!("templates/rules.html")),
        ("rule.html", include_str!("templates/rule.html")),
        ("decisions.html", include_str!("templates/decisions.html")),
        ("decision.html", include_str!("templates/decision.html")),
        ("identities.html", include_str!("templates/identities.html")),
        ("identity.html", include_str!("templates/identity.html")),
    ] {
        if let Err(e) = env.add_template(name, text) {
            // The templates are built in: a broken one is a bug a test finds.
            tracing::error!(template = name, error = %e, "a dashboard template does not parse");
        }
    }
    env
});

/// Renders template `name` with `context`.
pub(crate) fn render<C: Serialize>(name: &str, context: &C) -> Result<Html<String>, UiError> {
    TEMPLATES
        .get_template(name)
        .and_then(|t| t.render(context))
        .map(Html)
        .map_err(|e| UiError::Api(ApiError::internal(format!("rendering {name}: {e:#}"))))
}

/// The live session of a page request, or to the sign-in page.
pub(crate) fn signed_in(app: &App, headers: &HeaderMap) -> Result<Session, UiError> {
    app.sessions()
        .find(headers, app.now())
        .ok_or(UiError::SignIn)
}

/// A form that changes something: a live session, a request from the dashboard's own
/// pages (the browser's `Origin` or `Sec-Fetch-Site`, when it sends them), and the
/// session's CSRF token in the form's `csrf` field.
pub(crate) fn checked_form<T: DeserializeOwned + HasCsrf>(
    app: &App,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(Session, T), UiError> {
    let session = signed_in(app, headers)?;
    same_origin(headers)?;
    let form: T = form(headers, body)?;
    if !session::same_token(form.csrf(), &session.csrf) {
        return Err(UiError::Forbidden(
            "the form's token is not this session's: reload the page and try again".to_owned(),
        ));
    }
    Ok((session, form))
}

/// A form with a CSRF token.
pub(crate) trait HasCsrf {
    /// The token the form carried.
    fn csrf(&self) -> &str;
}

/// Refuses a request the browser says another site started.
pub(crate) fn same_origin(headers: &HeaderMap) -> Result<(), UiError> {
    let refused = || UiError::Forbidden("a form from another site is refused".to_owned());
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return Err(refused());
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        let origin = origin.to_str().ok();
        let matches = match (origin, host) {
            (Some(origin), Some(host)) => origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                .is_some_and(|o| o.eq_ignore_ascii_case(host)),
            _ => false,
        };
        if !matches {
            return Err(refused());
        }
    }
    Ok(())
}

/// A URL-encoded form body.
pub(crate) fn form<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, UiError> {
    let essence = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    if essence.as_deref() != Some("application/x-www-form-urlencoded") {
        return Err(UiError::BadRequest(
            "a form is sent as application/x-www-form-urlencoded".to_owned(),
        ));
    }
    let body = ApiError::read_body(body)?;
    serde_urlencoded::from_bytes(&body)
        .map_err(|e| UiError::BadRequest(format!("the form does not read: {e}")))
}

/// A query string's fields, empty ones dropped (a form submits its empty inputs).
pub(crate) fn query<T: DeserializeOwned>(raw: Option<&str>) -> Result<T, UiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|e| UiError::BadRequest(format!("the query does not read: {e}")))?;
    let kept: Vec<(String, String)> = pairs.into_iter().filter(|(_, v)| !v.is_empty()).collect();
    let text = serde_urlencoded::to_string(&kept)
        .map_err(|e| UiError::BadRequest(format!("the query does not read: {e}")))?;
    serde_urlencoded::from_str(&text).map_err(|e| UiError::BadRequest(format!("{e}")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test")]

    use super::*;

    #[test]
    fn every_template_parses() {
        for name in [
            "base.html",
            "error.html",
            "signin.html",
            "overview.html",
            "rules.html",
            "rule.html",
            "decisions.html",
            "decision.html",
            "identities.html",
            "identity.html",
        ] {
            assert!(
                TEMPLATES.get_template(name).is_ok(),
                "{name} does not parse"
            );
        }
    }

    #[test]
    fn a_logged_value_is_escaped_on_every_page_it_can_reach() {
        let evil = r#"Agent::"<script>alert(1)</script>""#;
        let page = render(
            "error.html",
            &serde_json::json!({ "title": evil, "message": evil, "status": 404 }),
        )
        .unwrap()
        .0;
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&lt;script&gt;"), "{page}");
    }
}

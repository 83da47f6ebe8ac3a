//! The routes, by concern: [`decisions`] (deciding and the log), [`admin`] (health,
//! metrics, the policy in force, reload), [`tokens`] (keys, minting, exchange,
//! revocations), [`lifecycle`] (findings, reviews, readiness) and [`candidate`] (the
//! candidate pack in shadow). Handlers are a few lines each: they
//! check who is calling, read the body, and call into the decision service, the store or
//! the app's state; errors map to statuses in `error.rs` only.

pub mod admin;
pub mod candidate;
pub mod decisions;
pub mod lifecycle;
pub mod tokens;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::error::ApiError;
use crate::state::App;

/// The routes, with body limits, timeouts and a concurrency bound as layers.
pub(crate) fn router(app: &Arc<App>) -> Router {
    let options = app.options();
    let without_query = Router::new()
        .route("/v1/decide", post(decisions::decide))
        .route("/v1/decide/batch", post(decisions::decide_batch))
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz))
        .route("/metrics", get(admin::metrics))
        .route("/v1/policy", get(admin::policy))
        .route("/v1/policy/reload", post(admin::reload))
        .route("/v1/candidate", get(candidate::report))
        .route("/v1/candidate/reload", post(candidate::reload))
        .route("/.well-known/jwks.json", get(tokens::jwks))
        .route("/v1/credentials", post(tokens::mint))
        .route("/v1/token", post(tokens::exchange))
        .route(
            "/v1/revocations",
            post(tokens::revoke).get(tokens::revocations),
        )
        .route("/v1/findings/{id}/review", post(lifecycle::review))
        .route_layer(axum::middleware::from_fn(no_query));
    let api = Router::new()
        .route("/v1/decisions", get(decisions::decisions))
        .route("/v1/findings", get(lifecycle::findings))
        .route("/v1/readiness", get(lifecycle::readiness))
        .route("/v1/chains", get(lifecycle::chains))
        .merge(without_query)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(options.body_limit))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            options.request_timeout,
        ))
        .layer(tower::limit::ConcurrencyLimitLayer::new(
            options.concurrency,
        ))
        .layer(axum::middleware::map_response(json_errors));
    let routes = if options.ui {
        api.merge(crate::ui::router(app))
    } else {
        api
    };
    routes.with_state(Arc::clone(app))
}

/// A body that is not declared JSON is refused before it is read: a browser page may
/// send `text/plain` (or a form) cross-site without a preflight, and a decision can have
/// effects (a revoke, a session terminated, a throttle spent).
pub(crate) fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let essence = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    match essence.as_deref() {
        Some("application/json") => Ok(()),
        _ => Err(ApiError::UnsupportedMediaType),
    }
}

/// Endpoints that take no query parameters refuse them, as the ones that take some refuse
/// the ones they do not know: a misspelt filter is an error, never silently ignored.
async fn no_query(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Result<Response, ApiError> {
    if request.uri().query().is_some_and(|q| !q.is_empty()) {
        return Err(ApiError::BadQuery(format!(
            "`{}` takes no query parameters",
            request.uri().path()
        )));
    }
    Ok(next.run(request).await)
}

/// Errors made outside the handlers (a method not allowed, a timeout) carry a plain body;
/// every error answered is `{"error": {"code", "message"}}`, so they are rewritten.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let code = match status {
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_client_error() => "bad_request",
        _ => "internal",
    };
    let mut rewritten = ApiError::Http { status, code }.into_response();
    for (name, value) in response.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rewritten.headers_mut().insert(name.clone(), value.clone());
        }
    }
    rewritten
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".to_owned())
}

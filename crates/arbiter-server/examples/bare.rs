//! The ceiling for the HTTP load benchmark: a bare axum endpoint that does the same JSON
//! work as `POST /v1/decide` (parse the request into arbiter's request type, serialize a
//! decision-shaped answer) and nothing else: no policy, no log.
//!
//! `cargo run --release -p arbiter-server --example bare -- 127.0.0.1:8799`

use arbiter_core::DecisionRequest;
use arbiter_core::response::{Decision, Outcome};
use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;

async fn decide(body: Bytes) -> Response {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let Ok(request) = DecisionRequest::from_value(&value) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let decision = Decision {
        decision: Outcome::Allow,
        effect: None,
        retry_after_s: None,
        enforced: Vec::new(),
        warnings: Vec::new(),
        audit: Vec::new(),
        errors: Vec::new(),
        reason: request.session.clone(),
        decision_id: "01JZZZZZZZZZZZZZZZZZZZZZZZ".to_owned(),
        policy_version: "sha256:0000000000000000000000000000000000000000000000000000000000000000"
            .to_owned(),
        credential_id: None,
    };
    axum::Json(decision).into_response()
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8799".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("bare listening on http://{}", listener.local_addr()?);
    axum::serve(listener, Router::new().route("/v1/decide", post(decide))).await
}

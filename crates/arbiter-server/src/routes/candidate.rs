//! The candidate pack in shadow (`arbiter serve --candidate`): what it found
//! (`GET /v1/candidate`) and reloading it (`POST /v1/candidate/reload`). Both are admin
//! endpoints; the shadow itself is the decision service's.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::error::ApiError;
use crate::state::App;

/// `GET /v1/candidate` (admin): the candidate in shadow, and how its decisions differed
/// from the ones answered, by rule and by principal.
pub async fn report(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    app.check_admin(&headers)?;
    let report = app.candidate_report().await?;
    Ok(axum::Json(report).into_response())
}

/// `POST /v1/candidate/reload` (admin, no body): load the candidate again; a candidate
/// with problems is refused and the running one stays.
pub async fn reload(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let admin = app.check_admin(&headers)?.to_owned();
    if !ApiError::read_body(body)?.is_empty() {
        return Err(ApiError::Malformed(
            "`/v1/candidate/reload` takes no body".to_owned(),
        ));
    }
    let version = app.reload_candidate().await?;
    tracing::info!(%admin, %version, "candidate reload requested");
    Ok(axum::Json(json!({"status": "reloaded", "candidate_version": version})).into_response())
}

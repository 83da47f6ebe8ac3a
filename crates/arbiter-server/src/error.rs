//! The one mapping from errors to HTTP responses: `{"error": {"code", "message"}}` with a
//! 4xx or 5xx status. A 5xx never carries internals; the detail goes to the log.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answered to the caller.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Option<serde_json::Value>,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: None,
        }
    }

    /// Adds structured details (e.g. every problem of a rejected pack).
    #[must_use]
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    /// 401: missing or wrong token.
    pub fn unauthorized(message: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 503: the decision log cannot accept records, so no decision is made.
    pub fn log_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "log_unavailable",
            "the decision log cannot accept records; no decision is made until it can",
        )
    }

    /// 500 with a generic message; `detail` is logged, never answered.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }

    /// A request body, or the error for a body that could not be read: 413 when it is
    /// larger than the limit, 400 otherwise.
    pub fn read_body(
        body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
    ) -> Result<axum::body::Bytes, ApiError> {
        body.map_err(|rejection| {
            let status = rejection.status();
            if status == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    status,
                    "payload_too_large",
                    "the request body is larger than the limit",
                )
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "malformed_request",
                    rejection.body_text(),
                )
            }
        })
    }

    /// The stable error code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The body, `{"error": {"code", "message"[, "details"]}}`.
    pub fn body(&self) -> serde_json::Value {
        let mut error = json!({"code": self.code, "message": self.message});
        if let (Some(details), Some(map)) = (&self.details, error.as_object_mut()) {
            map.insert("details".to_owned(), details.clone());
        }
        json!({ "error": error })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

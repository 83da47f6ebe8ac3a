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

    /// 400 `malformed_request`.
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "malformed_request", message)
    }

    /// A request body as a JSON object: read strictly (a duplicate key is refused) and
    /// refused with 400 when it is anything but an object. No message quotes the body.
    pub fn json_object(
        body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
    ) -> Result<serde_json::Value, ApiError> {
        let bytes = Self::read_body(body)?;
        let value = arbiter_core::json::from_slice(&bytes)
            .map_err(|e| Self::malformed(format!("not JSON: {e}")))?;
        if !value.is_object() {
            return Err(Self::malformed(format!(
                "the body must be a JSON object, not {}",
                arbiter_core::json::kind_of(&value)
            )));
        }
        Ok(value)
    }

    /// A request body as `T`, through [`ApiError::json_object`]. A field of the wrong type
    /// is named by its path with the type expected; its value is never quoted.
    pub fn json_body<T: serde::de::DeserializeOwned>(
        body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
    ) -> Result<T, ApiError> {
        let value = Self::json_object(body)?;
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            Self::malformed(without_values(&path, &e.into_inner().to_string()))
        })
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
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

/// serde's message for a field, without the value it quotes: `invalid type: string
/// "…", expected u32` becomes "`path`: expected u32".
fn without_values(path: &str, message: &str) -> String {
    let quotes_value = [
        "invalid type:",
        "invalid value:",
        "invalid length",
        "unknown variant",
    ]
    .iter()
    .any(|p| message.starts_with(p));
    if quotes_value {
        let expected = message
            .rsplit_once(", expected ")
            .map_or("another type", |(_, e)| e);
        format!("`{path}`: expected {expected}")
    } else if path == "." {
        message.to_owned()
    } else {
        format!("`{path}`: {message}")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_errors_name_the_path_and_never_the_value() {
        assert_eq!(
            without_values("ttl", "invalid type: string \"SECRET\", expected u32"),
            "`ttl`: expected u32"
        );
        assert_eq!(
            without_values("kind", "unknown variant `SECRET`, expected `a` or `b`"),
            "`kind`: expected `a` or `b`"
        );
        assert_eq!(
            without_values(".", "missing field `reason`"),
            "missing field `reason`"
        );
    }
}

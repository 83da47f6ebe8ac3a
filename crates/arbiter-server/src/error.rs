//! The one mapping from errors to HTTP responses: `{"error": {"code", "message"}}` with a
//! 4xx or 5xx status. Each domain error maps to its status here and nowhere else; a 5xx
//! never carries internals (the detail goes to the log).

use std::borrow::Cow;

use arbiter_core::RequestError;
use arbiter_identity::{ExchangeError, MintError};
use arbiter_service::ServiceError;
use arbiter_store::StoreError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::state::{CandidateError, ReloadError};

/// An error answered to the caller.
#[derive(Debug)]
pub enum ApiError {
    /// 400 `malformed_request`: the body is not the shape asked for.
    Malformed(String),
    /// 422 `invalid_request`: the body has the shape, and a value breaks a rule.
    Invalid(String),
    /// 400 `invalid_request`: an OAuth parameter is wrong (RFC 6749 §5.2 answers 400).
    InvalidParameter(String),
    /// 400 `bad_query`: a query parameter is unknown or out of range.
    BadQuery(String),
    /// 401 `unauthorized`: a missing or wrong token.
    Unauthorized(&'static str),
    /// 404 `not_found`.
    NotFound(String),
    /// 413 `payload_too_large`: the body is larger than the limit.
    PayloadTooLarge,
    /// 413 `batch_too_large`.
    BatchTooLarge {
        /// The most a batch may hold.
        max: usize,
        /// What this one held.
        got: usize,
    },
    /// 415 `unsupported_media_type`: a body that is not declared JSON.
    UnsupportedMediaType,
    /// 503 `log_unavailable`: a decision that cannot be recorded is not made.
    LogUnavailable,
    /// The decision request's own error: 400 when it is not the request shape, 422 else.
    Request(RequestError),
    /// A store error: a bad filter or cursor (400), a value the store refuses (422), or
    /// an internal failure (500).
    Store(StoreError),
    /// A reload refused (400 `invalid_pack`, or 409 `reload_needs_force`); the running
    /// pack stays.
    Reload {
        /// Why.
        refused: ReloadError,
        /// The version still in force.
        running: String,
    },
    /// The candidate in shadow: none (404 `no_candidate`), a reload refused (400
    /// `invalid_pack`; the running candidate stays), or a store failure (500).
    Candidate(CandidateError),
    /// A credential that cannot be minted as asked (422 `invalid_request`).
    Mint(MintError),
    /// A subject token refused in a token exchange (400 `invalid_grant`).
    Exchange(ExchangeError),
    /// 400 `invalid_scope`: the exchange asks for an intent it may not have.
    InvalidScope(String),
    /// 400 `unsupported_grant_type`.
    UnsupportedGrantType(String),
    /// An error made outside the handlers (a method not allowed, a timeout), rewritten as
    /// JSON.
    Http {
        /// Its status.
        status: StatusCode,
        /// Its code.
        code: &'static str,
    },
    /// 500 `internal`: the detail is logged when the error is made, never answered.
    Internal,
}

impl ApiError {
    /// 500, logging `detail`.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(%detail, "internal error");
        ApiError::Internal
    }

    /// The status, the stable code and the message.
    fn parts(&self) -> (StatusCode, &'static str, Cow<'_, str>) {
        use StatusCode as S;
        let text = |m: &str| Cow::Owned(m.to_owned());
        match self {
            ApiError::Malformed(m) => (S::BAD_REQUEST, "malformed_request", text(m)),
            ApiError::Invalid(m) => (S::UNPROCESSABLE_ENTITY, "invalid_request", text(m)),
            ApiError::InvalidParameter(m) => (S::BAD_REQUEST, "invalid_request", text(m)),
            ApiError::BadQuery(m) => (S::BAD_REQUEST, "bad_query", text(m)),
            ApiError::Unauthorized(m) => (S::UNAUTHORIZED, "unauthorized", Cow::Borrowed(*m)),
            ApiError::NotFound(m) => (S::NOT_FOUND, "not_found", text(m)),
            ApiError::PayloadTooLarge => (
                S::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                Cow::Borrowed("the request body is larger than the limit"),
            ),
            ApiError::BatchTooLarge { max, got } => (
                S::PAYLOAD_TOO_LARGE,
                "batch_too_large",
                Cow::Owned(format!(
                    "a batch holds at most {max} requests, this one {got}"
                )),
            ),
            ApiError::UnsupportedMediaType => (
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                Cow::Borrowed("the body must be sent as `Content-Type: application/json`"),
            ),
            ApiError::LogUnavailable => (
                S::SERVICE_UNAVAILABLE,
                "log_unavailable",
                Cow::Borrowed(
                    "the decision log cannot accept records; no decision is made until it can",
                ),
            ),
            ApiError::Request(e) => {
                let status = match e {
                    RequestError::Malformed(_) => S::BAD_REQUEST,
                    _ => S::UNPROCESSABLE_ENTITY,
                };
                (status, e.code(), Cow::Owned(e.to_string()))
            }
            ApiError::Store(e) => match e {
                StoreError::InvalidQuery(_) | StoreError::InvalidCursor { .. } => {
                    (S::BAD_REQUEST, "bad_query", Cow::Owned(e.to_string()))
                }
                StoreError::Invalid { message } => {
                    (S::UNPROCESSABLE_ENTITY, "invalid_request", text(message))
                }
                _ => internal(),
            },
            ApiError::Reload { refused, running } => match refused {
                ReloadError::Invalid(problems) => (
                    S::BAD_REQUEST,
                    "invalid_pack",
                    Cow::Owned(format!(
                        "the pack has {} problem(s); the running pack ({running}) stays",
                        problems.0.len()
                    )),
                ),
                ReloadError::NeedsForce(_) => (
                    S::CONFLICT,
                    "reload_needs_force",
                    Cow::Owned(format!(
                        "the reload needs force; the running pack ({running}) stays"
                    )),
                ),
            },
            ApiError::Candidate(e) => match e {
                CandidateError::None => (S::NOT_FOUND, "no_candidate", Cow::Owned(e.to_string())),
                CandidateError::Invalid { problems, running } => (
                    S::BAD_REQUEST,
                    "invalid_pack",
                    Cow::Owned(format!(
                        "the candidate has {} problem(s); the running candidate ({running}) stays",
                        problems.0.len()
                    )),
                ),
                CandidateError::Store(_) | CandidateError::Task(_) => internal(),
            },
            ApiError::Mint(e) => (
                S::UNPROCESSABLE_ENTITY,
                "invalid_request",
                Cow::Owned(e.to_string()),
            ),
            ApiError::Exchange(e) => (
                S::BAD_REQUEST,
                "invalid_grant",
                Cow::Owned(format!("the subject token was refused: {} ({e})", e.code())),
            ),
            ApiError::InvalidScope(m) => (S::BAD_REQUEST, "invalid_scope", text(m)),
            ApiError::UnsupportedGrantType(m) => {
                (S::BAD_REQUEST, "unsupported_grant_type", text(m))
            }
            ApiError::Http { status, code } => (
                *status,
                code,
                Cow::Owned(status.canonical_reason().unwrap_or("error").to_lowercase()),
            ),
            ApiError::Internal => internal(),
        }
    }

    /// The stable error code.
    pub fn code(&self) -> &'static str {
        self.parts().1
    }

    /// The message.
    pub fn message(&self) -> String {
        self.parts().2.into_owned()
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    /// The body, `{"error": {"code", "message"[, "details"]}}`.
    pub fn body(&self) -> Value {
        let (_, code, message) = self.parts();
        let mut error = json!({"code": code, "message": message});
        let details = match self {
            ApiError::Reload { refused, .. } => Some(refused.lines()),
            ApiError::Candidate(CandidateError::Invalid { problems, .. }) => {
                Some(problems.0.iter().map(ToString::to_string).collect())
            }
            _ => None,
        };
        if let Some(details) = details
            && let Some(map) = error.as_object_mut()
        {
            map.insert("details".to_owned(), json!(details));
        }
        json!({ "error": error })
    }

    /// A request body, or the error for a body that could not be read: 413 when it is
    /// larger than the limit, 400 otherwise.
    pub fn read_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
        body.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::Malformed(rejection.body_text())
            }
        })
    }

    /// A request body as a JSON object: read strictly (a duplicate key is refused) and
    /// refused with 400 when it is anything but an object. No message quotes the body.
    pub fn json_object(body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
        let bytes = Self::read_body(body)?;
        let value = arbiter_core::json::from_slice(&bytes)
            .map_err(|e| ApiError::Malformed(format!("not JSON: {e}")))?;
        if !value.is_object() {
            return Err(ApiError::Malformed(format!(
                "the body must be a JSON object, not {}",
                arbiter_core::json::kind_of(&value)
            )));
        }
        Ok(value)
    }

    /// A request body as `T`, through [`ApiError::json_object`]. A field of the wrong type
    /// is named by its path with the type expected; its value is never quoted.
    pub fn json_body<T: serde::de::DeserializeOwned>(
        body: Result<Bytes, BytesRejection>,
    ) -> Result<T, ApiError> {
        let value = Self::json_object(body)?;
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            ApiError::Malformed(without_values(&path, &e.into_inner().to_string()))
        })
    }
}

fn internal() -> (StatusCode, &'static str, Cow<'static, str>) {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        Cow::Borrowed("internal error"),
    )
}

impl From<RequestError> for ApiError {
    fn from(error: RequestError) -> Self {
        ApiError::Request(error)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        if !matches!(
            error,
            StoreError::InvalidQuery(_)
                | StoreError::InvalidCursor { .. }
                | StoreError::Invalid { .. }
        ) {
            tracing::error!(%error, "store error");
        }
        ApiError::Store(error)
    }
}

impl From<CandidateError> for ApiError {
    fn from(error: CandidateError) -> Self {
        if matches!(error, CandidateError::Store(_) | CandidateError::Task(_)) {
            tracing::error!(%error, "the candidate in shadow");
        }
        ApiError::Candidate(error)
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> Self {
        tracing::error!(%error, "decision log append");
        ApiError::LogUnavailable
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(error: tokio::task::JoinError) -> Self {
        ApiError::internal(error)
    }
}

impl From<MintError> for ApiError {
    fn from(error: MintError) -> Self {
        ApiError::Mint(error)
    }
}

impl From<ExchangeError> for ApiError {
    fn from(error: ExchangeError) -> Self {
        tracing::info!(reason = error.code(), %error, "token exchange refused");
        ApiError::Exchange(error)
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
        let status = self.status();
        let mut response = (status, axum::Json(self.body())).into_response();
        if status == StatusCode::UNAUTHORIZED {
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

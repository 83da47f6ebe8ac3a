//! The decision request as PEPs send it (DESIGN §3), and the errors that make one invalid.

use std::str::FromStr;

use cedar_policy::{EntityId, EntityTypeName, EntityUid};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One decision request: the JSON body of `POST /v1/decide` and one line of
/// `arbiter check --requests`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    /// Who is calling: `Agent::"bot"` or `{"type": "Agent", "id": "bot"}`.
    pub principal: EntityRef,
    /// What it is trying to do.
    pub action: EntityRef,
    /// On what.
    pub resource: EntityRef,
    /// Cedar's JSON form of the context (extension values as `{"__extn": …}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Value>,
    /// A session id the PEP chooses; state is kept per principal and id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The caller's credential, a compact JWT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// Entities the request describes (only of `[requests] entity_types`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entities: Option<Value>,
    /// The decision's time (RFC 3339); offline only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
}

/// An entity reference in either of Cedar's spellings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum EntityRef {
    /// `Type::"id"`.
    Text(String),
    /// `{"type": "Type", "id": "id"}`.
    Typed(TypedRef),
}

/// `{"type": …, "id": …}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TypedRef {
    /// The entity type.
    #[serde(rename = "type")]
    pub ty: String,
    /// The entity id.
    pub id: String,
}

impl std::fmt::Display for EntityRef {
    /// The Cedar spelling, `Type::"id"`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EntityRef::Text(text) => f.write_str(text),
            EntityRef::Typed(TypedRef { ty, id }) => {
                write!(f, "{ty}::{}", Value::String(id.clone()))
            }
        }
    }
}

impl EntityRef {
    /// The reference as a Cedar uid; `field` names it in the error.
    pub fn to_uid(&self, field: &str) -> Result<EntityUid, RequestError> {
        match self {
            EntityRef::Text(text) => EntityUid::from_str(text).map_err(|e| {
                RequestError::Malformed(format!(
                    "`{field}`: `{text}` is not an entity reference like `Agent::\"bot\"` ({e})"
                ))
            }),
            EntityRef::Typed(TypedRef { ty, id }) => {
                let ty = EntityTypeName::from_str(ty).map_err(|e| {
                    RequestError::Malformed(format!(
                        "`{field}`: `{ty}` is not an entity type ({e})"
                    ))
                })?;
                Ok(EntityUid::from_type_name_and_id(ty, EntityId::new(id)))
            }
        }
    }
}

impl DecisionRequest {
    /// Parses one request from JSON text.
    pub fn from_json(text: &str) -> Result<Self, RequestError> {
        serde_json::from_str(text).map_err(|e| RequestError::Malformed(describe_json_error(&e)))
    }

    /// Parses one request from a JSON value (without copying it).
    pub fn from_value(value: &Value) -> Result<Self, RequestError> {
        Self::deserialize(value).map_err(|e| RequestError::Malformed(describe_json_error(&e)))
    }

    /// The context as a JSON object (empty when absent).
    pub(crate) fn context_map(&self) -> Result<Map<String, Value>, RequestError> {
        match &self.context {
            None | Some(Value::Null) => Ok(Map::new()),
            Some(Value::Object(map)) => Ok(map.clone()),
            Some(_) => Err(RequestError::Malformed(
                "`context` must be a JSON object".to_owned(),
            )),
        }
    }
}

fn describe_json_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    if !text.contains("did not match any variant of untagged enum EntityRef") {
        return text;
    }
    let at = if e.line() > 0 {
        format!(" (at line {} column {})", e.line(), e.column())
    } else {
        String::new()
    };
    format!("an entity reference must be `Type::\"id\"` or {{\"type\": …, \"id\": …}}{at}")
}

/// Why a request was refused before any decision was made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// Not the request shape: bad JSON, wrong types, unknown fields, too deep.
    #[error("{0}")]
    Malformed(String),
    /// Well-formed, but not valid for this pack: unknown type or action, schema violation.
    #[error("{0}")]
    Invalid(String),
    /// The context sets a key that arbiter reserves.
    #[error(
        "context key `{0}` is reserved: arbiter fills it in itself (reserved: session, credential, in_intent, novel, now)"
    )]
    ReservedContextKey(String),
    /// `time` was sent where only the server's clock counts.
    #[error("`time` is accepted offline only; the server decides with its own clock")]
    TimeNotAllowed,
    /// The request's entities break the rules of `[requests] entity_types`.
    #[error("{0}")]
    Entities(String),
}

impl RequestError {
    /// The stable error code for the response body.
    pub fn code(&self) -> &'static str {
        match self {
            RequestError::Malformed(_) => "malformed_request",
            RequestError::Invalid(_) => "invalid_request",
            RequestError::ReservedContextKey(_) => "reserved_context_key",
            RequestError::TimeNotAllowed => "time_not_allowed",
            RequestError::Entities(_) => "invalid_entities",
        }
    }

    /// The HTTP status: 400 for a body that is not the request shape, 422 for the rest.
    pub fn status(&self) -> u16 {
        match self {
            RequestError::Malformed(_) => 400,
            _ => 422,
        }
    }

    /// `{"error": {"code", "message"}}`.
    pub fn to_json(&self) -> Value {
        serde_json::json!({"error": {"code": self.code(), "message": self.to_string()}})
    }
}

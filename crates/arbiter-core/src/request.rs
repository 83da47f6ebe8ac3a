//! The decision request as PEPs send it (DESIGN §3), and the errors that make one invalid.

use std::str::FromStr;

use cedar_policy::{EntityId, EntityTypeName, EntityUid};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One decision request: the JSON body of `POST /v1/decide` and one line of
/// `arbiter check --requests`.
///
/// Read by hand rather than by serde's derive: the derive also accepts a struct as a
/// positional array (`["Agent::\"a\"", …]`), and its messages quote the values they
/// refuse. Only a JSON object is a request, and a refusal names the field and the
/// expected type, never the value.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum EntityRef {
    /// `Type::"id"`.
    Text(String),
    /// `{"type": "Type", "id": "id"}`.
    Typed(TypedRef),
}

/// `{"type": …, "id": …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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

/// The fields of a request, in the order the errors list them.
pub const FIELDS: [&str; 8] = [
    "principal",
    "action",
    "resource",
    "context",
    "session",
    "credential",
    "entities",
    "time",
];

impl DecisionRequest {
    /// Parses one request from JSON text (a duplicate key is refused).
    pub fn from_json(text: &str) -> Result<Self, RequestError> {
        let value = crate::json::from_str(text)
            .map_err(|e| RequestError::Malformed(format!("not JSON: {e}")))?;
        Self::from_value(&value)
    }

    /// Parses one request from a JSON value: an object with the request's fields and no
    /// other.
    pub fn from_value(value: &Value) -> Result<Self, RequestError> {
        let Value::Object(map) = value else {
            return Err(RequestError::Malformed(format!(
                "a decision request is a JSON object, not {}",
                crate::json::kind_of(value)
            )));
        };
        if let Some(unknown) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(RequestError::Malformed(format!(
                "unknown field `{}`: a request has {}",
                unknown.escape_debug(),
                FIELDS.map(|f| format!("`{f}`")).join(", ")
            )));
        }
        let text = |field: &str| -> Result<Option<String>, RequestError> {
            match map.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(RequestError::Malformed(format!(
                    "`{field}` must be a string, not {}",
                    crate::json::kind_of(other)
                ))),
            }
        };
        let any = |field: &str| map.get(field).filter(|v| !v.is_null()).cloned();
        Ok(DecisionRequest {
            principal: EntityRef::from_field(map, "principal")?,
            action: EntityRef::from_field(map, "action")?,
            resource: EntityRef::from_field(map, "resource")?,
            context: any("context"),
            session: text("session")?,
            credential: text("credential")?,
            entities: any("entities"),
            time: text("time")?,
        })
    }

    /// The context as a JSON object (`None` when absent).
    pub(crate) fn context_object(&self) -> Result<Option<&Map<String, Value>>, RequestError> {
        match &self.context {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(map)) => Ok(Some(map)),
            Some(other) => Err(RequestError::Malformed(format!(
                "`context` must be a JSON object, not {}",
                crate::json::kind_of(other)
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for DecisionRequest {
    /// Through a JSON value and [`DecisionRequest::from_value`], so every format (the
    /// YAML of `arbiter test` too) gets the same strict reading.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Self::from_value(&value).map_err(serde::de::Error::custom)
    }
}

impl EntityRef {
    fn from_field(map: &Map<String, Value>, field: &str) -> Result<EntityRef, RequestError> {
        let shape = || {
            RequestError::Malformed(format!(
                "`{field}` must be an entity reference, `Type::\"id\"` or {{\"type\": …, \"id\": …}}"
            ))
        };
        match map.get(field) {
            None => Err(RequestError::Malformed(format!("missing field `{field}`"))),
            Some(Value::String(text)) => Ok(EntityRef::Text(text.clone())),
            Some(Value::Object(typed)) => match (typed.get("type"), typed.get("id")) {
                (Some(Value::String(ty)), Some(Value::String(id))) if typed.len() == 2 => {
                    Ok(EntityRef::Typed(TypedRef {
                        ty: ty.clone(),
                        id: id.clone(),
                    }))
                }
                _ => Err(shape()),
            },
            Some(_) => Err(shape()),
        }
    }
}

impl<'de> Deserialize<'de> for EntityRef {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        let mut map = Map::new();
        map.insert("entity".to_owned(), value);
        EntityRef::from_field(&map, "entity").map_err(serde::de::Error::custom)
    }
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

    /// `{"error": {"code", "message"}}`.
    pub fn to_json(&self) -> Value {
        serde_json::json!({"error": {"code": self.code(), "message": self.to_string()}})
    }
}

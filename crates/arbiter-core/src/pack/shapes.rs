//! Where a request's context breaks its action's schema, told without the value.
//!
//! Cedar's own messages for a context that does not conform quote the value (`context
//! `{key: "k", value: {inner: "SECRET"}}` is not valid…`), and the context is where
//! callers put what `[log] mask` is there to hide: an error is answered and logged, so it
//! must name the path and the expected type, never the value. Cedar still decides whether
//! the context conforms; this only finds the first place that does not, to say where.

use std::collections::HashMap;

use cedar_policy::{EntityId, EntityTypeName, EntityUid};
use serde_json::{Map, Value};

/// Every action's context type, from the schema in Cedar's JSON form.
#[derive(Debug, Default)]
pub(crate) struct ContextShapes {
    /// The schema's namespaces (for common types).
    namespaces: Map<String, Value>,
    /// Action uid → (its namespace, its context type).
    contexts: HashMap<EntityUid, (String, Value)>,
}

/// The deepest a type is followed; deeper schemas get the generic message.
const MAX_DEPTH: usize = 64;

/// Every action of a schema in Cedar's JSON form (its namespaces): the namespace, the
/// action's uid (`NS::Action::"id"`) and its definition.
pub(crate) fn actions_of(
    namespaces: &Map<String, Value>,
) -> impl Iterator<Item = (&str, EntityUid, &Value)> {
    namespaces.iter().flat_map(|(ns, def)| {
        let type_name = if ns.is_empty() {
            "Action".to_owned()
        } else {
            format!("{ns}::Action")
        };
        let ty = type_name.parse::<EntityTypeName>().ok();
        let actions = def.get("actions").and_then(Value::as_object);
        actions.zip(ty).into_iter().flat_map(move |(actions, ty)| {
            actions.iter().map(move |(id, action)| {
                let uid = EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(id));
                (ns.as_str(), uid, action)
            })
        })
    })
}

impl ContextShapes {
    /// Reads the context types of every action of a schema in Cedar's JSON form.
    pub(crate) fn new(schema: &Value) -> Self {
        let Some(namespaces) = schema.as_object() else {
            return Self::default();
        };
        let mut contexts = HashMap::new();
        for (ns, uid, action) in actions_of(namespaces) {
            let context = action
                .get("appliesTo")
                .and_then(|a| a.get("context"))
                .cloned()
                .unwrap_or_else(|| serde_json::json!({"type": "Record", "attributes": {}}));
            contexts.insert(uid, (ns.to_owned(), context));
        }
        Self {
            namespaces: namespaces.clone(),
            contexts,
        }
    }

    /// The first place where `context` breaks the context type of `action`, as
    /// "`context.a.b`: expected …, found …"; `None` when none is found (the caller then
    /// says only that the context does not conform).
    pub(crate) fn explain(
        &self,
        action: &EntityUid,
        context: &Map<String, Value>,
    ) -> Option<String> {
        let (ns, ty) = self.contexts.get(action)?;
        let value = Value::Object(context.clone());
        self.mismatch(ns, ty, &value, "context".to_owned(), 0)
    }

    /// Whether the context type of `action` declares a top-level attribute `key` of type
    /// `Bool` (required or not). `false` for an action the schema does not know.
    pub(crate) fn declares_bool(&self, action: &EntityUid, key: &str) -> bool {
        let Some((ns, ty)) = self.contexts.get(action) else {
            return false;
        };
        let mut ty = ty.clone();
        // A context given as a common type: follow the name to its record.
        for _ in 0..MAX_DEPTH {
            if ty.get("type").and_then(Value::as_str) == Some("Record") {
                break;
            }
            let name = match (ty.get("type").and_then(Value::as_str), ty.get("name")) {
                (Some("EntityOrCommon"), Some(Value::String(name))) => name.clone(),
                (Some(name), None) => name.to_owned(),
                _ => return false,
            };
            let Some(common) = self.common(ns, &name) else {
                return false;
            };
            ty = common;
        }
        let Some(attribute) = ty.get("attributes").and_then(|a| a.get(key)) else {
            return false;
        };
        matches!(
            (
                attribute.get("type").and_then(Value::as_str),
                attribute.get("name").and_then(Value::as_str),
            ),
            (Some("Boolean"), _) | (Some("EntityOrCommon"), Some("Bool" | "__cedar::Bool"))
        )
    }

    fn mismatch(
        &self,
        ns: &str,
        ty: &Value,
        value: &Value,
        path: String,
        depth: usize,
    ) -> Option<String> {
        if depth > MAX_DEPTH {
            return None;
        }
        let found = kind_of(value);
        let wrong = |expected: &str| Some(format!("`{path}`: expected {expected}, found {found}"));
        let kind = ty.get("type").and_then(Value::as_str)?;
        let name = ty.get("name").and_then(Value::as_str);
        match (kind, name) {
            ("String", _) | ("EntityOrCommon", Some("String" | "__cedar::String")) => {
                (!value.is_string()).then(|| wrong("a string")).flatten()
            }
            ("Long", _) | ("EntityOrCommon", Some("Long" | "__cedar::Long")) => (!value.is_i64())
                .then(|| wrong("a whole number (Long)"))
                .flatten(),
            ("Boolean", _) | ("EntityOrCommon", Some("Bool" | "__cedar::Bool")) => {
                (!value.is_boolean()).then(|| wrong("a boolean")).flatten()
            }
            ("Set", _) => {
                let Value::Array(items) = value else {
                    return wrong("a set (JSON array)");
                };
                let element = ty.get("element")?;
                items.iter().enumerate().find_map(|(i, item)| {
                    self.mismatch(ns, element, item, format!("{path}[{i}]"), depth + 1)
                })
            }
            ("Record", _) => self.record(ns, ty, value, &path, depth),
            // Entity references and extension values have several spellings; Cedar judges.
            ("Entity" | "Extension", _) => None,
            (_, Some(name)) | (name, None) => {
                let common = self.common(ns, name)?;
                self.mismatch(ns, &common, value, path, depth + 1)
            }
        }
    }

    fn record(
        &self,
        ns: &str,
        ty: &Value,
        value: &Value,
        path: &str,
        depth: usize,
    ) -> Option<String> {
        let Value::Object(fields) = value else {
            return Some(format!(
                "`{path}`: expected a record, found {}",
                kind_of(value)
            ));
        };
        if fields.contains_key("__entity") || fields.contains_key("__extn") {
            return Some(format!(
                "`{path}`: expected a record, found an {}",
                if fields.contains_key("__entity") {
                    "entity reference"
                } else {
                    "extension value"
                }
            ));
        }
        let empty = Map::new();
        let attributes = ty
            .get("attributes")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let open = ty.get("additionalAttributes").and_then(Value::as_bool) == Some(true);
        for (key, item) in fields {
            match attributes.get(key) {
                Some(attr) => {
                    if let Some(found) =
                        self.mismatch(ns, attr, item, format!("{path}.{key}"), depth + 1)
                    {
                        return Some(found);
                    }
                }
                None if open => {}
                None => {
                    return Some(format!(
                        "`{path}.{key}`: the schema declares no such attribute"
                    ));
                }
            }
        }
        attributes
            .iter()
            .filter(|(_, attr)| attr.get("required").and_then(Value::as_bool) != Some(false))
            .find(|(key, _)| !fields.contains_key(*key))
            .map(|(key, attr)| {
                format!(
                    "`{path}.{key}`: required, and missing (expected {})",
                    describe(attr)
                )
            })
    }

    /// A common type by the name it is referenced with from namespace `ns`.
    fn common(&self, ns: &str, name: &str) -> Option<Value> {
        let (in_ns, ty) = match name.rsplit_once("::") {
            Some((n, t)) => (n, t),
            None => (ns, name),
        };
        let lookup = |n: &str| {
            self.namespaces
                .get(n)
                .and_then(|d| d.get("commonTypes"))
                .and_then(|c| c.get(ty))
                .cloned()
        };
        lookup(in_ns).or_else(|| lookup(""))
    }
}

/// The JSON kind of a value, never the value.
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() => "a whole number",
        Value::Number(_) => "a number that is not a whole number (Long)",
        Value::String(_) => "a string",
        Value::Array(_) => "a set (JSON array)",
        Value::Object(m) if m.contains_key("__entity") => "an entity reference",
        Value::Object(m) if m.contains_key("__extn") => "an extension value",
        Value::Object(_) => "a record",
    }
}

/// A schema type in words.
fn describe(ty: &Value) -> String {
    let kind = ty.get("type").and_then(Value::as_str).unwrap_or("a value");
    let name = ty.get("name").and_then(Value::as_str);
    match (kind, name) {
        ("String", _) => "a string".to_owned(),
        ("Long", _) => "a whole number (Long)".to_owned(),
        ("Boolean", _) => "a boolean".to_owned(),
        ("Set", _) => "a set".to_owned(),
        ("Record", _) => "a record".to_owned(),
        ("Entity", Some(n)) => format!("an entity of type `{n}`"),
        ("Extension", Some(n)) => format!("a `{n}` value"),
        (_, Some(n)) | (n, None) => format!("a `{n}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shapes() -> ContextShapes {
        ContextShapes::new(&json!({"": {
            "commonTypes": {"Kv": {"type": "Record", "attributes": {
                "key": {"type": "String"}, "value": {"type": "String"}}}},
            "entityTypes": {"A": {}},
            "actions": {"put": {"appliesTo": {"principalTypes": ["A"], "resourceTypes": ["A"],
                "context": {"type": "Record", "attributes": {
                    "kv": {"type": "EntityOrCommon", "name": "Kv"},
                    "tags": {"type": "Set", "element": {"type": "Long"}},
                    "note": {"type": "String", "required": false}}}}}}
        }}))
    }

    fn explain(context: Value) -> Option<String> {
        let action: EntityUid = r#"Action::"put""#.parse().expect("a uid");
        shapes().explain(&action, context.as_object().expect("an object"))
    }

    #[test]
    fn names_the_path_and_the_type_never_the_value() {
        let said = explain(json!({"kv": {"key": "k", "value": {"inner": "SECRET"}}, "tags": []}))
            .expect("a mismatch");
        assert_eq!(
            said,
            "`context.kv.value`: expected a string, found a record"
        );
        let said = explain(json!({"kv": {"key": "k", "value": "v"}, "tags": [1, "SECRET"]}))
            .expect("a mismatch");
        assert_eq!(
            said,
            "`context.tags[1]`: expected a whole number (Long), found a string"
        );
        let said = explain(json!({"kv": {"key": "k", "value": "v"}, "tags": [], "SECRET": 1}))
            .expect("a mismatch");
        assert!(said.contains("no such attribute"), "{said}");
        let said = explain(json!({"tags": []})).expect("a mismatch");
        assert_eq!(
            said,
            "`context.kv`: required, and missing (expected a `Kv`)"
        );
    }

    #[test]
    fn a_declared_bool_is_found_through_a_common_type() {
        let shapes = ContextShapes::new(&json!({"": {
            "commonTypes": {"Ctx": {"type": "Record", "attributes": {
                "tool_changed": {"type": "EntityOrCommon", "name": "Bool", "required": false},
                "note": {"type": "String"}}}},
            "entityTypes": {"A": {}},
            "actions": {
                "a": {"appliesTo": {"principalTypes": ["A"], "resourceTypes": ["A"],
                    "context": {"type": "EntityOrCommon", "name": "Ctx"}}},
                "b": {"appliesTo": {"principalTypes": ["A"], "resourceTypes": ["A"],
                    "context": {"type": "Record", "attributes": {
                        "tool_changed": {"type": "Boolean"}}}}},
                "c": {"appliesTo": {"principalTypes": ["A"], "resourceTypes": ["A"]}}}
        }}));
        let uid = |id: &str| -> EntityUid { format!("Action::\"{id}\"").parse().expect("a uid") };
        assert!(shapes.declares_bool(&uid("a"), "tool_changed"));
        assert!(!shapes.declares_bool(&uid("a"), "note"));
        assert!(shapes.declares_bool(&uid("b"), "tool_changed"));
        assert!(!shapes.declares_bool(&uid("c"), "tool_changed"));
        assert!(!shapes.declares_bool(&uid("zz"), "tool_changed"));
    }

    #[test]
    fn a_conforming_context_has_no_mismatch() {
        assert_eq!(
            explain(json!({"kv": {"key": "k", "value": "v"}, "tags": [1]})),
            None
        );
    }
}

//! The pack's schema, and the same schema with arbiter's reserved context attributes added
//! to every action's context type (DESIGN §3 step 3), so that policies may read
//! `context.session.touched` without the pack declaring it.

use serde_json::{Map, Value, json};

/// The context keys arbiter fills in; callers may never send them.
pub const RESERVED_CONTEXT_KEYS: [&str; 5] = ["session", "credential", "in_intent", "novel", "now"];

fn reserved_attributes() -> Map<String, Value> {
    let long = json!({"type": "Long"});
    let string = json!({"type": "String"});
    let attrs = json!({
        "session": {"type": "Record", "attributes": {
            "id": string,
            "touched": {"type": "Set", "element": string},
            "actions": long,
            "age_s": long,
        }},
        "now": {"type": "Extension", "name": "datetime"},
        "credential": {"type": "Record", "required": false, "attributes": {
            "issuer": string,
            "intent": {"type": "String", "required": false},
            "ttl_s": long,
            "age_s": long,
        }},
        "in_intent": {"type": "Boolean", "required": false},
        "novel": {"type": "Boolean", "required": false},
    });
    match attrs {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Adds the reserved attributes to every action's context in a schema in Cedar's JSON
/// form. Returns the actions (`Namespace::Action::"id"` strings) whose context already
/// declares a reserved key, which is a pack error.
pub(crate) fn augment(schema: &mut Value) -> Result<(), Vec<String>> {
    let reserved = reserved_attributes();
    let mut clashes = Vec::new();
    let Some(namespaces) = schema.as_object_mut() else {
        return Ok(());
    };
    // Contexts that reference a common type are resolved first, then edited in place.
    let mut common_refs: Vec<(String, String)> = Vec::new();
    for (ns_name, ns) in namespaces.iter_mut() {
        let Some(actions) = ns.get_mut("actions").and_then(Value::as_object_mut) else {
            continue;
        };
        for (action, def) in actions.iter_mut() {
            let Some(applies) = def.get_mut("appliesTo").and_then(Value::as_object_mut) else {
                continue;
            };
            let context = applies
                .entry("context")
                .or_insert_with(|| json!({"type": "Record", "attributes": {}}));
            match context_kind(context) {
                ContextKind::Record => {
                    add_to_record(
                        context,
                        &reserved,
                        &mut clashes,
                        &qualified(ns_name, action),
                    );
                }
                ContextKind::Reference(name) => common_refs.push((ns_name.clone(), name)),
                ContextKind::Other => {}
            }
        }
    }
    for (ns_name, name) in common_refs {
        let (target_ns, type_name) = resolve_common(namespaces, &ns_name, &name);
        let Some(def) = namespaces
            .get_mut(&target_ns)
            .and_then(|ns| ns.get_mut("commonTypes"))
            .and_then(|c| c.get_mut(&type_name))
        else {
            // Cedar itself reports the unknown type when the schema is built.
            continue;
        };
        if matches!(context_kind(def), ContextKind::Record) {
            let already = def
                .get("attributes")
                .and_then(Value::as_object)
                .is_some_and(|a| a.contains_key("session") && a.contains_key("now"));
            if !already {
                add_to_record(def, &reserved, &mut clashes, &format!("type {type_name}"));
            }
        }
    }
    if clashes.is_empty() {
        Ok(())
    } else {
        Err(clashes)
    }
}

enum ContextKind {
    Record,
    Reference(String),
    Other,
}

fn context_kind(context: &Value) -> ContextKind {
    match context.get("type").and_then(Value::as_str) {
        Some("Record") => ContextKind::Record,
        Some("EntityOrCommon") => context
            .get("name")
            .and_then(Value::as_str)
            .map_or(ContextKind::Other, |n| ContextKind::Reference(n.to_owned())),
        Some(name) => ContextKind::Reference(name.to_owned()),
        None => ContextKind::Other,
    }
}

fn add_to_record(
    record: &mut Value,
    reserved: &Map<String, Value>,
    clashes: &mut Vec<String>,
    owner: &str,
) {
    let Some(record) = record.as_object_mut() else {
        return;
    };
    let attrs = record
        .entry("attributes")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(attrs) = attrs.as_object_mut() else {
        return;
    };
    for (key, ty) in reserved {
        if attrs.contains_key(key) {
            clashes.push(format!(
                "{owner} declares context attribute `{key}`, which arbiter reserves \
                 (it fills it in itself; remove it from the schema)"
            ));
        } else {
            attrs.insert(key.clone(), ty.clone());
        }
    }
}

fn qualified(ns: &str, action: &str) -> String {
    if ns.is_empty() {
        format!("action `{action}`")
    } else {
        format!("action `{ns}::{action}`")
    }
}

/// Where a common type named `name`, referenced from namespace `from`, is defined.
fn resolve_common(namespaces: &Map<String, Value>, from: &str, name: &str) -> (String, String) {
    if let Some((ns, ty)) = name.rsplit_once("::") {
        return (ns.to_owned(), ty.to_owned());
    }
    let defined_in = |ns: &str| {
        namespaces
            .get(ns)
            .and_then(|n| n.get("commonTypes"))
            .and_then(|c| c.get(name))
            .is_some()
    };
    if defined_in(from) {
        (from.to_owned(), name.to_owned())
    } else {
        (String::new(), name.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_and_missing_contexts_get_the_reserved_keys() {
        let mut schema = json!({"": {"entityTypes": {"A": {}}, "actions": {
            "x": {"appliesTo": {"principalTypes": ["A"], "resourceTypes": ["A"]}},
            "y": {"appliesTo": {"principalTypes": ["A"], "resourceTypes": ["A"],
                  "context": {"type": "Record", "attributes": {"ip": {"type": "String"}}}}}
        }}});
        augment(&mut schema).expect("no clashes");
        for action in ["x", "y"] {
            let attrs = &schema[""]["actions"][action]["appliesTo"]["context"]["attributes"];
            for key in RESERVED_CONTEXT_KEYS {
                assert!(attrs.get(key).is_some(), "{action} lacks {key}");
            }
        }
        assert!(schema[""]["actions"]["y"]["appliesTo"]["context"]["attributes"]["ip"].is_object());
    }

    #[test]
    fn common_type_contexts_are_edited_once() {
        let mut schema = json!({"NS": {"entityTypes": {"A": {}},
        "commonTypes": {"Ctx": {"type": "Record", "attributes": {}}},
        "actions": {
            "x": {"appliesTo": {"principalTypes": ["A"], "resourceTypes": ["A"], "context": {"type": "Ctx"}}},
            "y": {"appliesTo": {"principalTypes": ["A"], "resourceTypes": ["A"], "context": {"type": "Ctx"}}}
        }}});
        augment(&mut schema).expect("no clashes");
        assert!(schema["NS"]["commonTypes"]["Ctx"]["attributes"]["session"].is_object());
    }

    #[test]
    fn declaring_a_reserved_key_is_a_clash() {
        let mut schema = json!({"": {"entityTypes": {"A": {}}, "actions": {
            "x": {"appliesTo": {"principalTypes": ["A"], "resourceTypes": ["A"],
                  "context": {"type": "Record", "attributes": {"session": {"type": "String"}}}}}
        }}});
        let clashes = augment(&mut schema).expect_err("clash");
        assert_eq!(clashes.len(), 1);
        assert!(clashes.first().is_some_and(|c| c.contains("`session`")));
    }
}

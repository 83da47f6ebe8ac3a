//! Per-action request plans: a decision's Cedar request built straight from the parsed
//! request, typed by the schema, without Cedar's JSON parser or its schema check.
//!
//! Checking a request against the schema (`Request::new` with a schema) was a quarter of
//! a decision on a small pack: Cedar walks the schema's context type for every request.
//! A plan reads each action's context type once, when the pack loads, into a tree of the
//! types a plain JSON value can have (`Long`, `String`, `Bool`, sets, closed records, and
//! extension values written as strings). A context that fits the plan exactly (every
//! attribute declared, every required one present, every value of its declared type),
//! for a principal and resource of types the action applies to, is one Cedar's check
//! accepts: the plan is the same type, read from the same schema. Its values are the
//! ones Cedar's schema-directed parser gives (an extension string is a call of the
//! type's constructor, as Cedar reads it), so the request is built without a schema.
//!
//! Anything the plan does not cover is left to Cedar, as before: an action whose context
//! type holds an entity reference or an open record, a principal or resource of an
//! enumerated entity type (Cedar checks the id), a value that does not fit (Cedar then
//! refuses it with its own error), an escape (`__entity`, `__extn`), an extension string
//! Cedar cannot parse. The plan never refuses a request; it only skips work Cedar would
//! have done to accept it.

use std::collections::{BTreeMap, HashMap, HashSet};

use cedar_policy::{Context, EntityTypeName, EntityUid, Request, RestrictedExpression, Schema};
use serde_json::{Map, Value};

/// How deep a schema type is followed; deeper types are left to Cedar.
const MAX_DEPTH: usize = 32;

/// Every action's plan, from the pack's own schema (without the reserved keys).
#[derive(Debug, Default)]
pub(crate) struct RequestPlans {
    by_action: HashMap<EntityUid, ActionPlan>,
}

#[derive(Debug)]
struct ActionPlan {
    principals: HashSet<EntityTypeName>,
    resources: HashSet<EntityTypeName>,
    context: Record,
}

#[derive(Debug)]
enum Ty {
    Long,
    String,
    Bool,
    Set(Box<Ty>),
    Record(Record),
    Extension(Extension),
}

#[derive(Debug, Clone, Copy)]
enum Extension {
    Ip,
    Decimal,
    Datetime,
    Duration,
}

/// A closed record type: its attributes, and how many of them are required.
#[derive(Debug, Default)]
struct Record {
    attributes: BTreeMap<String, (Ty, bool)>,
    required: usize,
}

impl RequestPlans {
    /// The plans of every action of `schema`, read from its JSON form `json`.
    pub(crate) fn new(json: &Value, schema: &Schema) -> Self {
        let Some(namespaces) = json.as_object() else {
            return Self::default();
        };
        let enumerated = enumerated_types(namespaces);
        let reader = Reader { namespaces };
        let mut by_action = HashMap::new();
        for (ns, uid, action) in crate::pack::shapes::actions_of(namespaces) {
            let context = match action.get("appliesTo").and_then(|a| a.get("context")) {
                None => Some(Record::default()),
                Some(context) => match reader.ty(ns, context, 0) {
                    Some(Ty::Record(record)) => Some(record),
                    _ => None,
                },
            };
            let Some(context) = context else {
                continue;
            };
            let usable = |t: &&EntityTypeName| !enumerated.contains(&t.to_string());
            let principals = schema
                .principals_for_action(&uid)
                .into_iter()
                .flatten()
                .filter(usable)
                .cloned()
                .collect();
            let resources = schema
                .resources_for_action(&uid)
                .into_iter()
                .flatten()
                .filter(usable)
                .cloned()
                .collect();
            by_action.insert(
                uid,
                ActionPlan {
                    principals,
                    resources,
                    context,
                },
            );
        }
        Self { by_action }
    }

    /// The request, when the plan covers it; `None` leaves it to Cedar's own reading and
    /// check.
    pub(crate) fn request(
        &self,
        principal: &EntityUid,
        action: &EntityUid,
        resource: &EntityUid,
        context: &Map<String, Value>,
    ) -> Option<Request> {
        let plan = self.by_action.get(action)?;
        if !plan.principals.contains(principal.type_name())
            || !plan.resources.contains(resource.type_name())
        {
            return None;
        }
        let context = if context.is_empty() && plan.context.required == 0 {
            Context::empty()
        } else {
            Context::from_pairs(plan.context.pairs(context)?).ok()?
        };
        Request::new(
            principal.clone(),
            action.clone(),
            resource.clone(),
            context,
            None,
        )
        .ok()
    }
}

impl Record {
    fn pairs(&self, fields: &Map<String, Value>) -> Option<Vec<(String, RestrictedExpression)>> {
        let mut required = 0;
        let mut pairs = Vec::with_capacity(fields.len());
        for (key, value) in fields {
            let (ty, is_required) = self.attributes.get(key)?;
            required += usize::from(*is_required);
            pairs.push((key.clone(), ty.expression(value)?));
        }
        (required == self.required).then_some(pairs)
    }
}

impl Ty {
    fn expression(&self, value: &Value) -> Option<RestrictedExpression> {
        Some(match (self, value) {
            (Ty::Long, Value::Number(n)) => RestrictedExpression::new_long(n.as_i64()?),
            (Ty::String, Value::String(s)) => RestrictedExpression::new_string(s.clone()),
            (Ty::Bool, Value::Bool(b)) => RestrictedExpression::new_bool(*b),
            (Ty::Set(element), Value::Array(items)) => RestrictedExpression::new_set(
                items
                    .iter()
                    .map(|item| element.expression(item))
                    .collect::<Option<Vec<_>>>()?,
            ),
            // `__entity`, `__extn` and `__expr` are Cedar's escapes; any `__` key is left to it.
            (Ty::Record(_), Value::Object(fields))
                if fields.keys().any(|k| k.starts_with("__")) =>
            {
                return None;
            }
            (Ty::Record(record), Value::Object(fields)) => {
                RestrictedExpression::new_record(record.pairs(fields)?).ok()?
            }
            (Ty::Extension(extension), Value::String(text)) => match extension {
                Extension::Ip => RestrictedExpression::new_ip(text),
                Extension::Decimal => RestrictedExpression::new_decimal(text),
                Extension::Datetime => RestrictedExpression::new_datetime(text),
                Extension::Duration => RestrictedExpression::new_duration(text),
            },
            _ => return None,
        })
    }
}

/// Reads schema types in Cedar's JSON form into plan types.
struct Reader<'a> {
    namespaces: &'a Map<String, Value>,
}

impl Reader<'_> {
    fn ty(&self, ns: &str, ty: &Value, depth: usize) -> Option<Ty> {
        if depth > MAX_DEPTH {
            return None;
        }
        let kind = ty.get("type").and_then(Value::as_str)?;
        let name = ty.get("name").and_then(Value::as_str);
        match (kind, name) {
            ("Long", _) => Some(Ty::Long),
            ("String", _) => Some(Ty::String),
            ("Boolean", _) => Some(Ty::Bool),
            ("Set", _) => Some(Ty::Set(Box::new(self.ty(
                ns,
                ty.get("element")?,
                depth + 1,
            )?))),
            ("Record", _) => self.record(ns, ty, depth).map(Ty::Record),
            ("Extension", Some(name)) => extension(name).map(Ty::Extension),
            ("Entity", _) => None,
            ("EntityOrCommon", Some(name)) => self.named(ns, name, depth),
            (name, None) => self.named(ns, name, depth),
            _ => None,
        }
    }

    /// A type by name: a common type, else a built-in one; an entity type (or a name
    /// that is both) is left to Cedar.
    fn named(&self, ns: &str, name: &str, depth: usize) -> Option<Ty> {
        let (in_ns, base) = match name.rsplit_once("::") {
            Some((n, b)) => (n, b),
            None => (ns, name),
        };
        let declared = |section: &str, n: &str| {
            self.namespaces
                .get(n)
                .and_then(|d| d.get(section))
                .and_then(|s| s.get(base))
        };
        if declared("entityTypes", in_ns).is_some() || declared("entityTypes", "").is_some() {
            return None;
        }
        if let Some(common) = declared("commonTypes", in_ns).or_else(|| declared("commonTypes", ""))
        {
            return self.ty(in_ns, common, depth + 1);
        }
        match name {
            "Long" | "__cedar::Long" => Some(Ty::Long),
            "String" | "__cedar::String" => Some(Ty::String),
            "Bool" | "__cedar::Bool" => Some(Ty::Bool),
            other => extension(other.trim_start_matches("__cedar::")).map(Ty::Extension),
        }
    }

    fn record(&self, ns: &str, ty: &Value, depth: usize) -> Option<Record> {
        if ty.get("additionalAttributes").and_then(Value::as_bool) == Some(true) {
            return None;
        }
        let mut record = Record::default();
        let empty = Map::new();
        let attributes = match ty.get("attributes") {
            None => &empty,
            Some(a) => a.as_object()?,
        };
        for (key, attribute) in attributes {
            let required = match attribute.get("required") {
                None => true,
                Some(r) => r.as_bool()?,
            };
            let ty = self.ty(ns, attribute, depth + 1)?;
            record.required += usize::from(required);
            record.attributes.insert(key.clone(), (ty, required));
        }
        Some(record)
    }
}

fn extension(name: &str) -> Option<Extension> {
    match name {
        "ipaddr" => Some(Extension::Ip),
        "decimal" => Some(Extension::Decimal),
        "datetime" => Some(Extension::Datetime),
        "duration" => Some(Extension::Duration),
        _ => None,
    }
}

/// The entity types declared with `enum`, fully named: Cedar checks their ids.
fn enumerated_types(namespaces: &Map<String, Value>) -> HashSet<String> {
    let mut out = HashSet::new();
    for (ns, def) in namespaces {
        let Some(types) = def.get("entityTypes").and_then(Value::as_object) else {
            continue;
        };
        for (name, ty) in types {
            if ty.get("enum").is_some() {
                out.insert(if ns.is_empty() {
                    name.clone()
                } else {
                    format!("{ns}::{name}")
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test")]

    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const SCHEMA: &str = r#"
        type Tags = Set<String>;
        entity Team;
        entity User in [Team];
        entity Bot;
        entity Doc enum ["a", "b"];
        entity Note;
        action read appliesTo { principal: [User, Bot], resource: [Doc, Note],
            context: { n: Long, s: String, b: Bool, tags: Tags, rec: { x: Long, y?: String },
                       ip: ipaddr, d?: decimal, at?: datetime, span?: duration, big?: Set<Set<Long>> } };
        action who appliesTo { principal: [User], resource: [Note], context: { owner: User } };
        action bare appliesTo { principal: [User], resource: [Note] };
    "#;

    fn schema() -> (Schema, Value) {
        let (fragment, _) =
            cedar_policy::SchemaFragment::from_cedarschema_str(SCHEMA).expect("a schema");
        let json = fragment.to_json_value().expect("a JSON form");
        (
            Schema::from_json_value(json.clone()).expect("a schema"),
            json,
        )
    }

    /// Cedar's own reading: its schema-directed parser, then its schema check.
    fn cedars(
        schema: &Schema,
        p: &EntityUid,
        a: &EntityUid,
        r: &EntityUid,
        context: &Value,
    ) -> Option<Request> {
        let context = Context::from_json_value(context.clone(), Some((schema, a))).ok()?;
        Request::new(p.clone(), a.clone(), r.clone(), context, Some(schema)).ok()
    }

    fn uid(text: &str) -> EntityUid {
        text.parse().expect("a uid")
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(Value::from),
            (-5i64..5).prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
            prop::sample::select(vec![
                "x",
                "10.0.0.1",
                "10.0.0.0/8",
                "::1",
                "1.5",
                "1.23456",
                "-3.0",
                "2024-01-01",
                "2024-01-01T10:00:00Z",
                "1h30m",
                "-2d",
                "",
                "not an ip"
            ])
            .prop_map(Value::from),
            Just(json!(1.5)),
            Just(Value::Null),
            Just(json!({"__extn": {"fn": "ip", "arg": "10.0.0.1"}})),
            Just(json!({"__entity": {"type": "User", "id": "u"}})),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
                prop::collection::btree_map(prop::sample::select(vec!["x", "y", "z"]), inner, 0..3)
                    .prop_map(|m| Value::Object(
                        m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
                    )),
            ]
        })
    }

    fn context() -> impl Strategy<Value = Value> {
        let keys = vec![
            "n", "s", "b", "tags", "rec", "ip", "d", "at", "span", "big", "owner", "extra",
        ];
        // A well-typed base, then some keys dropped and some replaced by any value.
        let base = json!({"n": 1, "s": "s", "b": true, "tags": ["a"], "rec": {"x": 1},
            "ip": "10.0.0.1", "d": "1.5", "at": "2024-01-01", "span": "1h", "big": [[1], []]});
        (
            prop::collection::vec(prop::sample::select(keys.clone()), 0..3),
            prop::collection::vec((prop::sample::select(keys), value()), 0..3),
        )
            .prop_map(move |(dropped, replaced)| {
                let mut context = base.clone();
                let map = context.as_object_mut().expect("an object");
                for key in dropped {
                    map.remove(key);
                }
                for (key, v) in replaced {
                    map.insert(key.to_owned(), v);
                }
                context
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

        /// Whenever a plan builds a request, Cedar's own reading and check accept the same
        /// context and give the same request.
        #[test]
        fn a_planned_request_is_the_one_cedar_builds(
            context in context(),
            p in prop::sample::select(vec![r#"User::"u""#, r#"Bot::"b""#, r#"Team::"t""#]),
            a in prop::sample::select(vec![r#"Action::"read""#, r#"Action::"who""#, r#"Action::"bare""#]),
            r in prop::sample::select(vec![r#"Note::"n""#, r#"Doc::"a""#, r#"Doc::"zz""#]),
        ) {
            let (schema, json) = schema();
            let plans = RequestPlans::new(&json, &schema);
            let (p, a, r) = (uid(p), uid(a), uid(r));
            let Some(planned) = plans.request(&p, &a, &r, context.as_object().expect("an object")) else {
                return Ok(());
            };
            let cedars = cedars(&schema, &p, &a, &r, &context);
            prop_assert!(cedars.is_some(), "Cedar refuses what the plan built: {context}");
            let cedars = cedars.expect("checked");
            prop_assert_eq!(planned.principal(), cedars.principal());
            prop_assert_eq!(planned.action(), cedars.action());
            prop_assert_eq!(planned.resource(), cedars.resource());
            let (ours, theirs) = (planned.context().expect("known"), cedars.context().expect("known"));
            for key in context.as_object().expect("an object").keys() {
                prop_assert_eq!(ours.get(key), theirs.get(key), "{}", key);
            }
            prop_assert_eq!(format!("{ours}"), format!("{theirs}"));
        }
    }

    /// The plan covers the requests it is for, and leaves what it cannot vouch for.
    #[test]
    fn well_typed_requests_are_planned_and_the_rest_left_to_cedar() {
        let (schema, json) = schema();
        let plans = RequestPlans::new(&json, &schema);
        let context = json!({"n": 1, "s": "s", "b": true, "tags": ["a"], "rec": {"x": 1, "y": "z"},
            "ip": "10.0.0.1", "d": "1.5", "at": "2024-01-01", "span": "1h"});
        let plan = |p: &str, a: &str, r: &str, c: &Value| {
            plans.request(&uid(p), &uid(a), &uid(r), c.as_object().expect("an object"))
        };
        let (user, read, note) = (r#"User::"u""#, r#"Action::"read""#, r#"Note::"n""#);
        assert!(plan(user, read, note, &context).is_some());
        assert!(plan(user, r#"Action::"bare""#, note, &json!({})).is_some());
        // Not of the action's types; an enumerated type; an entity-typed context.
        assert!(plan(r#"Team::"t""#, read, note, &context).is_none());
        assert!(plan(user, read, r#"Doc::"a""#, &context).is_none());
        assert!(plan(user, r#"Action::"who""#, note, &json!({"owner": "x"})).is_none());
        // Missing, undeclared, mistyped, unparsable, escaped.
        let mut bad = Vec::new();
        for (key, v) in [
            ("n", Value::Null),
            ("extra", json!(1)),
            ("n", json!("1")),
            ("n", json!(1.5)),
            ("ip", json!("not an ip")),
            ("ip", json!({"__extn": {"fn": "ip", "arg": "10.0.0.1"}})),
            ("rec", json!({"x": 1, "w": 2})),
        ] {
            let mut c = context.clone();
            let map = c.as_object_mut().expect("an object");
            if v.is_null() {
                map.remove(key);
            } else {
                map.insert(key.to_owned(), v);
            }
            bad.push(c);
        }
        for c in &bad {
            assert!(plan(user, read, note, c).is_none(), "{c}");
        }
    }
}

//! A request's context of plain JSON, as Cedar values, without Cedar's JSON parser.
//!
//! Cedar reads a context's JSON through an untagged enum: every value is tried as an
//! entity escape, an extension escape, and so on, and each failed try builds an error
//! message. That was a fifth of a decision's time. Plain JSON (strings, integers,
//! booleans, arrays and objects without Cedar's `__` escapes) has one reading only, the
//! one Cedar's parser gives it without a schema; it is built here directly.
//!
//! With a schema, Cedar's parser may read a value otherwise: a string as an `ipaddr` or
//! `decimal`, an object `{"type", "id"}` as an entity. Such a plain reading does not
//! conform to the schema, so `Request::new` refuses it, and the engine then reads the
//! context with Cedar's parser as before: the answer is Cedar's either way.

use cedar_policy::{Context, RestrictedExpression};
use serde_json::{Map, Value};

/// The context as Cedar values, or `None` when Cedar's own parser must read it.
pub(crate) fn plain(context: &Map<String, Value>) -> Option<Context> {
    if context.is_empty() {
        return Some(Context::empty());
    }
    let pairs = context
        .iter()
        .map(|(key, value)| Some((key.clone(), expression(value)?)))
        .collect::<Option<Vec<_>>>()?;
    Context::from_pairs(pairs).ok()
}

fn expression(value: &Value) -> Option<RestrictedExpression> {
    Some(match value {
        Value::Bool(b) => RestrictedExpression::new_bool(*b),
        Value::Number(n) => RestrictedExpression::new_long(n.as_i64()?),
        Value::String(s) => RestrictedExpression::new_string(s.clone()),
        Value::Array(items) => {
            RestrictedExpression::new_set(items.iter().map(expression).collect::<Option<Vec<_>>>()?)
        }
        // `__entity`, `__extn` and `__expr` are Cedar's escapes; any `__` key is left to it.
        Value::Object(map) if map.keys().any(|k| k.starts_with("__")) => return None,
        Value::Object(map) => RestrictedExpression::new_record(
            map.iter()
                .map(|(k, v)| Some((k.clone(), expression(v)?)))
                .collect::<Option<Vec<_>>>()?,
        )
        .ok()?,
        Value::Null => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cedar_policy::{Context as CedarContext, EvalResult};
    use serde_json::json;

    /// The plain reading and Cedar's reading without a schema give the same values.
    #[test]
    fn plain_json_reads_as_cedar_reads_it() {
        let value = json!({
            "s": "text", "n": -42, "b": true,
            "set": [1, 2, 2], "rec": {"a": ["x"], "b": {"c": false}},
            "empty": {}, "none": []
        });
        let Value::Object(map) = &value else {
            unreachable!()
        };
        let ours = plain(map).expect("plain");
        let cedars = CedarContext::from_json_value(value.clone(), None).expect("cedar");
        for key in map.keys() {
            let a: Option<EvalResult> = ours.get(key);
            let b: Option<EvalResult> = cedars.get(key);
            assert_eq!(a, b, "{key}");
            assert!(a.is_some(), "{key}");
        }
    }

    #[test]
    fn escapes_floats_and_nulls_are_left_to_cedar() {
        for value in [
            json!({"e": {"__entity": {"type": "User", "id": "a"}}}),
            json!({"x": {"__extn": {"fn": "ip", "arg": "10.0.0.1"}}}),
            json!({"f": 1.5}),
            json!({"n": null}),
            json!({"deep": [{"__entity": {"type": "User", "id": "a"}}]}),
            json!({"big": u64::MAX}),
        ] {
            let Value::Object(map) = &value else {
                unreachable!()
            };
            assert!(plain(map).is_none(), "{value}");
        }
    }
}

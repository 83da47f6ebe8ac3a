//! Which reserved context keys a policy can observe, so a decision builds only the ones
//! its slice reads. A policy that never mentions `context.session` cannot tell whether
//! it is there; building the session record (a set of every action touched) for it would
//! be work without effect.
//!
//! The analysis is conservative: `context.KEY` and `context has KEY` need `KEY`; any other
//! use of `context` as a whole (`context == {…}`, passing it somewhere) needs them all.

use serde_json::Value;

/// The reserved keys a policy, or a slice, reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Needs {
    pub session: bool,
    pub now: bool,
    pub credential: bool,
    pub in_intent: bool,
    pub novel: bool,
}

impl Needs {
    pub(crate) const ALL: Needs = Needs {
        session: true,
        now: true,
        credential: true,
        in_intent: true,
        novel: true,
    };

    pub(crate) fn union(self, other: Needs) -> Needs {
        Needs {
            session: self.session || other.session,
            now: self.now || other.now,
            credential: self.credential || other.credential,
            in_intent: self.in_intent || other.in_intent,
            novel: self.novel || other.novel,
        }
    }

    fn key(&mut self, attr: &str) {
        match attr {
            "session" => self.session = true,
            "now" => self.now = true,
            "credential" => self.credential = true,
            "in_intent" => self.in_intent = true,
            "novel" => self.novel = true,
            _ => {}
        }
    }

    /// The needs of a policy, from its JSON form (Cedar's EST).
    pub(crate) fn of_policy(est: &Value) -> Needs {
        let mut needs = Needs::default();
        walk(est, &mut needs);
        needs
    }
}

fn is_context(v: &Value) -> bool {
    v.get("Var").and_then(Value::as_str) == Some("context")
}

fn walk(v: &Value, needs: &mut Needs) {
    match v {
        Value::Object(map) => {
            if is_context(v) {
                *needs = Needs::ALL;
                return;
            }
            for (key, inner) in map {
                if key == "." || key == "has" {
                    let left = inner.get("left");
                    if left.is_some_and(is_context) {
                        if let Some(attr) = inner.get("attr").and_then(Value::as_str) {
                            needs.key(attr);
                        }
                        continue;
                    }
                }
                walk(inner, needs);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| walk(i, needs)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cedar_policy::Policy;

    fn needs(src: &str) -> Needs {
        let policy = Policy::parse(None, src).expect("parses");
        Needs::of_policy(&policy.to_json().expect("to json"))
    }

    #[test]
    fn attribute_reads_and_has_need_just_their_key() {
        let n = needs(
            "forbid(principal, action, resource) when { context.session.touched.contains(\"x\") && context has novel && context.ip == \"a\" };",
        );
        assert_eq!(
            n,
            Needs {
                session: true,
                novel: true,
                ..Needs::default()
            }
        );
        assert_eq!(
            needs("permit(principal, action, resource);"),
            Needs::default()
        );
    }

    #[test]
    fn the_whole_context_needs_everything() {
        assert_eq!(
            needs("forbid(principal, action, resource) when { context == {} };"),
            Needs::ALL
        );
    }
}

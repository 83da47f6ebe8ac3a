//! Guards: the leading comparisons of a policy's condition, checked before Cedar sees the
//! policy, so a policy they prove false is left out of the evaluation.
//!
//! On a large pack most of a decision is Cedar evaluating the policies of the slice, and
//! most of those are false. Cedar evaluates a policy's scope (which cannot error), then
//! its `when` clause left to right, stopping at the first conjunct that is false. So when
//! the first conjuncts of a policy's first `when` clause are comparisons of an attribute
//! of `context`, `principal` or `resource` with a literal
//! (`context.n > 50 && resource.risk > 2 && …`), and the attribute's value makes one of
//! them false while the ones before it are true, Cedar would find the policy false
//! without evaluating anything after it, hence without error: leaving it out gives
//! exactly the same answer (the reasons are the satisfied policies, the errors those that
//! errored; it is in neither).
//!
//! A guard only ever leaves a policy out on that proof. Where it cannot tell (the
//! attribute is absent, the entity is not in the store, the value is not of the type the
//! comparison needs, a conjunct is anything else), the policy is evaluated by Cedar as
//! before. The comparisons are the ones that cannot error on values of the right type:
//! `<`, `<=`, `>`, `>=` of two `Long`s, `==` and `!=` of a `Long`, `String` or `Bool`
//! with a literal of the same type.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use cedar_policy::{Entities, EntityUid, EvalResult, Policy, PolicySet, Request};
use serde_json::Value;

/// The most conjuncts of one policy read as its guard.
const MAX_TESTS: usize = 8;

/// How many policy sets made of a slice's survivors are kept per slice; past it, they are
/// built per request.
const MAX_CACHED_SETS: usize = 1_024;

/// Where a compared value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Operand {
    Context(String),
    Principal(String),
    Resource(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Literal {
    Long(i64),
    String(String),
    Bool(bool),
}

/// One leading conjunct: `operand op literal`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Test {
    operand: Operand,
    op: Op,
    literal: Literal,
}

/// A policy's guard: its leading conjuncts that are tests, in evaluation order.
pub(crate) fn of_policy(est: &Value) -> Vec<Test> {
    let Some(first) = est
        .get("conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
    else {
        return Vec::new();
    };
    if first.get("kind").and_then(Value::as_str) != Some("when") {
        return Vec::new();
    }
    let Some(body) = first.get("body") else {
        return Vec::new();
    };
    let mut conjuncts = Vec::new();
    flatten(body, &mut conjuncts);
    conjuncts
        .into_iter()
        .map_while(test)
        .take(MAX_TESTS)
        .collect()
}

/// The conjuncts of `a && b && …` in the order Cedar evaluates them.
fn flatten<'a>(expr: &'a Value, out: &mut Vec<&'a Value>) {
    match expr.get("&&") {
        Some(and) if out.len() <= MAX_TESTS => {
            if let (Some(left), Some(right)) = (and.get("left"), and.get("right")) {
                flatten(left, out);
                flatten(right, out);
            } else {
                out.push(expr);
            }
        }
        _ => out.push(expr),
    }
}

fn test(expr: &Value) -> Option<Test> {
    let map = expr.as_object()?;
    if map.len() != 1 {
        return None;
    }
    let (key, operands) = map.iter().next()?;
    let op = match key.as_str() {
        "<" => Op::Lt,
        "<=" => Op::Le,
        ">" => Op::Gt,
        ">=" => Op::Ge,
        "==" => Op::Eq,
        "!=" => Op::Ne,
        _ => return None,
    };
    let operand = operand(operands.get("left")?)?;
    let literal = match operands.get("right")?.get("Value")? {
        Value::Bool(b) => Literal::Bool(*b),
        Value::String(s) => Literal::String(s.clone()),
        Value::Number(n) => Literal::Long(n.as_i64()?),
        _ => return None,
    };
    let ordering = matches!(op, Op::Lt | Op::Le | Op::Gt | Op::Ge);
    if ordering && !matches!(literal, Literal::Long(_)) {
        return None;
    }
    Some(Test {
        operand,
        op,
        literal,
    })
}

fn operand(expr: &Value) -> Option<Operand> {
    let access = expr.get(".")?;
    let attr = access.get("attr")?.as_str()?.to_owned();
    match access.get("left")?.get("Var")?.as_str()? {
        "context" => Some(Operand::Context(attr)),
        "principal" => Some(Operand::Principal(attr)),
        "resource" => Some(Operand::Resource(attr)),
        _ => None,
    }
}

/// A slice's policies with their guards, and the policy sets of the survivors seen so far.
#[derive(Debug)]
pub(crate) struct Guarded {
    /// The distinct operands and tests of the slice.
    operands: Vec<Operand>,
    tests: Vec<(usize, Op, Literal)>,
    /// Per policy of the slice, in order: the policy and its tests (indexes in `tests`).
    policies: Vec<(Policy, Vec<usize>)>,
    all: Arc<PolicySet>,
    /// Survivor sets (a bit per policy) and their policy sets.
    sets: RwLock<HashMap<Vec<u64>, Arc<PolicySet>>>,
}

/// What one test said for this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Said {
    True,
    False,
    CannotTell,
}

impl Guarded {
    /// `None` when no policy of the slice has a guard: the slice is evaluated whole.
    pub(crate) fn new(policies: Vec<(Policy, Vec<Test>)>, all: Arc<PolicySet>) -> Option<Guarded> {
        if policies.iter().all(|(_, tests)| tests.is_empty()) {
            return None;
        }
        let mut operands: Vec<Operand> = Vec::new();
        let mut tests: Vec<(usize, Op, Literal)> = Vec::new();
        let mut guarded = Vec::with_capacity(policies.len());
        for (policy, guard) in policies {
            let mut indexes = Vec::with_capacity(guard.len());
            for t in guard {
                let o = match operands.iter().position(|o| *o == t.operand) {
                    Some(o) => o,
                    None => {
                        operands.push(t.operand);
                        operands.len() - 1
                    }
                };
                let entry = (o, t.op, t.literal);
                let i = match tests.iter().position(|x| *x == entry) {
                    Some(i) => i,
                    None => {
                        tests.push(entry);
                        tests.len() - 1
                    }
                };
                indexes.push(i);
            }
            guarded.push((policy, indexes));
        }
        Some(Guarded {
            operands,
            tests,
            policies: guarded,
            all,
            sets: RwLock::new(HashMap::new()),
        })
    }

    /// The policies of the slice that Cedar must evaluate for this request: those whose
    /// guard does not prove them false.
    pub(crate) fn for_request(&self, request: &Request, entities: &Entities) -> Arc<PolicySet> {
        let mut values: Vec<Option<Option<EvalResult>>> = vec![None; self.operands.len()];
        let mut said: Vec<Option<Said>> = vec![None; self.tests.len()];
        let mut survivors = vec![0u64; self.policies.len().div_ceil(64)];
        let mut dropped = false;
        for (p, (_, indexes)) in self.policies.iter().enumerate() {
            let mut keep = true;
            for &t in indexes {
                let outcome = match said.get(t).copied().flatten() {
                    Some(outcome) => outcome,
                    None => {
                        let outcome = self.run(t, &mut values, request, entities);
                        if let Some(slot) = said.get_mut(t) {
                            *slot = Some(outcome);
                        }
                        outcome
                    }
                };
                match outcome {
                    Said::True => continue,
                    Said::False => keep = false,
                    Said::CannotTell => {}
                }
                break;
            }
            if keep {
                if let Some(word) = survivors.get_mut(p / 64) {
                    *word |= 1 << (p % 64);
                }
            } else {
                dropped = true;
            }
        }
        if !dropped {
            return Arc::clone(&self.all);
        }
        if let Some(set) = self
            .sets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&survivors)
        {
            return Arc::clone(set);
        }
        let mut set = PolicySet::new();
        for (p, (policy, _)) in self.policies.iter().enumerate() {
            let kept = survivors
                .get(p / 64)
                .is_some_and(|word| word & (1 << (p % 64)) != 0);
            // Ids are unique in the slice, so adding cannot fail.
            if kept && set.add(policy.clone()).is_err() {
                return Arc::clone(&self.all);
            }
        }
        let set = Arc::new(set);
        let mut sets = self.sets.write().unwrap_or_else(|p| p.into_inner());
        if sets.len() < MAX_CACHED_SETS {
            sets.insert(survivors, Arc::clone(&set));
        }
        set
    }

    fn run(
        &self,
        t: usize,
        values: &mut [Option<Option<EvalResult>>],
        request: &Request,
        entities: &Entities,
    ) -> Said {
        let Some((o, op, literal)) = self.tests.get(t) else {
            return Said::CannotTell;
        };
        let value = match values.get(*o) {
            Some(Some(value)) => value.clone(),
            _ => {
                let value = self
                    .operands
                    .get(*o)
                    .and_then(|operand| fetch(operand, request, entities));
                if let Some(slot) = values.get_mut(*o) {
                    *slot = Some(value.clone());
                }
                value
            }
        };
        match value {
            Some(value) => compare(&value, *op, literal),
            None => Said::CannotTell,
        }
    }
}

/// The operand's value for this request, as Cedar would read it; `None` where Cedar would
/// error (or might: an entity that is not in the store).
fn fetch(operand: &Operand, request: &Request, entities: &Entities) -> Option<EvalResult> {
    let of_entity = |uid: Option<&EntityUid>, attr: &str| entities.get(uid?)?.attr(attr)?.ok();
    match operand {
        Operand::Context(attr) => request.context()?.get(attr),
        Operand::Principal(attr) => of_entity(request.principal(), attr),
        Operand::Resource(attr) => of_entity(request.resource(), attr),
    }
}

fn compare(value: &EvalResult, op: Op, literal: &Literal) -> Said {
    let holds = match (value, literal) {
        (EvalResult::Long(v), Literal::Long(l)) => match op {
            Op::Lt => v < l,
            Op::Le => v <= l,
            Op::Gt => v > l,
            Op::Ge => v >= l,
            Op::Eq => v == l,
            Op::Ne => v != l,
        },
        (EvalResult::String(v), Literal::String(l)) => match op {
            Op::Eq => v == l,
            Op::Ne => v != l,
            _ => return Said::CannotTell,
        },
        (EvalResult::Bool(v), Literal::Bool(l)) => match op {
            Op::Eq => v == l,
            Op::Ne => v != l,
            _ => return Said::CannotTell,
        },
        _ => return Said::CannotTell,
    };
    if holds { Said::True } else { Said::False }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, reason = "a test")]

    use super::*;

    fn guard(src: &str) -> Vec<Test> {
        let policy = Policy::parse(None, src).expect("parses");
        of_policy(&policy.to_json().expect("to json"))
    }

    #[test]
    fn leading_comparisons_are_the_guard_and_it_stops_at_anything_else() {
        let g = guard(
            r#"forbid(principal, action, resource) when { context.n > 5 && resource.risk >= 2 && context.t like "*.x" && principal.a == "b" };"#,
        );
        assert_eq!(g.len(), 2);
        assert_eq!(
            g.first().map(|t| &t.operand),
            Some(&Operand::Context("n".to_owned()))
        );
        let g = guard(
            r#"permit(principal, action, resource) when { principal.a == "b" && principal.ok == true };"#,
        );
        assert_eq!(g.len(), 2);
        // An ordering needs a Long literal; a nested attribute, an `unless`, a literal on
        // the left are not guards.
        for src in [
            r#"permit(principal, action, resource) when { context.s < "x" };"#,
            "permit(principal, action, resource) when { context.a.b > 1 };",
            "permit(principal, action, resource) unless { context.n > 1 };",
            "permit(principal, action, resource) when { 1 < context.n };",
            "permit(principal, action, resource) when { context.n + 1 > 1 };",
            "permit(principal, action, resource);",
        ] {
            assert!(guard(src).is_empty(), "{src}");
        }
    }
}

//! Rules indexed by scope, so a decision evaluates only the slice of the pack that can
//! apply to its request, in one Cedar evaluation.
//!
//! In the slices, every forbid is turned into a permit with the same id and conditions.
//! Cedar then reports *every* satisfied policy as a reason (a forbid would hide the
//! satisfied permits behind it), so one evaluation gives arbiter both the satisfied
//! forbids and the satisfied permits; errors are the same, since conditions are unchanged.
//!
//! Cedar evaluates every policy it is given; a policy whose scope does not match is false
//! without evaluating its conditions, so it can neither be satisfied nor error. Leaving
//! such policies out therefore gives exactly the answer of the whole set (the property
//! tests check this), at a cost that grows with the slice instead of the pack.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use cedar_policy::{
    ActionConstraint, Effect, Entities, EntityTypeName, EntityUid, Policy, PolicySet,
    PrincipalConstraint, Request, ResourceConstraint,
};

use crate::guard::{self, Guarded, Test};
use crate::needs::Needs;
use crate::rule::Rule;

/// The policies that can apply to one (action, principal type, resource type).
#[derive(Debug)]
pub(crate) struct Slice {
    /// Every policy of the slice, forbids turned into permits: Cedar's reasons are then
    /// all the satisfied policies.
    pub all: Arc<PolicySet>,
    /// The policies' guards, when any has one (see `guard`).
    guarded: Option<Guarded>,
    /// The rule ids in the slice: the rules in scope of its requests.
    pub ids: Arc<[String]>,
    /// The reserved context keys the slice's policies read.
    pub needs: Needs,
}

impl Slice {
    /// The policies of the slice Cedar must evaluate for this request: all of them but
    /// those a guard proves false (see `guard`).
    pub(crate) fn for_request(&self, request: &Request, entities: &Entities) -> Arc<PolicySet> {
        match &self.guarded {
            Some(guarded) => guarded.for_request(request, entities),
            None => Arc::clone(&self.all),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    action: EntityUid,
    principal: EntityTypeName,
    resource: EntityTypeName,
}

/// How many slices are kept; past it (only possible without a schema, with requests naming
/// ever new types) slices are built per request instead of cached.
const MAX_CACHED_SLICES: usize = 16_384;

#[derive(Debug)]
struct Scoped {
    /// The policy as evaluated: a forbid is turned into a permit.
    policy: Policy,
    needs: Needs,
    /// The leading comparisons of its condition.
    guard: Vec<Test>,
    principal: Option<EntityTypeName>,
    resource: Option<EntityTypeName>,
}

/// Why a rule cannot be indexed (a policy Cedar parsed but cannot convert).
#[derive(Debug, thiserror::Error)]
pub(crate) enum IndexError {
    /// The policy has no JSON form.
    #[error("rule `{rule}` cannot be indexed: {cause}")]
    ToJson {
        rule: String,
        cause: Box<cedar_policy::PolicyToJsonError>,
    },
    /// The permit made from it is not a policy.
    #[error("rule `{rule}` cannot be indexed: {cause}")]
    FromJson {
        rule: String,
        cause: Box<cedar_policy::PolicyFromJsonError>,
    },
}

/// The index, built when the pack loads.
#[derive(Debug)]
pub(crate) struct SliceIndex {
    scoped: Vec<Scoped>,
    any_action: Vec<usize>,
    by_action: HashMap<EntityUid, Vec<usize>>,
    cache: RwLock<HashMap<Key, Arc<Slice>>>,
}

impl SliceIndex {
    pub(crate) fn new(rules: &[Rule], policies: &PolicySet) -> Result<Self, IndexError> {
        let mut scoped = Vec::with_capacity(rules.len());
        let mut any_action = Vec::new();
        let mut by_action: HashMap<EntityUid, Vec<usize>> = HashMap::new();
        for rule in rules {
            let Some(policy) = policies.policy(&cedar_policy::PolicyId::new(&rule.id)) else {
                continue;
            };
            let i = scoped.len();
            match policy.action_constraint() {
                ActionConstraint::Any => any_action.push(i),
                ActionConstraint::Eq(a) => by_action.entry(a).or_default().push(i),
                ActionConstraint::In(list) => {
                    for a in list {
                        let at = by_action.entry(a).or_default();
                        if at.last() != Some(&i) {
                            at.push(i);
                        }
                    }
                }
            }
            let principal = match policy.principal_constraint() {
                PrincipalConstraint::Eq(uid) => Some(uid.type_name().clone()),
                PrincipalConstraint::Is(ty) | PrincipalConstraint::IsIn(ty, _) => Some(ty),
                PrincipalConstraint::Any | PrincipalConstraint::In(_) => None,
            };
            let resource = match policy.resource_constraint() {
                ResourceConstraint::Eq(uid) => Some(uid.type_name().clone()),
                ResourceConstraint::Is(ty) | ResourceConstraint::IsIn(ty, _) => Some(ty),
                ResourceConstraint::Any | ResourceConstraint::In(_) => None,
            };
            let est = policy.to_json().map_err(|cause| IndexError::ToJson {
                rule: rule.id.clone(),
                cause: Box::new(cause),
            })?;
            scoped.push(Scoped {
                needs: Needs::of_policy(&est),
                guard: guard::of_policy(&est),
                policy: as_permit(policy)?,
                principal,
                resource,
            });
        }
        Ok(Self {
            scoped,
            any_action,
            by_action,
            cache: RwLock::new(HashMap::new()),
        })
    }

    /// The slice for a request, built once per (action, principal type, resource type).
    pub(crate) fn slice(
        &self,
        action: &EntityUid,
        principal: &EntityTypeName,
        resource: &EntityTypeName,
        entities: &Entities,
    ) -> Arc<Slice> {
        let key = Key {
            action: action.clone(),
            principal: principal.clone(),
            resource: resource.clone(),
        };
        if let Some(hit) = self
            .cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Arc::clone(hit);
        }
        let slice = Arc::new(self.build(&key, entities));
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        if cache.len() < MAX_CACHED_SLICES {
            cache.insert(key, Arc::clone(&slice));
        }
        slice
    }

    fn build(&self, key: &Key, entities: &Entities) -> Slice {
        let mut picked: Vec<usize> = self.any_action.clone();
        for a in &lineage_of(&key.action, entities) {
            if let Some(rules) = self.by_action.get(a) {
                picked.extend(rules);
            }
        }
        picked.sort_unstable();
        picked.dedup();
        let mut all = PolicySet::new();
        let mut guards = Vec::new();
        let mut ids = Vec::new();
        let mut needs = Needs::default();
        for s in picked.iter().filter_map(|i| self.scoped.get(*i)) {
            let fits = |want: &Option<EntityTypeName>, got: &EntityTypeName| {
                want.as_ref().is_none_or(|w| w == got)
            };
            if !fits(&s.principal, &key.principal) || !fits(&s.resource, &key.resource) {
                continue;
            }
            // Ids are unique in the pack, so adding cannot fail.
            if all.add(s.policy.clone()).is_ok() {
                guards.push((s.policy.clone(), s.guard.clone()));
                ids.push(s.policy.id().to_string());
                needs = needs.union(s.needs);
            }
        }
        let all = Arc::new(all);
        Slice {
            guarded: Guarded::new(guards, Arc::clone(&all)),
            all,
            ids: ids.into(),
            needs,
        }
    }
}

/// The action itself and every group it is in, transitively.
fn lineage_of(action: &EntityUid, entities: &Entities) -> Vec<EntityUid> {
    let mut out = vec![action.clone()];
    if let Some(ancestors) = entities.ancestors(action) {
        out.extend(ancestors.cloned());
    }
    out
}

/// The same policy with effect `permit`.
///
/// Through Cedar's policy syntax tree, whose conversions are linear in the policy's size;
/// its JSON form is the fallback. Reading the JSON form back is quadratic in an
/// expression's depth (measured, debug build: a 500-term `+` chain takes 3.2 s and
/// hundreds of MB that way, 10 ms through the tree).
fn as_permit(policy: &Policy) -> Result<Policy, IndexError> {
    if policy.effect() == Effect::Permit {
        return Ok(policy.clone());
    }
    if let Some(permit) = as_permit_by_tree(policy) {
        return Ok(permit);
    }
    let mut json = policy.to_json().map_err(|cause| IndexError::ToJson {
        rule: policy.id().to_string(),
        cause: Box::new(cause),
    })?;
    if let Some(effect) = json.get_mut("effect") {
        *effect = serde_json::Value::String("permit".to_owned());
    }
    Policy::from_json(Some(policy.id().clone()), json).map_err(|cause| IndexError::FromJson {
        rule: policy.id().to_string(),
        cause: Box::new(cause),
    })
}

/// [`as_permit`] through the policy syntax tree; `None` when the tree cannot express the
/// policy (the caller falls back to the JSON form).
fn as_permit_by_tree(policy: &Policy) -> Option<Policy> {
    use cedar_policy::pst;
    let pst::Policy::Static(fixed) = policy.to_pst().ok()? else {
        return None;
    };
    let mut body = fixed.body().clone();
    body.effect = pst::Effect::Permit;
    let permit =
        Policy::from_pst(pst::Policy::Static(pst::StaticPolicy::try_from(body).ok()?)).ok()?;
    (permit.id() == policy.id()).then_some(permit)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tree path covers what policies use, keeps the id and the annotations, and
    /// changes the effect only.
    #[test]
    fn a_forbid_becomes_the_same_permit_through_the_tree() {
        let text = r#"@id("r") @mode("enforce")
            forbid(principal is Agent in Team::"ops", action in [Action::"a", Action::"b"], resource)
            when { context has x.y && context.x.y like "*.internal" && ip("10.0.0.1").isInRange(ip("10.0.0.0/8")) }
            unless { if principal.level > 3 then [1, 2].contains(principal.level) else {a: 1}.a == 1 };"#;
        let forbid = Policy::parse(Some(cedar_policy::PolicyId::new("r")), text).expect("parses");
        let permit = as_permit_by_tree(&forbid).expect("the tree expresses it");
        assert_eq!(permit.effect(), Effect::Permit);
        assert_eq!(permit.id(), forbid.id());
        assert_eq!(permit.annotation("mode"), Some("enforce"));
        let mut expected = forbid.to_json().expect("json");
        expected["effect"] = serde_json::json!("permit");
        assert_eq!(permit.to_json().expect("json"), expected);
    }
}

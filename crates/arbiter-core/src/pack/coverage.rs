//! Which rules control the requests a principal can make with an action on a type of
//! resource, read from the policies' scopes and the schema alone: what chain analysis
//! (`arbiter chains`) builds each step's control level from.
//!
//! A forbid whose scope holds for the principal, the action and some resource of the
//! type is in scope of those requests. It covers all of them when it has no condition,
//! holds for every resource of the type and denies (`deny` or `revoke`); otherwise it
//! covers some of them, and [`Partial`] says why. The principal type's default-deny scope
//! covers the requests no permit allows: all of them when no permit can match, none when
//! a permit without a condition allows every one, some of them otherwise. Everything is
//! decided statically, so it errs toward "some": a condition that is always true in
//! practice still counts as a condition.

use cedar_policy::{EntityTypeName, EntityUid, Policy, PolicyId};

use super::Pack;
use super::always::{every_resource_of, some_resource_of};
use crate::rule::{Effect, Kind, Mode, RuleRef};

/// Why a rule or scope covers only some of the requests in its scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Partial {
    /// It has a `when` or `unless` condition.
    Condition,
    /// Its resource scope names particular resources, not every one of the type.
    Resources,
    /// It throttles: requests under its limit pass.
    Throttle,
    /// A default-deny scope: these permits allow some of the requests, which then pass.
    Permitted(Vec<String>),
}

impl Partial {
    /// In words, for reports.
    pub fn describe(&self) -> String {
        match self {
            Partial::Condition => "only when its condition holds".to_owned(),
            Partial::Resources => "only on the resources its scope names".to_owned(),
            Partial::Throttle => "only beyond its rate limit".to_owned(),
            Partial::Permitted(permits) => format!(
                "except what {} allow{}",
                permits
                    .iter()
                    .map(|p| format!("`{p}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                if permits.len() == 1 { "s" } else { "" }
            ),
        }
    }
}

/// A rule or default-deny scope in scope of a principal's requests of one shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cover {
    /// The rule or scope.
    pub rule: RuleRef,
    /// Its mode in the pack.
    pub mode: Mode,
    /// `None` when it denies every such request once enforced; otherwise why only some.
    pub partial: Option<Partial>,
}

impl Pack {
    /// The schema's actions a step names: the action with that bare id, or every action
    /// in the group with that id, transitively; sorted.
    pub fn actions_in(&self, step: &str) -> Vec<EntityUid> {
        let mut actions: Vec<EntityUid> = self
            .action_groups
            .iter()
            .filter(|(_, lineage)| lineage.iter().any(|id| id == step))
            .map(|(action, _)| action.clone())
            .collect();
        actions.sort_by_key(ToString::to_string);
        actions
    }

    /// The principal types that can make requests: those the schema's actions apply to,
    /// and those `[default_deny]` names. Without a schema, none is known.
    pub fn principal_types(&self) -> Vec<String> {
        self.default_deny_scopes().into_keys().collect()
    }

    /// The resource types `principal_type` can use `action` on: `Some` of the schema's
    /// list (empty when the action does not apply to that principal type), `None` without
    /// a schema (any resource).
    pub fn resource_types(
        &self,
        principal_type: &EntityTypeName,
        action: &EntityUid,
    ) -> Option<Vec<EntityTypeName>> {
        let schema = self.schema.as_ref()?;
        let applies = schema
            .principals_for_action(action)
            .is_some_and(|mut types| types.any(|t| t == principal_type));
        if !applies {
            return Some(Vec::new());
        }
        let mut types: Vec<EntityTypeName> = schema
            .resources_for_action(action)
            .map(|types| types.cloned().collect())
            .unwrap_or_default();
        types.sort_by_key(ToString::to_string);
        types.dedup();
        Some(types)
    }

    /// Every forbid in scope of `principal`'s `action` requests on resources of
    /// `resource_type` (`None`: any resource), and the principal type's default-deny
    /// scope when it covers any of them; in the pack's order, the scope last.
    pub fn covers(
        &self,
        principal: &EntityUid,
        action: &EntityUid,
        resource_type: Option<&EntityTypeName>,
    ) -> Vec<Cover> {
        let policy = |id: &str| self.policies().policy(&PolicyId::new(id));
        let every = |p: &Policy| {
            resource_type.is_none_or(|ty| every_resource_of(p, ty))
                && (resource_type.is_some()
                    || matches!(
                        p.resource_constraint(),
                        cedar_policy::ResourceConstraint::Any
                    ))
        };
        let some = |p: &Policy| resource_type.is_none_or(|ty| some_resource_of(p, ty));
        let mut covers: Vec<Cover> = self
            .rules()
            .iter()
            .filter(|rule| rule.kind == Kind::Forbid)
            .filter_map(|rule| {
                let mode = rule.mode?;
                let p = policy(&rule.id)?;
                if !(self.principal_matches(p, principal)
                    && self.action_matches(p, action)
                    && some(p))
                {
                    return None;
                }
                let partial = if rule.effect == Some(Effect::Throttle) {
                    Some(Partial::Throttle)
                } else if p.has_non_scope_constraint() {
                    Some(Partial::Condition)
                } else if !every(p) {
                    Some(Partial::Resources)
                } else {
                    None
                };
                Some(Cover {
                    rule: RuleRef::Rule(rule.id.clone()),
                    mode,
                    partial,
                })
            })
            .collect();
        let permits: Vec<&Policy> = self
            .rules()
            .iter()
            .filter(|rule| rule.kind == Kind::Permit)
            .filter_map(|rule| policy(&rule.id))
            .filter(|p| self.principal_matches(p, principal) && self.action_matches(p, action))
            .filter(|p| some(p))
            .collect();
        let opens_all = permits
            .iter()
            .any(|p| !p.has_non_scope_constraint() && every(p));
        if !opens_all {
            let (scope, mode) = self.default_deny_scope(principal.type_name());
            let partial = (!permits.is_empty())
                .then(|| Partial::Permitted(permits.iter().map(|p| p.id().to_string()).collect()));
            covers.push(Cover {
                rule: scope,
                mode,
                partial,
            });
        }
        covers
    }

    /// Whether an enforced forbid (deny, revoke or throttle) has this request in its
    /// scope, whatever its condition: the request was under enforcement's eye.
    /// `resource` `None`: the resource was not read, which is right only when no enforced
    /// forbid's scope names resources ([`Pack::enforced_forbids_scope_resources`]); a
    /// forbid whose scope does is then not counted.
    pub fn enforced_forbid_in_scope(
        &self,
        principal: &EntityUid,
        action: &EntityUid,
        resource: Option<&EntityUid>,
    ) -> bool {
        self.rules()
            .iter()
            .filter(|rule| rule.kind == Kind::Forbid && rule.mode == Some(Mode::Enforce))
            .filter_map(|rule| self.policies().policy(&PolicyId::new(rule.id.as_str())))
            .any(|p| {
                self.principal_matches(p, principal)
                    && self.action_matches(p, action)
                    && match resource {
                        Some(resource) => self.resource_matches(p, resource),
                        None => matches!(
                            p.resource_constraint(),
                            cedar_policy::ResourceConstraint::Any
                        ),
                    }
            })
    }

    /// Whether an enforced forbid's scope names resources (`==`, `in`, `is`): only then
    /// does [`Pack::enforced_forbid_in_scope`] need a request's resource, and a reader of
    /// the log need to read it.
    pub fn enforced_forbids_scope_resources(&self) -> bool {
        self.rules()
            .iter()
            .filter(|rule| rule.kind == Kind::Forbid && rule.mode == Some(Mode::Enforce))
            .filter_map(|rule| self.policies().policy(&PolicyId::new(rule.id.as_str())))
            .any(|p| {
                !matches!(
                    p.resource_constraint(),
                    cedar_policy::ResourceConstraint::Any
                )
            })
    }

    fn resource_matches(&self, policy: &Policy, resource: &EntityUid) -> bool {
        use cedar_policy::ResourceConstraint;
        let within = |group: &EntityUid| group == resource || self.is_ancestor(group, resource);
        match policy.resource_constraint() {
            ResourceConstraint::Any => true,
            ResourceConstraint::Eq(uid) => uid == *resource,
            ResourceConstraint::In(group) => within(&group),
            ResourceConstraint::Is(ty) => ty == *resource.type_name(),
            ResourceConstraint::IsIn(ty, group) => ty == *resource.type_name() && within(&group),
        }
    }
}

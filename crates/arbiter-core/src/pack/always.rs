//! Which enforced rule or default-deny scope denies a principal an action on every
//! resource of a type, whatever the context: what the MCP gateway hides from a tool
//! list. Read from the policies' scopes alone, so the answer errs toward "not always":
//! a rule with a condition, or on particular resources, never counts, and the default-deny
//! scope counts only when no permit could match the principal and the action at all.

use cedar_policy::{
    ActionConstraint, EntityTypeName, EntityUid, Policy, PolicyId, PrincipalConstraint,
    ResourceConstraint,
};

use super::Pack;
use crate::rule::{Effect, Kind, Mode, RuleRef};

impl Pack {
    /// The enforced rule, or the enforced default-deny scope, that denies `principal`
    /// every `action` on a resource of type `resource_type` in every context; `None`
    /// when some request of that shape might be allowed. A throttle never counts (it
    /// lets calls through up to its limit).
    pub fn always_denies(
        &self,
        principal: &EntityUid,
        action: &EntityUid,
        resource_type: &EntityTypeName,
    ) -> Option<RuleRef> {
        self.would_always_deny(principal, action, resource_type)
            .filter(|(_, mode)| *mode == Mode::Enforce)
            .map(|(rule, _)| rule)
    }

    /// [`Pack::always_denies`] in any mode: the rule or default-deny scope that denies,
    /// or would deny once enforced, every such request, with its mode. An enforced one
    /// is preferred, then `warn`, then `audit`: what the tool list hides, and what it
    /// would hide.
    pub fn would_always_deny(
        &self,
        principal: &EntityUid,
        action: &EntityUid,
        resource_type: &EntityTypeName,
    ) -> Option<(RuleRef, Mode)> {
        let policy = |id: &str| self.policies().policy(&PolicyId::new(id));
        let mut denying: Vec<(RuleRef, Mode)> = self
            .rules()
            .iter()
            .filter_map(|rule| Some((rule, rule.mode?)))
            .filter(|(rule, _)| {
                rule.kind == Kind::Forbid
                    && matches!(rule.effect, Some(Effect::Deny | Effect::Revoke))
                    && policy(&rule.id).is_some_and(|p| {
                        !p.has_non_scope_constraint()
                            && self.principal_matches(p, principal)
                            && self.action_matches(p, action)
                            && every_resource_of(p, resource_type)
                    })
            })
            .map(|(rule, mode)| (RuleRef::Rule(rule.id.clone()), mode))
            .collect();
        let (scope, mode) = self.default_deny_scope(principal.type_name());
        let no_permit_can_match = !self.rules().iter().any(|rule| {
            rule.kind == Kind::Permit
                && policy(&rule.id).is_some_and(|p| {
                    self.principal_matches(p, principal)
                        && self.action_matches(p, action)
                        && some_resource_of(p, resource_type)
                })
        });
        if no_permit_can_match {
            denying.push((scope, mode));
        }
        // Stable: among equals, the first rule in the pack's order.
        denying.sort_by_key(|(_, mode)| std::cmp::Reverse(strength(*mode)));
        denying.into_iter().next()
    }

    /// Whether the policy's principal scope holds for `principal`.
    pub(super) fn principal_matches(&self, policy: &Policy, principal: &EntityUid) -> bool {
        let within = |group: &EntityUid| group == principal || self.is_ancestor(group, principal);
        match policy.principal_constraint() {
            PrincipalConstraint::Any => true,
            PrincipalConstraint::Eq(uid) => uid == *principal,
            PrincipalConstraint::In(group) => within(&group),
            PrincipalConstraint::Is(ty) => ty == *principal.type_name(),
            PrincipalConstraint::IsIn(ty, group) => ty == *principal.type_name() && within(&group),
        }
    }

    /// Whether the policy's action scope holds for `action`.
    pub(super) fn action_matches(&self, policy: &Policy, action: &EntityUid) -> bool {
        match policy.action_constraint() {
            ActionConstraint::Any => true,
            ActionConstraint::Eq(uid) => uid == *action,
            ActionConstraint::In(groups) => groups
                .iter()
                .any(|g| g == action || self.is_ancestor(g, action)),
        }
    }

    pub(super) fn is_ancestor(&self, group: &EntityUid, member: &EntityUid) -> bool {
        self.entities()
            .ancestors(member)
            .is_some_and(|mut ancestors| ancestors.any(|a| a == group))
    }
}

/// Whether the policy's resource scope holds for every resource of the type.
pub(super) fn every_resource_of(policy: &Policy, ty: &EntityTypeName) -> bool {
    match policy.resource_constraint() {
        ResourceConstraint::Any => true,
        ResourceConstraint::Is(is) => is == *ty,
        ResourceConstraint::Eq(_) | ResourceConstraint::In(_) | ResourceConstraint::IsIn(..) => {
            false
        }
    }
}

/// Whether the policy's resource scope may hold for some resource of the type.
pub(super) fn some_resource_of(policy: &Policy, ty: &EntityTypeName) -> bool {
    match policy.resource_constraint() {
        ResourceConstraint::Is(is) | ResourceConstraint::IsIn(is, _) => is == *ty,
        ResourceConstraint::Eq(uid) => uid.type_name() == ty,
        // A resource of the type may be a member of any group.
        ResourceConstraint::Any | ResourceConstraint::In(_) => true,
    }
}

/// How close a mode is to enforcement.
fn strength(mode: Mode) -> u8 {
    match mode {
        Mode::Enforce => 2,
        Mode::Warn => 1,
        Mode::Audit => 0,
    }
}

//! The decision as PEPs receive it (DESIGN §3, "Response"): the same object over HTTP and
//! from `arbiter check --json`.

use serde::{Deserialize, Serialize};

use crate::credential::Revoked;
use crate::rule::{Effect, OnError, RuleRef};

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The action may go ahead.
    Allow,
    /// The action must not go ahead.
    Deny,
}

/// A fired `warn` rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warning {
    /// The rule (or `default-deny:<Type>`).
    pub rule: RuleRef,
    /// What the caller can show: the rule's `@reason`.
    pub message: String,
    /// What enforcing the rule would do, for the evidence (not part of the answer).
    #[serde(skip, default = "would_deny")]
    pub would: Effect,
}

fn would_deny() -> Effect {
    Effect::Deny
}

/// A fired `audit` rule: what it would have done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// The rule (or `default-deny:<Type>`).
    pub rule: RuleRef,
    /// What enforcing it would have done.
    pub would: Effect,
}

/// A policy whose evaluation errored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvalError {
    /// The rule.
    pub rule: String,
    /// Cedar's message.
    pub message: String,
    /// How the error counted: `deny` (the forbid counted as satisfied) or `skip`.
    pub handled_as: OnError,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Allow or deny.
    pub decision: Outcome,
    /// The strongest effect of the enforced rules that fired; `null` on allow.
    pub effect: Option<Effect>,
    /// Seconds until a throttled caller may retry.
    pub retry_after_s: Option<u64>,
    /// Enforced rules (or the default-deny scope) that decided a deny.
    pub enforced: Vec<RuleRef>,
    /// Fired `warn` rules.
    pub warnings: Vec<Warning>,
    /// Fired `audit` rules, with what they would have done.
    pub audit: Vec<AuditEntry>,
    /// Policies whose evaluation errored.
    pub errors: Vec<EvalError>,
    /// Why a deny: `credential:<why>`, `session:terminated`, or the deciding rule's reason.
    pub reason: Option<String>,
    /// A sortable id for this decision (ULID).
    pub decision_id: String,
    /// The pack version the decision was made under.
    pub policy_version: String,
    /// When the decision was made: the time it was decided at (not part of the answer;
    /// the id carries it to the millisecond).
    #[serde(skip)]
    pub time: jiff::Timestamp,
    /// The `jti` of the credential that was verified for it, for the decision log (not
    /// part of the answer).
    #[serde(skip)]
    pub credential_id: Option<String>,
    /// What the verified credential established (its claims, never the token), for the
    /// decision log, so that a replay sees the credential the decision saw (not part of
    /// the answer).
    #[serde(skip)]
    pub credential: Option<crate::credential::VerifiedCredential>,
    /// The session the decision was made in: the request's, or the one its credential
    /// is bound to. For the decision log (not part of the answer).
    #[serde(skip)]
    pub session: Option<String>,
    /// The rules in scope of the request (the slice it evaluated), for the evidence
    /// readiness counts (not part of the answer).
    #[serde(skip)]
    pub in_scope: Option<std::sync::Arc<[String]>>,
    /// The default-deny scope when it was consulted, that is when no enforced rule
    /// decided first (not part of the answer).
    #[serde(skip)]
    pub scope: Option<RuleRef>,
    /// Whether the (principal, action) pair is outside the frozen baseline (`None`
    /// while none is frozen), for the decision log (not part of the answer).
    #[serde(skip)]
    pub novel: Option<bool>,
    /// What an enforced `revoke` revoked: in force in this process already; the caller
    /// that owns a store makes it durable (not part of the answer).
    #[serde(skip)]
    pub revoked: Vec<Revocation>,
}

/// A revocation made by an enforced `revoke` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// What is revoked.
    pub revoked: Revoked,
    /// The rule whose effect it is.
    pub rule: String,
    /// When (the decision's time).
    pub at: jiff::Timestamp,
}

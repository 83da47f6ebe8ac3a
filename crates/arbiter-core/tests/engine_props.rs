//! Property tests of the engine's invariants on generated packs and requests:
//! - every rule and scope in audit: always `allow`, and `audit` is exactly what fired;
//! - moving a rule from audit to enforce never turns a deny into an allow;
//! - every rule and scope in enforce with errors skipped: arbiter decides as raw Cedar;
//! - the sliced evaluation answers exactly as Cedar on the whole policy set.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

use std::collections::BTreeSet;
use std::fs;
use std::sync::Arc;

use arbiter_core::clock::ManualClock;
use arbiter_core::request::{DecisionRequest, EntityRef};
use arbiter_core::response::Outcome;
use arbiter_core::rule::Effect as ArbiterEffect;
use arbiter_core::{Engine, Pack};
use cedar_policy::{Authorizer, Decision as CedarDecision, PolicyId, PolicySet};
use proptest::prelude::*;
use proptest::sample::select;

const SCHEMA: &str = r#"
entity Group;
entity Folder;
entity User in [Group] { level: Long };
entity Bot in [Group] { level: Long };
entity Doc in [Folder] { secret: Bool };
action mutate;
action read, share appliesTo { principal: [User, Bot], resource: [Doc, Folder], context: { flag: Bool, n: Long } };
action write, delete in [mutate] appliesTo { principal: [User, Bot], resource: [Doc, Folder], context: { flag: Bool, n: Long } };
"#;

const ENTITIES: &str = r#"[
 {"uid": {"type": "Group", "id": "g1"}, "attrs": {}, "parents": []},
 {"uid": {"type": "Folder", "id": "f1"}, "attrs": {}, "parents": []},
 {"uid": {"type": "User", "id": "u1"}, "attrs": {"level": 5}, "parents": [{"type": "Group", "id": "g1"}]},
 {"uid": {"type": "User", "id": "u2"}, "attrs": {"level": 1}, "parents": []},
 {"uid": {"type": "Bot", "id": "b1"}, "attrs": {"level": 9}, "parents": [{"type": "Group", "id": "g1"}]},
 {"uid": {"type": "Doc", "id": "d1"}, "attrs": {"secret": true}, "parents": [{"type": "Folder", "id": "f1"}]},
 {"uid": {"type": "Doc", "id": "d2"}, "attrs": {"secret": false}, "parents": []}
]"#;

const PRINCIPALS: [&str; 6] = [
    "principal",
    "principal == User::\"u1\"",
    "principal is User",
    "principal is Bot",
    "principal in Group::\"g1\"",
    "principal is User in Group::\"g1\"",
];
const ACTIONS: [&str; 5] = [
    "action",
    "action == Action::\"read\"",
    "action == Action::\"write\"",
    "action in [Action::\"mutate\"]",
    "action in [Action::\"read\", Action::\"share\"]",
];
const RESOURCES: [&str; 5] = [
    "resource",
    "resource is Doc",
    "resource is Folder",
    "resource == Doc::\"d1\"",
    "resource in Folder::\"f1\"",
];
/// Conditions, some of which error: `principal.level` for a principal missing from the
/// store, and an overflow when `n` is large. The last ones lead with comparisons, which
/// the engine checks itself before Cedar evaluates the policy (`guard`).
const CONDITIONS: [&str; 11] = [
    " when { context.session.actions == 0 && context.now > datetime(\"2026-01-01\") }",
    "",
    " when { context.flag }",
    " when { context.n > 3 }",
    " when { principal.level > 3 }",
    " when { context.n * 4611686018427387904 > 0 }",
    " unless { context.n > principal.level }",
    " when { context.n < 5 && principal.level >= 2 && context.n * 4611686018427387904 > 0 }",
    " when { context.flag == true && context.n != 2 && principal.level > 3 }",
    " when { principal.level == 5 && context.n > principal.level }",
    " when { context.n != 7 && context.flag == false } when { principal.level < 9 }",
];

#[derive(Debug, Clone)]
struct GenRule {
    forbid: bool,
    principal: &'static str,
    action: &'static str,
    resource: &'static str,
    condition: &'static str,
    mode: &'static str,
    effect: &'static str,
    on_error: &'static str,
}

fn rule() -> impl Strategy<Value = GenRule> {
    (
        any::<bool>(),
        select(&PRINCIPALS[..]),
        select(&ACTIONS[..]),
        select(&RESOURCES[..]),
        select(&CONDITIONS[..]),
        select(&["audit", "warn", "enforce"][..]),
        select(&["deny", "revoke"][..]),
        select(&["deny", "skip"][..]),
    )
        .prop_map(
            |(forbid, principal, action, resource, condition, mode, effect, on_error)| GenRule {
                forbid,
                principal,
                action,
                resource,
                condition,
                mode,
                effect,
                on_error,
            },
        )
}

#[derive(Debug, Clone)]
struct GenRequest {
    principal: &'static str,
    action: &'static str,
    resource: &'static str,
    flag: bool,
    n: i64,
}

fn request() -> impl Strategy<Value = GenRequest> {
    (
        select(
            &[
                "User::\"u1\"",
                "User::\"u2\"",
                "Bot::\"b1\"",
                "User::\"ghost\"",
            ][..],
        ),
        select(
            &[
                "Action::\"read\"",
                "Action::\"write\"",
                "Action::\"delete\"",
                "Action::\"share\"",
            ][..],
        ),
        select(
            &[
                "Doc::\"d1\"",
                "Doc::\"d2\"",
                "Folder::\"f1\"",
                "Doc::\"nowhere\"",
            ][..],
        ),
        any::<bool>(),
        select(&[0_i64, 2, 5, 7][..]),
    )
        .prop_map(|(principal, action, resource, flag, n)| GenRequest {
            principal,
            action,
            resource,
            flag,
            n,
        })
}

/// How the rules' modes are written.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Modes {
    /// As generated.
    Mixed,
    /// No `@mode`: everything takes `[defaults]`.
    Defaults,
}

fn write_pack(
    rules: &[GenRule],
    modes: Modes,
    config: &str,
    skip_errors: bool,
) -> (tempfile::TempDir, Arc<Pack>) {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("policies")).unwrap();
    let mut text = String::new();
    for (i, r) in rules.iter().enumerate() {
        text.push_str(&format!("@id(\"r{i}\")\n"));
        if r.forbid {
            if modes == Modes::Mixed {
                text.push_str(&format!("@mode(\"{}\")\n", r.mode));
            }
            text.push_str(&format!("@effect(\"{}\")\n", r.effect));
            let on_error = if skip_errors { "skip" } else { r.on_error };
            text.push_str(&format!("@on_error(\"{on_error}\")\n"));
        }
        let effect = if r.forbid { "forbid" } else { "permit" };
        text.push_str(&format!(
            "{effect}({}, {}, {}){};\n\n",
            r.principal, r.action, r.resource, r.condition
        ));
    }
    fs::write(dir.path().join("policies/rules.cedar"), text).unwrap();
    fs::write(dir.path().join("schema.cedarschema"), SCHEMA).unwrap();
    fs::write(dir.path().join("entities.json"), ENTITIES).unwrap();
    // A generated pack may have no rule at all: that is meant here (default-deny decides).
    let config = if config.contains("[defaults]") {
        config.replacen("[defaults]\n", "[defaults]\nallow_no_policies = true\n", 1)
    } else {
        format!("[defaults]\nallow_no_policies = true\n{config}")
    };
    fs::write(dir.path().join("arbiter.toml"), config).unwrap();
    let pack = Pack::load(dir.path()).unwrap_or_else(|p| panic!("generated pack loads: {p}"));
    (dir, Arc::new(pack))
}

fn engine(pack: &Arc<Pack>) -> Engine {
    let clock = Arc::new(ManualClock::new("2026-11-26T12:00:00Z".parse().unwrap()));
    Engine::new(Arc::clone(pack)).with_clock(clock)
}

fn to_request(r: &GenRequest) -> DecisionRequest {
    DecisionRequest {
        principal: EntityRef::Text(r.principal.to_owned()),
        action: EntityRef::Text(r.action.to_owned()),
        resource: EntityRef::Text(r.resource.to_owned()),
        context: Some(serde_json::json!({"flag": r.flag, "n": r.n})),
        session: None,
        credential: None,
        entities: None,
        time: None,
    }
}

/// Each policy on its own, as an oracle independent of arbiter's slicing: (satisfied,
/// errored) per rule id.
fn each_policy(pack: &Pack, engine: &Engine, req: &DecisionRequest) -> Vec<(String, bool, bool)> {
    let explanation = engine.explain(req).unwrap();
    pack.rules()
        .iter()
        .map(|rule| {
            let policy = pack
                .policies()
                .policy(&PolicyId::new(&rule.id))
                .unwrap()
                .clone();
            let set = PolicySet::from_policies([policy]).unwrap();
            let answer =
                Authorizer::new().is_authorized(&explanation.request, &set, &explanation.entities);
            let satisfied = answer.diagnostics().reason().next().is_some();
            let errored = answer.diagnostics().errors().next().is_some();
            (rule.id.clone(), satisfied, errored)
        })
        .collect()
}

const AUDIT_EVERYTHING: &str = "[defaults]\nmode = \"audit\"\n[default_deny]\nmode = \"audit\"\n";
const ENFORCE_EVERYTHING: &str =
    "[defaults]\nmode = \"enforce\"\non_error = \"skip\"\n[default_deny]\nmode = \"enforce\"\n";

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn in_audit_everything_is_allowed_and_audit_lists_what_fired(
        rules in prop::collection::vec(rule(), 0..10),
        requests in prop::collection::vec(request(), 1..8),
    ) {
        let (_dir, pack) = write_pack(&rules, Modes::Defaults, AUDIT_EVERYTHING, false);
        let engine = engine(&pack);
        for r in &requests {
            let req = to_request(r);
            let decision = engine.decide(&req).unwrap();
            prop_assert_eq!(decision.decision, Outcome::Allow);
            prop_assert!(decision.enforced.is_empty());
            let mut expected = BTreeSet::new();
            let mut permitted = false;
            for (id, satisfied, errored) in each_policy(&pack, &engine, &req) {
                let rule = pack.rule(&id).unwrap();
                let on_error_deny = rule.on_error == arbiter_core::rule::OnError::Deny;
                match rule.kind {
                    arbiter_core::rule::Kind::Forbid if satisfied || (errored && on_error_deny) => {
                        expected.insert((id, rule.effect.unwrap()));
                    }
                    arbiter_core::rule::Kind::Permit if satisfied => permitted = true,
                    _ => {}
                }
            }
            if !permitted {
                let ty = r.principal.split("::").next().unwrap();
                expected.insert((format!("default-deny:{ty}"), ArbiterEffect::Deny));
            }
            let audited: BTreeSet<_> = decision.audit.iter().map(|a| (a.rule.to_string(), a.would)).collect();
            prop_assert_eq!(audited, expected);
        }
    }

    #[test]
    fn promoting_a_rule_never_turns_a_deny_into_an_allow(
        rules in prop::collection::vec(rule(), 1..10),
        promote in any::<prop::sample::Index>(),
        scope in select(&["audit", "warn", "enforce"][..]),
        requests in prop::collection::vec(request(), 1..8),
    ) {
        let config = format!("[default_deny]\nmode = \"{scope}\"\n");
        let (_a, before) = write_pack(&rules, Modes::Mixed, &config, false);
        let mut promoted = rules.clone();
        let k = promote.index(promoted.len());
        promoted[k].mode = "enforce";
        let (_b, after) = write_pack(&promoted, Modes::Mixed, &config, false);
        let (e1, e2) = (engine(&before), engine(&after));
        for r in &requests {
            let req = to_request(r);
            let d1 = e1.decide(&req).unwrap();
            let d2 = e2.decide(&req).unwrap();
            if d1.decision == Outcome::Deny {
                prop_assert_eq!(d2.decision, Outcome::Deny, "promoting r{} allowed {:?}", k, r);
            }
        }
    }

    #[test]
    fn fully_enforced_with_errors_skipped_arbiter_is_cedar(
        rules in prop::collection::vec(rule(), 0..12),
        requests in prop::collection::vec(request(), 1..8),
    ) {
        let (_dir, pack) = write_pack(&rules, Modes::Defaults, ENFORCE_EVERYTHING, true);
        let engine = engine(&pack);
        for r in &requests {
            let req = to_request(r);
            let explanation = engine.explain(&req).unwrap();
            let cedar = Authorizer::new().is_authorized(&explanation.request, pack.policies(), &explanation.entities);
            let decision = engine.decide(&req).unwrap();
            let cedar_allows = cedar.decision() == CedarDecision::Allow;
            prop_assert_eq!(decision.decision == Outcome::Allow, cedar_allows);
            let reasons: BTreeSet<String> = cedar.diagnostics().reason().map(ToString::to_string).collect();
            let enforced: BTreeSet<String> = decision.enforced.iter().map(ToString::to_string).collect();
            if cedar_allows {
                prop_assert!(enforced.is_empty());
            } else if reasons.is_empty() {
                let ty = r.principal.split("::").next().unwrap();
                prop_assert_eq!(enforced, BTreeSet::from([format!("default-deny:{ty}")]));
            } else {
                prop_assert_eq!(enforced, reasons);
            }
            let errors: BTreeSet<String> = cedar
                .diagnostics()
                .errors()
                .map(|cedar_policy::AuthorizationError::PolicyEvaluationError(e)| e.policy_id().to_string())
                .collect();
            let got: BTreeSet<String> = decision.errors.iter().map(|e| e.rule.clone()).collect();
            prop_assert_eq!(got, errors);
        }
    }

    #[test]
    fn the_slice_answers_as_the_whole_policy_set(
        rules in prop::collection::vec(rule(), 0..16),
        requests in prop::collection::vec(request(), 1..8),
    ) {
        let (_dir, pack) = write_pack(&rules, Modes::Mixed, "", false);
        let engine = engine(&pack);
        for r in &requests {
            let req = to_request(r);
            let sliced = engine.explain(&req).unwrap();
            let whole = Authorizer::new().is_authorized(&sliced.request, pack.policies(), &sliced.entities);
            prop_assert_eq!(sliced.allowed, whole.decision() == CedarDecision::Allow);
            let reasons: BTreeSet<String> = whole.diagnostics().reason().map(ToString::to_string).collect();
            prop_assert_eq!(&sliced.reasons, &reasons);
            let errors: BTreeSet<String> = whole
                .diagnostics()
                .errors()
                .map(|cedar_policy::AuthorizationError::PolicyEvaluationError(e)| e.policy_id().to_string())
                .collect();
            prop_assert_eq!(&sliced.errors, &errors);
            prop_assert!(sliced.slice.policies().count() <= pack.rules().len());
        }
    }
}

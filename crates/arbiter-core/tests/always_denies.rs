//! `Pack::always_denies`: which enforced rule or default-deny scope denies a principal an
//! action on every resource of a type, whatever the context (what the MCP gateway hides
//! from a tool list). Each "always" is checked against the engine on several requests of
//! that shape; conditions, particular resources, audit and throttles never count.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

use std::sync::Arc;

use arbiter_core::response::Outcome;
use arbiter_core::{DecisionRequest, Engine, Pack, TimeSource};
use serde_json::json;

const SCHEMA: &str = r#"
entity Group;
entity Agent in [Group];
entity Tool;
entity File;
action io;
action read, write in [io] appliesTo {
    principal: [Agent], resource: [Tool, File], context: { n?: Long } };
action admin appliesTo { principal: [Agent], resource: [Tool], context: { n?: Long } };
"#;

const POLICIES: &str = r#"
@id("p.io")
permit(principal is Agent, action in Action::"io", resource);

@id("f.interns-no-write")
@mode("enforce")
forbid(principal in Group::"interns", action == Action::"write", resource);

@id("f.conditional")
@mode("enforce")
forbid(principal, action == Action::"read", resource) when { context has n && context.n == 3 };

@id("f.one-file")
@mode("enforce")
forbid(principal, action == Action::"read", resource == File::"secret");

@id("f.audited")
@mode("audit")
forbid(principal == Agent::"lead", action == Action::"write", resource);

@id("f.throttled")
@mode("enforce")
@effect("throttle")
@limit("1/1h")
forbid(principal == Agent::"lead", action == Action::"read", resource is Tool);
"#;

const ENTITIES: &str = r#"[
  {"uid": {"type": "Group", "id": "interns"}, "attrs": {}, "parents": []},
  {"uid": {"type": "Agent", "id": "intern"}, "attrs": {},
   "parents": [{"type": "Group", "id": "interns"}]},
  {"uid": {"type": "Agent", "id": "lead"}, "attrs": {}, "parents": []}
]"#;

fn pack(default_deny: &str) -> Pack {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(dir.path().join("policies/p.cedar"), POLICIES).unwrap();
    std::fs::write(dir.path().join("schema.cedarschema"), SCHEMA).unwrap();
    std::fs::write(dir.path().join("entities.json"), ENTITIES).unwrap();
    std::fs::write(
        dir.path().join("arbiter.toml"),
        format!("[default_deny]\nprincipal_types = {{ Agent = \"{default_deny}\" }}\n"),
    )
    .unwrap();
    Pack::load(dir.path()).unwrap()
}

fn always(pack: &Pack, principal: &str, action: &str, resource_type: &str) -> Option<String> {
    pack.always_denies(
        &format!(r#"Agent::"{principal}""#).parse().unwrap(),
        &format!(r#"Action::"{action}""#).parse().unwrap(),
        &resource_type.parse().unwrap(),
    )
    .map(|r| r.to_string())
}

#[test]
fn what_is_denied_in_every_case_and_what_is_not() {
    let pack = pack("enforce");
    let cases = [
        ("intern", "write", "Tool", Some("f.interns-no-write")),
        ("intern", "write", "File", Some("f.interns-no-write")),
        // Only an audit rule: nothing is hidden.
        ("lead", "write", "Tool", None),
        // A condition, or one particular resource: some calls may pass.
        ("intern", "read", "File", None),
        ("intern", "read", "Tool", None),
        // A throttle lets calls through up to its limit.
        ("lead", "read", "Tool", None),
        // No permit can match, and the scope is enforced.
        ("lead", "admin", "Tool", Some("default-deny:Agent")),
    ];
    let engine = Engine::new(Arc::new(pack)).with_time_source(TimeSource::RequestMaySet);
    for (principal, action, ty, expected) in cases {
        let found = always(engine.pack(), principal, action, ty);
        assert_eq!(found.as_deref(), expected, "{principal} {action} {ty}");
        if expected.is_none() {
            continue;
        }
        // The engine agrees, on resources and contexts of every kind.
        for (id, context) in [
            ("a", json!({})),
            ("secret", json!({"n": 3})),
            ("b", json!({"n": 1})),
        ] {
            let request = DecisionRequest::from_value(&json!({
                "principal": format!(r#"Agent::"{principal}""#),
                "action": format!(r#"Action::"{action}""#),
                "resource": {"type": ty, "id": id},
                "context": context,
                "time": "2026-11-26T10:00:00Z",
            }))
            .unwrap();
            let decision = engine.decide(&request).unwrap();
            assert_eq!(
                decision.decision,
                Outcome::Deny,
                "{principal} {action} {ty} {id}"
            );
        }
    }
}

#[test]
fn a_default_deny_scope_not_enforced_hides_nothing() {
    let pack = pack("audit");
    assert_eq!(always(&pack, "lead", "admin", "Tool"), None);
    assert_eq!(
        always(&pack, "intern", "write", "Tool").as_deref(),
        Some("f.interns-no-write")
    );
}

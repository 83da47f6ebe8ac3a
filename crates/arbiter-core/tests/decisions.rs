//! The decision algorithm's behaviours one by one (DESIGN §3), and the example pack's own
//! policy tests, through the library.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

use std::fs;
use std::path::Path;
use std::sync::Arc;

use arbiter_core::clock::ManualClock;
use arbiter_core::credential::{
    CredentialFailure, CredentialVerifier, Revoked, VerifiedCredential,
};
use arbiter_core::policy_tests;
use arbiter_core::request::RequestError;
use arbiter_core::response::Outcome;
use arbiter_core::rule::{Effect, OnError, RuleRef};
use arbiter_core::{DecisionRequest, Engine, Pack, TimeSource};
use jiff::SignedDuration;
use serde_json::json;

const SCHEMA: &str = r#"
entity Agent { tier: Long };
entity CiJob { tier: Long };
entity Secret;
entity File { owner: String };
action secret_read;
action read_secret in [secret_read] appliesTo { principal: [Agent, CiJob], resource: [Secret], context: {} };
action egress appliesTo { principal: [Agent, CiJob], resource: [Secret, File], context: { host: String } };
action open_file appliesTo { principal: [Agent], resource: [File], context: {} };
"#;

const ENTITIES: &str = r#"[
 {"uid": {"type": "Agent", "id": "bot"}, "attrs": {"tier": 2}, "parents": []},
 {"uid": {"type": "Secret", "id": "db"}, "attrs": {}, "parents": []},
 {"uid": {"type": "File", "id": "stored"}, "attrs": {"owner": "ops"}, "parents": []}
]"#;

const POLICIES: &str = r#"
@id("read-secrets")
permit(principal, action == Action::"read_secret", resource);

@id("egress-allowed")
permit(principal, action == Action::"egress", resource);

@id("open-own-files")
permit(principal, action == Action::"open_file", resource) when { resource.owner == "bot" };

@id("no-egress-after-secret")
@mode("enforce")
@effect("revoke")
@reason("egress after a secret read")
forbid(principal, action == Action::"egress", resource)
  when { context.session.touched.contains("secret_read") };

@id("egress-rate")
@mode("audit")
@effect("throttle")
@limit("2/1m")
forbid(principal, action == Action::"egress", resource);

@id("egress-rate-enforced")
@mode("enforce")
@effect("throttle")
@limit("3/1m")
forbid(principal is CiJob, action == Action::"egress", resource);

@id("paste-host")
@mode("warn")
@reason("pastebin is not an approved host")
forbid(principal, action == Action::"egress", resource) when { context.host == "pastebin.com" };

@id("tier-check")
@mode("enforce")
forbid(principal is Agent, action == Action::"read_secret", resource) when { principal.tier > 5 };

@id("tier-check-skip")
@mode("enforce")
@on_error("skip")
forbid(principal is CiJob, action == Action::"read_secret", resource) when { principal.tier > 5 };
"#;

fn pack(config: &str) -> (tempfile::TempDir, Arc<Pack>) {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("policies")).unwrap();
    fs::write(dir.path().join("policies/rules.cedar"), POLICIES).unwrap();
    fs::write(dir.path().join("schema.cedarschema"), SCHEMA).unwrap();
    fs::write(dir.path().join("entities.json"), ENTITIES).unwrap();
    fs::write(dir.path().join("arbiter.toml"), config).unwrap();
    let pack = Pack::load(dir.path()).unwrap_or_else(|p| panic!("{p}"));
    (dir, Arc::new(pack))
}

fn req(v: serde_json::Value) -> DecisionRequest {
    DecisionRequest::from_value(&v).unwrap()
}

fn engine(pack: &Arc<Pack>) -> (Engine, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new("2026-11-26T10:00:00Z".parse().unwrap()));
    (
        Engine::new(Arc::clone(pack)).with_clock(clock.clone()),
        clock,
    )
}

fn egress(principal: &str, host: &str, session: Option<&str>) -> DecisionRequest {
    let mut v = json!({"principal": principal, "action": "Action::\"egress\"", "resource": "Secret::\"db\"", "context": {"host": host}});
    if let Some(s) = session {
        v["session"] = json!(s);
    }
    req(v)
}

#[test]
fn touched_holds_the_action_and_its_groups_and_revoke_ends_the_session() {
    let (_d, pack) = pack("");
    let (engine, _clock) = engine(&pack);
    let read = req(
        json!({"principal": "Agent::\"bot\"", "action": "Action::\"read_secret\"", "resource": "Secret::\"db\"", "session": "s1"}),
    );
    assert_eq!(engine.decide(&read).unwrap().decision, Outcome::Allow);
    // Another session has touched nothing.
    let elsewhere = engine
        .decide(&egress("Agent::\"bot\"", "api.example.com", Some("s2")))
        .unwrap();
    assert_eq!(elsewhere.decision, Outcome::Allow);
    let after = engine
        .decide(&egress("Agent::\"bot\"", "api.example.com", Some("s1")))
        .unwrap();
    assert_eq!(after.decision, Outcome::Deny);
    assert_eq!(after.effect, Some(Effect::Revoke));
    assert_eq!(after.enforced, ["no-egress-after-secret"]);
    assert_eq!(after.reason.as_deref(), Some("egress after a secret read"));
    let next = engine.decide(&read).unwrap();
    assert_eq!(
        (next.decision, next.reason.as_deref()),
        (Outcome::Deny, Some("session:terminated"))
    );
    // Sessions are per principal: another principal's `s1` is untouched.
    let ci = req(
        json!({"principal": "CiJob::\"build\"", "action": "Action::\"egress\"", "resource": "Secret::\"db\"", "context": {"host": "x"}, "session": "s1"}),
    );
    assert_eq!(engine.decide(&ci).unwrap().decision, Outcome::Allow);
}

#[test]
fn audit_throttles_use_shadow_buckets_and_enforced_ones_deny_with_retry_after() {
    let (_d, pack) = pack("");
    let (engine, clock) = engine(&pack);
    for n in 1..=3 {
        let d = engine.decide(&egress("Agent::\"bot\"", "a", None)).unwrap();
        assert_eq!(d.decision, Outcome::Allow);
        let would_throttle = d
            .audit
            .iter()
            .any(|a| a.rule == "egress-rate" && a.would == Effect::Throttle);
        assert_eq!(would_throttle, n == 3, "request {n}");
    }
    // The enforced throttle: 3 per minute per CI job.
    for _ in 0..3 {
        assert_eq!(
            engine
                .decide(&egress("CiJob::\"build\"", "a", None))
                .unwrap()
                .decision,
            Outcome::Allow
        );
    }
    let fourth = engine
        .decide(&egress("CiJob::\"build\"", "a", None))
        .unwrap();
    assert_eq!(
        (fourth.decision, fourth.effect),
        (Outcome::Deny, Some(Effect::Throttle))
    );
    assert_eq!(fourth.retry_after_s, Some(20));
    assert_eq!(fourth.enforced, ["egress-rate-enforced"]);
    // Another principal has its own bucket.
    assert_eq!(
        engine
            .decide(&egress("CiJob::\"other\"", "a", None))
            .unwrap()
            .decision,
        Outcome::Allow
    );
    clock.advance(SignedDuration::from_secs(20));
    assert_eq!(
        engine
            .decide(&egress("CiJob::\"build\"", "a", None))
            .unwrap()
            .decision,
        Outcome::Allow
    );
}

#[test]
fn warn_rules_carry_their_reason_and_allow() {
    let (_d, pack) = pack("");
    let (engine, _) = engine(&pack);
    let d = engine
        .decide(&egress("Agent::\"bot\"", "pastebin.com", None))
        .unwrap();
    assert_eq!(d.decision, Outcome::Allow);
    assert_eq!(d.warnings.len(), 1);
    assert_eq!(d.warnings[0].rule, "paste-host");
    assert_eq!(d.warnings[0].message, "pastebin is not an approved host");
}

#[test]
fn an_erroring_forbid_fails_closed_unless_it_says_skip() {
    let (_d, pack) = pack("");
    let (engine, _) = engine(&pack);
    // The agent is unknown to the store: reading its tier errors.
    let unknown = req(
        json!({"principal": "Agent::\"ghost\"", "action": "Action::\"read_secret\"", "resource": "Secret::\"db\""}),
    );
    let d = engine.decide(&unknown).unwrap();
    assert_eq!(d.decision, Outcome::Deny);
    assert_eq!(d.enforced, ["tier-check"]);
    assert_eq!(d.errors.len(), 1);
    assert_eq!(
        (d.errors[0].rule.as_str(), d.errors[0].handled_as),
        ("tier-check", OnError::Deny)
    );
    assert!(
        d.errors[0].message.contains("ghost"),
        "{}",
        d.errors[0].message
    );
    let ci = req(
        json!({"principal": "CiJob::\"ghost\"", "action": "Action::\"read_secret\"", "resource": "Secret::\"db\""}),
    );
    let d = engine.decide(&ci).unwrap();
    assert_eq!(d.decision, Outcome::Allow);
    assert_eq!(d.errors.len(), 1);
    assert_eq!(
        (d.errors[0].rule.as_str(), d.errors[0].handled_as),
        ("tier-check-skip", OnError::Skip)
    );
}

#[test]
fn default_deny_scopes_decide_by_principal_type() {
    let (_d, pack) = pack(
        "[default_deny]\nmode = \"audit\"\nprincipal_types = { Agent = \"enforce\", CiJob = \"warn\" }\n",
    );
    let (engine, _) = engine(&pack);
    let file = |p: &str| {
        req(
            json!({"principal": p, "action": "Action::\"open_file\"", "resource": "File::\"stored\""}),
        )
    };
    let agent = engine.decide(&file("Agent::\"bot\"")).unwrap();
    assert_eq!(
        (agent.decision, agent.effect),
        (Outcome::Deny, Some(Effect::Deny))
    );
    assert_eq!(agent.enforced, ["default-deny:Agent"]);
}

#[test]
fn reserved_context_keys_cannot_be_spoofed() {
    let (_d, pack) = pack("");
    let (engine, _) = engine(&pack);
    for key in ["session", "credential", "in_intent", "novel", "now"] {
        let mut v = json!({"principal": "Agent::\"bot\"", "action": "Action::\"egress\"", "resource": "Secret::\"db\"", "context": {"host": "x"}});
        v["context"][key] = json!({"touched": []});
        let err = engine.decide(&req(v)).unwrap_err();
        assert_eq!(err, RequestError::ReservedContextKey(key.to_owned()));
        assert_eq!(err.code(), "reserved_context_key");
    }
}

#[test]
fn invalid_requests_get_codes_and_kinds() {
    let (_d, pack) = pack("");
    let (engine, _) = engine(&pack);
    let bad_json = DecisionRequest::from_json("{\"principal\": ").unwrap_err();
    assert!(matches!(bad_json, RequestError::Malformed(_)));
    let unknown_field = DecisionRequest::from_json(r#"{"principal":"Agent::\"bot\"","action":"Action::\"egress\"","resource":"Secret::\"db\"","colour":1}"#).unwrap_err();
    assert!(matches!(unknown_field, RequestError::Malformed(_)));
    assert_eq!(unknown_field.code(), "malformed_request");
    let unknown_action = engine.decide(&req(json!({"principal": "Agent::\"bot\"", "action": "Action::\"fly\"", "resource": "Secret::\"db\""}))).unwrap_err();
    assert!(matches!(unknown_action, RequestError::Invalid(_)));
    assert_eq!(unknown_action.code(), "invalid_request");
    let missing_context = engine.decide(&req(json!({"principal": "Agent::\"bot\"", "action": "Action::\"egress\"", "resource": "Secret::\"db\""}))).unwrap_err();
    assert_eq!(missing_context.code(), "invalid_request");
    let wrong_type = engine.decide(&req(json!({"principal": "Secret::\"db\"", "action": "Action::\"egress\"", "resource": "Secret::\"db\"", "context": {"host": "x"}}))).unwrap_err();
    assert_eq!(wrong_type.code(), "invalid_request");
    // The server's engine refuses `time`; the offline one takes it.
    let timed = req(
        json!({"principal": "Agent::\"bot\"", "action": "Action::\"read_secret\"", "resource": "Secret::\"db\"", "time": "2026-01-01T00:00:00Z"}),
    );
    assert_eq!(
        engine.decide(&timed).unwrap_err(),
        RequestError::TimeNotAllowed
    );
    let offline = engine.clone().with_time_source(TimeSource::RequestMaySet);
    assert_eq!(offline.decide(&timed).unwrap().decision, Outcome::Allow);
}

#[test]
fn credentials_are_required_where_configured_and_never_trusted_unverified() {
    let (_d, pack) = pack("[credentials]\nrequired_for = [\"Agent\"]\n");
    let (engine, _) = engine(&pack);
    let read = |credential: Option<&str>| {
        let mut v = json!({"principal": "Agent::\"bot\"", "action": "Action::\"read_secret\"", "resource": "Secret::\"db\""});
        if let Some(c) = credential {
            v["credential"] = json!(c);
        }
        engine.decide(&req(v)).unwrap()
    };
    assert_eq!(read(None).reason.as_deref(), Some("credential:missing"));
    assert_eq!(
        read(Some("not-a-jwt")).reason.as_deref(),
        Some("credential:malformed")
    );
    let forged = read(Some(
        "eyJhbGciOiJub25lIn0.eyJzdWIiOiJBZ2VudDo6XCJib3RcIiJ9.",
    ));
    assert_eq!(
        (forged.decision, forged.reason.as_deref()),
        (Outcome::Deny, Some("credential:unknown_issuer"))
    );
    // CI jobs are not required to present one.
    let ci = req(
        json!({"principal": "CiJob::\"build\"", "action": "Action::\"read_secret\"", "resource": "Secret::\"db\""}),
    );
    assert_eq!(engine.decide(&ci).unwrap().decision, Outcome::Allow);
}

#[test]
fn request_entities_only_add_what_the_pack_allows() {
    let (_d, pack) = pack("[requests]\nentity_types = [\"File\"]\n");
    let (engine, _) = engine(&pack);
    let open = |entities: serde_json::Value, file: &str| {
        engine.decide(&req(
            json!({"principal": "Agent::\"bot\"", "action": "Action::\"open_file\"",
            "resource": format!("File::\"{file}\""), "entities": entities}),
        ))
    };
    let described =
        json!([{"uid": {"type": "File", "id": "new"}, "attrs": {"owner": "bot"}, "parents": []}]);
    let d = open(described, "new").unwrap();
    assert_eq!(d.decision, Outcome::Allow, "{d:?}");
    // A stored entity cannot be overridden.
    let override_ = json!([{"uid": {"type": "File", "id": "stored"}, "attrs": {"owner": "bot"}, "parents": []}]);
    assert_eq!(
        open(override_, "stored").unwrap_err().code(),
        "invalid_entities"
    );
    // Nor may a request describe types outside [requests] entity_types, the principal included.
    let principal =
        json!([{"uid": {"type": "Agent", "id": "bot"}, "attrs": {"tier": 1}, "parents": []}]);
    assert_eq!(
        open(principal, "stored").unwrap_err().code(),
        "invalid_entities"
    );
}

#[test]
fn the_example_pack_passes_its_own_tests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/agents-and-pipelines");
    let pack = Arc::new(Pack::load(&dir).unwrap_or_else(|p| panic!("{p}")));
    let files = policy_tests::load_tests(&dir).unwrap_or_else(|p| panic!("{p}"));
    let mut ran = 0;
    for file in &files {
        for case in &file.tests {
            let outcome = policy_tests::run_test(&pack, &file.path, case);
            assert!(
                outcome.passed(),
                "{}: {:#?}",
                outcome.name,
                outcome.failures
            );
            ran += 1;
        }
    }
    assert!(
        ran >= 10,
        "the example pack has tests for every mode and effect ({ran})"
    );
    // Every mode, effect and a default-deny scope in audit and enforce are exercised.
    let rules = pack.rules();
    for mode in ["audit", "warn", "enforce"] {
        assert!(
            rules
                .iter()
                .any(|r| r.mode.is_some_and(|m| m.as_str() == mode)),
            "a rule in {mode}"
        );
    }
    for effect in ["deny", "throttle", "revoke"] {
        assert!(
            rules
                .iter()
                .any(|r| r.effect.is_some_and(|e| e.as_str() == effect)),
            "a rule with {effect}"
        );
    }
    let scopes = pack.default_deny_scopes();
    assert!(
        scopes.values().any(|m| m.as_str() == "audit")
            && scopes.values().any(|m| m.as_str() == "enforce")
    );
}

#[test]
fn decision_ids_increase_in_arrival_order() {
    let (_d, pack) = pack("");
    let (engine, _clock) = engine(&pack);
    // The clock stands still: every id is made in the same millisecond.
    let ids: Vec<String> = (0..200)
        .map(|_| {
            engine
                .decide(&egress("Agent::\"bot\"", "a", None))
                .unwrap()
                .decision_id
        })
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids sort in arrival order"
    );
    // An engine on a reloaded pack keeps counting from the same generator.
    let reloaded = engine.with_pack(Arc::clone(&pack));
    let next = reloaded
        .decide(&egress("Agent::\"bot\"", "a", None))
        .unwrap()
        .decision_id;
    assert!(&next > ids.last().unwrap());
}

#[test]
fn a_missing_required_context_is_invalid_even_when_empty() {
    let (_d, pack) = pack("");
    let (engine, _) = engine(&pack);
    let empty = req(
        json!({"principal": "Agent::\"bot\"", "action": "Action::\"egress\"", "resource": "Secret::\"db\"", "context": {}}),
    );
    assert_eq!(engine.decide(&empty).unwrap_err().code(), "invalid_request");
}

/// Tokens are their own names; what each verifies to is set by the test. Revocations
/// are recorded so the test can see them.
#[derive(Debug, Default)]
struct FakeVerifier {
    tokens: std::collections::HashMap<String, VerifiedCredential>,
    revoked: std::sync::Mutex<Vec<String>>,
    revoked_sessions: std::sync::Mutex<Vec<(String, String)>>,
}

impl CredentialVerifier for FakeVerifier {
    fn verify(
        &self,
        token: &str,
        _now: jiff::Timestamp,
    ) -> Result<VerifiedCredential, CredentialFailure> {
        if self.revoked.lock().unwrap().iter().any(|t| t == token) {
            return Err(CredentialFailure::Revoked);
        }
        self.tokens
            .get(token)
            .cloned()
            .ok_or(CredentialFailure::BadSignature)
    }

    fn revoke(&self, revoked: &Revoked) {
        match revoked {
            Revoked::Jti(jti) => self.revoked.lock().unwrap().push(jti.clone()),
            Revoked::Session {
                principal: Some(principal),
                id,
            } => self
                .revoked_sessions
                .lock()
                .unwrap()
                .push((principal.clone(), id.clone())),
            other => panic!("the engine revokes tokens and sessions only, not {other:?}"),
        }
    }

    fn session_revoked(&self, principal: &str, id: &str) -> bool {
        self.revoked_sessions
            .lock()
            .unwrap()
            .iter()
            .any(|(p, i)| p == principal && i == id)
    }
}

fn credential(jti: &str, principal: &str, session: Option<&str>) -> VerifiedCredential {
    VerifiedCredential {
        jti: jti.to_owned(),
        issuer: "arbiter".to_owned(),
        principal: principal.parse().unwrap(),
        intent: None,
        session: session.map(str::to_owned),
        issued_at: "2026-11-26T09:55:00Z".parse().unwrap(),
        expires_at: "2026-11-26T10:05:00Z".parse().unwrap(),
        attributes: std::collections::BTreeMap::new(),
    }
}

#[test]
fn a_verified_credential_binds_principal_and_session_and_revoke_revokes_it() {
    let (_d, pack) = pack("");
    let mut fake = FakeVerifier::default();
    fake.tokens.insert(
        "t-bot".into(),
        credential("t-bot", "Agent::\"bot\"", Some("s1")),
    );
    let fake = Arc::new(fake);
    let (engine, _) = engine(&pack);
    let engine = engine.with_credentials(fake.clone());
    let call = |action: &str, principal: &str, session: Option<&str>| {
        let mut v = json!({"principal": principal, "action": action, "resource": "Secret::\"db\"",
                           "context": {}, "credential": "t-bot"});
        if action.contains("egress") {
            v["context"] = json!({"host": "example.com"});
        }
        if let Some(s) = session {
            v["session"] = json!(s);
        }
        engine.decide(&req(v)).unwrap()
    };
    let read = "Action::\"read_secret\"";
    let egress = "Action::\"egress\"";
    let other = call(read, "Agent::\"other\"", None);
    assert_eq!(
        other.reason.as_deref(),
        Some("credential:principal_mismatch")
    );
    let elsewhere = call(read, "Agent::\"bot\"", Some("s2"));
    assert_eq!(
        elsewhere.reason.as_deref(),
        Some("credential:session_mismatch")
    );
    // No session in the request: the token's session is the one, so the read is
    // remembered there and the egress after it revokes.
    let first = call(read, "Agent::\"bot\"", None);
    assert_eq!(first.decision, Outcome::Allow);
    assert_eq!(first.credential_id.as_deref(), Some("t-bot"));
    let out = call(egress, "Agent::\"bot\"", None);
    assert_eq!(
        (out.decision, out.effect, out.enforced.as_slice()),
        (
            Outcome::Deny,
            Some(Effect::Revoke),
            [RuleRef::from("no-egress-after-secret")].as_slice()
        )
    );
    // In force at once through the verifier, and reported for the caller to persist.
    assert_eq!(*fake.revoked.lock().unwrap(), ["t-bot".to_owned()]);
    assert_eq!(
        *fake.revoked_sessions.lock().unwrap(),
        [("Agent::\"bot\"".to_owned(), "s1".to_owned())]
    );
    let session = Revoked::Session {
        principal: Some("Agent::\"bot\"".to_owned()),
        id: "s1".to_owned(),
    };
    let reported: Vec<_> = out
        .revoked
        .iter()
        .map(|r| (r.revoked.clone(), r.rule.as_str()))
        .collect();
    assert_eq!(
        reported,
        [
            (session, "no-egress-after-secret"),
            (Revoked::Jti("t-bot".to_owned()), "no-egress-after-secret")
        ]
    );
    assert_eq!(
        call(read, "Agent::\"bot\"", None).reason.as_deref(),
        Some("credential:revoked")
    );
}

#[test]
fn a_session_revoked_elsewhere_is_terminated_here() {
    let (_d, pack) = pack("");
    let fake = Arc::new(FakeVerifier::default());
    fake.revoked_sessions
        .lock()
        .unwrap()
        .push(("Agent::\"bot\"".to_owned(), "s9".to_owned()));
    let (engine, _) = engine(&pack);
    let engine = engine.with_credentials(fake);
    let d = engine
        .decide(&egress("Agent::\"bot\"", "a.com", Some("s9")))
        .unwrap();
    assert_eq!(d.reason.as_deref(), Some("session:terminated"));
    let d = engine
        .decide(&egress("Agent::\"bot\"", "a.com", Some("s8")))
        .unwrap();
    assert_eq!(d.decision, Outcome::Allow);
}

#[test]
fn credential_attributes_describe_only_principals_the_store_does_not_know() {
    let policies = r#"
@id("ops-team")
permit(principal, action == Action::"read_secret", resource)
  when { principal has team && principal.team == "ops" };
"#;
    let schema = "entity Agent { team?: String, tier?: Long };\nentity Secret;\naction read_secret appliesTo { principal: [Agent], resource: [Secret], context: {} };\n";
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("policies")).unwrap();
    fs::write(dir.path().join("policies/r.cedar"), policies).unwrap();
    fs::write(dir.path().join("schema.cedarschema"), schema).unwrap();
    fs::write(
        dir.path().join("entities.json"),
        r#"[{"uid": {"type": "Agent", "id": "stored"}, "attrs": {"tier": 2}, "parents": []}]"#,
    )
    .unwrap();
    fs::write(
        dir.path().join("arbiter.toml"),
        "[default_deny]\nmode = \"enforce\"\n",
    )
    .unwrap();
    let pack = Arc::new(Pack::load(dir.path()).unwrap());
    let mut fake = FakeVerifier::default();
    let mut vouched = credential("t-new", "Agent::\"new\"", None);
    vouched.attributes.insert("team".into(), "ops".into());
    fake.tokens.insert("t-new".into(), vouched);
    let mut stored = credential("t-stored", "Agent::\"stored\"", None);
    stored.attributes.insert("team".into(), "ops".into());
    fake.tokens.insert("t-stored".into(), stored);
    let (engine, _) = engine(&pack);
    let engine = engine.with_credentials(Arc::new(fake));
    let read = |who: &str, token: &str| {
        engine
            .decide(&req(json!({"principal": format!("Agent::\"{who}\""), "action": "Action::\"read_secret\"",
                                "resource": "Secret::\"db\"", "credential": token})))
            .unwrap()
    };
    // The stored entity keeps its own attributes (no team): the credential cannot add one.
    let stored = read("stored", "t-stored");
    assert_eq!(stored.decision, Outcome::Deny, "{stored:?}");
    // A principal the store does not know is described by its credential.
    let new = read("new", "t-new");
    assert_eq!(new.decision, Outcome::Allow, "{new:?}");
}

#[test]
fn novel_is_set_exactly_for_pairs_first_seen_after_a_freeze() {
    let (_d, pack) = pack("[default_deny]\nmode = \"enforce\"\n");
    let baseline = Arc::new(arbiter_core::state::MemoryBaseline::default());
    let (engine, _) = engine(&pack);
    let engine = engine.with_baseline(baseline.clone());
    let read = |who: &str| {
        req(
            json!({"principal": format!("{who}"), "action": "Action::\"read_secret\"",
                   "resource": "Secret::\"db\""}),
        )
    };
    // Nothing is novel before a freeze.
    assert_eq!(engine.decide(&read("Agent::\"bot\"")).unwrap().novel, None);
    baseline.freeze([(
        "Agent::\"bot\"".to_owned(),
        "Action::\"read_secret\"".to_owned(),
    )]);
    assert_eq!(
        engine.decide(&read("Agent::\"bot\"")).unwrap().novel,
        Some(false)
    );
    // CiJob::"build" never read a secret: novel the first time, known once allowed.
    let first = engine.decide(&read("CiJob::\"build\"")).unwrap();
    assert_eq!((first.decision, first.novel), (Outcome::Allow, Some(true)));
    assert_eq!(
        engine.decide(&read("CiJob::\"build\"")).unwrap().novel,
        Some(false)
    );
    // A refused pair stays novel: the identity still has never done it.
    let open = req(
        json!({"principal": "Agent::\"bot\"", "action": "Action::\"open_file\"",
                          "resource": "File::\"stored\""}),
    );
    for _ in 0..2 {
        let refused = engine.decide(&open).unwrap();
        assert_eq!(
            (refused.decision, refused.novel),
            (Outcome::Deny, Some(true))
        );
    }
}

#[test]
fn the_default_deny_scope_is_named_only_when_it_was_consulted() {
    let (_d, pack) = pack("");
    let (engine, _) = engine(&pack);
    // Allowed by a permit: the scope was consulted (and let it through).
    let read = engine
        .decide(&req(
            json!({"principal": "Agent::\"bot\"", "action": "Action::\"read_secret\"", "resource": "Secret::\"db\""}),
        ))
        .unwrap();
    assert_eq!(read.scope, Some(RuleRef::default_deny("Agent")));
    // Denied by an enforced rule first: the scope never decided anything.
    let _ = engine
        .decide(&egress("CiJob::\"build\"", "a.com", None))
        .unwrap();
    for _ in 0..3 {
        let _ = engine.decide(&egress("CiJob::\"build\"", "a.com", None));
    }
    let throttled = engine
        .decide(&egress("CiJob::\"build\"", "a.com", None))
        .unwrap();
    assert_eq!(throttled.enforced, ["egress-rate-enforced"]);
    assert_eq!(throttled.scope, None);
}

/// A context the schema types with extension values and entities, written as Cedar's
/// schema-directed JSON allows (an address as a string, an entity as `{type, id}`), is
/// read as Cedar reads it; plain JSON takes the engine's direct reading, and both decide
/// alike.
#[test]
fn schema_typed_contexts_read_as_cedar_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("policies")).unwrap();
    fs::write(
        dir.path().join("schema.cedarschema"),
        r#"
entity Agent;
entity Host;
action connect appliesTo { principal: [Agent], resource: [Host],
  context: { from: ipaddr, amount: decimal, owner: Agent, tags: Set<String>, n: Long } };
"#,
    )
    .unwrap();
    fs::write(
        dir.path().join("policies/rules.cedar"),
        r#"
@id("outside")
@mode("enforce")
forbid(principal, action == Action::"connect", resource)
  unless { context.from.isInRange(ip("10.0.0.0/8")) && context.amount.lessThan(decimal("10.0"))
           && context.owner == principal && context.tags.contains("ok") && context.n > 1 };
"#,
    )
    .unwrap();
    fs::write(dir.path().join("entities.json"), "[]").unwrap();
    fs::write(dir.path().join("arbiter.toml"), "").unwrap();
    let pack = Arc::new(Pack::load(dir.path()).unwrap_or_else(|p| panic!("{p}")));
    let (engine, _) = engine(&pack);
    let ask = |from: &str, n: i64| {
        engine.decide(&req(json!({
            "principal": "Agent::\"a\"", "action": "Action::\"connect\"", "resource": "Host::\"h\"",
            "context": {"from": from, "amount": "1.5", "owner": {"type": "Agent", "id": "a"},
                        "tags": ["ok"], "n": n}
        })))
    };
    assert_eq!(ask("10.1.2.3", 2).unwrap().decision, Outcome::Allow);
    assert_eq!(ask("192.168.0.1", 2).unwrap().decision, Outcome::Deny);
    assert_eq!(ask("10.1.2.3", 1).unwrap().decision, Outcome::Deny);
    assert_eq!(
        ask("not an address", 2).unwrap_err().code(),
        "invalid_request"
    );
}

#[test]
fn an_evaluation_error_names_paths_and_types_never_the_values() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    std::fs::write(
        dir.path().join("schema.cedarschema"),
        "entity Agent;\nentity Account;\n\
         action pay appliesTo { principal: [Agent], resource: [Account], context: { amount: Long } };\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("policies/p.cedar"),
        "@id(\"allow\")\npermit(principal, action, resource);\n\n\
         @id(\"huge\")\n@mode(\"audit\")\n\
         forbid(principal, action, resource) when { context.amount + 9223372036854775000 > 0 };\n",
    )
    .unwrap();
    let pack = Arc::new(Pack::load(dir.path()).unwrap());
    let engine = Engine::new(pack);
    let d = engine
        .decide(&req(
            json!({"principal": "Agent::\"a\"", "action": "Action::\"pay\"",
                             "resource": "Account::\"x\"", "context": {"amount": 4242}}),
        ))
        .unwrap();
    assert_eq!(d.errors.len(), 1, "{d:?}");
    let message = &d.errors[0].message;
    assert!(message.contains("overflow"), "{message}");
    assert!(!message.contains("4242"), "a context value in {message}");
}

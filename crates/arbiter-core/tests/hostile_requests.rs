//! Requests an attacker would send (findings 1, 3 and 10 of the hostile-input probe): each
//! is refused with an error that names the field and the expected type, and never quotes
//! a value the caller sent.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

use std::path::Path;
use std::sync::Arc;

use arbiter_core::{DecisionRequest, Engine, Pack, RequestError};
use serde_json::{Value, json};

fn example() -> Arc<Pack> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/agents-and-pipelines");
    Arc::new(Pack::load(dir).unwrap_or_else(|p| panic!("{p}")))
}

fn refusal(value: &Value) -> RequestError {
    let engine = Engine::new(example());
    match DecisionRequest::from_value(value) {
        Err(e) => e,
        Ok(request) => engine.decide(&request).expect_err("refused"),
    }
}

/// Finding 1: serde's derive read a struct from a positional array, so an array was
/// decided (and its values skipped masking and fingerprinting in the log).
#[test]
fn a_request_sent_as_a_json_array_is_refused() {
    let array = json!([
        "Agent::\"ops-copilot\"", "Action::\"update_config\"", "Config::\"staging/billing-api\"",
        {"key": "db_url", "value": "SECRET"}, null, "TOKEN", null, null
    ]);
    let e = DecisionRequest::from_value(&array).expect_err("an array is not a request");
    assert_eq!(e.code(), "malformed_request");
    assert!(e.to_string().contains("JSON object"), "{e}");
    for not_an_object in [json!("x"), json!(1), json!(null), json!(true)] {
        assert!(DecisionRequest::from_value(&not_an_object).is_err());
    }
    // An entity reference as a positional array is refused too.
    let e = DecisionRequest::from_value(&json!({
        "principal": ["Agent", "bot"], "action": "Action::\"read_ticket\"",
        "resource": "Ticket::\"T-1\""}))
    .expect_err("refused");
    assert!(e.to_string().contains("`principal`"), "{e}");
    // And through the YAML of `arbiter test`, which deserializes the same type.
    assert!(serde_yaml_ng::from_str::<DecisionRequest>("[a, b, c]").is_err());
}

/// Finding 1: a credential that is not a string is refused without quoting it.
#[test]
fn a_credential_of_the_wrong_type_is_refused_without_quoting_it() {
    for credential in [
        json!(["TOKEN-SECRET"]),
        json!({"t": "TOKEN-SECRET"}),
        json!(12345),
    ] {
        let e = refusal(&json!({"principal": "Agent::\"support-bot\"",
            "action": "Action::\"read_ticket\"", "resource": "Ticket::\"T-1\"",
            "credential": credential}));
        assert_eq!(e.code(), "malformed_request");
        assert!(
            e.to_string().contains("`credential` must be a string"),
            "{e}"
        );
        assert!(!e.to_json().to_string().contains("SECRET"), "{e}");
        assert!(!e.to_json().to_string().contains("12345"), "{e}");
    }
}

/// Finding 3: a context value of the wrong type was quoted in the error (and so in the
/// log's `error`, though the log masks the value itself).
#[test]
fn a_masked_value_never_appears_in_a_context_error() {
    let values = [
        json!({"inner": "SECRET"}),
        json!(987654321),
        json!(["SECRET"]),
        json!({"__extn": {"fn": "ip", "arg": "10.9.8.7"}}),
        json!({"__entity": {"type": "Agent", "id": "SECRET"}}),
        json!(true),
    ];
    for value in values {
        let e = refusal(&json!({"principal": "Agent::\"ops-copilot\"",
            "action": "Action::\"update_config\"", "resource": "Config::\"staging/billing-api\"",
            "context": {"key": "k", "value": value}}));
        let said = e.to_json().to_string();
        for secret in ["SECRET", "987654321", "10.9.8.7", "true"] {
            assert!(!said.contains(secret), "{value} leaked into {said}");
        }
        assert!(said.contains("context.value"), "names the path: {said}");
        assert!(said.contains("expected a string"), "names the type: {said}");
    }
}

/// Finding 10: duplicate keys were last-wins, so a proxy that checked the first
/// `principal` and arbiter that decided the second disagreed.
#[test]
fn duplicate_keys_in_a_request_are_refused() {
    let text = r#"{"principal": "Agent::\"support-bot\"", "principal": "Agent::\"ops-copilot\"",
        "action": "Action::\"read_ticket\"", "resource": "Ticket::\"T-1\""}"#;
    let e = DecisionRequest::from_json(text).expect_err("refused");
    assert!(e.to_string().contains("duplicate key `principal`"), "{e}");
    let nested = r#"{"principal": "Agent::\"support-bot\"", "action": "Action::\"read_ticket\"",
        "resource": "Ticket::\"T-1\"", "context": {"a": 1, "a": 2}}"#;
    assert!(DecisionRequest::from_json(nested).is_err());
}

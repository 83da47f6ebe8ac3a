//! What the strict reading of a request body costs, side by side in one run:
//!
//! - `serde_json`: bytes to a JSON value, as the server read bodies before (duplicate keys
//!   last-wins);
//! - `strict`: bytes to a JSON value refusing duplicate keys (`arbiter_core::json`), as
//!   every body is read now;
//! - `strict_and_request`: that, then `DecisionRequest::from_value`, the whole parse a
//!   decision pays before the engine.
//!
//! `cargo bench -p arbiter-core --bench request_parse`

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark")]

use std::hint::black_box;

use arbiter_core::DecisionRequest;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::Value;

/// Bodies as PEPs send them: a bare one, and one with a context and a credential.
const BODIES: [(&str, &str); 2] = [
    (
        "bare",
        r#"{"principal": "Agent::\"support-bot\"", "action": "Action::\"read_ticket\"", "resource": "Ticket::\"T-1\"", "session": "s1"}"#,
    ),
    (
        "context",
        r#"{"principal": "Agent::\"ops-copilot\"", "action": "Action::\"update_config\"", "resource": "Config::\"staging/billing-api\"", "session": "s1", "context": {"key": "db_url", "value": "postgres://db.internal/billing", "tags": ["a", "b", "c"], "ttl_s": 600}, "credential": "eyJhbGciOiJFZERTQSIsImtpZCI6ImFiYyJ9.eyJzdWIiOiJBZ2VudDo6XCJvcHMtY29waWxvdFwiIiwiZXhwIjoxODAwMDAwMDAwfQ.c2lnbmF0dXJlLWJ5dGVzLWhlcmUtYWJjZGVmZ2hpamtsbW5vcA"}"#,
    ),
];

fn parse(c: &mut Criterion) {
    for (name, body) in BODIES {
        let mut group = c.benchmark_group(format!("request_parse/{name}"));
        group.bench_function("serde_json", |b| {
            b.iter(|| serde_json::from_slice::<Value>(black_box(body.as_bytes())).unwrap());
        });
        group.bench_function("strict", |b| {
            b.iter(|| arbiter_core::json::from_slice(black_box(body.as_bytes())).unwrap());
        });
        group.bench_function("strict_and_request", |b| {
            b.iter(|| {
                let value = arbiter_core::json::from_slice(black_box(body.as_bytes())).unwrap();
                DecisionRequest::from_value(&value).unwrap()
            });
        });
        group.finish();
    }
}

criterion_group!(benches, parse);
criterion_main!(benches);

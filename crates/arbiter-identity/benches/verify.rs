//! What verifying a credential adds to a decision, side by side in one run, on the
//! example pack (`support-bot` reading a ticket):
//!
//! - `decide_without_credential`: `Engine::decide` with no token;
//! - `decide_with_credential`: the same request presenting a valid arbiter token, as a
//!   PEP does on every call (verified once, then served from the cache; the time window
//!   and revocation are still checked every time);
//! - `verify_first_time`: one token's full verification (parse, Ed25519 signature,
//!   claims) on a verifier that has not seen it.
//!
//! `cargo bench -p arbiter-identity --bench verify`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a benchmark"
)]

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arbiter_core::clock::ManualClock;
use arbiter_core::credential::CredentialVerifier;
use arbiter_core::{DecisionRequest, Engine, Pack};
use arbiter_identity::{Keyring, MintRequest, Revocations, Verifier};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use jiff::Timestamp;
use serde_json::json;

fn bench(c: &mut Criterion) {
    let pack_dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/agents-and-pipelines");
    let pack = Arc::new(Pack::load(&pack_dir).unwrap());
    let data = tempfile::tempdir().unwrap();
    let now: Timestamp = "2026-11-26T10:00:00Z".parse().unwrap();
    let keyring = Keyring::load_or_create(data.path(), now).unwrap();
    let credentials = &pack.config().credentials;
    let verifier = || {
        Verifier::new(
            keyring.clone(),
            credentials,
            Arc::new(Revocations::default()),
        )
    };
    let token = arbiter_identity::mint(
        &keyring,
        credentials,
        &pack.config().intents,
        &MintRequest {
            principal: "Agent::\"support-bot\"".parse().unwrap(),
            ttl: Duration::from_secs(600),
            intent: Some("triage".to_owned()),
            session: None,
            audience: None,
            attributes: Default::default(),
            via: None,
        },
        now,
    )
    .unwrap()
    .token;
    let engine = Engine::new(Arc::clone(&pack))
        .with_clock(Arc::new(ManualClock::new(now)))
        .with_credentials(Arc::new(verifier()));
    let request = |credential: Option<&str>| {
        let mut v = json!({"principal": "Agent::\"support-bot\"", "action": "Action::\"read_ticket\"",
                           "resource": "Ticket::\"T-1\"", "context": {}});
        if let Some(t) = credential {
            v["credential"] = json!(t);
        }
        DecisionRequest::from_value(&v).unwrap()
    };
    let without = request(None);
    let with = request(Some(&token));
    assert!(engine.decide(&with).unwrap().credential_id.is_some());

    let mut group = c.benchmark_group("credential");
    group.bench_function("decide_without_credential", |b| {
        b.iter(|| engine.decide(black_box(&without)).unwrap());
    });
    group.bench_function("decide_with_credential", |b| {
        b.iter(|| engine.decide(black_box(&with)).unwrap());
    });
    group.bench_function("verify_first_time", |b| {
        b.iter_batched(
            verifier,
            |v| v.verify(black_box(&token), now).unwrap(),
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);

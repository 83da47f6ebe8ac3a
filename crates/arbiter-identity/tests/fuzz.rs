//! Fuzz targets for what a caller can hand the identity crate: a token (arbiter's own, to
//! the `Verifier`; an upstream one, to `Upstream::exchange`) and an upstream JWKS document
//! (`Upstream::set_jwks`, the parse a `jwks_url` fetch and a `jwks_file` go through).
//!
//! They are bolero targets, so they run under plain `cargo test` on stable: each replays
//! its corpus (`tests/__fuzz__/<target>/corpus`) and then a small bounded number of
//! generated inputs. `docs/security.md` (Fuzzing) says how to run one for longer.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arbiter_core::credential::CredentialVerifier;
use arbiter_core::{DecisionRequest, Engine, Pack, TimeSource};
use arbiter_identity::{Keyring, Upstream, Verifier};
use bolero::check;
use bolero::generator::*;
use common::{at, b64};
use ed25519_dalek::{Signer as _, SigningKey};
use jiff::Timestamp;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

/// Generated inputs per target under `cargo test`, on top of the corpus;
/// `BOLERO_RANDOM_ITERATIONS` overrides it.
const TOKEN_ITERATIONS: usize = 300;
const JWKS_ITERATIONS: usize = 300;

/// The time every token is judged at: the fixtures' day.
fn now() -> Timestamp {
    at("10:05:00")
}

const GITHUB_ISS: &str = "https://token.actions.githubusercontent.com";
const K8S_ISS: &str = "https://kubernetes.default.svc";
const SPIRE_ISS: &str = "https://spire.acme.internal";

/// A pack of three `jwks_file` issuers (one per preset) and one `jwks_url` issuer, whose
/// keys `set_jwks` replaces.
const CONFIG: &str = r#"
[credentials]
leeway = "30s"

[[issuers]]
name = "github"
preset = "github-actions"
audience = "arbiter"
jwks_file = "keys/github.json"
principal = 'CiJob::"{repository}@{ref}"'
attributes = { repo = "repository" }
require = { repository_owner = "acme" }

[[issuers]]
name = "k8s"
preset = "kubernetes"
issuer = "https://kubernetes.default.svc"
audience = "arbiter"
jwks_file = "keys/k8s.json"
principal = 'Workload::"{namespace}/{serviceaccount}"'

[[issuers]]
name = "spire"
preset = "spiffe"
issuer = "https://spire.acme.internal"
audience = "arbiter"
jwks_file = "keys/spire.json"
principal = 'Service::"{path}"'

[[issuers]]
name = "remote"
preset = "spiffe"
issuer = "https://remote.example"
audience = "arbiter"
jwks_url = "https://remote.example/jwks.json"
principal = 'Service::"{path}"'
"#;

const SCHEMA: &str = r#"
entity CiJob { repo: String };
entity Workload;
entity Service;
entity Target;
action deploy appliesTo { principal: [CiJob, Workload, Service], resource: [Target] };
"#;

/// A fixture key: the private half to sign with, the public half as a JWK.
struct FixtureKey {
    alg: Algorithm,
    signing: EncodingKey,
}

impl FixtureKey {
    fn new(alg: Algorithm) -> FixtureKey {
        let signing = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(include_bytes!("fixtures/rsa.pem")),
            Algorithm::ES256 => EncodingKey::from_ec_pem(include_bytes!("fixtures/p256.pem")),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(include_bytes!("fixtures/ed25519.pem")),
            other => panic!("no fixture for {other:?}"),
        }
        .unwrap();
        FixtureKey { alg, signing }
    }

    fn jwk(&self) -> Value {
        serde_json::to_value(Jwk::from_encoding_key(&self.signing, self.alg).unwrap()).unwrap()
    }

    fn sign(&self, input: &str) -> String {
        jsonwebtoken::crypto::sign(input.as_bytes(), &self.signing, self.alg).unwrap()
    }
}

/// Everything a target needs, built once per test.
struct World {
    _data: tempfile::TempDir,
    _pack: tempfile::TempDir,
    keyring: Keyring,
    /// The keyring's active private key: what arbiter signs with.
    arbiter_key: SigningKey,
    verifier: Arc<Verifier>,
    upstream: Upstream,
    /// The example pack's engine, verifying credentials with `verifier`.
    engine: Engine,
    rsa: FixtureKey,
    p256: FixtureKey,
    ed25519: FixtureKey,
}

fn world() -> World {
    let data = tempfile::tempdir().unwrap();
    let keyring = Keyring::load_or_create(data.path(), at("09:00:00")).unwrap();
    let arbiter_key = common::signing_key(data.path(), keyring.active_kid());
    let (verifier, _) = common::verifier(&keyring);
    let verifier = Arc::new(verifier);
    let (rsa, p256, ed25519) = (
        FixtureKey::new(Algorithm::RS256),
        FixtureKey::new(Algorithm::ES256),
        FixtureKey::new(Algorithm::EdDSA),
    );
    let pack_dir = tempfile::tempdir().unwrap();
    let path = pack_dir.path();
    fs::write(path.join("arbiter.toml"), CONFIG).unwrap();
    fs::write(path.join("schema.cedarschema"), SCHEMA).unwrap();
    fs::create_dir(path.join("policies")).unwrap();
    fs::write(
        path.join("policies/deploy.cedar"),
        "@id(\"deploy\")\npermit (principal, action == Action::\"deploy\", resource);\n",
    )
    .unwrap();
    fs::create_dir(path.join("keys")).unwrap();
    let jwks = |keys: &[&FixtureKey]| {
        json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()}).to_string()
    };
    fs::write(path.join("keys/github.json"), jwks(&[&rsa])).unwrap();
    fs::write(path.join("keys/k8s.json"), jwks(&[&rsa, &p256])).unwrap();
    fs::write(path.join("keys/spire.json"), jwks(&[&rsa, &p256, &ed25519])).unwrap();
    let pack = Pack::load(path).unwrap_or_else(|p| panic!("{p}"));
    let upstream = Upstream::from_pack(&pack).unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/agents-and-pipelines");
    let example = Arc::new(Pack::load(example).unwrap_or_else(|p| panic!("{p}")));
    let engine = Engine::new(example)
        .with_time_source(TimeSource::RequestMaySet)
        .with_credentials(Arc::clone(&verifier) as Arc<dyn CredentialVerifier>);
    World {
        _data: data,
        _pack: pack_dir,
        keyring,
        arbiter_key,
        verifier,
        upstream,
        engine,
        rsa,
        p256,
        ed25519,
    }
}

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/__fuzz__")
        .join(target)
        .join("corpus")
}

/// The texts of a target's corpus in this repository.
fn corpus(target: &str) -> Vec<String> {
    let dir = corpus_dir(target);
    let mut texts: Vec<String> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| fs::read_to_string(entry.unwrap().path()).unwrap())
        .collect();
    texts.sort();
    assert!(!texts.is_empty(), "{} is empty", dir.display());
    texts
}

/// How far inputs got, printed at the end of a target (`--nocapture` shows it).
#[derive(Default)]
struct Tally(Mutex<BTreeMap<String, usize>>);

impl Tally {
    fn add(&self, outcome: &str) {
        *self
            .0
            .lock()
            .unwrap()
            .entry(outcome.to_owned())
            .or_default() += 1;
    }

    fn report(&self, target: &str) {
        eprintln!("{target}: {:?}", self.0.lock().unwrap());
    }
}

/// The pieces of `token` that must never appear in an error's text: the token, each of
/// its parts and its decoded payload, when long enough not to appear by chance.
fn secret_pieces(token: &str) -> Vec<String> {
    let mut pieces = vec![token.to_owned()];
    pieces.extend(token.split('.').map(str::to_owned));
    if let Some(payload) = token.split('.').nth(1).and_then(|p| {
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, p).ok()
    }) {
        pieces.push(String::from_utf8_lossy(&payload).into_owned());
    }
    pieces.retain(|p| p.len() >= 16);
    pieces
}

/// Presents `token` to the verifier, the exchange and a decision. Panics if any error's
/// text holds a piece of the token or one of `markers`. Returns whether the verifier and
/// the exchange accepted it.
fn present(world: &World, token: &str, markers: &[String], tally: &Tally) -> (bool, bool) {
    let mut secrets = secret_pieces(token);
    secrets.extend(markers.iter().cloned());
    let assert_clean = |what: &str, text: &str| {
        for secret in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "{what} holds `{secret}`: {text}\ntoken: {token}"
            );
        }
    };
    let verified = world.verifier.verify(token, now());
    match &verified {
        Ok(_) => tally.add("verified"),
        Err(failure) => {
            tally.add(&format!("verify:{}", failure.as_str()));
            assert_clean("a verification failure", &format!("{failure:?}"));
        }
    }
    let exchanged = world.upstream.exchange(token, now());
    match &exchanged {
        Ok(_) => tally.add("exchanged"),
        Err(e) => {
            tally.add(&format!("exchange:{}", e.code()));
            assert_clean("an exchange error", &e.to_string());
            assert_clean("an exchange error", &format!("{e:?}"));
        }
    }
    let request = DecisionRequest::from_value(&json!({
        "principal": "Agent::\"support-bot\"",
        "action": "Action::\"read_ticket\"",
        "resource": "Ticket::\"T-1\"",
        "credential": token,
        "time": "2026-03-02T10:05:00Z",
    }))
    .unwrap();
    match world.engine.decide(&request) {
        Ok(decision) => assert_clean("a decision", &serde_json::to_string(&decision).unwrap()),
        Err(e) => assert_clean("a request error", &e.to_string()),
    }
    (verified.is_ok(), exchanged.is_ok())
}

// ------------------------------------------------------------------------ 3. tokens

/// Arbitrary text as a token. The keyring is created for this run, so nothing here is
/// signed by it: the verifier accepts nothing. The exchange accepts only the corpus's
/// tokens signed with the fixture keys, unchanged.
#[test]
fn token_bytes() {
    let world = world();
    let world = AssertUnwindSafe(&world);
    let signed_upstream = corpus("token_bytes");
    let tally = Tally::default();
    check!()
        .with_iterations(TOKEN_ITERATIONS)
        .with_max_len(4096)
        .for_each(|bytes: &[u8]| {
            let token = String::from_utf8_lossy(bytes);
            let (verified, exchanged) = present(&world, &token, &[], &tally);
            assert!(
                !verified,
                "a token not signed by the keyring verified: {token}"
            );
            if exchanged {
                assert!(
                    signed_upstream.iter().any(|s| s.trim_end() == token),
                    "an exchange accepted a token no fixture key signed: {token}"
                );
            }
        });
    tally.report("token_bytes");
}

/// Near-valid compact JWS: header and claims from a grammar of the real ones, signed with
/// the real keys (the keyring's, the fixtures') or the wrong ones, then changed or not.
/// Only an unchanged token signed by the right key may verify or be exchanged, and no
/// error quotes the token, its payload or a secret claim.
#[test]
fn token_structured() {
    let world = world();
    let world = AssertUnwindSafe(&world);
    let tally = Tally::default();
    check!().with_iterations(TOKEN_ITERATIONS).run(|| {
        let token = token::generate(&world);
        let (verified, exchanged) = present(&world, &token.text, &token.markers, &tally);
        if verified {
            assert!(
                token.signed_by == Some(token::Signer::Arbiter) && !token.changed,
                "a token the keyring did not sign as sent verified: {token:?}"
            );
        }
        if exchanged {
            assert!(
                matches!(token.signed_by, Some(token::Signer::Fixture)) && !token.changed,
                "a token no issuer key signed as sent was exchanged: {token:?}"
            );
        }
    });
    tally.report("token_structured");
}

mod token {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Signer {
        /// The keyring's active key, EdDSA.
        Arbiter,
        /// The fixture key of the header's algorithm.
        Fixture,
    }

    #[derive(Debug)]
    pub struct Token {
        pub text: String,
        /// Who signed `header.payload` as first built, with the algorithm its header names.
        pub signed_by: Option<Signer>,
        /// Whether the text was changed after signing.
        pub changed: bool,
        pub markers: Vec<String>,
    }

    fn pick_value(choices: &[Value]) -> Value {
        choices.pick().clone()
    }

    fn time(base: i64) -> Value {
        match (0u8..8).any() {
            0 => json!(base as f64 + 0.5),
            1 => json!(base.to_string()),
            2 => json!(1e300),
            3 => json!(i64::MAX),
            4 => Value::Null,
            _ => json!(base + (-3600i64..3600).any()),
        }
    }

    fn header(world: &World, alg: &str, wild: bool) -> Value {
        let mut header = serde_json::Map::new();
        if !wild || (0u8..12).any() != 0 {
            header.insert("alg".into(), json!(alg));
        }
        let kid = match (0u8..6).any() {
            0 if wild => None,
            1 if wild => Some(json!("other-kid")),
            2 if wild => Some(json!(7)),
            _ if alg == "EdDSA" => Some(json!(world.keyring.active_kid())),
            _ => Some(json!("k")),
        };
        if let Some(kid) = kid {
            header.insert("kid".into(), kid);
        }
        if any::<bool>() {
            header.insert("typ".into(), json!("JWT"));
        }
        match (0u8..12).any() {
            0 if wild => {
                header.insert("crit".into(), json!(["b64"]));
            }
            1 if wild => {
                header.insert("b64".into(), json!(false));
            }
            2 if wild => {
                header.insert("jku".into(), json!("https://evil.example/jwks"));
            }
            _ => {}
        }
        Value::Object(header)
    }

    /// Claims that every check passes for `issuer`'s tokens, with a few optional ones.
    fn good_claims(issuer: &str, marker: &str) -> Value {
        let base = now().as_second();
        let mut claims = json!({
            "iss": issuer, "aud": "arbiter", "jti": "01TEST",
            "iat": base - (0i64..600).any(), "nbf": base - 60, "exp": base + (1i64..3600).any(),
            "secret": marker,
        });
        claims["sub"] = match issuer {
            "arbiter" => json!("Agent::\"support-bot\""),
            K8S_ISS => json!("system:serviceaccount:payments:api"),
            SPIRE_ISS => json!("spiffe://prod.acme.com/ns/payments/sa/api"),
            _ => json!("repo:acme/billing:ref:refs/heads/main"),
        };
        if issuer == GITHUB_ISS {
            claims["repository"] = json!("acme/billing");
            claims["repository_owner"] = json!("acme");
            claims["ref"] = json!("refs/heads/main");
        }
        for (name, value) in [
            ("intent", json!("triage")),
            ("session", json!("s-1")),
            ("via", json!("github")),
            ("attrs", json!({"team": "support"})),
        ] {
            if any::<bool>() {
                claims[name] = value;
            }
        }
        claims
    }

    fn claims(issuer: &str, marker: &str) -> Value {
        let base = now().as_second();
        let mut claims = serde_json::Map::new();
        let iss = match (0u8..10).any() {
            0 => pick_value(&[json!(7), json!(""), json!("https://unknown.example")]),
            _ => json!(issuer),
        };
        claims.insert("iss".into(), iss);
        let sub = pick_value(&[
            json!("Agent::\"support-bot\""),
            json!("system:serviceaccount:payments:api"),
            json!("system:serviceaccount:payments"),
            json!("spiffe://prod.acme.com/ns/payments/sa/api"),
            json!("spiffe://Prod/x"),
            json!("not a uid"),
            json!(1),
        ]);
        if (0u8..10).any() != 0 {
            claims.insert("sub".into(), sub);
        }
        let aud = pick_value(&[
            json!("arbiter"),
            json!(["other", "arbiter"]),
            json!("other"),
            json!(["arbiter", 1]),
            json!(1),
        ]);
        if (0u8..10).any() != 0 {
            claims.insert("aud".into(), aud);
        }
        for (name, offset) in [("iat", -60), ("nbf", -60), ("exp", 600)] {
            if (0u8..8).any() != 0 {
                claims.insert(name.into(), time(base + offset));
            }
        }
        if (0u8..8).any() != 0 {
            claims.insert(
                "jti".into(),
                pick_value(&[json!("01TEST"), json!(""), json!(3)]),
            );
        }
        for (name, values) in [
            ("intent", &[json!("triage"), json!(""), json!(1)][..]),
            ("session", &[json!("s-1"), json!("")][..]),
            ("via", &[json!("github"), json!("")][..]),
            (
                "attrs",
                &[json!({"team": "support"}), json!({"n": 1}), json!("x")][..],
            ),
            ("repository", &[json!("acme/billing"), json!(1)][..]),
            ("repository_owner", &[json!("acme"), json!("evil")][..]),
            ("ref", &[json!("refs/heads/main"), Value::Null][..]),
        ] {
            if any::<bool>() {
                claims.insert(name.into(), values.pick().clone());
            }
        }
        // A claim no check reads: what an error quoting the payload would leak.
        claims.insert("secret".into(), json!(marker));
        Value::Object(claims)
    }

    /// Changes the text after signing; returns whether it changed.
    fn change(text: &mut String) -> bool {
        let before = text.clone();
        let parts: Vec<String> = text.split('.').map(str::to_owned).collect();
        match (0u8..9).any() {
            0..=2 => {
                // One character of one part replaced by another base64url character.
                let mut bytes = text.clone().into_bytes();
                if !bytes.is_empty() {
                    let i = (0..bytes.len()).any();
                    let alphabet =
                        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=";
                    bytes[i] = *alphabet.pick();
                }
                *text = String::from_utf8(bytes).unwrap();
            }
            3 => {
                let keep = (0..=text.len()).any();
                text.truncate(keep);
            }
            4 if parts.len() == 3 => *text = format!("{}.{}.{}", parts[1], parts[0], parts[2]),
            5 => text.push_str(&format!(".{}", b64("x"))),
            6 if parts.len() == 3 => *text = format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
            7 if parts.len() == 3 => *text = format!("{}.{}.", parts[0], parts[1]),
            _ if parts.len() == 3 => {
                // Another payload under the same signature.
                *text = format!("{}.{}.{}", parts[0], b64(r#"{"iss":"arbiter"}"#), parts[2]);
            }
            _ => {}
        }
        *text != before
    }

    pub fn generate(world: &World) -> Token {
        let marker = format!("SECRET-{:016x}", any::<u64>());
        let (alg, issuer) = *[
            ("EdDSA", "arbiter"),
            ("EdDSA", SPIRE_ISS),
            ("ES256", K8S_ISS),
            ("ES256", SPIRE_ISS),
            ("EdDSA", "arbiter"),
            ("RS256", GITHUB_ISS),
            ("none", "arbiter"),
            ("HS256", GITHUB_ISS),
            ("EdDSA", K8S_ISS),
        ]
        .pick();
        // Half the tokens are well formed through and through, so the checks after the
        // signature run too; the other half go wild in header and claims.
        let wild = any::<bool>();
        let header = header(world, alg, wild);
        let claims = if wild {
            claims(issuer, &marker)
        } else {
            good_claims(issuer, &marker)
        };
        let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
        let named = header.get("alg").and_then(Value::as_str) == Some(alg);
        // Who signs: the key of the header's algorithm, the wrong key, or no one.
        let (signature, signed_by) = match ((0u8..8).any(), alg) {
            (0, _) if wild => (b64([0u8; 64]), None),
            (1, _) if wild => (
                b64(SigningKey::from_bytes(&[9; 32])
                    .sign(input.as_bytes())
                    .to_bytes()),
                None,
            ),
            (_, "EdDSA") if issuer == "arbiter" => (
                b64(world.arbiter_key.sign(input.as_bytes()).to_bytes()),
                named.then_some(Signer::Arbiter),
            ),
            (_, "EdDSA") => (world.ed25519.sign(&input), named.then_some(Signer::Fixture)),
            (_, "ES256") => (world.p256.sign(&input), named.then_some(Signer::Fixture)),
            (_, "RS256") => (world.rsa.sign(&input), named.then_some(Signer::Fixture)),
            _ => (String::new(), None),
        };
        let mut text = format!("{input}.{signature}");
        let changed = (0u8..3).any() == 0 && change(&mut text);
        Token {
            text,
            signed_by,
            changed,
            markers: vec![marker],
        }
    }
}

// ------------------------------------------------------------------------ 4. JWKS

/// Arbitrary text as a fetched JWKS: no panic, and anything that is not a JSON object
/// with a `keys` array is refused.
#[test]
fn jwks_bytes() {
    let world = world();
    let world = AssertUnwindSafe(&world);
    let tally = Tally::default();
    check!()
        .with_iterations(JWKS_ITERATIONS)
        .with_max_len(4096)
        .for_each(|bytes: &[u8]| {
            let text = String::from_utf8_lossy(bytes);
            let result = world.upstream.set_jwks("remote", &text, now());
            tally.add(if result.is_ok() { "keys" } else { "refused" });
            let shaped = serde_json::from_str::<Value>(&text)
                .is_ok_and(|v| v.get("keys").is_some_and(Value::is_array));
            if !shaped {
                assert!(result.is_err(), "not a JWKS, yet accepted: {text}");
            }
        });
    tally.report("jwks_bytes");
}

/// JWKS-like documents: the fixtures' real keys (RSA, EC P-256, OKP Ed25519) and keys
/// with odd sizes, missing or mistyped fields, other types and curves. No panic; a set
/// with no usable key is refused, a set with an untouched real key is accepted.
#[test]
fn jwks_structured() {
    let world = world();
    let world = AssertUnwindSafe(&world);
    let tally = Tally::default();
    check!().with_iterations(JWKS_ITERATIONS).run(|| {
        let (text, usable) = jwks::generate(&world);
        let result = world.upstream.set_jwks("remote", &text, now());
        tally.add(if result.is_ok() { "keys" } else { "refused" });
        if usable == Some(false) {
            assert!(result.is_err(), "no key is usable, yet accepted: {text}");
        }
    });
    tally.report("jwks_structured");
}

/// A key that cannot be read does not hide the good ones of the same set: RFC 7517 §5
/// says to ignore JWKs of a type not understood, missing members or out of range.
#[test]
fn jwks_a_bad_key_does_not_hide_a_good_one() {
    let world = world();
    let world = AssertUnwindSafe(&world);
    check!().with_iterations(JWKS_ITERATIONS).run(|| {
        let (text, usable) = jwks::generate(&world);
        let result = world.upstream.set_jwks("remote", &text, now());
        if usable == Some(true) {
            assert!(result.is_ok(), "a real key was refused: {result:?}\n{text}");
        }
    });
}

mod jwks {
    use super::*;

    /// One key, and whether it is usable: `Some(true)` an untouched real key,
    /// `Some(false)` one that cannot be, `None` when it depends.
    fn key(world: &World) -> (Value, Option<bool>) {
        let real = [&world.rsa, &world.p256, &world.ed25519].pick().jwk();
        let mut key = real.clone();
        let object = key.as_object_mut().unwrap();
        let usable = match (0u8..16).any() {
            0..=3 => Some(true),
            4 => {
                object.insert(
                    "kid".into(),
                    json!(produce_with::<String>().len(0usize..8).any()),
                );
                Some(true)
            }
            5 => {
                // A required member removed. Without `kty` jsonwebtoken still reads the
                // key from its other members (RFC 7517 makes `kty` required), so that one
                // is not known to make the key unusable.
                let fields: Vec<String> = object
                    .keys()
                    .filter(|k| matches!(k.as_str(), "kty" | "n" | "e" | "crv" | "x" | "y"))
                    .cloned()
                    .collect();
                let field = fields.pick().clone();
                object.remove(&field);
                if field == "kty" { None } else { Some(false) }
            }
            6 => {
                object.insert("use".into(), json!("enc"));
                Some(false)
            }
            7 => {
                object.insert(
                    "kty".into(),
                    json!(["oct", "rsa", "", "EC", "OKP", "RSA"].pick()),
                );
                None
            }
            8 => {
                // Odd sizes: a number or coordinate of another length.
                let len = *[0usize, 1, 31, 33, 64, 255, 257, 513, 1025].pick();
                let field = ["n", "x", "y", "e"].pick();
                if object.contains_key(*field) {
                    object.insert((*field).into(), json!(b64(vec![0xA5u8; len])));
                    // Unusable: an RSA modulus outside 2048 to 4096 bits, a coordinate
                    // or an Ed25519 key of other than 32 bytes. Anything else may
                    // still read (the numbers are not checked here, the server does).
                    let odd = match *field {
                        "n" => !(256..=512).contains(&len),
                        "x" | "y" => len != 32,
                        _ => false,
                    };
                    if odd { Some(false) } else { None }
                } else {
                    Some(true)
                }
            }
            9 => {
                let field = ["n", "x", "y", "e", "crv", "alg", "kid"].pick();
                object.insert(
                    (*field).into(),
                    [json!(1), json!(null), json!("!!"), json!({})]
                        .pick()
                        .clone(),
                );
                None
            }
            10 => {
                object.insert(
                    "crv".into(),
                    json!(["P-384", "X25519", "Ed448", "secp256k1"].pick()),
                );
                None
            }
            11 => {
                object.insert(
                    "alg".into(),
                    json!(["RS256", "ES256", "EdDSA", "HS256", "none", "RSA-OAEP"].pick()),
                );
                None
            }
            12 => {
                object.insert("key_ops".into(), json!(["verify"]));
                None
            }
            _ => {
                // Not a key object at all.
                let bytes: Vec<u8> = produce_with::<Vec<u8>>().len(0usize..16).any();
                return (json!(bytes), Some(false));
            }
        };
        (key, usable)
    }

    /// A document and whether it has a usable key (see [`key`]).
    pub fn generate(world: &World) -> (String, Option<bool>) {
        let n = (0usize..4).any();
        let mut keys = Vec::new();
        let mut usable = Some(false);
        for _ in 0..n {
            let (key, ok) = key(world);
            keys.push(key);
            usable = match (usable, ok) {
                (Some(true), _) | (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            };
        }
        let document = match (0u8..12).any() {
            0 => {
                usable = Some(false);
                json!({"keys": {}})
            }
            1 => {
                usable = Some(false);
                Value::Array(keys)
            }
            2 => json!({"keys": keys, "extra": 1}),
            _ => json!({ "keys": keys }),
        };
        (document.to_string(), usable)
    }
}

// ------------------------------------------------------------------------ the corpus

/// Writes the corpus of `token_bytes` and `jwks_bytes` from the fixture keys: tokens in
/// the shapes the tests sign (arbiter's own, GitHub, Kubernetes, SPIFFE), and the
/// fixtures' public keys as JWKS documents. Run it after changing a fixture:
/// `cargo test -p arbiter-identity --test fuzz -- --ignored write_corpus`.
#[test]
#[ignore = "writes the corpus files; run by hand after changing a fixture"]
fn write_corpus() {
    let world = world();
    let base = now().as_second();
    let write = |target: &str, name: &str, text: &str| {
        let dir = corpus_dir(target);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(name), text).unwrap();
    };
    let sign = |key: &FixtureKey, kid: &str, claims: Value| {
        let header = json!({"alg": format!("{:?}", key.alg), "typ": "JWT", "kid": kid});
        let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
        format!("{input}.{}", key.sign(&input))
    };
    let times = json!({"iat": base - 60, "nbf": base - 60, "exp": base + 600});
    let with_times = |mut claims: Value| {
        for (k, v) in times.as_object().unwrap() {
            claims[k] = v.clone();
        }
        claims
    };
    let jwk_kid = |key: &FixtureKey, kid: &str| {
        let mut jwk = key.jwk();
        jwk["kid"] = json!(kid);
        jwk
    };
    write(
        "token_bytes",
        "github-actions.jwt",
        &sign(
            &world.rsa,
            "gh-1",
            with_times(
                json!({"iss": GITHUB_ISS, "aud": "arbiter", "sub": "repo:acme/billing:environment:prod",
                "repository": "acme/billing", "repository_owner": "acme", "ref": "refs/heads/main",
                "environment": "prod"}),
            ),
        ),
    );
    write(
        "token_bytes",
        "kubernetes.jwt",
        &sign(
            &world.p256,
            "k8s-1",
            with_times(
                json!({"iss": K8S_ISS, "aud": ["arbiter"], "sub": "system:serviceaccount:payments:api"}),
            ),
        ),
    );
    write(
        "token_bytes",
        "spiffe.jwt",
        &sign(
            &world.ed25519,
            "spire-1",
            with_times(
                json!({"iss": SPIRE_ISS, "aud": "arbiter", "sub": "spiffe://prod.acme.com/ns/payments/sa/api"}),
            ),
        ),
    );
    // arbiter's own shape (tests/tokens.rs), signed by a key no keyring of a run has.
    let key = SigningKey::from_bytes(&[3; 32]);
    let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": "corpus"});
    let claims = with_times(
        json!({"iss": "arbiter", "sub": "Agent::\"support-bot\"", "aud": "arbiter",
        "jti": "01TEST", "intent": "triage", "session": "s-1", "attrs": {"team": "support"}, "via": "github"}),
    );
    let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
    write(
        "token_bytes",
        "arbiter.jwt",
        &format!("{input}.{}", b64(key.sign(input.as_bytes()).to_bytes())),
    );
    write(
        "jwks_bytes",
        "fixtures.json",
        &json!({"keys": [jwk_kid(&world.rsa, "gh-1"), jwk_kid(&world.p256, "k8s-1"), jwk_kid(&world.ed25519, "spire-1")]})
            .to_string(),
    );
    write(
        "jwks_bytes",
        "rsa.json",
        &json!({"keys": [world.rsa.jwk()]}).to_string(),
    );
    write(
        "jwks_bytes",
        "p256.json",
        &json!({"keys": [world.p256.jwk()]}).to_string(),
    );
    write(
        "jwks_bytes",
        "ed25519.json",
        &json!({"keys": [world.ed25519.jwk()]}).to_string(),
    );
    write(
        "jwks_bytes",
        "keyring.json",
        &world.keyring.jwks().to_string(),
    );
}

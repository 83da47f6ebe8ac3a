//! Upstream token exchange: tokens of GitHub Actions, Kubernetes and SPIFFE issuers,
//! signed here with the fixture keys, verified against a pack's `[[issuers]]` and mapped to
//! principals; and every way such a token is refused.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

mod common;

use std::fs;

use arbiter_core::Pack;
use arbiter_identity::{ExchangeError, Upstream};
use common::{at, b64};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const GITHUB_ISS: &str = "https://token.actions.githubusercontent.com";
const K8S_ISS: &str = "https://kubernetes.default.svc";
const SPIRE_ISS: &str = "https://spire.acme.internal";

const SCHEMA: &str = r#"
entity CiJob { repo: String, git_ref: String, env: String };
entity Workload { namespace: String, account: String };
entity Service { trust_domain?: String };
entity Target;
action deploy appliesTo { principal: [CiJob, Workload, Service], resource: [Target] };
"#;

const CONFIG: &str = r#"
[credentials]
leeway = "30s"

[intents.deploy]
actions = ["deploy"]
max_ttl = "10m"

[[issuers]]
name = "github"
preset = "github-actions"
audience = "arbiter"
jwks_file = "keys/github.json"
principal = 'CiJob::"{repository}@{ref}"'
attributes = { repo = "repository", git_ref = "ref", env = "environment" }
require = { repository_owner = "acme" }
intents = ["deploy"]

[[issuers]]
name = "k8s"
preset = "kubernetes"
issuer = "https://kubernetes.default.svc"
audience = "arbiter"
jwks_file = "keys/k8s.json"
principal = 'Workload::"{namespace}/{serviceaccount}"'
attributes = { namespace = "namespace", account = "serviceaccount" }

[[issuers]]
name = "spire"
preset = "spiffe"
issuer = "https://spire.acme.internal"
audience = "arbiter"
jwks_file = "keys/spire.json"
principal = 'Service::"{path}"'
attributes = { trust_domain = "trust_domain" }
require = { trust_domain = "prod.acme.com" }

[[issuers]]
name = "remote"
preset = "spiffe"
issuer = "https://remote.example"
audience = "arbiter"
jwks_url = "https://remote.example/jwks.json"
jwks_refresh = "10m"
principal = 'Service::"{path}"'
"#;

/// A fixture key: what signs, and its public JWK with `kid` (when given).
struct TestKey {
    alg: Algorithm,
    signing: EncodingKey,
    kid: Option<&'static str>,
}

impl TestKey {
    fn new(alg: Algorithm, kid: Option<&'static str>) -> TestKey {
        let signing = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(include_bytes!("fixtures/rsa.pem")),
            Algorithm::ES256 => EncodingKey::from_ec_pem(include_bytes!("fixtures/p256.pem")),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(include_bytes!("fixtures/ed25519.pem")),
            other => panic!("no fixture for {other:?}"),
        }
        .unwrap();
        TestKey { alg, signing, kid }
    }

    fn jwk(&self) -> Value {
        let mut jwk = Jwk::from_encoding_key(&self.signing, self.alg).unwrap();
        jwk.common.key_id = self.kid.map(str::to_owned);
        serde_json::to_value(jwk).unwrap()
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_as(self.alg, self.kid, claims)
    }

    fn sign_as(&self, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.signing).unwrap()
    }
}

fn github_key() -> TestKey {
    TestKey::new(Algorithm::RS256, Some("gh-1"))
}

fn jwks(keys: &[&TestKey]) -> String {
    json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() }).to_string()
}

/// The pack of [`CONFIG`] in a temporary directory, loaded.
fn upstream() -> (tempfile::TempDir, Upstream) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    fs::write(path.join("arbiter.toml"), CONFIG).unwrap();
    fs::write(path.join("schema.cedarschema"), SCHEMA).unwrap();
    fs::create_dir(path.join("policies")).unwrap();
    fs::write(
        path.join("policies/deploy.cedar"),
        "@id(\"deploy\")\npermit (principal, action == Action::\"deploy\", resource);\n",
    )
    .unwrap();
    fs::create_dir(path.join("keys")).unwrap();
    fs::write(path.join("keys/github.json"), jwks(&[&github_key()])).unwrap();
    let k8s = jwks(&[
        &TestKey::new(Algorithm::ES256, Some("k8s-ec")),
        &TestKey::new(Algorithm::RS256, Some("k8s-rsa")),
    ]);
    fs::write(path.join("keys/k8s.json"), k8s).unwrap();
    let spire = jwks(&[
        &TestKey::new(Algorithm::EdDSA, Some("spire-ed")),
        &TestKey::new(Algorithm::ES256, None),
    ]);
    fs::write(path.join("keys/spire.json"), spire).unwrap();
    let pack = Pack::load(path).unwrap_or_else(|problems| panic!("{problems:?}"));
    let upstream = Upstream::from_pack(&pack).unwrap();
    (dir, upstream)
}

/// A GitHub Actions token issued at 10:00 for 10 minutes.
fn github_claims() -> Value {
    json!({
        "iss": GITHUB_ISS,
        "aud": "arbiter",
        "sub": "repo:acme/api:ref:refs/heads/main",
        "repository": "acme/api",
        "repository_owner": "acme",
        "ref": "refs/heads/main",
        "workflow": "deploy",
        "job_workflow_ref": "acme/api/.github/workflows/deploy.yml@refs/heads/main",
        "environment": "prod",
        "iat": at("10:00:00").as_second(),
        "nbf": at("10:00:00").as_second(),
        "exp": at("10:10:00").as_second(),
    })
}

fn with(mut claims: Value, name: &str, value: Value) -> Value {
    claims[name] = value;
    claims
}

fn without(mut claims: Value, name: &str) -> Value {
    claims.as_object_mut().unwrap().remove(name);
    claims
}

#[test]
fn a_github_actions_token_maps_to_its_job() {
    let (_dir, upstream) = upstream();
    let token = github_key().sign(&github_claims());
    let exchanged = upstream.exchange(&token, at("10:01:00")).unwrap();
    assert_eq!(exchanged.issuer, "github");
    assert_eq!(
        exchanged.principal.to_string(),
        r#"CiJob::"acme/api@refs/heads/main""#
    );
    assert_eq!(
        exchanged.attributes,
        [
            ("env".to_owned(), "prod".to_owned()),
            ("git_ref".to_owned(), "refs/heads/main".to_owned()),
            ("repo".to_owned(), "acme/api".to_owned()),
        ]
        .into()
    );
    assert_eq!(exchanged.allowed_intents, Some(vec!["deploy".to_owned()]));
    assert_eq!(exchanged.expires_at, at("10:10:00"));
}

#[test]
fn github_tokens_that_do_not_fit_are_refused_each_for_its_reason() {
    let (_dir, upstream) = upstream();
    let key = github_key();
    let now = at("10:01:00");
    let claims = github_claims;
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "owner not required value",
            key.sign(&with(claims(), "repository_owner", json!("evil"))),
            "claim_mismatch",
        ),
        (
            "owner missing",
            key.sign(&without(claims(), "repository_owner")),
            "missing_claim",
        ),
        (
            "wrong aud",
            key.sign(&with(claims(), "aud", json!("other"))),
            "wrong_audience",
        ),
        (
            "no aud",
            key.sign(&without(claims(), "aud")),
            "wrong_audience",
        ),
        (
            "wrong iss",
            key.sign(&with(claims(), "iss", json!("https://evil.example"))),
            "unknown_issuer",
        ),
        (
            "kid not found",
            key.sign_as(Algorithm::RS256, Some("gh-2"), &claims()),
            "bad_signature",
        ),
        (
            "EdDSA is not GitHub's algorithm",
            TestKey::new(Algorithm::EdDSA, Some("gh-1")).sign(&claims()),
            "bad_signature",
        ),
        (
            "ES256 is not GitHub's algorithm",
            TestKey::new(Algorithm::ES256, Some("gh-1")).sign(&claims()),
            "bad_signature",
        ),
        (
            "HS256 keyed with the JWKS modulus",
            {
                let n = github_key().jwk()["n"].as_str().unwrap().to_owned();
                let mut header = Header::new(Algorithm::HS256);
                header.kid = Some("gh-1".to_owned());
                jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(n.as_bytes()))
                    .unwrap()
            },
            "bad_signature",
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(r#"{"alg":"none"}"#),
                b64(claims().to_string())
            ),
            "bad_signature",
        ),
        (
            "no exp",
            key.sign(&without(claims(), "exp")),
            "missing_claim",
        ),
        (
            "environment missing",
            key.sign(&without(claims(), "environment")),
            "missing_claim",
        ),
        (
            "repository a number",
            key.sign(&with(claims(), "repository", json!(42))),
            "malformed",
        ),
        (
            "ref a boolean",
            key.sign(&with(claims(), "ref", json!(true))),
            "malformed",
        ),
    ];
    for (what, token, code) in cases {
        let error = upstream.exchange(&token, now).unwrap_err();
        assert_eq!(error.code(), code, "{what}: {error}");
    }
    let error = upstream
        .exchange(
            &key.sign(&with(claims(), "repository_owner", json!("evil"))),
            now,
        )
        .unwrap_err();
    assert!(
        matches!(&error, ExchangeError::ClaimMismatch { claim } if claim == "repository_owner"),
        "{error:?}"
    );
    let error = upstream
        .exchange(&key.sign(&with(claims(), "repository", json!(42))), now)
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "malformed token: claim `repository` is a number, not a string"
    );
    let error = upstream
        .exchange(&key.sign(&without(claims(), "environment")), now)
        .unwrap_err();
    assert_eq!(error.to_string(), "the token has no claim `environment`");
}

#[test]
fn upstream_tokens_are_valid_only_in_their_window_with_leeway() {
    let (_dir, upstream) = upstream();
    let token = github_key().sign(&github_claims());
    assert!(upstream.exchange(&token, at("10:10:29")).is_ok());
    assert!(matches!(
        upstream.exchange(&token, at("10:10:30")),
        Err(ExchangeError::Expired)
    ));
    assert!(upstream.exchange(&token, at("09:59:30")).is_ok());
    assert!(matches!(
        upstream.exchange(&token, at("09:59:29")),
        Err(ExchangeError::NotYetValid)
    ));
}

#[test]
fn an_audience_list_holding_arbiter_is_accepted() {
    let (_dir, upstream) = upstream();
    let claims = with(
        github_claims(),
        "aud",
        json!(["sts.amazonaws.com", "arbiter"]),
    );
    assert!(
        upstream
            .exchange(&github_key().sign(&claims), at("10:01:00"))
            .is_ok()
    );
}

fn k8s_claims(sub: &str) -> Value {
    json!({
        "iss": K8S_ISS,
        "aud": ["arbiter"],
        "sub": sub,
        "iat": at("10:00:00").as_second(),
        "nbf": at("10:00:00").as_second(),
        "exp": at("11:00:00").as_second(),
        "kubernetes.io": {"namespace": "payments", "serviceaccount": {"name": "api"}},
    })
}

#[test]
fn a_kubernetes_token_maps_its_service_account() {
    let (_dir, upstream) = upstream();
    let now = at("10:01:00");
    for key in [
        TestKey::new(Algorithm::ES256, Some("k8s-ec")),
        TestKey::new(Algorithm::RS256, Some("k8s-rsa")),
    ] {
        let token = key.sign(&k8s_claims("system:serviceaccount:payments:api"));
        let exchanged = upstream.exchange(&token, now).unwrap();
        assert_eq!(exchanged.issuer, "k8s");
        assert_eq!(
            exchanged.principal.to_string(),
            r#"Workload::"payments/api""#
        );
        assert_eq!(exchanged.attributes["namespace"], "payments");
        assert_eq!(exchanged.attributes["account"], "api");
        assert_eq!(exchanged.allowed_intents, None);
    }
    let key = TestKey::new(Algorithm::ES256, Some("k8s-ec"));
    let error = upstream
        .exchange(&key.sign(&k8s_claims("system:node:worker-1")), now)
        .unwrap_err();
    assert_eq!(error.code(), "malformed", "{error}");
    // The RSA key is `k8s-rsa`: an ES256 token naming it finds no key.
    let token = key.sign_as(
        Algorithm::ES256,
        Some("k8s-rsa"),
        &k8s_claims("system:serviceaccount:a:b"),
    );
    assert!(matches!(
        upstream.exchange(&token, now),
        Err(ExchangeError::BadSignature)
    ));
    let expired = key.sign(&with(
        k8s_claims("system:serviceaccount:payments:api"),
        "exp",
        json!(at("10:00:30").as_second()),
    ));
    assert!(matches!(
        upstream.exchange(&expired, now),
        Err(ExchangeError::Expired)
    ));
}

fn spiffe_claims(sub: &str) -> Value {
    json!({
        "iss": SPIRE_ISS,
        "aud": "arbiter",
        "sub": sub,
        "iat": at("10:00:00").as_second(),
        "exp": at("10:05:00").as_second(),
    })
}

#[test]
fn a_spiffe_svid_maps_its_path() {
    let (_dir, upstream) = upstream();
    let now = at("10:01:00");
    let id = "spiffe://prod.acme.com/ns/payments/sa/api";
    // An Ed25519 key with a kid, and a P-256 key without one.
    for token in [
        TestKey::new(Algorithm::EdDSA, Some("spire-ed")).sign(&spiffe_claims(id)),
        TestKey::new(Algorithm::ES256, None).sign(&spiffe_claims(id)),
    ] {
        let exchanged = upstream.exchange(&token, now).unwrap();
        assert_eq!(exchanged.issuer, "spire");
        assert_eq!(
            exchanged.principal.to_string(),
            r#"Service::"ns/payments/sa/api""#
        );
        assert_eq!(exchanged.attributes["trust_domain"], "prod.acme.com");
    }
    let key = TestKey::new(Algorithm::EdDSA, Some("spire-ed"));
    let error = upstream
        .exchange(
            &key.sign(&spiffe_claims("spiffe://dev.acme.com/ns/payments/sa/api")),
            now,
        )
        .unwrap_err();
    assert!(
        matches!(&error, ExchangeError::ClaimMismatch { claim } if claim == "trust_domain"),
        "{error:?}"
    );
    for sub in [
        "payments-api",
        "spiffe://prod.acme.com",
        "spiffe://prod.acme.com/a/../b",
    ] {
        let error = upstream
            .exchange(&key.sign(&spiffe_claims(sub)), now)
            .unwrap_err();
        assert_eq!(error.code(), "malformed", "{sub}: {error}");
    }
    let error = upstream
        .exchange(&key.sign(&without(spiffe_claims(id), "sub")), now)
        .unwrap_err();
    assert!(
        matches!(&error, ExchangeError::MissingClaim(c) if c == "sub"),
        "{error:?}"
    );
    let token = key.sign_as(Algorithm::EdDSA, Some("spire-other"), &spiffe_claims(id));
    assert!(matches!(
        upstream.exchange(&token, now),
        Err(ExchangeError::BadSignature)
    ));
}

#[test]
fn a_jwks_url_issuer_has_no_keys_until_the_server_sets_them() {
    let (_dir, upstream) = upstream();
    let key = TestKey::new(Algorithm::EdDSA, Some("remote-1"));
    let claims = with(
        spiffe_claims("spiffe://remote.example/agent"),
        "iss",
        json!("https://remote.example"),
    );
    let token = key.sign(&claims);
    let now = at("10:01:00");
    let error = upstream.exchange(&token, now).unwrap_err();
    assert!(
        matches!(&error, ExchangeError::NoKeys(name) if name == "remote"),
        "{error:?}"
    );
    assert_eq!(error.code(), "no_keys");

    let due = vec![(
        "remote".to_owned(),
        "https://remote.example/jwks.json".to_owned(),
    )];
    assert_eq!(upstream.due_for_fetch(now), due);
    assert!(upstream.set_jwks("remote", "not json", now).is_err());
    assert!(
        upstream
            .set_jwks("remote", r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#, now)
            .is_err()
    );
    assert_eq!(
        upstream.due_for_fetch(now),
        due,
        "a failed fetch leaves it due"
    );
    assert!(
        upstream.set_jwks("spire", &jwks(&[&key]), now).is_err(),
        "a jwks_file issuer"
    );
    assert!(upstream.set_jwks("nobody", &jwks(&[&key]), now).is_err());

    // RFC 7517 §5: keys arbiter cannot read are skipped, never a reason to drop the good
    // one beside them (found by the JWKS fuzz target); a key without `kty` is not a key.
    let mut without_kty = key.jwk();
    without_kty.as_object_mut().unwrap().remove("kty");
    let mixed = json!({"keys": [
        {"kty": "oct", "k": "c2VjcmV0"}, 1, {"kty": "RSA", "n": 7}, without_kty, key.jwk(),
    ]});
    upstream
        .set_jwks("remote", &mixed.to_string(), now)
        .unwrap();
    let only_bad = json!({"keys": [1, {"kty": "RSA", "n": 7}, without_kty]});
    let refused = upstream
        .set_jwks("remote", &only_bad.to_string(), now)
        .unwrap_err()
        .to_string();
    assert!(
        refused.starts_with("[[issuers]] `remote` jwks_url: no key in it can verify ")
            && refused.ends_with(arbiter_core::jwk::RULE),
        "{refused}"
    );
    assert!(upstream.set_jwks("remote", r#"{"keys": {}}"#, now).is_err());

    upstream.set_jwks("remote", &jwks(&[&key]), now).unwrap();
    let exchanged = upstream.exchange(&token, now).unwrap();
    assert_eq!(exchanged.issuer, "remote");
    assert_eq!(exchanged.principal.to_string(), r#"Service::"agent""#);
    assert!(upstream.due_for_fetch(at("10:10:59")).is_empty());
    assert_eq!(upstream.due_for_fetch(at("10:11:00")), due);
}

#[test]
fn malformed_upstream_tokens_say_so() {
    let (_dir, upstream) = upstream();
    let header = b64(r#"{"alg":"RS256","kid":"gh-1"}"#);
    for token in [
        String::new(),
        "...".to_owned(),
        "a.b.c".to_owned(),
        format!("{header}.{}.", b64("[1]")),
        format!("{header}.{}.", b64([0xff, 0xfe])),
        format!("{header}.{}.x", "A".repeat(40_000)),
        format!("{header}.{}.x", b64(r#"{"iss": 5}"#)),
        format!("{header}.{}.x", b64(r#"{"aud": "arbiter"}"#)),
    ] {
        let error = upstream.exchange(&token, at("10:00:00")).unwrap_err();
        assert_eq!(error.code(), "malformed", "{token:.60}: {error}");
    }
}

/// A claim twice, signed by the issuer's real key: a strict reader in front (a proxy that
/// checked `repository_owner`) and a lenient one (keeping the last) would see two owners.
#[test]
fn a_claim_twice_in_a_signed_upstream_token_is_malformed() {
    let (_dir, upstream) = upstream();
    let key = github_key();
    let claims = github_claims().to_string();
    let twice = format!(r#"{{"repository_owner":"evil",{}"#, &claims[1..]);
    serde_json::from_str::<Value>(&twice).unwrap();
    let input = format!(
        "{}.{}",
        b64(r#"{"alg":"RS256","typ":"JWT","kid":"gh-1"}"#),
        b64(&twice)
    );
    let token = format!(
        "{input}.{}",
        jsonwebtoken::crypto::sign(input.as_bytes(), &key.signing, key.alg).unwrap()
    );
    let error = upstream.exchange(&token, at("10:01:00")).unwrap_err();
    assert_eq!(
        error.to_string(),
        "malformed token: the payload has a key twice"
    );
}

#[test]
fn every_error_has_its_code() {
    let codes = [
        (ExchangeError::Malformed(String::new()), "malformed"),
        (
            ExchangeError::UnknownIssuer(String::new()),
            "unknown_issuer",
        ),
        (ExchangeError::BadSignature, "bad_signature"),
        (ExchangeError::Expired, "expired"),
        (ExchangeError::NotYetValid, "not_yet_valid"),
        (ExchangeError::WrongAudience, "wrong_audience"),
        (
            ExchangeError::ClaimMismatch {
                claim: String::new(),
            },
            "claim_mismatch",
        ),
        (ExchangeError::MissingClaim(String::new()), "missing_claim"),
        (ExchangeError::NoKeys(String::new()), "no_keys"),
    ];
    for (error, code) in codes {
        assert_eq!(error.code(), code);
    }
}

#[test]
fn exchange_never_panics() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let (_dir, upstream) = upstream();
    // Ed25519 signs in microseconds even in a debug build; RSA would take the test's time.
    let key = TestKey::new(Algorithm::EdDSA, Some("spire-ed"));
    let strategy = (
        prop_oneof![
            Just("RS256".to_owned()),
            Just("EdDSA".to_owned()),
            Just("none".to_owned()),
            "\\PC{0,6}",
        ],
        prop::collection::btree_map(
            prop_oneof![
                Just("sub".to_owned()),
                Just("aud".to_owned()),
                Just("exp".to_owned()),
                Just("nbf".to_owned()),
                "[a-z_]{1,12}",
            ],
            prop_oneof![
                "\\PC{0,16}".prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(|f| json!(f)),
                Just(json!(["arbiter", 1])),
                Just(json!({"a": null})),
            ],
            0..6,
        ),
        "\\PC{0,120}",
    );
    TestRunner::new(Config::with_cases(64))
        .run(&strategy, |(alg, extra, junk)| {
            let mut claims = spiffe_claims("spiffe://prod.acme.com/api");
            for (k, v) in extra {
                claims[k] = v;
            }
            let signed = key.sign(&claims);
            // Properly signed: mapped or refused, either way without a panic.
            let _mapped_or_refused = upstream.exchange(&signed, at("10:01:00"));
            let header = b64(json!({"alg": alg, "kid": "spire-ed"}).to_string());
            let signature = signed.rsplit('.').next().unwrap();
            for token in [
                format!("{header}.{}.{signature}", b64(claims.to_string())),
                junk.clone(),
                format!("{header}.{}.{junk}", b64(&junk)),
            ] {
                if token != signed {
                    prop_assert!(upstream.exchange(&token, at("10:01:00")).is_err());
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn the_shared_types_can_cross_threads() {
    fn shared<T: Send + Sync + std::fmt::Debug>() {}
    shared::<Upstream>();
    shared::<arbiter_identity::Verifier>();
    shared::<arbiter_identity::Revocations>();
    shared::<arbiter_identity::Keyring>();
}

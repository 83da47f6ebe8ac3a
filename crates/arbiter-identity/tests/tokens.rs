//! arbiter's own tokens: minting within the pack's limits, and verification refusing every
//! token that is not exactly one arbiter issued, each with its own reason.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use arbiter_core::credential::{CredentialFailure, CredentialVerifier};
use arbiter_identity::{Keyring, MintError, MintRequest, Minted, Revoked, mint};
use common::{at, b64, config, forge, part, signing_key, verifier};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};

const BOT: &str = r#"Agent::"support-bot""#;

fn request(ttl_minutes: u64) -> MintRequest {
    MintRequest {
        principal: BOT.parse().unwrap(),
        ttl: Duration::from_secs(ttl_minutes * 60),
        intent: None,
        session: None,
        audience: None,
        attributes: BTreeMap::new(),
        via: None,
    }
}

fn keyring() -> (tempfile::TempDir, Keyring) {
    let dir = tempfile::tempdir().unwrap();
    let keyring = Keyring::load_or_create(dir.path(), at("09:00:00")).unwrap();
    (dir, keyring)
}

fn mint_at(keyring: &Keyring, request: &MintRequest, time: &str) -> Minted {
    let config = config();
    mint(
        keyring,
        &config.credentials,
        &config.intents,
        request,
        at(time),
    )
    .unwrap()
}

/// The claims of a good token minted at 10:00 for 10 minutes, to alter one at a time.
fn good_claims() -> Value {
    json!({
        "iss": "arbiter", "sub": BOT, "aud": "arbiter", "jti": "01TEST",
        "iat": at("10:00:00").as_second(), "nbf": at("10:00:00").as_second(),
        "exp": at("10:10:00").as_second(),
    })
}

#[test]
fn a_good_token_verifies_with_every_field() {
    let (_dir, keyring) = keyring();
    let (verifier, _) = verifier(&keyring);
    let mut request = request(10);
    request.intent = Some("triage".to_owned());
    request.session = Some("s-1".to_owned());
    request
        .attributes
        .insert("team".to_owned(), "support".to_owned());
    request.via = Some("github".to_owned());
    let minted = mint_at(&keyring, &request, "10:00:00");
    assert_eq!(minted.expires_at, at("10:10:00"));

    let header = part(&minted.token, 0);
    assert_eq!(
        header,
        json!({"alg": "EdDSA", "typ": "JWT", "kid": keyring.active_kid()})
    );
    let claims = part(&minted.token, 1);
    assert_eq!(claims["sub"], BOT);
    assert_eq!(claims["iss"], "arbiter");
    assert_eq!(claims["aud"], "arbiter");
    assert_eq!(claims["nbf"], claims["iat"]);
    assert_eq!(claims["attrs"], json!({"team": "support"}));

    let c = verifier.verify(&minted.token, at("10:05:00")).unwrap();
    assert_eq!(c.jti, minted.jti);
    assert_eq!(c.issuer, "github", "the upstream issuer's name, from `via`");
    assert_eq!(c.principal.to_string(), BOT);
    assert_eq!(c.intent.as_deref(), Some("triage"));
    assert_eq!(c.session.as_deref(), Some("s-1"));
    assert_eq!(c.issued_at, at("10:00:00"));
    assert_eq!(c.expires_at, at("10:10:00"));
    assert_eq!(c.attributes["team"], "support");

    let plain = mint_at(&keyring, &self::request(10), "10:00:00");
    let c = verifier.verify(&plain.token, at("10:05:00")).unwrap();
    assert_eq!(c.issuer, "arbiter");
    assert_eq!((c.intent, c.session), (None, None));
    assert!(c.attributes.is_empty());
    assert_ne!(plain.jti, minted.jti);
}

#[test]
fn a_repeated_token_is_still_checked_against_the_time_it_is_given() {
    let (_dir, keyring) = keyring();
    let (verifier, revocations) = verifier(&keyring);
    let minted = mint_at(&keyring, &request(10), "10:00:00");
    let first = verifier.verify(&minted.token, at("10:01:00")).unwrap();
    assert_eq!(
        verifier.verify(&minted.token, at("10:02:00")).unwrap(),
        first
    );
    assert_eq!(
        verifier.verify(&minted.token, at("10:11:00")),
        Err(CredentialFailure::Expired)
    );
    assert_eq!(
        verifier.verify(&minted.token, at("09:58:00")),
        Err(CredentialFailure::NotYetValid)
    );
    assert!(verifier.verify(&minted.token, at("10:03:00")).is_ok());
    revocations.apply(&Revoked::Jti(minted.jti.clone()));
    assert_eq!(
        verifier.verify(&minted.token, at("10:04:00")),
        Err(CredentialFailure::Revoked)
    );
}

#[test]
fn expiry_and_start_allow_exactly_the_leeway() {
    let (_dir, keyring) = keyring();
    let (verifier, _) = verifier(&keyring);
    let token = mint_at(&keyring, &request(10), "10:00:00").token;
    assert!(verifier.verify(&token, at("10:10:29")).is_ok());
    assert_eq!(
        verifier.verify(&token, at("10:10:30")),
        Err(CredentialFailure::Expired)
    );
    assert!(verifier.verify(&token, at("09:59:30")).is_ok());
    assert_eq!(
        verifier.verify(&token, at("09:59:29")),
        Err(CredentialFailure::NotYetValid)
    );
}

#[test]
fn a_token_signed_by_another_key_is_refused() {
    let (_dir, keyring) = keyring();
    let (verifier, _) = verifier(&keyring);
    let now = at("10:05:00");
    // Another keyring's token: its kid is unknown here.
    let (_other_dir, other) = self::keyring();
    let token = mint_at(&other, &request(10), "10:00:00").token;
    assert_eq!(
        verifier.verify(&token, now),
        Err(CredentialFailure::BadSignature)
    );
    // Another key claiming this keyring's kid.
    let impostor = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": keyring.active_kid()});
    let token = forge(&header, &good_claims(), &impostor);
    assert_eq!(
        verifier.verify(&token, now),
        Err(CredentialFailure::BadSignature)
    );
}

#[test]
fn a_tampered_payload_is_refused() {
    let (_dir, keyring) = keyring();
    let (verifier, _) = verifier(&keyring);
    let token = mint_at(&keyring, &request(10), "10:00:00").token;
    let mut claims = part(&token, 1);
    claims["sub"] = json!(r#"Agent::"admin""#);
    let parts: Vec<&str> = token.split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], b64(claims.to_string()), parts[2]);
    assert_eq!(
        verifier.verify(&tampered, at("10:05:00")),
        Err(CredentialFailure::BadSignature)
    );
    // A flipped bit in the signature, too.
    let mut signature = parts[2].to_owned();
    let last = if signature.ends_with('A') { "Q" } else { "A" };
    signature.replace_range(signature.len() - 1.., last);
    let tampered = format!("{}.{}.{signature}", parts[0], parts[1]);
    assert_eq!(
        verifier.verify(&tampered, at("10:05:00")),
        Err(CredentialFailure::BadSignature)
    );
}

#[test]
fn only_eddsa_is_accepted() {
    let (dir, keyring) = keyring();
    let (verifier, _) = verifier(&keyring);
    let now = at("10:05:00");
    let kid = keyring.active_kid().to_owned();
    let claims = good_claims();
    let encoded_claims = b64(claims.to_string());

    let none = format!(
        "{}.{encoded_claims}.",
        b64(json!({"alg": "none", "kid": kid}).to_string())
    );
    let no_alg = forge(
        &json!({"kid": kid}),
        &claims,
        &signing_key(dir.path(), &kid),
    );
    let eddsa_lowercase = forge(
        &json!({"alg": "eddsa", "kid": kid}),
        &claims,
        &signing_key(dir.path(), &kid),
    );
    let public_key = signing_key(dir.path(), &kid).verifying_key().to_bytes();
    let jwks_x = keyring.jwks()["keys"][0]["x"].as_str().unwrap().to_owned();
    let hmac = |secret: &[u8]| {
        let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some(kid.clone());
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret)).unwrap()
    };
    let rsa = {
        let key = EncodingKey::from_rsa_pem(include_bytes!("fixtures/rsa.pem")).unwrap();
        let mut header = Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = Some(kid.clone());
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    };
    for (what, token) in [
        ("alg none, empty signature", none),
        ("no alg", no_alg),
        ("alg eddsa", eddsa_lowercase),
        ("HS256 keyed with the public key", hmac(&public_key)),
        ("HS256 keyed with the JWKS x", hmac(jwks_x.as_bytes())),
        ("RS256", rsa),
    ] {
        assert_eq!(
            verifier.verify(&token, now),
            Err(CredentialFailure::BadSignature),
            "{what}"
        );
    }
    // The same claims, signed as arbiter signs, verify: only the algorithm was wrong.
    let good = forge(
        &json!({"alg": "EdDSA", "kid": kid}),
        &claims,
        &signing_key(dir.path(), &kid),
    );
    assert!(verifier.verify(&good, now).is_ok());
}

#[test]
fn audience_and_issuer_must_be_arbiters() {
    let (_dir, keyring) = keyring();
    let (verifier, _) = verifier(&keyring);
    let config = config();
    let mut elsewhere = request(10);
    elsewhere.audience = Some("another-service".to_owned());
    let token = mint_at(&keyring, &elsewhere, "10:00:00").token;
    assert_eq!(
        verifier.verify(&token, at("10:05:00")),
        Err(CredentialFailure::WrongAudience)
    );
    let mut other_issuer = config.credentials.clone();
    other_issuer.issuer = "someone-else".to_owned();
    let token = mint(
        &keyring,
        &other_issuer,
        &config.intents,
        &request(10),
        at("10:00:00"),
    )
    .unwrap()
    .token;
    assert_eq!(
        verifier.verify(&token, at("10:05:00")),
        Err(CredentialFailure::UnknownIssuer)
    );
}

#[test]
fn an_audience_list_must_contain_arbiter() {
    let (dir, keyring) = keyring();
    let (verifier, _) = verifier(&keyring);
    let key = signing_key(dir.path(), keyring.active_kid());
    let header = json!({"alg": "EdDSA", "kid": keyring.active_kid()});
    let mut claims = good_claims();
    claims["aud"] = json!(["other", "arbiter"]);
    assert!(
        verifier
            .verify(&forge(&header, &claims, &key), at("10:05:00"))
            .is_ok()
    );
    claims["aud"] = json!(["other"]);
    assert_eq!(
        verifier.verify(&forge(&header, &claims, &key), at("10:05:00")),
        Err(CredentialFailure::WrongAudience)
    );
    claims.as_object_mut().unwrap().remove("aud");
    assert_eq!(
        verifier.verify(&forge(&header, &claims, &key), at("10:05:00")),
        Err(CredentialFailure::WrongAudience)
    );
}

#[test]
fn revoked_tokens_principals_and_sessions_are_refused() {
    let (_dir, keyring) = keyring();
    let (verifier, revocations) = verifier(&keyring);
    let now = at("10:30:00");

    let by_jti = mint_at(&keyring, &request(60), "10:00:00");
    revocations.apply(&Revoked::Jti(by_jti.jti.clone()));
    assert_eq!(
        verifier.verify(&by_jti.token, now),
        Err(CredentialFailure::Revoked)
    );

    let mut other = request(60);
    other.principal = r#"Agent::"ops-copilot""#.parse().unwrap();
    let before_cut = mint_at(&keyring, &other, "10:00:00");
    let after_cut = mint_at(&keyring, &other, "10:20:00");
    revocations.apply(&Revoked::Principal {
        principal: r#"Agent::"ops-copilot""#.to_owned(),
        before: at("10:10:00"),
    });
    assert_eq!(
        verifier.verify(&before_cut.token, now),
        Err(CredentialFailure::Revoked)
    );
    assert!(verifier.verify(&after_cut.token, now).is_ok());

    let mut in_session = request(60);
    in_session.session = Some("s-1".to_owned());
    let session_token = mint_at(&keyring, &in_session, "10:00:00");
    in_session.session = Some("s-2".to_owned());
    let other_session = mint_at(&keyring, &in_session, "10:00:00");
    assert!(verifier.verify(&session_token.token, now).is_ok());
    revocations.apply(&Revoked::Session {
        principal: Some(BOT.to_owned()),
        id: "s-1".to_owned(),
    });
    assert_eq!(
        verifier.verify(&session_token.token, now),
        Err(CredentialFailure::Revoked)
    );
    assert!(verifier.verify(&other_session.token, now).is_ok());
    revocations.apply(&Revoked::Session {
        principal: None,
        id: "s-2".to_owned(),
    });
    assert_eq!(
        verifier.verify(&other_session.token, now),
        Err(CredentialFailure::Revoked)
    );
}

#[test]
fn a_revoke_applies_to_the_token_and_the_session_at_once() {
    let (_dir, keyring) = keyring();
    let (verifier, revocations) = verifier(&keyring);
    let mut in_session = request(30);
    in_session.session = Some("s-9".to_owned());
    let minted = mint_at(&keyring, &in_session, "10:00:00");
    verifier.verify(&minted.token, at("10:01:00")).unwrap();
    verifier.revoke(&Revoked::Jti(minted.jti.clone()));
    assert!(!verifier.session_revoked(BOT, "s-9"));
    verifier.revoke(&Revoked::Session {
        principal: Some(BOT.to_owned()),
        id: "s-9".to_owned(),
    });
    assert!(verifier.session_revoked(BOT, "s-9"));
    assert!(!verifier.session_revoked(BOT, "s-8"));

    assert_eq!(
        verifier.verify(&minted.token, at("10:02:00")),
        Err(CredentialFailure::Revoked)
    );
    assert!(revocations.session_revoked(BOT, "s-9"));
}

#[test]
fn malformed_tokens_say_so() {
    let (dir, keyring) = keyring();
    let (verifier, _) = verifier(&keyring);
    let now = at("10:05:00");
    let header = json!({"alg": "EdDSA", "kid": keyring.active_kid()});
    let header_b64 = b64(header.to_string());
    let mut shapes: Vec<(String, String)> = [
        ("empty", String::new()),
        ("dots", "..".to_owned()),
        ("three dots", "...".to_owned()),
        ("two parts", format!("{header_b64}.{}", b64("{}"))),
        ("four parts", format!("{header_b64}.{}.sig.x", b64("{}"))),
        ("header not base64", format!("!!.{}.sig", b64("{}"))),
        (
            "header not JSON",
            format!("{}.{}.sig", b64("alg"), b64("{}")),
        ),
        (
            "payload an array",
            format!("{header_b64}.{}.sig", b64("[1,2,3]")),
        ),
        (
            "payload not UTF-8",
            format!("{header_b64}.{}.sig", b64([0xc3, 0x28, 0xff])),
        ),
        ("huge", format!("{header_b64}.{}.sig", "A".repeat(40_000))),
        ("padded", format!("{header_b64}=.{}.sig", b64("{}"))),
        (
            "iss a number",
            format!("{header_b64}.{}.sig", b64(r#"{"iss":7}"#)),
        ),
    ]
    .into_iter()
    .map(|(what, token)| (what.to_owned(), token))
    .collect();
    // Signed by arbiter's own key, but not claims arbiter writes.
    let key = signing_key(dir.path(), keyring.active_kid());
    let altered = |change: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut claims = good_claims();
        change(claims.as_object_mut().unwrap());
        forge(&header, &claims, &key)
    };
    for (what, token) in [
        (
            "sub not a uid",
            altered(&|c| {
                c.insert("sub".into(), json!("support-bot"));
            }),
        ),
        (
            "sub a number",
            altered(&|c| {
                c.insert("sub".into(), json!(7));
            }),
        ),
        (
            "no exp",
            altered(&|c| {
                c.remove("exp");
            }),
        ),
        (
            "exp a string",
            altered(&|c| {
                c.insert("exp".into(), json!("tomorrow"));
            }),
        ),
        (
            "no iat",
            altered(&|c| {
                c.remove("iat");
            }),
        ),
        (
            "no jti",
            altered(&|c| {
                c.remove("jti");
            }),
        ),
        (
            "empty session",
            altered(&|c| {
                c.insert("session".into(), json!(""));
            }),
        ),
        (
            "intent a list",
            altered(&|c| {
                c.insert("intent".into(), json!(["a"]));
            }),
        ),
        (
            "attrs not strings",
            altered(&|c| {
                c.insert("attrs".into(), json!({"level": 3}));
            }),
        ),
        (
            "aud a number",
            altered(&|c| {
                c.insert("aud".into(), json!(1));
            }),
        ),
    ] {
        shapes.push((what.to_owned(), token));
    }
    for (what, token) in shapes {
        assert_eq!(
            verifier.verify(&token, now),
            Err(CredentialFailure::Malformed),
            "{what}"
        );
    }
}

/// A header or claims arbiter reads one way and another verifier another way: with a key
/// twice, serde_json keeps the last and a strict reader the first or neither. Signed by
/// arbiter's own key, so only the duplicate can be why it is refused.
#[test]
fn a_key_twice_in_the_header_or_the_claims_is_malformed() {
    let (dir, keyring) = keyring();
    let (verifier, _) = verifier(&keyring);
    let key = signing_key(dir.path(), keyring.active_kid());
    let kid = keyring.active_kid();
    let claims = good_claims().to_string();
    let header = json!({"alg": "EdDSA", "kid": kid}).to_string();
    let sign = |header: &str, claims: &str| {
        let input = format!("{}.{}", b64(header), b64(claims));
        let signature = ed25519_dalek::Signer::sign(&key, input.as_bytes());
        format!("{input}.{}", b64(signature.to_bytes()))
    };
    assert!(
        verifier
            .verify(&sign(&header, &claims), at("10:05:00"))
            .is_ok()
    );
    let admin = format!(r#"{{"sub":"Agent::\"admin\"",{}"#, &claims[1..]);
    let no_alg = format!(r#"{{"alg":"none","alg":"EdDSA","kid":"{kid}"}}"#);
    let two_kids = format!(r#"{{"alg":"EdDSA","kid":"other","kid":"{kid}"}}"#);
    let nested = claims.replace(r#""iss""#, r#""attrs":{"a":"1","a":"2"},"iss""#);
    for (what, header, claims) in [
        ("sub twice", &header, &admin),
        ("alg twice", &no_alg, &claims),
        ("kid twice", &two_kids, &claims),
        ("a key twice in attrs", &header, &nested),
    ] {
        // JSON that serde_json reads (keeping the last key): only the duplicate is wrong.
        for text in [header, claims] {
            serde_json::from_str::<Value>(text).unwrap();
        }
        assert_eq!(
            verifier.verify(&sign(header, claims), at("10:05:00")),
            Err(CredentialFailure::Malformed),
            "{what}"
        );
    }
}

/// jsonwebtoken reads the header into its own struct: a member of a registered name with
/// the wrong type is not a header arbiter writes, whoever signed it.
#[test]
fn a_registered_header_member_of_the_wrong_type_is_malformed() {
    let (dir, keyring) = keyring();
    let (verifier, _) = verifier(&keyring);
    let key = signing_key(dir.path(), keyring.active_kid());
    for member in [
        json!({"typ": 5}),
        json!({"x5c": "not a list"}),
        json!({"jku": []}),
    ] {
        let mut header = json!({"alg": "EdDSA", "kid": keyring.active_kid()});
        header
            .as_object_mut()
            .unwrap()
            .extend(member.as_object().unwrap().clone());
        assert_eq!(
            verifier.verify(&forge(&header, &good_claims(), &key), at("10:05:00")),
            Err(CredentialFailure::Malformed),
            "{header}"
        );
    }
}

/// jsonwebtoken checks the signature only: times are judged against the `now` the
/// verifier is given, so a token from 2001 verifies in 2001 and one for 2090 in 2090,
/// whatever the machine's clock says.
#[test]
fn times_are_judged_at_the_time_given_never_the_system_clock() {
    let (_dir, keyring) = keyring();
    let (verifier, _) = verifier(&keyring);
    let config = config();
    for year in ["2001-09-09T01:46:40Z", "2090-01-01T00:00:00Z"] {
        let minted_at: jiff::Timestamp = year.parse().unwrap();
        let minted = mint(
            &keyring,
            &config.credentials,
            &config.intents,
            &request(10),
            minted_at,
        )
        .unwrap();
        let later = minted_at
            .checked_add(jiff::SignedDuration::from_mins(5))
            .unwrap();
        assert!(verifier.verify(&minted.token, later).is_ok(), "{year}");
        let past_exp = minted_at
            .checked_add(jiff::SignedDuration::from_mins(11))
            .unwrap();
        assert_eq!(
            verifier.verify(&minted.token, past_exp),
            Err(CredentialFailure::Expired),
            "{year}"
        );
    }
}

#[test]
fn minting_past_a_limit_is_an_error_that_names_it() {
    let (_dir, keyring) = keyring();
    let config = config();
    let now = at("10:00:00");
    let minted =
        |request: &MintRequest| mint(&keyring, &config.credentials, &config.intents, request, now);
    let error = |request: MintRequest| minted(&request).unwrap_err().to_string();

    assert_eq!(
        error(request(120)),
        "ttl 2h is longer than [credentials] max_ttl 1h"
    );
    let mut long_triage = request(45);
    long_triage.intent = Some("triage".to_owned());
    assert_eq!(
        error(long_triage),
        "ttl 45m is longer than [intents.triage] max_ttl 30m"
    );
    let mut unknown = request(10);
    unknown.intent = Some("nope".to_owned());
    assert_eq!(
        error(unknown),
        "intent `nope` is not an [intents] entry (known: triage)"
    );
    let mut zero = request(0);
    zero.ttl = Duration::from_millis(500);
    assert_eq!(minted(&zero).unwrap_err(), MintError::ZeroTtl);
    let mut empty = request(10);
    empty.session = Some(String::new());
    assert_eq!(minted(&empty).unwrap_err(), MintError::Empty("session"));

    let mut exactly = request(30);
    exactly.intent = Some("triage".to_owned());
    assert!(minted(&exactly).is_ok());
    assert!(minted(&request(60)).is_ok());
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    #[test]
    fn on_any_text() {
        let (_dir, keyring) = keyring();
        let (verifier, _) = verifier(&keyring);
        TestRunner::new(Config::with_cases(512))
            .run(&"\\PC{0,200}", |token| {
                prop_assert!(verifier.verify(&token, at("10:00:00")).is_err());
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn on_any_json_in_a_signed_token() {
        let (dir, keyring) = keyring();
        let (verifier, _) = verifier(&keyring);
        let key = signing_key(dir.path(), keyring.active_kid());
        TestRunner::new(Config::with_cases(512))
            .run(&(json_value(), json_value()), |(header, claims)| {
                let token = forge(&header, &claims, &key);
                prop_assert!(verifier.verify(&token, at("10:00:00")).is_err());
                Ok(())
            })
            .unwrap();
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| json!(f)),
            prop_oneof![
                Just("EdDSA".to_owned()),
                Just("arbiter".to_owned()),
                Just("Agent::\"x\"".to_owned()),
                "\\PC{0,12}",
            ]
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("alg".to_owned()),
                        Just("kid".to_owned()),
                        Just("iss".to_owned()),
                        Just("sub".to_owned()),
                        Just("aud".to_owned()),
                        Just("exp".to_owned()),
                        Just("iat".to_owned()),
                        Just("nbf".to_owned()),
                        Just("jti".to_owned()),
                        Just("attrs".to_owned()),
                        "[a-z]{1,4}",
                    ],
                    inner,
                    0..8,
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}

// ------------------------------------------- finding 7: no token outlives max_ttl

/// A token signed with the data directory's own key (as anyone who can read `DATA/keys`
/// can sign one) that says it lives ten years.
fn ten_year_token(dir: &std::path::Path, keyring: &Keyring) -> String {
    let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": keyring.active_kid()});
    let mut claims = good_claims();
    claims["exp"] = json!(at("10:00:00").as_second() + 10 * 365 * 24 * 3600);
    forge(&header, &claims, &signing_key(dir, keyring.active_kid()))
}

#[test]
fn a_token_whose_lifetime_exceeds_max_ttl_is_refused_though_validly_signed() {
    let (dir, keyring) = keyring();
    let (verifier, _) = verifier(&keyring);
    let token = ten_year_token(dir.path(), &keyring);
    let refused = verifier.verify(&token, at("10:05:00"));
    assert_eq!(refused, Err(CredentialFailure::LifetimeExceedsMaxTtl));
    assert_eq!(
        CredentialFailure::LifetimeExceedsMaxTtl.as_str(),
        "lifetime_exceeds_max_ttl"
    );

    // One second past max_ttl (1h) is refused; exactly max_ttl, as minting allows, is not.
    let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": keyring.active_kid()});
    let key = signing_key(dir.path(), keyring.active_kid());
    let mut claims = good_claims();
    claims["exp"] = json!(at("11:00:01").as_second());
    assert_eq!(
        verifier.verify(&forge(&header, &claims, &key), at("10:05:00")),
        Err(CredentialFailure::LifetimeExceedsMaxTtl)
    );
    claims["exp"] = json!(at("11:00:00").as_second());
    assert!(
        verifier
            .verify(&forge(&header, &claims, &key), at("10:05:00"))
            .is_ok()
    );
    let minted = mint_at(&keyring, &request(60), "10:00:00");
    assert!(verifier.verify(&minted.token, at("10:05:00")).is_ok());

    // A backdated `nbf` stretches the window as surely as a far `exp`.
    let mut claims = good_claims();
    claims["nbf"] = json!(at("09:00:00").as_second());
    claims["exp"] = json!(at("10:30:00").as_second());
    assert_eq!(
        verifier.verify(&forge(&header, &claims, &key), at("10:05:00")),
        Err(CredentialFailure::LifetimeExceedsMaxTtl)
    );
}

/// A reload builds a new verifier from the pack's `[credentials]`
/// (`Identity::reconfigure` in the server): a lower `max_ttl` applies to tokens minted
/// (and verified, and cached) under the old one. The check runs on every call, so the
/// cache never answers for it.
#[test]
fn a_lower_max_ttl_after_a_reload_refuses_tokens_already_verified_and_cached() {
    let (_dir, keyring) = keyring();
    let (before, revocations) = verifier(&keyring);
    let hour = mint_at(&keyring, &request(60), "10:00:00");
    let ten = mint_at(&keyring, &request(10), "10:00:00");
    assert!(before.verify(&hour.token, at("10:01:00")).is_ok());
    assert!(before.verify(&hour.token, at("10:02:00")).is_ok());

    let mut lowered = config().credentials;
    lowered.max_ttl = arbiter_core::period::Period::parse("15m").unwrap();
    let after = arbiter_identity::Verifier::new(keyring.clone(), &lowered, revocations);
    for time in ["10:03:00", "10:04:00"] {
        assert_eq!(
            after.verify(&hour.token, at(time)),
            Err(CredentialFailure::LifetimeExceedsMaxTtl),
            "{time}"
        );
        assert!(after.verify(&ten.token, at(time)).is_ok(), "{time}");
    }
}

//! Verified identity over HTTP, on the real server: token exchange, minting, the JWKS,
//! revocation by a `revoke` effect, by an administrator and by the CLI's store, durable
//! across a restart, and key rotation picked up while serving.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a test"
)]

use std::fs;

use arbiter_server::Durability;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signer, SigningKey};
use reqwest::StatusCode;
use serde_json::{Value, json};

mod common;
use common::*;

const SPIRE: &str = "https://spire.example.org";
const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

/// An upstream issuer the test plays: SPIFFE JWT-SVIDs signed with its own Ed25519 key.
struct Spire {
    key: SigningKey,
}

impl Spire {
    fn new(seed: u8) -> Spire {
        Spire {
            key: SigningKey::from_bytes(&[seed; 32]),
        }
    }

    fn jwks(&self) -> String {
        json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "spire-1", "alg": "EdDSA", "use": "sig",
                         "x": URL_SAFE_NO_PAD.encode(self.key.verifying_key().as_bytes())}]})
        .to_string()
    }

    /// A JWT-SVID for `spiffe://example.org/<workload>`, valid around now.
    fn svid(&self, workload: &str, audience: &str) -> String {
        let now = arbiter_core::clock::Clock::now(&arbiter_core::clock::SystemClock).as_second();
        let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": "spire-1"});
        let claims = json!({"iss": SPIRE, "sub": format!("spiffe://example.org/{workload}"),
                            "aud": [audience], "iat": now, "exp": now + 300});
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.key.sign(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        )
    }
}

/// The example pack, with credentials required for agents, SPIRE as an upstream issuer
/// (agents may ask only for `triage`), and a permit for platform agents to work tickets
/// within a `triage` intent.
async fn server_with_spire(spire: &Spire) -> Server {
    let dirs = tempfile::tempdir().unwrap();
    let pack = dirs.path().join("pack");
    copy_dir(&example(), &pack);
    let config = fs::read_to_string(pack.join("arbiter.toml"))
        .unwrap()
        .replace("required_for = []", "required_for = [\"Agent\"]");
    let config = format!(
        "{config}\n[[issuers]]\nname = \"spire\"\npreset = \"spiffe\"\nissuer = \"{SPIRE}\"\n\
         audience = \"arbiter\"\njwks_file = \"spire-jwks.json\"\nprincipal = 'Agent::\"{{path}}\"'\n\
         intents = [\"triage\"]\n"
    );
    fs::write(pack.join("arbiter.toml"), config).unwrap();
    fs::write(pack.join("spire-jwks.json"), spire.jwks()).unwrap();
    fs::write(
        pack.join("policies/e2e.cedar"),
        "@id(\"e2e.platform-triage\")\npermit(principal in Team::\"platform\", action in Action::\"ticket_ops\", resource is Ticket)\n\
         when { context has in_intent && context.in_intent };\n",
    )
    .unwrap();
    let data = dirs.path().join("data");
    Server::start_in(dirs, pack, data, Durability::Sync).await
}

async fn exchange(server: &Server, body: Value) -> (StatusCode, Value) {
    let (status, body, _) = server.post("/v1/token", &body).await;
    (status, body)
}

async fn decide(
    server: &Server,
    token: &str,
    action: &str,
    resource: &str,
    context: Value,
) -> Value {
    let (status, body, _) = server
        .post(
            "/v1/decide",
            &json!({"principal": "Agent::\"ops-copilot\"", "action": format!("Action::\"{action}\""),
                    "resource": resource, "context": context, "credential": token}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn read_secret(server: &Server, token: &str) -> Value {
    decide(
        server,
        token,
        "read_secret",
        "Secret::\"staging/db-password\"",
        json!({}),
    )
    .await
}

async fn admin_post(server: &Server, path: &str, body: &Value) -> (StatusCode, Value) {
    let response = server
        .client
        .post(format!("{}{path}", server.base))
        .bearer_auth(ADMIN)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_exchanged_token_works_within_intent_and_a_revoke_effect_revokes_it_for_good() {
    let spire = Spire::new(7);
    let mut server = server_with_spire(&spire).await;
    let (status, answer) = exchange(
        &server,
        json!({"grant_type": EXCHANGE, "subject_token": spire.svid("ops-copilot", "arbiter"),
               "subject_token_type": JWT, "intent": "triage", "session": "e2e"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["token_type"], "Bearer");
    assert_eq!(answer["principal"], "Agent::\"ops-copilot\"");
    // No ttl asked: the shorter of 10 minutes and the triage intent's 30.
    assert_eq!(answer["expires_in"], 600);
    let token = answer["access_token"].as_str().unwrap().to_owned();
    let jti = answer["jti"].as_str().unwrap().to_owned();

    let ticket = decide(&server, &token, "read_ticket", "Ticket::\"T-1\"", json!({})).await;
    assert_eq!(ticket["decision"], "allow", "{ticket}");
    let secret = decide(
        &server,
        &token,
        "read_secret",
        "Secret::\"staging/db-password\"",
        json!({}),
    )
    .await;
    assert_eq!(secret["decision"], "allow", "{secret}");
    // The token is bound to session `e2e`: the read is remembered there, and egress
    // after it revokes the token.
    let egress = decide(
        &server,
        &token,
        "http_request",
        "Endpoint::\"api.github.com\"",
        json!({"method": "GET", "path": "/"}),
    )
    .await;
    assert_eq!(
        (&egress["decision"], &egress["effect"], &egress["enforced"]),
        (
            &json!("deny"),
            &json!("revoke"),
            &json!(["agent.no-egress-after-secret"])
        ),
        "{egress}"
    );
    let after = decide(&server, &token, "read_ticket", "Ticket::\"T-1\"", json!({})).await;
    assert_eq!(after["reason"], "credential:revoked", "{after}");

    // The revocation was committed before the deny was answered: it survives a restart.
    server.stop().await;
    let Server {
        _dirs, pack, data, ..
    } = server;
    let mut server = Server::start_in(_dirs, pack, data, Durability::Sync).await;
    let restarted = decide(&server, &token, "read_ticket", "Ticket::\"T-1\"", json!({})).await;
    assert_eq!(restarted["reason"], "credential:revoked", "{restarted}");
    // The session ended durably too: a fresh token cannot continue it.
    let (_, fresh) = admin_post(
        &server,
        "/v1/credentials",
        &json!({"principal": "Agent::\"ops-copilot\"", "ttl": "5m"}),
    )
    .await;
    let (_, in_session, _) = server
        .post(
            "/v1/decide",
            &json!({"principal": "Agent::\"ops-copilot\"", "action": "Action::\"read_secret\"",
                    "resource": "Secret::\"staging/db-password\"", "session": "e2e",
                    "credential": fresh["token"]}),
        )
        .await;
    assert_eq!(in_session["reason"], "session:terminated", "{in_session}");
    let (status, listed, _) = server
        .admin(reqwest::Method::GET, "/v1/revocations", Some(ADMIN))
        .await;
    assert_eq!(status, StatusCode::OK);
    let kinds: Vec<(&str, &str)> = listed["revocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["kind"].as_str().unwrap(), r["value"].as_str().unwrap()))
        .collect();
    // The session first: the engine ends it, then revokes the token.
    assert_eq!(kinds, [("session", "e2e"), ("jti", jti.as_str())]);
    assert_eq!(
        listed["revocations"][0]["by"],
        "rule:agent.no-egress-after-secret"
    );

    // The log names the credential by its jti and never holds the token itself.
    let (_, page, _) = server
        .admin(
            reqwest::Method::GET,
            "/v1/decisions?principal=Agent::%22ops-copilot%22&limit=10",
            Some(ADMIN),
        )
        .await;
    let text = page.to_string();
    assert!(!text.contains(&token), "the raw token is in the log");
    let records = page["decisions"].as_array().unwrap();
    assert_eq!(records.len(), 6, "{page}");
    assert!(
        records
            .iter()
            .filter(|r| r["decision"] == "allow")
            .all(|r| r["credential_id"] == json!(jti) && r["session"] == "e2e"),
        "{page}"
    );
    // What the credential established is kept for replay: its claims, never the token.
    let allowed = records.iter().find(|r| r["decision"] == "allow").unwrap();
    let claims = &allowed["credential"];
    assert_eq!(claims["jti"], json!(jti), "{allowed}");
    assert_eq!(claims["principal"], "Agent::\"ops-copilot\"");
    assert_eq!(claims["session"], "e2e");
    assert!(claims["issued_at"].is_string() && claims["expires_at"].is_string());
    assert!(claims["issuer"].is_string() && claims.get("token").is_none());
    server.stop().await;
}

#[tokio::test]
async fn exchanges_that_must_fail_do() {
    let spire = Spire::new(7);
    let mut server = server_with_spire(&spire).await;
    let good = spire.svid("ops-copilot", "arbiter");
    let cases = [
        (
            json!({"grant_type": "client_credentials", "subject_token": good, "subject_token_type": JWT}),
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
        ),
        (
            json!({"grant_type": EXCHANGE, "subject_token": good, "subject_token_type": "urn:x"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            json!({"grant_type": EXCHANGE, "subject_token": Spire::new(8).svid("ops-copilot", "arbiter"), "subject_token_type": JWT}),
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        ),
        (
            json!({"grant_type": EXCHANGE, "subject_token": spire.svid("ops-copilot", "elsewhere"), "subject_token_type": JWT}),
            StatusCode::BAD_REQUEST,
            "invalid_grant",
        ),
        (
            json!({"grant_type": EXCHANGE, "subject_token": good, "subject_token_type": JWT, "intent": "staging-maintenance"}),
            StatusCode::BAD_REQUEST,
            "invalid_scope",
        ),
        (
            json!({"grant_type": EXCHANGE, "subject_token": good, "subject_token_type": JWT, "intent": "triage", "ttl": "2h"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            json!({"grant_type": EXCHANGE, "subject_token": good, "subject_token_type": JWT, "scope": "triage staging-maintenance"}),
            StatusCode::BAD_REQUEST,
            "invalid_scope",
        ),
        (
            json!({"grant_type": EXCHANGE, "subject_token": good, "subject_token_type": JWT, "actor_token": good}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            json!({"grant_type": EXCHANGE, "subject_token": good, "subject_token_type": JWT, "requested_token_type": "urn:x"}),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            json!({"grant_type": EXCHANGE, "subject_token": good, "subject_token_type": JWT, "colour": "blue"}),
            StatusCode::BAD_REQUEST,
            "malformed_request",
        ),
    ];
    for (body, status, code) in cases {
        let (got, answer) = exchange(&server, body.clone()).await;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{body} → {answer}"
        );
    }
    // RFC 8693 clients send a form.
    let response = server
        .client
        .post(format!("{}/v1/token", server.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(
            serde_urlencoded::to_string([
                ("grant_type", EXCHANGE),
                ("subject_token", good.as_str()),
                ("subject_token_type", JWT),
                ("ttl", "5m"),
            ])
            .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["expires_in"], 300);
    // RFC 8693's `scope` names the intent.
    let (status, scoped) = exchange(
        &server,
        json!({"grant_type": EXCHANGE, "subject_token": good, "subject_token_type": JWT, "scope": "triage",
               "requested_token_type": "urn:ietf:params:oauth:token-type:access_token"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{scoped}");
    // A form that cannot be read is refused without quoting it: it holds a bearer token.
    let response = server
        .client
        .post(format!("{}/v1/token", server.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("subject_token={good}&grant_type=%zz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let text = response.text().await.unwrap();
    assert!(text.contains("malformed_request"), "{text}");
    assert!(!text.contains(&good), "the token is echoed: {text}");
    server.stop().await;
}

#[tokio::test]
async fn minted_tokens_verify_against_the_published_keys_and_admins_can_revoke() {
    let spire = Spire::new(7);
    let mut server = server_with_spire(&spire).await;
    let mint = json!({"principal": "Agent::\"ops-copilot\"", "ttl": "10m"});
    let (status, refused, headers) = server.post("/v1/credentials", &mint).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{refused}");
    assert_eq!(headers["www-authenticate"], "Bearer");
    for (body, says) in [
        (
            json!({"principal": "Agent::\"ops-copilot\"", "ttl": "2h"}),
            "max_ttl",
        ),
        (
            json!({"principal": "Agent::\"ops-copilot\"", "ttl": "10m", "intent": "nope"}),
            "nope",
        ),
        (json!({"principal": "Robot::\"r\"", "ttl": "10m"}), "Robot"),
        (
            json!({"principal": "Agent::\"ops-copilot\"", "ttl": "soon"}),
            "ttl",
        ),
    ] {
        let (status, answer) = admin_post(&server, "/v1/credentials", &body).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body} → {answer}"
        );
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{message} mentions {says}");
    }
    let (status, minted) = admin_post(&server, "/v1/credentials", &mint).await;
    assert_eq!(status, StatusCode::CREATED, "{minted}");
    let token = minted["token"].as_str().unwrap().to_owned();

    // The JWKS is open, and holds the key that signed the token.
    let (status, jwks, _) = server
        .admin(reqwest::Method::GET, "/.well-known/jwks.json", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "EdDSA");
    assert!(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == header["kid"] && k.get("d").is_none()),
        "{jwks}"
    );
    assert_eq!(read_secret(&server, &token).await["decision"], "allow");
    // The token names ops-copilot: it cannot speak for another agent, and what it
    // vouches for cannot be claimed through the context either.
    let (_, other, _) = server
        .post(
            "/v1/decide",
            &json!({"principal": "Agent::\"support-bot\"", "action": "Action::\"read_ticket\"",
                    "resource": "Ticket::\"T-1\"", "credential": token}),
        )
        .await;
    assert_eq!(other["reason"], "credential:principal_mismatch", "{other}");
    for key in ["credential", "in_intent"] {
        let (status, spoofed, _) = server
            .post(
                "/v1/decide",
                &json!({"principal": "Agent::\"ops-copilot\"", "action": "Action::\"read_ticket\"",
                        "resource": "Ticket::\"T-1\"", "credential": token,
                        "context": {key: true}}),
            )
            .await;
        assert_eq!(
            (status, spoofed["error"]["code"].as_str()),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                Some("reserved_context_key")
            ),
            "{spoofed}"
        );
    }
    // Agents must present a credential here.
    let (_, bare, _) = server
        .post(
            "/v1/decide",
            &json!({"principal": "Agent::\"ops-copilot\"", "action": "Action::\"read_secret\"",
                    "resource": "Secret::\"staging/db-password\""}),
        )
        .await;
    assert_eq!(bare["reason"], "credential:missing");

    // An administrator ends a session: every request in it is refused from then on.
    let (_, fresh) = admin_post(&server, "/v1/credentials", &mint).await;
    let in_session = |session: &'static str| {
        let body = json!({"principal": "Agent::\"ops-copilot\"", "action": "Action::\"read_secret\"",
                          "resource": "Secret::\"staging/db-password\"", "session": session,
                          "credential": fresh["token"]});
        let server = &server;
        async move { server.post("/v1/decide", &body).await.1 }
    };
    assert_eq!(in_session("s-admin").await["decision"], "allow");
    let (status, _) = admin_post(
        &server,
        "/v1/revocations",
        &json!({"session": "s-admin", "reason": "incident 42"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(in_session("s-admin").await["reason"], "session:terminated");
    assert_eq!(in_session("s-other").await["decision"], "allow");
    let (status, answer) = admin_post(
        &server,
        "/v1/revocations",
        &json!({"principal": "Agent::\"ops-copilot\"", "jti": "x", "reason": "both"}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    let (status, answer) = admin_post(
        &server,
        "/v1/revocations",
        &json!({"principal": "Agent::\"ops-copilot\"", "reason": "laptop lost"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(
        (&answer["kind"], &answer["by"]),
        (&json!("principal"), &json!("admin"))
    );
    assert_eq!(
        read_secret(&server, &token).await["reason"],
        "credential:revoked"
    );

    server.stop().await;
}

#[tokio::test]
async fn revocations_and_key_rotations_made_by_the_cli_reach_a_running_server() {
    let spire = Spire::new(7);
    let mut server = server_with_spire(&spire).await;
    let mint = json!({"principal": "Agent::\"ops-copilot\"", "ttl": "10m"});
    let (_, minted) = admin_post(&server, "/v1/credentials", &mint).await;
    let token = minted["token"].as_str().unwrap().to_owned();
    let jti = minted["jti"].as_str().unwrap().to_owned();

    // Another process's store handle, as `arbiter token revoke` uses.
    let store = arbiter_store::Store::open(&server.data).unwrap();
    store
        .revoke(&arbiter_store::Revocation {
            seq: 0,
            kind: arbiter_store::RevocationKind::Jti,
            value: jti,
            principal: None,
            reason: "from the CLI".into(),
            by: "ops".into(),
            at: arbiter_core::clock::Clock::now(&arbiter_core::clock::SystemClock),
            expires_at: None,
        })
        .unwrap();
    let revoked = eventually(3 * SECOND, || {
        let token = token.clone();
        let server = &server;
        async move { read_secret(server, &token).await["reason"] == "credential:revoked" }
    })
    .await;
    assert!(revoked, "the server saw the CLI's revocation");

    // A rotation on disk: tokens signed with the new key verify once the server has
    // read it, and the old key stays published.
    let (_, before, _) = server
        .admin(reqwest::Method::GET, "/.well-known/jwks.json", None)
        .await;
    let keyring = arbiter_identity::Keyring::rotate(
        &server.data,
        arbiter_core::clock::Clock::now(&arbiter_core::clock::SystemClock),
        std::time::Duration::from_secs(3600),
    )
    .unwrap();
    let pack = arbiter_core::Pack::load(&server.pack).unwrap();
    let fresh = arbiter_identity::mint(
        &keyring,
        &pack.config().credentials,
        &pack.config().intents,
        &arbiter_identity::MintRequest {
            principal: "Agent::\"ops-copilot\"".parse().unwrap(),
            ttl: std::time::Duration::from_secs(60),
            intent: None,
            session: None,
            audience: None,
            attributes: Default::default(),
            via: None,
        },
        arbiter_core::clock::Clock::now(&arbiter_core::clock::SystemClock),
    )
    .unwrap();
    let accepted = eventually(3 * SECOND, || {
        let token = fresh.token.clone();
        let server = &server;
        async move { read_secret(server, &token).await["decision"] == "allow" }
    })
    .await;
    assert!(accepted, "the server uses the rotated key");
    let (_, after, _) = server
        .admin(reqwest::Method::GET, "/.well-known/jwks.json", None)
        .await;
    assert_eq!(
        after["keys"].as_array().unwrap().len(),
        before["keys"].as_array().unwrap().len() + 1
    );
    server.stop().await;
}

#[tokio::test]
async fn an_issuer_with_a_jwks_url_is_fetched_and_then_exchanges() {
    let spire = Spire::new(9);
    let keys = spire.jwks();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/keys", listener.local_addr().unwrap());
    let jwks_server = tokio::spawn(async move {
        let app = axum::Router::new().route(
            "/keys",
            axum::routing::get(move || {
                let keys = keys.clone();
                async move { ([("content-type", "application/json")], keys) }
            }),
        );
        axum::serve(listener, app).await
    });
    let dirs = tempfile::tempdir().unwrap();
    let pack = dirs.path().join("pack");
    copy_dir(&example(), &pack);
    let config = fs::read_to_string(pack.join("arbiter.toml")).unwrap();
    fs::write(
        pack.join("arbiter.toml"),
        format!(
            "{config}\n[[issuers]]\nname = \"spire\"\npreset = \"spiffe\"\nissuer = \"{SPIRE}\"\n\
             audience = \"arbiter\"\njwks_url = \"{url}\"\nprincipal = 'Agent::\"{{path}}\"'\n"
        ),
    )
    .unwrap();
    let data = dirs.path().join("data");
    let mut server = Server::start_in(dirs, pack, data, Durability::Batched).await;
    let svid = spire.svid("ops-copilot", "arbiter");
    let exchanged = eventually(5 * SECOND, || {
        let body =
            json!({"grant_type": EXCHANGE, "subject_token": svid, "subject_token_type": JWT});
        let server = &server;
        async move { exchange(server, body).await.0 == StatusCode::OK }
    })
    .await;
    assert!(exchanged, "the keys were fetched from {url}");
    server.stop().await;
    jwks_server.abort();
}

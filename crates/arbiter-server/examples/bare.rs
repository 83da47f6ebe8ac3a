//! The ceilings for the HTTP load benchmark:
//!
//! - `bare ADDR`: an axum endpoint that does the same JSON work as `POST /v1/decide`
//!   (parse the request into arbiter's request type, serialize a decision-shaped answer)
//!   and nothing else: no policy, no log.
//! - `bare ADDR PACK`: the same plus what a bare Cedar PDP does per request on that
//!   pack (build the context and request against the schema, `is_authorized` over the
//!   whole policy set): the ceiling for any service that evaluates policies, still
//!   without arbiter's modes, sessions, throttles or decision log.
//!
//! `cargo run --release -p arbiter-server --example bare -- 127.0.0.1:8799 [PACK]`

use std::sync::Arc;

use arbiter_core::response::{Decision, Outcome};
use arbiter_core::{DecisionRequest, Pack};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use cedar_policy::{Authorizer, Context, Decision as CedarDecision, Request};

#[derive(Debug, Default)]
struct Cedar {
    pack: Option<Pack>,
    authorizer: Authorizer,
}

impl Cedar {
    /// Raw Cedar's answer, `None` when the request does not fit the schema.
    fn allows(&self, request: &DecisionRequest) -> Option<bool> {
        let Some(pack) = &self.pack else {
            return Some(true);
        };
        let schema = pack.schema();
        let action = request.action.to_uid("action").ok()?;
        let context = match &request.context {
            Some(value) => {
                Context::from_json_value(value.clone(), schema.map(|s| (s, &action))).ok()?
            }
            None => Context::empty(),
        };
        let cedar = Request::new(
            request.principal.to_uid("principal").ok()?,
            action,
            request.resource.to_uid("resource").ok()?,
            context,
            schema,
        )
        .ok()?;
        let answer = self
            .authorizer
            .is_authorized(&cedar, pack.policies(), pack.entities());
        Some(answer.decision() == CedarDecision::Allow)
    }
}

async fn decide(State(cedar): State<Arc<Cedar>>, body: Bytes) -> Response {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let Ok(request) = DecisionRequest::from_value(&value) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let Some(allowed) = cedar.allows(&request) else {
        return StatusCode::UNPROCESSABLE_ENTITY.into_response();
    };
    let decision = Decision {
        decision: if allowed {
            Outcome::Allow
        } else {
            Outcome::Deny
        },
        effect: None,
        retry_after_s: None,
        enforced: Vec::new(),
        warnings: Vec::new(),
        audit: Vec::new(),
        errors: Vec::new(),
        reason: request.session.clone(),
        decision_id: "01JZZZZZZZZZZZZZZZZZZZZZZZ".to_owned(),
        policy_version: "sha256:0000000000000000000000000000000000000000000000000000000000000000"
            .to_owned(),
        time: jiff::Timestamp::UNIX_EPOCH,
        credential_id: None,
        credential: None,
        session: None,
        in_scope: None,
        scope: None,
        novel: None,
        revoked: Vec::new(),
    };
    axum::Json(decision).into_response()
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8799".to_owned());
    let pack = match args.next() {
        Some(dir) => Some(Pack::load(&dir).map_err(|p| std::io::Error::other(p.to_string()))?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let with = if pack.is_some() { " + raw Cedar" } else { "" };
    eprintln!("bare{with} listening on http://{}", listener.local_addr()?);
    let cedar = Arc::new(Cedar {
        pack,
        authorizer: Authorizer::new(),
    });
    let app = Router::new()
        .route("/v1/decide", post(decide))
        .with_state(cedar);
    axum::serve(listener, app).await
}

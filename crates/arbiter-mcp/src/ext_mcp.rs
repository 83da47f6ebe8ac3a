//! agentgateway's external MCP hook (`mcpGuardrails`, a processor of kind `remote`):
//! arbiter serves the `ExtMcp` gRPC interface, so a team that runs agentgateway uses
//! arbiter as its MCP policy engine without a second proxy (`mcp-proxy --ext-mcp ADDR`).
//!
//! `CheckRequest` of a `tools/call` is a decision through the one decision service, as in
//! the stdio gate: the raw `params` mapped by `[mcp]` of the pack, the backend's name as
//! the upstream. An allowed call passes (the decision id in `metadata`); a denied one is
//! an `AuthorizationError` whose reason names the rule and whose `mcp_error` (the JSON-RPC
//! error's `data`) carries the decision. `CheckResponse` of a `tools/list` leaves out the
//! tools that the caller can never call, and marks a pinned backend's changed tools; a
//! call of a pinned backend's tool is compared with what the hook saw of its lists
//! (`seen`). Every other method passes, as the stdio proxy forwards it.
//!
//! Who calls is established per call: an arbiter token, presented as `authorization:
//! Bearer` among the forwarded headers or as the `arbiter_token` of the metadata context
//! (the only way on the response side, which carries no headers), verified at every call.
//! Without one, the principal configured for local use, if any, taken on trust; otherwise
//! the call is refused. Whatever the hook cannot understand is refused with a reason, as
//! an answer and not as a gRPC error, so that a gateway set to fail open still does not
//! let it through.

mod seen;
pub mod wire;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arbiter_core::Decision;
use arbiter_core::clock::Clock;
use arbiter_core::config::OnToolChange;
use arbiter_core::credential::CredentialVerifier;
use arbiter_core::response::Outcome;
use arbiter_core::rule::Effect;
use arbiter_service::{DecisionService, ServiceError};
use arbiter_store::{McpCall, McpIdentity, Refusal};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use crate::caller::Caller;
use crate::gate::Gate;
use crate::gateway::Gateway;
use crate::mapping::{self, Asker};
use crate::pins;
use wire::authorization_error::Code;
use wire::ext_mcp_server::{ExtMcp, ExtMcpServer};
use wire::{
    AuthorizationError, McpHeader, McpRequest, McpRequestResult, McpResponse, McpResponseResult,
    Pass, mcp_request_result, mcp_response_result,
};

/// The metadata-context key that carries an arbiter token.
pub const TOKEN_KEY: &str = "arbiter_token";
/// The key of `McpRequestResult.metadata` that carries an allowed call's decision id.
pub const DECISION_ID_KEY: &str = "arbiter_decision_id";

/// How many calls one gateway connection may have in flight.
const CONCURRENCY_PER_CONNECTION: usize = 256;
/// The longest a call may take; a decision takes microseconds.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the calls in flight have to finish once the hook is stopped.
pub const DRAIN: Duration = Duration::from_secs(5);

/// Serves the hook on `listener` until `shutdown` completes, then lets the calls in
/// flight finish, for at most [`DRAIN`]: a gateway that keeps its connection open does
/// not hold the process.
pub async fn serve(
    gateway: &Gateway,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let Some(hook) = Hook::new(gateway) else {
        return Err(std::io::Error::other(
            "the ExtMcp hook decides in this process: it does not take --pdp",
        ));
    };
    let service = ExtMcpServer::new(hook)
        .max_decoding_message_size(gateway.max_message_bytes())
        .max_encoding_message_size(gateway.max_message_bytes());
    let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        let _ = stopping.send(());
    };
    let server = tonic::transport::Server::builder()
        .concurrency_limit_per_connection(CONCURRENCY_PER_CONNECTION)
        .timeout(CALL_TIMEOUT)
        .add_service(service)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), signal);
    let drained = async {
        if stopped.await.is_ok() {
            tokio::time::sleep(DRAIN).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        served = server => served.map_err(std::io::Error::other),
        () = drained => {
            tracing::warn!("calls still in flight after {DRAIN:?}: stopped anyway");
            Ok(())
        }
    }
}

/// The `ExtMcp` service: the decision service, the verifier, and the principal to fall
/// back on.
#[derive(Debug)]
pub struct Hook {
    service: Arc<DecisionService>,
    /// For the gates that filter tool lists (and count what they hide).
    decider: crate::decider::Decider,
    metrics: Arc<crate::metrics::Metrics>,
    verifier: Arc<dyn CredentialVerifier>,
    clock: Arc<dyn Clock>,
    fallback: Option<Caller>,
    /// What the hook saw of each pinned backend's tools.
    seen: seen::Seen,
    /// The arbiter session of the calls made as the fallback principal: one per process,
    /// as a stdio proxy has one per agent session.
    fallback_session: String,
}

/// A refusal, as the gateway is answered.
#[derive(Debug)]
struct Refused {
    code: Code,
    reason: String,
    data: Value,
}

impl Hook {
    /// The hook deciding through `gateway`; `None` when the gateway does not decide in
    /// this process (`--pdp`): the hook verifies each call's token itself.
    pub fn new(gateway: &Gateway) -> Option<Hook> {
        let service = Arc::clone(gateway.service()?);
        let verifier: Arc<dyn CredentialVerifier> = gateway.verifier()?;
        let clock = Arc::clone(gateway.clock());
        let fallback_session = format!("ext-mcp-{}", service.engine().new_decision_id(clock.now()));
        Some(Hook {
            service,
            decider: gateway.decider().clone(),
            metrics: Arc::clone(gateway.metrics()),
            verifier,
            clock,
            fallback: gateway.caller().cloned(),
            seen: seen::Seen::default(),
            fallback_session,
        })
    }

    /// Answers one `CheckRequest`.
    pub async fn on_request(&self, request: McpRequest) -> Result<McpRequestResult, Status> {
        if request.method.is_empty() {
            return Err(Status::invalid_argument(
                "`method` is empty: this is not an MCP request",
            ));
        }
        if request.method != "tools/call" {
            tracing::debug!(method = %request.method, "not a decision: passed");
            return Ok(pass_request(None));
        }
        Ok(match self.tools_call(&request).await {
            Ok(decision_id) => pass_request(Some(decision_id)),
            Err(refused) => McpRequestResult {
                result: Some(mcp_request_result::Result::Error(refused.into_error())),
                ..McpRequestResult::default()
            },
        })
    }

    /// Answers one `CheckResponse`.
    pub async fn on_response(&self, response: McpResponse) -> Result<McpResponseResult, Status> {
        if response.method.is_empty() {
            return Err(Status::invalid_argument(
                "`method` is empty: this is not an MCP response",
            ));
        }
        if response.method != "tools/list" {
            return Ok(pass_response());
        }
        let result = match self.tool_list(&response) {
            Ok(None) => mcp_response_result::Result::Pass(Pass {}),
            Ok(Some(filtered)) => mcp_response_result::Result::Mutated(filtered),
            Err(refused) => mcp_response_result::Result::Error(refused.into_error()),
        };
        Ok(McpResponseResult {
            result: Some(result),
        })
    }

    /// Decides a `tools/call`: the decision id when it is allowed.
    async fn tools_call(&self, request: &McpRequest) -> Result<String, Refused> {
        let upstream = match request.service_names.as_slice() {
            [one] if !one.is_empty() => one.as_str(),
            names => {
                let why = format!(
                    "a `tools/call` goes to exactly one backend, and this one names {}",
                    names.len()
                );
                let refusal = refusal("mcp_invalid_params", why);
                return Err(self
                    .refuse(refusal, Code::Invalid, None, "", McpIdentity::Unverified)
                    .await);
            }
        };
        let token = presented_token(&request.headers, request.metadata_context.as_ref());
        let (caller, session) = match self.caller(token) {
            Ok(found) => found,
            Err(why) => {
                let refusal = refusal("mcp_unauthenticated", why);
                return Err(self
                    .refuse(
                        refusal,
                        Code::PermissionDenied,
                        None,
                        upstream,
                        McpIdentity::Unverified,
                    )
                    .await);
            }
        };
        let identity = caller.identity();
        let params = match params(request.mcp_request.as_deref()) {
            Ok(params) => params,
            Err(why) => {
                let refusal = refusal("mcp_invalid_params", why);
                return Err(self
                    .refuse(refusal, Code::Invalid, None, upstream, identity)
                    .await);
            }
        };
        let Call { tool, arguments } = params;
        let engine = self.service.engine();
        let pack = engine.pack();
        let check = self.seen.check(pack, upstream, &tool);
        if let Some(changed) = check.changed()
            && pins::on_tool_change(pack) == OnToolChange::Refuse
        {
            return Err(self
                .refuse_changed(&tool, changed, None, upstream, identity)
                .await);
        }
        let principal = caller.principal().to_string();
        let asker = Asker {
            principal: &principal,
            credential: caller.token(),
            session: session.as_deref(),
        };
        let call = McpCall {
            method: "tools/call".to_owned(),
            tool: Some(tool.clone()),
            upstream: upstream.to_owned(),
            identity,
            arguments: Some(Value::Object(arguments.clone())),
        };
        let body = match mapping::request_body(pack, asker, &tool, &arguments) {
            Ok(mut body) => {
                if let Err(why) = pins::flag(pack, &mut body, &check) {
                    let changed = check.changed().unwrap_or_default();
                    return Err(self
                        .refuse_changed(&tool, changed, Some(&why), upstream, identity)
                        .await);
                }
                body
            }
            Err(unmapped) => {
                let refusal = refusal("mcp_unmapped", unmapped.to_string());
                return Err(self
                    .refuse(refusal, Code::Invalid, Some(&tool), upstream, identity)
                    .await);
            }
        };
        match self.service.decide_mcp(&engine, body, call).await {
            Err(e) => Err(log_down(&e)),
            Ok(Err(error)) => Err(invalid(Code::Invalid, Some(&tool), &Refusal::from(&error))),
            Ok(Ok(decision)) => match decision.decision {
                Outcome::Allow => Ok(decision.decision_id),
                Outcome::Deny => Err(denied(&tool, &decision)),
            },
        }
    }

    /// A `tools/list` result without the tools this caller can never call; `None` when
    /// it hides none.
    fn tool_list(&self, response: &McpResponse) -> Result<Option<Vec<u8>>, Refused> {
        let token = presented_token(&[], response.metadata_context.as_ref());
        let (caller, session) = self.caller(token).map_err(|why| Refused {
            code: Code::PermissionDenied,
            reason: format!("arbiter cannot filter this tool list: {why}"),
            data: json!({"decision": "invalid", "error": {"code": "mcp_unauthenticated", "message": why}}),
        })?;
        let mut result = arbiter_core::json::from_slice(&response.mcp_response)
            .map_err(|e| invalid_text(format!("the `tools/list` result is not JSON: {e}")))?;
        let last = result.get("nextCursor").is_none_or(Value::is_null);
        let Some(tools) = result.get_mut("tools").and_then(Value::as_array_mut) else {
            return Err(invalid_text(
                "the `tools/list` result has no `tools` array".to_owned(),
            ));
        };
        let backends: &[String] = match response.service_names.as_slice() {
            [] => &[String::new()],
            names => names,
        };
        // Which tools a caller may never call does not depend on the backend: one gate
        // (named after every backend, for its metrics) decides it for all.
        let gate = Gate::new(
            self.decider.clone(),
            Arc::clone(&self.metrics),
            caller,
            session.unwrap_or_default(),
            backends.join(","),
        );
        let pack = Arc::clone(self.service.engine().pack());
        let before = tools.len();
        let mut marked = false;
        tools.retain_mut(|tool| {
            let Some(name) = tool.get("name").and_then(Value::as_str).map(str::to_owned) else {
                return true;
            };
            let attributed = seen::attribute(&name, backends);
            let own = attributed.map_or(name.as_str(), |(_, own)| own);
            if let Some(rule) = gate.hidden_by(own) {
                tracing::info!(tool = name, %rule, "hidden from the tool list");
                return false;
            }
            match attributed {
                Some((backend, own)) => marked |= self.seen.record(&pack, backend, own, tool),
                None => {
                    tracing::debug!(
                        tool = name,
                        "a listed tool names no backend: its pins, if any, are not compared"
                    );
                }
            }
            true
        });
        if last {
            for backend in backends {
                self.seen.completed(&pack, backend);
            }
        }
        if tools.len() == before && !marked {
            return Ok(None);
        }
        Ok(Some(result.to_string().into_bytes()))
    }

    /// Who calls, and the arbiter session the call is decided in (`None` when the token
    /// binds one). A token that does not verify refuses the call; without a token, the
    /// fallback principal decides, or no one.
    fn caller(&self, token: Presented<'_>) -> Result<(Caller, Option<String>), String> {
        match token {
            Presented::Conflicting => Err(
                "the call presents more than one arbiter token (`authorization` and `arbiter_token` disagree)"
                    .to_owned(),
            ),
            Presented::Token(token) => {
                let credential = self
                    .verifier
                    .verify(token, self.clock.now())
                    .map_err(|f| format!("the arbiter token does not verify: credential:{}", f.as_str()))?;
                // The stateless case: the session is the token's, so that a client cannot
                // start a fresh one by changing what it sends.
                let session = credential
                    .session
                    .is_none()
                    .then(|| format!("ext-mcp-{}", credential.jti));
                let caller = Caller::Verified {
                    principal: credential.principal,
                    token: token.to_owned(),
                    session: credential.session,
                };
                Ok((caller, session))
            }
            Presented::None => match &self.fallback {
                Some(caller) => {
                    tracing::debug!(principal = %caller.principal(), "no arbiter token: the configured principal decides, unverified");
                    Ok((caller.clone(), Some(self.fallback_session.clone())))
                }
                None => Err(
                    "no arbiter token was presented (`authorization: Bearer …` among the forwarded headers, or `arbiter_token` in the metadata context), and no principal is configured"
                        .to_owned(),
                ),
            },
        }
    }

    /// Records a call that cannot be decided, and answers it with `code`.
    async fn refuse(
        &self,
        refusal: Refusal,
        code: Code,
        tool: Option<&str>,
        upstream: &str,
        identity: McpIdentity,
    ) -> Refused {
        let call = McpCall {
            method: "tools/call".to_owned(),
            tool: tool.map(str::to_owned),
            upstream: upstream.to_owned(),
            identity,
            arguments: None,
        };
        let answer = invalid(code, tool, &refusal);
        match self.service.refuse_mcp(refusal, call).await {
            Ok(()) => answer,
            Err(e) => log_down(&e),
        }
    }

    /// Refuses a call of a pinned backend's tool that changed, or that cannot be compared
    /// with its pin: recorded as `mcp_tool_changed`, answered with what changed.
    async fn refuse_changed(
        &self,
        tool: &str,
        changed: &[&str],
        why: Option<&str>,
        upstream: &str,
        identity: McpIdentity,
    ) -> Refused {
        let message = pins::refusal_message(tool, changed, why);
        tracing::warn!(tool, backend = upstream, changed = ?changed, "refused a call of a changed tool");
        let refusal = refusal(pins::REFUSAL_CODE, message);
        let mut refused = self
            .refuse(
                refusal,
                Code::PermissionDenied,
                Some(tool),
                upstream,
                identity,
            )
            .await;
        if let Some(data) = refused.data.as_object_mut()
            && data.get("decision").is_some_and(|d| d == "invalid")
            && data
                .get("error")
                .and_then(|e| e.get("code"))
                .is_some_and(|c| c == pins::REFUSAL_CODE)
        {
            data.insert(pins::META_KEY.to_owned(), json!({ "changed": changed }));
        }
        refused
    }
}

#[tonic::async_trait]
impl ExtMcp for Hook {
    async fn check_request(
        &self,
        request: Request<McpRequest>,
    ) -> Result<Response<McpRequestResult>, Status> {
        self.on_request(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn check_response(
        &self,
        request: Request<McpResponse>,
    ) -> Result<Response<McpResponseResult>, Status> {
        self.on_response(request.into_inner())
            .await
            .map(Response::new)
    }
}

/// The arbiter token a call presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presented<'a> {
    None,
    Token(&'a str),
    /// Two that differ: neither is taken.
    Conflicting,
}

/// The token in `authorization: Bearer` headers and in the metadata context's
/// [`TOKEN_KEY`]. Other schemes, and other claims in the metadata context, are not
/// arbiter's to verify, and are ignored.
fn presented_token<'a>(
    headers: &'a [McpHeader],
    metadata: Option<&'a prost_types::Struct>,
) -> Presented<'a> {
    let from_headers = headers
        .iter()
        .filter(|h| h.key.eq_ignore_ascii_case("authorization"))
        .filter_map(|h| bearer(&h.value));
    let from_metadata = metadata
        .and_then(|m| m.fields.get(TOKEN_KEY))
        .and_then(|v| match &v.kind {
            Some(prost_types::value::Kind::StringValue(s)) => Some(s.as_str()),
            _ => None,
        })
        .map(|s| s.strip_prefix("Bearer ").unwrap_or(s).trim());
    let mut found = Presented::None;
    for token in from_headers.chain(from_metadata) {
        found = match found {
            Presented::None => Presented::Token(token),
            Presented::Token(seen) if seen == token => found,
            _ => return Presented::Conflicting,
        };
    }
    found
}

/// The token of a `Bearer` authorization value; `None` for another scheme or bytes that
/// are not text.
fn bearer(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The parts of `tools/call` params that the decision reads.
struct Call {
    tool: String,
    arguments: Map<String, Value>,
}

/// The raw `params` of a `tools/call`, read strictly.
fn params(raw: Option<&[u8]>) -> Result<Call, String> {
    let Some(raw) = raw else {
        return Err("the `tools/call` carries no `params`".to_owned());
    };
    let params = arbiter_core::json::from_slice(raw)
        .map_err(|e| format!("the `tools/call` params are not JSON: {e}"))?;
    let Value::Object(mut params) = params else {
        return Err(format!(
            "the `tools/call` params must be an object, not {}",
            arbiter_core::json::kind_of(&params)
        ));
    };
    let tool = match params.remove("name") {
        Some(Value::String(name)) => name,
        _ => {
            return Err("`tools/call` needs `params.name`, the tool's name as a string".to_owned());
        }
    };
    let arguments = match params.remove("arguments") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(arguments)) => arguments,
        Some(other) => {
            return Err(format!(
                "`params.arguments` must be an object, not {}",
                arbiter_core::json::kind_of(&other)
            ));
        }
    };
    Ok(Call { tool, arguments })
}

impl Refused {
    fn into_error(self) -> AuthorizationError {
        AuthorizationError {
            code: self.code.into(),
            reason: self.reason,
            mcp_error: Some(self.data.to_string().into_bytes()),
        }
    }
}

fn pass_request(decision_id: Option<String>) -> McpRequestResult {
    let metadata = decision_id.map(|id| prost_types::Struct {
        fields: [(
            DECISION_ID_KEY.to_owned(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue(id)),
            },
        )]
        .into_iter()
        .collect(),
    });
    McpRequestResult {
        result: Some(mcp_request_result::Result::Pass(Pass {})),
        header_mutation: None,
        metadata,
    }
}

fn pass_response() -> McpResponseResult {
    McpResponseResult {
        result: Some(mcp_response_result::Result::Pass(Pass {})),
    }
}

/// The answer to a denied call: which rule, why, and, for a throttle, when to retry; the
/// same words and data as a denial the proxy answers itself.
fn denied(tool: &str, decision: &Decision) -> Refused {
    let (reason, data) = crate::gate::denial(tool, decision);
    let code = match decision.effect {
        Some(Effect::Throttle) => Code::ResourceExhausted,
        _ => Code::PermissionDenied,
    };
    Refused { code, reason, data }
}

fn refusal(code: &str, message: String) -> Refusal {
    Refusal {
        code: code.to_owned(),
        message,
    }
}

/// The answer to a call that could not be decided.
fn invalid(code: Code, tool: Option<&str>, refusal: &Refusal) -> Refused {
    let call = match tool {
        Some(tool) => format!("this call to tool `{tool}`"),
        None => "this call".to_owned(),
    };
    Refused {
        code,
        reason: format!(
            "arbiter could not decide {call}, so it is refused: {}",
            refusal.message
        ),
        data: json!({"decision": "invalid", "error": refusal}),
    }
}

/// The answer to a result that cannot be read.
fn invalid_text(why: String) -> Refused {
    Refused {
        code: Code::Invalid,
        data: json!({"decision": "invalid", "error": {"code": "mcp_invalid_result", "message": why}}),
        reason: why,
    }
}

/// A decision that cannot be recorded is not made.
fn log_down(error: &ServiceError) -> Refused {
    tracing::error!(error = %error, "a tool call was refused: the decision log is down");
    Refused {
        code: Code::Unknown,
        reason: "the decision log cannot accept records, so the call is refused".to_owned(),
        data: json!({"decision": "invalid", "error": {"code": "log_unavailable"}}),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test")]

    use super::*;

    fn header(key: &str, value: &[u8]) -> McpHeader {
        McpHeader {
            key: key.to_owned(),
            value: value.to_vec(),
        }
    }

    fn metadata(token: &str) -> prost_types::Struct {
        prost_types::Struct {
            fields: [(
                TOKEN_KEY.to_owned(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::StringValue(token.to_owned())),
                },
            )]
            .into_iter()
            .collect(),
        }
    }

    #[test]
    fn a_token_comes_from_a_bearer_header_or_the_metadata_and_two_must_agree() {
        assert_eq!(presented_token(&[], None), Presented::None);
        let headers = [header("Authorization", b"Bearer abc")];
        assert_eq!(presented_token(&headers, None), Presented::Token("abc"));
        assert_eq!(
            presented_token(&[], Some(&metadata("abc"))),
            Presented::Token("abc")
        );
        assert_eq!(
            presented_token(&headers, Some(&metadata("Bearer abc"))),
            Presented::Token("abc")
        );
        assert_eq!(
            presented_token(&headers, Some(&metadata("xyz"))),
            Presented::Conflicting
        );
        let two = [
            header("authorization", b"bearer abc"),
            header("authorization", b"Bearer xyz"),
        ];
        assert_eq!(presented_token(&two, None), Presented::Conflicting);
        // Not arbiter's to verify: ignored.
        let basic = [
            header("authorization", b"Basic dXNlcg=="),
            header("x-other", b"Bearer no"),
        ];
        assert_eq!(presented_token(&basic, None), Presented::None);
        assert_eq!(
            presented_token(&[header("authorization", b"Bearer \xff")], None),
            Presented::None
        );
    }

    #[test]
    fn params_are_read_strictly_and_the_errors_name_no_values() {
        let call = params(Some(br#"{"name":"echo","arguments":{"message":"hi"}}"#)).unwrap();
        assert_eq!(call.tool, "echo");
        assert_eq!(call.arguments.get("message"), Some(&json!("hi")));
        assert!(
            params(Some(br#"{"name":"echo"}"#))
                .unwrap()
                .arguments
                .is_empty()
        );
        let error = |raw: &[u8]| params(Some(raw)).err().unwrap();
        assert_eq!(
            params(None).err().unwrap(),
            "the `tools/call` carries no `params`"
        );
        assert!(error(b"{not json").starts_with("the `tools/call` params are not JSON: "));
        assert_eq!(
            error(b"[1]"),
            "the `tools/call` params must be an object, not an array"
        );
        assert_eq!(
            error(br#"{"arguments":{}}"#),
            "`tools/call` needs `params.name`, the tool's name as a string"
        );
        assert_eq!(
            error(br#"{"name":"echo","arguments":"SECRET"}"#),
            "`params.arguments` must be an object, not a string"
        );
        assert!(
            error(br#"{"name":"echo","name":"other"}"#).contains("duplicate"),
            "duplicate keys are refused"
        );
    }
}

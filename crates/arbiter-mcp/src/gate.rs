//! One `tools/call` decided through the decision service, and what the agent is told.
//!
//! An allowed call is forwarded untouched. A denied one never reaches the server: the
//! agent gets a `CallToolResult` with `isError: true` whose text names the rule and its
//! reason (the model reads it and can adapt), and whose `_meta` carries the same as data.
//! A call that cannot be decided (its arguments do not fit the mapping or the schema) is
//! refused the same way, and recorded as invalid. Nothing is forwarded unless the
//! decision was `allow` and it is in the decision log's queue.

use std::sync::Arc;

use arbiter_core::Decision;
use arbiter_core::config::OnToolChange;
use arbiter_core::response::Outcome;
use arbiter_core::rule::{Effect, RuleRef};
use arbiter_service::{DecisionService, ServiceError};
use arbiter_store::{McpCall, Refusal};
use serde_json::{Map, Value, json};

use crate::caller::Caller;
use crate::jsonrpc::code;
use crate::mapping::{self, Asker};
use crate::pins::{self, Check};

/// The `_meta` key under which a refusal carries its decision as data.
pub const META_KEY: &str = "arbiter/decision";

/// What to do with a call.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Forward the message to the server, untouched.
    Forward,
    /// Answer the agent with this `CallToolResult` instead.
    Answer(Value),
    /// Answer the agent with this JSON-RPC error instead.
    Fail {
        /// The JSON-RPC error code.
        code: i64,
        /// What went wrong.
        message: String,
    },
    /// Answer the agent with this `CallToolResult`, then end the MCP session: a `revoke`
    /// effect revoked the credential and terminated the arbiter session.
    AnswerAndEnd(Value),
}

/// Decides the calls of one MCP session.
#[derive(Debug)]
pub struct Gate {
    service: Arc<DecisionService>,
    caller: Caller,
    /// The arbiter session the decisions are made in; `None` when the token binds one.
    session: Option<String>,
    upstream: String,
}

impl Gate {
    /// A gate deciding for `caller` in `session`, for calls to `upstream`.
    pub fn new(
        service: Arc<DecisionService>,
        caller: Caller,
        session: String,
        upstream: String,
    ) -> Gate {
        // A token bound to a session decides in that one; sending another would be
        // `credential:session_mismatch`.
        let session = caller.bound_session().is_none().then_some(session);
        Gate {
            service,
            caller,
            session,
            upstream,
        }
    }

    /// The arbiter session the decisions are made in.
    pub fn session(&self) -> Option<&str> {
        self.session.as_deref().or(self.caller.bound_session())
    }

    /// A new session's view of the upstream's pins ([`pins::Watch`]).
    pub fn pin_watch(&self) -> pins::Watch {
        pins::Watch::new(self.service.engine().pack(), &self.upstream)
    }

    /// The upstream the calls are for.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// Decides a `tools/call` with these parameters, for an upstream without pins.
    pub async fn tools_call(&self, params: Option<&Value>) -> Verdict {
        self.tools_call_pinned(params, &Check::Unpinned).await
    }

    /// Decides a `tools/call` with these parameters, given what the upstream's pins say of
    /// the tool ([`pins::Watch::check`]): a changed tool's call is refused
    /// (`mcp_tool_changed`) unless `[mcp] on_tool_change = "decide"`, which decides it with
    /// `context.tool_changed = true`.
    pub async fn tools_call_pinned(&self, params: Option<&Value>, pin: &Check) -> Verdict {
        let empty = Map::new();
        let name = match params.and_then(|p| p.get("name")) {
            Some(Value::String(name)) => name.as_str(),
            _ => {
                let why = "`tools/call` needs `params.name`, the tool's name as a string";
                return self.invalid_params(None, why).await;
            }
        };
        let arguments = match params.and_then(|p| p.get("arguments")) {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(arguments)) => arguments,
            Some(_) => {
                let why = "`params.arguments` must be an object";
                return self.invalid_params(Some(name), why).await;
            }
        };
        let engine = self.service.engine();
        if let Some(changed) = pin.changed()
            && pins::on_tool_change(engine.pack()) == OnToolChange::Refuse
        {
            return self.refuse_changed(name, changed, None).await;
        }
        let principal = self.caller.principal().to_string();
        let asker = Asker {
            principal: &principal,
            credential: self.caller.token(),
            session: self.session.as_deref(),
        };
        let body = match mapping::request_body(engine.pack(), asker, name, arguments) {
            Ok(mut body) => {
                if let Err(why) = pins::flag(engine.pack(), &mut body, pin) {
                    return self
                        .refuse_changed(name, pin.changed().unwrap_or_default(), Some(&why))
                        .await;
                }
                body
            }
            Err(unmapped) => {
                let refusal = Refusal {
                    code: "mcp_unmapped".to_owned(),
                    message: unmapped.to_string(),
                };
                let answer = refused(name, &refusal);
                return match self
                    .service
                    .refuse_mcp(refusal, self.call(Some(name)))
                    .await
                {
                    Ok(()) => Verdict::Answer(answer),
                    Err(e) => log_down(&e),
                };
            }
        };
        match self
            .service
            .decide_mcp(&engine, body, self.call(Some(name)))
            .await
        {
            Err(e) => log_down(&e),
            Ok(Err(error)) => Verdict::Answer(refused(name, &Refusal::from(&error))),
            Ok(Ok(decision)) => match decision.decision {
                Outcome::Allow => Verdict::Forward,
                Outcome::Deny if decision.effect == Some(Effect::Revoke) => {
                    Verdict::AnswerAndEnd(denied(name, &decision))
                }
                Outcome::Deny => Verdict::Answer(denied(name, &decision)),
            },
        }
    }

    /// A call of a tool that changed since it was pinned: recorded as `mcp_tool_changed`,
    /// and answered with what changed.
    async fn refuse_changed(&self, tool: &str, changed: &[&str], why: Option<&str>) -> Verdict {
        let message = pins::refusal_message(tool, changed, why);
        tracing::warn!(tool, changed = ?changed, "refused a call of a changed tool");
        let answer = pins::refused(&message, changed);
        let refusal = Refusal {
            code: pins::REFUSAL_CODE.to_owned(),
            message,
        };
        match self
            .service
            .refuse_mcp(refusal, self.call(Some(tool)))
            .await
        {
            Ok(()) => Verdict::Answer(answer),
            Err(e) => log_down(&e),
        }
    }

    /// A `tools/call` whose parameters are not a call: recorded, and answered as invalid.
    async fn invalid_params(&self, tool: Option<&str>, why: &str) -> Verdict {
        let refusal = Refusal {
            code: "mcp_invalid_params".to_owned(),
            message: why.to_owned(),
        };
        match self.service.refuse_mcp(refusal, self.call(tool)).await {
            Ok(()) => Verdict::Fail {
                code: code::INVALID_PARAMS,
                message: why.to_owned(),
            },
            Err(e) => log_down(&e),
        }
    }

    /// The enforced rule or default-deny scope that denies this caller every call of
    /// `tool`, whatever its arguments: such a tool is left out of the tool list.
    pub fn hidden_by(&self, tool: &str) -> Option<RuleRef> {
        let engine = self.service.engine();
        let (action, resource_type) = mapping::call_shape(engine.pack(), tool)?;
        engine
            .pack()
            .always_denies(self.caller.principal(), &action, &resource_type)
    }

    /// A `tools/list` result without the tools [`Gate::hidden_by`] hides; `None` when it
    /// hides none (the answer is then forwarded untouched).
    pub fn filter_tool_list(&self, response: &[u8]) -> Option<Vec<u8>> {
        let mut response = arbiter_core::json::from_slice(response).ok()?;
        let tools = response
            .get_mut("result")?
            .get_mut("tools")?
            .as_array_mut()?;
        let before = tools.len();
        tools.retain(|tool| {
            let Some(name) = tool.get("name").and_then(Value::as_str) else {
                return true;
            };
            match self.hidden_by(name) {
                Some(rule) => {
                    tracing::info!(tool = name, %rule, "hidden from the tool list");
                    false
                }
                None => true,
            }
        });
        if tools.len() == before {
            return None;
        }
        let mut line = response.to_string().into_bytes();
        line.push(b'\n');
        Some(line)
    }

    fn call(&self, tool: Option<&str>) -> McpCall {
        McpCall {
            method: "tools/call".to_owned(),
            tool: tool.map(str::to_owned),
            upstream: self.upstream.clone(),
            identity: self.caller.identity(),
        }
    }
}

/// A decision that cannot be recorded is not made.
fn log_down(error: &ServiceError) -> Verdict {
    tracing::error!(error = %error, "a tool call was refused: the decision log is down");
    Verdict::Fail {
        code: code::INTERNAL_ERROR,
        message: "the decision log cannot accept records, so the call was not made".to_owned(),
    }
}

/// The answer to a denied call: which rule, why, and, for a throttle, when to retry.
pub fn denied(tool: &str, decision: &Decision) -> Value {
    let rules: Vec<String> = decision.enforced.iter().map(ToString::to_string).collect();
    let mut why = match rules.as_slice() {
        [] => String::new(),
        [one] => format!("rule `{one}`"),
        many => format!(
            "rules {}",
            many.iter()
                .map(|r| format!("`{r}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    // A rule without `@reason` gives `rule:<id>`, which the rule's name already says.
    if let Some(reason) = &decision.reason
        && !rules.iter().any(|r| *reason == format!("rule:{r}"))
    {
        if !why.is_empty() {
            why.push_str(": ");
        }
        why.push_str(reason);
    }
    let text = match (decision.effect, decision.retry_after_s) {
        (Some(Effect::Throttle), retry) => format!(
            "arbiter throttled this call to tool `{tool}`, so it was not made: {why}; retry after {} s (decision {})",
            retry.unwrap_or(1),
            decision.decision_id
        ),
        (Some(Effect::Revoke), _) => format!(
            "arbiter denied this call to tool `{tool}` and revoked the credential: {why}; this session is ended (decision {})",
            decision.decision_id
        ),
        _ => format!(
            "arbiter denied this call to tool `{tool}`, so it was not made: {why} (decision {})",
            decision.decision_id
        ),
    };
    let meta = json!({
        "decision_id": decision.decision_id,
        "decision": "deny",
        "effect": decision.effect,
        "rules": rules,
        "reason": decision.reason,
        "retry_after_s": decision.retry_after_s,
    });
    error_result(text, meta)
}

/// The answer to a call that could not be decided.
pub fn refused(tool: &str, refusal: &Refusal) -> Value {
    let text = format!(
        "arbiter could not decide this call to tool `{tool}`, so it was not made: {}",
        refusal.message
    );
    let meta = json!({"decision": "invalid", "error": refusal});
    error_result(text, meta)
}

fn error_result(text: String, meta: Value) -> Value {
    json!({
        "content": [{"type": "text", "text": text}],
        "isError": true,
        "_meta": {META_KEY: meta},
    })
}

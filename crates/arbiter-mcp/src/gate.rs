//! One `tools/call`, `resources/read` or `prompts/get` decided (through the [`Decider`]),
//! and what the agent is told.
//!
//! An allowed request is forwarded untouched. A denied one never reaches the server: for
//! a tool call the agent gets a `CallToolResult` with `isError: true` whose text names the
//! rule and its reason (the model reads it and can adapt), and whose `_meta` carries the
//! same as data; with `[mcp] denials = "error"`, and always for a read or a prompt, a
//! JSON-RPC error (`-32001` denied, `-32003` throttled) with the decision in `data`. A
//! request that cannot be decided (its arguments do not fit the mapping or the schema) is
//! refused the same way, and recorded as invalid; one that nothing could decide (the log
//! is down, a remote decision point did not answer) is refused with an internal error.
//! Nothing is forwarded unless the decision was `allow` and it is recorded (in the local
//! log's queue, or by the remote decision point).

use std::sync::Arc;
use std::time::{Duration, Instant};

use arbiter_core::Decision;
use arbiter_core::config::{McpDenials, OnToolChange};
use arbiter_core::response::Outcome as Decided;
use arbiter_core::rule::{Effect, Mode, RuleRef};
use arbiter_store::{McpCall, Refusal};
use serde_json::{Map, Value, json};

use crate::caller::Caller;
use crate::decider::{Answer, Decider, Snapshot};
use crate::jsonrpc::code;
use crate::mapping::{self, Asker, Read};
use crate::metrics::{Metrics, Outcome};
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
        /// The decision, as data, when there was one.
        data: Option<Value>,
    },
    /// Answer the agent with this `CallToolResult`, then end the MCP session: a `revoke`
    /// effect revoked the credential and terminated the arbiter session.
    AnswerAndEnd(Value),
    /// Answer the agent with this JSON-RPC error, then end the MCP session (a `revoke`).
    FailAndEnd {
        /// The JSON-RPC error code.
        code: i64,
        /// What went wrong.
        message: String,
        /// The decision, as data.
        data: Option<Value>,
    },
}

impl Verdict {
    /// Whether the session ends after the answer.
    pub fn ends_session(&self) -> bool {
        matches!(self, Verdict::AnswerAndEnd(_) | Verdict::FailAndEnd { .. })
    }
}

/// The JSON-RPC error codes of a refusal, when `[mcp] denials = "error"` (and always for
/// `resources/read` and `prompts/get`, which have no error result). Implementation-defined
/// codes, outside MCP's reserved `-32020..-32099`.
pub mod denial_code {
    /// Denied by a rule, or not decidable.
    pub const DENIED: i64 = -32001;
    /// Throttled: `retry_after_s` in `data`.
    pub const THROTTLED: i64 = -32003;
}

/// Decides the calls of one MCP session.
#[derive(Debug)]
pub struct Gate {
    decider: Decider,
    metrics: Arc<Metrics>,
    caller: Caller,
    /// The arbiter session the decisions are made in; `None` when the token binds one.
    session: Option<String>,
    upstream: String,
}

impl Gate {
    /// A gate deciding for `caller` in `session`, for calls to `upstream`.
    pub fn new(
        decider: Decider,
        metrics: Arc<Metrics>,
        caller: Caller,
        session: String,
        upstream: String,
    ) -> Gate {
        // A token bound to a session decides in that one; sending another would be
        // `credential:session_mismatch`.
        let session = caller.bound_session().is_none().then_some(session);
        Gate {
            decider,
            metrics,
            caller,
            session,
            upstream,
        }
    }

    /// The arbiter session the decisions are made in.
    pub fn session(&self) -> Option<&str> {
        self.session.as_deref().or(self.caller.bound_session())
    }

    /// The caller.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// A new session's view of the upstream's pins ([`pins::Watch`]).
    pub fn pin_watch(&self) -> pins::Watch {
        pins::Watch::new(&self.decider.snapshot().pack, &self.upstream)
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
        let started = Instant::now();
        let empty = Map::new();
        let name = match params.and_then(|p| p.get("name")) {
            Some(Value::String(name)) => name.as_str(),
            _ => {
                let why = "`tools/call` needs `params.name`, the tool's name as a string";
                return self.invalid_params("tools/call", None, why, started).await;
            }
        };
        let arguments = match params.and_then(|p| p.get("arguments")) {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(arguments)) => arguments,
            Some(_) => {
                let why = "`params.arguments` must be an object";
                return self
                    .invalid_params("tools/call", Some(name), why, started)
                    .await;
            }
        };
        let snapshot = self.decider.snapshot();
        if let Some(changed) = pin.changed()
            && pins::on_tool_change(&snapshot.pack) == OnToolChange::Refuse
        {
            return self
                .refuse_changed(&snapshot, name, changed, None, started)
                .await;
        }
        let principal = self.caller.principal().to_string();
        let body =
            match mapping::request_body(&snapshot.pack, self.asker(&principal), name, arguments) {
                Ok(mut body) => {
                    if let Err(why) = pins::flag(&snapshot.pack, &mut body, pin) {
                        let changed = pin.changed().unwrap_or_default();
                        return self
                            .refuse_changed(&snapshot, name, changed, Some(&why), started)
                            .await;
                    }
                    body
                }
                Err(unmapped) => {
                    let refusal = Refusal {
                        code: "mcp_unmapped".to_owned(),
                        message: unmapped.to_string(),
                    };
                    let mut call = self.call("tools/call", Some(name));
                    call.arguments = Some(Value::Object(arguments.clone()));
                    return match self.decider.refuse(refusal.clone(), call).await {
                        Ok(()) => self.refused(&snapshot, Subject::Tool(name), &refusal, started),
                        Err(e) => self.unavailable("tools/call", Some(name), &e, started),
                    };
                }
            };
        let timeout = snapshot
            .pack
            .config()
            .mcp
            .as_ref()
            .and_then(|m| m.tool(name))
            .and_then(|t| t.pdp_timeout_ms.as_ref())
            .map(|ms| Duration::from_millis(*ms.get_ref()));
        let mut call = self.call("tools/call", Some(name));
        call.arguments = Some(Value::Object(arguments.clone()));
        let answer = self.decider.decide(&snapshot, body, call, timeout).await;
        self.verdict(&snapshot, Subject::Tool(name), answer, started)
    }

    /// Decides a `resources/read` or a `prompts/get` with these parameters.
    pub async fn read(&self, method: &str, params: Option<&Value>) -> Verdict {
        let started = Instant::now();
        let field = if method == "resources/read" {
            "uri"
        } else {
            "name"
        };
        let read = match (method, params.and_then(|p| p.get(field))) {
            ("resources/read", Some(Value::String(uri))) => Read::Resource(uri),
            ("prompts/get", Some(Value::String(name))) => Read::Prompt(name),
            _ => {
                let why = format!("`{method}` needs `params.{field}` as a string");
                return self.invalid_params(method, None, &why, started).await;
            }
        };
        let snapshot = self.decider.snapshot();
        let principal = self.caller.principal().to_string();
        let body = mapping::read_body(&snapshot.pack, self.asker(&principal), read);
        let call = self.call(method, Some(read.target()));
        let answer = self.decider.decide(&snapshot, body, call, None).await;
        self.verdict(&snapshot, Subject::Read(read), answer, started)
    }

    fn asker<'a>(&'a self, principal: &'a str) -> Asker<'a> {
        Asker {
            principal,
            credential: self.caller.token(),
            session: self.session.as_deref(),
        }
    }

    /// What the agent is told of a decision.
    fn verdict(
        &self,
        snapshot: &Snapshot,
        subject: Subject<'_>,
        answer: Answer,
        started: Instant,
    ) -> Verdict {
        let decision = match answer {
            Answer::Unavailable(why) => {
                return self.unavailable(subject.method(), subject.label(), &why, started);
            }
            Answer::Invalid(refusal) => return self.refused(snapshot, subject, &refusal, started),
            Answer::Decided(decision) => decision,
        };
        let outcome = match (decision.decision, decision.effect) {
            (Decided::Allow, _) => Outcome::Allowed,
            (Decided::Deny, Some(Effect::Revoke)) => Outcome::Revoked,
            (Decided::Deny, Some(Effect::Throttle)) => Outcome::Throttled,
            (Decided::Deny, _) => Outcome::Denied,
        };
        self.count(subject.method(), subject.label(), outcome, started);
        if outcome == Outcome::Allowed {
            return Verdict::Forward;
        }
        let (text, meta) = denied_text(&subject, &decision);
        let end = outcome == Outcome::Revoked;
        if matches!(subject, Subject::Tool(_)) && denials(snapshot) == McpDenials::Result {
            let result = error_result(text, meta);
            return if end {
                Verdict::AnswerAndEnd(result)
            } else {
                Verdict::Answer(result)
            };
        }
        let code = if outcome == Outcome::Throttled {
            denial_code::THROTTLED
        } else {
            denial_code::DENIED
        };
        if end {
            Verdict::FailAndEnd {
                code,
                message: text,
                data: Some(meta),
            }
        } else {
            Verdict::Fail {
                code,
                message: text,
                data: Some(meta),
            }
        }
    }

    /// A request that could not be decided: refused, as a result or an error.
    fn refused(
        &self,
        snapshot: &Snapshot,
        subject: Subject<'_>,
        refusal: &Refusal,
        started: Instant,
    ) -> Verdict {
        self.count(subject.method(), subject.label(), Outcome::Invalid, started);
        let text = format!(
            "arbiter could not decide this {}, so it was not made: {}",
            subject.describe(),
            refusal.message
        );
        let meta = json!({"decision": "invalid", "error": refusal});
        if matches!(subject, Subject::Tool(_)) && denials(snapshot) == McpDenials::Result {
            Verdict::Answer(error_result(text, meta))
        } else {
            Verdict::Fail {
                code: denial_code::DENIED,
                message: text,
                data: Some(meta),
            }
        }
    }

    /// A call of a tool that changed since it was pinned: recorded as `mcp_tool_changed`,
    /// and answered with what changed (as a result, or as an error with `[mcp] denials =
    /// "error"`).
    async fn refuse_changed(
        &self,
        snapshot: &Snapshot,
        tool: &str,
        changed: &[&str],
        why: Option<&str>,
        started: Instant,
    ) -> Verdict {
        let message = pins::refusal_message(tool, changed, why);
        tracing::warn!(tool, changed = ?changed, "refused a call of a changed tool");
        let answer = pins::refused(&message, changed);
        let refusal = Refusal {
            code: pins::REFUSAL_CODE.to_owned(),
            message,
        };
        if let Err(e) = self
            .decider
            .refuse(refusal, self.call("tools/call", Some(tool)))
            .await
        {
            return self.unavailable("tools/call", Some(tool), &e, started);
        }
        self.count("tools/call", Some(tool), Outcome::Invalid, started);
        if denials(snapshot) == McpDenials::Result {
            return Verdict::Answer(answer);
        }
        let text = answer
            .pointer("/content/0/text")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        Verdict::Fail {
            code: denial_code::DENIED,
            message: text,
            data: answer.get("_meta").cloned(),
        }
    }

    /// A request whose parameters are not what its method takes: recorded, and answered
    /// as invalid.
    async fn invalid_params(
        &self,
        method: &str,
        tool: Option<&str>,
        why: &str,
        started: Instant,
    ) -> Verdict {
        let refusal = Refusal {
            code: "mcp_invalid_params".to_owned(),
            message: why.to_owned(),
        };
        match self.decider.refuse(refusal, self.call(method, tool)).await {
            Ok(()) => {
                self.count(method, tool, Outcome::Invalid, started);
                Verdict::Fail {
                    code: code::INVALID_PARAMS,
                    message: why.to_owned(),
                    data: None,
                }
            }
            Err(e) => self.unavailable(method, tool, &e, started),
        }
    }

    /// Nothing could decide: the call is refused (fail closed).
    fn unavailable(
        &self,
        method: &str,
        tool: Option<&str>,
        why: &str,
        started: Instant,
    ) -> Verdict {
        tracing::error!(
            method,
            tool,
            why,
            "a request was refused: nothing could decide it"
        );
        self.count(method, tool, Outcome::Unavailable, started);
        Verdict::Fail {
            code: code::INTERNAL_ERROR,
            message: format!("arbiter could not decide this request, so it was not made: {why}"),
            data: None,
        }
    }

    fn count(&self, method: &str, tool: Option<&str>, outcome: Outcome, started: Instant) {
        self.metrics
            .request(&self.upstream, method, tool, outcome, started.elapsed());
    }

    /// The enforced rule or default-deny scope that denies this caller every call of
    /// `tool`, whatever its arguments: such a tool is left out of the tool list.
    pub fn hidden_by(&self, tool: &str) -> Option<RuleRef> {
        self.would_hide(&self.decider.snapshot(), tool)
            .filter(|(_, mode)| *mode == Mode::Enforce)
            .map(|(rule, _)| rule)
    }

    /// The rule or scope that denies, or once enforced would deny, this caller every call
    /// of `tool`, with its mode.
    fn would_hide(&self, snapshot: &Snapshot, tool: &str) -> Option<(RuleRef, Mode)> {
        let (action, resource_type) = mapping::call_shape(&snapshot.pack, tool)?;
        snapshot
            .pack
            .would_always_deny(self.caller.principal(), &action, &resource_type)
    }

    /// A `tools/list` result without the tools [`Gate::hidden_by`] hides; `None` when it
    /// hides none (the answer is then forwarded untouched). A tool that a rule in audit or
    /// warn would hide stays, and is counted and logged as such.
    pub fn filter_tool_list(&self, response: &[u8]) -> Option<Vec<u8>> {
        let mut response = arbiter_core::json::from_slice(response).ok()?;
        let tools = response
            .get_mut("result")?
            .get_mut("tools")?
            .as_array_mut()?;
        let snapshot = self.decider.snapshot();
        let before = tools.len();
        tools.retain(|tool| {
            let Some(name) = tool.get("name").and_then(Value::as_str) else {
                return true;
            };
            let Some((rule, mode)) = self.would_hide(&snapshot, name) else {
                return true;
            };
            let mode_name = mode_name(mode);
            self.metrics
                .hidden(&self.upstream, name, &rule.to_string(), mode_name);
            if mode == Mode::Enforce {
                tracing::info!(tool = name, %rule, principal = %self.caller.principal(), "hidden from the tool list");
                false
            } else {
                tracing::info!(tool = name, %rule, mode = mode_name, principal = %self.caller.principal(), "would be hidden from the tool list once the rule is enforced");
                true
            }
        });
        if tools.len() == before {
            return None;
        }
        let mut line = response.to_string().into_bytes();
        line.push(b'\n');
        Some(line)
    }

    fn call(&self, method: &str, tool: Option<&str>) -> McpCall {
        McpCall {
            method: method.to_owned(),
            tool: tool.map(str::to_owned),
            upstream: self.upstream.clone(),
            identity: self.caller.identity(),
            arguments: None,
        }
    }
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Enforce => "enforce",
        Mode::Warn => "warn",
        Mode::Audit => "audit",
    }
}

/// How refusals are answered, as the pack in force says.
fn denials(snapshot: &Snapshot) -> McpDenials {
    snapshot
        .pack
        .config()
        .mcp
        .as_ref()
        .map_or(McpDenials::Result, |m| m.denials)
}

/// What a decided request is about.
#[derive(Debug, Clone, Copy)]
enum Subject<'a> {
    Tool(&'a str),
    Read(Read<'a>),
}

impl Subject<'_> {
    fn method(&self) -> &'static str {
        match self {
            Subject::Tool(_) => "tools/call",
            Subject::Read(read) => read.method(),
        }
    }

    /// The tool, as a metrics label; `None` for a read or a prompt, whose URI or name may
    /// carry what a scraped metrics endpoint must not show (a token in a query string),
    /// and whose number is unbounded.
    fn label(&self) -> Option<&str> {
        match self {
            Subject::Tool(name) => Some(name),
            Subject::Read(_) => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Subject::Tool(name) => format!("call to tool `{name}`"),
            Subject::Read(Read::Resource(uri)) => format!("read of resource `{uri}`"),
            Subject::Read(Read::Prompt(name)) => format!("request for prompt `{name}`"),
        }
    }
}

/// The answer to a denied call: which rule, why, and, for a throttle, when to retry.
pub fn denied(tool: &str, decision: &Decision) -> Value {
    let (text, meta) = denied_text(&Subject::Tool(tool), decision);
    error_result(text, meta)
}

/// The text and the data of a denied call of `tool`: for an enforcement point that answers
/// in its own terms (agentgateway's hook).
pub fn denial(tool: &str, decision: &Decision) -> (String, Value) {
    denied_text(&Subject::Tool(tool), decision)
}

/// The text and the data of a denial.
fn denied_text(subject: &Subject<'_>, decision: &Decision) -> (String, Value) {
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
            "arbiter throttled this {}, so it was not made: {why}; retry after {} s (decision {})",
            subject.describe(),
            retry.unwrap_or(1),
            decision.decision_id
        ),
        (Some(Effect::Revoke), _) => format!(
            "arbiter denied this {} and revoked the credential: {why}; this session is ended (decision {})",
            subject.describe(),
            decision.decision_id
        ),
        _ => format!(
            "arbiter denied this {}, so it was not made: {why} (decision {})",
            subject.describe(),
            decision.decision_id
        ),
    };
    let meta = json!({
        "decision_id": decision.decision_id,
        "decision": "deny",
        "effect": decision.effect,
        "rule": rules.first(),
        "rules": rules,
        "reason": decision.reason,
        "retry_after_s": decision.retry_after_s,
    });
    (text, meta)
}

fn error_result(text: String, meta: Value) -> Value {
    json!({
        "content": [{"type": "text", "text": text}],
        "isError": true,
        "_meta": {META_KEY: meta},
    })
}

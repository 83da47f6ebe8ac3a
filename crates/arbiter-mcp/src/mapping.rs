//! `[mcp]` of the pack: a tool call as a decision request. The action is the tool's
//! (`action`, or the tool's name), the resource comes from an argument, a fixed id or
//! the tool's name, and the arguments `args` names are copied into the context. Nothing
//! else of the call reaches the decision, so nothing else can sway it.

use arbiter_core::Pack;
use arbiter_core::config::{
    DEFAULT_MCP_PROMPTS_ACTION, DEFAULT_MCP_PROMPTS_TYPE, DEFAULT_MCP_RESOURCE_TYPE,
    DEFAULT_MCP_RESOURCES_ACTION, DEFAULT_MCP_RESOURCES_TYPE, McpResource, McpTool,
};
use cedar_policy::{EntityTypeName, EntityUid};
use serde_json::{Map, Value, json};

/// Who asks, in the request: the principal and, when verified, the token presented.
#[derive(Debug, Clone, Copy)]
pub struct Asker<'a> {
    /// The principal's Cedar uid, `Agent::"bot"`.
    pub principal: &'a str,
    /// The arbiter token, presented with every decision so that each one verifies it.
    pub credential: Option<&'a str>,
    /// The arbiter session (the MCP session); `None` when the token binds one.
    pub session: Option<&'a str>,
}

/// Why a call could not be made a request. Names arguments, never their values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unmapped {
    /// The argument the resource's id comes from is missing.
    #[error("the call has no argument `{0}`, which names its resource")]
    MissingResource(String),
    /// The argument the resource's id comes from is not a string, number or boolean.
    #[error("argument `{arg}` names the resource and must be a string, not {found}")]
    ResourceNotText {
        /// The argument's path.
        arg: String,
        /// Its JSON kind.
        found: &'static str,
    },
    /// An argument holds an object with a key Cedar reads as an escape (`__entity`,
    /// `__extn`, `__expr`): a caller could make a string into an entity reference.
    #[error("argument `{0}` holds a key Cedar reserves (`__entity`, `__extn` or `__expr`)")]
    CedarEscape(String),
}

/// Cedar's JSON escapes: an object with one of these keys is not a record to Cedar.
const CEDAR_ESCAPES: [&str; 3] = ["__entity", "__extn", "__expr"];

/// The decision request for a call of `tool` with `arguments`, as `[mcp]` of `pack` maps
/// it.
pub fn request_body(
    pack: &Pack,
    asker: Asker<'_>,
    tool: &str,
    arguments: &Map<String, Value>,
) -> Result<Value, Unmapped> {
    let Mapped {
        tool: mapping,
        action: action_id,
        resource: resource_mapping,
    } = Mapped::of(pack, tool);
    let action = match pack.action_by_id(action_id) {
        Some((_, ty)) => json!({"type": ty, "id": action_id}),
        // Unknown to the schema (or no schema): the engine says what is wrong with it.
        None => json!({"type": "Action", "id": action_id}),
    };
    let resource = resource(resource_mapping, tool, arguments)?;
    let context = match mapping {
        Some(mapping) => context(mapping, arguments)?,
        None => Value::Object(Map::new()),
    };
    let mut body = json!({
        "principal": asker.principal,
        "action": action,
        "resource": resource,
        "context": context,
    });
    if let Some(object) = body.as_object_mut() {
        if let Some(token) = asker.credential {
            object.insert("credential".to_owned(), Value::String(token.to_owned()));
        }
        if let Some(session) = asker.session {
            object.insert("session".to_owned(), Value::String(session.to_owned()));
        }
    }
    Ok(body)
}

/// A request other than `tools/call` that is decided: what it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read<'a> {
    /// `resources/read` of this URI.
    Resource(&'a str),
    /// `prompts/get` of the prompt with this name.
    Prompt(&'a str),
}

impl Read<'_> {
    /// The JSON-RPC method.
    pub fn method(&self) -> &'static str {
        match self {
            Read::Resource(_) => "resources/read",
            Read::Prompt(_) => "prompts/get",
        }
    }

    /// What is read: the URI or the prompt's name.
    pub fn target(&self) -> &str {
        match self {
            Read::Resource(target) | Read::Prompt(target) => target,
        }
    }
}

/// The decision request for a `resources/read` or a `prompts/get`, as `[mcp.resources]`
/// or `[mcp.prompts]` of `pack` maps it (`Action::"resources/read"` on
/// `McpResource::"<uri>"` and `Action::"prompts/get"` on `Prompt::"<name>"` by default).
/// The context is empty: a prompt's arguments and a URI's parts sway nothing.
pub fn read_body(pack: &Pack, asker: Asker<'_>, read: Read<'_>) -> Value {
    let settings = pack.config().mcp.as_ref();
    let (method, default_action, default_type) = match read {
        Read::Resource(_) => (
            settings.and_then(|s| s.resources.as_ref()),
            DEFAULT_MCP_RESOURCES_ACTION,
            DEFAULT_MCP_RESOURCES_TYPE,
        ),
        Read::Prompt(_) => (
            settings.and_then(|s| s.prompts.as_ref()),
            DEFAULT_MCP_PROMPTS_ACTION,
            DEFAULT_MCP_PROMPTS_TYPE,
        ),
    };
    let action_id = method
        .and_then(|m| m.action.as_ref())
        .map_or(default_action, |a| a.get_ref().as_str());
    let ty = method
        .and_then(|m| m.ty.as_ref())
        .map_or(default_type, |t| t.get_ref().as_str());
    let action = match pack.action_by_id(action_id) {
        Some((_, ty)) => json!({"type": ty, "id": action_id}),
        None => json!({"type": "Action", "id": action_id}),
    };
    let mut body = json!({
        "principal": asker.principal,
        "action": action,
        "resource": {"type": ty, "id": read.target()},
        "context": {},
    });
    if let Some(object) = body.as_object_mut() {
        if let Some(token) = asker.credential {
            object.insert("credential".to_owned(), Value::String(token.to_owned()));
        }
        if let Some(session) = asker.session {
            object.insert("session".to_owned(), Value::String(session.to_owned()));
        }
    }
    body
}

/// What `[mcp]` says of one tool, defaults applied.
struct Mapped<'p> {
    /// Its own entry, if it has one.
    tool: Option<&'p McpTool>,
    /// The action's id.
    action: &'p str,
    /// Its resource (`None`: `Tool::"<tool>"`).
    resource: Option<&'p McpResource>,
}

impl<'p> Mapped<'p> {
    fn of(pack: &'p Pack, tool: &'p str) -> Mapped<'p> {
        let settings = pack.config().mcp.as_ref();
        let mapping = settings.and_then(|s| s.tool(tool));
        Mapped {
            tool: mapping,
            action: mapping
                .and_then(|m| m.action.as_ref())
                .map_or(tool, |a| a.get_ref().as_str()),
            resource: mapping
                .and_then(|m| m.resource.as_ref())
                .or_else(|| settings.and_then(|s| s.resource.as_ref())),
        }
    }
}

/// The action and the resource type every call of `tool` has: what decides whether it
/// can ever be allowed. `None` when the schema does not know the action.
pub fn call_shape(pack: &Pack, tool: &str) -> Option<(EntityUid, EntityTypeName)> {
    let mapped = Mapped::of(pack, tool);
    let action = pack.action_with_id(mapped.action)?;
    let ty = mapped
        .resource
        .map_or(DEFAULT_MCP_RESOURCE_TYPE, |r| r.ty.get_ref().as_str())
        .parse()
        .ok()?;
    Some((action, ty))
}

fn resource(
    mapping: Option<&McpResource>,
    tool: &str,
    arguments: &Map<String, Value>,
) -> Result<Value, Unmapped> {
    let Some(mapping) = mapping else {
        return Ok(json!({"type": DEFAULT_MCP_RESOURCE_TYPE, "id": tool}));
    };
    let id = match (&mapping.arg, &mapping.id) {
        (Some(arg), _) => {
            let path = arg.get_ref();
            match argument(arguments, path) {
                None | Some(Value::Null) => return Err(Unmapped::MissingResource(path.clone())),
                Some(Value::String(s)) => s.clone(),
                Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
                Some(other) => {
                    return Err(Unmapped::ResourceNotText {
                        arg: path.clone(),
                        found: arbiter_core::json::kind_of(other),
                    });
                }
            }
        }
        (None, Some(id)) => id.get_ref().clone(),
        (None, None) => tool.to_owned(),
    };
    Ok(json!({"type": mapping.ty.get_ref(), "id": id}))
}

/// The context: each argument `args` names, at its path. An argument the call does not
/// have is left out; the schema says whether it had to be there.
fn context(mapping: &McpTool, arguments: &Map<String, Value>) -> Result<Value, Unmapped> {
    let mut context = Map::new();
    for (arg, target) in &mapping.args {
        let Some(value) = argument(arguments, arg.get_ref()) else {
            continue;
        };
        if holds_escape(value) {
            return Err(Unmapped::CedarEscape(arg.get_ref().clone()));
        }
        // The pack loader checked the path: `context.` and names, none reserved.
        let path = target
            .get_ref()
            .strip_prefix("context.")
            .unwrap_or_default();
        insert(&mut context, path, value.clone());
    }
    Ok(Value::Object(context))
}

/// The argument at a dotted path.
fn argument<'a>(arguments: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut segments = path.split('.');
    let first = arguments.get(segments.next()?)?;
    segments.try_fold(first, |value, segment| value.as_object()?.get(segment))
}

/// Puts `value` at a dotted path, making the records on the way.
fn insert(map: &mut Map<String, Value>, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            map.insert(path.to_owned(), value);
        }
        Some((head, rest)) => {
            let inner = map
                .entry(head.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            if !inner.is_object() {
                *inner = Value::Object(Map::new());
            }
            if let Value::Object(inner) = inner {
                insert(inner, rest, value);
            }
        }
    }
}

fn holds_escape(value: &Value) -> bool {
    match value {
        Value::Object(map) => {
            map.keys().any(|k| CEDAR_ESCAPES.contains(&k.as_str()))
                || map.values().any(holds_escape)
        }
        Value::Array(items) => items.iter().any(holds_escape),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test")]

    use super::*;

    const SCHEMA: &str = r#"
        entity Agent;
        entity Tool;
        entity Url;
        action fetch appliesTo { principal: [Agent], resource: [Url],
            context: { args: { url: String, headers?: { accept?: String } } } };
        action echo appliesTo { principal: [Agent], resource: [Tool] };
    "#;

    fn pack(config: &str) -> Pack {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("policies")).unwrap();
        std::fs::write(
            dir.path().join("policies/p.cedar"),
            "@id(\"p\") permit(principal, action, resource);",
        )
        .unwrap();
        std::fs::write(dir.path().join("schema.cedarschema"), SCHEMA).unwrap();
        std::fs::write(dir.path().join("arbiter.toml"), config).unwrap();
        Pack::load(dir.path()).expect("the pack loads")
    }

    const ASKER: Asker<'static> = Asker {
        principal: "Agent::\"bot\"",
        credential: None,
        session: Some("s1"),
    };

    fn args(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn a_mapped_tool_takes_its_resource_and_context_from_arguments() {
        let pack = pack(
            r#"
            [mcp.tools.get_url]
            action = "fetch"
            resource = { type = "Url", arg = "url" }
            args = { url = "context.args.url", "h.accept" = "context.args.headers.accept" }
            "#,
        );
        let body = request_body(
            &pack,
            ASKER,
            "get_url",
            &args(json!({"url": "https://x.test/", "h": {"accept": "*/*"}, "other": 1})),
        )
        .unwrap();
        assert_eq!(
            body,
            json!({
                "principal": "Agent::\"bot\"",
                "action": {"type": "Action", "id": "fetch"},
                "resource": {"type": "Url", "id": "https://x.test/"},
                "context": {"args": {"url": "https://x.test/", "headers": {"accept": "*/*"}}},
                "session": "s1",
            })
        );
    }

    #[test]
    fn an_unlisted_tool_is_the_action_of_its_name_on_the_tool() {
        let body = request_body(&pack(""), ASKER, "echo", &args(json!({"message": "hi"}))).unwrap();
        assert_eq!(body["action"], json!({"type": "Action", "id": "echo"}));
        assert_eq!(body["resource"], json!({"type": "Tool", "id": "echo"}));
        assert_eq!(body["context"], json!({}));
    }

    #[test]
    fn a_call_that_cannot_be_mapped_says_which_argument() {
        let pack = pack(
            r#"
            [mcp.tools.fetch]
            resource = { type = "Url", arg = "url" }
            args = { url = "context.args.url" }
            "#,
        );
        let unmapped = |a: Value| request_body(&pack, ASKER, "fetch", &args(a)).unwrap_err();
        assert_eq!(
            unmapped(json!({})).to_string(),
            "the call has no argument `url`, which names its resource"
        );
        assert_eq!(
            unmapped(json!({"url": ["SECRET"]})).to_string(),
            "argument `url` names the resource and must be a string, not an array"
        );
        assert_eq!(
            unmapped(json!({"url": {"__entity": {"type": "Agent", "id": "admin"}}})),
            Unmapped::ResourceNotText {
                arg: "url".to_owned(),
                found: "an object"
            }
        );
        let pack2 = self::pack(
            r#"
            [mcp.tools.fetch]
            resource = { type = "Url", id = "any" }
            args = { url = "context.args.url" }
            "#,
        );
        let escaped = request_body(
            &pack2,
            ASKER,
            "fetch",
            &args(json!({"url": [{"x": {"__extn": {"fn": "ip", "arg": "1.2.3.4"}}}]})),
        )
        .unwrap_err();
        assert_eq!(escaped, Unmapped::CedarEscape("url".to_owned()));
    }
}

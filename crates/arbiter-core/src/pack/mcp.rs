//! `[mcp]` checked when the pack loads: every tool's action, resource and argument paths
//! must name what the schema has, so a mistake is a located pack problem rather than a
//! tool call refused at run time.

use std::ops::Range;

use cedar_policy::{EntityTypeName, EntityUid, Schema};
use toml::Spanned;

use super::RESERVED_CONTEXT_KEYS;
use crate::config::{
    DEFAULT_MCP_PROMPTS_ACTION, DEFAULT_MCP_PROMPTS_TYPE, DEFAULT_MCP_RESOURCE_TYPE,
    DEFAULT_MCP_RESOURCES_ACTION, DEFAULT_MCP_RESOURCES_TYPE, Mcp, McpMethod, McpResource,
    OnToolChange, is_pin_hash,
};

/// A problem in `[mcp]`: where in `arbiter.toml`, and what is wrong.
pub(super) type Found = (Range<usize>, String);

/// Every problem of `[mcp]`, against the schema when the pack has one.
pub(super) fn check(mcp: &Mcp, schema: Option<&Schema>) -> Vec<Found> {
    let mut found = Vec::new();
    if let Some(resource) = &mcp.resource {
        check_resource("[mcp] resource", resource, None, schema, &mut found);
    }
    for (name, tool) in &mcp.tools {
        let place = format!("[mcp.tools.{}]", name.get_ref());
        if name.get_ref().is_empty() {
            found.push((name.span(), "[mcp.tools] a tool's name is empty".to_owned()));
            continue;
        }
        let action = match (&tool.action, schema) {
            (_, None) => None,
            (Some(action), Some(schema)) => {
                let uid = action_uid(schema, action.get_ref());
                if uid.is_none() {
                    found.push((
                        action.span(),
                        format!(
                            "{place} action: `{}` is not an action of the schema",
                            action.get_ref()
                        ),
                    ));
                }
                uid
            }
            (None, Some(schema)) => {
                let uid = action_uid(schema, name.get_ref());
                if uid.is_none() {
                    found.push((
                        name.span(),
                        format!(
                            "{place}: the schema has no action `{}` (a tool is the action named \
                             after it unless `action` names another)",
                            name.get_ref()
                        ),
                    ));
                }
                uid
            }
        };
        match &tool.resource {
            Some(resource) => {
                let at = format!("{place} resource");
                check_resource(&at, resource, action.as_ref(), schema, &mut found);
            }
            None => {
                if let (Some(action), Some(schema)) = (&action, schema) {
                    let ty = mcp
                        .resource
                        .as_ref()
                        .map_or(DEFAULT_MCP_RESOURCE_TYPE, |r| r.ty.get_ref().as_str());
                    if let Ok(ty) = ty.parse::<EntityTypeName>()
                        && !applies_to(schema, action, &ty)
                    {
                        found.push((
                            name.span(),
                            format!(
                                "{place}: no `resource` is given, and the default resource type \
                                 `{ty}` is not a resource of action `{}`",
                                action.id().unescaped()
                            ),
                        ));
                    }
                }
            }
        }
        check_args(&place, &tool.args, &mut found);
        if let Some(timeout) = &tool.pdp_timeout_ms
            && *timeout.get_ref() == 0
        {
            found.push((
                timeout.span(),
                format!("{place} pdp_timeout_ms: 0 would refuse every call; give milliseconds > 0"),
            ));
        }
    }
    let methods = [
        (
            "[mcp.resources]",
            &mcp.resources,
            DEFAULT_MCP_RESOURCES_ACTION,
            DEFAULT_MCP_RESOURCES_TYPE,
        ),
        (
            "[mcp.prompts]",
            &mcp.prompts,
            DEFAULT_MCP_PROMPTS_ACTION,
            DEFAULT_MCP_PROMPTS_TYPE,
        ),
    ];
    for (place, method, _, default_type) in methods {
        if let Some(method) = method {
            check_method(place, method, default_type, schema, &mut found);
        }
    }
    check_pins(mcp, &mut found);
    if let Some(separator) = &mcp.namespace_separator {
        check_separator(separator, &mut found);
    }
    found
}

/// `[mcp] namespace_separator`: it goes into tool names, so it is made of what MCP allows
/// in one (letters, digits, `_`, `-`, `.`), and short.
fn check_separator(separator: &Spanned<String>, found: &mut Vec<Found>) {
    let text = separator.get_ref();
    let fits = text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if text.is_empty() || text.len() > 8 || !fits {
        found.push((
            separator.span(),
            format!(
                "[mcp] namespace_separator: `{}` must be 1 to 8 of the characters MCP allows \
                 in a tool name (letters, digits, `_`, `-`, `.`), like the default `__`",
                text.escape_debug()
            ),
        ));
    }
}

/// `[mcp.resources]` / `[mcp.prompts]`: an action the schema has, a type it reads.
fn check_method(
    place: &str,
    method: &McpMethod,
    default_type: &str,
    schema: Option<&Schema>,
    found: &mut Vec<Found>,
) {
    let ty = method
        .ty
        .as_ref()
        .map_or(default_type, |t| t.get_ref().as_str());
    let parsed = match ty.parse::<EntityTypeName>() {
        Ok(parsed) => Some(parsed),
        Err(e) => {
            if let Some(at) = &method.ty {
                found.push((
                    at.span(),
                    format!("{place} type: `{ty}` is not an entity type name ({e})"),
                ));
            }
            None
        }
    };
    let Some(schema) = schema else {
        return;
    };
    let Some(action) = &method.action else {
        return;
    };
    match action_uid(schema, action.get_ref()) {
        None => found.push((
            action.span(),
            format!(
                "{place} action: `{}` is not an action of the schema",
                action.get_ref()
            ),
        )),
        Some(uid) => {
            if let Some(parsed) = parsed
                && !applies_to(schema, &uid, &parsed)
            {
                let span = method.ty.as_ref().map_or(action.span(), Spanned::span);
                found.push((
                    span,
                    format!(
                        "{place}: `{ty}` is not a resource type of action `{}`",
                        action.get_ref()
                    ),
                ));
            }
        }
    }
}

/// The context key the proxy sets on a call of a pinned upstream's tool (docs/mcp.md,
/// "Pinning tools"): no argument may be written there.
pub const TOOL_CHANGED_KEY: &str = "tool_changed";

/// With `on_tool_change = "decide"`, each pinned tool whose action's context does not
/// declare `tool_changed: Bool`: a change of it would be refused anyway (the rules could
/// not see it), which the pack's author should know. Warnings, not errors.
pub(super) fn undecidable_pins(
    mcp: &Mcp,
    schema: &Schema,
    shapes: &super::shapes::ContextShapes,
) -> Vec<Found> {
    let mut found = Vec::new();
    if mcp.on_tool_change != OnToolChange::Decide {
        return found;
    }
    for (upstream, tools) in &mcp.pins {
        for tool in tools.keys() {
            let id = mcp
                .tool(tool.get_ref())
                .and_then(|t| t.action.as_ref())
                .map_or(tool.get_ref().as_str(), |a| a.get_ref().as_str());
            let Some(action) = action_uid(schema, id) else {
                continue;
            };
            if !shapes.declares_bool(&action, TOOL_CHANGED_KEY) {
                found.push((
                    tool.span(),
                    format!(
                        "[mcp.pins.{}.{}]: with `on_tool_change = \"decide\"`, a change of this \
                         tool is still refused: the context of action `{id}` does not declare \
                         `{TOOL_CHANGED_KEY}: Bool`, so no rule could see it",
                        upstream.get_ref(),
                        tool.get_ref()
                    ),
                ));
            }
        }
    }
    found
}

/// `[mcp.pins]`: names that are names, hashes in their documented form.
fn check_pins(mcp: &Mcp, found: &mut Vec<Found>) {
    for (upstream, tools) in &mcp.pins {
        if upstream.get_ref().is_empty() {
            found.push((
                upstream.span(),
                "[mcp.pins] an upstream's name is empty".to_owned(),
            ));
            continue;
        }
        for (tool, pin) in tools {
            let place = format!("[mcp.pins.{}.{}]", upstream.get_ref(), tool.get_ref());
            if tool.get_ref().is_empty() {
                found.push((
                    tool.span(),
                    format!("[mcp.pins.{}] a tool's name is empty", upstream.get_ref()),
                ));
                continue;
            }
            let hashes = [
                ("input_schema", Some(&pin.input_schema)),
                ("output_schema", pin.output_schema.as_ref()),
                ("annotations", pin.annotations.as_ref()),
            ];
            for (key, hash) in hashes {
                if let Some(hash) = hash
                    && !is_pin_hash(hash.get_ref())
                {
                    found.push((
                        hash.span(),
                        format!(
                            "{place} {key}: `{}` is not a pinned hash (`sha256:` and 64 lowercase \
                             hex digits, as `arbiter mcp-proxy pin` writes it)",
                            hash.get_ref().escape_debug()
                        ),
                    ));
                }
            }
        }
    }
}

/// The action of the schema with this id (in any namespace, if only one has it).
pub(super) fn action_uid(schema: &Schema, id: &str) -> Option<EntityUid> {
    let mut matching = schema.actions().filter(|a| a.id().unescaped() == id);
    let first = matching.next()?.clone();
    matching.next().is_none().then_some(first)
}

fn applies_to(schema: &Schema, action: &EntityUid, ty: &EntityTypeName) -> bool {
    schema
        .resources_for_action(action)
        .is_some_and(|mut types| types.any(|t| t == ty))
}

fn check_resource(
    place: &str,
    resource: &McpResource,
    action: Option<&EntityUid>,
    schema: Option<&Schema>,
    found: &mut Vec<Found>,
) {
    let ty = resource.ty.get_ref();
    match ty.parse::<EntityTypeName>() {
        Err(e) => found.push((
            resource.ty.span(),
            format!("{place}: `{ty}` is not an entity type name ({e})"),
        )),
        Ok(name) => {
            if let Some(schema) = schema {
                if !schema.entity_types().any(|t| *t == name) {
                    found.push((
                        resource.ty.span(),
                        format!("{place}: `{ty}` is not an entity type of the schema"),
                    ));
                } else if let Some(action) = action
                    && !applies_to(schema, action, &name)
                {
                    found.push((
                        resource.ty.span(),
                        format!(
                            "{place}: `{ty}` is not a resource type of action `{}`",
                            action.id().unescaped()
                        ),
                    ));
                }
            }
        }
    }
    match (&resource.arg, &resource.id) {
        (Some(_), Some(id)) => {
            found.push((id.span(), format!("{place}: give `arg` or `id`, not both")))
        }
        (Some(arg), None) if !is_path(arg.get_ref()) => found.push((
            arg.span(),
            format!(
                "{place} arg: `{}` is not an argument path (names joined by `.`, e.g. `url` or \
                 `target.url`)",
                arg.get_ref()
            ),
        )),
        _ => {}
    }
}

/// `args`: argument paths to context paths, none reserved, none written twice or inside
/// another.
fn check_args(
    place: &str,
    args: &std::collections::BTreeMap<Spanned<String>, Spanned<String>>,
    found: &mut Vec<Found>,
) {
    let mut targets: Vec<&Spanned<String>> = Vec::new();
    for (arg, target) in args {
        if !is_path(arg.get_ref()) {
            found.push((
                arg.span(),
                format!(
                    "{place} args: `{}` is not an argument path (names joined by `.`)",
                    arg.get_ref()
                ),
            ));
        }
        let Some(inner) = target
            .get_ref()
            .strip_prefix("context.")
            .filter(|rest| is_path(rest))
        else {
            found.push((
                target.span(),
                format!(
                    "{place} args: `{}` is not a path into the context (e.g. `context.args.{}`)",
                    target.get_ref(),
                    arg.get_ref()
                ),
            ));
            continue;
        };
        let top = inner.split('.').next().unwrap_or_default();
        if RESERVED_CONTEXT_KEYS.contains(&top) || top == TOOL_CHANGED_KEY {
            found.push((
                target.span(),
                format!(
                    "{place} args: `context.{top}` is arbiter's own (reserved); choose another \
                     path, e.g. `context.args.{}`",
                    arg.get_ref()
                ),
            ));
            continue;
        }
        let overlaps = targets.iter().find(|other| {
            let (a, b) = (other.get_ref().as_str(), target.get_ref().as_str());
            a == b || a.starts_with(&format!("{b}.")) || b.starts_with(&format!("{a}."))
        });
        if let Some(other) = overlaps {
            found.push((
                target.span(),
                format!(
                    "{place} args: `{}` and `{}` write to the same place in the context",
                    target.get_ref(),
                    other.get_ref()
                ),
            ));
            continue;
        }
        targets.push(target);
    }
}

/// Names joined by `.`, none empty.
pub(crate) fn is_path(text: &str) -> bool {
    !text.is_empty() && text.split('.').all(|segment| !segment.is_empty())
}

//! The rule-level difference between two packs (`arbiter diff`, issue 11): rules added,
//! removed and changed (condition, scope, annotations), every change of mode or effect,
//! and each change's direction. A move away from enforcement is a *downgrade* and is
//! listed first: audit intent must never silently become weaker enforcement, nor
//! enforcement silently become audit.
//!
//! A forbid's *enforcement* is its mode: `audit` enforces nothing, `warn` tells the
//! caller, `enforce` applies the effect. A change is a downgrade when it lowers that (a
//! removed rule counts as nothing enforced), weakens the effect of a rule that acts (revoke
//! → deny → throttle, a throttle letting more through), turns a forbid that acts into a
//! permit, makes a rule skip its evaluation errors, or lowers a default-deny scope's mode.
//! The opposite is an *upgrade*, listed next: a rule entering `warn` or `enforce` outside
//! the audit→enforce lifecycle is worth a reviewer's eye too. A change of condition or
//! scope has no direction a diff can tell; the replay of the log (`--data`) judges it.
//!
//! MCP tool pins (`[mcp.pins]`) are compared too ([`PinChange`]): the pins of an upstream
//! removed, or `[mcp] on_tool_change` going from `refuse` to `decide`, is a downgrade; an
//! upstream newly pinned, or `decide` back to `refuse`, an upgrade; a pin edited, added or
//! removed on an upstream that stays pinned accepts another definition of a tool (a tool
//! without a pin is refused like a changed one), which no diff can judge: neutral, listed
//! with the texts and hashes for a reviewer to read.

use std::collections::{BTreeMap, BTreeSet};

use arbiter_core::Pack;
use arbiter_core::period::Limit;
use arbiter_core::rule::{Effect, Kind, Mode, OnError, Rule, RuleRef};
use serde::Serialize;
use serde_json::Value;

/// Which way a change moves enforcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Away from enforcement.
    Downgrade,
    /// Towards enforcement.
    Upgrade,
    /// Neither, or not something a diff can tell.
    Neutral,
}

/// Whether the rule is new, gone, or edited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    /// Only in HEAD.
    Added,
    /// Only in BASE.
    Removed,
    /// In both, different.
    Changed,
}

/// One changed part of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Field {
    /// `kind`, `mode`, `effect`, `limit`, `on_error`, `scope`, `condition`, or
    /// `@name` for another annotation.
    pub field: String,
    /// In BASE (`None`: not there).
    pub base: Option<String>,
    /// In HEAD (`None`: not there).
    pub head: Option<String>,
}

/// How one rule or default-deny scope differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleChange {
    /// The rule id, or `default-deny:<Type>`.
    pub rule: String,
    /// Added, removed or changed.
    pub presence: Presence,
    /// Which way it moves enforcement.
    pub direction: Direction,
    /// Why it is a downgrade or an upgrade, one sentence per reason.
    pub why: Vec<String>,
    /// What changed (for an added or removed rule: its kind, mode and effect).
    pub fields: Vec<Field>,
    /// Where the rule is: `file:line` in HEAD, or in BASE for a removed rule; `arbiter.toml`
    /// for a scope.
    pub at: String,
}

/// How one MCP tool pin (`[mcp.pins.<upstream>.<tool>]`), or `[mcp] on_tool_change`,
/// differs. A pin change is a pack change: it decides which tool definitions the proxy
/// accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PinChange {
    /// The upstream, as `[mcp.pins]` names it; `None` for `[mcp] on_tool_change`.
    pub upstream: Option<String>,
    /// The tool; `None` for `[mcp] on_tool_change`.
    pub tool: Option<String>,
    /// Added, removed or changed.
    pub presence: Presence,
    /// Which way it moves protection: removing an upstream's pins, or letting the rules
    /// decide changed tools, is a downgrade; pinning an upstream, or refusing changed
    /// tools again, an upgrade; accepting another definition of a tool (a changed pin, a
    /// tool pinned or unpinned on an upstream that stays pinned) is neutral, for a
    /// reviewer to read.
    pub direction: Direction,
    /// Why it is a downgrade or an upgrade, one sentence per reason.
    pub why: Vec<String>,
    /// What changed: `description`, `title`, `input_schema`, `output_schema`,
    /// `annotations` (the pinned texts and hashes), or `on_tool_change`.
    pub fields: Vec<Field>,
}

impl PinChange {
    /// `upstream/tool`, or `[mcp] on_tool_change`.
    pub fn subject(&self) -> String {
        match (&self.upstream, &self.tool) {
            (Some(upstream), Some(tool)) => format!("{upstream}/{tool}"),
            (Some(upstream), None) => upstream.clone(),
            _ => "[mcp] on_tool_change".to_owned(),
        }
    }
}

/// The rule-level difference between two packs.
#[derive(Debug, Clone, Serialize)]
pub struct PackDiff {
    /// BASE's version (`sha256:` of its content).
    pub base: String,
    /// HEAD's version.
    pub head: String,
    /// How many changes are downgrades (rule changes and pin changes).
    pub downgrades: usize,
    /// How many are upgrades (rule changes and pin changes).
    pub upgrades: usize,
    /// Every change: downgrades first, then upgrades, then the rest; by rule within each.
    pub changes: Vec<RuleChange>,
    /// Every change of MCP tool pins: downgrades first, then upgrades, then the rest; by
    /// upstream and tool within each.
    pub pins: Vec<PinChange>,
}

impl PackDiff {
    /// The changes going `direction`.
    pub fn going(&self, direction: Direction) -> impl Iterator<Item = &RuleChange> {
        self.changes
            .iter()
            .filter(move |c| c.direction == direction)
    }
}

/// The difference from `base` to `head`.
pub fn diff(base: &Pack, head: &Pack) -> PackDiff {
    let mut changes = Vec::new();
    let ids: BTreeSet<&str> = base
        .rules()
        .iter()
        .chain(head.rules())
        .map(|r| r.id.as_str())
        .collect();
    for id in ids {
        let change = match (base.rule(id), head.rule(id)) {
            (Some(b), Some(h)) => changed(
                (b, &policy_json(base, id), &annotations(base, id)),
                (h, &policy_json(head, id), &annotations(head, id)),
            ),
            (None, Some(h)) => Some(added(h)),
            (Some(b), None) => Some(removed(b)),
            (None, None) => None,
        };
        changes.extend(change);
    }
    let (base_scopes, head_scopes) = (base.default_deny_scopes(), head.default_deny_scopes());
    let types: BTreeSet<&String> = base_scopes.keys().chain(head_scopes.keys()).collect();
    for ty in types {
        changes.extend(scope(
            ty,
            base_scopes.get(ty).copied(),
            head_scopes.get(ty).copied(),
        ));
    }
    changes.sort_by(|a, b| {
        a.direction
            .cmp(&b.direction)
            .then_with(|| a.rule.cmp(&b.rule))
    });
    let mut pins = pin_changes(base, head);
    pins.sort_by(|a, b| {
        a.direction
            .cmp(&b.direction)
            .then_with(|| a.upstream.cmp(&b.upstream))
            .then_with(|| a.tool.cmp(&b.tool))
    });
    let count = |direction: Direction| {
        changes.iter().filter(|c| c.direction == direction).count()
            + pins.iter().filter(|c| c.direction == direction).count()
    };
    PackDiff {
        base: base.version().to_owned(),
        head: head.version().to_owned(),
        downgrades: count(Direction::Downgrade),
        upgrades: count(Direction::Upgrade),
        changes,
        pins,
    }
}

/// A pack's pins as text: upstream → tool → field → value.
type PinTexts = BTreeMap<String, BTreeMap<String, BTreeMap<&'static str, String>>>;

fn pin_texts(pack: &Pack) -> PinTexts {
    let Some(mcp) = pack.config().mcp.as_ref() else {
        return PinTexts::new();
    };
    mcp.pins
        .iter()
        .map(|(upstream, tools)| {
            let tools = tools
                .iter()
                .map(|(tool, pin)| {
                    let mut fields = BTreeMap::new();
                    let mut put = |name: &'static str, value: Option<&String>| {
                        if let Some(v) = value {
                            fields.insert(name, v.clone());
                        }
                    };
                    put("description", pin.description.as_ref().map(|v| v.get_ref()));
                    put("title", pin.title.as_ref().map(|v| v.get_ref()));
                    put("input_schema", Some(pin.input_schema.get_ref()));
                    put(
                        "output_schema",
                        pin.output_schema.as_ref().map(|v| v.get_ref()),
                    );
                    put("annotations", pin.annotations.as_ref().map(|v| v.get_ref()));
                    (tool.get_ref().clone(), fields)
                })
                .collect();
            (upstream.get_ref().clone(), tools)
        })
        .collect()
}

/// The pins of each upstream, and `[mcp] on_tool_change`, compared.
fn pin_changes(base: &Pack, head: &Pack) -> Vec<PinChange> {
    use arbiter_core::config::OnToolChange;
    let mut found = Vec::new();
    let setting = |pack: &Pack| pack.config().mcp.as_ref().map(|m| m.on_tool_change);
    let (was, is) = (
        setting(base).unwrap_or_default(),
        setting(head).unwrap_or_default(),
    );
    if was != is {
        let said = format!(
            "`[mcp] on_tool_change` goes from `{}` to `{}`",
            was.as_str(),
            is.as_str()
        );
        let (direction, why) = match is {
            OnToolChange::Decide => (
                Direction::Downgrade,
                format!(
                    "{said}: a changed tool's calls are no longer refused, the rules decide them"
                ),
            ),
            OnToolChange::Refuse => (
                Direction::Upgrade,
                format!("{said}: a changed tool's calls are refused again"),
            ),
        };
        found.push(PinChange {
            upstream: None,
            tool: None,
            presence: Presence::Changed,
            direction,
            why: vec![why],
            fields: vec![Field {
                field: "on_tool_change".to_owned(),
                base: Some(was.as_str().to_owned()),
                head: Some(is.as_str().to_owned()),
            }],
        });
    }
    let (base_pins, head_pins) = (pin_texts(base), pin_texts(head));
    let empty = BTreeMap::new();
    let upstreams: BTreeSet<&String> = base_pins.keys().chain(head_pins.keys()).collect();
    for upstream in upstreams {
        let (b, h) = (base_pins.get(upstream), head_pins.get(upstream));
        let tools: BTreeSet<&String> = b
            .unwrap_or(&empty)
            .keys()
            .chain(h.unwrap_or(&empty).keys())
            .collect();
        for tool in tools {
            let (bt, ht) = (b.and_then(|t| t.get(tool)), h.and_then(|t| t.get(tool)));
            let names: BTreeSet<&&str> =
                bt.iter().chain(ht.iter()).flat_map(|f| f.keys()).collect();
            let fields: Vec<Field> = names
                .into_iter()
                .filter_map(|name| {
                    let (x, y) = (
                        bt.and_then(|f| f.get(*name)).cloned(),
                        ht.and_then(|f| f.get(*name)).cloned(),
                    );
                    (x != y).then(|| Field {
                        field: (*name).to_owned(),
                        base: x,
                        head: y,
                    })
                })
                .collect();
            if fields.is_empty() && bt.is_some() == ht.is_some() {
                continue;
            }
            let (presence, direction, why) = match (b.is_some(), h.is_some(), bt, ht) {
                (false, true, _, _) => (
                    Presence::Added,
                    Direction::Upgrade,
                    vec![format!(
                        "upstream `{upstream}` is pinned: its tools are compared with their pins"
                    )],
                ),
                (true, false, _, _) => (
                    Presence::Removed,
                    Direction::Downgrade,
                    vec![format!(
                        "the pins of upstream `{upstream}` are removed: its tools are no longer \
                         compared, whatever they become"
                    )],
                ),
                (_, _, None, Some(_)) => (Presence::Added, Direction::Neutral, Vec::new()),
                (_, _, Some(_), None) => (Presence::Removed, Direction::Neutral, Vec::new()),
                _ => (Presence::Changed, Direction::Neutral, Vec::new()),
            };
            found.push(PinChange {
                upstream: Some(upstream.clone()),
                tool: Some(tool.clone()),
                presence,
                direction,
                why,
                fields,
            });
        }
    }
    found
}

/// How much a forbid acts at the point of action: nothing (audit, or no rule), tells the
/// caller (warn), applies its effect (enforce).
fn acts(rule: Option<&Rule>) -> u8 {
    match rule.filter(|r| r.kind == Kind::Forbid).and_then(|r| r.mode) {
        None | Some(Mode::Audit) => 0,
        Some(Mode::Warn) => 1,
        Some(Mode::Enforce) => 2,
    }
}

fn mode_word(mode: Option<Mode>) -> Option<String> {
    mode.map(|m| m.as_str().to_owned())
}

fn effect_word(effect: Option<Effect>) -> Option<String> {
    effect.map(|e| e.as_str().to_owned())
}

fn at(rule: &Rule) -> String {
    format!("{}:{}", rule.file.display(), rule.line)
}

/// The fields an added or removed rule is summed up by.
fn summary(rule: &Rule, in_head: bool) -> Vec<Field> {
    let side = |value: Option<String>| {
        if in_head {
            (None, value)
        } else {
            (value, None)
        }
    };
    let mut fields = Vec::new();
    let mut push = |field: &str, value: Option<String>| {
        if value.is_some() {
            let (base, head) = side(value);
            fields.push(Field {
                field: field.to_owned(),
                base,
                head,
            });
        }
    };
    push("kind", Some(kind_word(rule.kind).to_owned()));
    push("mode", mode_word(rule.mode));
    push("effect", effect_word(rule.effect));
    push("limit", rule.limit.as_ref().map(ToString::to_string));
    if rule.on_error == OnError::Skip {
        push("on_error", Some("skip".to_owned()));
    }
    fields
}

fn kind_word(kind: Kind) -> &'static str {
    match kind {
        Kind::Permit => "permit",
        Kind::Forbid => "forbid",
    }
}

fn added(rule: &Rule) -> RuleChange {
    let mut why = Vec::new();
    let direction = match acts(Some(rule)) {
        0 => Direction::Neutral,
        _ => {
            why.push(format!(
                "a new rule in `{}`, without an audit period here",
                mode_word(rule.mode).unwrap_or_default()
            ));
            Direction::Upgrade
        }
    };
    RuleChange {
        rule: rule.id.clone(),
        presence: Presence::Added,
        direction,
        why,
        fields: summary(rule, true),
        at: at(rule),
    }
}

fn removed(rule: &Rule) -> RuleChange {
    let mut why = Vec::new();
    let direction = match acts(Some(rule)) {
        0 => Direction::Neutral,
        _ => {
            why.push(format!(
                "a rule in `{}` is removed",
                mode_word(rule.mode).unwrap_or_default()
            ));
            Direction::Downgrade
        }
    };
    RuleChange {
        rule: rule.id.clone(),
        presence: Presence::Removed,
        direction,
        why,
        fields: summary(rule, false),
        at: at(rule),
    }
}

/// Requests a throttle lets through per second.
fn rate(limit: &Limit) -> f64 {
    f64::from(limit.count) / limit.per.seconds().max(1) as f64
}

fn changed(
    (b, b_json, b_notes): (&Rule, &Value, &BTreeMap<String, String>),
    (h, h_json, h_notes): (&Rule, &Value, &BTreeMap<String, String>),
) -> Option<RuleChange> {
    let mut fields = Vec::new();
    let mut field = |name: &str, base: Option<String>, head: Option<String>| {
        if base != head {
            fields.push(Field {
                field: name.to_owned(),
                base,
                head,
            });
        }
    };
    field(
        "kind",
        Some(kind_word(b.kind).to_owned()),
        Some(kind_word(h.kind).to_owned()),
    );
    field("mode", mode_word(b.mode), mode_word(h.mode));
    field("effect", effect_word(b.effect), effect_word(h.effect));
    field(
        "limit",
        b.limit.as_ref().map(ToString::to_string),
        h.limit.as_ref().map(ToString::to_string),
    );
    field(
        "on_error",
        Some(on_error_word(b.on_error).to_owned()),
        Some(on_error_word(h.on_error).to_owned()),
    );
    for part in ["principal", "action", "resource"] {
        field(
            &format!("scope.{part}"),
            b_json.get(part).map(Value::to_string),
            h_json.get(part).map(Value::to_string),
        );
    }
    field(
        "condition",
        b_json.get("conditions").map(Value::to_string),
        h_json.get("conditions").map(Value::to_string),
    );
    // The annotations the fields above do not already say.
    let read = ["id", "mode", "effect", "limit", "on_error"];
    let names: BTreeSet<&String> = b_notes.keys().chain(h_notes.keys()).collect();
    for name in names {
        if !read.contains(&name.as_str()) {
            field(
                &format!("@{name}"),
                b_notes.get(name).cloned(),
                h_notes.get(name).cloned(),
            );
        }
    }
    if fields.is_empty() {
        return None;
    }
    let (mut down, mut up) = (Vec::new(), Vec::new());
    let (was, is) = (acts(Some(b)), acts(Some(h)));
    let words = |r: &Rule| match r.kind {
        Kind::Permit => "a permit".to_owned(),
        Kind::Forbid => format!("`{}`", mode_word(r.mode).unwrap_or_default()),
    };
    if is < was {
        down.push(format!("from {} to {}", words(b), words(h)));
    } else if is > was {
        up.push(format!("from {} to {}", words(b), words(h)));
    }
    // An effect or a limit matters where the rule acts.
    if was > 0 && is > 0 {
        match (b.effect, h.effect) {
            (Some(x), Some(y)) if y < x => down.push(format!(
                "its effect weakens from `{}` to `{}`",
                x.as_str(),
                y.as_str()
            )),
            (Some(x), Some(y)) if y > x => up.push(format!(
                "its effect strengthens from `{}` to `{}`",
                x.as_str(),
                y.as_str()
            )),
            _ => {}
        }
        if let (Some(x), Some(y)) = (&b.limit, &h.limit)
            && b.effect == Some(Effect::Throttle)
            && h.effect == Some(Effect::Throttle)
        {
            if rate(y) > rate(x) {
                down.push(format!("its throttle lets more through: {x} → {y}"));
            } else if rate(y) < rate(x) {
                up.push(format!("its throttle lets less through: {x} → {y}"));
            }
        }
    }
    if h.kind == Kind::Forbid {
        match (b.on_error, h.on_error) {
            (OnError::Deny, OnError::Skip) => {
                down.push("it now skips its evaluation errors (`@on_error(\"skip\")`)".to_owned());
            }
            (OnError::Skip, OnError::Deny) => {
                up.push("it no longer skips its evaluation errors".to_owned());
            }
            _ => {}
        }
    }
    let (direction, why) = if !down.is_empty() {
        (Direction::Downgrade, down)
    } else if !up.is_empty() {
        (Direction::Upgrade, up)
    } else {
        (Direction::Neutral, Vec::new())
    };
    Some(RuleChange {
        rule: h.id.clone(),
        presence: Presence::Changed,
        direction,
        why,
        fields,
        at: at(h),
    })
}

fn on_error_word(on_error: OnError) -> &'static str {
    match on_error {
        OnError::Deny => "deny",
        OnError::Skip => "skip",
    }
}

fn scope(ty: &str, base: Option<Mode>, head: Option<Mode>) -> Option<RuleChange> {
    if base == head {
        return None;
    }
    let rank = |mode: Option<Mode>| match mode {
        None | Some(Mode::Audit) => 0,
        Some(Mode::Warn) => 1,
        Some(Mode::Enforce) => 2,
    };
    let word =
        |mode: Option<Mode>| mode.map_or("no scope".to_owned(), |m| format!("`{}`", m.as_str()));
    let said = format!(
        "the default-deny scope of {ty} goes from {} to {}",
        word(base),
        word(head)
    );
    let (direction, why) = match rank(head).cmp(&rank(base)) {
        std::cmp::Ordering::Less => (Direction::Downgrade, vec![said]),
        std::cmp::Ordering::Greater => (Direction::Upgrade, vec![said]),
        std::cmp::Ordering::Equal => (Direction::Neutral, Vec::new()),
    };
    Some(RuleChange {
        rule: RuleRef::default_deny(ty).to_string(),
        presence: match (base, head) {
            (None, _) => Presence::Added,
            (_, None) => Presence::Removed,
            _ => Presence::Changed,
        },
        direction,
        why,
        fields: vec![Field {
            field: "mode".to_owned(),
            base: mode_word(base),
            head: mode_word(head),
        }],
        at: "arbiter.toml".to_owned(),
    })
}

/// The policy's JSON form (scope and conditions, whitespace and comments aside).
fn policy_json(pack: &Pack, id: &str) -> Value {
    pack.policies()
        .policy(&cedar_policy::PolicyId::new(id))
        .and_then(|p| p.to_json().ok())
        .unwrap_or(Value::Null)
}

fn annotations(pack: &Pack, id: &str) -> BTreeMap<String, String> {
    pack.policies()
        .policy(&cedar_policy::PolicyId::new(id))
        .map(|p| {
            p.annotations()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

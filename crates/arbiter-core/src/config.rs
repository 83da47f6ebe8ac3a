//! `arbiter.toml`: the pack's settings. Unknown keys are errors, so a typo never silently
//! turns a control off, and every one of them is reported at once (see [`KEYS`]).

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use crate::period::Period;
use crate::rule::{Mode, OnError};

/// The whole of `arbiter.toml`. Every section is optional; absent sections take the
/// defaults DESIGN §2 gives.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[defaults]`.
    #[serde(default)]
    pub defaults: Defaults,
    /// `[default_deny]`.
    #[serde(default)]
    pub default_deny: DefaultDeny,
    /// `[credentials]`.
    #[serde(default)]
    pub credentials: Credentials,
    /// `[[issuers]]`.
    #[serde(default)]
    pub issuers: Vec<Issuer>,
    /// `[intents.<name>]`.
    #[serde(default)]
    pub intents: BTreeMap<String, Intent>,
    /// `[chains.<name>]`.
    #[serde(default)]
    pub chains: BTreeMap<String, Chain>,
    /// `[readiness]`.
    #[serde(default)]
    pub readiness: Readiness,
    /// `[log]`.
    #[serde(default)]
    pub log: Log,
    /// `[server]`.
    #[serde(default)]
    pub server: Server,
    /// `[requests]`.
    #[serde(default)]
    pub requests: Requests,
    /// `[frameworks.<name>]`: a pack's own framework for `@maps`.
    #[serde(default)]
    pub frameworks: BTreeMap<String, Framework>,
    /// `[mcp]`: how `arbiter mcp-proxy` turns a tool call into a decision request.
    pub mcp: Option<Mcp>,
}

/// `[defaults]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// The mode of a forbid without `@mode`.
    #[serde(default = "audit")]
    pub mode: Mode,
    /// What an evaluation error means for a forbid without `@on_error`.
    #[serde(default = "fail_closed")]
    pub on_error: OnError,
    /// A pack with no policy at all is an error (a deleted or emptied `policies/` would
    /// otherwise load, and reload, as a pack that permits and forbids nothing) unless this
    /// says it is meant: every request then falls to the default-deny scope.
    #[serde(default)]
    pub allow_no_policies: bool,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            mode: Mode::Audit,
            on_error: OnError::Deny,
            allow_no_policies: false,
        }
    }
}

fn audit() -> Mode {
    Mode::Audit
}

fn fail_closed() -> OnError {
    OnError::Deny
}

/// `[default_deny]`: the mode of the scope that decides when no permit matches.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultDeny {
    /// The mode for principal types not listed.
    #[serde(default = "audit")]
    pub mode: Mode,
    /// Per principal type (Cedar type name, e.g. `Agent` or `Acme::Agent`).
    #[serde(default)]
    pub principal_types: BTreeMap<Spanned<String>, Mode>,
}

impl Default for DefaultDeny {
    fn default() -> Self {
        Self {
            mode: Mode::Audit,
            principal_types: BTreeMap::new(),
        }
    }
}

impl DefaultDeny {
    /// The scope's mode for a principal type.
    pub fn mode_for(&self, principal_type: &str) -> Mode {
        self.principal_types
            .iter()
            .find(|(k, _)| k.get_ref() == principal_type)
            .map_or(self.mode, |(_, m)| *m)
    }
}

/// `[credentials]`: the short-lived tokens arbiter issues and verifies (DESIGN §3 step 2).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// Principal types that must present a credential.
    #[serde(default)]
    pub required_for: Vec<Spanned<String>>,
    /// The longest TTL a credential may be issued with (default `1h`). Asking for more is
    /// an error, never a silent cap.
    #[serde(default = "hour")]
    pub max_ttl: Period,
    /// The `iss` of the tokens arbiter issues, and the only `iss` it accepts for them
    /// (default `arbiter`).
    #[serde(default = "arbiter_name")]
    pub issuer: String,
    /// The `aud` arbiter's tokens carry by default, and that verification requires
    /// (default `arbiter`).
    #[serde(default = "arbiter_name")]
    pub audience: String,
    /// Clock skew tolerated on `exp`, `nbf` and `iat` (default `30s`, at most `5m`).
    #[serde(default = "thirty_seconds")]
    pub leeway: Period,
}

impl Default for Credentials {
    fn default() -> Self {
        Self {
            required_for: Vec::new(),
            max_ttl: hour(),
            issuer: arbiter_name(),
            audience: arbiter_name(),
            leeway: thirty_seconds(),
        }
    }
}

fn hour() -> Period {
    Period::hours(1)
}

fn arbiter_name() -> String {
    "arbiter".to_owned()
}

fn thirty_seconds() -> Period {
    Period::seconds_of(30)
}

/// The signature algorithms arbiter accepts at all. `none` and every HMAC algorithm are
/// never accepted: a verifier holding only public keys must not be tricked into using one
/// as a shared secret.
pub const ALGORITHMS: &[&str] = &["EdDSA", "ES256", "RS256"];

/// `[[issuers]]`: an upstream issuer whose tokens `POST /v1/token` exchanges for a
/// short-lived arbiter token (a CI job's OIDC token, a Kubernetes service-account token,
/// a SPIFFE JWT-SVID).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Issuer {
    /// A name for logs, and `context.credential.issuer` of the tokens exchanged from it.
    pub name: Spanned<String>,
    /// Defaults for a well-known kind of issuer.
    pub preset: Option<Preset>,
    /// The `iss` its tokens carry (the preset's when absent, if it has one).
    pub issuer: Option<Spanned<String>>,
    /// The `aud` its tokens must carry: what the workload asked its issuer for.
    pub audience: Spanned<String>,
    /// Its public keys, a JWKS file relative to the pack directory.
    pub jwks_file: Option<Spanned<String>>,
    /// Its public keys, fetched from this URL and cached.
    pub jwks_url: Option<Spanned<String>>,
    /// How long fetched keys are kept before they are fetched again (default `1h`).
    #[serde(default = "hour")]
    pub jwks_refresh: Period,
    /// Accepted algorithms, a subset of [`ALGORITHMS`] (the preset's when absent).
    pub algorithms: Option<Vec<Spanned<String>>>,
    /// The Cedar principal a token maps to: `Type::"…"` where `{claim}` stands for a
    /// claim's value, e.g. `CiJob::"{repository}"`.
    pub principal: Spanned<String>,
    /// Principal attributes copied from claims: attribute name → claim name.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Claims that must have exactly these values (e.g. `repository_owner = "acme"`).
    #[serde(default)]
    pub require: BTreeMap<String, String>,
    /// The intents its workloads may ask for (any intent of the pack when absent).
    pub intents: Option<Vec<Spanned<String>>>,
}

impl Issuer {
    /// The `iss` its tokens must carry.
    pub fn iss(&self) -> Option<&str> {
        self.issuer
            .as_ref()
            .map(|i| i.get_ref().as_str())
            .or_else(|| self.preset.and_then(Preset::default_issuer))
    }

    /// The algorithms its tokens may be signed with.
    pub fn algorithms(&self) -> Vec<&str> {
        match &self.algorithms {
            Some(list) => list.iter().map(|a| a.get_ref().as_str()).collect(),
            None => self
                .preset
                .map_or(ALGORITHMS, Preset::default_algorithms)
                .to_vec(),
        }
    }
}

/// Well-known upstream issuers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// GitHub Actions OIDC tokens: claims `repository`, `repository_owner`, `ref`,
    /// `workflow`, `job_workflow_ref`, `environment`, …
    GithubActions,
    /// Kubernetes projected service-account tokens: `sub` is
    /// `system:serviceaccount:NS:NAME`, offered as the claims `namespace` and
    /// `serviceaccount`.
    Kubernetes,
    /// SPIFFE JWT-SVIDs: `sub` is `spiffe://TRUST-DOMAIN/PATH`, offered as the claims
    /// `trust_domain` and `path`.
    Spiffe,
}

impl Preset {
    /// The `iss` every issuer of this kind uses, if there is one.
    pub fn default_issuer(self) -> Option<&'static str> {
        match self {
            Preset::GithubActions => Some("https://token.actions.githubusercontent.com"),
            Preset::Kubernetes | Preset::Spiffe => None,
        }
    }

    /// The algorithms issuers of this kind sign with.
    pub fn default_algorithms(self) -> &'static [&'static str] {
        match self {
            Preset::GithubActions => &["RS256"],
            Preset::Kubernetes => &["RS256", "ES256"],
            Preset::Spiffe => &["RS256", "ES256", "EdDSA"],
        }
    }

    /// The claims the preset derives from `sub`, usable in `principal`, `attributes`
    /// and `require` like any claim.
    pub fn derived_claims(self) -> &'static [&'static str] {
        match self {
            Preset::GithubActions => &[],
            Preset::Kubernetes => &["namespace", "serviceaccount"],
            Preset::Spiffe => &["trust_domain", "path"],
        }
    }
}

/// `[intents.<name>]`: a task intent a credential can carry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Intent {
    /// Actions or action groups (bare ids) the intent covers.
    pub actions: Vec<Spanned<String>>,
    /// The longest TTL of a credential carrying this intent.
    pub max_ttl: Option<Period>,
}

/// `[chains.<name>]`: steps (actions or groups) that lead to the same asset.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chain {
    /// The steps, in order.
    pub steps: Vec<Spanned<String>>,
}

/// `[readiness]`: when evidence says a rule is ready to enforce.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Readiness {
    /// Days in audit at least.
    #[serde(default = "fourteen")]
    pub min_days: u32,
    /// Evidence must span at least one full cycle of traffic.
    #[serde(default = "week")]
    pub cycle: Period,
    /// Past this many days in audit a rule is overdue.
    #[serde(default = "sixty")]
    pub max_audit_days: u32,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            min_days: fourteen(),
            cycle: week(),
            max_audit_days: sixty(),
        }
    }
}

fn fourteen() -> u32 {
    14
}

fn sixty() -> u32 {
    60
}

fn week() -> Period {
    Period::days(7)
}

/// `[log]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    /// Paths (`context.args.password`) whose values are replaced by a keyed hash.
    #[serde(default)]
    pub mask: Vec<Spanned<String>>,
}

/// `[server]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// `sha256:<hex>` hashes of the tokens PEPs present on decision endpoints.
    #[serde(default)]
    pub pep_tokens: Vec<Spanned<String>>,
}

/// `[requests]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requests {
    /// Entity types a request may describe in `entities`.
    #[serde(default)]
    pub entity_types: Vec<Spanned<String>>,
}

/// `[frameworks.<name>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Framework {
    /// Control id → title.
    pub controls: BTreeMap<String, String>,
}

/// The resource type of a tool call whose tool maps no resource: `Tool::"<tool name>"`.
pub const DEFAULT_MCP_RESOURCE_TYPE: &str = "Tool";

/// `[mcp]`: how `arbiter mcp-proxy` turns an MCP `tools/call` into a decision request.
/// A tool not listed under `[mcp.tools]` is the action named after it, on the default
/// resource, with an empty context.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mcp {
    /// The resource of a call whose tool maps none (`Tool::"<tool name>"` when absent).
    pub resource: Option<McpResource>,
    /// `[mcp.tools.<name>]`, by the tool's name as the MCP server lists it.
    #[serde(default)]
    pub tools: BTreeMap<Spanned<String>, McpTool>,
    /// How a refused call is answered: a `CallToolResult` with `isError` (the default: the
    /// model reads why and can adapt) or a JSON-RPC error.
    #[serde(default)]
    pub denials: McpDenials,
    /// `[mcp.resources]`: a `resources/read` as a decision request.
    pub resources: Option<McpMethod>,
    /// `[mcp.prompts]`: a `prompts/get` as a decision request.
    pub prompts: Option<McpMethod>,
    /// What a call of a tool that changed since it was pinned does (`refuse` when absent).
    #[serde(default)]
    pub on_tool_change: OnToolChange,
    /// `[mcp.pins.<upstream>.<tool>]`: each upstream's tools as `arbiter mcp-proxy pin`
    /// recorded them, by the upstream's name (`--upstream-name`) and the tool's.
    #[serde(default)]
    pub pins: BTreeMap<Spanned<String>, BTreeMap<Spanned<String>, McpPin>>,
    /// What joins an upstream's name and a tool's or a prompt's name on the endpoint that
    /// serves several upstreams at once (`github__create_issue`; `__` when absent).
    pub namespace_separator: Option<Spanned<String>>,
}

/// How the MCP gateway answers a call it refuses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum McpDenials {
    /// A result with `isError: true` whose text names the rule and its reason.
    #[default]
    Result,
    /// A JSON-RPC error: `-32001` denied, `-32003` throttled, the decision in `data`.
    Error,
}

/// `[mcp] namespace_separator` when absent.
pub const DEFAULT_NAMESPACE_SEPARATOR: &str = "__";

/// The action a `resources/read` is when `[mcp.resources]` names none.
pub const DEFAULT_MCP_RESOURCES_ACTION: &str = "resources/read";
/// The type of the resource a `resources/read` reads: `McpResource::"<uri>"`.
pub const DEFAULT_MCP_RESOURCES_TYPE: &str = "McpResource";
/// The action a `prompts/get` is when `[mcp.prompts]` names none.
pub const DEFAULT_MCP_PROMPTS_ACTION: &str = "prompts/get";
/// The type of the resource a `prompts/get` gets: `Prompt::"<name>"`.
pub const DEFAULT_MCP_PROMPTS_TYPE: &str = "Prompt";

/// `[mcp.resources]` or `[mcp.prompts]`: a method's request as a decision request. The
/// resource's id is the resource's URI or the prompt's name.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpMethod {
    /// The action's id.
    pub action: Option<Spanned<String>>,
    /// The resource's entity type.
    #[serde(rename = "type")]
    pub ty: Option<Spanned<String>>,
}

impl Mcp {
    /// The mapping of the tool with this name, if the pack has one.
    pub fn tool(&self, name: &str) -> Option<&McpTool> {
        self.tools
            .iter()
            .find(|(k, _)| k.get_ref() == name)
            .map(|(_, t)| t)
    }

    /// What joins an upstream's name and a tool's name on the aggregate endpoint.
    pub fn separator(&self) -> &str {
        self.namespace_separator
            .as_ref()
            .map_or(DEFAULT_NAMESPACE_SEPARATOR, |s| s.get_ref().as_str())
    }

    /// The pins of the upstream with this name, if it has any: its tools by name.
    pub fn pins_of(&self, upstream: &str) -> Option<&BTreeMap<Spanned<String>, McpPin>> {
        self.pins
            .iter()
            .find(|(k, _)| k.get_ref() == upstream)
            .map(|(_, p)| p)
    }
}

/// `[mcp] on_tool_change`: what a call of a tool that changed since it was pinned does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnToolChange {
    /// The call is refused before any rule sees it, and recorded as `mcp_tool_changed`.
    #[default]
    Refuse,
    /// The call is decided by the rules, with `context.tool_changed = true`, so a rule can
    /// audit changed tools first and enforce later.
    Decide,
}

impl OnToolChange {
    /// As written in `arbiter.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            OnToolChange::Refuse => "refuse",
            OnToolChange::Decide => "decide",
        }
    }
}

/// The prefix of a pinned hash: `sha256:` and 64 lowercase hex digits.
pub const PIN_HASH_PREFIX: &str = "sha256:";

/// `[mcp.pins.<upstream>.<tool>]`: one tool as the upstream listed it when it was pinned.
/// The texts are kept as they were, so a reviewer reads them; the JSON values are kept as
/// the SHA-256 of their canonical form (`sha256:<hex>`, docs/mcp.md "Pinning tools"). An
/// absent key pins the tool's having none.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpPin {
    /// The tool's `description`.
    pub description: Option<Spanned<String>>,
    /// The tool's `title`.
    pub title: Option<Spanned<String>>,
    /// The hash of its `inputSchema`.
    pub input_schema: Spanned<String>,
    /// The hash of its `outputSchema`.
    pub output_schema: Option<Spanned<String>>,
    /// The hash of its `annotations` (`readOnlyHint`, `destructiveHint`, …).
    pub annotations: Option<Spanned<String>>,
}

/// Whether `text` is a pinned hash: `sha256:` and 64 lowercase hex digits.
pub fn is_pin_hash(text: &str) -> bool {
    text.strip_prefix(PIN_HASH_PREFIX).is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// `[mcp.tools.<name>]`: one tool's call as a decision request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpTool {
    /// The action's id (the tool's name when absent).
    pub action: Option<Spanned<String>>,
    /// The resource (`[mcp] resource` when absent).
    pub resource: Option<McpResource>,
    /// Arguments copied into the context: argument path → context path, e.g.
    /// `path = "context.args.path"`.
    #[serde(default)]
    pub args: BTreeMap<Spanned<String>, Spanned<String>>,
    /// With a remote decision point (`--pdp`), how long this tool's decision may take, in
    /// milliseconds: it can only shorten `--pdp-timeout`, never lengthen it, and a call
    /// whose decision does not come in time is refused.
    pub pdp_timeout_ms: Option<Spanned<u64>>,
}

/// A tool call's resource: `<type>::"<id>"`, the id taken from an argument (`arg`), fixed
/// (`id`), or the tool's name (neither).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpResource {
    /// The entity type.
    #[serde(rename = "type")]
    pub ty: Spanned<String>,
    /// The path of the argument whose value is the id (`url`, `target.path`).
    pub arg: Option<Spanned<String>>,
    /// A fixed id.
    pub id: Option<Spanned<String>>,
}

/// The keys of `arbiter.toml`, table by table: what [`strip_unknown_keys`] checks before
/// the typed parse. serde's `deny_unknown_fields` stops at the first unknown key; this
/// walk finds every one, with its line. A test checks it against the structs above (their
/// `deny_unknown_fields` lists), so the two cannot drift apart.
pub(crate) const KEYS: &[(&str, Keys)] = &[
    (
        "defaults",
        Keys::Table(&[
            ("mode", Keys::Any),
            ("on_error", Keys::Any),
            ("allow_no_policies", Keys::Any),
        ]),
    ),
    (
        "default_deny",
        Keys::Table(&[("mode", Keys::Any), ("principal_types", Keys::Any)]),
    ),
    (
        "credentials",
        Keys::Table(&[
            ("required_for", Keys::Any),
            ("max_ttl", Keys::Any),
            ("issuer", Keys::Any),
            ("audience", Keys::Any),
            ("leeway", Keys::Any),
        ]),
    ),
    (
        "issuers",
        Keys::List(&Keys::Table(&[
            ("name", Keys::Any),
            ("preset", Keys::Any),
            ("issuer", Keys::Any),
            ("audience", Keys::Any),
            ("jwks_file", Keys::Any),
            ("jwks_url", Keys::Any),
            ("jwks_refresh", Keys::Any),
            ("algorithms", Keys::Any),
            ("principal", Keys::Any),
            ("attributes", Keys::Any),
            ("require", Keys::Any),
            ("intents", Keys::Any),
        ])),
    ),
    (
        "intents",
        Keys::Named(&Keys::Table(&[
            ("actions", Keys::Any),
            ("max_ttl", Keys::Any),
        ])),
    ),
    ("chains", Keys::Named(&Keys::Table(&[("steps", Keys::Any)]))),
    (
        "readiness",
        Keys::Table(&[
            ("min_days", Keys::Any),
            ("cycle", Keys::Any),
            ("max_audit_days", Keys::Any),
        ]),
    ),
    ("log", Keys::Table(&[("mask", Keys::Any)])),
    ("server", Keys::Table(&[("pep_tokens", Keys::Any)])),
    ("requests", Keys::Table(&[("entity_types", Keys::Any)])),
    (
        "frameworks",
        Keys::Named(&Keys::Table(&[("controls", Keys::Any)])),
    ),
    (
        "mcp",
        Keys::Table(&[
            ("resource", MCP_RESOURCE_KEYS),
            (
                "tools",
                Keys::Named(&Keys::Table(&[
                    ("action", Keys::Any),
                    ("resource", MCP_RESOURCE_KEYS),
                    ("args", Keys::Any),
                    ("pdp_timeout_ms", Keys::Any),
                ])),
            ),
            ("denials", Keys::Any),
            ("resources", MCP_METHOD_KEYS),
            ("prompts", MCP_METHOD_KEYS),
            ("on_tool_change", Keys::Any),
            ("namespace_separator", Keys::Any),
            (
                "pins",
                Keys::Named(&Keys::Named(&Keys::Table(&[
                    ("description", Keys::Any),
                    ("title", Keys::Any),
                    ("input_schema", Keys::Any),
                    ("output_schema", Keys::Any),
                    ("annotations", Keys::Any),
                ]))),
            ),
        ]),
    ),
];

/// The keys of an [`McpResource`], wherever one is written.
const MCP_RESOURCE_KEYS: Keys =
    Keys::Table(&[("type", Keys::Any), ("arg", Keys::Any), ("id", Keys::Any)]);

/// The keys of an [`McpMethod`].
const MCP_METHOD_KEYS: Keys = Keys::Table(&[("action", Keys::Any), ("type", Keys::Any)]);

/// What keys a value of `arbiter.toml` may have.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Keys {
    /// Not a table of fixed keys: a value, a list of values, or a map whose keys are the
    /// pack's own names (principal types, attributes, control ids).
    Any,
    /// A table with these keys and no others.
    Table(&'static [(&'static str, Keys)]),
    /// A table of names the pack chooses (`[intents.<name>]`), each holding this.
    Named(&'static Keys),
    /// An array of tables (`[[issuers]]`), each holding this.
    List(&'static Keys),
}

/// A key [`KEYS`] does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnknownKey {
    /// What it says, in serde's words: `unknown field `mood` in [defaults], expected …`.
    pub message: String,
    /// Where the key is in the text.
    pub span: std::ops::Range<usize>,
}

/// Removes every key [`KEYS`] does not know from the parsed `arbiter.toml`, at any depth,
/// and returns them in text order; what is left is for the typed parse, which then
/// reports what else is wrong. A value of the wrong type is left alone: the typed parse
/// says so.
pub(crate) fn strip_unknown_keys(document: &mut toml::de::DeTable<'_>) -> Vec<UnknownKey> {
    let mut found = Vec::new();
    strip_table(document, KEYS, "", &mut found);
    found.sort_by_key(|k| k.span.start);
    found
}

fn strip(value: &mut toml::de::DeValue<'_>, keys: Keys, place: &str, found: &mut Vec<UnknownKey>) {
    use toml::de::DeValue;
    match (keys, value) {
        (Keys::Table(known), DeValue::Table(table)) => strip_table(table, known, place, found),
        (Keys::Named(each), DeValue::Table(table)) => {
            for (name, inner) in table.iter_mut() {
                let place = format!("{}.{}]", place.trim_end_matches(']'), name.get_ref());
                strip(inner.get_mut(), *each, &place, found);
            }
        }
        (Keys::List(each), DeValue::Array(array)) => {
            for inner in array.iter_mut() {
                strip(inner.get_mut(), *each, place, found);
            }
        }
        _ => {}
    }
}

fn strip_table(
    table: &mut toml::de::DeTable<'_>,
    known: &[(&str, Keys)],
    place: &str,
    found: &mut Vec<UnknownKey>,
) {
    let unknown: Vec<(String, std::ops::Range<usize>)> = table
        .keys()
        .filter(|k| !known.iter().any(|(name, _)| *name == k.get_ref().as_ref()))
        .map(|k| (k.get_ref().to_string(), k.span()))
        .collect();
    for (key, span) in unknown {
        table.remove(key.as_str());
        let names: Vec<String> = known.iter().map(|(n, _)| format!("`{n}`")).collect();
        // In serde's words, as the typed parse would have said it.
        let expected = match names.as_slice() {
            [one] => one.clone(),
            [a, b] => format!("{a} or {b}"),
            _ => format!("one of {}", names.join(", ")),
        };
        let within = if place.is_empty() {
            String::new()
        } else {
            format!(" in {place}")
        };
        found.push(UnknownKey {
            message: format!("unknown field `{key}`{within}, expected {expected}"),
            span,
        });
    }
    for (key, inner) in table.iter_mut() {
        if let Some((name, keys)) = known.iter().find(|(n, _)| *n == key.get_ref().as_ref()) {
            let place = match (place, keys) {
                (_, Keys::List(_)) => format!("[[{name}]]"),
                ("", _) => format!("[{name}]"),
                (outer, _) => format!("{}.{name}]", outer.trim_end_matches(']')),
            };
            strip(inner.get_mut(), *keys, &place, found);
        }
    }
}

/// A parsed `[[issuers]] principal`: `Type::"id"` where the id may hold `{claim}`
/// placeholders. Rendering never parses a claim's value as Cedar, so a claim cannot
/// inject another type or escape its quotes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalTemplate {
    type_name: cedar_policy::EntityTypeName,
    parts: Vec<TemplatePart>,
}

/// A claim a principal template reads is missing from the token, or empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the token has no claim `{0}`")]
pub struct MissingClaim(pub String);

/// Why a `[[issuers]] principal` is not a template.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// Not `Type::"…"`.
    #[error("`{0}` is not `Type::\"…\"` (e.g. `CiJob::\"{{repository}}\"`)")]
    Shape(String),
    /// The part before `::` is not a type name.
    #[error("`{ty}` is not an entity type name: {cause}")]
    TypeName {
        /// The type as written.
        ty: String,
        /// What Cedar says.
        cause: Box<cedar_policy::ParseErrors>,
    },
    /// The id does not end with a quote.
    #[error("`{0}`: the id must end with `\"`")]
    Unterminated(String),
    /// A character no claim name has.
    #[error("`{text}`: `{found}` cannot be part of a claim name")]
    ClaimName {
        /// The template as written.
        text: String,
        /// The character.
        found: char,
    },
    /// A `{` without its `}`.
    #[error("`{0}`: `{{` is never closed")]
    Unclosed(String),
    /// `{}`.
    #[error("`{0}`: `{{}}` names no claim")]
    EmptyClaim(String),
    /// A character the id cannot hold outside a placeholder.
    #[error("`{text}`: `{found}` cannot appear in the id")]
    IdCharacter {
        /// The template as written.
        text: String,
        /// The character.
        found: char,
    },
    /// Every token would map to the same principal.
    #[error("`{0}` uses no claim, so every token would map to the same principal")]
    NoClaim(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TemplatePart {
    Text(String),
    Claim(String),
}

impl PrincipalTemplate {
    /// Parses `Type::"literal{claim}literal"`.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let (ty, rest) = text
            .split_once("::\"")
            .ok_or_else(|| TemplateError::Shape(text.to_owned()))?;
        let type_name = ty
            .parse::<cedar_policy::EntityTypeName>()
            .map_err(|cause| TemplateError::TypeName {
                ty: ty.to_owned(),
                cause: Box::new(cause),
            })?;
        let id = rest
            .strip_suffix('"')
            .ok_or_else(|| TemplateError::Unterminated(text.to_owned()))?;
        let mut parts = Vec::new();
        let mut chars = id.chars().peekable();
        let mut literal = String::new();
        while let Some(c) = chars.next() {
            match c {
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(n) if n.is_ascii_alphanumeric() || n == '_' || n == '.' => {
                                name.push(n);
                            }
                            Some(found) => {
                                return Err(TemplateError::ClaimName {
                                    text: text.to_owned(),
                                    found,
                                });
                            }
                            None => return Err(TemplateError::Unclosed(text.to_owned())),
                        }
                    }
                    if name.is_empty() {
                        return Err(TemplateError::EmptyClaim(text.to_owned()));
                    }
                    if !literal.is_empty() {
                        parts.push(TemplatePart::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(TemplatePart::Claim(name));
                }
                '}' | '"' | '\\' => {
                    return Err(TemplateError::IdCharacter {
                        text: text.to_owned(),
                        found: c,
                    });
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(TemplatePart::Text(literal));
        }
        if !parts.iter().any(|p| matches!(p, TemplatePart::Claim(_))) {
            return Err(TemplateError::NoClaim(text.to_owned()));
        }
        Ok(Self { type_name, parts })
    }

    /// The entity type every principal of this template has.
    pub fn type_name(&self) -> &cedar_policy::EntityTypeName {
        &self.type_name
    }

    /// The claims the template reads.
    pub fn claims(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            TemplatePart::Claim(c) => Some(c.as_str()),
            TemplatePart::Text(_) => None,
        })
    }

    /// The principal for these claims; `Err` names a claim that is missing or empty.
    pub fn render<'c>(
        &self,
        claim: impl Fn(&str) -> Option<&'c str>,
    ) -> Result<cedar_policy::EntityUid, MissingClaim> {
        let mut id = String::new();
        for part in &self.parts {
            match part {
                TemplatePart::Text(t) => id.push_str(t),
                TemplatePart::Claim(name) => match claim(name) {
                    Some(v) if !v.is_empty() => id.push_str(v),
                    _ => return Err(MissingClaim(name.clone())),
                },
            }
        }
        Ok(cedar_policy::EntityUid::from_type_name_and_id(
            self.type_name.clone(),
            cedar_policy::EntityId::new(id),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::{Config, KEYS, Keys, PrincipalTemplate};

    /// A step on the way to a table of [`KEYS`].
    #[derive(Debug, Clone, Copy)]
    enum Step {
        Key(&'static str),
        /// Into a name the pack chooses (`[intents.<name>]`).
        Name,
        /// Into an element of an array of tables (`[[issuers]]`).
        Element,
    }

    /// Every table of [`KEYS`]: the steps to it, and its keys.
    fn tables(keys: Keys, path: &[Step], out: &mut Vec<(Vec<Step>, Vec<&'static str>)>) {
        let deeper = |step| [path, &[step]].concat();
        match keys {
            Keys::Any => {}
            Keys::Table(known) => {
                out.push((path.to_vec(), known.iter().map(|(n, _)| *n).collect()));
                for (name, inner) in known {
                    tables(*inner, &deeper(Step::Key(name)), out);
                }
            }
            Keys::Named(each) => tables(*each, &deeper(Step::Name), out),
            Keys::List(each) => tables(*each, &deeper(Step::Element), out),
        }
    }

    /// `KEYS` lists exactly the fields each struct accepts: a key no table knows, put in
    /// each of them, makes the typed parse (`deny_unknown_fields`) name the fields it
    /// expected, which must be `KEYS`'s. Adding a field to a struct without adding it to
    /// `KEYS`, or the reverse, fails here.
    #[test]
    fn known_keys_agree_with_the_config_structs() {
        let mut found = Vec::new();
        tables(Keys::Table(KEYS), &[], &mut found);
        assert_eq!(found.len(), 19, "{found:?}");
        for (path, mut known) in found {
            let mut value = toml::Value::Table(toml::Table::from_iter([(
                "zz_not_a_key".to_owned(),
                toml::Value::Integer(1),
            )]));
            for step in path.iter().rev() {
                value = match step {
                    Step::Key(name) => {
                        toml::Value::Table(toml::Table::from_iter([((*name).to_owned(), value)]))
                    }
                    Step::Name => {
                        toml::Value::Table(toml::Table::from_iter([("x".to_owned(), value)]))
                    }
                    Step::Element => toml::Value::Array(vec![value]),
                };
            }
            let text = toml::to_string(&value).expect("serializes");
            let error = toml::from_str::<Config>(&text)
                .expect_err(&text)
                .to_string();
            let expected = error
                .split("unknown field `zz_not_a_key`, expected ")
                .nth(1)
                .unwrap_or_else(|| panic!("{path:?}: {error}"));
            let mut named: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
            named.sort_unstable();
            known.sort_unstable();
            assert_eq!(named, known, "{path:?} in\n{text}\n{error}");
        }
    }

    #[test]
    fn template_renders_claims_without_parsing_them() {
        let t = PrincipalTemplate::parse(r#"CiJob::"gh:{repository}@{ref}""#).unwrap();
        let uid = t
            .render(|c| match c {
                "repository" => Some(r#"acme/x"::evil"#),
                "ref" => Some("refs/heads/main"),
                _ => None,
            })
            .unwrap();
        assert_eq!(uid.type_name().to_string(), "CiJob");
        assert_eq!(uid.id().unescaped(), r#"gh:acme/x"::evil@refs/heads/main"#);
        assert_eq!(
            t.render(|_| None).unwrap_err().to_string(),
            "the token has no claim `repository`"
        );
    }

    #[test]
    fn template_errors() {
        for bad in [
            "CiJob",
            r#"CiJob::"fixed""#,
            r#"CiJob::"{repo""#,
            r#"CiJob::"{}""#,
            r#"CiJob::"{a b}""#,
            r#"Ci Job::"{a}""#,
            r#"CiJob::"{a}"#,
        ] {
            assert!(PrincipalTemplate::parse(bad).is_err(), "{bad}");
        }
        for (text, said) in [
            (
                "CiJob",
                r#"`CiJob` is not `Type::"…"` (e.g. `CiJob::"{repository}"`)"#,
            ),
            (
                r#"CiJob::"{repo""#,
                r#"`CiJob::"{repo"`: `{` is never closed"#,
            ),
            (
                r#"CiJob::"{repo"#,
                r#"`CiJob::"{repo`: the id must end with `"`"#,
            ),
            (
                r#"CiJob::"{a b}""#,
                r#"`CiJob::"{a b}"`: ` ` cannot be part of a claim name"#,
            ),
            (r#"CiJob::"{}""#, r#"`CiJob::"{}"`: `{}` names no claim"#),
            (
                r#"CiJob::"a}{b}""#,
                r#"`CiJob::"a}{b}"`: `}` cannot appear in the id"#,
            ),
            (
                r#"CiJob::"fixed""#,
                r#"`CiJob::"fixed"` uses no claim, so every token would map to the same principal"#,
            ),
        ] {
            let error = PrincipalTemplate::parse(text).expect_err(text);
            assert_eq!(error.to_string(), said, "{text}");
        }
    }
}

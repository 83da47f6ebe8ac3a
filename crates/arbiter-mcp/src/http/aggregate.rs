//! Several MCP servers behind one URL: with more than one upstream, `/mcp` serves them
//! all, so that an agent configured with one endpoint sees every tool.
//!
//! Each tool and prompt is listed as `<upstream><separator><name>` (`github__create_issue`;
//! `[mcp] namespace_separator`, `__` by default). A call is split on the first separator,
//! and goes to that upstream with the upstream's own name, through the same [`Call`] as a
//! request to `/mcp/<upstream>`: decided on the upstream's tool name with `upstream` set,
//! pins compared, tool lists filtered, denials answered, a `revoke` ending the session. A
//! name whose prefix names no upstream is refused here and forwarded nowhere.
//!
//! Resources keep their URIs: a `resources/read` goes to the upstream that listed the URI
//! (`resources/list`) to this session or, in the stateless revision, to this identity; a
//! URI no upstream listed, or that two listed, is refused.
//!
//! Sessions (2025-06-18, 2025-11-25): the client's `initialize` opens a session with every
//! upstream at once, or with none: a security tool must not quietly serve fewer servers
//! than configured. The proxy answers with its own session id, bound to the caller's
//! identity, and keeps each upstream's; all of them decide in one arbiter session, so a
//! rule sees a session's history across servers. In the stateless revision (2026-07-28)
//! each request stands alone, in the identity's own arbiter session.
//!
//! Requests a server sends the client, on a response's event stream or on the merged
//! server→client stream, get their id tagged with the upstream (`<upstream><sep><id>`), so
//! that the client's answer goes back to the server that asked, with its own id.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Mutex, PoisonError};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use futures_util::StreamExt as _;
use serde_json::{Map, Value, json};

use super::routing::{self, Revision};
use super::sessions::{Lookup, Owner};
use super::{
    Call, FORWARDED, SESSION_ID, Shared, Who, answer, json_response, mismatch, read_bounded,
    read_message, rpc_error, sse, trim_newline,
};
use crate::gateway::Gateway;
use crate::jsonrpc::{self, Id, Message, code};
use crate::pins;

/// How many resource URIs (and templates) one session or identity remembers, to route
/// its reads; past it, a URI listed later is not routable.
const MAX_ROUTES: usize = 10_000;

/// How many URIs and templates all sessions and identities remember together: a bound on
/// memory however many sessions a caller opens and lists in.
const MAX_TOTAL_ROUTES: usize = 200_000;

/// The capabilities the aggregate endpoint routes, and so merges; any other is left out.
const ROUTED_CAPABILITIES: [&str; 5] = ["tools", "prompts", "resources", "logging", "completions"];

/// The separator of the gateway's pack (`[mcp] namespace_separator`).
pub fn separator(gateway: &Gateway) -> String {
    gateway
        .decider()
        .snapshot()
        .pack
        .config()
        .mcp
        .as_ref()
        .map_or(arbiter_core::config::DEFAULT_NAMESPACE_SEPARATOR, |m| {
            m.separator()
        })
        .to_owned()
}

/// Why a namespaced name routes to no upstream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unrouted {
    /// The name has no separator.
    #[error(
        "`{name}` names no server: the tools and prompts of this endpoint are named <server>{separator}<name>"
    )]
    NoPrefix {
        /// The name as sent.
        name: String,
        /// The separator.
        separator: String,
    },
    /// The prefix is not an upstream's name.
    #[error("`{name}`: `{prefix}` is not a server behind this endpoint")]
    UnknownPrefix {
        /// The name as sent.
        name: String,
        /// What precedes the separator.
        prefix: String,
    },
    /// Nothing follows the separator.
    #[error("`{name}` names a server but no tool or prompt")]
    EmptyName {
        /// The name as sent.
        name: String,
    },
}

/// Splits `name` on the first `separator` into an upstream of `upstreams` and the name
/// that upstream knows. Upstream names never hold the separator (checked at start), so
/// the first one ends the prefix; the rest may hold it.
pub fn split<'a>(
    name: &'a str,
    separator: &str,
    upstreams: &[&str],
) -> Result<(&'a str, &'a str), Unrouted> {
    let Some((prefix, rest)) = name.split_once(separator) else {
        return Err(Unrouted::NoPrefix {
            name: name.to_owned(),
            separator: separator.to_owned(),
        });
    };
    if !upstreams.contains(&prefix) {
        return Err(Unrouted::UnknownPrefix {
            name: name.to_owned(),
            prefix: prefix.to_owned(),
        });
    }
    if rest.is_empty() {
        return Err(Unrouted::EmptyName {
            name: name.to_owned(),
        });
    }
    Ok((prefix, rest))
}

/// The capabilities of the aggregate endpoint: the union of the upstreams' (a key one
/// upstream has is there; a flag such as `listChanged` or `subscribe` is true when one
/// upstream's is), of the capabilities this endpoint routes only.
pub fn merge_capabilities<'a>(each: impl IntoIterator<Item = &'a Value>) -> Value {
    let mut merged = Map::new();
    for capabilities in each {
        let Some(capabilities) = capabilities.as_object() else {
            continue;
        };
        for key in ROUTED_CAPABILITIES {
            let Some(given) = capabilities.get(key) else {
                continue;
            };
            let entry = merged
                .entry(key.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            if let (Some(entry), Some(given)) = (entry.as_object_mut(), given.as_object()) {
                for (flag, value) in given {
                    if value.is_boolean() {
                        let on = value == &Value::Bool(true)
                            || entry.get(flag) == Some(&Value::Bool(true));
                        entry.insert(flag.clone(), Value::Bool(on));
                    }
                }
            }
        }
    }
    Value::Object(merged)
}

/// The id a server's request gets on its way to the client: the upstream's name, the
/// separator, and the id as JSON (`a__7`, `a__"s1"`).
pub fn tag_id(upstream: &str, separator: &str, id: &Value) -> Value {
    Value::String(format!("{upstream}{separator}{id}"))
}

/// The upstream and the id of a tagged id; `None` for an id the proxy never tagged.
pub fn untag_id<'a>(
    id: &'a Value,
    separator: &str,
    upstreams: &[&str],
) -> Option<(&'a str, Value)> {
    let (upstream, rest) = id.as_str()?.split_once(separator)?;
    if !upstreams.contains(&upstream) {
        return None;
    }
    let id: Value = serde_json::from_str(rest).ok()?;
    (id.is_string() || id.is_i64() || id.is_u64()).then_some((upstream, id))
}

/// One upstream in an aggregate session: its own session id (`None` when it gave none)
/// and what it said it can do.
#[derive(Debug, Clone)]
struct Joined {
    session: Option<String>,
    capabilities: Value,
}

/// Where the resources of a session or an identity were listed. A URI two upstreams
/// listed maps to `None`: it is refused, not guessed.
#[derive(Debug, Default)]
struct Routes {
    uris: HashMap<String, Option<String>>,
    templates: HashMap<String, Option<String>>,
}

impl Routes {
    /// The upstream whose listed template `uri` fits: its text before the first variable
    /// and after the last one. A URI that fits the templates of two upstreams is not
    /// routed.
    fn by_template(&self, uri: &str) -> Result<Option<String>, &'static str> {
        let mut found: Option<&str> = None;
        for (template, upstream) in &self.templates {
            let (Some(start), Some(end)) = (template.find('{'), template.rfind('}')) else {
                continue;
            };
            let prefix = template.get(..start).unwrap_or_default();
            let suffix = template.get(end + 1..).unwrap_or_default();
            let fits = !prefix.is_empty()
                && uri.len() > prefix.len() + suffix.len()
                && uri.starts_with(prefix)
                && uri.ends_with(suffix);
            if !fits {
                continue;
            }
            match (upstream.as_deref(), found) {
                (None, _) => return Err("it fits a template more than one server listed"),
                (Some(this), Some(other)) if this != other => {
                    return Err("it fits templates of more than one server");
                }
                (Some(this), _) => found = Some(this),
            }
        }
        Ok(found.map(str::to_owned))
    }

    fn len(&self) -> usize {
        self.uris.len() + self.templates.len()
    }

    fn record(
        map: &mut HashMap<String, Option<String>>,
        total: &mut usize,
        key: &str,
        upstream: &str,
    ) {
        let full = map.len() >= MAX_ROUTES || *total >= MAX_TOTAL_ROUTES;
        match map.get_mut(key) {
            Some(known) => {
                if known.as_deref() != Some(upstream) {
                    *known = None;
                }
            }
            None if !full => {
                map.insert(key.to_owned(), Some(upstream.to_owned()));
                *total += 1;
            }
            None => {
                tracing::warn!("too many resources listed; later ones are not routed");
            }
        }
    }
}

/// One aggregate session.
#[derive(Debug)]
struct Session {
    owner: Owner,
    upstreams: BTreeMap<String, Joined>,
    routes: Routes,
    ended: bool,
}

#[derive(Debug, Default)]
struct Table {
    sessions: HashMap<String, Session>,
    /// Session ids in the order they were opened, for eviction; may hold removed ones.
    order: VecDeque<String>,
    /// The stateless revision's routes, by the identity's arbiter session.
    identities: HashMap<String, Routes>,
    identity_order: VecDeque<String>,
    /// How many URIs and templates are remembered, all routes together.
    routes: usize,
}

impl Table {
    /// Forgets a session, and the routes it held.
    fn remove(&mut self, id: &str) -> Option<Session> {
        let removed = self.sessions.remove(id)?;
        self.routes = self.routes.saturating_sub(removed.routes.len());
        Some(removed)
    }
}

/// The aggregate endpoint's state: its separator, its sessions, its routes.
#[derive(Debug)]
pub struct Aggregate {
    separator: String,
    max: usize,
    table: Mutex<Table>,
}

impl Aggregate {
    /// An endpoint joining names with `separator`, remembering at most `max` sessions
    /// (and as many identities' routes).
    pub fn new(separator: String, max: usize) -> Aggregate {
        Aggregate {
            separator,
            max: max.max(1),
            table: Mutex::new(Table::default()),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn open(&self, id: String, session: Session) {
        let mut table = self.table();
        while table.sessions.len() >= self.max {
            let Some(oldest) = table.order.pop_front() else {
                break;
            };
            if table.remove(&oldest).is_some() {
                tracing::info!("the aggregate session table is full; forgot the oldest session");
            }
        }
        if table.order.len() > self.max.saturating_mul(2) {
            let Table {
                sessions, order, ..
            } = &mut *table;
            order.retain(|k| sessions.contains_key(k));
        }
        table.order.push_back(id.clone());
        table.sessions.insert(id, session);
    }

    /// Records where `items` (resources or templates, by `field`) were listed.
    fn record(&self, scope: &Scope, upstream: &str, field: &str, items: &[Value]) {
        let mut table = self.table();
        let Table {
            sessions,
            identities,
            identity_order,
            routes: total,
            ..
        } = &mut *table;
        let routes = match scope {
            Scope::Session(id) => match sessions.get_mut(id) {
                Some(session) => &mut session.routes,
                None => return,
            },
            Scope::Identity(key) => {
                if !identities.contains_key(key) {
                    while identities.len() >= self.max {
                        let Some(oldest) = identity_order.pop_front() else {
                            break;
                        };
                        if let Some(gone) = identities.remove(&oldest) {
                            *total = total.saturating_sub(gone.len());
                        }
                    }
                    identity_order.push_back(key.clone());
                }
                identities.entry(key.clone()).or_default()
            }
        };
        let map = if field == "uri" {
            &mut routes.uris
        } else {
            &mut routes.templates
        };
        for key in items
            .iter()
            .filter_map(|i| i.get(field))
            .filter_map(Value::as_str)
        {
            Routes::record(map, total, key, upstream);
        }
    }

    /// The upstream that listed `key` (a URI, or a template when `template`).
    fn routed(&self, scope: &Scope, key: &str, template: bool) -> Result<String, &'static str> {
        let table = self.table();
        let routes = match scope {
            Scope::Session(id) => table.sessions.get(id).map(|s| &s.routes),
            Scope::Identity(key) => table.identities.get(key),
        };
        let map = routes.map(|r| if template { &r.templates } else { &r.uris });
        match map.and_then(|m| m.get(key)) {
            Some(Some(upstream)) => Ok(upstream.clone()),
            Some(None) => Err("more than one server listed it, so it is not routed"),
            None => match routes.filter(|_| !template).map(|r| r.by_template(key)) {
                Some(Ok(Some(upstream))) => Ok(upstream),
                Some(Err(why)) => Err(why),
                _ => Err(
                    "no server listed it, or a template it fits, here: list them first \
                     (resources/list, resources/templates/list), or use /mcp/<server>",
                ),
            },
        }
    }
}

/// Whose routes a request uses.
#[derive(Debug, Clone)]
enum Scope {
    /// An aggregate session, by the id the proxy gave.
    Session(String),
    /// The stateless revision: the identity's own arbiter session.
    Identity(String),
}

/// What a request has to work with: its scope and the upstreams it reaches.
#[derive(Debug)]
struct Context {
    scope: Scope,
    revision: Revision,
    upstreams: BTreeMap<String, Joined>,
}

impl Context {
    fn session_id(&self) -> Option<&str> {
        match &self.scope {
            Scope::Session(id) => Some(id),
            Scope::Identity(_) => None,
        }
    }

    /// Whether `upstream` said it can do `capability`; in the stateless revision it is
    /// asked regardless.
    fn offers(&self, upstream: &Joined, capability: &str) -> bool {
        self.revision == Revision::Stateless || upstream.capabilities.get(capability).is_some()
    }
}

/// A request to `/mcp` of several upstreams, authenticated.
pub(super) async fn handle(
    shared: &Shared,
    method: Method,
    headers: &HeaderMap,
    who: Who,
    body: Body,
) -> Response {
    let endpoint = Endpoint {
        shared,
        headers,
        who,
        separator: &shared.aggregate.separator,
    };
    match method {
        Method::POST => endpoint.post(body).await,
        Method::GET => endpoint.get().await,
        Method::DELETE => endpoint.delete().await,
        _ => {
            let mut response = rpc_error(
                StatusCode::METHOD_NOT_ALLOWED,
                None,
                code::INVALID_REQUEST,
                "an MCP endpoint takes POST, GET and DELETE",
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST, GET, DELETE"));
            response
        }
    }
}

/// One request to the aggregate endpoint.
struct Endpoint<'a> {
    shared: &'a Shared,
    headers: &'a HeaderMap,
    who: Who,
    separator: &'a str,
}

impl Endpoint<'_> {
    fn names(&self) -> Vec<&str> {
        self.shared
            .options
            .upstreams
            .iter()
            .map(|u| u.name.as_str())
            .collect()
    }

    /// The session id the client sends, at most one.
    fn session_header(&self) -> Result<Option<&str>, Box<Response>> {
        super::session_header(self.headers)
    }

    /// The request's context: its aggregate session (refused when it is another
    /// identity's, unknown or ended), or, stateless, the identity's own.
    fn context(&self, revision: Revision, id: Option<&Id>) -> Result<Context, Box<Response>> {
        if revision == Revision::Stateless {
            let upstreams = self
                .names()
                .into_iter()
                .map(|n| {
                    let joined = Joined {
                        session: None,
                        capabilities: Value::Null,
                    };
                    (n.to_owned(), joined)
                })
                .collect();
            return Ok(Context {
                scope: Scope::Identity(self.who.owner.session()),
                revision,
                upstreams,
            });
        }
        let Some(session) = self.session_header()? else {
            return Err(Box::new(rpc_error(
                StatusCode::BAD_REQUEST,
                id,
                code::INVALID_REQUEST,
                "send the Mcp-Session-Id this endpoint gave at initialize",
            )));
        };
        let table = self.shared.aggregate.table();
        match table.sessions.get(session) {
            None => Err(Box::new(rpc_error(
                StatusCode::NOT_FOUND,
                id,
                code::INVALID_REQUEST,
                "no such MCP session here: initialize a new one",
            ))),
            Some(found) if found.owner != self.who.owner => Err(Box::new(rpc_error(
                StatusCode::FORBIDDEN,
                id,
                code::INVALID_REQUEST,
                "this MCP session was opened by another identity",
            ))),
            Some(found) if found.ended => Err(Box::new(rpc_error(
                StatusCode::NOT_FOUND,
                id,
                code::INVALID_REQUEST,
                "this MCP session was ended: the credential was revoked",
            ))),
            Some(found) => Ok(Context {
                scope: Scope::Session(session.to_owned()),
                revision,
                upstreams: found.upstreams.clone(),
            }),
        }
    }

    /// The headers a request to an upstream carries: the client's (only MCP's own are
    /// forwarded, as on `/mcp/<upstream>`), with the upstream's session id in place of
    /// the proxy's, and no `Last-Event-Id` (the proxy's event ids are not the server's).
    fn upstream_headers(&self, session: Option<&str>) -> HeaderMap {
        let mut headers = self.headers.clone();
        headers.remove(SESSION_ID);
        headers.remove("last-event-id");
        if let Some(value) = session.and_then(|s| HeaderValue::from_str(s).ok()) {
            headers.insert(SESSION_ID, value);
        }
        headers
    }

    /// A [`Call`] to `upstream` with `headers`: the per-upstream machinery.
    fn call<'c>(&'c self, upstream: &str, headers: &'c HeaderMap) -> Option<Call<'c>> {
        let (name, url) = self.shared.upstreams.get_key_value(upstream)?;
        Some(Call {
            shared: self.shared,
            upstream: (name.as_str(), url),
            headers,
            who: self.who.clone(),
        })
    }

    async fn post(self, body: Body) -> Response {
        let (bytes, message) = match read_message(self.shared, self.headers, body).await {
            Ok(read) => read,
            Err(response) => return *response,
        };
        match message {
            Message::Request { id, method, params } => self.request(id, &method, params).await,
            Message::Notification { method } => self.notify(bytes, &method).await,
            Message::Response { id } => self.reply(bytes, id).await,
        }
    }

    async fn request(&self, id: Id, method: &str, params: Option<Value>) -> Response {
        let revision = routing::revision(self.headers, params.as_ref());
        if let Err(why) = routing::check(self.headers, revision, method, params.as_ref()) {
            tracing::warn!(why, "refused a request whose headers contradict its body");
            return mismatch(Some(&id), &why);
        }
        if method == "initialize" && revision == Revision::Sessions {
            return self.initialize(id, params).await;
        }
        let context = match self.context(revision, Some(&id)) {
            Ok(context) => context,
            Err(response) => return *response,
        };
        let stateless = revision == Revision::Stateless;
        match method {
            "ping" => json_response(StatusCode::OK, &answer(&id, json!({}), stateless)),
            "server/discover" => self.discover(&context, id, params).await,
            "tools/list" | "prompts/list" | "resources/list" | "resources/templates/list" => {
                self.list(&context, id, method, params).await
            }
            "tools/call" | "prompts/get" => self.by_name(&context, id, method, params).await,
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                self.by_uri(&context, id, method, params).await
            }
            "completion/complete" => self.complete(&context, id, params).await,
            "logging/setLevel" => self.set_level(&context, id, params).await,
            _ => rpc_error(
                StatusCode::OK,
                Some(&id),
                code::METHOD_NOT_FOUND,
                &format!(
                    "`{method}` is not routed by the endpoint of several servers; use /mcp/<server>"
                ),
            ),
        }
    }

    /// `initialize`: a session with every upstream, opened in parallel, or none.
    async fn initialize(&self, id: Id, params: Option<Value>) -> Response {
        match self.session_header() {
            Ok(None) => {}
            Ok(Some(_)) => {
                return rpc_error(
                    StatusCode::BAD_REQUEST,
                    Some(&id),
                    code::INVALID_REQUEST,
                    "initialize opens a new session: send it without Mcp-Session-Id",
                );
            }
            Err(response) => return *response,
        }
        let body = Bytes::from(request_line(&id, "initialize", params));
        let headers = self.upstream_headers(None);
        let opened =
            futures_util::future::join_all(self.shared.options.upstreams.iter().map(|upstream| {
                let body = body.clone();
                let headers = &headers;
                let id = &id;
                async move {
                    let got = exchange(
                        self.shared,
                        &upstream.url,
                        Method::POST,
                        headers,
                        Some(body),
                        Some(id),
                    )
                    .await;
                    (upstream.name.clone(), got)
                }
            }))
            .await;
        let mut joined: BTreeMap<String, (Joined, String)> = BTreeMap::new();
        let mut failed = Vec::new();
        let mut opened_sessions = Vec::new();
        for (name, got) in opened {
            match got {
                Ok(exchanged) => {
                    if let Some(session) = &exchanged.session {
                        opened_sessions.push((name.clone(), session.clone()));
                    }
                    match exchanged.result() {
                        Ok(result) => {
                            let version = result
                                .get("protocolVersion")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_owned();
                            let capabilities =
                                result.get("capabilities").cloned().unwrap_or(json!({}));
                            joined.insert(
                                name,
                                (
                                    Joined {
                                        session: exchanged.session,
                                        capabilities,
                                    },
                                    version,
                                ),
                            );
                        }
                        Err(why) => failed.push(format!("`{name}` {why}")),
                    }
                }
                Err(why) => failed.push(format!("`{name}` {why}")),
            }
        }
        if !failed.is_empty() {
            tracing::warn!(failed = ?failed, "an MCP server did not initialize; the aggregate session is not opened");
            for (name, session) in opened_sessions {
                self.close_upstream(&name, &session);
            }
            return rpc_error(
                StatusCode::BAD_GATEWAY,
                Some(&id),
                code::INTERNAL_ERROR,
                &format!(
                    "not every MCP server behind this endpoint could be initialized ({}); the \
                     endpoint serves all of its servers or none",
                    failed.join("; ")
                ),
            );
        }
        // The oldest revision any server chose: what they all can speak.
        let version = joined
            .values()
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
            .min()
            .unwrap_or(routing::STATELESS_REVISION)
            .to_owned();
        let capabilities = merge_capabilities(joined.values().map(|(j, _)| &j.capabilities));
        let arbiter = self.shared.gateway.new_session();
        let session = format!(
            "agg-{}",
            self.shared.gateway.new_session().trim_start_matches("mcp-")
        );
        {
            let mut sessions = self.shared.sessions();
            for (name, (upstream, _)) in &joined {
                if let Some(upstream_session) = &upstream.session {
                    sessions.bind(
                        name,
                        upstream_session,
                        self.who.owner.clone(),
                        arbiter.clone(),
                    );
                }
            }
        }
        let upstreams = joined.into_iter().map(|(n, (j, _))| (n, j)).collect();
        self.shared.aggregate.open(
            session.clone(),
            Session {
                owner: self.who.owner.clone(),
                upstreams,
                routes: Routes::default(),
                ended: false,
            },
        );
        tracing::info!(session = arbiter, "MCP session started with every upstream");
        let result = json!({
            "protocolVersion": version,
            "capabilities": capabilities,
            "serverInfo": {"name": "arbiter", "version": env!("CARGO_PKG_VERSION")},
            "instructions": format!(
                "Several MCP servers behind one endpoint: each tool and prompt is named \
                 <server>{}<name>.",
                self.separator
            ),
        });
        let mut response = json_response(StatusCode::OK, &answer(&id, result, false));
        if let Ok(value) = HeaderValue::from_str(&session) {
            response.headers_mut().insert(SESSION_ID, value);
        }
        response
    }

    /// `server/discover` (stateless): each upstream asked, the capabilities merged, the
    /// versions every one supports.
    async fn discover(&self, context: &Context, id: Id, params: Option<Value>) -> Response {
        let body = Bytes::from(request_line(&id, "server/discover", params));
        let headers = self.upstream_headers(None);
        let mut answers = Vec::new();
        for name in context.upstreams.keys() {
            let Some((_, url)) = self.shared.upstreams.get_key_value(name) else {
                continue;
            };
            let got = exchange(
                self.shared,
                url,
                Method::POST,
                &headers,
                Some(body.clone()),
                Some(&id),
            )
            .await
            .and_then(|e| e.result());
            match got {
                Ok(result) => answers.push(result),
                Err(why) => {
                    return upstream_error(&id, name, &why);
                }
            }
        }
        let capabilities = merge_capabilities(answers.iter().filter_map(|a| a.get("capabilities")));
        let mut versions: Option<Vec<Value>> = None;
        for answer in &answers {
            let these = answer
                .get("supportedVersions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            versions = Some(match versions {
                None => these,
                Some(known) => known.into_iter().filter(|v| these.contains(v)).collect(),
            });
        }
        let result = json!({
            "capabilities": capabilities,
            "supportedVersions": versions.unwrap_or_default(),
            "cacheScope": "private",
            "ttlMs": 0,
            "_meta": {"io.modelcontextprotocol/serverInfo":
                      {"name": "arbiter", "version": env!("CARGO_PKG_VERSION")}},
        });
        json_response(StatusCode::OK, &answer(&id, result, true))
    }

    /// A list from every upstream that offers it, every page, each as `/mcp/<upstream>`
    /// would give it (filtered for the caller, changed pins marked), its names prefixed,
    /// in one answer.
    async fn list(
        &self,
        context: &Context,
        id: Id,
        method: &str,
        params: Option<Value>,
    ) -> Response {
        if params.as_ref().and_then(|p| p.get("cursor")).is_some() {
            return rpc_error(
                StatusCode::OK,
                Some(&id),
                code::INVALID_PARAMS,
                "this endpoint answers a list whole and gives no cursor",
            );
        }
        let (key, capability, prefixed, routed) = match method {
            "tools/list" => ("tools", "tools", true, None),
            "prompts/list" => ("prompts", "prompts", true, None),
            "resources/list" => ("resources", "resources", false, Some("uri")),
            _ => ("resourceTemplates", "resources", false, Some("uriTemplate")),
        };
        let meta = params.as_ref().and_then(|p| p.get("_meta")).cloned();
        let asked: Vec<(&String, &Joined)> = context
            .upstreams
            .iter()
            .filter(|(_, joined)| context.offers(joined, capability))
            .collect();
        let pages = futures_util::future::join_all(asked.iter().map(|(name, joined)| {
            self.pages(context, name, joined, &id, method, key, meta.as_ref())
        }))
        .await;
        let max = self.shared.gateway.max_message_bytes();
        let mut merged = Vec::new();
        let mut size = 0usize;
        for ((name, _), items) in asked.iter().zip(pages) {
            let items = match items {
                Ok(items) => items,
                Err(why) => return upstream_error(&id, name, &why),
            };
            if let Some(field) = routed {
                self.shared
                    .aggregate
                    .record(&context.scope, name, field, &items);
            }
            for mut item in items {
                if prefixed {
                    let Some(own) = item.get("name").and_then(Value::as_str) else {
                        tracing::warn!(
                            upstream = name.as_str(),
                            "dropped a listed item without a name"
                        );
                        continue;
                    };
                    let namespaced = format!("{name}{}{own}", self.separator);
                    if let Some(object) = item.as_object_mut() {
                        object.insert("name".to_owned(), Value::String(namespaced));
                    }
                }
                size = size.saturating_add(item.to_string().len());
                if size > max {
                    return rpc_error(
                        StatusCode::OK,
                        Some(&id),
                        code::INTERNAL_ERROR,
                        &format!("the merged list is larger than {max} bytes, the proxy's limit"),
                    );
                }
                merged.push(item);
            }
        }
        let mut result = Map::new();
        result.insert(key.to_owned(), Value::Array(merged));
        let stateless = context.revision == Revision::Stateless;
        if stateless {
            result.insert("cacheScope".to_owned(), json!("private"));
            result.insert("ttlMs".to_owned(), json!(0));
        }
        let mut response = json_response(
            StatusCode::OK,
            &answer(&id, Value::Object(result), stateless),
        );
        // The list is this caller's: no cache may serve it to another.
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("private, no-store"),
        );
        response
    }

    /// Every page of one upstream's list, through [`Call::request`]: the items.
    #[allow(clippy::too_many_arguments, reason = "one list, said in full")]
    async fn pages(
        &self,
        context: &Context,
        upstream: &str,
        joined: &Joined,
        id: &Id,
        method: &str,
        key: &str,
        meta: Option<&Value>,
    ) -> Result<Vec<Value>, String> {
        let headers = self.upstream_headers(joined.session.as_deref());
        let max = self.shared.gateway.max_message_bytes();
        let mut items = Vec::new();
        let mut total = 0usize;
        let mut cursor: Option<String> = None;
        let mut cursors = HashSet::new();
        for _ in 0..pins::MAX_PAGES {
            let mut params = Map::new();
            if let Some(cursor) = &cursor {
                params.insert("cursor".to_owned(), json!(cursor));
            }
            if let Some(meta) = meta {
                params.insert("_meta".to_owned(), meta.clone());
            }
            let params = Value::Object(params);
            let line = request_line(id, method, Some(params.clone()));
            total = total.saturating_add(line.len());
            let call = self
                .call(upstream, &headers)
                .ok_or_else(|| "is not configured".to_owned())?;
            let response = call
                .request(Bytes::from(line), id.clone(), method, Some(&params))
                .await;
            let (size, message) = read_answer(response, id, max).await?;
            total = total.saturating_add(size);
            if total > max.saturating_mul(2) {
                return Err(format!("gave a list larger than {max} bytes"));
            }
            if let Some(error) = message.get("error") {
                let not_found = error.get("code") == Some(&json!(code::METHOD_NOT_FOUND));
                if context.revision == Revision::Stateless && not_found {
                    return Ok(items);
                }
                return Err(format!("answered with an error: {}", error_text(error)));
            }
            let Some(result) = message.get("result") else {
                return Err("answered without a result".to_owned());
            };
            if let Some(found) = result.get(key).and_then(Value::as_array) {
                items.extend(found.iter().cloned());
            }
            match result.get("nextCursor").and_then(Value::as_str) {
                None => return Ok(items),
                Some(next) if !cursors.insert(next.to_owned()) => {
                    return Err("gave the same cursor twice".to_owned());
                }
                Some(next) => cursor = Some(next.to_owned()),
            }
        }
        Err(format!(
            "gave a list of more than {} pages",
            pins::MAX_PAGES
        ))
    }

    /// `tools/call` and `prompts/get`: the name split, the call made on its upstream.
    async fn by_name(
        &self,
        context: &Context,
        id: Id,
        method: &str,
        params: Option<Value>,
    ) -> Response {
        let Some(mut params) = params.filter(Value::is_object) else {
            return invalid(&id, &format!("`{method}` needs `params.name`"));
        };
        let Some(name) = params
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_owned)
        else {
            return invalid(&id, &format!("`{method}` needs `params.name` as a string"));
        };
        let (upstream, own) = match split(&name, self.separator, &self.names()) {
            Ok(split) => split,
            Err(unrouted) => {
                tracing::warn!(%unrouted, "refused a request for a name no upstream has");
                return invalid(&id, &unrouted.to_string());
            }
        };
        if let Some(object) = params.as_object_mut() {
            object.insert("name".to_owned(), Value::String(own.to_owned()));
        }
        self.forward(context, upstream, id, method, params, Some(own))
            .await
    }

    /// `resources/read`, `resources/subscribe` and `resources/unsubscribe`: to the
    /// upstream that listed the URI.
    async fn by_uri(
        &self,
        context: &Context,
        id: Id,
        method: &str,
        params: Option<Value>,
    ) -> Response {
        let Some(params) = params.filter(Value::is_object) else {
            return invalid(&id, &format!("`{method}` needs `params.uri`"));
        };
        let Some(uri) = params.get("uri").and_then(Value::as_str) else {
            return invalid(&id, &format!("`{method}` needs `params.uri` as a string"));
        };
        let upstream = match self.shared.aggregate.routed(&context.scope, uri, false) {
            Ok(upstream) => upstream,
            Err(why) => {
                tracing::warn!(why, "refused a request for a resource no upstream routes");
                return invalid(&id, &format!("the resource `{uri}` is not routed: {why}"));
            }
        };
        self.forward(context, &upstream, id, method, params, None)
            .await
    }

    /// `completion/complete`: a prompt's argument by the prompt's namespaced name, a
    /// template's by the upstream that listed the template.
    async fn complete(&self, context: &Context, id: Id, params: Option<Value>) -> Response {
        let method = "completion/complete";
        let Some(mut params) = params.filter(Value::is_object) else {
            return invalid(&id, "`completion/complete` needs `params.ref`");
        };
        let reference = params.get("ref").cloned().unwrap_or(Value::Null);
        let kind = reference.get("type").and_then(Value::as_str);
        let upstream = match kind {
            Some("ref/prompt") => {
                let Some(name) = reference.get("name").and_then(Value::as_str) else {
                    return invalid(&id, "a prompt reference needs `name` as a string");
                };
                let (upstream, own) = match split(name, self.separator, &self.names()) {
                    Ok(split) => split,
                    Err(unrouted) => return invalid(&id, &unrouted.to_string()),
                };
                let upstream = upstream.to_owned();
                if let Some(r) = params.get_mut("ref").and_then(Value::as_object_mut) {
                    r.insert("name".to_owned(), Value::String(own.to_owned()));
                }
                upstream
            }
            Some("ref/resource") => {
                let Some(uri) = reference.get("uri").and_then(Value::as_str) else {
                    return invalid(&id, "a resource reference needs `uri` as a string");
                };
                match self.shared.aggregate.routed(&context.scope, uri, true) {
                    Ok(upstream) => upstream,
                    Err(why) => {
                        return invalid(&id, &format!("the template `{uri}` is not routed: {why}"));
                    }
                }
            }
            _ => return invalid(&id, "`params.ref` must be a ref/prompt or a ref/resource"),
        };
        self.forward(context, &upstream, id, method, params, None)
            .await
    }

    /// `logging/setLevel`: every upstream that logs is told; answered here.
    async fn set_level(&self, context: &Context, id: Id, params: Option<Value>) -> Response {
        let method = "logging/setLevel";
        let max = self.shared.gateway.max_message_bytes();
        for (name, joined) in &context.upstreams {
            if context.revision == Revision::Sessions && !context.offers(joined, "logging") {
                continue;
            }
            let headers = self.upstream_headers(joined.session.as_deref());
            let Some(call) = self.call(name, &headers) else {
                continue;
            };
            let line = request_line(&id, method, params.clone());
            let response = call
                .request(Bytes::from(line), id.clone(), method, params.as_ref())
                .await;
            if let Err(why) = read_answer(response, &id, max).await {
                tracing::warn!(
                    upstream = name.as_str(),
                    why,
                    "setting an MCP server's log level"
                );
            }
        }
        json_response(
            StatusCode::OK,
            &answer(&id, json!({}), context.revision == Revision::Stateless),
        )
    }

    /// Makes a request on `upstream`, as `/mcp/<upstream>` would (decided there), and
    /// passes the answer on.
    async fn forward(
        &self,
        context: &Context,
        upstream: &str,
        id: Id,
        method: &str,
        params: Value,
        name: Option<&str>,
    ) -> Response {
        let Some(joined) = context.upstreams.get(upstream) else {
            return invalid(
                &id,
                &format!("this session has no session with the MCP server `{upstream}`"),
            );
        };
        let mut headers = self.upstream_headers(joined.session.as_deref());
        if let Some(name) = name
            && headers.contains_key("mcp-name")
        {
            match HeaderValue::from_str(name) {
                Ok(value) => {
                    headers.insert("mcp-name", value);
                }
                Err(_) => {
                    use base64::Engine as _;
                    let encoded = base64::engine::general_purpose::STANDARD.encode(name);
                    if let Ok(value) = HeaderValue::from_str(&format!("=?base64?{encoded}?=")) {
                        headers.insert("mcp-name", value);
                    }
                }
            }
        }
        let line = request_line(&id, method, Some(params.clone()));
        let Some(call) = self.call(upstream, &headers) else {
            return invalid(
                &id,
                &format!("`{upstream}` is not a server behind this endpoint"),
            );
        };
        let response = call
            .request(Bytes::from(line), id, method, Some(&params))
            .await;
        self.after_revoke(context, upstream, joined);
        self.relay(context, upstream, response)
    }

    /// When a call on one upstream ended its session (a `revoke`), the aggregate session
    /// ends with every upstream's.
    fn after_revoke(&self, context: &Context, upstream: &str, joined: &Joined) {
        let (Some(session), Some(own)) = (context.session_id(), joined.session.as_deref()) else {
            return;
        };
        let ended = self
            .shared
            .sessions()
            .lookup(upstream, own, &self.who.owner)
            == Lookup::Ended;
        if !ended {
            return;
        }
        if let Some(found) = self.shared.aggregate.table().sessions.get_mut(session) {
            found.ended = true;
        }
        for (name, other) in &context.upstreams {
            if name == upstream {
                continue;
            }
            if let Some(other) = &other.session {
                self.shared.sessions().end(name, other);
                self.close_upstream(name, other);
            }
        }
        tracing::warn!("a revoke effect ended the MCP session with every upstream");
    }

    /// Asks an upstream to end a session, without waiting.
    fn close_upstream(&self, upstream: &str, session: &str) {
        let Some(url) = self.shared.upstreams.get(upstream) else {
            return;
        };
        let request = self
            .shared
            .client
            .delete(url.clone())
            .header(SESSION_ID, session)
            .timeout(self.shared.options.upstream_timeout);
        let name = upstream.to_owned();
        tokio::spawn(async move {
            if let Err(e) = request.send().await {
                tracing::warn!(upstream = name, error = %e, "ending an MCP session on the server");
            }
        });
    }

    /// An upstream's answer as the client gets it: the proxy's session id in place of the
    /// upstream's, and the server's own requests on an event stream tagged with it.
    fn relay(&self, context: &Context, upstream: &str, response: Response) -> Response {
        let (mut parts, body) = response.into_parts();
        parts.headers.remove(SESSION_ID);
        if let Some(value) = context
            .session_id()
            .and_then(|s| HeaderValue::from_str(s).ok())
        {
            parts.headers.insert(SESSION_ID, value);
        }
        let stream = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.to_ascii_lowercase().starts_with("text/event-stream"));
        let body = if stream {
            tag_stream(
                body,
                upstream.to_owned(),
                self.separator.to_owned(),
                self.shared.gateway.max_message_bytes(),
                false,
            )
        } else {
            body
        };
        Response::from_parts(parts, body)
    }

    /// A notification: every upstream gets it.
    async fn notify(&self, bytes: Bytes, method: &str) -> Response {
        let revision = routing::revision(self.headers, None);
        if let Err(why) = routing::check(self.headers, revision, method, None) {
            return mismatch(None, &why);
        }
        let context = match self.context(revision, None) {
            Ok(context) => context,
            Err(response) => return *response,
        };
        let headers: Vec<(String, HeaderMap)> = context
            .upstreams
            .iter()
            .map(|(n, j)| (n.clone(), self.upstream_headers(j.session.as_deref())))
            .collect();
        let sent = futures_util::future::join_all(headers.iter().filter_map(|(name, headers)| {
            let call = self.call(name, headers)?;
            let bytes = bytes.clone();
            Some(async move { (name, call.pass(bytes, revision).await.status()) })
        }))
        .await;
        for (name, status) in sent {
            if !status.is_success() {
                tracing::warn!(upstream = name.as_str(), %status, "an MCP server did not take a notification");
            }
        }
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::ACCEPTED;
        response
    }

    /// The client's answer to a server's request: back to the server that asked, with
    /// its own id. An answer to nothing the proxy passed on is refused.
    async fn reply(&self, bytes: Bytes, id: Option<Id>) -> Response {
        let revision = routing::revision(self.headers, None);
        let context = match self.context(revision, None) {
            Ok(context) => context,
            Err(response) => return *response,
        };
        let names = self.names();
        let tagged = id.map(|i| i.to_value());
        let Some((upstream, own)) = tagged
            .as_ref()
            .and_then(|i| untag_id(i, self.separator, &names))
        else {
            tracing::warn!(
                "dropped an answer from the agent to a request the proxy never passed on"
            );
            return rpc_error(
                StatusCode::BAD_REQUEST,
                None,
                code::INVALID_REQUEST,
                "this answers no request the proxy passed on",
            );
        };
        let Some(joined) = context.upstreams.get(upstream) else {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                None,
                code::INVALID_REQUEST,
                "this answers no request the proxy passed on",
            );
        };
        let mut message: Value = match arbiter_core::json::from_slice(&bytes) {
            Ok(message) => message,
            Err(_) => {
                return rpc_error(
                    StatusCode::BAD_REQUEST,
                    None,
                    code::PARSE_ERROR,
                    "the answer could not be read",
                );
            }
        };
        if let Some(object) = message.as_object_mut() {
            object.insert("id".to_owned(), own);
        }
        let headers = self.upstream_headers(joined.session.as_deref());
        let Some(call) = self.call(upstream, &headers) else {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                None,
                code::INVALID_REQUEST,
                "this answers no request the proxy passed on",
            );
        };
        let response = call.pass(Bytes::from(message.to_string()), revision).await;
        self.relay(&context, upstream, response)
    }

    /// The server→client stream: every upstream's, merged into one. Each event's `id` is
    /// left out (an id of one server's stream resumes nothing on another's), so a client
    /// cannot resume this stream with `Last-Event-Id`.
    async fn get(self) -> Response {
        let revision = routing::revision(self.headers, None);
        if revision == Revision::Stateless {
            return not_allowed("the stateless revision has no server→client stream here");
        }
        let context = match self.context(revision, None) {
            Ok(context) => context,
            Err(response) => return *response,
        };
        let headers: Vec<(String, HeaderMap)> = context
            .upstreams
            .iter()
            .map(|(n, j)| (n.clone(), self.upstream_headers(j.session.as_deref())))
            .collect();
        let opened =
            futures_util::future::join_all(headers.iter().filter_map(|(name, headers)| {
                let call = self.call(name, headers)?;
                Some(async move { (name, call.get().await) })
            }))
            .await;
        let max = self.shared.gateway.max_message_bytes();
        let mut streams = Vec::new();
        for (name, response) in opened {
            let is_stream = response
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|t| t.to_ascii_lowercase().starts_with("text/event-stream"));
            if response.status() == StatusCode::OK && is_stream {
                let body = tag_stream(
                    response.into_body(),
                    name.clone(),
                    self.separator.to_owned(),
                    max,
                    true,
                );
                streams.push(body.into_data_stream());
            } else {
                tracing::debug!(upstream = name.as_str(), status = %response.status(), "no server→client stream from this server");
            }
        }
        if streams.is_empty() {
            return not_allowed("no MCP server behind this endpoint offers a server→client stream");
        }
        let merged = futures_util::stream::select_all(streams);
        let mut response = Response::new(Body::from_stream(merged));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(value) = context
            .session_id()
            .and_then(|s| HeaderValue::from_str(s).ok())
        {
            headers.insert(SESSION_ID, value);
        }
        response
    }

    /// The end of an aggregate session: every upstream's ended, the bindings forgotten.
    async fn delete(self) -> Response {
        let revision = routing::revision(self.headers, None);
        if revision == Revision::Stateless {
            return not_allowed("the stateless revision has no session to end");
        }
        let session = match self.session_header() {
            Ok(Some(session)) => session.to_owned(),
            Ok(None) => {
                return rpc_error(
                    StatusCode::BAD_REQUEST,
                    None,
                    code::INVALID_REQUEST,
                    "send the Mcp-Session-Id of the session to end",
                );
            }
            Err(response) => return *response,
        };
        let removed = {
            let mut table = self.shared.aggregate.table();
            match table.sessions.get(&session) {
                None => None,
                Some(found) if found.owner != self.who.owner => {
                    return rpc_error(
                        StatusCode::FORBIDDEN,
                        None,
                        code::INVALID_REQUEST,
                        "this MCP session was opened by another identity",
                    );
                }
                Some(_) => table.remove(&session),
            }
        };
        let Some(removed) = removed else {
            return rpc_error(
                StatusCode::NOT_FOUND,
                None,
                code::INVALID_REQUEST,
                "no such MCP session here",
            );
        };
        let mut closing = Vec::new();
        for (name, joined) in &removed.upstreams {
            let Some(own) = &joined.session else { continue };
            self.shared.sessions().forget(name, own);
            let Some(url) = self.shared.upstreams.get(name) else {
                continue;
            };
            let headers = self.upstream_headers(Some(own));
            closing.push(async move {
                if let Err(why) =
                    exchange(self.shared, url, Method::DELETE, &headers, None, None).await
                {
                    tracing::warn!(
                        upstream = name.as_str(),
                        why,
                        "ending an MCP session on the server"
                    );
                }
            });
        }
        futures_util::future::join_all(closing).await;
        tracing::info!("MCP session ended with every upstream");
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::OK;
        response
    }
}

/// A request line the proxy writes.
fn request_line(id: &Id, method: &str, params: Option<Value>) -> Vec<u8> {
    let mut message = json!({"jsonrpc": "2.0", "id": id.to_value(), "method": method});
    if let (Some(params), Some(object)) = (params, message.as_object_mut()) {
        object.insert("params".to_owned(), params);
    }
    message.to_string().into_bytes()
}

fn invalid(id: &Id, why: &str) -> Response {
    rpc_error(StatusCode::OK, Some(id), code::INVALID_PARAMS, why)
}

fn upstream_error(id: &Id, upstream: &str, why: &str) -> Response {
    tracing::warn!(
        upstream,
        why,
        "an MCP server failed a request of the aggregate endpoint"
    );
    rpc_error(
        StatusCode::BAD_GATEWAY,
        Some(id),
        code::INTERNAL_ERROR,
        &format!("the MCP server `{upstream}` {why}"),
    )
}

fn not_allowed(why: &str) -> Response {
    let mut response = rpc_error(
        StatusCode::METHOD_NOT_ALLOWED,
        None,
        code::INVALID_REQUEST,
        why,
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST, GET, DELETE"));
    response
}

fn error_text(error: &Value) -> String {
    error
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("no message")
        .chars()
        .take(300)
        .collect()
}

/// What an upstream answered to a request the proxy made itself.
struct Exchanged {
    /// The session id the upstream gave, if any.
    session: Option<String>,
    /// The answer to the request, when one was expected.
    message: Option<Value>,
}

impl Exchanged {
    /// The result, or why there is none.
    fn result(&self) -> Result<Value, String> {
        let Some(message) = &self.message else {
            return Err("gave no answer".to_owned());
        };
        if let Some(error) = message.get("error") {
            return Err(format!("answered with an error: {}", error_text(error)));
        }
        message
            .get("result")
            .cloned()
            .ok_or_else(|| "answered without a result".to_owned())
    }
}

/// Sends a request of the proxy's own to an upstream (`initialize`, `server/discover`,
/// `DELETE`): MCP's headers only, within the upstream timeout, the answer read bounded
/// and matched to `id`.
async fn exchange(
    shared: &Shared,
    url: &reqwest::Url,
    method: Method,
    headers: &HeaderMap,
    body: Option<Bytes>,
    id: Option<&Id>,
) -> Result<Exchanged, String> {
    let mut request = shared.client.request(method, url.clone());
    for name in FORWARDED {
        for value in headers.get_all(name) {
            request = request.header(name, value);
        }
    }
    if let Some(body) = body {
        request = request.body(body);
    }
    let timeout = shared.options.upstream_timeout;
    let response = tokio::time::timeout(timeout, request.send())
        .await
        .map_err(|_| "did not answer in time".to_owned())?
        .map_err(|e| format!("cannot be reached ({e})"))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("answered HTTP {status}"));
    }
    let session = response
        .headers()
        .get(SESSION_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let Some(id) = id else {
        return Ok(Exchanged {
            session,
            message: None,
        });
    };
    let stream = is_event_stream(response.headers());
    let max = shared.gateway.max_message_bytes();
    let bytes = read_bounded(response, max, timeout).await?;
    let message = find_answer(&bytes, stream, id, max)?;
    Ok(Exchanged {
        session,
        message: Some(message),
    })
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.to_ascii_lowercase().starts_with("text/event-stream"))
}

/// The answer to `id` in a JSON body or an event stream, read strictly.
fn find_answer(bytes: &[u8], stream: bool, id: &Id, max: usize) -> Result<Value, String> {
    let answers = |data: &[u8]| -> bool {
        matches!(jsonrpc::read(data), Ok(Message::Response { id: Some(got) }) if &got == id)
    };
    if !stream {
        if !answers(bytes) {
            return Err("gave an answer that does not answer the request".to_owned());
        }
        return arbiter_core::json::from_slice(bytes).map_err(|e| e.to_string());
    }
    let mut parser = sse::Parser::new(max);
    let mut events = parser.push(bytes);
    events.extend(parser.push(b"\n\n"));
    events
        .into_iter()
        .filter_map(|parsed| match parsed {
            sse::Parsed::Event(event) => event.data,
            sse::Parsed::TooLong => None,
        })
        .find(|data| answers(data))
        .and_then(|data| arbiter_core::json::from_slice(&data).ok())
        .ok_or_else(|| "closed its event stream without answering".to_owned())
}

/// The answer a [`Call`] gave (its size, and the message), read whole and bounded.
async fn read_answer(response: Response, id: &Id, max: usize) -> Result<(usize, Value), String> {
    let status = response.status();
    let stream = is_event_stream(response.headers());
    let bytes = axum::body::to_bytes(response.into_body(), max)
        .await
        .map_err(|_| format!("gave an answer larger than {max} bytes"))?;
    match find_answer(&bytes, stream, id, max) {
        Ok(message) => Ok((bytes.len(), message)),
        Err(_) if !status.is_success() => Err(format!("answered HTTP {status}")),
        Err(why) => Err(why),
    }
}

/// An event stream passed on with each server request's id tagged with `upstream`, and,
/// when `drop_ids`, without the events' `id` lines.
fn tag_stream(body: Body, upstream: String, separator: String, max: usize, drop_ids: bool) -> Body {
    let mut parser = sse::Parser::new(max);
    let stream = body.into_data_stream().map(move |chunk| {
        let chunk = chunk?;
        let mut out = Vec::new();
        for parsed in parser.push(&chunk) {
            if let sse::Parsed::Event(event) = parsed {
                out.extend(tag_event(&event, &upstream, &separator, drop_ids));
            }
        }
        Ok::<_, axum::Error>(Bytes::from(out))
    });
    Body::from_stream(stream)
}

fn tag_event(event: &sse::Event, upstream: &str, separator: &str, drop_ids: bool) -> Vec<u8> {
    let event = if drop_ids {
        let lines: Vec<u8> = event
            .lines
            .split_inclusive(|b| *b == b'\n')
            .filter(|line| !(line.starts_with(b"id:") || trim(line) == b"id"))
            .flatten()
            .copied()
            .collect();
        sse::Event {
            lines,
            data: event.data.clone(),
        }
    } else {
        sse::Event {
            lines: event.lines.clone(),
            data: event.data.clone(),
        }
    };
    let Some(data) = &event.data else {
        return event.as_is();
    };
    if !matches!(jsonrpc::read(data), Ok(Message::Request { .. })) {
        return event.as_is();
    }
    let Ok(mut message) = arbiter_core::json::from_slice(data) else {
        return event.as_is();
    };
    if let Some(object) = message.as_object_mut()
        && let Some(id) = object.get("id").cloned()
    {
        object.insert("id".to_owned(), tag_id(upstream, separator, &id));
    }
    event.with_data(&trim_newline(message.to_string().into_bytes()))
}

fn trim(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test")]

    use super::*;

    #[test]
    fn a_name_splits_on_the_first_separator_into_a_known_upstream() {
        let upstreams = ["github", "fs"];
        assert_eq!(
            split("github__create_issue", "__", &upstreams),
            Ok(("github", "create_issue"))
        );
        // The tool's own name may hold the separator.
        assert_eq!(
            split("fs__read__all", "__", &upstreams),
            Ok(("fs", "read__all"))
        );
        assert_eq!(split("fs.read", ".", &upstreams), Ok(("fs", "read")));
        assert!(matches!(
            split("create_issue", "__", &upstreams),
            Err(Unrouted::NoPrefix { .. })
        ));
        assert!(matches!(
            split("gitlab__create_issue", "__", &upstreams),
            Err(Unrouted::UnknownPrefix { .. })
        ));
        assert!(matches!(
            split("github__", "__", &upstreams),
            Err(Unrouted::EmptyName { .. })
        ));
        assert!(matches!(
            split("__x", "__", &upstreams),
            Err(Unrouted::UnknownPrefix { .. })
        ));
        let why = split("gitlab__x", "__", &upstreams)
            .unwrap_err()
            .to_string();
        assert!(why.contains("`gitlab` is not a server"), "{why}");
    }

    #[test]
    fn capabilities_merge_as_a_union_of_what_the_endpoint_routes() {
        let a = json!({"tools": {"listChanged": false}, "logging": {},
                       "experimental": {"x": {}}});
        let b = json!({"tools": {"listChanged": true},
                       "resources": {"subscribe": true, "listChanged": false},
                       "tasks": {"list": {}}});
        let merged = merge_capabilities([&a, &b, &Value::Null]);
        assert_eq!(
            merged,
            json!({"tools": {"listChanged": true}, "logging": {},
                   "resources": {"subscribe": true, "listChanged": false}})
        );
        assert_eq!(merge_capabilities([]), json!({}));
    }

    #[test]
    fn a_server_request_id_is_tagged_and_untagged_back() {
        let upstreams = ["a", "b"];
        for id in [json!(0), json!("s1"), json!("b__x")] {
            let tagged = tag_id("a", "__", &id);
            assert_eq!(untag_id(&tagged, "__", &upstreams), Some(("a", id)));
        }
        assert_eq!(untag_id(&json!(3), "__", &upstreams), None);
        assert_eq!(untag_id(&json!("c__1"), "__", &upstreams), None);
        assert_eq!(untag_id(&json!("a__{}"), "__", &upstreams), None);
        assert_eq!(untag_id(&json!("a__1.5"), "__", &upstreams), None);
    }

    #[test]
    fn a_uri_two_upstreams_list_is_not_routed() {
        let aggregate = Aggregate::new("__".to_owned(), 4);
        let scope = Scope::Identity("mcp-x".to_owned());
        aggregate.record(
            &scope,
            "a",
            "uri",
            &[json!({"uri": "file:///1"}), json!({"uri": "file:///2"})],
        );
        aggregate.record(&scope, "b", "uri", &[json!({"uri": "file:///2"})]);
        assert_eq!(
            aggregate.routed(&scope, "file:///1", false),
            Ok("a".to_owned())
        );
        assert!(aggregate.routed(&scope, "file:///2", false).is_err());
        assert!(aggregate.routed(&scope, "file:///3", false).is_err());
        assert!(
            aggregate
                .routed(&Scope::Identity("mcp-y".to_owned()), "file:///1", false)
                .is_err()
        );
        // A URI no server listed is routed by the one template it fits.
        aggregate.record(
            &scope,
            "a",
            "uriTemplate",
            &[json!({"uriTemplate": "demo://text/{id}"})],
        );
        aggregate.record(
            &scope,
            "b",
            "uriTemplate",
            &[json!({"uriTemplate": "logs://{day}.log"})],
        );
        assert_eq!(
            aggregate.routed(&scope, "demo://text/7", false),
            Ok("a".to_owned())
        );
        assert_eq!(
            aggregate.routed(&scope, "logs://monday.log", false),
            Ok("b".to_owned())
        );
        assert!(
            aggregate
                .routed(&scope, "logs://monday.txt", false)
                .is_err()
        );
        assert!(aggregate.routed(&scope, "demo://text/", false).is_err());
        aggregate.record(
            &scope,
            "b",
            "uriTemplate",
            &[json!({"uriTemplate": "demo://{path}"})],
        );
        assert!(aggregate.routed(&scope, "demo://text/7", false).is_err());
    }
}

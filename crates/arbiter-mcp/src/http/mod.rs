//! The Streamable HTTP transport: the proxy listens, and forwards to MCP servers that
//! listen too. Each upstream is served at `/mcp/<name>` (and at `/mcp` when it is the only
//! one); every request says who calls (`Authorization: Bearer <arbiter token>`, verified
//! per request, or a configured principal for local use when it sends none), and the
//! client's own credentials never reach the server.
//!
//! A request is read strictly before anything is forwarded ([`crate::jsonrpc::read`]);
//! its routing headers must say what its body says ([`routing`]); a `tools/call` goes
//! through the [`Gate`] and a denied one is answered here. Answers come back as JSON or as
//! an event stream, read event by event as they arrive ([`sse`]): a `tools/list` result
//! loses the tools the caller can never call, a malformed event is dropped, the rest
//! passes as it came.
//!
//! Sessions (2025-06-18, 2025-11-25): the `Mcp-Session-Id` an upstream gives is bound to
//! the identity that opened it ([`sessions`]); another identity's request on it is
//! refused. In the stateless revision (2026-07-28) the arbiter session is the identity's
//! own, keyed on the principal and the token's id, whatever session id the client sends.
//!
//! With several upstreams, `/mcp` serves them all at once ([`aggregate`]): each tool and
//! prompt named `<upstream><separator><name>`, each call routed to its upstream and
//! decided there, as if it came through `/mcp/<upstream>`.

pub mod aggregate;
pub mod routing;
pub mod sessions;
pub mod sse;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::caller::Caller;
use crate::gate::{Gate, Verdict};
use crate::gateway::Gateway;
use crate::jsonrpc::{self, Id, Message, Refused, code};
use crate::pins::{self, Check};
use routing::Revision;
use sessions::{Lookup, Owner, Sessions};

/// An MCP server the proxy forwards to.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Its name: the path `/mcp/<name>`, and `mcp.upstream` in the decision log.
    pub name: String,
    /// Its Streamable HTTP endpoint.
    pub url: reqwest::Url,
}

/// How the HTTP transport runs.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// The servers, by name.
    pub upstreams: Vec<Upstream>,
    /// Connections held at once; past it, new ones wait to be accepted.
    pub max_connections: usize,
    /// How long a server has to start answering, and at most between two chunks of an
    /// answer.
    pub upstream_timeout: Duration,
    /// How long a client has to send its request's headers, and then its body.
    pub request_timeout: Duration,
    /// How many MCP sessions are remembered.
    pub max_sessions: usize,
}

impl HttpOptions {
    /// Defaults for these upstreams.
    pub fn new(upstreams: Vec<Upstream>) -> HttpOptions {
        HttpOptions {
            upstreams,
            max_connections: 1024,
            upstream_timeout: Duration::from_secs(120),
            request_timeout: Duration::from_secs(30),
            max_sessions: sessions::DEFAULT_MAX_SESSIONS,
        }
    }
}

/// The request headers passed on to a server: MCP's own and nothing else (never
/// `Authorization`: MCP forbids passing a client's token through). `Mcp-Param-*` headers
/// are passed too: the server checks them against the body.
const FORWARDED: [&str; 7] = [
    "content-type",
    "accept",
    "mcp-session-id",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
    "last-event-id",
];

/// The response headers passed back to the client.
const RETURNED: [&str; 6] = [
    "content-type",
    "mcp-session-id",
    "mcp-protocol-version",
    "cache-control",
    "allow",
    "retry-after",
];

const SESSION_ID: &str = "mcp-session-id";

/// The id of the proxy's own `tools/list` (a pinned upstream's list, read before a call).
const OWN_LISTING: &str = "arbiter-pins";

/// What every request handler shares.
#[derive(Debug)]
struct Shared {
    gateway: Gateway,
    upstreams: HashMap<String, reqwest::Url>,
    /// The only upstream's name, also served at `/mcp`.
    single: Option<String>,
    client: reqwest::Client,
    sessions: Mutex<Sessions>,
    options: HttpOptions,
    /// `/mcp` with several upstreams: its sessions and the names it routes.
    aggregate: aggregate::Aggregate,
}

/// Serves the proxy on `listener` until `shutdown` resolves, then lets requests in flight
/// finish (for a bounded time) and drains the decision log.
pub async fn serve(
    gateway: Gateway,
    options: HttpOptions,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(std::io::Error::other)?;
    let upstreams: HashMap<String, reqwest::Url> = options
        .upstreams
        .iter()
        .map(|u| (u.name.clone(), u.url.clone()))
        .collect();
    let single = match options.upstreams.as_slice() {
        [one] => Some(one.name.clone()),
        _ => None,
    };
    let separator = aggregate::separator(&gateway);
    if single.is_none()
        && let Some(clash) = options
            .upstreams
            .iter()
            .find(|u| u.name.contains(separator.as_str()))
    {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "the upstream name `{}` holds the namespace separator `{separator}`, so the \
                 tools of /mcp could not be told apart: rename it, or set another \
                 `[mcp] namespace_separator`",
                clash.name
            ),
        ));
    }
    let shared = Arc::new(Shared {
        gateway,
        upstreams,
        single,
        client,
        sessions: Mutex::new(Sessions::new(options.max_sessions)),
        options: options.clone(),
        aggregate: aggregate::Aggregate::new(separator, options.max_sessions),
    });
    let router = axum::Router::new()
        .fallback(handle)
        .with_state(Arc::clone(&shared));
    let slots = Arc::new(tokio::sync::Semaphore::new(options.max_connections.max(1)));
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.request_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot,
            () = &mut shutdown => break,
        };
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection closed with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    drop(router);
    // Calls in flight finish; a server→client stream that never ends is cut.
    let grace = options.request_timeout.min(Duration::from_secs(10));
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the grace period; closing them");
    }
    match Arc::try_unwrap(shared) {
        Ok(shared) => shared.gateway.shutdown().await,
        Err(shared) => {
            if let Some(service) = shared.gateway.service() {
                service.drain().await;
            }
        }
    }
    Ok(())
}

/// Who calls, as a request says.
#[derive(Clone)]
struct Who {
    caller: Caller,
    owner: Owner,
}

/// Every request: the route, who calls, then by method.
async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let upstream = shared.route(parts.uri.path());
    let aggregate = upstream.is_none() && shared.aggregates(parts.uri.path());
    if upstream.is_none() && !aggregate {
        return rpc_error(
            StatusCode::NOT_FOUND,
            None,
            code::INVALID_REQUEST,
            &format!(
                "no MCP endpoint here: the proxy serves {}",
                shared.endpoints()
            ),
        );
    }
    if !same_origin(&parts.headers) {
        tracing::warn!("refused a request from another origin");
        return rpc_error(
            StatusCode::FORBIDDEN,
            None,
            code::INVALID_REQUEST,
            "a request from a web page of another origin is refused",
        );
    }
    let who = match shared.authenticate(&parts.headers) {
        Ok(who) => who,
        Err(response) => return *response,
    };
    let Some(upstream) = upstream else {
        return aggregate::handle(&shared, parts.method, &parts.headers, who, body).await;
    };
    let call = Call {
        shared: &shared,
        upstream,
        headers: &parts.headers,
        who,
    };
    match parts.method {
        Method::POST => call.post(body).await,
        Method::GET => call.get().await,
        Method::DELETE => call.delete().await,
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

impl Shared {
    /// The upstream a path names: `/mcp/<name>`, or `/mcp` when there is one.
    fn route(&self, path: &str) -> Option<(&str, &reqwest::Url)> {
        let path = path.strip_suffix('/').unwrap_or(path);
        let name = match path.strip_prefix("/mcp") {
            Some("") => self.single.as_deref()?,
            Some(rest) => rest.strip_prefix('/')?,
            None => return None,
        };
        self.upstreams
            .get_key_value(name)
            .map(|(n, u)| (n.as_str(), u))
    }

    /// Whether a path is `/mcp` of several upstreams, served by [`aggregate`].
    fn aggregates(&self, path: &str) -> bool {
        let path = path.strip_suffix('/').unwrap_or(path);
        path == "/mcp" && self.single.is_none() && self.upstreams.len() > 1
    }

    fn endpoints(&self) -> String {
        let mut names: Vec<String> = self.upstreams.keys().map(|n| format!("/mcp/{n}")).collect();
        names.sort();
        names.insert(0, "/mcp".to_owned());
        names.join(", ")
    }

    /// Who calls: the bearer token, verified now, or the configured principal when the
    /// request sends no `Authorization`.
    fn authenticate(&self, headers: &HeaderMap) -> Result<Who, Box<Response>> {
        let mut given = headers.get_all(header::AUTHORIZATION).iter();
        let (Some(value), None) = (given.next(), given.next()) else {
            if headers.contains_key(header::AUTHORIZATION) {
                return Err(Box::new(unauthorized(
                    "more than one Authorization header",
                    "invalid_request",
                )));
            }
            return match self.gateway.configured_caller() {
                Some(caller) => Ok(Who {
                    owner: Owner::of(caller, None),
                    caller: caller.clone(),
                }),
                None => Err(Box::new(unauthorized(
                    "send `Authorization: Bearer <arbiter token>` (`arbiter token issue`)",
                    "",
                ))),
            };
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            return Err(Box::new(unauthorized(
                "the Authorization header must be `Bearer <arbiter token>`",
                "invalid_request",
            )));
        };
        match self.gateway.credential(token) {
            Ok(credential) => {
                let caller = Caller::Verified {
                    principal: credential.principal,
                    token: token.to_owned(),
                    session: credential.session,
                };
                Ok(Who {
                    owner: Owner::of(&caller, Some(&credential.jti)),
                    caller,
                })
            }
            Err(failure) => Err(Box::new(unauthorized(
                &format!(
                    "the arbiter token does not verify: credential:{}",
                    failure.as_str()
                ),
                "invalid_token",
            ))),
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One request, routed and authenticated.
struct Call<'a> {
    shared: &'a Shared,
    upstream: (&'a str, &'a reqwest::Url),
    headers: &'a HeaderMap,
    who: Who,
}

/// What the proxy expects back from a forwarded request.
struct Expect {
    /// The id of the request, whose answer is owed to the client.
    id: Option<Id>,
    /// The answer is a tool list to filter with this gate.
    listing: Option<Gate>,
    revision: Revision,
    /// Bind the session id the answer gives (a session-based request without one).
    bind: bool,
}

impl Call<'_> {
    fn name(&self) -> &str {
        self.upstream.0
    }

    /// The client's session id, when it sends one (at most one).
    fn session_id(&self) -> Result<Option<&str>, Box<Response>> {
        session_header(self.headers)
    }

    /// The arbiter session of a request in `revision`: the bound MCP session's, or the
    /// identity's own. Refuses another identity's session, and one a `revoke` ended.
    fn arbiter_session(
        &self,
        revision: Revision,
        id: Option<&Id>,
    ) -> Result<String, Box<Response>> {
        let session = self.session_id()?;
        match (revision, session) {
            (Revision::Sessions, Some(session)) => {
                match self
                    .shared
                    .sessions()
                    .lookup(self.name(), session, &self.who.owner)
                {
                    Lookup::Bound(arbiter) => Ok(arbiter),
                    Lookup::Unknown => Ok(self.who.owner.session()),
                    Lookup::NotYours => Err(Box::new(rpc_error(
                        StatusCode::FORBIDDEN,
                        id,
                        code::INVALID_REQUEST,
                        "this MCP session was opened by another identity",
                    ))),
                    Lookup::Ended => Err(Box::new(rpc_error(
                        StatusCode::NOT_FOUND,
                        id,
                        code::INVALID_REQUEST,
                        "this MCP session was ended: the credential was revoked",
                    ))),
                }
            }
            _ => Ok(self.who.owner.session()),
        }
    }

    fn gate(&self, session: String) -> Gate {
        self.shared
            .gateway
            .gate_for(self.who.caller.clone(), session, self.name())
    }

    async fn post(self, body: Body) -> Response {
        let (bytes, message) = match read_message(self.shared, self.headers, body).await {
            Ok(read) => read,
            Err(response) => return *response,
        };
        match message {
            Message::Request { id, method, params } => {
                self.request(bytes, id, &method, params.as_ref()).await
            }
            // A notification, or the client's answer to a server's request: forwarded, on
            // the same terms of session as a request (another identity cannot cancel or
            // answer in a session it did not open).
            Message::Notification { method } => {
                let revision = routing::revision(self.headers, None);
                if let Err(why) = routing::check(self.headers, revision, &method, None) {
                    return mismatch(None, &why);
                }
                self.pass(bytes, revision).await
            }
            Message::Response { .. } => {
                let revision = routing::revision(self.headers, None);
                self.pass(bytes, revision).await
            }
        }
    }

    /// Forwards a message that expects no answer of its own.
    async fn pass(&self, bytes: Bytes, revision: Revision) -> Response {
        if let Err(response) = self.arbiter_session(revision, None) {
            return *response;
        }
        let expect = Expect {
            id: None,
            listing: None,
            revision,
            bind: false,
        };
        self.forward(Method::POST, Some(bytes), expect).await
    }

    async fn request(self, bytes: Bytes, id: Id, method: &str, params: Option<&Value>) -> Response {
        let revision = routing::revision(self.headers, params);
        if let Err(why) = routing::check(self.headers, revision, method, params) {
            tracing::warn!(why, "refused a request whose headers contradict its body");
            return mismatch(Some(&id), &why);
        }
        let session = match self.arbiter_session(revision, Some(&id)) {
            Ok(session) => session,
            Err(response) => return *response,
        };
        let session_id = match self.session_id() {
            Ok(session_id) => session_id,
            Err(response) => return *response,
        };
        let stateless = revision == Revision::Stateless;
        if matches!(method, "tools/call" | "resources/read" | "prompts/get") {
            let gate = self.gate(session.clone());
            let verdict = if method == "tools/call" {
                let check = self.pin_check(&gate, revision, params).await;
                gate.tools_call_pinned(params, &check).await
            } else {
                gate.read(method, params).await
            };
            match verdict {
                Verdict::Forward => {}
                Verdict::Answer(result) => {
                    return json_response(StatusCode::OK, &answer(&id, result, stateless));
                }
                Verdict::Fail {
                    code,
                    message,
                    data,
                } => {
                    return rpc_error_with_data(StatusCode::OK, Some(&id), code, &message, data);
                }
                Verdict::AnswerAndEnd(result) => {
                    self.end_session(revision, session_id);
                    return json_response(StatusCode::OK, &answer(&id, result, stateless));
                }
                Verdict::FailAndEnd {
                    code,
                    message,
                    data,
                } => {
                    self.end_session(revision, session_id);
                    return rpc_error_with_data(StatusCode::OK, Some(&id), code, &message, data);
                }
            }
        }
        let expect = Expect {
            id: Some(id),
            listing: (method == "tools/list").then(|| self.gate(session)),
            revision,
            bind: revision == Revision::Sessions && session_id.is_none(),
        };
        self.forward(Method::POST, Some(bytes), expect).await
    }

    /// What the pins of this upstream say of the tool a `tools/call` names: the server's
    /// tool list is read by the proxy itself, now, every page (its own `tools/list`, in the
    /// caller's MCP session and revision), and compared with the pins. Nothing is carried
    /// from one request to the next, so a server cannot show one list and serve another
    /// tool. A list that cannot be read leaves the tool uncompared: `unlisted`, refused.
    async fn pin_check(&self, gate: &Gate, revision: Revision, params: Option<&Value>) -> Check {
        let mut watch = gate.pin_watch();
        if !watch.active() {
            return Check::Unpinned;
        }
        let Some(tool) = params.and_then(|p| p.get("name")).and_then(Value::as_str) else {
            // Not a call the gate will decide: it refuses it as invalid.
            return Check::Unpinned;
        };
        let meta = params.and_then(|p| p.get("_meta")).cloned();
        let mut cursor: Option<String> = None;
        let mut cursors = std::collections::HashSet::new();
        for _ in 0..pins::MAX_PAGES {
            let mut list = serde_json::Map::new();
            if let Some(cursor) = &cursor {
                list.insert("cursor".to_owned(), json!(cursor));
            }
            if let Some(meta) = &meta {
                list.insert("_meta".to_owned(), meta.clone());
            }
            let list = Value::Object(list);
            let page = match self.own_listing(revision, list).await {
                Ok(page) => page,
                Err(why) => {
                    tracing::warn!(
                        upstream = self.name(),
                        why,
                        "the server's tool list could not be read"
                    );
                    return Check::Changed(vec![pins::field::UNLISTED]);
                }
            };
            let next = page
                .get("result")
                .and_then(|r| r.get("nextCursor"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            if page.get("result").is_none() {
                return Check::Changed(vec![pins::field::UNLISTED]);
            }
            watch.record_response(page.to_string().as_bytes());
            match next {
                None => {
                    return watch
                        .check(tool)
                        .unwrap_or_else(|| Check::Changed(vec![pins::field::UNLISTED]));
                }
                Some(next) if !cursors.insert(next.clone()) => {
                    return Check::Changed(vec![pins::field::UNLISTED]);
                }
                Some(next) => cursor = Some(next),
            }
        }
        Check::Changed(vec![pins::field::UNLISTED])
    }

    /// One page of the proxy's own `tools/list` to this upstream: the response message.
    async fn own_listing(&self, revision: Revision, params: Value) -> Result<Value, String> {
        let (_, url) = self.upstream;
        let body = json!({"jsonrpc": "2.0", "id": OWN_LISTING, "method": "tools/list",
                          "params": params});
        let mut request = self
            .shared
            .client
            .post(url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, text/event-stream")
            .body(body.to_string());
        for name in [SESSION_ID, "mcp-protocol-version"] {
            for value in self.headers.get_all(name) {
                request = request.header(name, value);
            }
        }
        if revision == Revision::Stateless {
            request = request.header("mcp-method", "tools/list");
        }
        let timeout = self.shared.options.upstream_timeout;
        let response = tokio::time::timeout(timeout, request.send())
            .await
            .map_err(|_| "the server did not answer in time".to_owned())?
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("the server answered {}", response.status()));
        }
        let stream = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.to_ascii_lowercase().starts_with("text/event-stream"));
        let max = self.shared.gateway.max_message_bytes();
        let bytes = read_bounded(response, max, timeout).await?;
        let is_ours = |message: &Value| message.get("id") == Some(&json!(OWN_LISTING));
        if !stream {
            let message = arbiter_core::json::from_slice(&bytes).map_err(|e| e.to_string())?;
            return if is_ours(&message) {
                Ok(message)
            } else {
                Err("the answer is not to the proxy's listing".to_owned())
            };
        }
        let mut parser = sse::Parser::new(max);
        let mut events = parser.push(&bytes);
        events.extend(parser.push(b"\n\n"));
        events
            .into_iter()
            .filter_map(|parsed| match parsed {
                sse::Parsed::Event(event) => event.data,
                sse::Parsed::TooLong => None,
            })
            .filter_map(|data| arbiter_core::json::from_slice(&data).ok())
            .find(is_ours)
            .ok_or_else(|| "the event stream held no answer to the proxy's listing".to_owned())
    }

    /// After a `revoke`: the MCP session is refused from now on, and the server is asked
    /// to end it.
    fn end_session(&self, revision: Revision, session_id: Option<&str>) {
        let Some(session_id) = session_id.filter(|_| revision == Revision::Sessions) else {
            return;
        };
        self.shared.sessions().end(self.name(), session_id);
        let request = self
            .shared
            .client
            .delete(self.upstream.1.clone())
            .header(SESSION_ID, session_id)
            .timeout(self.shared.options.upstream_timeout);
        let name = self.name().to_owned();
        tokio::spawn(async move {
            if let Err(e) = request.send().await {
                tracing::warn!(upstream = name, error = %e, "ending the revoked MCP session on the server");
            }
        });
        tracing::warn!(
            upstream = self.name(),
            "a revoke effect revoked the credential and ended the MCP session"
        );
    }

    /// The server→client stream of a session.
    async fn get(self) -> Response {
        let revision = routing::revision(self.headers, None);
        if let Err(response) = self.arbiter_session(revision, None) {
            return *response;
        }
        let expect = Expect {
            id: None,
            listing: None,
            revision,
            bind: false,
        };
        self.forward(Method::GET, None, expect).await
    }

    /// The end of a session: forwarded, and its binding forgotten.
    async fn delete(self) -> Response {
        let revision = routing::revision(self.headers, None);
        match self.arbiter_session(revision, None) {
            Ok(_) => {}
            // An ended session may still be deleted on the server.
            Err(response) if response.status() == StatusCode::NOT_FOUND => {}
            Err(response) => return *response,
        }
        let session_id = match self.session_id() {
            Ok(session_id) => session_id.map(str::to_owned),
            Err(response) => return *response,
        };
        let expect = Expect {
            id: None,
            listing: None,
            revision,
            bind: false,
        };
        let response = self.forward(Method::DELETE, None, expect).await;
        if let Some(session_id) = session_id {
            self.shared.sessions().forget(self.name(), &session_id);
        }
        response
    }

    /// Sends the request on, and reads the answer back to the client.
    async fn forward(&self, method: Method, body: Option<Bytes>, expect: Expect) -> Response {
        let (name, url) = self.upstream;
        let mut request = self.shared.client.request(method, url.clone());
        for header in FORWARDED {
            for value in self.headers.get_all(header) {
                request = request.header(header, value);
            }
        }
        for (header, value) in self.headers {
            if header.as_str().starts_with("mcp-param-") {
                request = request.header(header, value);
            }
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let timeout = self.shared.options.upstream_timeout;
        let response = match tokio::time::timeout(timeout, request.send()).await {
            Err(_) => {
                tracing::warn!(upstream = name, "the MCP server did not answer in time");
                return rpc_error(
                    StatusCode::GATEWAY_TIMEOUT,
                    expect.id.as_ref(),
                    code::INTERNAL_ERROR,
                    &format!("the MCP server `{name}` did not answer in time"),
                );
            }
            Ok(Err(e)) => {
                tracing::warn!(upstream = name, error = %e, "the MCP server cannot be reached");
                return upstream_failed(expect.id.as_ref(), name);
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if matches!(
            status,
            StatusCode::UNAUTHORIZED
                | StatusCode::FORBIDDEN
                | StatusCode::PROXY_AUTHENTICATION_REQUIRED
        ) {
            tracing::warn!(upstream = name, %status, "the MCP server refused the proxy");
            return rpc_error(
                StatusCode::BAD_GATEWAY,
                expect.id.as_ref(),
                code::INTERNAL_ERROR,
                &format!("the MCP server `{name}` refused the proxy's request ({status})"),
            );
        }
        if expect.bind
            && status.is_success()
            && let Some(session) = response
                .headers()
                .get(SESSION_ID)
                .and_then(|v| v.to_str().ok())
        {
            let arbiter = self.shared.gateway.new_session();
            tracing::info!(upstream = name, session = arbiter, "MCP session started");
            self.shared
                .sessions()
                .bind(name, session, self.who.owner.clone(), arbiter);
        }
        let mut headers = HeaderMap::new();
        for header in RETURNED {
            for value in response.headers().get_all(header) {
                headers.append(HeaderName::from_static(header), value.clone());
            }
        }
        if expect.listing.is_some() {
            // The list is this caller's: no cache may serve it to another.
            headers.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, no-store"),
            );
        }
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        if content_type.starts_with("text/event-stream") {
            let body = stream_events(response, expect, self.shared, name);
            return with_headers(status, headers, body);
        }
        let max = self.shared.gateway.max_message_bytes();
        let bytes = match read_bounded(response, max, timeout).await {
            Ok(bytes) => bytes,
            Err(why) => {
                tracing::warn!(upstream = name, why, "reading the MCP server's answer");
                return upstream_failed(expect.id.as_ref(), name);
            }
        };
        if !status.is_success() || bytes.is_empty() || expect.id.is_none() {
            return with_headers(status, headers, Body::from(bytes));
        }
        // A JSON answer to a request: read strictly, the answer to that request only.
        match jsonrpc::read(&bytes) {
            Ok(Message::Response { id: Some(id) }) if Some(&id) == expect.id.as_ref() => {
                let out = match &expect.listing {
                    Some(gate) => list_for(gate, &bytes, expect.revision).unwrap_or(bytes),
                    None => bytes,
                };
                with_headers(status, headers, Body::from(out))
            }
            Ok(_) => {
                tracing::warn!(
                    upstream = name,
                    "dropped an answer from the MCP server that does not answer the request"
                );
                upstream_failed(expect.id.as_ref(), name)
            }
            Err(refused) => {
                tracing::warn!(upstream = name, why = %refused, "dropped a malformed answer from the MCP server");
                upstream_failed(expect.id.as_ref(), name)
            }
        }
    }
}

/// A POSTed message, read strictly: JSON, at most the message limit, within the request
/// timeout; a refusal is the answer to send.
async fn read_message(
    shared: &Shared,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Bytes, Message), Box<Response>> {
    if !is_json(headers) {
        return Err(Box::new(rpc_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            None,
            code::INVALID_REQUEST,
            "a message is POSTed with one Content-Type: application/json",
        )));
    }
    let max = shared.gateway.max_message_bytes();
    let bytes = match tokio::time::timeout(
        shared.options.request_timeout,
        axum::body::to_bytes(body, max),
    )
    .await
    {
        Err(_) => {
            return Err(Box::new(rpc_error(
                StatusCode::REQUEST_TIMEOUT,
                None,
                code::INVALID_REQUEST,
                "the request body was not sent in time",
            )));
        }
        Ok(Err(e)) => {
            let too_long = e
                .into_inner()
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            return Err(Box::new(if too_long {
                tracing::warn!(limit = max, "refused a message over the size limit");
                rpc_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    None,
                    code::INVALID_REQUEST,
                    &format!(
                        "the message is larger than {max} bytes, the proxy's limit; it was dropped"
                    ),
                )
            } else {
                rpc_error(
                    StatusCode::BAD_REQUEST,
                    None,
                    code::INVALID_REQUEST,
                    "the request body could not be read",
                )
            }));
        }
        Ok(Ok(bytes)) => bytes,
    };
    let message = match jsonrpc::read(&bytes) {
        Ok(message) => message,
        Err(refused) => {
            tracing::warn!(why = %refused, "refused a message from the agent");
            let (id, code) = match &refused {
                Refused::Parse(_) => (None, code::PARSE_ERROR),
                Refused::Batch => (None, code::INVALID_REQUEST),
                Refused::Invalid { id, .. } => (id.as_ref(), code::INVALID_REQUEST),
            };
            return Err(Box::new(rpc_error(
                StatusCode::BAD_REQUEST,
                id,
                code,
                &refused.to_string(),
            )));
        }
    };
    Ok((bytes, message))
}

/// The `Mcp-Session-Id` a request sends: none, or one non-empty visible-ASCII value;
/// two, or one that is not text, are refused.
fn session_header(headers: &HeaderMap) -> Result<Option<&str>, Box<Response>> {
    let mut given = headers.get_all(SESSION_ID).iter();
    match (given.next(), given.next()) {
        (None, _) => Ok(None),
        (Some(value), None) => match value.to_str() {
            Ok(id) if !id.is_empty() => Ok(Some(id)),
            _ => Err(Box::new(rpc_error(
                StatusCode::BAD_REQUEST,
                None,
                code::INVALID_REQUEST,
                "the Mcp-Session-Id header is not visible ASCII",
            ))),
        },
        (Some(_), Some(_)) => Err(Box::new(rpc_error(
            StatusCode::BAD_REQUEST,
            None,
            code::INVALID_REQUEST,
            "the Mcp-Session-Id header is given more than once",
        ))),
    }
}

/// A tool list as this caller may see it: without the tools it can never call, and never
/// cacheable across identities (`cacheScope` "private", set when the stateless revision's
/// list was filtered or when it said "public"). `None` when nothing changes.
fn list_for(gate: &Gate, bytes: &[u8], revision: Revision) -> Option<Bytes> {
    let filtered = gate.filter_tool_list(bytes);
    // A pinned upstream's changed tools stay listed, marked.
    let mut watch = gate.pin_watch();
    let filtered = watch
        .record_response(filtered.as_deref().unwrap_or(bytes))
        .or(filtered);
    let mut value = arbiter_core::json::from_slice(filtered.as_deref().unwrap_or(bytes)).ok()?;
    let public = value
        .get("result")
        .and_then(|r| r.get("cacheScope"))
        .is_some_and(|s| s != "private");
    if (public || (revision == Revision::Stateless && filtered.is_some()))
        && let Some(result) = value.get_mut("result").and_then(Value::as_object_mut)
    {
        result.insert("cacheScope".to_owned(), json!("private"));
        return Some(Bytes::from(value.to_string()));
    }
    filtered.map(|f| Bytes::from(trim_newline(f)))
}

fn trim_newline(mut bytes: Vec<u8>) -> Vec<u8> {
    while bytes.last() == Some(&b'\n') {
        bytes.pop();
    }
    bytes
}

/// Reads a whole answer, at most `max` bytes, each chunk within `timeout`.
async fn read_bounded(
    mut response: reqwest::Response,
    max: usize,
    timeout: Duration,
) -> Result<Bytes, String> {
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(timeout, response.chunk()).await {
            Err(_) => return Err("the answer stalled".to_owned()),
            Ok(Err(e)) => return Err(e.to_string()),
            Ok(Ok(None)) => return Ok(Bytes::from(out)),
            Ok(Ok(Some(chunk))) => {
                if out.len() + chunk.len() > max {
                    return Err(format!("the answer is larger than {max} bytes"));
                }
                out.extend_from_slice(&chunk);
            }
        }
    }
}

/// An event stream passed on as it arrives, each event read as a JSON-RPC message.
fn stream_events(
    mut response: reqwest::Response,
    expect: Expect,
    shared: &Shared,
    name: &str,
) -> Body {
    let (events, mut incoming) = mpsc::channel::<Bytes>(16);
    let max = shared.gateway.max_message_bytes();
    let timeout = shared.options.upstream_timeout;
    let name = name.to_owned();
    tokio::spawn(async move {
        let mut parser = sse::Parser::new(max);
        let mut answered = false;
        loop {
            let chunk = match tokio::time::timeout(timeout, response.chunk()).await {
                Ok(Ok(Some(chunk))) => chunk,
                Ok(Ok(None)) => break,
                Ok(Err(e)) => {
                    tracing::warn!(upstream = name, error = %e, "the MCP server's stream broke");
                    owe_error(&events, &expect, answered, &name).await;
                    break;
                }
                Err(_) => {
                    tracing::warn!(upstream = name, "the MCP server's stream stalled");
                    owe_error(&events, &expect, answered, &name).await;
                    break;
                }
            };
            for parsed in parser.push(&chunk) {
                let Some(out) = pass_event(parsed, &expect, &mut answered, &name) else {
                    continue;
                };
                if events.send(Bytes::from(out)).await.is_err() {
                    // The client went away: so does the stream from the server.
                    return;
                }
            }
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| {
        incoming
            .poll_recv(cx)
            .map(|b| b.map(Ok::<_, std::convert::Infallible>))
    });
    Body::from_stream(stream)
}

/// One event from the server: passed as it came, filtered (a tool list), or dropped.
fn pass_event(
    parsed: sse::Parsed,
    expect: &Expect,
    answered: &mut bool,
    name: &str,
) -> Option<Vec<u8>> {
    let event = match parsed {
        sse::Parsed::Event(event) => event,
        sse::Parsed::TooLong => {
            tracing::warn!(
                upstream = name,
                "dropped an event from the MCP server larger than the limit"
            );
            return None;
        }
    };
    let Some(data) = &event.data else {
        // A comment, a keep-alive, a retry or an id alone.
        return Some(event.as_is());
    };
    match jsonrpc::read(data) {
        Err(refused) => {
            tracing::warn!(upstream = name, why = %refused, "dropped a malformed event from the MCP server");
            None
        }
        Ok(Message::Response { id: Some(id) }) if !*answered && Some(&id) == expect.id.as_ref() => {
            *answered = true;
            match &expect.listing {
                Some(gate) => match list_for(gate, data, expect.revision) {
                    Some(list) => Some(event.with_data(&list)),
                    None => Some(event.as_is()),
                },
                None => Some(event.as_is()),
            }
        }
        Ok(Message::Response { .. }) => {
            tracing::warn!(
                upstream = name,
                "dropped a response from the MCP server to a request the proxy never sent"
            );
            None
        }
        Ok(Message::Request { .. } | Message::Notification { .. }) => Some(event.as_is()),
    }
}

/// When a stream breaks before the request it answers was answered, the client is told.
async fn owe_error(events: &mpsc::Sender<Bytes>, expect: &Expect, answered: bool, name: &str) {
    if answered {
        return;
    }
    let Some(id) = &expect.id else { return };
    let error = jsonrpc::error(
        Some(id),
        code::INTERNAL_ERROR,
        &format!("the MCP server `{name}` closed before answering"),
    );
    let mut event = b"event: message\ndata: ".to_vec();
    event.extend_from_slice(&trim_newline(error));
    event.extend_from_slice(b"\n\n");
    let _ = events.send(Bytes::from(event)).await;
}

/// The answer to a call the proxy answers itself; in the stateless revision a result
/// says what kind it is.
fn answer(id: &Id, mut result: Value, stateless: bool) -> Vec<u8> {
    if stateless && let Some(object) = result.as_object_mut() {
        object.insert("resultType".to_owned(), json!("complete"));
    }
    trim_newline(jsonrpc::result(id, result))
}

/// Whether a browser's request comes from the proxy's own origin or a loopback one (MCP
/// requires servers to check `Origin`: a web page must not reach the proxy by rebinding a
/// name to it). A request without `Origin` is not a browser's cross-origin request.
fn same_origin(headers: &HeaderMap) -> bool {
    let mut given = headers.get_all(header::ORIGIN).iter();
    let origin = match (given.next(), given.next()) {
        (None, _) => return true,
        (Some(origin), None) => origin,
        (Some(_), Some(_)) => return false,
    };
    let Some(origin) = origin
        .to_str()
        .ok()
        .and_then(|o| reqwest::Url::parse(o).ok())
    else {
        return false;
    };
    let Some(host) = origin.host_str() else {
        return false;
    };
    if matches!(host, "localhost" | "127.0.0.1" | "[::1]") {
        return true;
    }
    let authority = match origin.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| h.eq_ignore_ascii_case(&authority))
}

/// Exactly one `Content-Type`, and it is JSON.
fn is_json(headers: &HeaderMap) -> bool {
    let mut given = headers.get_all(header::CONTENT_TYPE).iter();
    let (Some(value), None) = (given.next(), given.next()) else {
        return false;
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

fn with_headers(status: StatusCode, headers: HeaderMap, body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

fn json_response(status: StatusCode, body: &[u8]) -> Response {
    let mut response = (status, body.to_vec()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A JSON-RPC error as an HTTP answer.
fn rpc_error(status: StatusCode, id: Option<&Id>, code: i64, message: &str) -> Response {
    rpc_error_with_data(status, id, code, message, None)
}

fn rpc_error_with_data(
    status: StatusCode,
    id: Option<&Id>,
    code: i64,
    message: &str,
    data: Option<Value>,
) -> Response {
    json_response(
        status,
        &trim_newline(jsonrpc::error_with_data(id, code, message, data)),
    )
}

/// A request whose headers contradict its body: refused, never forwarded.
fn mismatch(id: Option<&Id>, why: &str) -> Response {
    rpc_error(StatusCode::BAD_REQUEST, id, routing::HEADER_MISMATCH, why)
}

fn upstream_failed(id: Option<&Id>, name: &str) -> Response {
    rpc_error(
        StatusCode::BAD_GATEWAY,
        id,
        code::INTERNAL_ERROR,
        &format!("the MCP server `{name}` failed to answer"),
    )
}

/// 401, with the challenge.
fn unauthorized(why: &str, error: &str) -> Response {
    let mut response = rpc_error(StatusCode::UNAUTHORIZED, None, UNAUTHORIZED, why);
    let challenge = if error.is_empty() {
        "Bearer realm=\"arbiter\"".to_owned()
    } else {
        format!("Bearer realm=\"arbiter\", error=\"{error}\"")
    };
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// The JSON-RPC error of a request that does not say who calls (implementation-defined,
/// outside MCP's reserved range).
pub const UNAUTHORIZED: i64 = -32001;

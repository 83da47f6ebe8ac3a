//! The message pump of one MCP session: the agent on one side, the server on the other,
//! one JSON-RPC message a line each way. Every message is read strictly before it is
//! forwarded, as the bytes it came as; `tools/call` goes through the [`Gate`] first, and
//! the answer to `tools/list` loses the tools the caller can never call.
//!
//! When the upstream has pins ([`crate::pins`]), each tool list it sends is compared with
//! them and changed tools are marked, and a `tools/call` of a tool the session has not
//! seen listed waits while the proxy lists the tools itself (a `tools/list` with an id of
//! its own, `arbiter-pins-<n>`, which the agent cannot use while it is in flight, its
//! pages followed and its answer kept from the agent).
//!
//! What the proxy keeps is the ids in flight each way, so that a response reaches only
//! the peer that asked: a response to an id nobody sent is dropped, and when the server
//! goes away every call still waiting is answered with an error. Malformed input, an
//! oversized message or a batch from the agent is answered with a JSON-RPC error and
//! never forwarded; from the server it is dropped and logged. Nothing here panics on
//! what a peer sends.

use std::collections::HashSet;
use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use serde_json::Value;

use crate::gate::{Gate, Verdict};
use crate::jsonrpc::{self, Id, Line, Message, Refused, code};
use crate::pins::{Check, Fetched, Watch, field};

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The agent closed its end: the normal end.
    ClientClosed,
    /// The server closed its end (it exited or crashed); the calls still waiting were
    /// answered with errors.
    UpstreamClosed,
    /// An enforced `revoke` revoked the credential and ended the session.
    Revoked,
}

/// Which side a line came from.
#[derive(Debug)]
enum Event {
    Client(io::Result<Line>),
    Upstream(io::Result<Line>),
}

/// How many lines each reader may read ahead of the pump.
const READ_AHEAD: usize = 16;

/// How long answers still owed to the agent are waited for once it closed its input.
const DRAIN: Duration = Duration::from_secs(5);

/// Runs one session until a side closes or a `revoke` ends it. `client_in`/`client_out`
/// are the agent's messages and the answers to it; `upstream_out`/`upstream_in` the
/// server's messages and what is sent to it.
pub async fn run<CR, CW, UR, UW>(
    gate: &Gate,
    max_message_bytes: usize,
    client_in: CR,
    client_out: CW,
    upstream_out: UR,
    upstream_in: UW,
) -> Ended
where
    CR: AsyncRead + Unpin + Send + 'static,
    CW: AsyncWrite + Unpin,
    UR: AsyncRead + Unpin + Send + 'static,
    UW: AsyncWrite + Unpin,
{
    let (events, mut incoming) = mpsc::channel(READ_AHEAD);
    let readers = [
        tokio::spawn(read_lines(
            client_in,
            max_message_bytes,
            events.clone(),
            Event::Client,
        )),
        tokio::spawn(read_lines(
            upstream_out,
            max_message_bytes,
            events,
            Event::Upstream,
        )),
    ];
    let mut pump = Pump {
        gate,
        max_message_bytes,
        client: client_out,
        upstream: upstream_in,
        awaiting_upstream: HashSet::new(),
        awaiting_client: HashSet::new(),
        listing: HashSet::new(),
        pins: gate.pin_watch(),
        parked: Vec::new(),
    };
    // Once the agent has closed its input, the answers it is still owed are delivered
    // (it may still be reading), for at most `DRAIN`.
    let mut input_closed = false;
    // Whether the server's input is closed yet: not while the proxy's own listing is under
    // way, so that the calls waiting for it can still be forwarded.
    let mut upstream_closed = false;
    let ended = loop {
        let event = if input_closed {
            match tokio::time::timeout(DRAIN, incoming.recv()).await {
                Ok(event) => event,
                Err(_) => break Ended::ClientClosed,
            }
        } else {
            incoming.recv().await
        };
        let step = match event {
            Some(Event::Client(line)) => pump.on_client(line).await,
            Some(Event::Upstream(line)) => pump.on_upstream(line).await,
            // Both readers gone without saying so: each reports its end first, so this
            // cannot happen; it would mean nobody is left to talk to.
            None => Step::End(Ended::ClientClosed),
        };
        match step {
            Step::Continue => {}
            Step::InputClosed => input_closed = true,
            // After the agent's input closed, the server's exit is the normal end, unless
            // it leaves calls unanswered.
            Step::End(Ended::UpstreamClosed)
                if input_closed && pump.awaiting_upstream.is_empty() =>
            {
                break Ended::ClientClosed;
            }
            Step::End(ended) => break ended,
        }
        if input_closed && !upstream_closed && !pump.pins.fetching() {
            // The server reads the end of its input as the end of the session.
            let _ = pump.upstream.shutdown().await;
            upstream_closed = true;
        }
        if input_closed && pump.awaiting_upstream.is_empty() {
            break Ended::ClientClosed;
        }
    };
    if ended != Ended::ClientClosed {
        pump.answer_waiting(match ended {
            Ended::Revoked => "the session was ended: the credential was revoked",
            _ => "the MCP server closed before answering",
        })
        .await;
    }
    let _ = pump.upstream.shutdown().await;
    let _ = pump.client.flush().await;
    for reader in readers {
        reader.abort();
    }
    ended
}

/// Reads lines until the end or an error, and reports each one.
async fn read_lines<R: AsyncRead + Unpin>(
    reader: R,
    max: usize,
    events: mpsc::Sender<Event>,
    wrap: fn(io::Result<Line>) -> Event,
) {
    let mut reader = BufReader::new(reader);
    loop {
        let line = jsonrpc::read_line(&mut reader, max).await;
        let last = !matches!(line, Ok(Line::Message(_) | Line::TooLong));
        if events.send(wrap(line)).await.is_err() || last {
            return;
        }
    }
}

/// What the pump does after a message.
#[derive(Debug)]
enum Step {
    Continue,
    /// The agent closed its input; it may still read what it is owed.
    InputClosed,
    End(Ended),
}

struct Pump<'g, CW, UW> {
    gate: &'g Gate,
    max_message_bytes: usize,
    client: CW,
    upstream: UW,
    /// Ids of the agent's requests the server has not answered yet.
    awaiting_upstream: HashSet<Id>,
    /// Ids of the server's requests the agent has not answered yet.
    awaiting_client: HashSet<Id>,
    /// Ids of the agent's `tools/list` requests waiting for their answer, to be filtered.
    listing: HashSet<Id>,
    /// The upstream's tools compared with its pins.
    pins: Watch,
    /// Calls of a pinned upstream's tools waiting for the proxy's own listing; their ids
    /// are in `awaiting_upstream`, so they are answered if the server goes away.
    parked: Vec<Parked>,
}

/// A `tools/call` waiting for the tool list.
struct Parked {
    id: Id,
    bytes: Vec<u8>,
    params: Option<Value>,
}

/// The tool a call names, when it names one.
fn tool_name(params: Option<&Value>) -> Option<&str> {
    params?.get("name")?.as_str()
}

impl<CW: AsyncWrite + Unpin, UW: AsyncWrite + Unpin> Pump<'_, CW, UW> {
    async fn on_client(&mut self, line: io::Result<Line>) -> Step {
        let bytes = match line {
            Ok(Line::Message(bytes)) => bytes,
            Ok(Line::Closed) => return Step::InputClosed,
            Err(e) => {
                tracing::warn!(error = %e, "reading from the agent failed; ending the session");
                return Step::End(Ended::ClientClosed);
            }
            Ok(Line::TooLong) => {
                let why = format!(
                    "the message is larger than {} bytes, the proxy's limit; it was dropped",
                    self.max_message_bytes
                );
                tracing::warn!("{why}");
                return self
                    .send_client(&jsonrpc::error(None, code::INVALID_REQUEST, &why))
                    .await;
            }
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
                let answer = jsonrpc::error(id, code, &refused.to_string());
                return self.send_client(&answer).await;
            }
        };
        match message {
            Message::Request { id, method, params } => {
                if self.awaiting_upstream.contains(&id) || self.pins.owns(&id) {
                    let why = format!("id {id} is already used by a request not answered yet");
                    return self
                        .send_client(&jsonrpc::error(Some(&id), code::INVALID_REQUEST, &why))
                        .await;
                }
                if method == "tools/list" {
                    self.listing.insert(id.clone());
                }
                let verdict = match method.as_str() {
                    "tools/call" => {
                        let check = match tool_name(params.as_ref()).map(|t| self.pins.check(t)) {
                            None => Check::Unpinned,
                            Some(Some(check)) => check,
                            // A pinned upstream's tool this session has not seen listed.
                            Some(None) => return self.park(id, bytes, params).await,
                        };
                        self.gate.tools_call_pinned(params.as_ref(), &check).await
                    }
                    "resources/read" | "prompts/get" => {
                        self.gate.read(&method, params.as_ref()).await
                    }
                    _ => Verdict::Forward,
                };
                self.apply(id, &bytes, verdict).await
            }
            Message::Notification { .. } => self.send_upstream(&bytes).await,
            Message::Response { id: Some(id) } if self.awaiting_client.remove(&id) => {
                self.send_upstream(&bytes).await
            }
            Message::Response { id } => {
                tracing::warn!(
                    id = %id.map_or_else(|| "null".to_owned(), |id| id.to_string()),
                    "dropped a response from the agent to a request the server never sent"
                );
                Step::Continue
            }
        }
    }

    async fn on_upstream(&mut self, line: io::Result<Line>) -> Step {
        let bytes = match line {
            Ok(Line::Message(bytes)) => bytes,
            Ok(Line::Closed) => return Step::End(Ended::UpstreamClosed),
            Err(e) => {
                tracing::warn!(error = %e, "reading from the MCP server failed");
                return Step::End(Ended::UpstreamClosed);
            }
            Ok(Line::TooLong) => {
                tracing::warn!(
                    limit = self.max_message_bytes,
                    "dropped a message from the MCP server larger than the limit"
                );
                return Step::Continue;
            }
        };
        match jsonrpc::read(&bytes) {
            Err(refused) => {
                tracing::warn!(why = %refused, "dropped a message from the MCP server");
                Step::Continue
            }
            Ok(Message::Request { id, .. }) => {
                self.awaiting_client.insert(id);
                self.send_client(&with_newline(&bytes)).await
            }
            Ok(Message::Notification { method }) => {
                if method == "notifications/tools/list_changed" {
                    self.pins.forget();
                }
                self.send_client(&with_newline(&bytes)).await
            }
            Ok(Message::Response { id: Some(id) }) if self.pins.owns(&id) => {
                self.on_fetched(&bytes).await
            }
            Ok(Message::Response { id: Some(id) }) if self.awaiting_upstream.remove(&id) => {
                let edited = if self.listing.remove(&id) {
                    // Compared (and marked) first, with every tool in it; then filtered.
                    let marked = self.pins.record_response(&bytes);
                    let listed = marked.as_deref().unwrap_or(&bytes);
                    self.gate.filter_tool_list(listed).or(marked)
                } else {
                    None
                };
                let line = edited.unwrap_or_else(|| with_newline(&bytes));
                self.send_client(&line).await
            }
            Ok(Message::Response { id }) => {
                tracing::warn!(
                    id = %id.map_or_else(|| "null".to_owned(), |id| id.to_string()),
                    "dropped a response from the MCP server to a request the proxy never sent"
                );
                Step::Continue
            }
        }
    }

    /// Does what the gate said of a request.
    async fn apply(&mut self, id: Id, bytes: &[u8], verdict: Verdict) -> Step {
        let end = verdict.ends_session();
        let answer = match verdict {
            Verdict::Forward => return self.request_upstream(id, bytes).await,
            Verdict::Answer(result) | Verdict::AnswerAndEnd(result) => jsonrpc::result(&id, result),
            Verdict::Fail {
                code,
                message,
                data,
            }
            | Verdict::FailAndEnd {
                code,
                message,
                data,
            } => jsonrpc::error_with_data(Some(&id), code, &message, data),
        };
        let step = self.send_client(&answer).await;
        if end { Step::End(Ended::Revoked) } else { step }
    }

    /// Holds a call until the proxy has listed the tools itself, and starts that listing
    /// unless it is under way.
    async fn park(&mut self, id: Id, bytes: Vec<u8>, params: Option<Value>) -> Step {
        self.awaiting_upstream.insert(id.clone());
        self.parked.push(Parked { id, bytes, params });
        if self.pins.fetching() {
            return Step::Continue;
        }
        let awaiting = &self.awaiting_upstream;
        let request = self.pins.start_fetch(|id| awaiting.contains(id));
        tracing::debug!("listing the upstream's tools to compare them with their pins");
        self.send_upstream(&request).await
    }

    /// A page of the proxy's own listing: the next one is asked for, or the calls waiting
    /// for the list are checked and decided.
    async fn on_fetched(&mut self, bytes: &[u8]) -> Step {
        let failed = match self.pins.fetched(bytes) {
            Fetched::Next(request) => return self.send_upstream(&request).await,
            Fetched::Done => false,
            Fetched::Failed(why) => {
                tracing::warn!(why, "the upstream's tool list could not be read");
                true
            }
        };
        for call in std::mem::take(&mut self.parked) {
            self.awaiting_upstream.remove(&call.id);
            let check = match tool_name(call.params.as_ref()).and_then(|t| self.pins.check(t)) {
                Some(check) if !failed => check,
                // The list could not be read: the tool cannot be compared.
                _ => Check::Changed(vec![field::UNLISTED]),
            };
            let verdict = self
                .gate
                .tools_call_pinned(call.params.as_ref(), &check)
                .await;
            if let Step::End(ended) = self.apply(call.id, &call.bytes, verdict).await {
                return Step::End(ended);
            }
        }
        Step::Continue
    }

    /// Forwards an agent's request, remembering its id for the response.
    async fn request_upstream(&mut self, id: Id, bytes: &[u8]) -> Step {
        self.awaiting_upstream.insert(id);
        self.send_upstream(bytes).await
    }

    async fn send_upstream(&mut self, bytes: &[u8]) -> Step {
        match send(&mut self.upstream, &with_newline(bytes)).await {
            Ok(()) => Step::Continue,
            Err(e) => {
                tracing::warn!(error = %e, "writing to the MCP server failed");
                Step::End(Ended::UpstreamClosed)
            }
        }
    }

    async fn send_client(&mut self, line: &[u8]) -> Step {
        match send(&mut self.client, line).await {
            Ok(()) => Step::Continue,
            Err(e) => {
                tracing::warn!(error = %e, "writing to the agent failed; ending the session");
                Step::End(Ended::ClientClosed)
            }
        }
    }

    /// Answers every request the server will no longer answer.
    async fn answer_waiting(&mut self, why: &str) {
        let mut waiting: Vec<Id> = self.awaiting_upstream.drain().collect();
        waiting.sort_by_key(ToString::to_string);
        for id in waiting {
            let answer = jsonrpc::error(Some(&id), code::INTERNAL_ERROR, why);
            if send(&mut self.client, &answer).await.is_err() {
                return;
            }
        }
    }
}

fn with_newline(bytes: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(bytes.len() + 1);
    line.extend_from_slice(bytes);
    line.push(b'\n');
    line
}

async fn send<W: AsyncWrite + Unpin>(writer: &mut W, line: &[u8]) -> io::Result<()> {
    writer.write_all(line).await?;
    writer.flush().await
}

//! arbiter as an MCP client of one server, for `arbiter mcp-proxy pin`: the handshake a
//! client does (`initialize`, then `notifications/initialized`) and one request at a time,
//! over any [`Exchange`]. [`Lines`] is the exchange over a pair of streams, one JSON-RPC
//! message a line (the stdio transport); another transport implements [`Exchange`] and
//! gets the rest for free.

use std::ffi::OsString;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::jsonrpc::{self, Id, Line, Message, code};
use crate::pins::{Exchange, Pins, ToolList};

/// The protocol revisions arbiter's client offers and accepts, newest first: those whose
/// handshake is `initialize`.
pub const PROTOCOL_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];

/// How long one answer is waited for.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(60);

/// Initializes a session with the server: the newest revision is offered, and the server's
/// must be one of [`PROTOCOL_VERSIONS`]. Returns the server's name, as it gives it.
pub async fn initialize<E: Exchange>(exchange: &mut E) -> Result<String, String> {
    let params = json!({
        "protocolVersion": PROTOCOL_VERSIONS.first().copied().unwrap_or_default(),
        "capabilities": {},
        "clientInfo": {"name": "arbiter", "version": env!("CARGO_PKG_VERSION")},
    });
    let result = exchange.request("initialize", params).await?;
    let version = result
        .get("protocolVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !PROTOCOL_VERSIONS.contains(&version) {
        return Err(format!(
            "the server answered `initialize` with protocol revision {}, which arbiter does not \
             speak (it speaks {})",
            Value::String(version.to_owned()),
            PROTOCOL_VERSIONS.join(", ")
        ));
    }
    exchange
        .notify("notifications/initialized", json!({}))
        .await?;
    Ok(result
        .get("serverInfo")
        .and_then(|i| i.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("an unnamed server")
        .to_owned())
}

/// Initializes a session, reads the whole tool list and returns its pins.
pub async fn pin_tools<E: Exchange>(exchange: &mut E) -> Result<Pins, String> {
    initialize(exchange).await?;
    ToolList::fetch(exchange).await?.pins()
}

/// Starts `command` as a stdio MCP server (its standard error passed through), pins its
/// tools as [`pin_tools`] does, then closes its input and lets it exit (it is killed if it
/// has not within 5 s).
pub async fn pin_stdio(command: &[OsString], max_message_bytes: usize) -> Result<Pins, String> {
    let Some((program, args)) = command.split_first() else {
        return Err("no MCP server command was given".to_owned());
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            format!(
                "cannot start the MCP server `{}`: {e}",
                program.to_string_lossy()
            )
        })?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err("the MCP server's pipes were not opened".to_owned());
    };
    let mut client = Lines::new(BufReader::new(stdout), stdin, max_message_bytes);
    let pinned = pin_tools(&mut client).await;
    client.close().await;
    drop(client);
    if tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
    pinned
}

/// A JSON-RPC client over a pair of streams, one message a line: what the server writes,
/// and what it reads. A request the server makes meanwhile is answered (`ping` with an
/// empty result, anything else with "method not found"); its notifications are ignored.
#[derive(Debug)]
pub struct Lines<R, W> {
    reader: R,
    writer: W,
    max_message_bytes: usize,
    next_id: i64,
}

impl<R: AsyncBufRead + Unpin + Send, W: AsyncWrite + Unpin + Send> Lines<R, W> {
    /// A client reading the server's messages from `reader` and writing to `writer`.
    pub fn new(reader: R, writer: W, max_message_bytes: usize) -> Lines<R, W> {
        Lines {
            reader,
            writer,
            max_message_bytes,
            next_id: 0,
        }
    }

    /// Closes the server's input: the end of the session, for a stdio server.
    pub async fn close(&mut self) {
        let _ = self.writer.shutdown().await;
    }

    async fn send(&mut self, message: &Value) -> Result<(), String> {
        let mut line = message.to_string().into_bytes();
        line.push(b'\n');
        self.writer
            .write_all(&line)
            .await
            .and(self.writer.flush().await)
            .map_err(|e| format!("writing to the server failed: {e}"))
    }

    async fn answer(&mut self, id: Id) -> Result<Value, String> {
        loop {
            let line = jsonrpc::read_line(&mut self.reader, self.max_message_bytes)
                .await
                .map_err(|e| format!("reading from the server failed: {e}"))?;
            let bytes = match line {
                Line::Message(bytes) => bytes,
                Line::Closed => return Err("the server closed before answering".to_owned()),
                Line::TooLong => {
                    return Err(format!(
                        "the server sent a message larger than {} bytes",
                        self.max_message_bytes
                    ));
                }
            };
            let Ok(message) = jsonrpc::read(&bytes) else {
                tracing::warn!("ignored a message from the server that is not JSON-RPC");
                continue;
            };
            match message {
                Message::Response { id: Some(answered) } if answered == id => {
                    let value = arbiter_core::json::from_slice(&bytes)
                        .map_err(|e| format!("the server's answer is not JSON: {e}"))?;
                    if let Some(result) = value.get("result") {
                        return Ok(result.clone());
                    }
                    let error = value.get("error").cloned().unwrap_or(Value::Null);
                    return Err(format!(
                        "the server answered with an error: {}",
                        error
                            .get("message")
                            .and_then(Value::as_str)
                            .map_or_else(|| error.to_string(), str::to_owned)
                    ));
                }
                Message::Response { .. } | Message::Notification { .. } => {}
                Message::Request { id, method, .. } => {
                    let answer = if method == "ping" {
                        json!({"jsonrpc": "2.0", "id": id.to_value(), "result": {}})
                    } else {
                        json!({"jsonrpc": "2.0", "id": id.to_value(), "error": {
                            "code": code::METHOD_NOT_FOUND,
                            "message": format!("arbiter's client does not answer `{method}`"),
                        }})
                    };
                    self.send(&answer).await?;
                }
            }
        }
    }
}

impl<R: AsyncBufRead + Unpin + Send, W: AsyncWrite + Unpin + Send> Exchange for Lines<R, W> {
    async fn request(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await?;
        let waited = tokio::time::timeout(ANSWER_WITHIN, self.answer(Id::integer(id))).await;
        waited.unwrap_or_else(|_| {
            Err(format!(
                "the server did not answer `{method}` within {} s",
                ANSWER_WITHIN.as_secs()
            ))
        })
    }

    async fn notify(&mut self, method: &str, params: Value) -> Result<(), String> {
        self.send(&json!({"jsonrpc": "2.0", "method": method, "params": params}))
            .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "a test")]

    use super::*;
    use tokio::io::AsyncBufReadExt;

    /// A server on the other end of two pipes, answering as `answer` says.
    async fn serve(
        mut requests: impl AsyncBufRead + Unpin,
        mut out: impl AsyncWrite + Unpin,
        answer: impl Fn(&Value) -> Vec<Value>,
    ) -> Vec<Value> {
        let mut seen = Vec::new();
        let mut line = String::new();
        while requests.read_line(&mut line).await.unwrap() > 0 {
            let message: Value = serde_json::from_str(&line).unwrap();
            line.clear();
            for reply in answer(&message) {
                out.write_all(format!("{reply}\n").as_bytes())
                    .await
                    .unwrap();
            }
            seen.push(message);
        }
        seen
    }

    #[tokio::test]
    async fn the_handshake_then_every_page_of_the_tool_list() {
        let (client_end, server_end) = tokio::io::duplex(1 << 16);
        let (server_read, server_write) = tokio::io::split(server_end);
        let server = tokio::spawn(serve(BufReader::new(server_read), server_write, |m| {
            let id = m["id"].clone();
            let result = match (
                m["method"].as_str().unwrap_or(""),
                m["params"]["cursor"].as_str(),
            ) {
                ("initialize", _) => json!({"protocolVersion": "2025-06-18",
                    "serverInfo": {"name": "fake"}, "capabilities": {}}),
                ("tools/list", None) => json!({"tools": [{"name": "a", "inputSchema": {}}],
                    "nextCursor": "2"}),
                ("tools/list", Some("2")) => json!({"tools": [{"name": "b",
                    "description": "B", "inputSchema": {"type": "object"}}]}),
                _ => return Vec::new(),
            };
            // The server pings, and notifies, before it answers.
            vec![
                json!({"jsonrpc": "2.0", "id": "srv-1", "method": "ping"}),
                json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {}}),
                json!({"jsonrpc": "2.0", "id": id, "result": result}),
            ]
        }));
        let (read, write) = tokio::io::split(client_end);
        let mut client = Lines::new(BufReader::new(read), write, 1 << 20);
        let pins = pin_tools(&mut client).await.unwrap();
        client.close().await;
        assert_eq!(pins.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(pins["b"].description.as_deref(), Some("B"));
        let seen = server.await.unwrap();
        let methods: Vec<&str> = seen
            .iter()
            .map(|m| m["method"].as_str().unwrap_or("(answer)"))
            .collect();
        assert_eq!(
            methods,
            [
                "initialize",
                "(answer)",
                "notifications/initialized",
                "tools/list",
                "(answer)",
                "tools/list",
                "(answer)"
            ]
        );
        assert_eq!(seen[0]["params"]["protocolVersion"], "2025-11-25");
        assert_eq!(seen[1]["result"], json!({}));
    }

    #[tokio::test]
    async fn a_revision_arbiter_does_not_speak_is_refused() {
        let (client_end, server_end) = tokio::io::duplex(1 << 16);
        let (server_read, server_write) = tokio::io::split(server_end);
        tokio::spawn(serve(BufReader::new(server_read), server_write, |m| {
            if m["method"] != "initialize" {
                return Vec::new();
            }
            vec![
                json!({"jsonrpc": "2.0", "id": m["id"], "result": {"protocolVersion": "1999-01-01"}}),
            ]
        }));
        let (read, write) = tokio::io::split(client_end);
        let mut client = Lines::new(BufReader::new(read), write, 1 << 20);
        let error = pin_tools(&mut client).await.unwrap_err();
        assert!(error.contains("\"1999-01-01\""), "{error}");
    }
}

//! arbiter's MCP gateway (`arbiter mcp-proxy`): the point of action for AI agents. It sits
//! between an agent (the MCP client) and an MCP server, and every `tools/call` is a
//! decision through the one decision path, [`arbiter_service::DecisionService`]: recorded
//! in the decision log with the MCP method and tool, `[log] mask` applied, a `revoke`
//! effect made durable. Allowed calls are forwarded untouched; denied ones are answered
//! with a `CallToolResult` whose `isError` is true and whose text names the rule.
//!
//! The CLI uses [`Gateway`] and [`stdio::serve`]; tests drive [`proxy::run`] on any pair
//! of streams.
//!
//! - [`jsonrpc`]: one message a line, bounded, parsed strictly, classified.
//! - [`mapping`]: `[mcp]` of the pack: a tool call as a decision request.
//! - [`caller`]: who calls: a verified arbiter token, or a principal for local use.
//! - [`client`]: arbiter as an MCP client (the handshake, the tool list), for `pin`.
//! - [`gate`]: one `tools/call` decided, the answer to a denied one, and the tool list
//!   without the tools this caller can never call.
//! - [`pins`]: tool pinning: each listed tool compared with what was pinned, a changed
//!   one marked in the list and its calls refused or flagged.
//! - [`proxy`]: the message pump of one session.
//! - [`stdio`]: the server as a child process, the agent on standard input and output.
//! - [`gateway`]: start, sessions, shutdown.
//! - [`http`]: Streamable HTTP: the proxy listens, the servers are upstream URLs.
//! - [`ext_mcp`]: agentgateway's `ExtMcp` gRPC hook, each call decided as the gate does.
//!
//! rmcp (the official Rust SDK) is not used: its transports hand over typed messages,
//! parsed by serde_json (the last of duplicate keys wins) and serialized again on the way
//! out, dropping what its types do not model. A proxy must decide on the bytes it
//! forwards and pass on what it does not understand, so it reads each line itself.

#![forbid(unsafe_code)]

pub mod caller;
pub mod client;
pub mod decider;
pub mod ext_mcp;
pub mod gate;
pub mod gateway;
pub mod http;
pub mod jsonrpc;
pub mod mapping;
pub mod metrics;
pub mod pins;
pub mod proxy;
pub mod stdio;

pub use gateway::{Gateway, Options, Pdp, StartError, Who};
pub use proxy::Ended;

//! One stdio session of the proxy over in-memory pipes, shared by the protocol and
//! pinning tests: the test plays the agent and the server, line by line, with every read
//! bounded by a 10 s deadline.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    dead_code,
    reason = "a test harness; each test file uses part of it"
)]

use std::path::Path;
use std::time::Duration;

use arbiter_mcp::{Ended, Gateway, Options, Who, proxy};
use arbiter_store::{DecisionQuery, DecisionRecord, Store};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, ReadHalf, WriteHalf};
use tokio::task::JoinHandle;

/// How long any read waits.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A proxy between the test's agent end and its server end, for upstream `fake`.
pub struct Session {
    agent: WriteHalf<DuplexStream>,
    answers: BufReader<ReadHalf<DuplexStream>>,
    server_in: Option<BufReader<ReadHalf<DuplexStream>>>,
    server_out: Option<WriteHalf<DuplexStream>>,
    pump: JoinHandle<Ended>,
    /// The gateway the pump decides through.
    pub gateway: Gateway,
    /// The data directory: the decision log, the keys.
    pub data: tempfile::TempDir,
    _pack: tempfile::TempDir,
}

impl Session {
    /// Starts the proxy on `pack`, deciding as `who` (made from the data directory, to
    /// mint a token in it), with messages of at most `max_message` bytes.
    pub async fn start(
        pack: tempfile::TempDir,
        who: impl FnOnce(&Path) -> Who,
        max_message: usize,
    ) -> Session {
        let data = tempfile::tempdir().unwrap();
        let mut options = Options::new(pack.path(), data.path(), who(data.path()), "fake");
        options.max_message_bytes = max_message;
        let gateway = Gateway::start(options).await.expect("the gateway starts");
        let gate = gateway.gate().expect("a caller was configured");
        let (agent_end, proxy_agent_end) = tokio::io::duplex(64 * 1024);
        let (server_end, proxy_server_end) = tokio::io::duplex(64 * 1024);
        let (client_in, client_out) = tokio::io::split(proxy_agent_end);
        let (upstream_out, upstream_in) = tokio::io::split(proxy_server_end);
        let pump = tokio::spawn(async move {
            proxy::run(
                &gate,
                max_message,
                client_in,
                client_out,
                upstream_out,
                upstream_in,
            )
            .await
        });
        let (answers, agent) = tokio::io::split(agent_end);
        let (server_in, server_out) = tokio::io::split(server_end);
        Session {
            agent,
            answers: BufReader::new(answers),
            server_in: Some(BufReader::new(server_in)),
            server_out: Some(server_out),
            pump,
            gateway,
            data,
            _pack: pack,
        }
    }

    /// The agent sends a line.
    pub async fn send(&mut self, line: &str) {
        self.agent.write_all(line.as_bytes()).await.unwrap();
        self.agent.write_all(b"\n").await.unwrap();
    }

    /// The agent sends a message.
    pub async fn send_json(&mut self, message: &Value) {
        self.send(&message.to_string()).await;
    }

    /// The next line the agent is answered.
    pub async fn answer_line(&mut self) -> String {
        next_line(&mut self.answers).await
    }

    /// The next message the agent is answered.
    pub async fn answer(&mut self) -> Value {
        serde_json::from_str(&self.answer_line().await).unwrap()
    }

    /// The next line the server receives.
    pub async fn server_reads(&mut self) -> String {
        next_line(self.server_in.as_mut().expect("the server is up")).await
    }

    /// The next message the server receives.
    pub async fn server_reads_json(&mut self) -> Value {
        serde_json::from_str(&self.server_reads().await).unwrap()
    }

    /// The server sends a line.
    pub async fn server_says(&mut self, line: &str) {
        let out = self.server_out.as_mut().expect("the server is up");
        out.write_all(line.as_bytes()).await.unwrap();
        out.write_all(b"\n").await.unwrap();
    }

    /// The server sends a message.
    pub async fn server_says_json(&mut self, message: &Value) {
        self.server_says(&message.to_string()).await;
    }

    /// Whichever comes first: the message the server receives (`Ok`), or the line the
    /// agent is answered (`Err`).
    pub async fn forwarded_or_answered(&mut self) -> Result<String, String> {
        let answers = &mut self.answers;
        let server = self.server_in.as_mut().expect("the server is up");
        tokio::select! {
            answer = next_line(answers) => Err(answer),
            call = next_line(server) => Ok(call),
        }
    }

    /// The agent closes its end of the pipe: no more messages.
    pub async fn agent_closes(&mut self) {
        self.agent.shutdown().await.unwrap();
    }

    /// The server's input is closed by the proxy: nothing more is read from it.
    pub async fn server_input_ends(&mut self) {
        let mut rest = String::new();
        let server_in = self.server_in.as_mut().expect("the server is up");
        let read = tokio::time::timeout(DEADLINE, server_in.read_line(&mut rest))
            .await
            .expect("the end of the server's input")
            .unwrap();
        assert_eq!(read, 0, "{rest}");
    }

    /// The server exits: both its pipes close.
    pub fn server_dies(&mut self) {
        self.server_in = None;
        self.server_out = None;
    }

    /// The agent closes its end: the session's end, and every decision recorded, oldest
    /// first.
    pub async fn finish(self) -> (Ended, Vec<DecisionRecord>, Store) {
        let Session {
            mut agent,
            pump,
            gateway,
            data,
            ..
        } = self;
        let _ = agent.shutdown().await;
        let ended = tokio::time::timeout(DEADLINE, pump)
            .await
            .expect("the session ends")
            .unwrap();
        gateway.shutdown().await;
        let store = Store::open(data.path()).unwrap();
        let mut decisions = store
            .query_decisions(&DecisionQuery {
                limit: 1000,
                ..DecisionQuery::default()
            })
            .unwrap()
            .decisions;
        decisions.reverse();
        (ended, decisions, store)
    }
}

/// The next line of `reader`, without its line ending.
pub async fn next_line<R: tokio::io::AsyncBufRead + Unpin>(reader: &mut R) -> String {
    let mut line = String::new();
    let read = tokio::time::timeout(DEADLINE, reader.read_line(&mut line))
        .await
        .expect("a line within the deadline")
        .unwrap();
    assert!(read > 0, "the stream ended");
    line.trim_end_matches('\n').to_owned()
}

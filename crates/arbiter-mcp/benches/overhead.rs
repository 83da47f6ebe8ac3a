//! What the proxy adds to a `tools/call` round trip: the same call answered by the same
//! fake MCP server, `direct` and `proxied` (an embedded decision and the decision log on,
//! SQLite in a temporary directory), side by side in one run, over stdio (pipes, through
//! `proxy::run`) and over Streamable HTTP (loopback, through `http::serve`, a keep-alive
//! client, the stateless revision's headers).
//!
//! Criterion reports the mean of each; the run also prints p50 and p99 of single round
//! trips (criterion does not keep percentiles), which `docs/benchmarks.md` quotes.
//!
//! `cargo bench -p arbiter-mcp --bench overhead`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs,
    reason = "a benchmark"
)]

use std::time::{Duration, Instant};

use std::net::SocketAddr;

use arbiter_mcp::http::{HttpOptions, Upstream};
use arbiter_mcp::{Gateway, Options, Who, proxy};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, ReadHalf, WriteHalf};
use tokio::runtime::Runtime;

const SCHEMA: &str = r#"
entity Agent;
entity Tool;
action "echo" appliesTo {
    principal: [Agent], resource: [Tool], context: { args?: { message?: String } } };
action "get-env" appliesTo { principal: [Agent], resource: [Tool] };
"#;

const POLICIES: &str = r#"
@id("agents.may-use-tools")
permit(principal is Agent, action, resource);

@id("mcp.no-env")
@mode("enforce")
forbid(principal, action == Action::"get-env", resource);

@id("mcp.no-long-messages")
@mode("audit")
forbid(principal, action == Action::"echo", resource)
when { context has args && context.args has message && context.args.message like "*secret*" };
"#;

const CONFIG: &str = r#"
[mcp.tools.echo]
args = { message = "context.args.message" }
"#;

const CALL: &[u8] =
    br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hello"}}}
"#;

/// The agent's two ends: what it writes, and the answers it reads.
struct Agent {
    out: WriteHalf<DuplexStream>,
    answers: BufReader<ReadHalf<DuplexStream>>,
    line: String,
}

impl Agent {
    async fn round_trip(&mut self) {
        self.out.write_all(CALL).await.unwrap();
        self.line.clear();
        self.answers.read_line(&mut self.line).await.unwrap();
        assert!(self.line.contains("\"result\""), "{}", self.line);
    }
}

/// A fake MCP server on `end`: answers every request with a small text result.
fn fake_server(end: DuplexStream) {
    tokio::spawn(async move {
        let (read, mut write) = tokio::io::split(end);
        let mut lines = BufReader::new(read).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let message: Value = serde_json::from_str(&line).unwrap();
            let answer = serde_json::json!({"jsonrpc": "2.0", "id": message["id"],
                "result": {"content": [{"type": "text", "text": "Echo: hello"}]}});
            let mut bytes = answer.to_string().into_bytes();
            bytes.push(b'\n');
            if write.write_all(&bytes).await.is_err() {
                return;
            }
        }
    });
}

fn split(end: DuplexStream, line: String) -> Agent {
    let (read, write) = tokio::io::split(end);
    Agent {
        out: write,
        answers: BufReader::new(read),
        line,
    }
}

/// The agent talking to the server directly.
fn direct() -> Agent {
    let (agent, server) = tokio::io::duplex(64 * 1024);
    fake_server(server);
    split(agent, String::new())
}

/// The agent talking to the server through the proxy; the directories live as long as
/// the gateway.
async fn proxied() -> (Agent, Gateway, [tempfile::TempDir; 2]) {
    let pack = write_pack();
    let data = tempfile::tempdir().unwrap();
    let options = Options::new(
        pack.path(),
        data.path(),
        Who::Principal(r#"Agent::"bot""#.to_owned()),
        "fake",
    );
    let gateway = Gateway::start(options).await.unwrap();
    let gate = gateway.gate().unwrap();
    let max = gateway.max_message_bytes();
    let (agent, proxy_agent) = tokio::io::duplex(64 * 1024);
    let (server, proxy_server) = tokio::io::duplex(64 * 1024);
    fake_server(server);
    tokio::spawn(async move {
        let (client_in, client_out) = tokio::io::split(proxy_agent);
        let (upstream_out, upstream_in) = tokio::io::split(proxy_server);
        proxy::run(&gate, max, client_in, client_out, upstream_out, upstream_in).await
    });
    (split(agent, String::new()), gateway, [pack, data])
}

fn write_pack() -> tempfile::TempDir {
    let pack = tempfile::tempdir().unwrap();
    std::fs::create_dir(pack.path().join("policies")).unwrap();
    std::fs::write(pack.path().join("policies/mcp.cedar"), POLICIES).unwrap();
    std::fs::write(pack.path().join("schema.cedarschema"), SCHEMA).unwrap();
    std::fs::write(pack.path().join("arbiter.toml"), CONFIG).unwrap();
    pack
}

/// A fake MCP server over HTTP: every POST is answered with a small text result, as
/// JSON.
async fn fake_http_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(|body: axum::body::Bytes| async move {
            let message: Value = serde_json::from_slice(&body).unwrap();
            let answer = serde_json::json!({"jsonrpc": "2.0", "id": message["id"],
                "result": {"content": [{"type": "text", "text": "Echo: hello"}],
                           "resultType": "complete"}});
            (
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                answer.to_string(),
            )
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// The proxy over HTTP in front of `upstream`; calls without a token are the agent's.
async fn http_proxy(upstream: SocketAddr) -> (SocketAddr, [tempfile::TempDir; 2]) {
    let pack = write_pack();
    let data = tempfile::tempdir().unwrap();
    let who = Who::PerRequest {
        fallback: Some(r#"Agent::"bot""#.to_owned()),
    };
    let options = Options::new(pack.path(), data.path(), who, "");
    let gateway = Gateway::start(options).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let http = HttpOptions::new(vec![Upstream {
        name: "fake".to_owned(),
        url: format!("http://{upstream}/mcp").parse().unwrap(),
    }]);
    tokio::spawn(arbiter_mcp::http::serve(
        gateway,
        http,
        listener,
        std::future::pending(),
    ));
    (addr, [pack, data])
}

/// The floor of any HTTP proxy here: a bare forwarder (axum in, the same reqwest client
/// out, no checks, no decision, no log) in front of `upstream`.
async fn bare_forwarder(upstream: SocketAddr) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = reqwest::Client::new();
    let url = format!("http://{upstream}/mcp");
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(move |body: axum::body::Bytes| {
            let client = client.clone();
            let url = url.clone();
            async move {
                let answer = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap();
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    answer,
                )
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// An agent over HTTP, posting stateless `tools/call`s to `url`.
struct HttpAgent {
    client: reqwest::Client,
    url: String,
}

impl HttpAgent {
    async fn round_trip(&self) {
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"message":"hello"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#;
        let response = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", "echo")
            .body(&body[..])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        assert!(text.contains("Echo: hello"), "{text}");
    }
}

/// p50 and p99 of `n` single round trips, in µs.
fn percentiles(runtime: &Runtime, agent: &mut Agent, n: usize) -> (f64, f64) {
    let mut took: Vec<Duration> = Vec::with_capacity(n);
    runtime.block_on(async {
        for _ in 0..n {
            let started = Instant::now();
            agent.round_trip().await;
            took.push(started.elapsed());
        }
    });
    summarize(took)
}

/// The same over HTTP.
fn http_percentiles(runtime: &Runtime, agent: &HttpAgent, n: usize) -> (f64, f64) {
    let mut took: Vec<Duration> = Vec::with_capacity(n);
    runtime.block_on(async {
        for _ in 0..n {
            let started = Instant::now();
            agent.round_trip().await;
            took.push(started.elapsed());
        }
    });
    summarize(took)
}

fn summarize(mut took: Vec<Duration>) -> (f64, f64) {
    let n = took.len();
    took.sort();
    let at = |q: f64| took[((n as f64 - 1.0) * q) as usize].as_secs_f64() * 1e6;
    (at(0.50), at(0.99))
}

fn overhead(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut direct_agent = runtime.block_on(async { direct() });
    let (mut proxied_agent, _gateway, _dirs) = runtime.block_on(proxied());

    // Warm both paths, then the percentiles.
    percentiles(&runtime, &mut direct_agent, 2_000);
    percentiles(&runtime, &mut proxied_agent, 2_000);
    let (d50, d99) = percentiles(&runtime, &mut direct_agent, 20_000);
    let (p50, p99) = percentiles(&runtime, &mut proxied_agent, 20_000);
    println!(
        "stdio tools/call round trip, 20,000 each: direct p50 {d50:.1} µs p99 {d99:.1} µs; \
         proxied p50 {p50:.1} µs p99 {p99:.1} µs; added p50 {:.1} µs p99 {:.1} µs",
        p50 - d50,
        p99 - d99
    );

    let mut group = c.benchmark_group("stdio_tools_call");
    group.bench_function("direct", |b| {
        b.iter(|| runtime.block_on(direct_agent.round_trip()));
    });
    group.bench_function("proxied", |b| {
        b.iter(|| runtime.block_on(proxied_agent.round_trip()));
    });
    group.finish();

    let (direct_http, bare_http, proxied_http, _http_dirs) = runtime.block_on(async {
        let upstream = fake_http_server().await;
        let (proxy, dirs) = http_proxy(upstream).await;
        let bare = bare_forwarder(upstream).await;
        let client = reqwest::Client::new();
        (
            HttpAgent {
                client: client.clone(),
                url: format!("http://{upstream}/mcp"),
            },
            HttpAgent {
                client: client.clone(),
                url: format!("http://{bare}/mcp"),
            },
            HttpAgent {
                client,
                url: format!("http://{proxy}/mcp"),
            },
            dirs,
        )
    });
    http_percentiles(&runtime, &direct_http, 2_000);
    http_percentiles(&runtime, &bare_http, 2_000);
    http_percentiles(&runtime, &proxied_http, 2_000);
    let (d50, d99) = http_percentiles(&runtime, &direct_http, 20_000);
    let (b50, b99) = http_percentiles(&runtime, &bare_http, 20_000);
    let (p50, p99) = http_percentiles(&runtime, &proxied_http, 20_000);
    println!(
        "HTTP tools/call round trip, 20,000 each: direct p50 {d50:.1} µs p99 {d99:.1} µs; \
         bare forwarder p50 {b50:.1} µs p99 {b99:.1} µs; proxied p50 {p50:.1} µs p99 \
         {p99:.1} µs; added p50 {:.1} µs p99 {:.1} µs, of which the bare hop {:.1} µs \
         p99 {:.1} µs",
        p50 - d50,
        p99 - d99,
        b50 - d50,
        b99 - d99
    );
    let mut group = c.benchmark_group("http_tools_call");
    group.bench_function("direct", |b| {
        b.iter(|| runtime.block_on(direct_http.round_trip()));
    });
    group.bench_function("bare_forwarder", |b| {
        b.iter(|| runtime.block_on(bare_http.round_trip()));
    });
    group.bench_function("proxied", |b| {
        b.iter(|| runtime.block_on(proxied_http.round_trip()));
    });
    group.finish();
}

criterion_group!(benches, overhead);
criterion_main!(benches);

//! The gateway's Prometheus metrics: requests decided by upstream, method, tool and
//! outcome; how long deciding took; what tool lists hid (and, for rules not yet
//! enforced, would hide). The registry belongs to the gateway, not to a global.
//!
//! Tool names come from the agent and the MCP server, so they are bounded before they
//! become labels: the first [`MAX_TOOLS`] distinct names of at most [`MAX_NAME`]
//! characters are kept, every other one counts as `other`.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// How many distinct tool names become labels.
pub const MAX_TOOLS: usize = 256;
/// The longest tool name kept as a label.
pub const MAX_NAME: usize = 64;
/// The label of every tool name past the bounds.
const OTHER: &str = "other";

/// What became of a request the gateway decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Allowed and forwarded.
    Allowed,
    /// Denied by an enforced rule or scope.
    Denied,
    /// Throttled.
    Throttled,
    /// Denied, the credential revoked and the session ended.
    Revoked,
    /// Not a request the pack can decide.
    Invalid,
    /// Nothing decided it (the log is down, the decision point did not answer).
    Unavailable,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
            Outcome::Throttled => "throttled",
            Outcome::Revoked => "revoked",
            Outcome::Invalid => "invalid",
            Outcome::Unavailable => "unavailable",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    upstream: String,
    method: String,
    tool: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    upstream: String,
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HiddenLabels {
    upstream: String,
    tool: String,
    rule: String,
    mode: String,
}

/// The gateway's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<MethodLabels, Histogram>,
    hidden: Family<HiddenLabels, Counter>,
    tools: Mutex<HashSet<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// An empty registry with the gateway's metrics in it.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("arbiter_mcp");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "MCP requests decided, by upstream, method, tool and outcome",
            requests.clone(),
        );
        let latency = Family::<MethodLabels, Histogram>::new_with_constructor(|| {
            // 50 µs to about 3 s: an embedded decision to a remote one timing out.
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.000_05, 2.0, 16,
            ))
        });
        registry.register(
            "decision_seconds",
            "Time to decide an MCP request (mapping, deciding, queueing the record)",
            latency.clone(),
        );
        let hidden = Family::<HiddenLabels, Counter>::default();
        registry.register(
            "tools_hidden",
            "Tools left out of a tools/list answer (mode enforce), or that a rule in audit or \
             warn would leave out, by upstream, tool, rule and mode",
            hidden.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            hidden,
            tools: Mutex::new(HashSet::new()),
        }
    }

    /// Counts one request.
    pub fn request(
        &self,
        upstream: &str,
        method: &str,
        tool: Option<&str>,
        outcome: Outcome,
        took: Duration,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                upstream: upstream.to_owned(),
                method: method.to_owned(),
                tool: tool.map_or_else(String::new, |t| self.tool_label(t)),
                outcome: outcome.as_str().to_owned(),
            })
            .inc();
        self.latency
            .get_or_create(&MethodLabels {
                upstream: upstream.to_owned(),
                method: method.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// Counts a tool a list hid (or would hide, in `mode` audit or warn).
    pub fn hidden(&self, upstream: &str, tool: &str, rule: &str, mode: &str) {
        self.hidden
            .get_or_create(&HiddenLabels {
                upstream: upstream.to_owned(),
                tool: self.tool_label(tool),
                rule: rule.to_owned(),
                mode: mode.to_owned(),
            })
            .inc();
    }

    /// The registry in Prometheus' text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(error = %e, "encoding the metrics");
        }
        text
    }

    /// The tool's name as a label, bounded.
    fn tool_label(&self, tool: &str) -> String {
        if tool.chars().count() > MAX_NAME || tool.chars().any(char::is_control) {
            return OTHER.to_owned();
        }
        let Ok(mut tools) = self.tools.lock() else {
            return OTHER.to_owned();
        };
        if tools.contains(tool) {
            return tool.to_owned();
        }
        if tools.len() < MAX_TOOLS {
            tools.insert(tool.to_owned());
            return tool.to_owned();
        }
        OTHER.to_owned()
    }
}

/// The metrics server: stops when dropped.
#[derive(Debug)]
pub struct Served {
    /// The address it listens on.
    pub addr: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `GET /metrics` on `addr` (port 0 picks one; [`Served::addr`] says which).
pub async fn serve(
    addr: std::net::SocketAddr,
    metrics: std::sync::Arc<Metrics>,
) -> std::io::Result<Served> {
    use axum::http::header;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = std::sync::Arc::clone(&metrics);
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.encode(),
                )
            }
        }),
    );
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics server stopped");
        }
    });
    tracing::info!("metrics on http://{addr}/metrics");
    Ok(Served { addr, task })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_labels_are_bounded() {
        let metrics = Metrics::new();
        for n in 0..MAX_TOOLS + 10 {
            metrics.request(
                "up",
                "tools/call",
                Some(&format!("t{n}")),
                Outcome::Allowed,
                Duration::from_micros(100),
            );
        }
        metrics.request(
            "up",
            "tools/call",
            Some(&"x".repeat(MAX_NAME + 1)),
            Outcome::Denied,
            Duration::ZERO,
        );
        let text = metrics.encode();
        assert!(text.contains(r#"tool="t0""#), "{text}");
        assert!(
            !text.contains(&format!(r#"tool="t{}""#, MAX_TOOLS)),
            "{text}"
        );
        assert!(
            text.contains(r#"arbiter_mcp_requests_total{upstream="up",method="tools/call",tool="other",outcome="allowed"} 10"#),
            "{text}"
        );
        assert!(
            text.contains(r#"tool="other",outcome="denied"} 1"#),
            "{text}"
        );
    }
}

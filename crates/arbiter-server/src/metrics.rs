//! Prometheus metrics (`GET /metrics`): decisions by decision and effect, fired rules by
//! rule and mode, invalid requests by code, decision latency, and the decision log's queue
//! depth and write errors. The registry belongs to the server, not to a global.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use arbiter_core::Decision;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    decision: String,
    effect: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    rule: String,
    mode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: String,
}

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    decisions: Family<DecisionLabels, Counter>,
    fired: Family<RuleLabels, Counter>,
    invalid: Family<CodeLabels, Counter>,
    latency: Histogram,
    queue_depth: Gauge,
    write_errors: Gauge,
    reloads: Family<CodeLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("arbiter");
        let decisions = Family::<DecisionLabels, Counter>::default();
        let fired = Family::<RuleLabels, Counter>::default();
        let invalid = Family::<CodeLabels, Counter>::default();
        // 10 µs to ~80 ms.
        let latency = Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
            0.000_01, 2.0, 14,
        ));
        let queue_depth = Gauge::default();
        let write_errors = Gauge::default();
        let reloads = Family::<CodeLabels, Counter>::default();
        registry.register(
            "decisions",
            "Decisions by decision and effect",
            decisions.clone(),
        );
        registry.register(
            "rule_fired",
            "Rules that fired, by rule and mode",
            fired.clone(),
        );
        registry.register(
            "invalid_requests",
            "Requests refused before a decision, by code",
            invalid.clone(),
        );
        registry.register(
            "decision_latency_seconds",
            "Time to decide, from body to response",
            latency.clone(),
        );
        registry.register(
            "log_queue_depth",
            "Decision-log records waiting to be written",
            queue_depth.clone(),
        );
        registry.register(
            "log_write_errors",
            "Decision-log batches that failed to commit (and were retried)",
            write_errors.clone(),
        );
        registry.register("pack_reloads", "Pack reloads by outcome", reloads.clone());
        Self {
            registry,
            decisions,
            fired,
            invalid,
            latency,
            queue_depth,
            write_errors,
            reloads,
        }
    }

    /// Counts one decision.
    pub fn decided(&self, decision: &Decision, seconds: f64) {
        let effect = decision.effect.map_or("none", |e| e.as_str());
        let outcome = match decision.decision {
            arbiter_core::response::Outcome::Allow => "allow",
            arbiter_core::response::Outcome::Deny => "deny",
        };
        self.decisions
            .get_or_create(&DecisionLabels {
                decision: outcome.to_owned(),
                effect: effect.to_owned(),
            })
            .inc();
        let fire = |rule: &str, mode: &str| {
            self.fired
                .get_or_create(&RuleLabels {
                    rule: rule.to_owned(),
                    mode: mode.to_owned(),
                })
                .inc();
        };
        decision.enforced.iter().for_each(|r| fire(r, "enforce"));
        decision.warnings.iter().for_each(|w| fire(&w.rule, "warn"));
        decision.audit.iter().for_each(|a| fire(&a.rule, "audit"));
        self.latency.observe(seconds);
    }

    /// Counts a request refused before a decision.
    pub fn refused(&self, code: &str) {
        self.invalid
            .get_or_create(&CodeLabels {
                code: code.to_owned(),
            })
            .inc();
    }

    /// Counts a reload attempt.
    pub fn reloaded(&self, ok: bool) {
        let code = if ok { "ok" } else { "rejected" };
        self.reloads
            .get_or_create(&CodeLabels {
                code: code.to_owned(),
            })
            .inc();
    }

    /// The text exposition, with the log's gauges as they are now.
    pub fn render(&self, queue_depth: usize, write_errors: u64) -> String {
        self.queue_depth
            .set(i64::try_from(queue_depth).unwrap_or(i64::MAX));
        self.write_errors
            .set(i64::try_from(write_errors).unwrap_or(i64::MAX));
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics");
        }
        out
    }
}

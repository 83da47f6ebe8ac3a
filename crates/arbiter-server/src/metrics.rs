//! Prometheus metrics (`GET /metrics`): decisions by decision and effect, fired rules by
//! rule and mode, invalid requests by code, decision latency, the decision log's queue
//! depth and write errors, and what became of the requests sampled for a candidate in
//! shadow. The registry belongs to the server, not to a global.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use arbiter_core::Decision;
use arbiter_core::rule::RuleRef;
use arbiter_service::shadow::Shadowed;

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

/// Counter handles for the hot path, so a decision allocates no label strings.
#[derive(Debug, Default)]
struct Handles {
    /// By (allow, deny) × (none, throttle, deny, revoke).
    decisions: Vec<Counter>,
    /// Rule id → counters by mode (enforce, warn, audit).
    fired: std::sync::RwLock<std::collections::HashMap<RuleRef, [Counter; 3]>>,
    /// Sampled for the candidate: decided, errored, dropped.
    shadow: Vec<Counter>,
}

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    handles: Handles,
    registry: Registry,
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
        let shadow = Family::<OutcomeLabels, Counter>::default();
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
        registry.register(
            "shadow_requests",
            "Requests sampled for the candidate in shadow: decided, errored (an evaluation \
             error, or no decision), dropped (its queue was full)",
            shadow.clone(),
        );
        let mut handles = Handles::default();
        for decision in ["allow", "deny"] {
            for effect in ["none", "throttle", "deny", "revoke"] {
                handles.decisions.push(
                    decisions
                        .get_or_create(&DecisionLabels {
                            decision: decision.to_owned(),
                            effect: effect.to_owned(),
                        })
                        .clone(),
                );
            }
        }
        for outcome in ["decided", "errored", "dropped"] {
            handles.shadow.push(
                shadow
                    .get_or_create(&OutcomeLabels {
                        outcome: outcome.to_owned(),
                    })
                    .clone(),
            );
        }
        Self {
            handles,
            registry,
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
        let row = match decision.decision {
            arbiter_core::response::Outcome::Allow => 0,
            arbiter_core::response::Outcome::Deny => 4,
        };
        let column = match decision.effect {
            None => 0,
            Some(arbiter_core::rule::Effect::Throttle) => 1,
            Some(arbiter_core::rule::Effect::Deny) => 2,
            Some(arbiter_core::rule::Effect::Revoke) => 3,
        };
        if let Some(counter) = self.handles.decisions.get(row + column) {
            counter.inc();
        }
        let fired = decision
            .enforced
            .iter()
            .map(|r| (r, 0))
            .chain(decision.warnings.iter().map(|w| (&w.rule, 1)))
            .chain(decision.audit.iter().map(|a| (&a.rule, 2)));
        for (rule, mode) in fired {
            self.fire(rule, mode);
        }
        self.latency.observe(seconds);
    }

    fn fire(&self, rule: &RuleRef, mode: usize) {
        let known = self.handles.fired.read().unwrap_or_else(|p| p.into_inner());
        if let Some(counter) = known.get(rule).and_then(|c| c.get(mode)) {
            counter.inc();
            return;
        }
        drop(known);
        let mut known = self
            .handles
            .fired
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let counters = known.entry(rule.clone()).or_insert_with(|| {
            ["enforce", "warn", "audit"].map(|m| {
                self.fired
                    .get_or_create(&RuleLabels {
                        rule: rule.to_string(),
                        mode: m.to_owned(),
                    })
                    .clone()
            })
        });
        if let Some(counter) = counters.get(mode) {
            counter.inc();
        }
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

impl arbiter_service::Observer for Metrics {
    fn decided(&self, decision: &Decision, latency: std::time::Duration) {
        Metrics::decided(self, decision, latency.as_secs_f64());
    }

    fn refused(&self, code: &str) {
        Metrics::refused(self, code);
    }

    fn shadowed(&self, event: Shadowed) {
        let index = match event {
            Shadowed::Decided => 0,
            Shadowed::Errored => 1,
            Shadowed::Dropped => 2,
        };
        if let Some(counter) = self.handles.shadow.get(index) {
            counter.inc();
        }
    }
}

//! What the agent did, as Prometheus metrics (`GET /metrics` with `--listen`): counted
//! where it happens, on the event loop, with atomics only; encoded on the listener's
//! thread when scraped. prometheus-client is the Prometheus project's own Rust client
//! and writes the OpenMetrics text format every Prometheus scrapes.

use crate::events::{Event, EventKind};
use crate::rules::Rule;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// One label.
type Label = [(&'static str, String); 1];
/// Two labels.
type Labels2 = [(&'static str, String); 2];
/// A loaded rule's identity.
type RuleInfo = [(&'static str, String); 4];

/// `rulehost_kernel_drops_total`'s kinds.
pub(crate) const KERNEL_KINDS: [&str; 3] = ["exec", "connect", "cgroup"];
/// `rulehost_kernel_filtered_total`'s reasons.
pub(crate) const FILTER_REASONS: [&str; 2] = ["host_cgroup", "unwatched"];
/// `rulehost_reloads_total`'s results.
const RELOAD_RESULTS: [&str; 4] = ["loaded", "replaced", "removed", "rejected"];
/// `rulehost_rule_refusals_total`'s bounds.
const REFUSAL_BOUNDS: [&str; 2] = ["log_lines", "context_calls"];

/// Every metric the agent exports, with the registry that encodes them.
pub(crate) struct Metrics {
    registry: Registry,
    exec_events: Counter,
    connect_events: Counter,
    findings: Family<Label, Counter>,
    suppressed: Family<Label, Counter>,
    findings_dropped: Family<Label, Counter>,
    kernel_drops: Family<Label, Counter>,
    kernel_filtered: Family<Label, Counter>,
    rule_faults: Family<Label, Counter>,
    rule_refusals: Family<Labels2, Counter>,
    rule_info: Family<RuleInfo, Gauge>,
    reloads: Family<Label, Counter>,
    output_dropped: Family<Label, Counter>,
    output_sent: Family<Label, Counter>,
    output_failures: Family<Label, Counter>,
    unmet_needs: Family<Labels2, Gauge>,
    latency: Histogram,
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::default();
        let events = Family::<Label, Counter>::default();
        let exec_events = events
            .get_or_create(&[("kind", EventKind::ProcessExec.name().into())])
            .clone();
        let connect_events = events
            .get_or_create(&[("kind", EventKind::SocketConnect.name().into())])
            .clone();
        let metrics = Metrics {
            exec_events,
            connect_events,
            findings: Family::default(),
            suppressed: Family::default(),
            findings_dropped: Family::default(),
            kernel_drops: Family::default(),
            kernel_filtered: Family::default(),
            rule_faults: Family::default(),
            rule_refusals: Family::default(),
            rule_info: Family::default(),
            reloads: Family::default(),
            output_dropped: Family::default(),
            output_sent: Family::default(),
            output_failures: Family::default(),
            unmet_needs: Family::default(),
            // 0.5 ms to about 8 s.
            latency: Histogram::new(exponential_buckets(0.0005, 2.0, 15)),
            registry: Registry::default(),
        };
        let help = [
            (
                "rulehost_events",
                "Events delivered to the rules' dispatcher, by kind.",
            ),
            ("rulehost_findings", "Findings written, by rule id"),
            (
                "rulehost_findings_suppressed",
                "Findings an exception matched (not written), by rule id.",
            ),
            (
                "rulehost_findings_dropped",
                "Findings a rule made over its output bounds (not written), by rule id.",
            ),
            (
                "rulehost_kernel_drops",
                "Events the kernel could not queue (ring buffer full), by kind.",
            ),
            (
                "rulehost_kernel_filtered",
                "Events the kernel did not send on purpose, by reason: unwatched (a connect, from any process, to a destination no rule watches; checked first), host_cgroup (no rule wants host events).",
            ),
            (
                "rulehost_rule_faults",
                "Rule traps, timeouts and out-of-memory faults, by rule id.",
            ),
            (
                "rulehost_rule_refusals",
                "Host calls a rule made over its bounds and was refused, by rule id and bound.",
            ),
            (
                "rulehost_rule_info",
                "1 per loaded rule: its id, name, version and sha256.",
            ),
            (
                "rulehost_reloads",
                "Rule file changes applied or refused, by result.",
            ),
            (
                "rulehost_output_dropped",
                "Findings an output had to drop (queue full, or undelivered at exit), by sink.",
            ),
            (
                "rulehost_output_sent",
                "Findings an output delivered, by sink.",
            ),
            (
                "rulehost_output_failures",
                "Delivery attempts that failed (connection, TLS, timeout, 5xx) and are retried, by sink.",
            ),
            (
                "rulehost_unmet_needs",
                "1 per need of a loaded rule this kernel cannot meet, by rule id and need (the log's WARN says why).",
            ),
            (
                "rulehost_event_to_finding_seconds",
                "From the event's kernel timestamp to its finding being written.",
            ),
        ];
        let mut help = help.into_iter();
        let mut next = || help.next().expect("one help line per metric");
        let (name, text) = next();
        registry.register(name, text, events);
        for family in [
            &metrics.findings,
            &metrics.suppressed,
            &metrics.findings_dropped,
            &metrics.kernel_drops,
            &metrics.kernel_filtered,
            &metrics.rule_faults,
        ] {
            let (name, text) = next();
            registry.register(name, text, family.clone());
        }
        let (name, text) = next();
        registry.register(name, text, metrics.rule_refusals.clone());
        let (name, text) = next();
        registry.register(name, text, metrics.rule_info.clone());
        for family in [
            &metrics.reloads,
            &metrics.output_dropped,
            &metrics.output_sent,
            &metrics.output_failures,
        ] {
            let (name, text) = next();
            registry.register(name, text, family.clone());
        }
        let (name, text) = next();
        registry.register(name, text, metrics.unmet_needs.clone());
        let (name, text) = next();
        registry.register(name, text, metrics.latency.clone());
        metrics.known_at_zero();
        Metrics {
            registry,
            ..metrics
        }
    }

    /// Every series whose labels are known before anything happens, at 0: a dashboard
    /// shows 0, not "no data", and an alert on absence does not fire (Prometheus's
    /// instrumentation guidelines). Per-rule and per-sink series follow as those load.
    fn known_at_zero(&self) {
        for kind in KERNEL_KINDS {
            drop(
                self.kernel_drops
                    .get_or_create(&[("kind", kind.to_owned())]),
            );
        }
        for reason in FILTER_REASONS {
            drop(
                self.kernel_filtered
                    .get_or_create(&[("reason", reason.to_owned())]),
            );
        }
        for result in RELOAD_RESULTS {
            drop(self.reloads.get_or_create(&[("result", result.to_owned())]));
        }
    }

    /// The OpenMetrics text of every metric, as a scrape reads it.
    pub(crate) fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// A batch about to be dispatched.
    pub(crate) fn events(&self, batch: &[Event]) {
        let exec = batch
            .iter()
            .filter(|e| e.kind() == EventKind::ProcessExec)
            .count() as u64;
        self.exec_events.inc_by(exec);
        self.connect_events.inc_by(batch.len() as u64 - exec);
    }

    /// A finding of rule `rule_id` about an event at `event_ns` written; `now_ns` is the
    /// wall clock, in the events' timescale.
    pub(crate) fn finding_written(&self, rule_id: &str, event_ns: u64, now_ns: u64) {
        self.findings
            .get_or_create(&[("rule", rule_id.to_owned())])
            .inc();
        let seconds = now_ns.saturating_sub(event_ns) as f64 / 1e9;
        self.latency.observe(seconds);
    }

    pub(crate) fn finding_suppressed(&self, rule_id: &str) {
        self.suppressed
            .get_or_create(&[("rule", rule_id.to_owned())])
            .inc();
    }

    /// What one rule's delivery cost: faults, findings over its bounds, refused calls.
    pub(crate) fn rule_delivery(&self, rule_id: &str, faults: u64, dropped: u64) {
        if faults > 0 {
            self.rule_faults
                .get_or_create(&[("rule", rule_id.to_owned())])
                .inc_by(faults);
        }
        if dropped > 0 {
            self.findings_dropped
                .get_or_create(&[("rule", rule_id.to_owned())])
                .inc_by(dropped);
        }
    }

    /// Host calls refused to a rule over `bound` (`log_lines`, `context_calls`).
    pub(crate) fn rule_refused(&self, rule_id: &str, bound: &'static str, count: u64) {
        if count > 0 {
            self.rule_refusals
                .get_or_create(&[("rule", rule_id.to_owned()), ("bound", bound.to_owned())])
                .inc_by(count);
        }
    }

    /// Kernel drops of one kind (`exec`, `connect`, `cgroup`) since the last call.
    pub(crate) fn kernel_filtered(&self, reason: &'static str, count: u64) {
        if count > 0 {
            self.kernel_filtered
                .get_or_create(&[("reason", reason.to_owned())])
                .inc_by(count);
        }
    }

    pub(crate) fn kernel_drops(&self, kind: &'static str, count: u64) {
        if count > 0 {
            self.kernel_drops
                .get_or_create(&[("kind", kind.to_owned())])
                .inc_by(count);
        }
    }

    /// The loaded rules now (after a start or a reload); each one's counters exist from
    /// its load, at 0 until they count.
    pub(crate) fn rules_loaded<'a>(&self, rules: impl Iterator<Item = &'a std::sync::Arc<Rule>>) {
        self.rule_info.clear();
        for rule in rules {
            let id = &rule.metadata.id;
            for family in [
                &self.findings,
                &self.suppressed,
                &self.findings_dropped,
                &self.rule_faults,
            ] {
                drop(family.get_or_create(&[("rule", id.clone())]));
            }
            for bound in REFUSAL_BOUNDS {
                drop(
                    self.rule_refusals
                        .get_or_create(&[("rule", id.clone()), ("bound", bound.to_owned())]),
                );
            }
            self.rule_info
                .get_or_create(&[
                    ("rule", rule.metadata.id.clone()),
                    ("name", rule.name.clone()),
                    ("version", rule.metadata.version.clone()),
                    ("sha256", rule.sha256.clone()),
                ])
                .set(1);
        }
    }

    /// The needs of loaded rules this kernel cannot meet.
    pub(crate) fn unmet_needs(&self, unmet: &[crate::sensor::Unmet]) {
        self.unmet_needs.clear();
        for need in unmet {
            self.unmet_needs
                .get_or_create(&[("rule", need.rule.clone()), ("need", need.need.to_owned())])
                .set(1);
        }
    }

    /// One rule file change: `loaded`, `replaced`, `removed` or `rejected`.
    pub(crate) fn reload(&self, result: &'static str) {
        self.reloads
            .get_or_create(&[("result", result.to_owned())])
            .inc();
    }

    /// Findings an output had to give up.
    pub(crate) fn output_dropped(&self, sink: &str, count: u64) {
        self.output_dropped
            .get_or_create(&[("sink", sink.to_owned())])
            .inc_by(count);
    }

    /// A configured sink: its counters exist from the start, at 0.
    pub(crate) fn sink_configured(&self, sink: &str) {
        for family in [
            &self.output_sent,
            &self.output_dropped,
            &self.output_failures,
        ] {
            drop(family.get_or_create(&[("sink", sink.to_owned())]));
        }
    }

    /// A delivery attempt that failed and will be retried.
    pub(crate) fn output_failed(&self, sink: &str) {
        self.output_failures
            .get_or_create(&[("sink", sink.to_owned())])
            .inc();
    }

    /// A finding an output delivered.
    pub(crate) fn output_sent(&self, sink: &str) {
        self.output_sent
            .get_or_create(&[("sink", sink.to_owned())])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_series_are_there_at_zero_from_the_start() {
        let metrics = Metrics::new();
        let text = metrics.encode();
        for series in [
            "rulehost_kernel_drops_total{kind=\"exec\"} 0",
            "rulehost_kernel_drops_total{kind=\"cgroup\"} 0",
            "rulehost_kernel_filtered_total{reason=\"unwatched\"} 0",
            "rulehost_reloads_total{result=\"rejected\"} 0",
        ] {
            assert!(
                text.contains(series),
                "{series} missing from a fresh scrape"
            );
        }
        metrics.sink_configured("webhook:a");
        let text = metrics.encode();
        assert!(text.contains("rulehost_output_sent_total{sink=\"webhook:a\"} 0"));
        assert!(text.contains("rulehost_output_dropped_total{sink=\"webhook:a\"} 0"));
    }

    #[test]
    fn metrics_are_named_as_documented() {
        let metrics = Metrics::new();
        metrics.reload("loaded");
        metrics.kernel_drops("connect", 3);
        metrics.finding_suppressed("X-1");
        metrics.rule_delivery("X-1", 2, 1);
        metrics.rule_refused("X-1", "log_lines", 4);
        metrics.output_dropped("webhook:a", 5);
        let text = metrics.encode();
        for series in [
            "rulehost_events_total{kind=\"sched_process_exec\"} 0",
            "rulehost_events_total{kind=\"security_socket_connect\"} 0",
            "rulehost_kernel_drops_total{kind=\"connect\"} 3",
            "rulehost_reloads_total{result=\"loaded\"} 1",
            "rulehost_findings_suppressed_total{rule=\"X-1\"} 1",
            "rulehost_rule_faults_total{rule=\"X-1\"} 2",
            "rulehost_findings_dropped_total{rule=\"X-1\"} 1",
            "rulehost_rule_refusals_total{rule=\"X-1\",bound=\"log_lines\"} 4",
            "rulehost_output_dropped_total{sink=\"webhook:a\"} 5",
            "# TYPE rulehost_event_to_finding_seconds histogram",
            "# HELP rulehost_events Events delivered to the rules' dispatcher, by kind.",
        ] {
            assert!(text.contains(series), "{series} missing from:\n{text}");
        }
    }
}

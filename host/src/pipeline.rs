//! The stages every event goes through after its source, shared by `run` (kernel
//! events) and `replay` (recorded JSON): **record** (optional, rulehost's own event
//! format), **dispatch** (the rules that selected it, one wasm call per batch),
//! **enrich** (the node name, runtime metadata), **filter** (the operator's
//! exceptions) and **sink** (findings as JSON lines, and to webhooks). `run` and `replay` differ only in their source, so
//! replay tests exercise exactly the code that runs live.

use crate::dispatch::Dispatcher;
use crate::events::Event;
use crate::exceptions::Exceptions;
use crate::metadata::Metadata;
use crate::server::metrics::Metrics;
use crate::sinks::Webhooks;
use crate::sinks::{Finding, JsonLines};
use anyhow::Result;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A findings write taking longer than this is reported as a slow output.
const SLOW_OUTPUT: Duration = Duration::from_secs(1);

/// Record, dispatch and sink, with the batch being assembled.
pub(crate) struct Pipeline {
    pub dispatcher: Dispatcher,
    record: Option<JsonLines>,
    output: JsonLines,
    batch: Vec<Event>,
    findings: Vec<Finding>,
    /// Named in every finding.
    node: Option<std::sync::Arc<str>>,
    /// Runtime metadata (`run` only): lookups, and findings waiting for them.
    pub metadata: Option<Metadata>,
    pub exceptions: Exceptions,
    /// Counted as events and findings go through (`run --listen`).
    metrics: Option<Arc<Metrics>>,
    /// Findings also POSTed (`run --webhook`).
    pub webhooks: Webhooks,
}

impl Pipeline {
    pub(crate) fn new(
        dispatcher: Dispatcher,
        output: JsonLines,
        record: Option<JsonLines>,
    ) -> Pipeline {
        Pipeline {
            dispatcher,
            record,
            output,
            batch: Vec::new(),
            findings: Vec::new(),
            node: None,
            metadata: None,
            exceptions: Exceptions::default(),
            metrics: None,
            webhooks: Webhooks::default(),
        }
    }

    /// Counts events and findings in `metrics`, the dispatcher's per rule too.
    pub(crate) fn with_metrics(mut self, metrics: Option<Arc<Metrics>>) -> Pipeline {
        self.dispatcher.metrics = metrics.clone();
        self.metrics = metrics;
        self
    }

    /// Where events and findings are counted, if anywhere.
    pub(crate) fn metrics(&self) -> Option<&Metrics> {
        self.metrics.as_deref()
    }

    /// Also sends every finding written to `webhooks` (sink stage).
    pub(crate) fn with_webhooks(mut self, webhooks: Webhooks) -> Pipeline {
        self.webhooks = webhooks;
        self
    }

    /// Looks containers up in their runtimes (enrich stage).
    pub(crate) fn with_metadata(mut self, metadata: Option<Metadata>) -> Pipeline {
        self.metadata = metadata;
        self
    }

    /// Gives `event` its container's runtime metadata when known; a container's first
    /// event starts its lookup. Never waits.
    pub(crate) fn observe(&mut self, event: &mut Event) {
        if let (Some(metadata), Some(container)) = (self.metadata.as_mut(), &event.container)
            && let Some(enriched) = metadata.observe(container)
        {
            event.container = Some(enriched);
        }
    }

    /// Names `node` in every finding (enrich stage).
    pub(crate) fn with_node(mut self, node: Option<String>) -> Pipeline {
        self.node = node.map(Into::into);
        self
    }

    /// Filters findings through `exceptions` (filter stage).
    pub(crate) fn with_exceptions(mut self, exceptions: Exceptions) -> Pipeline {
        self.exceptions = exceptions;
        self
    }

    /// Events waiting in the batch.
    pub(crate) fn pending(&self) -> usize {
        self.batch.len()
    }

    /// Record stage: the event is recorded and joins the batch.
    pub(crate) fn push(&mut self, event: Event) -> Result<()> {
        if let Some(record) = self.record.as_mut() {
            record.write(&event)?;
        }
        self.batch.push(event);
        Ok(())
    }

    /// Dispatch and sink stages for the batch so far. The record is flushed first, so
    /// an event is readable there before any finding about it.
    pub(crate) fn deliver(&mut self) -> Result<()> {
        if let Some(record) = self.record.as_mut() {
            record.flush()?;
        }
        if !self.batch.is_empty() {
            if let Some(metrics) = &self.metrics {
                metrics.events(&self.batch);
            }
            let batch = std::mem::take(&mut self.batch);
            self.batch = self.dispatcher.dispatch(batch, &mut self.findings);
            self.batch.clear();
            for finding in &mut self.findings {
                finding.node.clone_from(&self.node);
            }
        }
        if let Some(metadata) = self.metadata.as_mut() {
            metadata.hold(&mut self.findings);
            metadata.release(Instant::now(), &mut self.findings);
        }
        self.sink()
    }

    /// Filter and sink stages for the findings ready to go.
    fn sink(&mut self) -> Result<()> {
        if self.findings.is_empty() {
            return Ok(());
        }
        let metrics = self.metrics.as_deref();
        self.exceptions.filter(&mut self.findings, |rule| {
            if let Some(metrics) = metrics {
                metrics.finding_suppressed(rule);
            }
        });
        let started = Instant::now();
        for finding in &self.findings {
            self.output.write(finding)?;
        }
        self.output.flush()?;
        let blocked = started.elapsed();
        if let Some(metrics) = metrics {
            let now = crate::events::now_ns();
            for finding in &self.findings {
                metrics.finding_written(&finding.signature().id, finding.timestamp, now);
            }
        }
        for finding in self.findings.drain(..) {
            self.webhooks.send(&finding);
        }
        if blocked > SLOW_OUTPUT {
            // While output blocks, kernel events wait in the bounded ring buffer (host
            // memory does not grow); if it fills, drops are counted and reported.
            tracing::warn!(
                blocked_secs = blocked.as_secs_f64(),
                "writing findings blocked (slow reader or full disk); the kernel may drop events meanwhile"
            );
        }
        Ok(())
    }

    /// Writes a record about rulehost itself into the findings stream, at once.
    pub(crate) fn write_now(&mut self, record: &impl serde::Serialize) -> Result<()> {
        self.output.write(record)?;
        self.output.flush()
    }

    /// Delivers what is left, findings still waiting for metadata included, and
    /// flushes every output.
    pub(crate) fn finish(&mut self) -> Result<()> {
        self.deliver()?;
        if let Some(metadata) = self.metadata.as_mut() {
            let later = Instant::now() + metadata.wait();
            metadata.release(later, &mut self.findings);
            self.sink()?;
        }
        self.output.flush()
    }
}

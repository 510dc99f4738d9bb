//! Health reporting: what the host could not see (kernel drops) goes to the log and,
//! as a record, into the findings stream, so a SIEM sees the blind spot.

use crate::pipeline::Pipeline;
use crate::sensor::Probes;
use anyhow::Result;

/// A record in the findings stream about rulehost itself (not a detection).
#[derive(Debug, serde::Serialize)]
pub(crate) struct Health {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub reason: &'static str,
    /// Events lost since the previous health record.
    pub dropped: u64,
    /// Per kind, in all since start.
    pub dropped_exec: u64,
    pub dropped_connect: u64,
    pub dropped_cgroup: u64,
    /// Nanoseconds since the Unix epoch.
    pub timestamp: u64,
}

/// Kernel drops reported so far.
#[derive(Debug, Default)]
pub(crate) struct DropReporter {
    seen: u64,
    /// Per kind, as last reported: exec, connect, cgroup.
    kinds: [u64; 3],
    /// Events the kernel filtered on purpose, as last counted: host cgroups, unwatched
    /// destinations.
    filtered: [u64; 2],
}

impl DropReporter {
    /// Reports drops counted since the last call, if any; counts what the kernel
    /// filtered on purpose in the metrics.
    pub(crate) fn report(&mut self, probes: &Probes, pipeline: &mut Pipeline) -> Result<()> {
        let counters = probes.counters();
        let filtered = [counters.filtered, counters.unwatched];
        if let Some(metrics) = pipeline.metrics() {
            for ((reason, now), before) in crate::server::metrics::FILTER_REASONS
                .into_iter()
                .zip(filtered)
                .zip(self.filtered)
            {
                metrics.kernel_filtered(reason, now.saturating_sub(before));
            }
        }
        self.filtered = filtered;
        let total = counters.exec + counters.connect + counters.cgroup;
        if total <= self.seen {
            return Ok(());
        }
        let dropped = total - self.seen;
        self.seen = total;
        tracing::warn!(
            dropped,
            total,
            "the kernel dropped events (ring buffer full)"
        );
        let kinds = [counters.exec, counters.connect, counters.cgroup];
        if let Some(metrics) = pipeline.metrics() {
            for ((name, now), before) in crate::server::metrics::KERNEL_KINDS
                .into_iter()
                .zip(kinds)
                .zip(self.kinds)
            {
                metrics.kernel_drops(name, now.saturating_sub(before));
            }
        }
        self.kinds = kinds;
        pipeline.write_now(&Health {
            kind: "health",
            reason: "kernel_drops",
            dropped,
            dropped_exec: counters.exec,
            dropped_connect: counters.connect,
            dropped_cgroup: counters.cgroup,
            timestamp: crate::events::now_ns(),
        })
    }

    /// Drops reported in all.
    pub(crate) fn total(&self) -> u64 {
        self.seen
    }

    /// Connects the kernel did not send because no rule watches their destination.
    pub(crate) fn unwatched(&self) -> u64 {
        self.filtered[1]
    }
}

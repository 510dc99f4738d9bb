//! `rulehost run`: the node agent. Its loop is the pipeline over kernel events, one
//! stage a line: wait, drain the ring buffer (source), resolve containers, record,
//! dispatch and sink (the shared [`Pipeline`]), apply finished reloads, report health.
//! Start-up, reload application, health and signals are their own modules.

mod config_watch;
mod health;
mod needs;
mod reloads;
mod signals;
mod startup;

pub(crate) use config_watch::report_suppressed;
pub(crate) use startup::RunOptions;

use crate::containers::{ContainerResolver, Resolution, parse_cgroup_path};
use crate::events::Event;
use crate::logging::error_line;
use crate::pipeline::Pipeline;
use crate::sensor::{ProbeEvent, Probes};
use crate::server::ready::ReadyFile;
use anyhow::Result;
use health::DropReporter;
use reloads::{Reloads, Update};
use signals::Signal;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

/// How long the agent waits for the ring buffer before looking anyway: the kernel only
/// wakes user space past a fill threshold, so this bounds detection latency.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// How long an idle agent sleeps: the kernel wakes it at the next record (see
/// [`Probes::arm_idle_wakeup`]), so this only paces health reports and the drop
/// counters; well inside the health check's 10 s.
const IDLE_INTERVAL: Duration = Duration::from_secs(1);

/// Runs the agent until SIGINT or SIGTERM (or, with `--check`, validates and returns).
pub(crate) async fn run(options: RunOptions) -> Result<()> {
    let mut signals = signals::watch()?;
    crate::oci::follow::start(
        &options.oci,
        &options.sources.trust,
        &options.registry_credentials,
        options.oci_follow,
    )
    .await?;
    let metadata = match options.check {
        true => None,
        false => {
            Some(crate::metadata::Metadata::connect(&options.sockets, options.metadata_wait).await)
        }
    };
    let Some(mut agent) = startup::start(options, metadata)? else {
        return Ok(());
    };
    agent.run(&mut signals).await?;
    agent.stop()
}

/// The next finished metadata lookup; never, without metadata.
async fn lookups(
    metadata: &mut Option<crate::metadata::Metadata>,
) -> Option<crate::metadata::LookupResult> {
    match metadata {
        Some(metadata) => metadata.results.recv().await,
        None => std::future::pending().await,
    }
}

/// The next EndpointSlices change; never, without a watch.
async fn slice_updates(
    slices: &mut Option<crate::api_servers::SliceUpdates>,
) -> Option<(Vec<SocketAddr>, Vec<SocketAddr>)> {
    match slices {
        Some(slices) => slices.next().await,
        None => std::future::pending().await,
    }
}

/// A running agent: probes attached, rules loaded, outputs open.
struct Agent {
    probes: Probes,
    resolver: ContainerResolver,
    pipeline: Pipeline,
    reloads: Reloads,
    config: Option<config_watch::ConfigWatch>,
    drops: DropReporter,
    /// Removed (a clean exit) when the agent is dropped.
    _ready_file: Option<ReadyFile>,
    raw: Vec<ProbeEvent>,
    /// What `/healthz` and `/readyz` report.
    status: std::sync::Arc<crate::server::listen::Status>,
    /// Runs the listener and the webhook sinks; stopped last.
    io: Option<crate::server::listen::IoThread>,
    /// The EndpointSlices watch, in a cluster.
    slices: Option<crate::api_servers::SliceUpdates>,
    /// The rules' interest generation the kernel's connect filter was last set from.
    interest_seen: Option<u64>,
    /// The rules' needs this kernel does not meet, as last reported.
    unmet: Vec<crate::sensor::Unmet>,
}

/// What woke the loop.
#[derive(Default)]
struct Wake {
    stop: bool,
    update: Option<Update>,
    /// The config file changed.
    config: bool,
    /// A container metadata lookup finished.
    metadata: Option<crate::metadata::LookupResult>,
    /// The API server endpoints changed: all of them, and the EndpointSlices' own.
    api_servers: Option<(Vec<SocketAddr>, Vec<SocketAddr>)>,
}

impl Agent {
    async fn run(&mut self, signals: &mut UnboundedReceiver<Signal>) -> Result<()> {
        loop {
            let wake = self.wait(signals).await;
            self.status.turn();
            // Drain even when stopping, so nothing already in the ring buffer is lost.
            self.drain()?;
            self.pipeline.deliver()?;
            if let Some(update) = wake.update {
                self.apply_update(update);
            }
            if let Some((all, _)) = &wake.api_servers {
                self.pipeline.dispatcher.set_api_servers(all.clone());
            }
            self.sync_connect_filter();
            if let Some((all, from_slices)) = wake.api_servers {
                // Announced once rules and the kernel filter both have it.
                tracing::info!(endpoints = ?all, endpointslices = ?from_slices, "API server endpoints changed");
            }
            if let (Some(result), Some(metadata)) = (wake.metadata, &mut self.pipeline.metadata) {
                metadata.apply(result);
            }
            if wake.config
                && let Some(config) = &self.config
            {
                config.reload(&mut self.pipeline.exceptions);
            }
            self.drops.report(&self.probes, &mut self.pipeline)?;
            if wake.stop {
                return Ok(());
            }
        }
    }

    /// Waits for the ring buffer (or the poll interval), a rule change, a signal or a
    /// finished rescan or compile.
    async fn wait(&mut self, signals: &mut UnboundedReceiver<Signal>) -> Wake {
        let timeout = match self.probes.idle_armed() {
            true => IDLE_INTERVAL,
            false => POLL_INTERVAL,
        };
        let reloads = &mut self.reloads;
        tokio::select! {
            _ = self.probes.readable(timeout) => Wake::default(),
            Some(()) = reloads.changed.recv() => {
                reloads.request();
                Wake::default()
            }
            Some(signal) = signals.recv() => match signal {
                Signal::Reload => {
                    reloads.request_rescan();
                    Wake::default()
                }
                Signal::Stop => Wake { stop: true, ..Wake::default() },
            },
            Some(update) = reloads.updates.recv() => Wake { update: Some(update), ..Wake::default() },
            () = config_watch::ConfigWatch::changed(&mut self.config) => Wake { config: true, ..Wake::default() },
            Some(result) = lookups(&mut self.pipeline.metadata) => Wake { metadata: Some(result), ..Wake::default() },
            Some(change) = slice_updates(&mut self.slices) => Wake { api_servers: Some(change), ..Wake::default() },
        }
    }

    /// Source and resolve stages: every record in the ring buffer, decoded, its
    /// container resolved, into the pipeline; cgroup events update the resolver.
    fn drain(&mut self) -> Result<()> {
        let drained = self.probes.drain(&mut self.raw);
        let holding = self
            .pipeline
            .metadata
            .as_ref()
            .is_some_and(|m| m.is_holding());
        if drained == 0
            && !holding
            && !self.probes.idle_armed()
            && self.probes.arm_idle_wakeup().is_ok()
        {
            // Nothing came and nothing waits on a timer: sleep until the next record.
            self.probes.drain(&mut self.raw);
        }
        let mut raw = std::mem::take(&mut self.raw);
        for probe_event in raw.drain(..) {
            match probe_event {
                ProbeEvent::Event(event) => self.resolve(event, None)?,
                ProbeEvent::Escaped {
                    event,
                    origin_cgroup_id,
                } => self.resolve(event, Some(origin_cgroup_id))?,
                ProbeEvent::CgroupCreated { cgroup_id, path } => {
                    // Known before any process in it can run: no walk, no race.
                    if self.resolver.insert(cgroup_id, &path).is_none() {
                        let _ = self.probes.mark_host_cgroup(cgroup_id);
                    }
                }
                ProbeEvent::CgroupRemoved { cgroup_id, path } => {
                    // Events before the removal still belong to the container.
                    self.pipeline.deliver()?;
                    let container =
                        parse_cgroup_path(&path).or_else(|| self.resolver.resolve_owned(cgroup_id));
                    self.resolver.forget(cgroup_id);
                    if let Some(container) = container {
                        self.pipeline.dispatcher.container_removed(&container.id);
                        if let Some(metadata) = self.pipeline.metadata.as_mut() {
                            metadata.forget(&container.id);
                        }
                        tracing::debug!(container = %container.id, "container gone: state evicted");
                    }
                }
            }
        }
        self.raw = raw;
        Ok(())
    }

    /// Resolve stage for one exec or connect: its cgroup's container, else (for a
    /// process that left a container's cgroup) the container its lineage started in,
    /// marked; then into the pipeline.
    fn resolve(&mut self, mut event: Event, origin: Option<u64>) -> Result<()> {
        match self
            .resolver
            .resolve_event(event.cgroup_id, event.process.pid)
        {
            Resolution::Container(container) => {
                event.container = Some(container);
                self.pipeline.observe(&mut event);
            }
            resolution => {
                if resolution == Resolution::Host {
                    // Teach the kernel: this cgroup is not a container.
                    let _ = self.probes.mark_host_cgroup(event.cgroup_id);
                }
                if let Some(container) = origin.and_then(|id| self.resolver.resolve(id)) {
                    event.container = Some(container);
                    event.process.left_container_cgroup = true;
                    self.pipeline.observe(&mut event);
                }
            }
        }
        self.pipeline.push(event)
    }

    /// Applies a finished rescan or compile between two batches, then tells the kernel
    /// what the new set of rules needs.
    fn apply_update(&mut self, update: Update) {
        let dispatcher = &mut self.pipeline.dispatcher;
        let env_before = dispatcher.env_vars();
        self.reloads.apply_update(dispatcher, update);
        let env_after = dispatcher.env_vars();
        if env_after != env_before
            && let Err(error) = self.probes.set_env_vars(&env_after)
        {
            tracing::warn!(error = %error_line(error.as_ref()), "cannot update the captured env names");
        }
        let containers_only = startup::only_containers_wanted(dispatcher);
        // Rules came or went: the connect filter is computed again.
        self.interest_seen = None;
        if let Err(error) = self.probes.set_containers_only(containers_only) {
            tracing::warn!(error = %error_line(error.as_ref()), "cannot update the kernel filter");
        }
        // A rule that came may need what this kernel cannot give: said again.
        let unmet = needs::unmet(&self.pipeline.dispatcher, &self.probes);
        if unmet != self.unmet {
            needs::warn(&unmet);
            if let Some(metrics) = self.pipeline.metrics() {
                metrics.unmet_needs(&unmet);
            }
            self.unmet = unmet;
        }
    }

    /// Filter stage, kernel side: after the rules saw the drained events, tells the
    /// kernel what they watch now (when that may have changed), then counts the
    /// drained execs as processed, which arms the filter again for their cgroups.
    fn sync_connect_filter(&mut self) {
        let generation = self.pipeline.dispatcher.interest_generation();
        if self.interest_seen != Some(generation) {
            self.interest_seen = Some(generation);
            let watched = self.pipeline.dispatcher.connect_filter();
            match self.probes.set_connect_filter(watched.as_ref()) {
                Ok(()) => tracing::debug!(
                    destinations = watched.as_ref().map(|w| w.len()),
                    "connect filter set"
                ),
                Err(error) => {
                    tracing::warn!(error = %error_line(error.as_ref()), "cannot set the connect filter; every connect is sent");
                    let _ = self.probes.set_connect_filter(None);
                }
            }
        }
        match self.probes.settle() {
            Ok(true) if self.probes.connect_filter_lost() => {
                tracing::warn!("the kernel's pending-exec map is full: the connect filter is off");
                let _ = self.probes.set_connect_filter(None);
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(error = %error_line(error.as_ref()), "cannot settle processed execs; turning the connect filter off");
                let _ = self.probes.set_connect_filter(None);
            }
        }
    }

    /// Shutdown: flush what is left and say what was done.
    fn stop(mut self) -> Result<()> {
        self.pipeline.finish()?;
        let c = self.pipeline.dispatcher.counters;
        tracing::info!(
            events = c.events,
            findings = c.findings,
            rule_faults = c.rule_faults,
            kernel_drops = self.drops.total(),
            kernel_unwatched = self.drops.unwatched(),
            suppressed = self.pipeline.exceptions.suppressed().values().sum::<u64>(),
            "stopped"
        );
        report_suppressed(&self.pipeline.exceptions);
        std::mem::take(&mut self.pipeline.webhooks).close();
        drop(self.io.take());
        Ok(())
    }
}

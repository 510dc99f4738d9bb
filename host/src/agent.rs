//! `rulehost run`: the node agent. Kernel events in (probes), containers resolved,
//! rules dispatched, findings out; clean shutdown on SIGINT/SIGTERM.

use crate::containers::{ContainerResolver, Resolution, parse_cgroup_path};
use crate::dispatch::Dispatcher;
use crate::events::Event;
use crate::output::JsonLines;
use crate::probes::{ProbeConfig, ProbeEvent, Probes};
use crate::runtime::{Limits, Origin, Runtime};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};

/// How long the agent waits for the ring buffer before looking anyway: the kernel only
/// wakes user space past a fill threshold, so this bounds detection latency.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// What `run` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub rules: Vec<PathBuf>,
    pub output: Option<PathBuf>,
    pub record: Option<PathBuf>,
    pub limits: Limits,
}

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(options: RunOptions) -> Result<()> {
    let runtime = Arc::new(Runtime::new(options.limits.clone())?);
    let mut dispatcher = Dispatcher::new(runtime.clone());
    for rule in crate::rules::load_all(&runtime, &options.rules)? {
        eprintln!(
            "rulehost: loaded rule {} ({} {} v{}) sha256 {}",
            rule.name,
            rule.metadata.id,
            rule.metadata.event_name,
            rule.metadata.version,
            rule.sha256
        );
        dispatcher.add(rule)?;
    }
    let containers_only = dispatcher
        .rules()
        .all(|rule| rule.metadata.origin == Origin::Container);
    let mut probes = Probes::start(&ProbeConfig {
        env_vars: dispatcher.env_vars(),
        containers_only,
        bpf_object: None,
    })?;
    let mut resolver = ContainerResolver::detect()?;
    let mut output = match &options.output {
        Some(path) => JsonLines::file(path)?,
        None => JsonLines::stdout(),
    };
    let mut record = options.record.as_deref().map(JsonLines::file).transpose()?;
    for fallback in probes.fallbacks() {
        eprintln!("rulehost: {fallback}");
    }
    eprintln!(
        "rulehost: ready: exec hook {}, connect hook {}, cgroup hook {}, capturing env {:?}",
        probes.exec_hook(),
        probes.connect_hook(),
        probes.cgroup_hook(),
        dispatcher.env_vars()
    );

    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut raw = Vec::new();
    let mut batch: Vec<Event> = Vec::new();
    let mut findings = Vec::new();
    let mut drops_seen = 0;
    loop {
        let stop = tokio::select! {
            _ = probes.readable(POLL_INTERVAL) => false,
            _ = sigint.recv() => true,
            _ = sigterm.recv() => true,
        };
        // Drain even when stopping, so nothing already in the ring buffer is lost.
        probes.drain(&mut raw);
        for probe_event in raw.drain(..) {
            match probe_event {
                ProbeEvent::Event(mut event) => {
                    match resolver.resolve_event(event.cgroup_id, event.process.pid) {
                        Resolution::Container(container) => event.container = Some(container),
                        Resolution::Host if containers_only => {
                            // Teach the kernel filter: this cgroup is not a container.
                            let _ = probes.mark_host_cgroup(event.cgroup_id);
                        }
                        Resolution::Host | Resolution::Unknown => {}
                    }
                    if let Some(record) = record.as_mut() {
                        record.write(&event)?;
                    }
                    batch.push(event);
                }
                ProbeEvent::CgroupCreated { cgroup_id, path } => {
                    // Known before any process in it can run: no walk, no race.
                    resolver.insert(cgroup_id, &path);
                }
                ProbeEvent::CgroupRemoved { cgroup_id, path } => {
                    // Events before the removal still belong to the container.
                    batch = deliver(&mut dispatcher, batch, &mut findings, &mut output)?;
                    let container =
                        parse_cgroup_path(&path).or_else(|| resolver.resolve(cgroup_id));
                    resolver.forget(cgroup_id);
                    if let Some(container) = container {
                        dispatcher.container_removed(&container.id);
                        eprintln!("rulehost: container {} gone: state evicted", container.id);
                    }
                }
            }
        }
        batch = deliver(&mut dispatcher, batch, &mut findings, &mut output)?;
        if let Some(record) = record.as_mut() {
            record.flush()?;
        }
        let drops = probes.drops();
        if drops > drops_seen {
            eprintln!(
                "rulehost: warning: the kernel dropped {} event(s) (ring buffer full); {drops} in all",
                drops - drops_seen
            );
            drops_seen = drops;
        }
        if stop {
            break;
        }
    }
    output.flush()?;
    let c = dispatcher.counters;
    eprintln!(
        "rulehost: stopped: {} events, {} findings, {} rule faults, {} kernel drops",
        c.events, c.findings, c.rule_faults, drops_seen
    );
    Ok(())
}

/// Dispatches a batch and writes its findings; returns the emptied buffer.
fn deliver(
    dispatcher: &mut Dispatcher,
    batch: Vec<Event>,
    findings: &mut Vec<crate::output::Finding>,
    output: &mut JsonLines,
) -> Result<Vec<Event>> {
    if batch.is_empty() {
        return Ok(batch);
    }
    let mut batch = dispatcher.dispatch(batch, findings);
    batch.clear();
    for finding in findings.drain(..) {
        output.write(&finding)?;
    }
    output.flush()?;
    Ok(batch)
}

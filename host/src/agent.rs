//! `rulehost run`: the node agent. Kernel events in (probes), containers resolved,
//! rules dispatched, findings out; clean shutdown on SIGINT/SIGTERM.

use crate::containers::{ContainerResolver, Resolution, parse_cgroup_path};
use crate::dispatch::Dispatcher;
use crate::events::Event;
use crate::output::JsonLines;
use crate::probes::{ProbeConfig, ProbeEvent, Probes};
use crate::ready::{Ready, ReadyFile};
use crate::reload::{Change, Loaded, RuleSources, Watcher};
use crate::runtime::{Limits, Origin, Rule, Runtime};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How long the agent waits for the ring buffer before looking anyway: the kernel only
/// wakes user space past a fill threshold, so this bounds detection latency.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// A findings write taking longer than this is reported as a slow output.
const SLOW_OUTPUT: Duration = Duration::from_secs(1);

/// What `run` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Validate rules and kernel support, then exit without attaching.
    pub check: bool,
    /// Kernel ring buffer size; default 8 MiB.
    pub ring_buffer_kib: Option<u32>,
    /// Rule files (`--rule`) and directories of rules (`--rules`); both watched.
    pub sources: RuleSources,
    /// Where compiled rules are cached across reloads and restarts.
    pub cache_dir: Option<PathBuf>,
    /// Where per-container rule state is persisted; `None`: memory only.
    pub state_dir: Option<PathBuf>,
    pub output: Option<PathBuf>,
    pub record: Option<PathBuf>,
    /// Written once attached, swept and restored; removed on a clean exit.
    pub ready_file: Option<PathBuf>,
    pub limits: Limits,
}

/// Runs the agent until SIGINT or SIGTERM.
pub async fn run(options: RunOptions) -> Result<()> {
    // Before any thread exists, so every thread inherits the blocked mask.
    let mut signals = watch_signals()?;
    if let Some(path) = &options.ready_file {
        // A file left by an agent that was killed must not claim this one is ready.
        let _ = std::fs::remove_file(path);
    }
    let runtime = Arc::new(Runtime::with_compile_cache(
        options.limits.clone(),
        options.cache_dir.as_deref(),
    )?);
    let mut dispatcher = Dispatcher::new(runtime.clone());
    let mut loaded = Loaded::default();
    if options.sources.is_empty() {
        let rule = crate::rules::load_all(&runtime, &[] as &[PathBuf])?.remove(0);
        log_rule("loaded", &rule, crate::rules::BUILTIN_NAME, None);
        dispatcher.add(rule)?;
    } else {
        let changes =
            crate::reload::plan(&runtime, &options.sources, &loaded.rules, &loaded.rejected);
        for change in changes {
            if let Change::Reject { path, reason, .. } = &change
                && options.sources.files.contains(path)
            {
                anyhow::bail!("cannot load rule {}: {reason}", path.display());
            }
            apply(&mut dispatcher, &mut loaded, change);
        }
    }
    if options.check {
        for rule in dispatcher.rules() {
            println!(
                "rule {}: {} v{} sha256 {} ok",
                rule.name, rule.metadata.id, rule.metadata.version, rule.sha256
            );
        }
        for fact in Probes::preflight()? {
            println!("{fact}");
        }
        println!("check passed");
        return Ok(());
    }
    let mut containers_only = only_containers_wanted(&dispatcher);
    let mut probes = Probes::start(&ProbeConfig {
        env_vars: dispatcher.env_vars(),
        containers_only,
        ring_bytes: options.ring_buffer_kib.map(|kib| kib.saturating_mul(1024)),
        ..ProbeConfig::default()
    })?;
    let mut resolver = ContainerResolver::detect()?;
    let mut findings = Vec::new();
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

    // The watcher runs as its own task: waiting for settled file events is not
    // cancel-safe, the channel it feeds is.
    let (changed_tx, mut changed_rx) = tokio::sync::mpsc::channel::<()>(1);
    if !options.sources.is_empty() {
        let mut watcher = Watcher::new(&options.sources)?;
        tokio::spawn(async move {
            loop {
                watcher.changed().await;
                if changed_tx.send(()).await.is_err() {
                    break;
                }
            }
        });
    }
    let (plans_tx, mut plans) = tokio::sync::mpsc::channel::<Vec<Change>>(1);
    let mut planning = false;
    let mut reload_pending = false;
    // Containers already running (which may never exec again) are seen through /proc;
    // the probes are attached first, so nothing starting meanwhile slips through.
    let swept = crate::sweep::running_containers(&mut resolver, &dispatcher.env_vars());
    let containers: std::collections::BTreeSet<String> = swept
        .iter()
        .filter_map(|e| e.container.as_ref().map(|c| c.id.clone()))
        .collect();
    eprintln!(
        "rulehost: start-up sweep: {} process(es) in {} running container(s)",
        swept.len(),
        containers.len()
    );
    // Restore state persisted before a restart (only for containers still running),
    // before the sweep's events, so what was learnt before is not overwritten.
    let mut restored = None;
    if let Some(dir) = &options.state_dir {
        let report = dispatcher.persist_to(dir, |id| containers.contains(id))?;
        eprintln!("rulehost: state {}: {report}", dir.display());
        restored = Some(report);
    }
    if let Some(record) = record.as_mut() {
        for event in &swept {
            record.write(event)?;
        }
        // Recorded before any finding about them is written (readers rely on it).
        record.flush()?;
    }
    let ready = Ready {
        pid: std::process::id(),
        exec_hook: probes.exec_hook(),
        connect_hook: probes.connect_hook(),
        cgroup_hook: probes.cgroup_hook(),
        env_vars: dispatcher.env_vars(),
        swept_processes: swept.len(),
        swept_containers: containers.len(),
        restored,
        rules: dispatcher.rules().map(|r| r.metadata.id.clone()).collect(),
    };
    deliver(&mut dispatcher, swept, &mut findings, &mut output)?;
    let _ready_file = options
        .ready_file
        .as_deref()
        .map(|path| ReadyFile::write(path, &ready))
        .transpose()?;

    let mut raw = Vec::new();
    let mut batch: Vec<Event> = Vec::new();
    let mut drops_seen = 0;
    loop {
        let mut reload = false;
        let mut ready_changes = None;
        let stop = tokio::select! {
            _ = probes.readable(POLL_INTERVAL) => false,
            Some(()) = changed_rx.recv() => { reload = true; false }
            Some(signal) = signals.recv() => match signal {
                Signal::Reload => {
                    eprintln!("rulehost: SIGHUP: rescanning rules");
                    // An explicit request retries files rejected before.
                    loaded.rejected.clear();
                    reload = true;
                    false
                }
                Signal::Stop => true,
            },
            Some(changes) = plans.recv() => { ready_changes = Some(changes); false }
        };
        // A change noticed while a plan runs is planned again once that one is applied.
        reload_pending |= reload;
        if reload_pending && !planning && !options.sources.is_empty() {
            // Compile and validate off the event path; events keep flowing to the
            // loaded versions meanwhile.
            planning = true;
            reload_pending = false;
            let (runtime, sources, tx) =
                (runtime.clone(), options.sources.clone(), plans_tx.clone());
            let (rules, rejected) = (loaded.rules.clone(), loaded.rejected.clone());
            tokio::task::spawn_blocking(move || {
                let changes = crate::reload::plan(&runtime, &sources, &rules, &rejected);
                let _ = tx.blocking_send(changes);
            });
        }
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
                    flush_record(&mut record)?;
                    batch = deliver(&mut dispatcher, batch, &mut findings, &mut output)?;
                    let container =
                        parse_cgroup_path(&path).or_else(|| resolver.resolve_owned(cgroup_id));
                    resolver.forget(cgroup_id);
                    if let Some(container) = container {
                        dispatcher.container_removed(&container.id);
                        eprintln!("rulehost: container {} gone: state evicted", container.id);
                    }
                }
            }
        }
        flush_record(&mut record)?;
        batch = deliver(&mut dispatcher, batch, &mut findings, &mut output)?;
        if let Some(changes) = ready_changes {
            // Between two batches: every event went to exactly one version.
            planning = false;
            let env_before = dispatcher.env_vars();
            for change in changes {
                apply(&mut dispatcher, &mut loaded, change);
            }
            let env_after = dispatcher.env_vars();
            if env_after != env_before
                && let Err(error) = probes.set_env_vars(&env_after)
            {
                eprintln!("rulehost: warning: cannot update the captured env names: {error:#}");
            }
            containers_only = only_containers_wanted(&dispatcher);
            if let Err(error) = probes.set_containers_only(containers_only) {
                eprintln!("rulehost: warning: cannot update the kernel filter: {error:#}");
            }
        }
        let drops = probes.drops();
        if drops > drops_seen {
            eprintln!(
                "rulehost: warning: the kernel dropped {} event(s) (ring buffer full); {drops} in all",
                drops - drops_seen
            );
            // Into the findings stream too, so whoever reads it sees the blind spot.
            let counters = probes.counters();
            output.write(&Health::kernel_drops(drops - drops_seen, &counters))?;
            output.flush()?;
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

/// What a signal asks of the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    /// SIGHUP: rescan the rules.
    Reload,
    /// The first SIGINT/SIGTERM: drain, flush, exit.
    Stop,
}

/// Takes SIGINT, SIGTERM and SIGHUP away from every thread and hands them to one that
/// `sigwait`s: the first SIGINT/SIGTERM asks for a clean stop; a second one exits at
/// once, even while the event loop is blocked writing to a stuck output.
fn watch_signals() -> Result<tokio::sync::mpsc::UnboundedReceiver<Signal>> {
    // SAFETY: signal-set manipulation on local values; pthread_sigmask on this thread.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, signal);
        }
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            anyhow::bail!("cannot block signals for the signal thread");
        }
        set
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("rulehost-signals".into())
        .spawn(move || {
            let mut stopping = false;
            loop {
                let mut signal = 0;
                // SAFETY: waits for one of the blocked signals in `set`.
                if unsafe { libc::sigwait(&set, &mut signal) } != 0 {
                    continue;
                }
                let request = match signal {
                    libc::SIGHUP => Signal::Reload,
                    _ if stopping => {
                        eprintln!("rulehost: second signal: exiting now");
                        // SAFETY: immediate exit, as a second Ctrl-C is meant to be.
                        unsafe { libc::_exit(128 + signal) }
                    }
                    _ => {
                        stopping = true;
                        Signal::Stop
                    }
                };
                if tx.send(request).is_err() {
                    break;
                }
            }
        })
        .context("starting the signal thread")?;
    Ok(rx)
}

/// A record in the findings stream about rulehost itself (not a detection): lets a
/// SIEM see when and how much the host could not see.
#[derive(Debug, serde::Serialize)]
pub struct Health {
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

impl Health {
    fn kernel_drops(dropped: u64, counters: &rulehost_ebpf_common::DropCounters) -> Health {
        Health {
            kind: "health",
            reason: "kernel_drops",
            dropped,
            dropped_exec: counters.exec,
            dropped_connect: counters.connect,
            dropped_cgroup: counters.cgroup,
            timestamp: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
        }
    }
}

/// Whether every loaded rule wants only container events (so the kernel can drop the rest).
fn only_containers_wanted(dispatcher: &Dispatcher) -> bool {
    dispatcher
        .rules()
        .all(|rule| rule.metadata.origin == Origin::Container)
}

/// Applies one reload change to the dispatcher, logging it in one line.
pub fn apply(dispatcher: &mut Dispatcher, loaded: &mut Loaded, change: Change) {
    match change {
        Change::Add { path, rule } => {
            let key = path.display().to_string();
            match dispatcher.add_from(&key, rule.clone()) {
                Ok(()) => {
                    log_rule("loaded", &rule, &key, None);
                    loaded.record(&path, Some(&rule.sha256));
                }
                Err(error) => {
                    eprintln!("rulehost: rejected rule {key}: {error:#}");
                    loaded.reject(&path, Some(&rule.sha256));
                }
            }
        }
        Change::Replace { path, rule } => {
            let key = path.display().to_string();
            match dispatcher.replace(&key, rule.clone()) {
                Ok(old) => {
                    log_rule("reloaded", &rule, &key, Some(&old));
                    loaded.record(&path, Some(&rule.sha256));
                }
                Err(error) => {
                    let keep = dispatcher.rule_from(&key).map_or(String::new(), |r| {
                        format!("; keeping v{} sha256 {}", r.metadata.version, r.sha256)
                    });
                    eprintln!("rulehost: rejected rule {key}: {error:#}{keep}");
                    loaded.reject(&path, Some(&rule.sha256));
                }
            }
        }
        Change::Remove { path } => {
            let key = path.display().to_string();
            if let Some(old) = dispatcher.remove(&key) {
                log_rule("unloaded", &old, &key, None);
            }
            loaded.record(&path, None);
        }
        Change::Reject {
            path,
            reason,
            sha256,
        } => {
            let key = path.display().to_string();
            let keep = dispatcher.rule_from(&key).map_or(String::new(), |r| {
                format!("; keeping v{} sha256 {}", r.metadata.version, r.sha256)
            });
            eprintln!("rulehost: rejected rule {key}: {reason}{keep}");
            loaded.reject(&path, sha256.as_deref());
        }
    }
}

fn log_rule(what: &str, rule: &Rule, source: &str, previous: Option<&Rule>) {
    let was = previous.map_or(String::new(), |p| {
        format!(" (was v{} sha256 {})", p.metadata.version, p.sha256)
    });
    eprintln!(
        "rulehost: {what} rule {} ({} {} v{}) sha256 {} from {source}{was}",
        rule.name, rule.metadata.id, rule.metadata.event_name, rule.metadata.version, rule.sha256
    );
}

/// Flushes the event record, so an event is readable there before any finding about it.
fn flush_record(record: &mut Option<JsonLines>) -> Result<()> {
    match record {
        Some(record) => record.flush(),
        None => Ok(()),
    }
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
    let started = std::time::Instant::now();
    for finding in findings.drain(..) {
        output.write(&finding)?;
    }
    output.flush()?;
    let blocked = started.elapsed();
    if blocked > SLOW_OUTPUT {
        // While output blocks, events wait in the kernel's bounded ring buffer (host
        // memory does not grow); if it fills, drops are counted and reported.
        eprintln!(
            "rulehost: warning: writing findings blocked for {:.1}s (slow reader or full disk); the kernel may drop events meanwhile",
            blocked.as_secs_f64()
        );
    }
    Ok(batch)
}

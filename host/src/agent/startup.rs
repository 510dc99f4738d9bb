//! The agent's start-up, in order: rules loaded (or `--check` reports and stops), probes
//! attached, outputs opened, running containers swept, persisted state restored, and the
//! ready file written.

use super::Agent;
use super::health::DropReporter;
use super::reloads::{Reloads, apply, log_rule};
use crate::containers::ContainerResolver;
use crate::dispatch::Dispatcher;
use crate::logging::error_line;
use crate::pipeline::Pipeline;
use crate::rules::{Limits, Origin, RuleEngine};
use crate::sensor::{ProbeConfig, Probes};
use crate::server::listen::{IoThread, Status};
use crate::server::metrics::Metrics;
use crate::server::ready::{Ready, ReadyFile};
use crate::sinks::JsonLines;
use crate::sinks::Webhooks;
use crate::sources::reload::{Change, Loaded, RuleSources};
use crate::trust::Verdict;
use anyhow::Result;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

/// What `run` was asked to do.
#[derive(Debug, Clone, Default)]
pub(crate) struct RunOptions {
    /// Validate rules and kernel support, then exit without attaching.
    pub check: bool,
    /// Kernel ring buffer size; default 8 MiB.
    pub ring_buffer_kib: Option<u32>,
    /// Rule files (`--rule`) and directories of rules (`--rules`); both watched.
    pub sources: RuleSources,
    /// Rules pulled from registries into files of `sources`.
    pub oci: Vec<crate::oci::follow::OciRule>,
    /// How often registry tags are re-resolved (zero: never).
    pub oci_follow: std::time::Duration,
    /// Logins for the registries of `oci`.
    pub registry_credentials: crate::oci::Credentials,
    /// Where compiled rules are cached across reloads and restarts.
    pub cache_dir: Option<PathBuf>,
    /// Where per-container rule state is persisted; `None`: memory only.
    pub state_dir: Option<PathBuf>,
    pub output: Option<PathBuf>,
    pub record: Option<PathBuf>,
    /// Written once attached, swept and restored; removed on a clean exit.
    pub ready_file: Option<PathBuf>,
    pub limits: Limits,
    /// What each rule id may use.
    pub grants: crate::rules::Grants,
    /// Findings not to write; reloaded when `config` changes.
    pub exceptions: Vec<crate::exceptions::ExceptionSpec>,
    /// The config file, watched for exception changes, and what checks its flag keys
    /// when it is read again (the command line's flags).
    pub config: Option<(PathBuf, crate::config::FlagCheck)>,
    /// Named in every finding.
    pub node: Option<String>,
    /// Runtime sockets to ask for container metadata.
    pub sockets: crate::metadata::Sockets,
    /// Longest a finding waits for its container's metadata.
    pub metadata_wait: std::time::Duration,
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub listen: Option<std::net::SocketAddr>,
    /// Where findings are POSTed, beside the output.
    pub webhooks: Vec<crate::sinks::WebhookSpec>,
    /// Where the API server endpoints rules see come from.
    pub api_servers: crate::api_servers::Sources,
}

/// Starts the agent; `None` after a `--check`, which attaches nothing.
pub(super) fn start(
    options: RunOptions,
    metadata: Option<crate::metadata::Metadata>,
) -> Result<Option<Agent>> {
    if let Some(path) = &options.ready_file {
        // A file left by an agent that was killed must not claim this one is ready.
        let _ = std::fs::remove_file(path);
    }
    let runtime = Arc::new(RuleEngine::isolated(
        options.limits.clone(),
        options.grants.clone(),
        options.cache_dir.as_deref(),
    )?);
    let (mut dispatcher, loaded) = load_rules(&runtime, &options.sources)?;
    let probe_config = ProbeConfig {
        env_vars: dispatcher.env_vars(),
        containers_only: only_containers_wanted(&dispatcher),
        ring_bytes: options.ring_buffer_kib.map(|kib| kib.saturating_mul(1024)),
        ..ProbeConfig::default()
    };
    if options.check {
        check(&dispatcher, &probe_config)?;
        return Ok(None);
    }
    // Before the first event (the start-up sweep's) reaches a rule.
    let slices = crate::api_servers::publish(&options.api_servers, &runtime)?;
    let io = match options.listen.is_some() || !options.webhooks.is_empty() {
        true => Some(IoThread::start()?),
        false => None,
    };
    let status = Arc::new(Status::new());
    let metrics = options.listen.map(|_| Arc::new(Metrics::new()));
    let listen = match (options.listen, &io, &metrics) {
        (Some(addr), Some(io), Some(metrics)) => Some(crate::server::listen::serve(
            addr,
            io.handle(),
            status.clone(),
            metrics.clone(),
        )?),
        _ => None,
    };
    let webhooks = match &io {
        Some(io) => Webhooks::start(&options.webhooks, io.handle(), metrics.clone())?,
        None => Webhooks::default(),
    };
    let mut probes = Probes::start(&probe_config)?;
    for fallback in probes.fallbacks() {
        tracing::info!(reason = %fallback, "probe fallback");
    }
    for load in probes.loads() {
        tracing::debug!(
            program = load.program,
            verified_insns = load.verified_insns,
            load_us = load.load_us,
            "program loaded"
        );
    }
    let unmet = super::needs::unmet(&dispatcher, &probes);
    super::needs::warn(&unmet);
    let mut resolver = ContainerResolver::detect()?;
    // Every host cgroup, so an exec there (after leaving a container) keeps its lineage.
    for cgroup_id in resolver.host_cgroups() {
        let _ = probes.mark_host_cgroup(cgroup_id);
    }
    let output = match &options.output {
        Some(path) => JsonLines::file(path)?,
        None => JsonLines::stdout(),
    };
    let record = options.record.as_deref().map(JsonLines::file).transpose()?;
    let reloads = Reloads::new(runtime, options.sources.clone(), loaded)?;
    let config = options
        .config
        .clone()
        .map(|(path, check)| super::config_watch::ConfigWatch::new(path, check))
        .transpose()?;

    // Containers already running (which may never exec again) are seen through /proc;
    // the probes are attached first, so nothing starting meanwhile slips through.
    let swept = crate::containers::sweep::running_containers(&mut resolver, &dispatcher.env_vars());
    for event in &swept {
        if let Err(error) = probes.seed_lineage(event.process.pid, event.cgroup_id) {
            tracing::debug!(error = %error_line(error.as_ref()), "lineage not seeded");
        }
    }
    let running: BTreeSet<String> = swept
        .iter()
        .filter_map(|e| e.container.as_ref().map(|c| c.id.clone()))
        .collect();
    tracing::info!(
        processes = swept.len(),
        containers = running.len(),
        "start-up sweep"
    );
    // Restore state persisted before a restart (only for containers still running),
    // before the sweep's events, so what was learnt before is not overwritten.
    let restored = match &options.state_dir {
        Some(dir) => {
            let report = dispatcher.persist_to(dir, |id| running.contains(id))?;
            tracing::info!(
                path = %dir.display(),
                restored = report.restored,
                containers = report.containers,
                dropped = report.dropped,
                kept = report.kept,
                refused = report.refused,
                "rule state restored"
            );
            Some(report)
        }
        None => None,
    };
    let ready = Ready {
        pid: std::process::id(),
        exec_hook: probes.exec_hook(),
        connect_hook: probes.connect_hook(),
        cgroup_hook: probes.cgroup_hook(),
        lineage_hook: probes.lineage_hook(),
        env_capture: probes.env_capture(),
        programs: probes.loads().to_vec(),
        unmet,
        env_vars: dispatcher.env_vars(),
        swept_processes: swept.len(),
        swept_containers: running.len(),
        restored,
        rules: dispatcher.rules().map(|r| r.metadata.id.clone()).collect(),
        listen,
    };
    let mut pipeline = Pipeline::new(dispatcher, output, record)
        .with_node(options.node.clone())
        .with_metadata(metadata)
        .with_exceptions(crate::exceptions::Exceptions::new(&options.exceptions))
        .with_metrics(metrics)
        .with_webhooks(webhooks);
    if let Some(metrics) = pipeline.metrics() {
        metrics.rules_loaded(pipeline.dispatcher.rules());
        metrics.unmet_needs(&ready.unmet);
    }
    for mut event in swept {
        pipeline.observe(&mut event);
        pipeline.push(event)?;
    }
    pipeline.deliver()?;
    status.set_ready();
    let ready_file = options
        .ready_file
        .as_deref()
        .map(|path| ReadyFile::write(path, &ready))
        .transpose()?;
    tracing::info!(
        exec_hook = ready.exec_hook,
        connect_hook = ready.connect_hook,
        cgroup_hook = ready.cgroup_hook,
        lineage_hook = ready.lineage_hook,
        env_capture = ready.env_capture.describe(),
        env = ?ready.env_vars,
        unmet = ready.unmet.len(),
        "ready"
    );
    Ok(Some(Agent {
        probes,
        resolver,
        pipeline,
        reloads,
        config,
        drops: DropReporter::default(),
        _ready_file: ready_file,
        raw: Vec::new(),
        status,
        io,
        slices,
        interest_seen: None,
        unmet: ready.unmet.clone(),
    }))
}

/// Loads the rules the sources name (or the built-in rule); a named file that cannot
/// load stops the start.
fn load_rules(runtime: &Arc<RuleEngine>, sources: &RuleSources) -> Result<(Dispatcher, Loaded)> {
    let mut dispatcher = Dispatcher::new(runtime.clone());
    let mut loaded = Loaded::default();
    if sources.is_empty() {
        let rule = crate::sources::load_all(runtime, &[] as &[PathBuf])?.remove(0);
        // Compiled into the binary: as trusted as the binary itself.
        log_rule(
            "rule loaded",
            &rule,
            crate::rules::BUILTIN_NAME,
            None,
            &Verdict::Pinned,
        );
        dispatcher.add(rule)?;
        return Ok((dispatcher, loaded));
    }
    for change in crate::sources::reload::plan(runtime, sources, &loaded.rules, &loaded.rejected) {
        if let Change::Reject { path, reason, .. } = &change
            && sources.files.contains(path)
        {
            anyhow::bail!("cannot load rule {}: {reason}", path.display());
        }
        apply(&mut dispatcher, &mut loaded, change);
    }
    Ok((dispatcher, loaded))
}

/// `run --check`: prints the rules, then what the kernel offers them: the hooks the
/// probes would get (loaded, never attached), each program's verifier figure
/// and load time, and fails on any need of a rule the kernel cannot meet.
fn check(dispatcher: &Dispatcher, probe_config: &ProbeConfig) -> Result<()> {
    for rule in dispatcher.rules() {
        let env = &rule.metadata.env_vars;
        let mut granted = match env.is_empty() {
            true => String::new(),
            false => format!(", granted env {}", env.join(",")),
        };
        let wasi = rule.capabilities();
        if !wasi.is_empty() {
            granted.push_str(&format!(", granted wasi {}", wasi.join(",")));
        }
        crate::logging::say(format_args!(
            "rule {}: {} v{} sha256 {} ok{granted}, {} KiB, memory {} KiB",
            rule.name,
            rule.metadata.id,
            rule.metadata.version,
            rule.sha256,
            rule.size >> 10,
            dispatcher.memory_bytes(&rule.metadata.id) >> 10
        ))?;
    }
    Probes::check_env_vars(&dispatcher.env_vars())?;
    for fact in Probes::preflight()? {
        crate::logging::say(format_args!("{fact}"))?;
    }
    let load_only = crate::sensor::StartOptions {
        load_only: true,
        ..Default::default()
    };
    let probes = Probes::start_with(probe_config, load_only)?;
    crate::logging::say(format_args!(
        "hooks: exec {}, connect {}, cgroup {}, lineage {}",
        probes.exec_hook(),
        probes.connect_hook(),
        probes.cgroup_hook(),
        probes.lineage_hook()
    ))?;
    crate::logging::say(format_args!(
        "env capture: {}",
        probes.env_capture().describe()
    ))?;
    for load in probes.loads() {
        crate::logging::say(format_args!("{}", load.describe()))?;
    }
    for fallback in probes.fallbacks() {
        crate::logging::say(format_args!("passed over: {fallback}"))?;
    }
    let unmet = super::needs::unmet(dispatcher, &probes);
    if let Some(first) = unmet.first() {
        anyhow::bail!(
            "rule {} needs {}, which this kernel cannot give: {}{}",
            first.rule,
            first.need,
            first.reason,
            match unmet.len() {
                1 => String::new(),
                n => format!(" (and {} more unmet need(s))", n - 1),
            }
        );
    }
    crate::logging::say(format_args!("check passed"))
}

/// Whether every loaded rule wants only container events (so the kernel can drop the rest).
pub(super) fn only_containers_wanted(dispatcher: &Dispatcher) -> bool {
    dispatcher
        .rules()
        .all(|rule| rule.metadata.origin == Origin::Container)
}

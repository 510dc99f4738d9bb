//! The wasmtime side: compiling rule components, checking what they import, and running
//! each rule in its own sandboxed store.
//!
//! A [`Rule`] is compiled code plus what the host learned from it at load (metadata,
//! sha256). A [`RuleInstance`] is one live instance with its own `Store`, memory cap
//! and CPU deadline. Per-container state is held in [`RuleState`] outside the instance,
//! so replacing or recreating an instance never loses it.

use crate::cpu_budget::{CallBudget, EPOCH_TICK};
use crate::events::{Container, Event, EventKind};
use crate::logging::{error_line, one_line};
use crate::state::{RuleState, StateLimits, StateRefusal};
use anyhow::{Context, Result, anyhow, bail};
use rustc_hash::FxHashMap;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder};

/// Generated bindings for the `rule` world in `wit/`.
pub mod bindings {
    wasmtime::component::bindgen!({
        world: "rule",
        path: "../wit",
    });
}

use bindings::rulehost::rule::types as wit;

/// The WIT package this host implements.
pub const WORLD_PACKAGE: &str = "rulehost:rule";
/// Its version; rules built for a semver-compatible version load.
pub const WORLD_VERSION: &str = "0.1.0";
/// Interfaces a rule may import; anything else is refused at load.
const ALLOWED_IMPORTS: &[&str] = &["types", "state", "context", "log"];

/// Sandbox and dispatch limits applied to every rule.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Linear memory (and tables) a rule instance may grow to.
    pub memory_bytes: usize,
    /// CPU time a rule may spend per delivered event before it is cut off.
    pub cpu_per_event: Duration,
    /// Findings a rule may return for one event; extra ones are dropped and counted.
    pub max_findings_per_event: usize,
    /// Encoded bytes one finding's data may take; larger findings are dropped and counted.
    pub max_finding_bytes: usize,
    /// Per-container state bounds.
    pub state: StateLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 64 << 20,
            cpu_per_event: Duration::from_millis(10),
            max_findings_per_event: 16,
            max_finding_bytes: 16 * 1024,
            state: StateLimits::default(),
        }
    }
}

/// Container handles shared by the dispatcher (which assigns them) and rule instances
/// (which resolve them through `context.container`).
#[derive(Debug, Default)]
pub struct ContainerTable {
    by_id: FxHashMap<String, u64>,
    by_handle: FxHashMap<u64, Arc<Container>>,
    next: u64,
}

impl ContainerTable {
    /// The handle for a container, assigning a new one on first sight.
    pub fn intern(&mut self, container: &Container) -> u64 {
        if let Some(&handle) = self.by_id.get(&container.id) {
            return handle;
        }
        self.next += 1;
        self.by_id.insert(container.id.clone(), self.next);
        self.by_handle
            .insert(self.next, Arc::new(container.clone()));
        self.next
    }

    /// The handle already assigned to a container id.
    pub fn handle_of(&self, id: &str) -> Option<u64> {
        self.by_id.get(id).copied()
    }

    pub fn get(&self, handle: u64) -> Option<&Container> {
        self.by_handle.get(&handle).map(|c| &**c)
    }

    /// The container behind a handle, shared (no copy).
    pub fn get_shared(&self, handle: u64) -> Option<Arc<Container>> {
        self.by_handle.get(&handle).cloned()
    }

    /// Forgets a container that went away; returns its handle.
    pub fn remove(&mut self, id: &str) -> Option<u64> {
        let handle = self.by_id.remove(id)?;
        self.by_handle.remove(&handle);
        Some(handle)
    }
}

/// Shared container handle table.
pub type Containers = Arc<RwLock<ContainerTable>>;

/// The compiled-code engine shared by all rules.
pub struct Runtime {
    engine: Engine,
    linker: Linker<InstanceState>,
    limits: Limits,
    /// Compiled components by the sha256 of their bytes: reloading a rule seen before
    /// costs no compilation.
    compiled: Mutex<HashMap<String, Component>>,
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl Runtime {
    pub fn new(limits: Limits) -> Result<Runtime> {
        Runtime::with_compile_cache(limits, None)
    }

    /// Like [`Runtime::new`], also keeping compiled code on disk in `cache_dir` (keyed by
    /// content hash, managed by wasmtime), so a restart or a reload to a previously seen
    /// rule skips compilation.
    pub fn with_compile_cache(
        limits: Limits,
        cache_dir: Option<&std::path::Path>,
    ) -> Result<Runtime> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        if let Some(dir) = cache_dir {
            // Without a usable cache directory rules still load, only more slowly.
            match open_compile_cache(dir) {
                Ok(cache) => {
                    config.cache(Some(cache));
                }
                Err(error) => tracing::warn!(
                    error = %error_line(error.as_ref()),
                    "no compile cache: rules are compiled on every load"
                ),
            }
        }
        let engine = Engine::new(&config)
            .map_err(anyhow::Error::from)
            .context("creating the wasmtime engine")?;
        let mut linker = Linker::new(&engine);
        bindings::Rule::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let (ticker_engine, stop) = (engine.weak(), ticker_stop.clone());
        std::thread::Builder::new()
            .name("rulehost-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match ticker_engine.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .context("starting the CPU deadline thread")?;

        Ok(Runtime {
            engine,
            linker,
            limits,
            compiled: Mutex::new(HashMap::new()),
            ticker_stop,
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Validates, compiles and probes a rule: it must be a component of the rule world
    /// importing nothing else; its metadata is read from a first instance.
    pub fn load(&self, name: &str, bytes: &[u8]) -> Result<Arc<Rule>> {
        let sha256 = sha256_hex(bytes);
        let component = self.compile(bytes, &sha256)?;
        let imports = check_world(&self.engine, &component)?;
        let mut rule = Rule {
            name: name.to_owned(),
            sha256,
            size: bytes.len(),
            component,
            imports,
            metadata: Metadata::default(),
        };
        let probe = RuleInstance::new(self, &rule, RuleState::default(), Default::default())?;
        let metadata = probe.metadata.clone();
        rule.metadata = metadata;
        Ok(Arc::new(rule))
    }

    fn compile(&self, bytes: &[u8], sha256: &str) -> Result<Component> {
        if let Some(component) = self.compiled.lock().expect("cache lock").get(sha256) {
            return Ok(component.clone());
        }
        if !bytes.starts_with(b"\0asm") {
            bail!("not a WebAssembly file (no \\0asm header)");
        }
        if wasmparser::Parser::is_core_wasm(bytes) {
            bail!(
                "a core WebAssembly module, not a component: componentize it for the {WORLD_PACKAGE}@{WORLD_VERSION} world"
            );
        }
        let component = Component::new(&self.engine, bytes).map_err(|e| {
            anyhow!(
                "invalid component: {}",
                error_line(anyhow::Error::from(e).as_ref())
            )
        })?;
        self.compiled
            .lock()
            .expect("cache lock")
            .insert(sha256.to_owned(), component.clone());
        Ok(component)
    }
}

fn open_compile_cache(dir: &std::path::Path) -> Result<wasmtime::Cache> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut cache = wasmtime::CacheConfig::new();
    cache.with_directory(dir);
    wasmtime::Cache::new(cache)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("opening {}", dir.display()))
}

/// Checks a component's imports and exports against the rule world; returns its imports.
fn check_world(engine: &Engine, component: &Component) -> Result<Vec<String>> {
    let ty = component.component_type();
    let mut imports = Vec::new();
    for (name, _) in ty.imports(engine) {
        let (package, interface, version) = split_interface_name(name);
        let ours = package == WORLD_PACKAGE && ALLOWED_IMPORTS.contains(&interface);
        if !ours {
            bail!("imports `{name}`, which the {WORLD_PACKAGE} world does not grant");
        }
        check_version(name, version)?;
        imports.push(name.to_owned());
    }
    let mut detector = None;
    for (name, _) in ty.exports(engine) {
        let (package, interface, version) = split_interface_name(name);
        if package == WORLD_PACKAGE && interface == "detector" {
            detector = Some((name, version));
        }
    }
    match detector {
        Some((name, version)) => check_version(name, version)?,
        None => bail!(
            "does not export `{WORLD_PACKAGE}/detector`: not a rule of the {WORLD_PACKAGE}@{WORLD_VERSION} world"
        ),
    }
    Ok(imports)
}

/// Splits `pkg:name/interface@version` into its parts.
fn split_interface_name(name: &str) -> (&str, &str, Option<&str>) {
    let (path, version) = match name.split_once('@') {
        Some((path, version)) => (path, Some(version)),
        None => (name, None),
    };
    match path.split_once('/') {
        Some((package, interface)) => (package, interface, version),
        None => (path, "", version),
    }
}

/// A rule built for another major (or, before 1.0, minor) version cannot load.
fn check_version(name: &str, version: Option<&str>) -> Result<()> {
    let Some(version) = version else {
        bail!("`{name}` has no version; rules target {WORLD_PACKAGE}@{WORLD_VERSION}");
    };
    let track = |v: &str| -> Option<(u64, u64)> {
        let mut parts = v.split('.').map(|p| p.parse::<u64>().ok());
        let major = parts.next()??;
        let minor = parts.next()??;
        Some(if major == 0 { (0, minor) } else { (major, 0) })
    };
    if track(version).is_none() || track(version) != track(WORLD_VERSION) {
        bail!(
            "`{name}` targets {WORLD_PACKAGE}@{version}, incompatible with this host's {WORLD_PACKAGE}@{WORLD_VERSION}"
        );
    }
    Ok(())
}

/// sha256 of `bytes` as lowercase hex: how a rule's exact bytes are named everywhere.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A compiled rule.
pub struct Rule {
    /// The file stem it was loaded from (or the built-in name).
    pub name: String,
    /// sha256 of the exact .wasm bytes, carried by every finding.
    pub sha256: String,
    pub size: usize,
    pub component: Component,
    /// Interfaces it imports (all from the rule world).
    pub imports: Vec<String>,
    pub metadata: Metadata,
}

/// A rule's metadata, in the host's terms; also the `signature` of its findings.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Metadata {
    pub id: String,
    pub version: String,
    pub name: String,
    pub event_name: String,
    pub description: String,
    pub severity: u8,
    pub tags: Vec<String>,
    pub mitre: Option<Mitre>,
    #[serde(skip)]
    pub selects: Vec<EventKind>,
    #[serde(skip)]
    pub origin: Origin,
    #[serde(skip)]
    pub env_vars: Vec<String>,
}

/// MITRE ATT&CK classification.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Mitre {
    pub tactic: String,
    pub technique: String,
    pub technique_id: String,
}

/// Whose events a rule wants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    #[default]
    Any,
    Container,
    Host,
}

impl Metadata {
    fn from_wit(m: wit::RuleMetadata) -> Metadata {
        Metadata {
            id: m.id,
            version: m.version,
            name: m.name,
            event_name: m.event_name,
            description: m.description,
            severity: m.severity,
            tags: m.tags,
            mitre: m.mitre.map(|m| Mitre {
                tactic: m.tactic,
                technique: m.technique,
                technique_id: m.technique_id,
            }),
            selects: m
                .selects
                .into_iter()
                .map(|kind| match kind {
                    wit::EventKind::ProcessExec => EventKind::ProcessExec,
                    wit::EventKind::SocketConnect => EventKind::SocketConnect,
                })
                .collect(),
            origin: match m.origin {
                wit::Origin::Any => Origin::Any,
                wit::Origin::Container => Origin::Container,
                wit::Origin::Host => Origin::Host,
            },
            env_vars: m.env_vars,
        }
    }

    /// Whether this rule is given an event of `kind` from a process in or out of a container.
    pub fn wants(&self, kind: EventKind, in_container: bool) -> bool {
        let origin_ok = match self.origin {
            Origin::Any => true,
            Origin::Container => in_container,
            Origin::Host => !in_container,
        };
        origin_ok && self.selects.contains(&kind)
    }

    /// Whether an env entry (`NAME=value`) is one this rule asked for.
    pub fn wants_env(&self, entry: &str) -> bool {
        let name = entry.split_once('=').map_or(entry, |(name, _)| name);
        self.env_vars.iter().any(|wanted| wanted == name)
    }
}

/// What an instance's host imports see: its state, the batch being delivered, limits.
pub struct InstanceState {
    limits: StoreLimits,
    /// This rule's per-container state (moved between instances, never copied).
    pub state: RuleState,
    /// Host events of the batch being delivered and, per rule-side index, which one.
    pub batch: Batch,
    containers: Containers,
    rule_name: String,
    /// The CPU budget of the call in flight.
    call: CallBudget,
}

/// The events of one delivery, kept host side for the lazy `context` accessors.
#[derive(Debug, Default)]
pub struct Batch {
    pub events: Vec<Event>,
    /// `selected[i]` is the index in `events` of the rule's event `i`.
    pub selected: Vec<u32>,
}

impl Batch {
    fn event(&self, index: u32) -> Option<&Event> {
        let host_index = *self.selected.get(index as usize)?;
        self.events.get(host_index as usize)
    }
}

impl bindings::rulehost::rule::types::Host for InstanceState {}

impl bindings::rulehost::rule::state::Host for InstanceState {
    fn get(&mut self, container: u64, key: String) -> Option<Vec<u8>> {
        self.state.get(container, &key).map(<[u8]>::to_vec)
    }

    fn set(&mut self, container: u64, key: String, value: Vec<u8>) -> Result<(), wit::StateError> {
        self.state
            .set(container, &key, value)
            .map_err(|refusal| match refusal {
                StateRefusal::TooManyKeys => wit::StateError::TooManyKeys,
                StateRefusal::TooLarge => wit::StateError::TooLarge,
                StateRefusal::TooManyContainers => wit::StateError::TooManyContainers,
            })
    }

    fn remove(&mut self, container: u64, key: String) {
        self.state.remove(container, &key);
    }
}

impl bindings::rulehost::rule::context::Host for InstanceState {
    fn comm(&mut self, event: u32) -> String {
        self.batch
            .event(event)
            .map(|e| e.process.comm.to_string())
            .unwrap_or_default()
    }

    fn filename(&mut self, event: u32) -> String {
        match self.batch.event(event).map(|e| &e.body) {
            Some(crate::events::Body::ProcessExec { filename, .. }) => filename.clone(),
            _ => String::new(),
        }
    }

    fn argv(&mut self, event: u32) -> Vec<String> {
        match self.batch.event(event).map(|e| &e.body) {
            Some(crate::events::Body::ProcessExec { argv, .. }) => argv.clone(),
            _ => Vec::new(),
        }
    }

    fn container(&mut self, handle: u64) -> Option<wit::ContainerInfo> {
        let table = self.containers.read().expect("container table lock");
        table.get(handle).map(|c| wit::ContainerInfo {
            id: c.id.clone(),
            runtime: match c.runtime {
                crate::events::Runtime::Docker => wit::ContainerRuntime::Docker,
                crate::events::Runtime::Containerd => wit::ContainerRuntime::Containerd,
                crate::events::Runtime::Crio => wit::ContainerRuntime::Crio,
                crate::events::Runtime::Podman => wit::ContainerRuntime::Podman,
                crate::events::Runtime::Kubernetes => wit::ContainerRuntime::Kubernetes,
                crate::events::Runtime::Unknown => wit::ContainerRuntime::Unknown,
            },
        })
    }
}

impl bindings::rulehost::rule::log::Host for InstanceState {
    /// A rule's log line, at the level it asked for, under the target `rule` (so
    /// `--log-level info,rule=warn` filters rules apart), escaped to one line, cut to 1 KiB.
    fn log(&mut self, level: wit::LogLevel, message: String) {
        let (rule, message) = (self.rule_name.as_str(), one_line(&message, 1024));
        match level {
            wit::LogLevel::Debug => tracing::debug!(target: "rule", rule, "{message}"),
            wit::LogLevel::Info => tracing::info!(target: "rule", rule, "{message}"),
            wit::LogLevel::Warn => tracing::warn!(target: "rule", rule, "{message}"),
            wit::LogLevel::Error => tracing::error!(target: "rule", rule, "{message}"),
        }
    }
}

/// One live, sandboxed instance of a rule.
pub struct RuleInstance {
    pub store: Store<InstanceState>,
    bindings: bindings::Rule,
    pub metadata: Metadata,
}

impl RuleInstance {
    /// Instantiates `rule` around existing `state`, reads its metadata and runs `init`.
    pub fn new(
        runtime: &Runtime,
        rule: &Rule,
        state: RuleState,
        containers: Containers,
    ) -> Result<RuleInstance> {
        Self::recreate(runtime, rule, state, containers).map_err(|(error, _)| error)
    }

    /// As [`RuleInstance::new`], but a failure hands `state` back so it is not lost.
    pub fn recreate(
        runtime: &Runtime,
        rule: &Rule,
        state: RuleState,
        containers: Containers,
    ) -> Result<RuleInstance, (anyhow::Error, RuleState)> {
        let limits = &runtime.limits;
        let state = if state.containers() == 0 {
            RuleState::new(limits.state)
        } else {
            state
        };
        let data = InstanceState {
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes)
                .table_elements(1 << 20)
                .instances(16)
                .memories(4)
                .tables(16)
                // Reaching the cap is a fault the host reports, not a failed allocation
                // the rule might misreport or spin on.
                .trap_on_grow_failure(true)
                .build(),
            state,
            batch: Batch::default(),
            containers,
            rule_name: rule.name.clone(),
            // Instantiation, metadata and init together.
            call: CallBudget::start(Duration::from_secs(1)),
        };
        let mut store = Store::new(&runtime.engine, data);
        store.limiter(|data| &mut data.limits);
        store.epoch_deadline_callback(|context| match context.data().call.remaining_ticks() {
            Some(ticks) => Ok(wasmtime::UpdateDeadline::Continue(ticks)),
            None => Err(wasmtime::Trap::Interrupt.into()),
        });
        let ticks = store.data().call.ticks();
        store.set_epoch_deadline(ticks);
        match Self::start(&mut store, rule, runtime) {
            Ok((bindings, metadata)) => Ok(RuleInstance {
                store,
                bindings,
                metadata,
            }),
            Err(error) => Err((error, std::mem::take(&mut store.data_mut().state))),
        }
    }

    /// Instantiates, reads the metadata and runs `init`.
    fn start(
        store: &mut Store<InstanceState>,
        rule: &Rule,
        runtime: &Runtime,
    ) -> Result<(bindings::Rule, Metadata)> {
        let bindings = bindings::Rule::instantiate(&mut *store, &rule.component, &runtime.linker)
            .map_err(|e| {
            anyhow!(
                "instantiating: {}",
                error_line(anyhow::Error::from(e).as_ref())
            )
        })?;
        let detector = bindings.rulehost_rule_detector();
        let metadata = detector.call_metadata(&mut *store).map_err(|e| {
            anyhow!(
                "metadata() failed: {}",
                error_line(anyhow::Error::from(e).as_ref())
            )
        })?;
        let metadata = Metadata::from_wit(metadata);
        validate_metadata(&metadata)?;
        detector
            .call_init(&mut *store, "")
            .map_err(|e| {
                anyhow!(
                    "init() failed: {}",
                    error_line(anyhow::Error::from(e).as_ref())
                )
            })?
            .map_err(|message| anyhow!("init() refused: {message}"))?;
        Ok((bindings, metadata))
    }

    /// Delivers wit events; the host events they came from must be in the store's batch.
    pub fn deliver(
        &mut self,
        events: &[wit::Event],
        budget: Duration,
    ) -> Result<Vec<wit::Finding>> {
        let call = CallBudget::start(budget);
        self.store.data_mut().call = call;
        self.store.set_epoch_deadline(call.ticks());
        let detector = self.bindings.rulehost_rule_detector();
        let result = match events {
            [single] => detector.call_on_event(&mut self.store, single),
            many => detector.call_on_events(&mut self.store, many),
        };
        result.map_err(anyhow::Error::from)
    }

    /// Takes the rule's state out (to hand it to a replacement instance).
    pub fn take_state(&mut self) -> RuleState {
        std::mem::take(&mut self.store.data_mut().state)
    }
}

fn validate_metadata(metadata: &Metadata) -> Result<()> {
    if metadata.id.trim().is_empty() {
        bail!("metadata has an empty id");
    }
    if metadata.selects.is_empty() {
        bail!("metadata selects no event");
    }
    Ok(())
}

/// Converts a host event for a rule: only the env entries it asked for cross over.
pub fn to_wit(event: &Event, container: Option<u64>, metadata: &Metadata) -> wit::Event {
    use crate::events::{Body, SocketAddress, SocketType};
    let body = match &event.body {
        Body::ProcessExec { env, synthetic, .. } => wit::EventBody::ProcessExec(wit::ProcessExec {
            env: env
                .iter()
                .filter(|entry| metadata.wants_env(entry))
                .cloned()
                .collect(),
            synthetic: *synthetic,
        }),
        Body::SocketConnect {
            address,
            socket_type,
        } => wit::EventBody::SocketConnect(wit::SocketConnect {
            address: match *address {
                SocketAddress::Ipv4 { ip, port } => {
                    let [a, b, c, d] = ip.octets();
                    wit::SocketAddress::Ipv4(wit::Ipv4SocketAddress {
                        address: (a, b, c, d),
                        port,
                    })
                }
                SocketAddress::Ipv6 {
                    ip,
                    port,
                    flow_info,
                    scope_id,
                } => {
                    let [a, b, c, d, e, f, g, h] = ip.segments();
                    wit::SocketAddress::Ipv6(wit::Ipv6SocketAddress {
                        address: (a, b, c, d, e, f, g, h),
                        port,
                        flow_info,
                        scope_id,
                    })
                }
                SocketAddress::Unix => wit::SocketAddress::Unix,
                SocketAddress::Other { af } => wit::SocketAddress::Other(af),
            },
            socket_type: match socket_type {
                SocketType::Stream => wit::SocketType::Stream,
                SocketType::Datagram => wit::SocketType::Datagram,
                SocketType::Seqpacket => wit::SocketType::Seqpacket,
                SocketType::Raw => wit::SocketType::Raw,
                SocketType::Other => wit::SocketType::Other,
            },
        }),
    };
    wit::Event {
        timestamp: event.timestamp,
        process: wit::Process {
            pid: event.process.pid,
            tid: event.process.tid,
            ppid: event.process.ppid,
            uid: event.process.uid,
        },
        container,
        body,
    }
}

pub use wit::{
    Event as WitEvent, Field as WitField, Finding as WitFinding, IpAddress as WitIpAddress,
    Value as WitValue,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_compatibility() {
        assert!(check_version("rulehost:rule/state@0.1.0", Some("0.1.0")).is_ok());
        assert!(check_version("rulehost:rule/state@0.1.7", Some("0.1.7")).is_ok());
        let err = check_version("rulehost:rule/state@0.2.0", Some("0.2.0")).unwrap_err();
        assert!(err.to_string().contains("incompatible"), "{err}");
        assert!(check_version("rulehost:rule/state", None).is_err());
    }

    #[test]
    fn world_version_matches_the_wit_file() {
        let wit = include_str!("../../wit/rule.wit");
        assert!(wit.contains(&format!("package {WORLD_PACKAGE}@{WORLD_VERSION};")));
    }

    #[test]
    fn interface_names_split() {
        assert_eq!(
            split_interface_name("wasi:filesystem/types@0.2.0"),
            ("wasi:filesystem", "types", Some("0.2.0"))
        );
        assert_eq!(split_interface_name("foo"), ("foo", "", None));
    }
}

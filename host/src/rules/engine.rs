//! The engine every rule shares: wasmtime configured for the sandbox (epoch deadline,
//! component model), the host imports linked once, and loading: compile (in a bounded
//! child process when isolated), check the world, read the metadata from a first
//! instance.

use super::*;

/// Sandbox and dispatch limits applied to every rule.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Linear memory (and tables) a rule instance may grow to.
    pub memory_bytes: usize,
    /// CPU time a rule may spend per delivered event before it is cut off.
    pub cpu_per_event: Duration,
    /// CPU time one delivery call may take however many events it carries (and a
    /// faulted batch's redo in all), so a rule holds the event loop for at most this
    /// long; never less than `cpu_per_event`.
    pub cpu_per_call: Duration,
    /// Findings a rule may return for one event; extra ones are dropped and counted.
    pub max_findings_per_event: usize,
    /// Encoded bytes one finding's data may take; larger findings are dropped and counted.
    pub max_finding_bytes: usize,
    /// `context` calls (comm, filename, argv, container) a rule may make per delivered
    /// event; further ones answer empty and are counted.
    pub max_context_calls_per_event: usize,
    /// Per-container state bounds.
    pub state: StateLimits,
    /// What compiling one rule may cost (when compiles are isolated).
    pub compile: CompileLimits,
    /// Largest rule file.
    pub max_rule_bytes: usize,
    /// Bounds raised for single rules, by rule name ([`RuleBudget`]).
    pub budgets: std::collections::BTreeMap<String, RuleBudget>,
}

impl Limits {
    /// The CPU budget of one call delivering `events` events.
    pub fn call_budget(&self, events: usize) -> Duration {
        let call = self.cpu_per_call.max(self.cpu_per_event);
        self.cpu_per_event.saturating_mul(events as u32).min(call)
    }

    /// The `context` calls one call delivering `events` events may make.
    pub fn context_calls(&self, events: usize) -> u64 {
        (self.max_context_calls_per_event as u64).saturating_mul(events as u64)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 64 << 20,
            cpu_per_event: Duration::from_millis(10),
            cpu_per_call: Duration::from_millis(100),
            max_findings_per_event: 16,
            max_finding_bytes: 16 * 1024,
            max_context_calls_per_event: 64,
            state: StateLimits::default(),
            compile: CompileLimits::default(),
            max_rule_bytes: MAX_RULE_BYTES,
            budgets: Default::default(),
        }
    }
}

/// The compiled-code engine shared by all rules.
pub struct RuleEngine {
    pub(super) engine: Engine,
    pub(super) linker: Linker<InstanceState>,
    pub(super) limits: Limits,
    /// Compiled components by the sha256 of their bytes: reloading a rule seen before
    /// costs no compilation.
    pub(super) compiled: Mutex<HashMap<String, Component>>,
    /// Compiles in bounded child processes; `None` compiles in this process (tests,
    /// benches: trusted fixtures only).
    compiler: Option<Compiler>,
    /// What each rule id may use; a rule asking for more is refused at load.
    grants: Grants,
    /// Drives the CPU deadlines of rule calls (ticking only while one runs).
    pub(super) ticker: Arc<Ticker>,
    /// What the `cluster` import answers, for every instance.
    pub(super) cluster: ClusterFacts,
    /// Moves whenever some rule's interest (or the API servers it may watch) changes.
    pub(super) interest_changes: Arc<AtomicU64>,
}

/// The engine settings, shared by the host and its compile children (whose artifacts
/// load only into an engine configured the same way).
pub(super) fn engine_config() -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.wasm_component_model(true);
    config
}

impl Drop for RuleEngine {
    fn drop(&mut self) {
        self.ticker.stop();
    }
}

impl RuleEngine {
    /// An engine compiling in this process and granting rules all they ask for: for
    /// trusted rules only (tests, benches).
    pub fn new(limits: Limits) -> Result<RuleEngine> {
        RuleEngine::build(limits, None, Grants::All)
    }

    /// An engine for untrusted rules: each compile runs in a child process of this
    /// binary under `limits.compile`; compiled code is kept in `cache_dir` when given and
    /// usable, so a restart or a reload to a previously seen rule skips compilation; a
    /// rule gets only what `grants` gives its id.
    pub fn isolated(
        limits: Limits,
        grants: Grants,
        cache_dir: Option<&std::path::Path>,
    ) -> Result<RuleEngine> {
        let exe = std::env::current_exe().context("finding this binary to compile rules with")?;
        let cache_dir = cache_dir.and_then(|dir| match super::cache_trust::prepare_dir(dir) {
            Ok(()) => Some(dir.to_path_buf()),
            Err(reason) => {
                tracing::warn!(
                    %reason,
                    "no compile cache: rules are compiled on every load"
                );
                None
            }
        });
        let compiler = Compiler { exe, cache_dir };
        RuleEngine::build(limits, Some(compiler), grants)
    }

    fn build(limits: Limits, compiler: Option<Compiler>, grants: Grants) -> Result<RuleEngine> {
        let config = engine_config();
        let engine = Engine::new(&config)
            .map_err(anyhow::Error::from)
            .context("creating the wasmtime engine")?;
        let mut linker = Linker::new(&engine);
        bindings::Rule::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;
        wasi::add_to_linker(&mut linker)?;

        let ticker = Ticker::start(&engine)?;

        Ok(RuleEngine {
            engine,
            linker,
            limits,
            compiled: Mutex::new(HashMap::new()),
            compiler,
            grants,
            ticker,
            cluster: ClusterFacts::default(),
            interest_changes: Arc::default(),
        })
    }

    /// The API server endpoints rules see from now on (their next call); logs a change.
    pub fn set_api_servers(&self, endpoints: Vec<std::net::SocketAddr>) {
        if cluster::set_api_servers(&self.cluster, &endpoints) {
            self.interest_changes.fetch_add(1, Ordering::Release);
            tracing::debug!(endpoints = ?endpoints, "API server endpoints given to the rules");
        }
    }

    /// A number that moves whenever what some rule watches may have changed, so the
    /// caller recomputes the connect filter only then.
    pub fn interest_generation(&self) -> u64 {
        self.interest_changes.load(Ordering::Acquire)
    }

    /// The API server endpoints the rules see now.
    pub fn api_servers(&self) -> std::sync::RwLockReadGuard<'_, ApiServers> {
        self.cluster.read().expect("cluster facts lock")
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn grants(&self) -> &Grants {
        &self.grants
    }

    /// Validates, compiles and probes a rule: it must be a component of the rule world
    /// importing nothing else; its metadata is read from a first instance.
    pub fn load(&self, name: &str, bytes: &[u8]) -> Result<Arc<Rule>> {
        let bounds = self.limits.bounds_of(name);
        if bytes.len() > bounds.max_bytes {
            bail!(
                "{} bytes, larger than the {} MiB a rule may be (raise it for this rule with `budgets: {{{name}: {{max_mib: N}}}}` in --config)",
                bytes.len(),
                bounds.max_bytes >> 20
            );
        }
        let sha256 = sha256_hex(bytes);
        let component = self.compile(bytes, &sha256, bounds.compile)?;
        let WorldCheck {
            imports,
            packed,
            needs,
        } = check_world(&self.engine, &component)?;
        // Linked once per compiled rule: a fault recovery or a reload instantiates
        // without resolving imports again.
        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(bindings::RulePre::new)
            .map_err(|e| anyhow!("linking: {}", error_line(anyhow::Error::from(e).as_ref())))?;
        let mut rule = Rule {
            name: name.to_owned(),
            sha256,
            size: bytes.len(),
            pre,
            imports,
            packed,
            needs,
            memory_bytes: bounds.memory_bytes,
            metadata: Metadata::default(),
        };
        let probe = RuleInstance::new(
            self,
            &rule,
            RuleState::default(),
            Default::default(),
            Default::default(),
        )?;
        self.grants.check(&probe.metadata, &rule.needs)?;
        rule.metadata = probe.metadata.clone();
        Ok(Arc::new(rule))
    }

    fn compile(&self, bytes: &[u8], sha256: &str, limits: CompileLimits) -> Result<Component> {
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
        let component = match &self.compiler {
            Some(compiler) => compiler.compile(&self.engine, bytes, sha256, limits)?,
            None => compile_in_process(&self.engine, bytes, sha256)?,
        };
        self.compiled
            .lock()
            .expect("cache lock")
            .insert(sha256.to_owned(), component.clone());
        Ok(component)
    }
}

/// Code this process compiled in-process, serialized, by the sha256 of the rule's bytes:
/// tests and benches build many engines, and a JavaScript or Python rule takes seconds to
/// compile. Only what this process produced with [`engine_config`] is kept here.
static IN_PROCESS: Mutex<Option<HashMap<String, Arc<Vec<u8>>>>> = Mutex::new(None);

/// Compiles trusted bytes in this process (no isolated compiler), or reuses this
/// process's earlier compile of the same bytes.
fn compile_in_process(engine: &Engine, bytes: &[u8], sha256: &str) -> Result<Component> {
    // Held through the compile, so concurrent loads of one rule compile it once.
    let mut cache = IN_PROCESS.lock().expect("in-process compile cache lock");
    let cache = cache.get_or_insert_with(HashMap::new);
    if let Some(artifact) = cache.get(sha256) {
        // SAFETY: this process serialized it, from an engine with the same config.
        if let Ok(component) = unsafe { Component::deserialize(engine, artifact.as_slice()) } {
            return Ok(component);
        }
    }
    let component = Component::new(engine, bytes).map_err(|e| {
        anyhow!(
            "invalid component: {}",
            error_line(anyhow::Error::from(e).as_ref())
        )
    })?;
    if let Ok(artifact) = component.serialize() {
        cache.insert(sha256.to_owned(), Arc::new(artifact));
    }
    Ok(component)
}

/// sha256 of `bytes` as lowercase hex: how a rule's exact bytes are named everywhere.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

//! The host side of the world's imports (`state`, `context`, `log`): what a rule can
//! reach, all of it held and bounded by the host.

use super::*;

/// What an instance's host imports see: its state, the batch being delivered, limits.
pub struct InstanceState {
    pub(super) limits: RuleLimiter,
    /// The rule's log rate limit.
    pub(super) log_budget: LogBudget,
    /// This rule's per-container state (moved between instances, never copied).
    pub state: RuleState,
    /// Host events of the batch being delivered and, per rule-side index, which one.
    pub batch: Batch,
    pub(super) containers: Containers,
    pub(super) rule_name: String,
    /// The CPU budget of the call in flight.
    pub(super) call: CallBudget,
    /// `context` calls the call in flight may still make.
    pub(super) context_left: u64,
    /// `context` calls refused over that bound since last taken.
    pub(super) context_refused: u64,
    /// What the `cluster` import answers.
    pub(super) cluster: ClusterFacts,
    /// Woken for each call, for its CPU deadline.
    pub(super) ticker: Arc<Ticker>,
    /// What the rule watches (the host's, per rule), and the engine's change counter.
    pub(super) interest: SharedInterest,
    pub(super) interest_changes: Arc<AtomicU64>,
    /// The deny-all WASI a JavaScript or Python rule's runtime imports.
    pub(super) wasi: wasi::RuleWasi,
}

/// The events of one delivery, kept host side for the lazy `context` accessors.
#[derive(Debug, Default)]
pub struct Batch {
    pub events: Vec<Event>,
    /// `selected[i]` is the index in `events` of the rule's event `i`.
    pub selected: Vec<u32>,
    /// `handles[j]` is the container handle of `events[j]`.
    pub handles: Vec<Option<u64>>,
}

impl Batch {
    fn event(&self, index: u32) -> Option<&Event> {
        let host_index = *self.selected.get(index as usize)?;
        self.events.get(host_index as usize)
    }

    /// Whether one of the events handed to the rule in this call carries `handle`.
    fn hands(&self, handle: u64) -> bool {
        self.selected
            .iter()
            .any(|&i| self.handles.get(i as usize) == Some(&Some(handle)))
    }
}

impl bindings::rulehost::rule::types::Host for InstanceState {}

impl bindings::rulehost::rule::state::Host for InstanceState {
    fn get(&mut self, container: u64, key: String) -> Option<Vec<u8>> {
        self.state.get(container, &key).map(<[u8]>::to_vec)
    }

    /// A rule writes only under handles the host handed it: one it already holds state
    /// for, or one an event of the call in flight carries. Anything else (an invented
    /// handle, any write from `init`) is refused as `too-many-containers` and counted.
    fn set(&mut self, container: u64, key: String, value: Vec<u8>) -> Result<(), wit::StateError> {
        if !self.state.holds(container) && !self.batch.hands(container) {
            self.state.refused_writes += 1;
            return Err(wit::StateError::TooManyContainers);
        }
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

impl InstanceState {
    /// Charges one `context` call; false once the call in flight has used its bound.
    pub(super) fn charge_context_call(&mut self) -> bool {
        if self.context_left == 0 {
            self.context_refused += 1;
            return false;
        }
        self.context_left -= 1;
        true
    }
}

/// Each accessor is charged to the call's `context` bound; over it, it answers empty.
impl bindings::rulehost::rule::context::Host for InstanceState {
    fn comm(&mut self, event: u32) -> String {
        if !self.charge_context_call() {
            return String::new();
        }
        self.batch
            .event(event)
            .map(|e| e.process.comm.to_string())
            .unwrap_or_default()
    }

    fn filename(&mut self, event: u32) -> String {
        if !self.charge_context_call() {
            return String::new();
        }
        match self.batch.event(event).map(|e| &e.body) {
            Some(crate::events::Body::ProcessExec { filename, .. }) => filename.clone(),
            _ => String::new(),
        }
    }

    fn argv(&mut self, event: u32) -> Vec<String> {
        if !self.charge_context_call() {
            return Vec::new();
        }
        match self.batch.event(event).map(|e| &e.body) {
            Some(crate::events::Body::ProcessExec { argv, .. }) => argv.clone(),
            _ => Vec::new(),
        }
    }

    fn container(&mut self, handle: u64) -> Option<wit::ContainerInfo> {
        if !self.charge_context_call() {
            return None;
        }
        let table = self.containers.read().expect("container table lock");
        table.get(handle).map(|c| wit::ContainerInfo {
            id: c.id.clone(),
            runtime: match c.runtime {
                crate::events::ContainerRuntime::Docker => wit::ContainerRuntime::Docker,
                crate::events::ContainerRuntime::Containerd => wit::ContainerRuntime::Containerd,
                crate::events::ContainerRuntime::Crio => wit::ContainerRuntime::Crio,
                crate::events::ContainerRuntime::Podman => wit::ContainerRuntime::Podman,
                crate::events::ContainerRuntime::Kubernetes => wit::ContainerRuntime::Kubernetes,
                crate::events::ContainerRuntime::Unknown => wit::ContainerRuntime::Unknown,
            },
        })
    }
}

impl bindings::rulehost::rule::log::Host for InstanceState {
    /// A rule's log line, at the level it asked for, under the target `rule` (so
    /// `--log-level info,rule=warn` filters rules apart), escaped to one line, cut to 1 KiB.
    /// Rate limited per instance ([`LogBudget`]); dropped lines are counted and reported
    /// once per delivery by the dispatcher.
    fn log(&mut self, level: wit::LogLevel, message: String) {
        self.log_line(level, &message);
    }
}

impl InstanceState {
    /// Writes what the rule wrote to WASI stdout (as info) and stderr (as warn) since
    /// the last call, line by line through the same rate limit as `log`.
    pub(super) fn flush_output(&mut self) {
        let (stdout, stderr, lost) = self.wasi.take_lines();
        self.log_budget.suppress(lost);
        for line in stdout {
            self.log_line(wit::LogLevel::Info, &line);
        }
        for line in stderr {
            self.log_line(wit::LogLevel::Warn, &line);
        }
    }

    fn log_line(&mut self, level: wit::LogLevel, message: &str) {
        if !self.log_budget.take(std::time::Instant::now()) {
            return;
        }
        let rule = self.rule_name.as_str();
        let message = one_line(message, 1024);
        match level {
            wit::LogLevel::Debug => tracing::debug!(target: "rule", rule, "{message}"),
            wit::LogLevel::Info => tracing::info!(target: "rule", rule, "{message}"),
            wit::LogLevel::Warn => tracing::warn!(target: "rule", rule, "{message}"),
            wit::LogLevel::Error => tracing::error!(target: "rule", rule, "{message}"),
        }
    }
}

//! Delivering events to the rules that selected them, collecting their findings, and
//! containing rules that misbehave.

use crate::events::Event;
use crate::logging::error_line;
use crate::output::{EventRecord, FieldValue, Finding, FindingData, RuleRef};
use crate::persist::{RestoreReport, Store};
use crate::rules::{
    Containers, Rule, RuleEngine, RuleInstance, WitEvent, WitField, WitFinding, WitIpAddress,
    WitValue, to_wit,
};
use crate::state::RuleState;
use anyhow::{Result, bail};
use std::collections::VecDeque;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Faults within [`FAULT_WINDOW`] after which a rule is disabled.
pub const MAX_FAULTS: usize = 5;
pub const FAULT_WINDOW: Duration = Duration::from_secs(60);

/// Counters a user or a test can read to see what the dispatcher had to refuse.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub events: u64,
    pub findings: u64,
    pub rule_faults: u64,
    /// Findings dropped for exceeding the per-event count or size bound, or naming no event.
    pub findings_dropped: u64,
}

/// A loaded rule and its live instance.
struct Slot {
    /// Where the rule came from (its file path, or the built-in name): what a reload
    /// of that source replaces.
    key: String,
    rule: Arc<Rule>,
    signature: Arc<crate::rules::Metadata>,
    rule_ref: RuleRef,
    instance: Option<RuleInstance>,
    /// Kept here while no instance exists (after a fault that could not recover).
    parked_state: RuleState,
    faults: VecDeque<Instant>,
    disabled: bool,
    /// Events this rule was given (only those its metadata selected).
    delivered: u64,
}

/// Routes event batches to rules.
pub struct Dispatcher {
    runtime: Arc<RuleEngine>,
    slots: Vec<Slot>,
    containers: Containers,
    handles: Vec<Option<u64>>,
    wit_events: Vec<WitEvent>,
    selected: Vec<u32>,
    /// Where rule state is written after each batch, once [`Dispatcher::persist_to`] ran.
    persist: Option<Box<Store>>,
    pub counters: Counters,
}

impl Dispatcher {
    pub fn new(runtime: Arc<RuleEngine>) -> Dispatcher {
        Dispatcher {
            runtime,
            slots: Vec::new(),
            containers: Containers::default(),
            handles: Vec::new(),
            wit_events: Vec::new(),
            selected: Vec::new(),
            persist: None,
            counters: Counters::default(),
        }
    }

    /// Keeps every rule's per-container state in `<dir>/state.redb` from now on (written
    /// after each batch that changed it, in one transaction) and restores what an earlier
    /// run left there: rows of containers for which `alive(container_id)` is true are put
    /// back into the loaded rules' state (their containers interned again), rows of
    /// other containers are deleted. Rows of rule ids not loaded now are kept and restored
    /// when a rule with that id is added. State held before the call is written too.
    ///
    /// Errors (the directory or file cannot be created or opened, a damaged file, another
    /// process holding it) name the path, and leave the dispatcher not persisting.
    pub fn persist_to(
        &mut self,
        dir: &Path,
        alive: impl Fn(&str) -> bool,
    ) -> Result<RestoreReport> {
        if let Some(store) = &self.persist {
            bail!(
                "rule state is already persisted to {}",
                store.path().display()
            );
        }
        let mut store = Store::open(dir)?;
        let (mut report, rows) = {
            let mut table = self.containers.write().expect("container lock");
            store.sweep(alive, &mut table)?
        };
        let mut read = 0;
        for slot in &mut self.slots {
            let (rule_id, state) = slot_state(slot);
            // What is held already is not on disk yet; restored entries are.
            state.mark_all_changed();
            let table = self.containers.read().expect("container lock");
            match store.restore_rule(rule_id, state, &table) {
                Ok((restored, refused, rows)) => {
                    report.restored += restored;
                    report.refused += refused;
                    read += rows;
                }
                Err(error) => {
                    drop(table);
                    for slot in &mut self.slots {
                        slot_state(slot).1.stop_recording_changes();
                    }
                    return Err(error);
                }
            }
        }
        report.kept = rows.saturating_sub(read);
        self.persist = Some(Box::new(store));
        self.flush_state();
        Ok(report)
    }

    /// The file rule state is persisted to, if any.
    pub fn state_file(&self) -> Option<&Path> {
        self.persist.as_deref().map(Store::path)
    }

    /// Writes the state changed since the last write (and deletes the rows of containers
    /// that went away) in one transaction. [`Dispatcher::dispatch`] does this after each
    /// batch; a failure is logged and retried next time, nothing in memory is lost.
    pub fn flush_state(&mut self) {
        if let Some(store) = self.persist.as_deref_mut() {
            let table = self.containers.read().expect("container lock");
            store.flush(self.slots.iter_mut().map(slot_state), &table);
        }
    }

    /// Adds a rule under its own name; two rules with one id are refused.
    pub fn add(&mut self, rule: Arc<Rule>) -> Result<()> {
        let key = rule.name.clone();
        self.add_from(&key, rule)
    }

    /// Adds a rule loaded from `key` (its source path); two rules with one id are refused.
    pub fn add_from(&mut self, key: &str, rule: Arc<Rule>) -> Result<()> {
        self.check_id_free(&rule, None)?;
        let mut state = RuleState::default();
        if let Some(store) = self.persist.as_deref_mut() {
            // What an earlier run (or an earlier rule with this id) left on disk.
            state = RuleState::new(self.runtime.limits().state);
            let table = self.containers.read().expect("container lock");
            if let Err(error) = store.restore_rule(&rule.metadata.id, &mut state, &table) {
                tracing::warn!(rule = %rule.name, error = %error_line(error.as_ref()), "cannot restore rule state");
            }
        }
        let mut instance = RuleInstance::new(&self.runtime, &rule, state, self.containers.clone())?;
        if self.persist.is_some() {
            instance.store.data_mut().state.record_changes();
        }
        self.slots.push(Slot {
            key: key.to_owned(),
            signature: Arc::new(rule.metadata.clone()),
            rule_ref: RuleRef {
                name: rule.name.as_str().into(),
                sha256: rule.sha256.as_str().into(),
            },
            rule,
            instance: Some(instance),
            parked_state: RuleState::default(),
            faults: VecDeque::new(),
            disabled: false,
            delivered: 0,
        });
        Ok(())
    }

    /// Swaps in a new version of the rule from `key`, between two batches: every event
    /// goes to exactly one version, and the per-container state moves over unchanged.
    /// On error the previous version keeps running, state included.
    pub fn replace(&mut self, key: &str, rule: Arc<Rule>) -> Result<Arc<Rule>> {
        let index = self
            .slots
            .iter()
            .position(|s| s.key == key)
            .ok_or_else(|| anyhow::anyhow!("no rule is loaded from {key}"))?;
        self.check_id_free(&rule, Some(index))?;
        let slot = &mut self.slots[index];
        let state = match slot.instance.as_mut() {
            Some(instance) => instance.take_state(),
            None => std::mem::take(&mut slot.parked_state),
        };
        let mut instance =
            match recreate_instance(&self.runtime, &rule, state, self.containers.clone()) {
                Ok(instance) => instance,
                Err((error, state)) => {
                    match slot.instance.as_mut() {
                        Some(instance) => instance.store.data_mut().state = state,
                        None => slot.parked_state = state,
                    }
                    return Err(error);
                }
            };
        slot.signature = Arc::new(rule.metadata.clone());
        slot.rule_ref = RuleRef {
            name: rule.name.as_str().into(),
            sha256: rule.sha256.as_str().into(),
        };
        if let Some(store) = self.persist.as_deref_mut()
            && rule.metadata.id != slot.rule.metadata.id
        {
            // Rows are kept by rule id: take over what the new id has on disk, and
            // write the state moved over under the new id.
            let state = &mut instance.store.data_mut().state;
            let table = self.containers.read().expect("container lock");
            if let Err(error) = store.restore_rule(&rule.metadata.id, state, &table) {
                tracing::warn!(rule = %rule.name, error = %error_line(error.as_ref()), "cannot restore rule state");
            }
            state.mark_all_changed();
        }
        slot.instance = Some(instance);
        slot.faults.clear();
        slot.disabled = false;
        Ok(std::mem::replace(&mut slot.rule, rule))
    }

    /// Unloads the rule from `key`, with its state (rows on disk stay, for a rule with the
    /// same id loaded later).
    pub fn remove(&mut self, key: &str) -> Option<Arc<Rule>> {
        let index = self.slots.iter().position(|s| s.key == key)?;
        // Its last changes, if a write failed since, go out first.
        self.flush_state();
        Some(self.slots.remove(index).rule)
    }

    /// The rule loaded from `key`.
    pub fn rule_from(&self, key: &str) -> Option<&Arc<Rule>> {
        self.slots.iter().find(|s| s.key == key).map(|s| &s.rule)
    }

    /// Source keys of the loaded rules.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.slots.iter().map(|s| s.key.as_str())
    }

    fn check_id_free(&self, rule: &Rule, except: Option<usize>) -> Result<()> {
        let clash = self
            .slots
            .iter()
            .enumerate()
            .find(|(i, s)| Some(*i) != except && s.rule.metadata.id == rule.metadata.id);
        if let Some((_, other)) = clash {
            bail!(
                "rule id {} is already loaded from {}",
                rule.metadata.id,
                other.key
            );
        }
        Ok(())
    }

    /// The loaded rules.
    pub fn rules(&self) -> impl Iterator<Item = &Arc<Rule>> {
        self.slots.iter().map(|s| &s.rule)
    }

    /// Env variable names any loaded rule asked for (what the kernel must capture).
    pub fn env_vars(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .slots
            .iter()
            .flat_map(|s| s.rule.metadata.env_vars.iter().cloned())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Whether some rule is disabled after repeated faults.
    pub fn is_disabled(&self, rule_id: &str) -> bool {
        self.slots
            .iter()
            .any(|s| s.rule.metadata.id == rule_id && s.disabled)
    }

    /// A container went away: forget its handle and every rule's state for it.
    pub fn container_removed(&mut self, id: &str) {
        let handle = self.containers.write().expect("container lock").remove(id);
        if let Some(handle) = handle {
            for slot in &mut self.slots {
                match &mut slot.instance {
                    Some(instance) => instance.store.data_mut().state.evict(handle),
                    None => slot.parked_state.evict(handle),
                }
            }
            if let Some(store) = self.persist.as_deref_mut()
                && store.forget(handle, id)
            {
                self.flush_state();
            }
        }
    }

    /// How many events the rule `rule_id` was given: only the kinds and origins its
    /// metadata selected reach it.
    pub fn delivered(&self, rule_id: &str) -> u64 {
        self.slots
            .iter()
            .filter(|s| s.rule.metadata.id == rule_id)
            .map(|s| s.delivered)
            .sum()
    }

    /// How many containers `rule_id` holds state for.
    pub fn state_containers(&self, rule_id: &str) -> usize {
        self.slots
            .iter()
            .filter(|s| s.rule.metadata.id == rule_id)
            .map(|s| match &s.instance {
                Some(instance) => instance.store.data().state.containers(),
                None => s.parked_state.containers(),
            })
            .sum()
    }

    /// Delivers a batch to every rule that selected some of it; findings are appended
    /// to `out` in event order per rule. Returns the events so their buffer is reused.
    pub fn dispatch(&mut self, mut events: Vec<Event>, out: &mut Vec<Finding>) -> Vec<Event> {
        self.counters.events += events.len() as u64;
        self.handles.clear();
        {
            let mut table = self.containers.write().expect("container lock");
            self.handles.extend(
                events
                    .iter()
                    .map(|e| e.container.as_ref().map(|c| table.intern(c))),
            );
        }
        for slot_index in 0..self.slots.len() {
            events = self.deliver_to(slot_index, events, out);
        }
        if self.persist.is_some() {
            self.flush_state();
        }
        events
    }

    fn deliver_to(
        &mut self,
        slot_index: usize,
        events: Vec<Event>,
        out: &mut Vec<Finding>,
    ) -> Vec<Event> {
        let slot = &mut self.slots[slot_index];
        if slot.disabled {
            return events;
        }
        let metadata = &slot.rule.metadata;
        self.selected.clear();
        self.wit_events.clear();
        for (index, event) in events.iter().enumerate() {
            if metadata.wants(event.kind(), event.container.is_some()) {
                self.selected.push(index as u32);
                self.wit_events
                    .push(to_wit(event, self.handles[index], metadata));
            }
        }
        if self.selected.is_empty() {
            return events;
        }
        slot.delivered += self.selected.len() as u64;
        let Some(instance) = slot.instance.as_mut() else {
            return events;
        };
        let batch = &mut instance.store.data_mut().batch;
        batch.events = events;
        batch.selected = std::mem::take(&mut self.selected);
        let budget = self.runtime.limits().cpu_per_event * self.wit_events.len() as u32;
        let result = instance.deliver(&self.wit_events, budget);
        let batch = &mut instance.store.data_mut().batch;
        let events = std::mem::take(&mut batch.events);
        self.selected = std::mem::take(&mut batch.selected);
        match result {
            Ok(findings) => {
                let (delivered, dropped) = collect(
                    slot,
                    &self.runtime,
                    &self.containers,
                    &events,
                    &self.selected,
                    findings,
                    out,
                );
                self.counters.findings += delivered;
                self.counters.findings_dropped += dropped;
            }
            Err(error) if self.selected.len() == 1 => {
                // One event: it is the fault, and redoing it would only repeat it.
                self.counters.rule_faults += 1;
                let event = &events[self.selected[0] as usize];
                let slot = &mut self.slots[slot_index];
                fault(slot, &self.runtime, &self.containers, &error, Some(event));
            }
            Err(error) => {
                // The whole batch failed, so none of its findings were emitted. Redo it
                // one event at a time on a fresh instance: only the faulting events are
                // lost, and each of them counts as one fault.
                let slot = &mut self.slots[slot_index];
                tracing::warn!(
                    rule = %slot.rule.name,
                    id = %slot.rule.metadata.id,
                    sha256 = %slot.rule.sha256,
                    events = self.selected.len(),
                    reason = %reason(&error),
                    "rule faulted on a batch; redoing it one event at a time"
                );
                recreate(slot, &self.runtime, &self.containers);
                let faults_before = self.counters.rule_faults;
                let selected = std::mem::take(&mut self.selected);
                let mut events = events;
                for (i, &host_index) in selected.iter().enumerate() {
                    let slot = &mut self.slots[slot_index];
                    let Some(instance) = slot.instance.as_mut() else {
                        break;
                    };
                    let batch = &mut instance.store.data_mut().batch;
                    batch.events = events;
                    batch.selected = vec![host_index];
                    let one = std::slice::from_ref(&self.wit_events[i]);
                    let result = instance.deliver(one, self.runtime.limits().cpu_per_event);
                    events = std::mem::take(&mut instance.store.data_mut().batch.events);
                    match result {
                        Ok(findings) => {
                            let (delivered, dropped) = collect(
                                slot,
                                &self.runtime,
                                &self.containers,
                                &events,
                                &[host_index],
                                findings,
                                out,
                            );
                            self.counters.findings += delivered;
                            self.counters.findings_dropped += dropped;
                        }
                        Err(error) => {
                            self.counters.rule_faults += 1;
                            fault(
                                slot,
                                &self.runtime,
                                &self.containers,
                                &error,
                                Some(&events[host_index as usize]),
                            );
                        }
                    }
                }
                if self.counters.rule_faults == faults_before {
                    // No event faulted on its own: the batched call is the fault.
                    self.counters.rule_faults += 1;
                    let slot = &mut self.slots[slot_index];
                    if !slot.disabled {
                        note_fault(slot);
                    }
                }
                self.selected = selected;
                return events;
            }
        }
        events
    }
}

/// A slot's rule id and its state, wherever it is kept.
fn slot_state(slot: &mut Slot) -> (&str, &mut RuleState) {
    let state = match &mut slot.instance {
        Some(instance) => &mut instance.store.data_mut().state,
        None => &mut slot.parked_state,
    };
    (slot.rule.metadata.id.as_str(), state)
}

/// [`RuleInstance::recreate`], keeping the changes the state recorded for persistence
/// (an empty state is swapped for a fresh one there, which would lose them).
fn recreate_instance(
    runtime: &RuleEngine,
    rule: &Rule,
    mut state: RuleState,
    containers: Containers,
) -> Result<RuleInstance, (anyhow::Error, RuleState)> {
    let changes = state.take_changes();
    match RuleInstance::recreate(runtime, rule, state, containers) {
        Ok(mut instance) => {
            instance.store.data_mut().state.resume_changes(changes);
            Ok(instance)
        }
        Err((error, mut state)) => {
            state.resume_changes(changes);
            Err((error, state))
        }
    }
}

/// Turns a rule's findings into output records, enforcing the output bounds.
/// Returns (delivered, dropped).
fn collect(
    slot: &Slot,
    runtime: &RuleEngine,
    containers: &Containers,
    events: &[Event],
    selected: &[u32],
    findings: Vec<WitFinding>,
    out: &mut Vec<Finding>,
) -> (u64, u64) {
    let limits = runtime.limits();
    let (mut delivered, mut dropped) = (0, 0);
    let mut per_event: Vec<u32> = vec![0; selected.len()];
    for finding in findings {
        let index = finding.event as usize;
        let Some(&host_index) = selected.get(index) else {
            dropped += 1;
            continue;
        };
        per_event[index] += 1;
        if per_event[index] as usize > limits.max_findings_per_event {
            dropped += 1;
            continue;
        }
        if data_size(&finding.data) > limits.max_finding_bytes {
            dropped += 1;
            continue;
        }
        let event = &events[host_index as usize];
        let data = to_data(finding.data, event, containers);
        out.push(Finding {
            signature: slot.signature.clone(),
            data,
            rule: slot.rule_ref.clone(),
            timestamp: event.timestamp,
            event: EventRecord {
                name: event.kind().name(),
                event: event.clone(),
            },
        });
        delivered += 1;
    }
    if dropped > 0 {
        tracing::warn!(
            rule = %slot.rule.name,
            id = %slot.rule.metadata.id,
            dropped,
            max_per_event = limits.max_findings_per_event,
            max_bytes = limits.max_finding_bytes,
            "dropped findings over the output bounds"
        );
    }
    (delivered, dropped)
}

/// Bytes a finding's data takes: names and values, roughly as printed.
fn data_size(fields: &[WitField]) -> usize {
    fields
        .iter()
        .map(|field| {
            field.name.len()
                + match &field.value {
                    WitValue::Text(text) => text.len(),
                    _ => 40,
                }
        })
        .sum()
}

/// Turns a rule's fields into finding data; host-filled values (container id, comm)
/// are resolved here, so no string crossed the wasm boundary for them.
fn to_data(fields: Vec<WitField>, event: &Event, containers: &Containers) -> FindingData {
    FindingData::new(
        fields
            .into_iter()
            .map(|field| {
                let value = match field.value {
                    WitValue::Text(text) => FieldValue::Text(text),
                    WitValue::Signed(n) => FieldValue::Signed(n),
                    WitValue::Unsigned(n) => FieldValue::Unsigned(n),
                    WitValue::Boolean(b) => FieldValue::Boolean(b),
                    WitValue::Ip(ip) => FieldValue::Ip(ip_from_wit(ip)),
                    WitValue::ContainerId(handle) => FieldValue::Container(
                        containers
                            .read()
                            .expect("container lock")
                            .get_shared(handle),
                    ),
                    // A finding's fields describe its own event.
                    WitValue::Comm(_) => FieldValue::Comm(event.process.comm),
                };
                (field.name, value)
            })
            .collect(),
    )
}

fn ip_from_wit(ip: WitIpAddress) -> IpAddr {
    match ip {
        WitIpAddress::Ipv4((a, b, c, d)) => [a, b, c, d].into(),
        WitIpAddress::Ipv6((a, b, c, d, e, f, g, h)) => [a, b, c, d, e, f, g, h].into(),
    }
}

/// The one-line reason for a fault: the trap (or limit) that ended the call, without
/// the wasm backtrace wasmtime puts first.
fn reason(error: &anyhow::Error) -> String {
    let root = error.root_cause().to_string();
    root.lines().next().unwrap_or("").to_owned()
}

/// Records a fault, recreates the instance around the same state, and disables the
/// rule if it keeps faulting.
fn fault(
    slot: &mut Slot,
    runtime: &RuleEngine,
    containers: &Containers,
    error: &anyhow::Error,
    event: Option<&Event>,
) {
    tracing::warn!(
        rule = %slot.rule.name,
        id = %slot.rule.metadata.id,
        sha256 = %slot.rule.sha256,
        event = event.map(|e| e.kind().name()),
        pid = event.map(|e| e.process.pid),
        reason = %reason(error),
        "rule faulted"
    );
    note_fault(slot);
    if !slot.disabled {
        recreate(slot, runtime, containers);
    }
}

/// Counts a fault in the rule's window; disables the rule (keeping its state) once it
/// reaches [`MAX_FAULTS`] within [`FAULT_WINDOW`].
fn note_fault(slot: &mut Slot) {
    let now = Instant::now();
    slot.faults.push_back(now);
    while slot
        .faults
        .front()
        .is_some_and(|t| now.duration_since(*t) > FAULT_WINDOW)
    {
        slot.faults.pop_front();
    }
    if slot.faults.len() >= MAX_FAULTS {
        if let Some(mut instance) = slot.instance.take() {
            slot.parked_state = instance.take_state();
        }
        slot.disabled = true;
        tracing::error!(
            rule = %slot.rule.name,
            id = %slot.rule.metadata.id,
            sha256 = %slot.rule.sha256,
            faults = slot.faults.len(),
            window_secs = FAULT_WINDOW.as_secs(),
            "rule disabled after repeated faults"
        );
    }
}

/// Replaces the rule's instance with a fresh one from its compiled component, around
/// the same state; if that fails, disables the rule and keeps the state.
fn recreate(slot: &mut Slot, runtime: &RuleEngine, containers: &Containers) {
    let state = match slot.instance.take() {
        Some(mut instance) => instance.take_state(),
        None => std::mem::take(&mut slot.parked_state),
    };
    match recreate_instance(runtime, &slot.rule, state, containers.clone()) {
        Ok(instance) => {
            slot.instance = Some(instance);
            tracing::info!(
                rule = %slot.rule.name,
                id = %slot.rule.metadata.id,
                faults = slot.faults.len(),
                window_secs = FAULT_WINDOW.as_secs(),
                disabled_at = MAX_FAULTS,
                "rule instance recreated from its compiled component"
            );
        }
        Err((error, state)) => {
            slot.parked_state = state;
            slot.disabled = true;
            tracing::error!(
                rule = %slot.rule.name,
                id = %slot.rule.metadata.id,
                error = %error_line(error.as_ref()),
                "rule disabled: cannot recreate its instance"
            );
        }
    }
}

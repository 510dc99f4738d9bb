//! Delivering events to the rules that selected them, collecting their findings, and
//! containing rules that misbehave.

use crate::events::Event;
use crate::output::{EventRecord, Finding, FindingData, RuleRef};
use crate::runtime::{
    Containers, Rule, RuleInstance, Runtime, WitEvent, WitField, WitFinding, WitIpAddress,
    WitValue, to_wit,
};
use crate::state::RuleState;
use anyhow::{Result, bail};
use std::collections::VecDeque;
use std::net::IpAddr;
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
    rule: Arc<Rule>,
    signature: Arc<crate::runtime::Metadata>,
    rule_ref: RuleRef,
    instance: Option<RuleInstance>,
    /// Kept here while no instance exists (after a fault that could not recover).
    parked_state: RuleState,
    faults: VecDeque<Instant>,
    disabled: bool,
}

/// Routes event batches to rules.
pub struct Dispatcher {
    runtime: Arc<Runtime>,
    slots: Vec<Slot>,
    containers: Containers,
    handles: Vec<Option<u64>>,
    wit_events: Vec<WitEvent>,
    selected: Vec<u32>,
    pub counters: Counters,
}

impl Dispatcher {
    pub fn new(runtime: Arc<Runtime>) -> Dispatcher {
        Dispatcher {
            runtime,
            slots: Vec::new(),
            containers: Containers::default(),
            handles: Vec::new(),
            wit_events: Vec::new(),
            selected: Vec::new(),
            counters: Counters::default(),
        }
    }

    /// Adds a rule; two rules with one id are refused.
    pub fn add(&mut self, rule: Arc<Rule>) -> Result<()> {
        if let Some(other) = self
            .slots
            .iter()
            .find(|s| s.rule.metadata.id == rule.metadata.id)
        {
            bail!(
                "rule id {} is already loaded from {}",
                rule.metadata.id,
                other.rule.name
            );
        }
        let instance = RuleInstance::new(
            &self.runtime,
            &rule,
            RuleState::default(),
            self.containers.clone(),
        )?;
        self.slots.push(Slot {
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
        });
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
        }
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
            Err(error) => {
                // The whole batch failed, so none of its findings were emitted. Redo it
                // one event at a time on a fresh instance: only the faulting event is lost.
                self.counters.rule_faults += 1;
                let slot = &mut self.slots[slot_index];
                fault(slot, &self.runtime, &self.containers, &error, None);
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
                self.selected = selected;
                return events;
            }
        }
        events
    }
}

/// Turns a rule's findings into output records, enforcing the output bounds.
/// Returns (delivered, dropped).
fn collect(
    slot: &Slot,
    runtime: &Runtime,
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
        let data = to_json(finding.data, event, containers);
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
        eprintln!(
            "rulehost: rule {}: dropped {dropped} finding(s) over the output bounds ({} per event, {} bytes each)",
            slot.rule.name, limits.max_findings_per_event, limits.max_finding_bytes
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

/// Resolves a rule's fields to JSON; host-filled values (container id, comm) are looked
/// up here so no string crossed the wasm boundary for them.
fn to_json(fields: Vec<WitField>, event: &Event, containers: &Containers) -> FindingData {
    FindingData(
        fields
            .into_iter()
            .map(|field| {
                let value = match field.value {
                    WitValue::Text(text) => serde_json::Value::String(text),
                    WitValue::Signed(n) => n.into(),
                    WitValue::Unsigned(n) => n.into(),
                    WitValue::Boolean(b) => b.into(),
                    WitValue::Ip(ip) => ip_from_wit(ip).to_canonical().to_string().into(),
                    WitValue::ContainerId(handle) => containers
                        .read()
                        .expect("container lock")
                        .get(handle)
                        .map_or(serde_json::Value::Null, |c| c.id.clone().into()),
                    // A finding's fields describe its own event.
                    WitValue::Comm(_) => event.process.comm.clone().into(),
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

/// Records a fault, recreates the instance around the same state, and disables the
/// rule if it keeps faulting.
fn fault(
    slot: &mut Slot,
    runtime: &Runtime,
    containers: &Containers,
    error: &anyhow::Error,
    event: Option<&Event>,
) {
    let reason = format!("{error:#}").lines().next().unwrap_or("").to_owned();
    let context = event.map_or(String::new(), |e| {
        format!(" on {} from pid {}", e.kind().name(), e.process.pid)
    });
    eprintln!(
        "rulehost: rule {} ({} sha256 {}) faulted{context}: {reason}",
        slot.rule.name, slot.rule.metadata.id, slot.rule.sha256
    );
    let now = Instant::now();
    slot.faults.push_back(now);
    while slot
        .faults
        .front()
        .is_some_and(|t| now.duration_since(*t) > FAULT_WINDOW)
    {
        slot.faults.pop_front();
    }
    let state = match slot.instance.take() {
        Some(mut instance) => instance.take_state(),
        None => std::mem::take(&mut slot.parked_state),
    };
    if slot.faults.len() >= MAX_FAULTS {
        slot.disabled = true;
        slot.parked_state = state;
        eprintln!(
            "rulehost: rule {} ({}) disabled after {} faults within {}s",
            slot.rule.name,
            slot.rule.metadata.id,
            slot.faults.len(),
            FAULT_WINDOW.as_secs()
        );
        return;
    }
    match RuleInstance::new(runtime, &slot.rule, state, containers.clone()) {
        Ok(instance) => slot.instance = Some(instance),
        Err(error) => {
            slot.disabled = true;
            eprintln!(
                "rulehost: rule {} disabled: cannot recreate its instance: {error:#}",
                slot.rule.name
            );
        }
    }
}

//! Delivering events to the rules that selected them, collecting their findings, and
//! containing rules that misbehave. This file holds the rule set; delivery,
//! findings and the fault policy are their own modules.

use crate::events::{Event, EventKind};
use crate::logging::error_line;
use crate::rules::{
    ApiServers, Containers, Delivery, DestinationKey, Interest, PackedBatch, Refusals, Rule,
    RuleEngine, RuleFinding, RuleInstance, SharedInterest, WitEvent, WitIpAddress, WitValue,
    to_wit,
};
use crate::sinks::{EventRecord, FieldValue, Finding, FindingData};
use crate::state::RuleState;
use crate::state::store::{RestoreReport, StateStore};
use anyhow::{Result, bail};
use std::collections::VecDeque;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod deliver;
mod faults;
mod findings;

use faults::*;
pub use faults::{FAULT_WINDOW, MAX_FAULTS};
use findings::*;

/// Counters a user or a test can read to see what the dispatcher had to refuse.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub events: u64,
    pub findings: u64,
    pub rule_faults: u64,
    /// Findings dropped for exceeding the per-event count or size bound, or naming no event.
    pub findings_dropped: u64,
    /// Events not delivered to a rule that used up its call budget redoing a faulted
    /// batch.
    pub events_skipped: u64,
}

impl Counters {
    /// Counts what [`findings::collect`] delivered and dropped.
    fn count_findings(&mut self, (delivered, dropped): (u64, u64)) {
        self.findings += delivered;
        self.findings_dropped += dropped;
    }
}

/// A loaded rule and its live instance.
struct Slot {
    /// Where the rule came from (its file path, or the built-in name): what a reload
    /// of that source replaces.
    key: String,
    rule: Arc<Rule>,
    instance: Option<RuleInstance>,
    /// Kept here while no instance exists (after a fault that could not recover).
    parked_state: RuleState,
    faults: VecDeque<Instant>,
    disabled: bool,
    /// Events this rule was given (only those its metadata selected).
    delivered: u64,
    /// What it watches; kept across its versions and faults.
    interest: SharedInterest,
}

/// Routes event batches to rules.
pub struct Dispatcher {
    runtime: Arc<RuleEngine>,
    slots: Vec<Slot>,
    containers: Containers,
    /// Container handles of the batch's events, by index: set for the events some rule
    /// selected (what its `context` and state calls may name).
    handles: Vec<Option<u64>>,
    /// The batch being delivered to one rule, typed or packed as it takes batches.
    wit_events: Vec<WitEvent>,
    packed: PackedBatch,
    selected: Vec<u32>,
    /// Where rule state is written after each batch, once [`Dispatcher::persist_to`] ran.
    persist: Option<Box<StateStore>>,
    pub counters: Counters,
    /// Per-rule faults, drops and refusals are counted here too, when set.
    pub(crate) metrics: Option<Arc<crate::server::metrics::Metrics>>,
}

impl Dispatcher {
    pub fn new(runtime: Arc<RuleEngine>) -> Dispatcher {
        Dispatcher {
            runtime,
            slots: Vec::new(),
            containers: Containers::default(),
            handles: Vec::new(),
            wit_events: Vec::new(),
            packed: PackedBatch::default(),
            selected: Vec::new(),
            persist: None,
            counters: Counters::default(),
            metrics: None,
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
        let mut store = StateStore::open(dir)?;
        let (mut report, rows) = {
            let mut table = self.containers.write().expect("container lock");
            store.sweep(alive, &mut table)?
        };
        let mut read = 0;
        for slot in &mut self.slots {
            Self::restore_interest(&mut store, &slot.rule.metadata.id, &slot.interest);
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

    /// The API server endpoints rules see from their next call.
    pub fn set_api_servers(&self, endpoints: Vec<std::net::SocketAddr>) {
        self.runtime.set_api_servers(endpoints);
    }

    /// Moves whenever what some rule watches may have changed.
    pub fn interest_generation(&self) -> u64 {
        self.runtime.interest_generation()
    }

    /// The destinations the kernel should keep connects to, when every enabled rule
    /// that selects connects asked for only watched ones; `None`: keep every connect.
    pub fn connect_filter(&self) -> Option<rustc_hash::FxHashSet<DestinationKey>> {
        let api_servers = self.runtime.api_servers();
        let mut keys = rustc_hash::FxHashSet::default();
        for slot in self.slots.iter().filter(|s| !s.disabled) {
            let metadata = &slot.rule.metadata;
            if !metadata.selects.contains(&EventKind::SocketConnect) {
                continue;
            }
            let interest = slot.interest.lock().expect("interest lock");
            if !interest.filters() {
                return None;
            }
            keys.extend(interest.destinations(&api_servers));
        }
        Some(keys)
    }

    /// The file rule state is persisted to, if any.
    pub fn state_file(&self) -> Option<&Path> {
        self.persist.as_deref().map(StateStore::path)
    }

    /// Writes the state changed since the last write (and deletes the rows of containers
    /// that went away) in one transaction. [`Dispatcher::dispatch`] does this after each
    /// batch; a failure is logged and retried next time, nothing in memory is lost.
    pub fn flush_state(&mut self) {
        if let Some(store) = self.persist.as_deref_mut() {
            let table = self.containers.read().expect("container lock");
            store.flush(self.slots.iter_mut().map(slot_state), &table);
            for slot in &self.slots {
                let mut interest = slot.interest.lock().expect("interest lock");
                if let Some(keys) = interest.take_unsaved()
                    && !store.save_interest(&slot.rule.metadata.id, &keys)
                {
                    interest.mark_unsaved();
                }
            }
        }
    }

    /// Puts back what rule `rule_id` watched before a restart.
    fn restore_interest(store: &mut StateStore, rule_id: &str, interest: &SharedInterest) {
        match store.load_interest(rule_id) {
            Ok(keys) => interest.lock().expect("interest lock").restore(keys),
            Err(error) => {
                tracing::warn!(id = %rule_id, error = %error_line(error.as_ref()), "cannot restore what the rule watches")
            }
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
        let interest = SharedInterest::default();
        if let Some(store) = self.persist.as_deref_mut() {
            Self::restore_interest(store, &rule.metadata.id, &interest);
            // What an earlier run (or an earlier rule with this id) left on disk.
            state = RuleState::new(self.runtime.limits().state);
            let table = self.containers.read().expect("container lock");
            if let Err(error) = store.restore_rule(&rule.metadata.id, &mut state, &table) {
                tracing::warn!(rule = %rule.name, error = %error_line(error.as_ref()), "cannot restore rule state");
            }
        }
        let mut instance = RuleInstance::new(
            &self.runtime,
            &rule,
            state,
            self.containers.clone(),
            interest.clone(),
        )?;
        if self.persist.is_some() {
            instance.store.data_mut().state.record_changes();
        }
        self.slots.push(Slot {
            key: key.to_owned(),
            rule,
            instance: Some(instance),
            parked_state: RuleState::default(),
            faults: VecDeque::new(),
            disabled: false,
            delivered: 0,
            interest,
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
        let said = slot.interest.lock().expect("interest lock").restart();
        let mut instance = match recreate_instance(
            &self.runtime,
            &rule,
            state,
            self.containers.clone(),
            slot.interest.clone(),
        ) {
            Ok(instance) => instance,
            Err((error, state)) => {
                slot.interest.lock().expect("interest lock").resume(said);
                match slot.instance.as_mut() {
                    Some(instance) => instance.store.data_mut().state = state,
                    None => slot.parked_state = state,
                }
                return Err(error);
            }
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

    /// Linear memory the live instances of `rule_id` hold, in bytes.
    pub fn memory_bytes(&self, rule_id: &str) -> usize {
        self.slots
            .iter()
            .filter(|s| s.rule.metadata.id == rule_id)
            .filter_map(|s| s.instance.as_ref())
            .map(RuleInstance::memory_bytes)
            .sum()
    }

    /// How many containers `rule_id` holds state for.
    pub fn state_containers(&self, rule_id: &str) -> usize {
        self.states_of(rule_id).map(RuleState::containers).sum()
    }

    /// Key and value bytes the rules with metadata id `rule_id` hold.
    pub fn state_bytes(&self, rule_id: &str) -> usize {
        self.states_of(rule_id).map(RuleState::bytes).sum()
    }

    fn states_of(&self, rule_id: &str) -> impl Iterator<Item = &RuleState> {
        self.slots
            .iter()
            .filter(move |s| s.rule.metadata.id == rule_id)
            .map(|s| match &s.instance {
                Some(instance) => &instance.store.data().state,
                None => &s.parked_state,
            })
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

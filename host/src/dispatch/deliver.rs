//! Delivering a batch: each rule gets the events it selected in one call; a failed
//! batch is redone one event at a time, so only the faulting events are lost.

use super::*;

impl Dispatcher {
    /// Delivers a batch to every rule that selected some of it; findings are appended
    /// to `out` in event order per rule. Returns the events so their buffer is reused.
    pub fn dispatch(&mut self, mut events: Vec<Event>, out: &mut Vec<Finding>) -> Vec<Event> {
        self.counters.events += events.len() as u64;
        // Filled in for the events some rule selects, as it selects them.
        self.handles.clear();
        self.handles.resize(events.len(), None);
        for slot_index in 0..self.slots.len() {
            let before = self.counters;
            events = self.deliver_to(slot_index, events, out);
            let slot = &mut self.slots[slot_index];
            let refusals = report_refusals(slot);
            if let Some(metrics) = &self.metrics {
                let id = &slot.rule.metadata.id;
                metrics.rule_delivery(
                    id,
                    self.counters.rule_faults - before.rule_faults,
                    self.counters.findings_dropped - before.findings_dropped,
                );
                metrics.rule_refused(id, "log_lines", refusals.log_lines);
                metrics.rule_refused(id, "context_calls", refusals.context_calls);
            }
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
        let packed = slot.instance.as_ref().is_some_and(RuleInstance::packed);
        self.selected.clear();
        self.wit_events.clear();
        self.packed.clear();
        let interest = slot.interest.lock().expect("interest lock");
        let api_servers = self.runtime.api_servers();
        let mut table = self.containers.write().expect("container lock");
        let mut handles = Handles::default();
        // Cgroups with an exec earlier in this batch that captured env entries: the rule
        // may watch new destinations when it sees it, so their later connects go to it
        // (as the kernel lets them through until that exec is processed).
        let mut open: Vec<u64> = Vec::new();
        for (index, event) in events.iter().enumerate() {
            if metadata.wants(event.kind(), event.container.is_some())
                && admitted(&interest, &api_servers, event, &mut open)
            {
                let handle = handles.of(&mut table, event);
                self.handles[index] = handle;
                self.selected.push(index as u32);
                if packed {
                    self.packed.push(event, handle, metadata);
                } else {
                    self.wit_events.push(to_wit(event, handle, metadata));
                }
            }
        }
        drop((interest, api_servers, table));
        if self.selected.is_empty() {
            return events;
        }
        slot.delivered += self.selected.len() as u64;
        let Some(instance) = slot.instance.as_mut() else {
            return events;
        };
        instance.lend(
            events,
            std::mem::take(&mut self.selected),
            std::mem::take(&mut self.handles),
        );
        let batch = match packed {
            true => Delivery::Packed(&self.packed),
            false => Delivery::Typed(&self.wit_events),
        };
        let result = instance.deliver(batch, self.runtime.limits());
        let (events, selected, handles) = instance.take_back();
        (self.selected, self.handles) = (selected, handles);
        match result {
            Ok(findings) => self.counters.count_findings(collect(
                slot,
                &self.runtime,
                &self.containers,
                Delivered {
                    events: &events,
                    handles: &self.handles,
                    selected: &self.selected,
                },
                findings,
                out,
            )),
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
                // The redo, too, holds the loop for at most one call's budget. Each
                // call is charged what it used up to its own deadline: a call that ran
                // into its deadline costs exactly its budget however late the epoch
                // tick came, and re-instantiating after a fault costs the rule nothing,
                // so which events are redone never depends on the machine's load.
                let redo_budget = self.runtime.limits().call_budget(selected.len());
                let one_budget = self.runtime.limits().call_budget(1);
                let mut redo_spent = Duration::ZERO;
                for (i, &host_index) in selected.iter().enumerate() {
                    let slot = &mut self.slots[slot_index];
                    let Some(instance) = slot.instance.as_mut() else {
                        break;
                    };
                    if redo_spent >= redo_budget {
                        let skipped = (selected.len() - i) as u64;
                        self.counters.events_skipped += skipped;
                        tracing::warn!(
                            rule = %slot.rule.name,
                            id = %slot.rule.metadata.id,
                            skipped,
                            "rule used its call budget redoing a faulted batch; the rest of the batch is not delivered to it"
                        );
                        break;
                    }
                    let one = if packed {
                        self.packed.clear();
                        self.packed.push(
                            &events[host_index as usize],
                            self.handles[host_index as usize],
                            &slot.rule.metadata,
                        );
                        Delivery::Packed(&self.packed)
                    } else {
                        Delivery::Typed(std::slice::from_ref(&self.wit_events[i]))
                    };
                    instance.lend(events, vec![host_index], std::mem::take(&mut self.handles));
                    let call_started = crate::rules::cpu_budget::thread_cpu_time();
                    let result = instance.deliver(one, self.runtime.limits());
                    redo_spent += (crate::rules::cpu_budget::thread_cpu_time() - call_started)
                        .min(one_budget);
                    (events, _, self.handles) = instance.take_back();
                    match result {
                        Ok(findings) => self.counters.count_findings(collect(
                            slot,
                            &self.runtime,
                            &self.containers,
                            Delivered {
                                events: &events,
                                handles: &self.handles,
                                selected: &[host_index],
                            },
                            findings,
                            out,
                        )),
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

/// Container handles for the events a rule selects. A container's events tend to come
/// in runs sharing one `Arc`: the last one's handle is reused without hashing its id
/// again. Events no rule selects are never looked up.
#[derive(Default)]
struct Handles {
    last: Option<(*const crate::events::Container, u64)>,
}

impl Handles {
    fn of(&mut self, table: &mut crate::state::ContainerTable, event: &Event) -> Option<u64> {
        let container = event.container.as_ref()?;
        match self.last {
            Some((seen, handle)) if std::ptr::eq(seen, Arc::as_ptr(container)) => Some(handle),
            _ => {
                let handle = table.intern(container);
                self.last = Some((Arc::as_ptr(container), handle));
                Some(handle)
            }
        }
    }
}

/// Logs, once per delivery, what a rule asked for over its bounds, and returns it.
fn report_refusals(slot: &mut Slot) -> Refusals {
    let Some(instance) = slot.instance.as_mut() else {
        return Refusals::default();
    };
    let refusals = instance.take_refusals();
    if refusals != Refusals::default() {
        tracing::warn!(
            rule = %slot.rule.name,
            id = %slot.rule.metadata.id,
            log_lines_dropped = refusals.log_lines,
            context_calls_refused = refusals.context_calls,
            "rule went over its log or context bounds"
        );
    }
    refusals
}

/// Whether a rule's interest lets an event through: every exec; a connect only to a
/// destination it watches (once it asked for only those), or from a cgroup in `open`.
/// An exec with env entries opens its cgroup for the rest of the batch.
fn admitted(
    interest: &Interest,
    api_servers: &ApiServers,
    event: &Event,
    open: &mut Vec<u64>,
) -> bool {
    match &event.body {
        crate::events::Body::SocketConnect { address, .. } => {
            open.contains(&event.cgroup_id)
                || interest.admits(address.ip_port().map(|(ip, _)| ip), api_servers)
        }
        crate::events::Body::ProcessExec { env, .. } => {
            if interest.filters() && !env.is_empty() && !open.contains(&event.cgroup_id) {
                open.push(event.cgroup_id);
            }
            true
        }
    }
}

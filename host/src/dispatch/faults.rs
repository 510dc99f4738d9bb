//! The fault policy: a fault is logged, counted and the instance recreated around the
//! same state; a rule that keeps faulting is disabled, its state kept.

use super::*;

/// Faults within [`FAULT_WINDOW`] after which a rule is disabled.
pub const MAX_FAULTS: usize = 5;
pub const FAULT_WINDOW: Duration = Duration::from_secs(60);

/// [`RuleInstance::recreate`], keeping the changes the state recorded for persistence
/// (an empty state is swapped for a fresh one there, which would lose them).
// The state goes back by value on the rare failure path: no allocation, no copy.
#[allow(clippy::result_large_err)]
pub(super) fn recreate_instance(
    runtime: &RuleEngine,
    rule: &Rule,
    mut state: RuleState,
    containers: Containers,
    interest: SharedInterest,
) -> Result<RuleInstance, (anyhow::Error, RuleState)> {
    let changes = state.take_changes();
    match RuleInstance::recreate(runtime, rule, state, containers, interest) {
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

/// The one-line reason for a fault: the trap (or limit) that ended the call, without
/// the wasm backtrace wasmtime puts first.
pub(super) fn reason(error: &anyhow::Error) -> String {
    let root = error.root_cause().to_string();
    root.lines().next().unwrap_or("").to_owned()
}

/// Records a fault, recreates the instance around the same state, and disables the
/// rule if it keeps faulting.
pub(super) fn fault(
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
pub(super) fn note_fault(slot: &mut Slot) {
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
pub(super) fn recreate(slot: &mut Slot, runtime: &RuleEngine, containers: &Containers) {
    let state = match slot.instance.take() {
        Some(mut instance) => instance.take_state(),
        None => std::mem::take(&mut slot.parked_state),
    };
    match recreate_instance(
        runtime,
        &slot.rule,
        state,
        containers.clone(),
        slot.interest.clone(),
    ) {
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

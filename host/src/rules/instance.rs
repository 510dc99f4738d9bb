//! One live, sandboxed instance of a rule: its own store, memory cap and CPU deadline,
//! around per-container state the host keeps when the instance is replaced.

use super::*;

/// One live, sandboxed instance of a rule.
pub struct RuleInstance {
    pub store: Store<InstanceState>,
    bindings: bindings::Rule,
    pub metadata: Metadata,
}

impl RuleInstance {
    /// Instantiates `rule` around existing `state`, reads its metadata and runs `init`.
    pub fn new(
        runtime: &RuleEngine,
        rule: &Rule,
        state: RuleState,
        containers: Containers,
    ) -> Result<RuleInstance> {
        Self::recreate(runtime, rule, state, containers).map_err(|(error, _)| error)
    }

    /// As [`RuleInstance::new`], but a failure hands `state` back so it is not lost.
    // The state goes back by value on the rare failure path: no allocation, no copy.
    #[allow(clippy::result_large_err)]
    pub fn recreate(
        runtime: &RuleEngine,
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
            limits: RuleLimiter::new(limits.memory_bytes),
            log_budget: LogBudget::default(),
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
        match Self::start(&mut store, rule) {
            Ok((bindings, metadata)) => Ok(RuleInstance {
                store,
                bindings,
                metadata,
            }),
            Err(error) => Err((error, std::mem::take(&mut store.data_mut().state))),
        }
    }

    /// Instantiates, reads the metadata and runs `init`.
    fn start(store: &mut Store<InstanceState>, rule: &Rule) -> Result<(bindings::Rule, Metadata)> {
        let bindings = rule.pre.instantiate(&mut *store).map_err(|e| {
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
        let mut metadata = Metadata::from_wit(metadata);
        validate_metadata(&mut metadata)?;
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

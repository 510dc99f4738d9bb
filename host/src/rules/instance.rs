//! One live, sandboxed instance of a rule: its own store, memory cap and CPU deadline,
//! around per-container state the host keeps when the instance is replaced.

use super::*;

/// Host resources a rule asked for over its bounds, and did not get.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Refusals {
    /// Log lines dropped over the rate limit.
    pub log_lines: u64,
    /// `context` calls answered empty over their per-event bound.
    pub context_calls: u64,
}

/// A batch as a rule takes it: typed through `detector`, or packed (0.1.3) where the
/// rule exports `packed` ([`RuleInstance::packed`]).
#[derive(Clone, Copy)]
pub enum Delivery<'a> {
    Typed(&'a [wit::Event]),
    Packed(&'a PackedBatch),
}

impl Delivery<'_> {
    fn len(&self) -> usize {
        match self {
            Delivery::Typed(events) => events.len(),
            Delivery::Packed(batch) => batch.len(),
        }
    }
}

/// The `packed.on-events` signature.
type PackedOnEvents<'a> = wasmtime::component::TypedFunc<(&'a [u8],), (Vec<u8>,)>;

/// One live, sandboxed instance of a rule.
pub struct RuleInstance {
    pub store: Store<InstanceState>,
    bindings: bindings::Rule,
    /// Its `packed.on-events`, type-checked at instantiation.
    packed: Option<wasmtime::component::Func>,
    /// The names its findings use.
    names: FieldNames,
    pub metadata: Metadata,
}

impl RuleInstance {
    /// Instantiates `rule` around existing `state`, reads its metadata and runs `init`.
    pub fn new(
        runtime: &RuleEngine,
        rule: &Rule,
        state: RuleState,
        containers: Containers,
        interest: SharedInterest,
    ) -> Result<RuleInstance> {
        Self::recreate(runtime, rule, state, containers, interest).map_err(|(error, _)| error)
    }

    /// As [`RuleInstance::new`], but a failure hands `state` back so it is not lost.
    // The state goes back by value on the rare failure path: no allocation, no copy.
    #[allow(clippy::result_large_err)]
    pub fn recreate(
        runtime: &RuleEngine,
        rule: &Rule,
        state: RuleState,
        containers: Containers,
        interest: SharedInterest,
    ) -> Result<RuleInstance, (anyhow::Error, RuleState)> {
        let limits = &runtime.limits;
        let state = if state.containers() == 0 {
            RuleState::new(limits.state)
        } else {
            state
        };
        let data = InstanceState {
            limits: RuleLimiter::new(rule.memory_bytes),
            log_budget: LogBudget::default(),
            state,
            batch: Batch::default(),
            containers,
            rule_name: rule.name.clone(),
            // Instantiation, metadata and init together.
            call: CallBudget::start(Duration::from_secs(1)),
            context_left: limits.context_calls(1),
            context_refused: 0,
            cluster: runtime.cluster.clone(),
            ticker: runtime.ticker.clone(),
            interest,
            interest_changes: runtime.interest_changes.clone(),
            wasi: wasi::RuleWasi::deny_all(),
        };
        let mut store = Store::new(&runtime.engine, data);
        store.limiter(|data| &mut data.limits);
        store.epoch_deadline_callback(|context| match context.data().call.remaining_ticks() {
            Some(ticks) => Ok(wasmtime::UpdateDeadline::Continue(ticks)),
            None => Err(wasmtime::Trap::Interrupt.into()),
        });
        let ticks = store.data().call.ticks();
        store.set_epoch_deadline(ticks);
        let flight = runtime.ticker.flight();
        let started = Self::start(&mut store, rule);
        store.data_mut().flush_output();
        drop(flight);
        match started {
            Ok((bindings, packed, metadata)) => Ok(RuleInstance {
                store,
                bindings,
                packed,
                names: FieldNames::new(FindingSource::of(rule)),
                metadata,
            }),
            Err(error) => Err((error, std::mem::take(&mut store.data_mut().state))),
        }
    }

    /// Instantiates, reads the metadata and runs `init`.
    fn start(
        store: &mut Store<InstanceState>,
        rule: &Rule,
    ) -> Result<(bindings::Rule, Option<wasmtime::component::Func>, Metadata)> {
        let instantiating = |e: wasmtime::Error| {
            anyhow!(
                "instantiating: {}",
                error_line(anyhow::Error::from(e).as_ref())
            )
        };
        let instance = rule
            .pre
            .instance_pre()
            .instantiate(&mut *store)
            .map_err(instantiating)?;
        let bindings = bindings::Rule::new(&mut *store, &instance).map_err(instantiating)?;
        let packed = match rule.packed {
            Some(index) => {
                let func = instance
                    .get_func(&mut *store, index)
                    .ok_or_else(|| anyhow!("instantiating: `packed.on-events` is missing"))?;
                func.typed::<(&[u8],), (Vec<u8>,)>(&*store).map_err(|e| {
                    anyhow!(
                        "`packed.on-events` has the wrong type: {}",
                        error_line(anyhow::Error::from(e).as_ref())
                    )
                })?;
                Some(func)
            }
            None => None,
        };
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
        Ok((bindings, packed, metadata))
    }

    /// Whether the rule takes packed batches ([`Delivery::Packed`]).
    pub fn packed(&self) -> bool {
        self.packed.is_some()
    }

    /// Delivers a batch; the host events it came from must be in the store's batch.
    /// The call's CPU time and `context` calls are bounded by `limits` for its size.
    pub fn deliver(&mut self, batch: Delivery<'_>, limits: &Limits) -> Result<Vec<RuleFinding>> {
        let result = self.call(batch, limits);
        self.store.data_mut().flush_output();
        result
    }

    fn call(&mut self, batch: Delivery<'_>, limits: &Limits) -> Result<Vec<RuleFinding>> {
        let call = CallBudget::start(limits.call_budget(batch.len()));
        let context_calls = limits.context_calls(batch.len());
        let data = self.store.data_mut();
        data.call = call;
        data.context_left = context_calls;
        self.store.set_epoch_deadline(call.ticks());
        let _flight = self.store.data().ticker.flight();
        let detector = self.bindings.rulehost_rule_detector();
        let result = match (batch, self.packed) {
            (Delivery::Packed(batch), Some(func)) => {
                let on_events: PackedOnEvents<'_> = func.typed(&self.store)?;
                let (bytes,) = on_events.call(&mut self.store, (batch.bytes(),))?;
                return decode_findings(&bytes, &mut self.names)
                    .map_err(|malformed| anyhow!("findings from `packed.on-events`: {malformed}"));
            }
            (Delivery::Packed(_), None) => bail!("packed batch for a rule without `packed`"),
            (Delivery::Typed([single]), _) => detector.call_on_event(&mut self.store, single),
            (Delivery::Typed(many), _) => detector.call_on_events(&mut self.store, many),
        };
        let records = result.map_err(anyhow::Error::from)?;
        let names = &mut self.names;
        Ok(records
            .into_iter()
            .map(|finding| RuleFinding::from_record(finding, names))
            .collect())
    }

    /// Hands the instance the host side of a delivery: the events, which of them the
    /// rule is given, and their container handles.
    pub fn lend(&mut self, events: Vec<Event>, selected: Vec<u32>, handles: Vec<Option<u64>>) {
        self.store.data_mut().batch = Batch {
            events,
            selected,
            handles,
        };
    }

    /// Takes back what [`RuleInstance::lend`] handed over, so its buffers are reused.
    pub fn take_back(&mut self) -> (Vec<Event>, Vec<u32>, Vec<Option<u64>>) {
        let batch = std::mem::take(&mut self.store.data_mut().batch);
        (batch.events, batch.selected, batch.handles)
    }

    /// What the rule asked for over its bounds since last asked.
    pub fn take_refusals(&mut self) -> Refusals {
        let data = self.store.data_mut();
        Refusals {
            log_lines: data.log_budget.take_suppressed(),
            context_calls: std::mem::take(&mut data.context_refused),
        }
    }

    /// Linear memory the instance holds now, in bytes (counted against its cap).
    pub fn memory_bytes(&self) -> usize {
        self.store.data().limits.memory_bytes()
    }

    /// Takes the rule's state out (to hand it to a replacement instance).
    pub fn take_state(&mut self) -> RuleState {
        std::mem::take(&mut self.store.data_mut().state)
    }
}

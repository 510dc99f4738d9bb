//! The rulehost rule SDK: everything a Rust rule needs besides its own logic.
//!
//! ```ignore
//! use rulehost_sdk::*;
//!
//! struct MyRule;
//!
//! impl Rule for MyRule {
//!     fn metadata() -> RuleMetadata {
//!         Metadata::new("RH-0001", "0.1.0", "My rule", "my_rule")
//!             .selects(&[EventKind::SocketConnect])
//!             .build()
//!     }
//!
//!     fn on_event(index: u32, event: &Event, findings: &mut Findings) {
//!         // ... push findings about `event` (the `index`-th of the delivered batch)
//!     }
//! }
//!
//! export_rule!(MyRule);
//! ```
//!
//! Build it as a `cdylib` for `wasm32-unknown-unknown` and turn the module into a
//! component (`wasm-tools component new`, or `make build` for rules in this repository).

mod findings;
mod metadata;
mod net;
mod packed;

pub use findings::Findings;
pub use metadata::Metadata;
pub use net::{from_std, socket_ip_port, to_std};
pub use packed::{decode_events, for_each_event};

wit_bindgen::generate!({
    world: "packed-rule",
    path: "../wit",
    pub_export_macro: true,
    default_bindings_module: "rulehost_sdk",
});

pub use exports::rulehost::rule::detector::Guest;
pub use exports::rulehost::rule::packed::Guest as PackedGuest;
pub use rulehost::rule::types::*;
pub use rulehost::rule::{cluster, context, interest, log, state};

/// A rule's logic. [`export_rule!`] turns an implementation into the component's
/// exports: `detector`, with the batched `on-events` derived from [`Rule::on_event`], and
/// `packed` (0.1.3), the same batches carried as bytes.
pub trait Rule {
    /// Who the rule is and what it wants delivered; read once at load.
    fn metadata() -> RuleMetadata;

    /// Called once per instance before any event; an error refuses the load.
    fn init(_config: &str) -> Result<(), String> {
        Ok(())
    }

    /// Called once per delivered batch, before its first event: the place to refresh
    /// what the host may have changed between calls (such as `cluster` facts), once
    /// instead of per event.
    fn before_batch() {}

    /// Handles the `index`-th event of the delivered batch, adding what it found to
    /// `findings` (each finding's `event` should be `index`).
    fn on_event(index: u32, event: &Event, findings: &mut Findings);
}

/// Delivers a batch to a [`Rule`] one event at a time, as the world's `on-events` export.
pub fn on_events<R: Rule>(events: &[Event]) -> Vec<Finding> {
    R::before_batch();
    let mut findings = Findings::records();
    for (index, event) in events.iter().enumerate() {
        R::on_event(index as u32, event, &mut findings);
    }
    findings.into_records()
}

/// A finding's named value.
pub fn field(name: &str, value: Value) -> Field {
    Field {
        name: name.into(),
        value,
    }
}

/// Delivers a packed batch to a [`Rule`] one event at a time, as the world's
/// `packed.on-events` export. The host wrote the bytes, so bytes that do not decode are
/// its bug: the call traps with the reason, and the host counts it as the rule's fault.
pub fn on_packed_events<R: Rule>(events: &[u8]) -> Vec<u8> {
    R::before_batch();
    let mut findings = Findings::packed();
    let decoded = for_each_event(events, |index, event| {
        R::on_event(index, event, &mut findings)
    });
    match decoded {
        Ok(()) => findings.into_bytes(),
        Err(malformed) => panic!("packed batch from the host: {malformed}"),
    }
}

/// Logs a line through the host (rate limited and escaped there).
pub fn log_line(level: LogLevel, message: &str) {
    log::log(level, message);
}

/// Exports a [`Rule`] implementation as the component's `detector` and `packed`.
#[macro_export]
macro_rules! export_rule {
    ($rule:ident) => {
        impl $crate::Guest for $rule {
            fn metadata() -> $crate::RuleMetadata {
                <$rule as $crate::Rule>::metadata()
            }

            fn init(config: String) -> Result<(), String> {
                <$rule as $crate::Rule>::init(&config)
            }

            fn on_event(event: $crate::Event) -> Vec<$crate::Finding> {
                $crate::on_events::<$rule>(std::slice::from_ref(&event))
            }

            fn on_events(events: Vec<$crate::Event>) -> Vec<$crate::Finding> {
                $crate::on_events::<$rule>(&events)
            }
        }

        impl $crate::PackedGuest for $rule {
            fn on_events(events: Vec<u8>) -> Vec<u8> {
                $crate::on_packed_events::<$rule>(&events)
            }
        }

        $crate::export!($rule);
    };
}

//! rulehost: a runtime-security agent whose detection rules are sandboxed WebAssembly
//! components. The host owns the kernel probes and all state; rules are code that can
//! be replaced, shipped as one `.wasm` file, and never take the host down.

pub mod agent;
pub mod cli;
pub mod containers;
mod cpu_budget;
pub mod dispatch;
pub mod events;
pub mod logging;
pub mod mounts;
pub mod output;
pub mod persist;
pub mod pipeline;
pub mod ready;
pub mod replay;
pub mod rules;
pub mod sensor;
pub mod state;
pub mod sweep;
pub mod trigger;

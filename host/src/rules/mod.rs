//! The wasmtime side of rules, handed bytes `sources` already read and vouched for:
//! compiling rule components, checking what they import, and running each rule in its
//! own sandboxed store.
//!
//! A [`Rule`] is compiled code plus what the host learned from it at load (metadata,
//! sha256). A [`RuleInstance`] is one live instance with its own `Store`, memory cap
//! and CPU deadline. Per-container state is held in [`RuleState`] outside the instance,
//! so replacing or recreating an instance never loses it.

mod budget;
mod cache_trust;
pub(crate) mod cpu_budget;

mod cluster;
mod compiler;
mod convert;
mod engine;
pub mod files;
mod grants;
mod imports;
mod instance;
mod interest;
mod limiter;
mod log_budget;
mod metadata;
mod packed;
mod producers;
mod ticker;
mod validate;
mod wasi;
mod world;

pub use crate::state::{ContainerTable, Containers};
pub use budget::{MAX_BUDGET_BYTES, RuleBounds, RuleBudget};
pub use cluster::{ApiServers, ClusterFacts};
use compiler::Compiler;
pub use compiler::{CompileLimits, compile_rule_child};
pub use convert::*;
pub use engine::{Limits, RuleEngine, sha256_hex};
pub use files::{BUILTIN_K8S_API_CONNECTION, BUILTIN_NAME, MAX_RULE_BYTES, read_rule_file};
pub use grants::{Grant, Grants, parse_grant};
pub use imports::{Batch, InstanceState};
pub use instance::{Delivery, Refusals, RuleInstance};
pub use interest::{DestinationKey, Interest, SharedInterest, WATCH_MAX, destination_key};
pub use metadata::{FindingSource, Metadata, Mitre, Origin, Rule, RuleRef};
pub use packed::{FieldNames, FieldShape, FindingShape, PackedBatch, RuleFinding, decode_findings};
pub use producers::producers;
pub use validate::validate_metadata;
pub use wasi::CAPABILITIES;
use world::*;

use crate::events::{Event, EventKind};
use crate::logging::{error_line, one_line};
use crate::rules::cpu_budget::CallBudget;
use crate::state::{RuleState, StateLimits, StateRefusal};
use anyhow::{Context, Result, anyhow, bail};
use limiter::RuleLimiter;
use log_budget::LogBudget;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use ticker::Ticker;
use wasmtime::component::{Component, ComponentExportIndex, HasSelf, Linker};
use wasmtime::{Config, Engine, Store};

/// Generated bindings for the `rule` world in `wit/`.
pub mod bindings {
    wasmtime::component::bindgen!({
        world: "rule",
        path: "../wit",
    });
}

use bindings::rulehost::rule::types as wit;

/// The WIT package this host implements.
pub const WORLD_PACKAGE: &str = "rulehost:rule";
/// Its version; rules built for a semver-compatible version load.
pub const WORLD_VERSION: &str = "0.1.3";
/// Interfaces a rule may import; anything else is refused at load.
const ALLOWED_IMPORTS: &[&str] = &["types", "state", "context", "log", "cluster", "interest"];

//! rulehost: a runtime-security agent whose detection rules are sandboxed WebAssembly
//! components. The host owns the kernel probes and all state; rules are code that can
//! be replaced, shipped as one `.wasm` file, and never take the host down.
//!
//! The public modules are what the `rulehost` binary, the end-to-end tests, the benches
//! and the fuzz targets use: the command line, events and their parsers, rules and the
//! dispatcher, findings, the sensor and container resolution. Everything else is
//! `pub(crate)`.
#![warn(unreachable_pub)]

pub(crate) mod agent;
pub mod api_servers;
pub mod cli;
pub mod config;
pub mod containers;
pub mod dispatch;
pub mod events;
pub mod exceptions;
pub mod logging;
pub mod metadata;
pub mod oci;
pub(crate) mod pipeline;
pub mod rules;
pub mod sensor;
pub(crate) mod server;
pub mod sinks;
pub mod sources;
pub mod state;
pub mod sys;
pub mod trust;

/// Makes rustls's ring provider the process default (once; later calls do nothing).
/// Every HTTP client here (webhooks, registries) builds its TLS from the default, and
/// ring needs no cmake/aws-lc build.
pub fn install_tls_provider() {
    // An error only says a default is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

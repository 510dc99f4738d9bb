//! Embeds the default rule and the eBPF object into the `rulehost` binary.
//!
//! The Makefile builds the pieces first (`make build`): the example rule crates for
//! wasm32-unknown-unknown and the eBPF programs. This script turns each rule's core
//! module into a component in `target/rules/` (the embedded default rule is
//! byte-for-byte the shippable `target/rules/k8s_api_connection.wasm`) and copies the
//! eBPF object into OUT_DIR.

use anyhow::{Result, bail};
use std::path::PathBuf;

fn main() {
    if let Err(error) = run() {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let target_dir = target_dir()?;

    // Every example rule becomes a shippable component in target/rules/; the first is
    // also embedded as the default rule.
    let rules_dir = target_dir.join("rules");
    std::fs::create_dir_all(&rules_dir)?;
    for (module, rule) in [
        ("guest_k8s_api_connection", "k8s_api_connection"),
        ("guest_cloud_metadata_access", "cloud_metadata_access"),
    ] {
        let module = target_dir.join(format!("wasm32-unknown-unknown/release/{module}.wasm"));
        println!("cargo:rerun-if-changed={}", module.display());
        let component = componentize(&module)?;
        std::fs::write(rules_dir.join(format!("{rule}.wasm")), &component)?;
        if rule == "k8s_api_connection" {
            std::fs::write(out_dir.join("k8s_api_connection.wasm"), &component)?;
        }
    }

    let bpf = target_dir.join("bpf/rulehost-probes.o");
    println!("cargo:rerun-if-changed={}", bpf.display());
    if !bpf.exists() {
        bail!(
            "{} is missing: build the eBPF programs first (`make build`)",
            bpf.display()
        );
    }
    std::fs::copy(&bpf, out_dir.join("rulehost-probes.o"))?;
    Ok(())
}

include!("build_support.rs");

//! Builds and embeds what the `rulehost` binary carries, so a plain `cargo build` works
//! once `scripts/setup.sh` has installed the toolchains:
//!
//! - the example rules, built for wasm32-unknown-unknown by a nested cargo and turned into
//!   components in `target/rules/` (the embedded default rule is byte-for-byte the
//!   shippable `target/rules/k8s_api_connection.wasm`);
//! - the eBPF programs, built by `ebpf/build.sh` (the pinned nightly and bpf-linker; the
//!   eBPF crate stays its own workspace because it needs that nightly and build-std) into
//!   `target/bpf/rulehost-probes.o`, copied into OUT_DIR.

use anyhow::Result;
use std::path::PathBuf;

/// The example rule crates and the names their components ship under.
const RULES: &[(&str, &str)] = &[
    ("guest-k8s-api-connection", "k8s_api_connection"),
    ("guest-cloud-metadata-access", "cloud_metadata_access"),
];

fn main() {
    if let Err(error) = run() {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let root = workspace_root()?;
    let target_dir = target_dir()?;

    for (package, _) in RULES {
        println!("cargo:rerun-if-changed={}", root.join(package).display());
    }
    let packages: Vec<&str> = RULES.iter().map(|(package, _)| *package).collect();
    let modules = build_guests(&packages)?;
    let rules_dir = target_dir.join("rules");
    std::fs::create_dir_all(&rules_dir)?;
    for (package, rule) in RULES {
        let module = modules.join(format!("{}.wasm", package.replace('-', "_")));
        let component = componentize(&module)?;
        std::fs::write(rules_dir.join(format!("{rule}.wasm")), &component)?;
        if *rule == "k8s_api_connection" {
            std::fs::write(out_dir.join("k8s_api_connection.wasm"), &component)?;
        }
    }

    for dir in [
        "ebpf/programs/src",
        "ebpf/programs/Cargo.toml",
        "ebpf/common/src",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    let mut script = nested("bash");
    script.arg(root.join("ebpf/build.sh"));
    run_nested(script, "the eBPF programs")?;
    std::fs::copy(
        target_dir.join("bpf/rulehost-probes.o"),
        out_dir.join("rulehost-probes.o"),
    )?;
    Ok(())
}

include!("build_support.rs");

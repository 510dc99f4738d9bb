//! Componentizes the fixture rules under `fixtures/` for the sandbox tests.
//!
//! `make build` (its `guest` step) compiles each fixture crate for wasm32-unknown-unknown;
//! this script wraps each core module into a component, as `host/build.rs` does for the
//! shipped rule, and writes it to `$OUT_DIR/fixtures/<name>.wasm`, where
//! `rulehost_tests::fixture(name)` finds it.

use anyhow::{Result, bail};
use std::path::PathBuf;

/// The fixture crates, by directory name under `fixtures/`.
const FIXTURES: &[&str] = &[
    "infinite-loop",
    "memory-bomb",
    "trap-every-event",
    "fs-import",
    "finding-flood",
    "wrong-world",
    "init-error",
    "stateful-panic",
];

fn main() {
    if let Err(error) = run() {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?).join("fixtures");
    std::fs::create_dir_all(&out_dir)?;
    let modules = target_dir()?.join("wasm32-unknown-unknown/release");
    let mut missing = Vec::new();
    for name in FIXTURES {
        let module = modules.join(format!("fixture_{}.wasm", name.replace('-', "_")));
        println!("cargo:rerun-if-changed={}", module.display());
        if !module.exists() {
            missing.push(module.display().to_string());
            continue;
        }
        let component = componentize(&module)?;
        std::fs::write(out_dir.join(format!("{name}.wasm")), component)?;
    }
    if !missing.is_empty() {
        bail!(
            "fixture rule module(s) missing: {}; build them first with `make build` (or `make guest`)",
            missing.join(", ")
        );
    }
    Ok(())
}

include!("../host/build_support.rs");

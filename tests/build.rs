//! Componentizes the fixture rules under `fixtures/` for the sandbox tests.
//!
//! `make build` (its `guest` step) compiles each fixture crate for wasm32-unknown-unknown;
//! this script wraps each core module into a component, as `host/build.rs` does for the
//! shipped rule, and writes it to `$OUT_DIR/fixtures/<name>.wasm`, where
//! `rulehost_tests::fixture(name)` finds it.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

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

/// Wraps a core module carrying wit-bindgen's component-type section into a component.
fn componentize(module: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(module).with_context(|| format!("reading {}", module.display()))?;
    wit_component::ComponentEncoder::default()
        .module(&bytes)?
        .validate(true)
        .encode()
        .with_context(|| format!("componentizing {}", module.display()))
}

/// The workspace target directory, honouring CARGO_TARGET_DIR.
fn target_dir() -> Result<PathBuf> {
    if let Ok(dir) = std::env::var("CARGO_TARGET_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    Ok(manifest
        .parent()
        .context("tests crate has no parent directory")?
        .join("target"))
}

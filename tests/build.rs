//! Componentizes the fixture rules under `fixtures/` for the sandbox tests.
//!
//! Builds each fixture crate for wasm32-unknown-unknown (a nested cargo, as
//! `host/build.rs` does for the shipped rules), wraps each core module into a component
//! and writes it to `$OUT_DIR/fixtures/<name>.wasm`, where `rulehost_tests::fixture(name)`
//! finds it.

use anyhow::Result;
use std::path::PathBuf;

/// The fixture crates, by directory name under `fixtures/`.
const FIXTURES: &[&str] = &[
    "infinite-loop",
    "memory-bomb",
    "trap-every-event",
    "http-import",
    "finding-flood",
    "wrong-world",
    "init-error",
    "stateful-panic",
    "hoarder",
    "big-minimum",
    "garbage-findings",
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
    let root = workspace_root()?;
    let packages: Vec<String> = FIXTURES
        .iter()
        .map(|name| format!("fixture-{name}"))
        .collect();
    for name in FIXTURES {
        println!(
            "cargo:rerun-if-changed={}",
            root.join("tests/fixtures").join(name).display()
        );
    }
    let packages: Vec<&str> = packages.iter().map(String::as_str).collect();
    let modules = build_guests(&packages)?;
    for name in FIXTURES {
        let module = modules.join(format!("fixture_{}.wasm", name.replace('-', "_")));
        let component = componentize(&module)?;
        std::fs::write(out_dir.join(format!("{name}.wasm")), component)?;
    }
    Ok(())
}

include!("../host/build_support.rs");

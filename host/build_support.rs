// Shared by host/build.rs and tests/build.rs (via `include!`): building the wasm guest
// crates of this workspace and turning their core modules into components.

/// The workspace root (the parent of the crate being built).
fn workspace_root() -> anyhow::Result<std::path::PathBuf> {
    use anyhow::Context;
    let manifest = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    Ok(manifest
        .parent()
        .context("crate has no parent directory")?
        .to_path_buf())
}

/// The workspace target directory, honouring CARGO_TARGET_DIR.
fn target_dir() -> anyhow::Result<std::path::PathBuf> {
    if let Ok(dir) = std::env::var("CARGO_TARGET_DIR") {
        return Ok(dir.into());
    }
    Ok(workspace_root()?.join("target"))
}

/// A cargo (or script) invocation from a build script, cleared of what the outer build
/// set for its own target: its compiler, flags (a fuzz build's sanitizers) and wrappers.
fn nested(program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
    let mut command = std::process::Command::new(program);
    for var in [
        "RUSTC",
        "RUSTDOC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        command.env_remove(var);
    }
    command
}

/// Runs a nested build, failing with its output's tail.
fn run_nested(mut command: std::process::Command, what: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    let out = command
        .output()
        .with_context(|| format!("starting the build of {what}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        anyhow::bail!(
            "building {what} failed ({}); run scripts/setup.sh once if a toolchain is missing:\n{}",
            out.status,
            tail.join("\n")
        );
    }
    Ok(())
}

/// Builds guest crates of this workspace for wasm32-unknown-unknown into
/// `<target>/guests` (its own target directory, so this nested cargo never waits for the
/// outer build's lock); returns the directory holding their core modules.
fn build_guests(packages: &[&str]) -> anyhow::Result<std::path::PathBuf> {
    let root = workspace_root()?;
    let guests = target_dir()?.join("guests");
    for dir in ["wit", "sdk/src", "sdk/Cargo.toml", "wire", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = nested(cargo);
    command
        .current_dir(&root)
        .args(["build", "--release", "--target", "wasm32-unknown-unknown"])
        .arg("--target-dir")
        .arg(&guests)
        // A rule ships as one file (a ConfigMap holds at most 1 MiB): no debug info,
        // not even the standard library's (1.7 MiB of a 1.8 MiB rule otherwise).
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo")
        // One unit, LTO: the SDK's decoding and finding helpers inline into the rule's
        // event handler (a third less time in wasm per event in the `dispatch` bench).
        .env("CARGO_PROFILE_RELEASE_LTO", "true")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1");
    for package in packages {
        command.args(["-p", package]);
    }
    run_nested(command, &format!("the wasm guests {}", packages.join(", ")))?;
    Ok(guests.join("wasm32-unknown-unknown/release"))
}

/// Wraps a core module that carries wit-bindgen's component-type section into a
/// component that imports only its world.
fn componentize(module: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context;
    let bytes = std::fs::read(module)
        .with_context(|| format!("{} is missing", module.display()))?;
    wit_component::ComponentEncoder::default()
        .module(&bytes)?
        .validate(true)
        .encode()
        .with_context(|| format!("componentizing {}", module.display()))
}

// Shared by host/build.rs and tests/build.rs (via `include!`): both turn wit-bindgen
// core modules from the workspace target directory into components.

/// Wraps a core module that carries wit-bindgen's component-type section into a
/// component that imports only its world.
fn componentize(module: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    use anyhow::Context;
    let bytes = std::fs::read(module).with_context(|| {
        format!("{} is missing: build it first (`make build`)", module.display())
    })?;
    wit_component::ComponentEncoder::default()
        .module(&bytes)?
        .validate(true)
        .encode()
        .with_context(|| format!("componentizing {}", module.display()))
}

/// The workspace target directory, honouring CARGO_TARGET_DIR.
fn target_dir() -> anyhow::Result<std::path::PathBuf> {
    use anyhow::Context;
    if let Ok(dir) = std::env::var("CARGO_TARGET_DIR") {
        return Ok(dir.into());
    }
    let manifest = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    Ok(manifest
        .parent()
        .context("crate has no parent directory")?
        .join("target"))
}

//! Where rules come from: files given on the command line, or the built-in default.

use crate::rules::{Rule, RuleEngine};
use anyhow::{Context, Result};
use std::path::Path;
use std::sync::Arc;

/// The k8s_api_connection rule, byte-for-byte `target/rules/k8s_api_connection.wasm`.
pub const BUILTIN_K8S_API_CONNECTION: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/k8s_api_connection.wasm"));

/// Name the built-in rule is reported under.
pub const BUILTIN_NAME: &str = "k8s_api_connection";

/// Largest rule the host reads and compiles: a rule file is untrusted input, and
/// compiling costs time and memory in proportion to its size.
pub const MAX_RULE_BYTES: usize = 16 << 20;

/// Reads a rule file, refusing (without reading it all) one over [`MAX_RULE_BYTES`].
pub fn read_rule_file(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_RULE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() > MAX_RULE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than the {} MiB a rule may be", MAX_RULE_BYTES >> 20),
        ));
    }
    Ok(bytes)
}

/// Loads a rule file (or `oci://REF`); the error names it and the reason in one line.
pub fn load_file(runtime: &RuleEngine, path: &Path) -> Result<Arc<Rule>> {
    let bytes =
        read_rule_source(path).with_context(|| format!("cannot load rule {}", path.display()))?;
    load_bytes(runtime, path, &bytes)
}

/// A rule's bytes: a file's, or for `oci://REF` a registry artifact's (every digest
/// checked; signatures are checked by the callers that have keys).
pub fn read_rule_source(path: &Path) -> Result<Vec<u8>> {
    match oci_source(path) {
        Some(source) => Ok(crate::oci::fetch_blocking(source, &Default::default())?.bytes),
        None => Ok(read_rule_file(path)?),
    }
}

/// The registry reference a rule path names, if it is `oci://REF`.
pub fn oci_source(path: &Path) -> Option<&str> {
    path.to_str()
        .filter(|text| text.starts_with(crate::oci::SCHEME))
}

/// Loads a rule from bytes read from `path` (named after the file's stem).
pub fn load_bytes(runtime: &RuleEngine, path: &Path, bytes: &[u8]) -> Result<Arc<Rule>> {
    runtime
        .load(&rule_name(path), bytes)
        .with_context(|| format!("cannot load rule {}", path.display()))
}

/// A rule's name: its file's stem (`rules/k8s.wasm` is `k8s`), or its repository's last
/// segment (`oci://registry/rules/k8s:1` is `k8s`).
pub fn rule_name(path: &Path) -> String {
    if let Some(reference) = oci_source(path).and_then(|s| crate::oci::parse_reference(s).ok()) {
        return crate::oci::artifact_name(&reference).to_owned();
    }
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Loads the given rule files, or the built-in rule when none is given.
pub fn load_all(runtime: &RuleEngine, paths: &[impl AsRef<Path>]) -> Result<Vec<Arc<Rule>>> {
    if paths.is_empty() {
        let rule = runtime
            .load(BUILTIN_NAME, BUILTIN_K8S_API_CONNECTION)
            .context("cannot load the built-in rule")?;
        return Ok(vec![rule]);
    }
    paths
        .iter()
        .map(|p| load_file(runtime, p.as_ref()))
        .collect()
}

//! Where rule bytes come from (rule files, directories, the built-in rule, OCI
//! registries) and, in `reload`, whether they may load (digest pins, signatures) and when
//! they change: all decided here, before the wasmtime side (`rules`) is handed bytes.

pub mod reload;

use crate::rules::{BUILTIN_K8S_API_CONNECTION, BUILTIN_NAME, Rule, RuleEngine, read_rule_file};
use anyhow::{Context, Result};
use std::path::Path;
use std::sync::Arc;

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

//! `rulehost inspect`: a rule file's metadata, world, imports, size, digest and signature.

use super::SandboxArgs;
use crate::logging::say;
use crate::rules::{WORLD_PACKAGE, WORLD_VERSION};
use anyhow::{Context, Result};
use std::path::PathBuf;

pub(super) fn inspect(
    path: &std::path::Path,
    keys: &[PathBuf],
    sandbox: &SandboxArgs,
) -> Result<()> {
    let keys = crate::trust::PublicKey::load_all(keys)?;
    let trust = crate::trust::Trust::new(keys, Default::default());
    let runtime = sandbox.engine()?;
    let (bytes, signature) = match crate::sources::oci_source(path) {
        Some(source) => {
            let pulled = crate::oci::fetch_blocking(source, &trust)
                .with_context(|| format!("cannot load rule {source}"))?;
            let status = registry_signature(&pulled);
            (pulled.bytes, status)
        }
        None => {
            let bytes = crate::rules::read_rule_file(path)
                .with_context(|| format!("cannot load rule {}", path.display()))?;
            let status = file_signature(path, &bytes, &trust);
            (bytes, status)
        }
    };
    let rule = crate::sources::load_bytes(&runtime, path, &bytes)?;
    let m = &rule.metadata;
    let report = serde_json::json!({
        "file": path.display().to_string(),
        "size": rule.size,
        "sha256": rule.sha256,
        "world": format!("{WORLD_PACKAGE}@{}", world_version_of(&rule.imports).unwrap_or(WORLD_VERSION.into())),
        "host_world": format!("{WORLD_PACKAGE}@{WORLD_VERSION}"),
        "imports": rule.imports,
        // WASI capabilities its imports need (granted per rule id).
        "wasi": rule.capabilities(),
        // What built it: source language and language runtime.
        "producers": crate::rules::producers(&bytes),
        // How batches cross: `packed` (0.1.3) where the rule exports it.
        "batches": if rule.packed.is_some() { "packed" } else { "typed" },
        "metadata": m,
        "selects": m.selects.iter().map(|k| k.name()).collect::<Vec<_>>(),
        "origin": m.origin,
        "env_vars": m.env_vars,
        "signature": signature,
    });
    say(format_args!("{}", serde_json::to_string_pretty(&report)?))
}

/// Whether a rule file's `.sig` verifies against the trusted keys (not checked without).
fn file_signature(
    path: &std::path::Path,
    bytes: &[u8],
    trust: &crate::trust::Trust,
) -> serde_json::Value {
    let file = crate::trust::signature_path(path);
    let (status, detail) = match crate::trust::read_signature(path) {
        None => ("unsigned", None),
        Some(_) if !trust.requires_signatures() => ("not checked (no --trusted-key)", None),
        Some(signature) => match trust.verify(bytes, &signature) {
            Ok(key) => ("verified", Some(key)),
            Err(reason) => ("invalid", Some(reason)),
        },
    };
    serde_json::json!({"file": file.display().to_string(), "status": status, "detail": detail})
}

/// A pulled rule's registry signature (a pull with keys fails unless one verifies).
fn registry_signature(pulled: &crate::oci::Pulled) -> serde_json::Value {
    let (status, detail) = match &pulled.verified_by {
        Some(key) => ("verified", Some(key.as_str())),
        None => ("not checked (no --trusted-key)", None),
    };
    serde_json::json!({"digest": pulled.digest, "status": status, "detail": detail})
}

/// The world version a rule was built for, from the version its imports name.
fn world_version_of(imports: &[String]) -> Option<String> {
    imports
        .iter()
        .filter(|name| name.starts_with(WORLD_PACKAGE))
        .find_map(|name| name.split_once('@').map(|(_, v)| v.to_owned()))
}

//! Registry rules inside the agent: each is pulled, verified and written to a file under
//! the cache directory, which the agent then loads and watches like any rule file. The
//! file is pinned to the verified digest first, so nothing else written there can load.
//! A rule named by tag is re-resolved every `--oci-follow`; a new digest is pulled,
//! verified and renamed into place, and the file watcher hot-reloads it. A refused or
//! unreachable update is one log line, and the running version stays; a refused digest
//! is tried again at every turn, as its signature may be pushed just after it.

use super::{Registry, parse_reference};
use crate::rules::sha256_hex;
use crate::trust::{Pin, Trust};
use anyhow::{Context, Result, anyhow};
use oci_client::Reference;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A rule to load from a registry.
#[derive(Debug, Clone)]
pub struct OciRule {
    /// As given (`oci://registry/repo:tag`), for logs.
    pub source: String,
    pub reference: Reference,
    /// The file it is kept in, under the cache directory; what the agent loads.
    pub path: PathBuf,
    /// The sha256 its wasm bytes must have (config `sha256`).
    pub sha256: Option<String>,
}

impl OciRule {
    /// A registry rule kept under `cache_dir`/oci/, in a directory of its own named
    /// by the reference's hash, as `<repository's last segment>.wasm` (the rule's name).
    pub fn new(source: &str, cache_dir: &Path, sha256: Option<String>) -> Result<OciRule> {
        let reference = parse_reference(source)?;
        let name = super::artifact_name(&reference).to_owned();
        let dir = cache_dir
            .join("oci")
            .join(&sha256_hex(source.as_bytes())[..16]);
        Ok(OciRule {
            source: source.to_owned(),
            reference,
            path: dir.join(format!("{name}.wasm")),
            sha256: sha256.map(|s| s.to_ascii_lowercase()),
        })
    }

    /// Whether the reference is a tag, whose digest can move.
    fn follows(&self) -> bool {
        self.reference.digest().is_none()
    }
}

/// Pulls every registry rule into its file (a failure stops the start, naming the
/// rule), then follows the tags every `interval` (zero: never).
pub async fn start(rules: &[OciRule], trust: &Arc<Trust>, interval: Duration) -> Result<()> {
    for rule in rules {
        let registry = Registry::new(&rule.reference)?;
        let digest = update(&registry, rule, trust)
            .await
            .with_context(|| format!("cannot load rule {}", rule.source))?;
        tracing::info!(source = %rule.source, digest = %digest, path = %rule.path.display(), "rule pulled");
        if rule.follows() && !interval.is_zero() {
            tokio::spawn(follow(
                registry,
                rule.clone(),
                trust.clone(),
                digest,
                interval,
            ));
        }
    }
    Ok(())
}

/// Re-resolves a tag forever; a new digest is pulled, verified and put in place. A
/// refused digest is tried again at every turn (a signature is pushed after its
/// artifact, so a turn can fall between the two) and logged once.
async fn follow(
    registry: Registry,
    rule: OciRule,
    trust: Arc<Trust>,
    mut digest: String,
    interval: Duration,
) {
    let mut refused: Option<String> = None;
    loop {
        tokio::time::sleep(interval).await;
        let now = match registry.resolve(&rule.reference).await {
            Ok(now) => now,
            Err(error) => {
                tracing::warn!(source = %rule.source, error = %crate::logging::error_line(error.as_ref()), "registry unreachable; the running version stays");
                continue;
            }
        };
        if now == digest {
            continue;
        }
        match update(&registry, &rule, &trust).await {
            Ok(pulled) => {
                tracing::info!(source = %rule.source, digest = %pulled, previous_digest = %digest, "rule pulled");
                digest = pulled;
                refused = None;
            }
            Err(error) if refused.as_deref() != Some(now.as_str()) => {
                tracing::warn!(source = %rule.source, digest = %now, reason = %crate::logging::error_line(error.as_ref()), "rule rejected");
                refused = Some(now);
            }
            Err(_) => {}
        }
    }
}

/// Pulls and verifies the rule's current digest, pins its file to the bytes and writes
/// them there; returns the digest.
async fn update(registry: &Registry, rule: &OciRule, trust: &Trust) -> Result<String> {
    let pulled = registry.fetch(&rule.reference, trust).await?;
    let sha256 = sha256_hex(&pulled.bytes);
    if let Some(pinned) = &rule.sha256
        && *pinned != sha256
    {
        return Err(anyhow!(
            "sha256 mismatch: pinned {pinned}, {} has {sha256}",
            pulled.digest
        ));
    }
    trust.pin(
        &rule.path,
        Pin {
            sha256,
            verified_by: pulled.verified_by,
        },
    );
    write_atomically(&rule.path, &pulled.bytes)?;
    Ok(pulled.digest)
}

/// Writes `bytes` to `path` by rename, so the watcher never reads half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(".pulling");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

//! Registry rules inside the agent: each is pulled, verified and written to a file under
//! the cache directory, which the agent then loads and watches like any rule file. The
//! file is pinned to the verified digest first, so nothing else written there can load.
//! A rule named by tag is re-resolved every `--oci-follow`; a new digest is pulled,
//! verified and renamed into place, and the file watcher hot-reloads it. A refused or
//! unreachable update is one log line, and the running version stays; a refused digest
//! is tried again at every turn, as its signature may be pushed just after it.

use super::{Credentials, Evidence, Registry, parse_reference};
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

/// Pulls every registry rule into its file, then follows the tags every `interval`
/// (zero: never). A registry that does not answer at start is survived with the last
/// verified copy in the cache, checked again first; a rule with neither stops the start,
/// naming it.
pub async fn start(
    rules: &[OciRule],
    trust: &Arc<Trust>,
    credentials: &Credentials,
    interval: Duration,
) -> Result<()> {
    for rule in rules {
        let registry = Registry::new(&rule.reference, credentials)?;
        let digest = match registry.resolve(&rule.reference).await {
            Ok(resolved) => {
                let digest = update(&registry, rule, trust, resolved)
                    .await
                    .with_context(|| format!("cannot load rule {}", rule.source))?;
                tracing::info!(source = %rule.source, digest = %digest, path = %rule.path.display(), "rule pulled");
                digest
            }
            Err(outage) => from_cache(rule, trust, &outage)?,
        };
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

/// The cached copy of a rule whose registry did not answer, its chain checked again and
/// its file pinned; returns its digest. One WARN says the agent runs on it.
fn from_cache(rule: &OciRule, trust: &Trust, outage: &anyhow::Error) -> Result<String> {
    let outage = crate::logging::error_line(outage.as_ref());
    let cached = Evidence::read(&rule.path).and_then(|evidence| {
        let bytes = std::fs::read(&rule.path)
            .with_context(|| format!("reading {}", rule.path.display()))?;
        let verified_by = evidence.check(&bytes, trust)?;
        check_pinned(rule, &bytes)?;
        Ok((evidence.digest, bytes, verified_by))
    });
    let (digest, bytes, verified_by) = cached.map_err(|reason| {
        anyhow!(
            "cannot load rule {}: {outage}; and no verified copy in the cache ({})",
            rule.source,
            crate::logging::error_line(reason.as_ref())
        )
    })?;
    let sha256 = sha256_hex(&bytes);
    tracing::warn!(source = %rule.source, digest = %digest, sha256 = %sha256, error = %outage, "registry unavailable at start; running the verified cached copy and following the tag");
    trust.pin(
        &rule.path,
        Pin {
            sha256,
            verified_by,
        },
    );
    Ok(digest)
}

/// Re-resolves a tag forever; a new digest is pulled, verified and put in place. A
/// refused digest is tried again at every turn (a signature is pushed after its
/// artifact, so a turn can fall between the two) and logged once; an outage is logged
/// when it starts and when it ends.
async fn follow(
    registry: Registry,
    rule: OciRule,
    trust: Arc<Trust>,
    mut digest: String,
    interval: Duration,
) {
    let mut refused: Option<String> = None;
    let mut unreachable = 0u64;
    loop {
        tokio::time::sleep(interval).await;
        let now = match registry.resolve(&rule.reference).await {
            Ok(now) => now,
            Err(error) => {
                if unreachable == 0 {
                    tracing::warn!(source = %rule.source, error = %crate::logging::error_line(error.as_ref()), "registry unreachable; the running version stays");
                }
                unreachable += 1;
                continue;
            }
        };
        if unreachable > 0 {
            tracing::info!(source = %rule.source, failed_turns = unreachable, "registry answers again");
            unreachable = 0;
        }
        if now == digest {
            continue;
        }
        match update(&registry, &rule, &trust, now.clone()).await {
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

/// The rule's configured sha256 pin, if any, holds for `bytes`.
fn check_pinned(rule: &OciRule, bytes: &[u8]) -> Result<()> {
    let sha256 = sha256_hex(bytes);
    match &rule.sha256 {
        Some(pinned) if *pinned != sha256 => Err(anyhow!(
            "sha256 mismatch: pinned {pinned}, the artifact has {sha256}"
        )),
        _ => Ok(()),
    }
}

/// Pulls and verifies the rule's resolved `digest`, pins its file to the bytes and
/// writes them there, with the pull's evidence beside them; returns the digest.
async fn update(
    registry: &Registry,
    rule: &OciRule,
    trust: &Trust,
    digest: String,
) -> Result<String> {
    let pulled = registry
        .fetch_digest(&rule.reference, digest, trust)
        .await?;
    check_pinned(rule, &pulled.bytes).with_context(|| pulled.digest.clone())?;
    trust.pin(
        &rule.path,
        Pin {
            sha256: sha256_hex(&pulled.bytes),
            verified_by: pulled.verified_by,
        },
    );
    write_atomically(&Evidence::path_for(&rule.path), &pulled.evidence.to_json())?;
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

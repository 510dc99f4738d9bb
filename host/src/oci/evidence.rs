//! What a verified pull proves, kept beside the cached rule (`<rule>.wasm.oci.json`): the
//! manifest's bytes and, with trusted keys, the cosign payload and signature. An agent
//! that starts while its registry is down checks the same chain again from these files
//! (signature -> manifest digest -> layer digest -> bytes) before it loads the cached
//! copy, so a file changed in the cache is refused as a tampered pull would be.

use super::{SIMPLE_SIGNING, wasm_layer};
use crate::rules::sha256_hex;
use crate::trust::Trust;
use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use std::path::{Path, PathBuf};

/// A pull's proof, as stored.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    /// The manifest digest pulled.
    pub digest: String,
    /// The manifest, exactly as the registry served it (it hashes to `digest`).
    manifest: String,
    /// The cosign signature that verified, when keys were configured.
    signed: Option<Signed>,
}

/// A cosign simple-signing payload and its signature.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Signed {
    /// The payload, base64.
    payload: String,
    /// The signature annotation's value (base64 DER).
    signature: String,
    /// The trusted key it verified with (not stored: found again at each check).
    #[serde(skip)]
    pub(super) key: String,
}

impl Signed {
    pub(super) fn new(payload: Vec<u8>, signature: &str) -> Signed {
        Signed {
            payload: base64::engine::general_purpose::STANDARD.encode(payload),
            signature: signature.to_owned(),
            key: String::new(),
        }
    }

    /// Itself with the trusted key it verifies with, if it vouches for `digest`; else
    /// why not.
    pub(super) fn check(mut self, digest: &str, trust: &Trust) -> Result<Signed, String> {
        let payload = base64::engine::general_purpose::STANDARD
            .decode(&self.payload)
            .map_err(|_| "payload is not base64".to_owned())?;
        let key = trust.verify(&payload, self.signature.as_bytes())?;
        if signed_digest(&payload).as_deref() != Some(digest) {
            return Err("a valid signature for another digest".to_owned());
        }
        self.key = key;
        Ok(self)
    }
}

impl Evidence {
    pub(super) fn new(digest: String, manifest: Vec<u8>, signed: Option<Signed>) -> Evidence {
        Evidence {
            digest,
            manifest: String::from_utf8_lossy(&manifest).into_owned(),
            signed,
        }
    }

    /// Where the evidence of the rule cached at `rule` is kept.
    pub fn path_for(rule: &Path) -> PathBuf {
        let mut name = rule.as_os_str().to_owned();
        name.push(".oci.json");
        PathBuf::from(name)
    }

    /// Reads the evidence kept for the rule cached at `rule`.
    pub fn read(rule: &Path) -> Result<Evidence> {
        let path = Evidence::path_for(rule);
        let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&text)
            .with_context(|| format!("{}: not a pull's evidence", path.display()))
    }

    /// The evidence as stored.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Checks `bytes` against the chain again, as a pull would; returns the trusted key
    /// the signature verifies with (None when no keys are configured).
    pub fn check(&self, bytes: &[u8], trust: &Trust) -> Result<Option<String>> {
        let actual = format!("sha256:{}", sha256_hex(self.manifest.as_bytes()));
        if actual != self.digest {
            bail!(
                "cached manifest hashes to {actual}, not {} (tampered)",
                self.digest
            );
        }
        let manifest = serde_json::from_str(&self.manifest).context("cached manifest")?;
        let layer = wasm_layer(&self.digest, &manifest)?;
        let actual = format!("sha256:{}", sha256_hex(bytes));
        if actual != layer.digest {
            bail!(
                "cached rule hashes to {actual}, not the manifest's {} (tampered)",
                layer.digest
            );
        }
        if !trust.requires_signatures() {
            return Ok(None);
        }
        let signed = self
            .signed
            .clone()
            .ok_or_else(|| anyhow!("no cosign signature was kept with the cached copy"))?;
        let signed = signed
            .check(&self.digest, trust)
            .map_err(|reason| anyhow!("cached {SIMPLE_SIGNING} signature: {reason}"))?;
        Ok(Some(signed.key))
    }
}

/// The manifest digest a simple-signing payload vouches for.
fn signed_digest(payload: &[u8]) -> Option<String> {
    let payload: serde_json::Value = serde_json::from_slice(payload).ok()?;
    payload["critical"]["image"]["docker-manifest-digest"]
        .as_str()
        .map(str::to_owned)
}

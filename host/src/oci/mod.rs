//! Rules in OCI registries, in the wasm OCI artifact layout other wasm tools use (a
//! config of type `application/vnd.wasm.config.v0+json`, one `application/wasm` layer),
//! signed the way `cosign sign --key` signs: a simple-signing payload naming the
//! manifest digest, its signature in the `dev.cosignproject.cosign/signature`
//! annotation, stored under the tag `sha256-<hex>.sig`. Every pull checks the chain
//! signature -> manifest digest -> layer digest -> bytes before anything is loaded.

mod credentials;
mod evidence;
pub mod follow;

pub use credentials::Credentials;
pub use evidence::Evidence;

use crate::rules::{MAX_BUDGET_BYTES, sha256_hex};
use crate::trust::{SigningKey, Trust};
use anyhow::{Context, Result, anyhow, bail};
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::{OCI_IMAGE_MEDIA_TYPE, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use std::collections::BTreeMap;

/// The wasm OCI artifact's config media type.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// The wasm OCI artifact's layer media type.
pub const WASM_LAYER: &str = "application/wasm";
const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
const IMAGE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Largest signature manifest or payload read.
const MAX_SIGNATURE_BLOB: usize = 64 << 10;
/// How a rule source names a registry artifact.
pub const SCHEME: &str = "oci://";

/// A registry reference, with or without the `oci://` prefix.
pub fn parse_reference(text: &str) -> Result<Reference> {
    let bare = text.strip_prefix(SCHEME).unwrap_or(text);
    bare.parse::<Reference>()
        .map_err(|e| anyhow!("{text}: not a registry reference ({e})"))
}

/// A registry client for one reference's registry: plain HTTP for a loopback registry
/// (as Docker does), HTTPS for every other.
pub struct Registry {
    client: Client,
    auth: RegistryAuth,
    /// host[:port], for messages.
    registry: String,
    credentials: Credentials,
}

/// A verified pull.
pub struct Pulled {
    /// The manifest digest pulled (`sha256:...`).
    pub digest: String,
    pub bytes: Vec<u8>,
    /// The trusted key the registry signature verified with, when keys are configured.
    pub verified_by: Option<String>,
    /// What the pull checked, to check again from the cache during an outage.
    pub evidence: Evidence,
}

impl Registry {
    /// A client logging in with `credentials`' entry for the reference's registry, if
    /// it has one.
    pub fn new(reference: &Reference, credentials: &Credentials) -> Result<Registry> {
        crate::install_tls_provider();
        let registry = reference.resolve_registry().to_owned();
        let host = registry
            .rsplit_once(':')
            .map_or(registry.as_str(), |(h, _)| h);
        let loopback = host == "localhost"
            || host
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        let protocol = match loopback {
            true => ClientProtocol::HttpsExcept(vec![registry.clone()]),
            false => ClientProtocol::Https,
        };
        let client = Client::try_from(ClientConfig {
            protocol,
            ..ClientConfig::default()
        })
        .map_err(|e| anyhow!("registry client: {e}"))?;
        Ok(Registry {
            client,
            auth: credentials.auth_for(&registry),
            registry,
            credentials: credentials.clone(),
        })
    }

    /// An oci-client error as one line, a refused login explained.
    fn failed(
        &self,
        what: String,
        error: oci_client::errors::OciDistributionError,
    ) -> anyhow::Error {
        self.credentials.explain(&self.registry, &what, error)
    }

    /// Pushes rule bytes as a wasm artifact; returns the manifest digest.
    pub async fn push(&self, reference: &Reference, bytes: &[u8]) -> Result<String> {
        let layer = ImageLayer::new(bytes.to_vec(), WASM_LAYER.into(), None);
        let config = serde_json::json!({
            "created": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            "architecture": "wasm",
            "os": "wasip2",
            "layerDigests": [layer.sha256_digest()],
        });
        let config = Config::new(serde_json::to_vec(&config)?, WASM_CONFIG.into(), None);
        self.client
            .push(reference, &[layer], config, &self.auth, None)
            .await
            .map_err(|e| self.failed(format!("pushing {reference}"), e))?;
        self.resolve(reference).await
    }

    /// Signs the manifest `digest` of `reference`'s repository as cosign does.
    pub async fn sign(&self, reference: &Reference, digest: &str, key: &SigningKey) -> Result<()> {
        let payload = serde_json::to_vec(&serde_json::json!({
            "critical": {
                "identity": {"docker-reference": repository_of(reference)},
                "image": {"docker-manifest-digest": digest},
                "type": "cosign container image signature",
            },
            "optional": null,
        }))?;
        let annotations =
            BTreeMap::from([(SIGNATURE_ANNOTATION.to_owned(), key.sign_base64(&payload))]);
        let layer = ImageLayer::new(payload, SIMPLE_SIGNING.into(), Some(annotations));
        let config = serde_json::json!({
            "architecture": "", "os": "", "config": {},
            "created": "0001-01-01T00:00:00Z",
            "rootfs": {"type": "layers", "diff_ids": [layer.sha256_digest()]},
        });
        let config = Config::new(serde_json::to_vec(&config)?, IMAGE_CONFIG.into(), None);
        let target = signature_reference(reference, digest)?;
        self.client
            .push(&target, &[layer], config, &self.auth, None)
            .await
            .map_err(|e| self.failed(format!("pushing the signature {target}"), e))?;
        Ok(())
    }

    /// The manifest digest a reference names now (a tag is resolved).
    pub async fn resolve(&self, reference: &Reference) -> Result<String> {
        if let Some(digest) = reference.digest() {
            return Ok(digest.to_owned());
        }
        self.client
            .fetch_manifest_digest(reference, &self.auth)
            .await
            .map_err(|e| self.failed(format!("resolving {reference}"), e))
    }

    /// Resolves, checks the signature when keys are configured, and pulls the bytes
    /// that digest names.
    pub async fn fetch(&self, reference: &Reference, trust: &Trust) -> Result<Pulled> {
        let digest = self.resolve(reference).await?;
        self.fetch_digest(reference, digest, trust).await
    }

    /// [`Registry::fetch`] of a digest already resolved.
    pub async fn fetch_digest(
        &self,
        reference: &Reference,
        digest: String,
        trust: &Trust,
    ) -> Result<Pulled> {
        let signed = match trust.requires_signatures() {
            true => Some(self.verify(reference, &digest, trust).await?),
            false => None,
        };
        let (bytes, manifest) = self.pull(reference, &digest).await?;
        let verified_by = signed.as_ref().map(|s| s.key.clone());
        Ok(Pulled {
            evidence: Evidence::new(digest.clone(), manifest, signed),
            digest,
            bytes,
            verified_by,
        })
    }

    /// The cosign signature of `digest` that verifies with a trusted key.
    async fn verify(
        &self,
        reference: &Reference,
        digest: &str,
        trust: &Trust,
    ) -> Result<evidence::Signed> {
        let target = signature_reference(reference, digest)?;
        let (_, manifest) = self
            .manifest(&target)
            .await
            .map_err(|e| anyhow!("unsigned: no cosign signature {target} ({e:#})"))?;
        let mut reasons = Vec::new();
        for layer in manifest
            .layers
            .iter()
            .filter(|l| l.media_type == SIMPLE_SIGNING)
        {
            let Some(signature) = layer
                .annotations
                .as_ref()
                .and_then(|a| a.get(SIGNATURE_ANNOTATION))
            else {
                continue;
            };
            if layer.size < 0 || layer.size as usize > MAX_SIGNATURE_BLOB {
                reasons.push("payload too large".to_owned());
                continue;
            }
            let signed = evidence::Signed::new(self.blob(&target, layer).await?, signature);
            match signed.check(digest, trust) {
                Ok(signed) => return Ok(signed),
                Err(reason) => reasons.push(reason),
            }
        }
        bail!(
            "no signature in {target} verifies {digest} with a trusted key ({})",
            if reasons.is_empty() {
                "none found".into()
            } else {
                reasons.join("; ")
            }
        )
    }

    /// The wasm bytes of manifest `digest`, each link of the chain checked, and the
    /// manifest's own bytes.
    async fn pull(&self, reference: &Reference, digest: &str) -> Result<(Vec<u8>, Vec<u8>)> {
        let target = Reference::with_digest(
            reference.resolve_registry().to_owned(),
            reference.repository().to_owned(),
            digest.to_owned(),
        );
        let (raw, manifest) = self.manifest(&target).await?;
        let layer = wasm_layer(&target, &manifest)?;
        Ok((self.blob(&target, layer).await?, raw))
    }

    /// A manifest whose bytes hash to the digest it was asked by (when by digest), raw
    /// and parsed.
    async fn manifest(&self, target: &Reference) -> Result<(Vec<u8>, OciImageManifest)> {
        let (raw, digest) = self
            .client
            .pull_manifest_raw(target, &self.auth, &[OCI_IMAGE_MEDIA_TYPE])
            .await
            .map_err(|e| self.failed(format!("{target}"), e))?;
        if raw.len() > MAX_SIGNATURE_BLOB {
            bail!("{target}: manifest of {} bytes is too large", raw.len());
        }
        let actual = format!("sha256:{}", sha256_hex(&raw));
        let expected = target.digest().unwrap_or(&digest);
        if actual != expected {
            bail!("{target}: manifest bytes hash to {actual}, not {expected} (tampered)");
        }
        let manifest = serde_json::from_slice(&raw)
            .with_context(|| format!("{target}: not an OCI image manifest"))?;
        Ok((raw.to_vec(), manifest))
    }

    /// A blob whose bytes hash to its descriptor's digest.
    async fn blob(
        &self,
        target: &Reference,
        layer: &oci_client::manifest::OciDescriptor,
    ) -> Result<Vec<u8>> {
        let mut sink = Bounded {
            bytes: Vec::new(),
            limit: layer.size.max(0) as usize,
        };
        self.client
            .pull_blob(target, layer, &mut sink)
            .await
            .map_err(|e| self.failed(format!("{target}: pulling {}", layer.digest), e))?;
        let bytes = sink.bytes;
        let actual = format!("sha256:{}", sha256_hex(&bytes));
        if actual != layer.digest {
            bail!(
                "{target}: blob hashes to {actual}, not {} (tampered)",
                layer.digest
            );
        }
        Ok(bytes)
    }
}

/// The one wasm layer of a rule artifact's manifest, its media types and size checked.
fn wasm_layer<'m>(
    target: &dyn std::fmt::Display,
    manifest: &'m OciImageManifest,
) -> Result<&'m oci_client::manifest::OciDescriptor> {
    if manifest.config.media_type != WASM_CONFIG {
        bail!(
            "{target}: config media type {} is not a wasm artifact's ({WASM_CONFIG})",
            manifest.config.media_type
        );
    }
    let [layer] = manifest.layers.as_slice() else {
        bail!(
            "{target}: {} layers, a wasm artifact has one",
            manifest.layers.len()
        );
    };
    if layer.media_type != WASM_LAYER {
        bail!(
            "{target}: layer media type {} is not {WASM_LAYER}",
            layer.media_type
        );
    }
    if layer.size < 0 || layer.size as usize > MAX_BUDGET_BYTES {
        bail!(
            "{target}: layer of {} bytes, over the {} MiB any rule may be",
            layer.size,
            MAX_BUDGET_BYTES >> 20
        );
    }
    Ok(layer)
}

/// What a rule pulled from `reference` is called: the repository's last segment.
pub fn artifact_name(reference: &Reference) -> &str {
    reference.repository().rsplit('/').next().unwrap_or("rule")
}

/// [`Registry::fetch`] for a command that has no async runtime of its own, with Docker's
/// default credentials.
pub fn fetch_blocking(source: &str, trust: &Trust) -> Result<Pulled> {
    let reference = parse_reference(source)?;
    let credentials = Credentials::load(None)?;
    block_on(async {
        Registry::new(&reference, &credentials)?
            .fetch(&reference, trust)
            .await
    })
}

/// A blob's destination that refuses bytes past the size its descriptor announced (the
/// caller bounds that), so a registry cannot make a pull grow without limit.
struct Bounded {
    bytes: Vec<u8>,
    limit: usize,
}

impl tokio::io::AsyncWrite for Bounded {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.bytes.len() + buf.len() > self.limit {
            let error = format!("more than the {} bytes announced", self.limit);
            return std::task::Poll::Ready(Err(std::io::Error::other(error)));
        }
        self.bytes.extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// `registry/repository`, as cosign's payload names the image.
fn repository_of(reference: &Reference) -> String {
    format!(
        "{}/{}",
        reference.resolve_registry(),
        reference.repository()
    )
}

/// Where cosign stores the signature of manifest `digest`: the tag `sha256-<hex>.sig`.
fn signature_reference(reference: &Reference, digest: &str) -> Result<Reference> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| anyhow!("{digest}: not a sha256 digest"))?;
    Ok(Reference::with_tag(
        reference.resolve_registry().to_owned(),
        reference.repository().to_owned(),
        format!("sha256-{hex}.sig"),
    ))
}

/// Runs a command's async work (registry calls) on a private single-threaded runtime.
pub(crate) fn block_on<T>(future: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(future)
}

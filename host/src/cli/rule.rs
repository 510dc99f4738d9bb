//! `rulehost rule ...`: what a rule author and an operator need to ship rules they can
//! trust, with the formats cosign uses (so either tool works on either side).

use crate::logging::say;
use crate::oci::{Credentials, block_on};
use crate::trust::keys::write_new;
use crate::trust::{PublicKey, SigningKey, Trust, signature_path, with_suffix};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Keys, signatures and registries for rules.
#[derive(Debug, clap::Subcommand)]
pub enum RuleCommand {
    /// Writes a new ECDSA P-256 key pair: PREFIX.key (PKCS#8 PEM, private, mode 0600)
    /// and PREFIX.pub (PEM, as cosign.pub: give it to operators for --trusted-key).
    /// Never overwrites.
    Keygen {
        #[arg(long, default_value = "rulehost", value_name = "PREFIX")]
        output_prefix: PathBuf,
    },
    /// Signs a rule file as `cosign sign-blob --key` does: writes FILE.wasm.sig (base64
    /// DER signature) beside it and prints the signature.
    Sign {
        /// The private key (PKCS#8 or SEC1 PEM).
        #[arg(long, value_name = "FILE.key")]
        key: PathBuf,
        /// The rule file to sign.
        #[arg(value_name = "FILE.wasm")]
        rule: PathBuf,
        /// Where to write the signature (default: FILE.wasm.sig).
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Pushes a rule file to a registry as a wasm OCI artifact; with --key, also signs
    /// its manifest digest as `cosign sign --key` does. Prints the digest.
    Push {
        /// The rule component to push.
        #[arg(value_name = "FILE.wasm")]
        rule: PathBuf,
        /// REGISTRY/REPOSITORY:TAG (`oci://` optional).
        #[arg(value_name = "REF")]
        reference: String,
        /// Also sign the pushed digest with this private key (PKCS#8 or SEC1 PEM).
        #[arg(long, value_name = "FILE.key")]
        key: Option<PathBuf>,
        /// Docker's config.json with the registry's login (default:
        /// $DOCKER_CONFIG/config.json, else ~/.docker/config.json, if present).
        #[arg(long, value_name = "FILE")]
        registry_config: Option<PathBuf>,
    },
    /// Pulls a rule from a registry, checking every digest, and with --trusted-key its
    /// cosign signature; writes it to a file.
    Pull {
        /// REGISTRY/REPOSITORY:TAG or @sha256:DIGEST (`oci://` optional).
        #[arg(value_name = "REF")]
        reference: String,
        /// Where to write it (default: the repository's last segment, `.wasm`).
        #[arg(long, short, value_name = "FILE.wasm")]
        output: Option<PathBuf>,
        /// A public key the artifact's signature must verify with; repeatable.
        #[arg(long = "trusted-key", value_name = "FILE.pub")]
        trusted_keys: Vec<PathBuf>,
        /// Docker's config.json with the registry's login (default:
        /// $DOCKER_CONFIG/config.json, else ~/.docker/config.json, if present).
        #[arg(long, value_name = "FILE")]
        registry_config: Option<PathBuf>,
    },
}

/// Runs one `rule` command.
pub(super) fn run(command: RuleCommand) -> Result<()> {
    match command {
        RuleCommand::Keygen { output_prefix } => keygen(&output_prefix),
        RuleCommand::Sign { key, rule, output } => sign(&key, &rule, output),
        RuleCommand::Push {
            rule,
            reference,
            key,
            registry_config,
        } => {
            let credentials = Credentials::load(registry_config.as_deref())?;
            block_on(push(&rule, &reference, key.as_deref(), &credentials))
        }
        RuleCommand::Pull {
            reference,
            output,
            trusted_keys,
            registry_config,
        } => {
            let credentials = Credentials::load(registry_config.as_deref())?;
            block_on(pull(&reference, output, &trusted_keys, &credentials))
        }
    }
}

fn keygen(prefix: &Path) -> Result<()> {
    let key = SigningKey::generate();
    let (private, public) = (with_suffix(prefix, ".key"), with_suffix(prefix, ".pub"));
    // The public half first: a failure leaves no private key without its public one.
    write_new(&public, &key.public("").to_pem()?, false)?;
    write_new(&private, &key.to_pem()?, true)?;
    say(format_args!(
        "wrote {} (private: keep it secret) and {} (public: --trusted-key)",
        private.display(),
        public.display()
    ))
}

fn sign(key: &Path, rule: &Path, output: Option<PathBuf>) -> Result<()> {
    let key = SigningKey::load(key)?;
    let bytes = crate::rules::read_rule_file(rule)
        .with_context(|| format!("cannot sign {}", rule.display()))?;
    let signature = key.sign_base64(&bytes);
    let output = output.unwrap_or_else(|| signature_path(rule));
    std::fs::write(&output, &signature).with_context(|| format!("writing {}", output.display()))?;
    say(format_args!("{signature}"))
}

async fn push(
    rule: &Path,
    reference: &str,
    key: Option<&Path>,
    credentials: &Credentials,
) -> Result<()> {
    let key = key.map(SigningKey::load).transpose()?;
    let bytes = crate::rules::read_rule_file(rule)
        .with_context(|| format!("cannot push {}", rule.display()))?;
    let reference = crate::oci::parse_reference(reference)?;
    let registry = crate::oci::Registry::new(&reference, credentials)?;
    let digest = registry.push(&reference, &bytes).await?;
    if let Some(key) = &key {
        registry.sign(&reference, &digest, key).await?;
    }
    say(format_args!("{reference}@{digest}"))
}

async fn pull(
    reference: &str,
    output: Option<PathBuf>,
    keys: &[PathBuf],
    credentials: &Credentials,
) -> Result<()> {
    let trust = Trust::new(PublicKey::load_all(keys)?, Default::default());
    let parsed = crate::oci::parse_reference(reference)?;
    let registry = crate::oci::Registry::new(&parsed, credentials)?;
    let pulled = registry
        .fetch(&parsed, &trust)
        .await
        .with_context(|| format!("cannot pull {reference}"))?;
    let name = crate::oci::artifact_name(&parsed);
    let output = output.unwrap_or_else(|| PathBuf::from(format!("{name}.wasm")));
    std::fs::write(&output, &pulled.bytes)
        .with_context(|| format!("writing {}", output.display()))?;
    let verified = match &pulled.verified_by {
        Some(key) => format!("signature verified with {key}"),
        None => "signature not checked (no --trusted-key)".into(),
    };
    say(format_args!(
        "{} {} sha256 {} -> {} ({verified})",
        parsed,
        pulled.digest,
        crate::rules::sha256_hex(&pulled.bytes),
        output.display()
    ))
}

//! Keys and signatures in the formats cosign uses for keyed signing: public keys as
//! PEM SubjectPublicKeyInfo (`cosign.pub`), signatures as base64 of a DER ECDSA P-256
//! signature over SHA-256 of the signed bytes (what `cosign sign-blob --key` prints).
//! Private keys are PKCS#8 PEM (what `rulehost rule keygen` writes and
//! `cosign import-key-pair` reads); cosign's own encrypted key files are for cosign.

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use std::path::Path;

/// Largest signature file read: a base64 DER P-256 signature is under 100 bytes.
pub const MAX_SIGNATURE_BYTES: usize = 4096;

/// A trusted public key and the file it came from (named in logs and verdicts).
#[derive(Debug, Clone)]
pub struct PublicKey {
    pub name: String,
    key: VerifyingKey,
}

impl PublicKey {
    /// Reads a PEM public key (ECDSA P-256), as `cosign generate-key-pair` writes it.
    pub fn load(path: &Path) -> Result<PublicKey> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("trusted key {}", path.display()))?;
        let key = VerifyingKey::from_public_key_pem(&text).map_err(|e| {
            anyhow!(
                "trusted key {}: not a PEM ECDSA P-256 public key ({e})",
                path.display()
            )
        })?;
        Ok(PublicKey {
            name: path.display().to_string(),
            key,
        })
    }

    /// Every key of a `--trusted-key` list; the first unreadable one is the error.
    pub fn load_all(paths: &[std::path::PathBuf]) -> Result<Vec<PublicKey>> {
        paths.iter().map(|path| PublicKey::load(path)).collect()
    }

    /// Whether `signature` is this key's over `bytes`.
    pub fn verifies(&self, bytes: &[u8], signature: &Signature) -> bool {
        self.key.verify(bytes, signature).is_ok()
    }

    /// The key as PEM SubjectPublicKeyInfo.
    pub fn to_pem(&self) -> Result<String> {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| anyhow!("encoding the public key: {e}"))
    }
}

/// A private key that signs rules.
pub struct SigningKey(p256::ecdsa::SigningKey);

impl SigningKey {
    /// A fresh key from the operating system's randomness.
    pub fn generate() -> SigningKey {
        SigningKey(p256::ecdsa::SigningKey::random(&mut rand_core::OsRng))
    }

    /// Reads a PEM private key: PKCS#8 (`BEGIN PRIVATE KEY`) or SEC1 (`BEGIN EC
    /// PRIVATE KEY`, as openssl writes).
    pub fn load(path: &Path) -> Result<SigningKey> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("signing key {}", path.display()))?;
        if text.contains("ENCRYPTED SIGSTORE PRIVATE KEY") || text.contains("ENCRYPTED COSIGN") {
            bail!(
                "signing key {}: cosign's encrypted key file; sign with `cosign sign-blob --key` (same signature format), or use a PKCS#8 key",
                path.display()
            );
        }
        let pkcs8 = p256::SecretKey::from_pkcs8_pem(&text);
        let key = pkcs8
            .or_else(|_| p256::SecretKey::from_sec1_pem(&text))
            .map_err(|e| {
                anyhow!(
                    "signing key {}: not a PEM ECDSA P-256 private key ({e})",
                    path.display()
                )
            })?;
        Ok(SigningKey(key.into()))
    }

    /// The private key as PKCS#8 PEM.
    pub fn to_pem(&self) -> Result<String> {
        let secret = p256::SecretKey::from(&self.0);
        Ok(secret
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| anyhow!("encoding the private key: {e}"))?
            .to_string())
    }

    /// The matching public key, named `name`.
    pub fn public(&self, name: &str) -> PublicKey {
        PublicKey {
            name: name.to_owned(),
            key: *self.0.verifying_key(),
        }
    }

    /// cosign's signature text over `bytes`: base64 of the DER signature.
    pub fn sign_base64(&self, bytes: &[u8]) -> String {
        let signature: Signature = self.0.sign(bytes);
        base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
    }
}

/// A signature file's text (base64 DER, surrounding whitespace allowed) as a signature.
pub fn decode_signature(text: &[u8]) -> Result<Signature, String> {
    let text = text.trim_ascii();
    let der = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("signature is not base64 ({e})"))?;
    Signature::from_der(&der).map_err(|_| "signature is not a DER ECDSA P-256 signature".into())
}

/// Writes `text` to `path` only if nothing is there, readable by the owner only when
/// `private`.
pub fn write_new(path: &Path, text: &str, private: bool) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_pem_files() {
        let dir = std::env::temp_dir().join(format!("rulehost-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let key = SigningKey::generate();
        let (private, public) = (dir.join("k.key"), dir.join("k.pub"));
        write_new(&private, &key.to_pem().unwrap(), true).unwrap();
        write_new(&public, &key.public("k").to_pem().unwrap(), false).unwrap();
        assert!(
            write_new(&public, "again", false).is_err(),
            "never overwrites"
        );
        let signature = SigningKey::load(&private).unwrap().sign_base64(b"bytes");
        let signature = decode_signature(signature.as_bytes()).unwrap();
        assert!(
            PublicKey::load(&public)
                .unwrap()
                .verifies(b"bytes", &signature)
        );
        let error = PublicKey::load(&private).unwrap_err().to_string();
        assert!(
            error.contains("not a PEM ECDSA P-256 public key"),
            "{error}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

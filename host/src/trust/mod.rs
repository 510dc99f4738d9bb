//! Which rule bytes the agent may load. Two gates, both checked wherever rule bytes
//! are read (start-up and every reload), so a refused replacement leaves the running
//! version in place:
//! - digest pins: a rule entry of the config file may name the sha256 its bytes must have;
//! - signatures: with trusted keys configured, a rule loads only when `<rule>.wasm.sig`
//!   beside it verifies against one of them. The format is cosign's keyed `sign-blob`:
//!   base64 of the DER ECDSA P-256 signature (SHA-256) over the file's bytes, keys as PEM.
//!
//! Rules pulled from a registry ([`crate::oci`]) are verified there, against the same
//! keys, and pinned here to the digest that was verified.

pub mod keys;

pub use keys::{PublicKey, SigningKey};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

/// Bytes a rule must have, and how they were vouched for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// Lowercase hex sha256.
    pub sha256: String,
    /// The trusted key a registry signature verified with, for pulled rules; a pinned
    /// file (`None`) still needs its own `.sig` when keys are configured.
    pub verified_by: Option<String>,
}

/// The keys and pins rules are checked against.
#[derive(Debug, Default)]
pub struct Trust {
    keys: Vec<PublicKey>,
    pins: RwLock<BTreeMap<PathBuf, Pin>>,
}

/// What a check found acceptable, for the load log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No key is configured and no pin names the file.
    Open,
    /// The bytes have the pinned digest (and no signature is required).
    Pinned,
    /// Signed by this trusted key (its file name).
    Signed(String),
}

impl Trust {
    /// Trust with these keys and config pins.
    pub fn new(keys: Vec<PublicKey>, pins: BTreeMap<PathBuf, String>) -> Trust {
        let pins = pins
            .into_iter()
            .map(|(path, sha256)| {
                let sha256 = sha256.to_ascii_lowercase();
                let pin = Pin {
                    sha256,
                    verified_by: None,
                };
                (path, pin)
            })
            .collect();
        Trust {
            keys,
            pins: RwLock::new(pins),
        }
    }

    /// Whether rules must be signed by a trusted key.
    pub fn requires_signatures(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Pins `path` to verified bytes (a pulled rule), replacing any earlier pin.
    pub fn pin(&self, path: &Path, pin: Pin) {
        self.pins
            .write()
            .expect("pins lock")
            .insert(path.to_path_buf(), pin);
    }

    /// Checks bytes read from `path` with the signature file read beside them (if
    /// any); the error is one line saying why they are refused.
    pub fn check(
        &self,
        path: &Path,
        sha256: &str,
        bytes: &[u8],
        signature: Option<&[u8]>,
    ) -> Result<Verdict, String> {
        let pin = self.pins.read().expect("pins lock").get(path).cloned();
        if let Some(pin) = &pin
            && pin.sha256 != sha256
        {
            return Err(format!(
                "sha256 mismatch: pinned {}, file has {sha256}",
                pin.sha256
            ));
        }
        if let Some(Pin {
            verified_by: Some(key),
            ..
        }) = pin
        {
            return Ok(Verdict::Signed(key));
        }
        if self.keys.is_empty() {
            return Ok(match pin {
                Some(_) => Verdict::Pinned,
                None => Verdict::Open,
            });
        }
        let Some(signature) = signature else {
            return Err(format!(
                "unsigned: no {} beside it, and trusted keys are configured",
                signature_path(path).display()
            ));
        };
        self.verify(bytes, signature).map(Verdict::Signed)
    }

    /// The name of the trusted key `signature` (cosign's base64 DER) verifies
    /// `bytes` with, or why none does.
    pub fn verify(&self, bytes: &[u8], signature: &[u8]) -> Result<String, String> {
        let signature = keys::decode_signature(signature)?;
        self.keys
            .iter()
            .find(|key| key.verifies(bytes, &signature))
            .map(|key| key.name.clone())
            .ok_or_else(|| {
                format!(
                    "signature does not verify against any of the {} trusted key(s)",
                    self.keys.len()
                )
            })
    }
}

/// Where a rule file's signature is: `rule.wasm` -> `rule.wasm.sig`, as cosign names it.
pub fn signature_path(path: &Path) -> PathBuf {
    with_suffix(path, ".sig")
}

/// `path` with `suffix` appended to its file name (`k.wasm` + `.sig`, `dev` + `.pub`).
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

/// The bytes of a rule file's signature, read from the same directory snapshot as the
/// rule (`real` is the rule's resolved path, so a ConfigMap's `..data` swap between the
/// two reads cannot pair a new rule with an old signature); `None` when there is none.
pub fn read_signature(real: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(signature_path(real))
        .ok()?
        .take(keys::MAX_SIGNATURE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .ok()?;
    // A larger file is no signature (and is not read whole).
    (bytes.len() <= keys::MAX_SIGNATURE_BYTES).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(bytes: &[u8]) -> String {
        crate::rules::sha256_hex(bytes)
    }

    #[test]
    fn pins_refuse_other_bytes_and_name_both_digests() {
        let path = PathBuf::from("/rules/a.wasm");
        let trust = Trust::new(Vec::new(), [(path.clone(), sha(b"one"))].into());
        assert_eq!(
            trust.check(&path, &sha(b"one"), b"one", None),
            Ok(Verdict::Pinned)
        );
        let error = trust.check(&path, &sha(b"two"), b"two", None).unwrap_err();
        assert!(
            error.contains(&sha(b"one")) && error.contains(&sha(b"two")),
            "{error}"
        );
        assert_eq!(
            trust.check(Path::new("/rules/b.wasm"), &sha(b"x"), b"x", None),
            Ok(Verdict::Open)
        );
    }

    #[test]
    fn signatures_verify_only_with_a_trusted_key_over_the_same_bytes() {
        let signer = SigningKey::generate();
        let other = SigningKey::generate();
        let trust = Trust::new(vec![signer.public("signer.pub")], BTreeMap::new());
        let path = Path::new("r.wasm");
        let good = signer.sign_base64(b"rule");
        assert_eq!(
            trust.check(path, &sha(b"rule"), b"rule", Some(good.as_bytes())),
            Ok(Verdict::Signed("signer.pub".into()))
        );
        for (bytes, signature, why) in [
            (&b"rule"[..], None, "unsigned"),
            (b"rule", Some(other.sign_base64(b"rule")), "does not verify"),
            (b"elur", Some(good.clone()), "does not verify"),
            (b"rule", Some("bm90IGEgc2lnbmF0dXJl".into()), "not a DER"),
            (b"rule", Some("%%%".into()), "not base64"),
        ] {
            let error = trust
                .check(
                    path,
                    &sha(bytes),
                    bytes,
                    signature.as_deref().map(str::as_bytes),
                )
                .unwrap_err();
            assert!(error.contains(why), "{why}: {error}");
        }
    }

    #[test]
    fn a_verified_pull_pin_stands_for_the_signature() {
        let signer = SigningKey::generate();
        let trust = Trust::new(vec![signer.public("k.pub")], BTreeMap::new());
        let path = Path::new("/cache/oci/r.wasm");
        trust.pin(
            path,
            Pin {
                sha256: sha(b"pulled"),
                verified_by: Some("k.pub".into()),
            },
        );
        assert_eq!(
            trust.check(path, &sha(b"pulled"), b"pulled", None),
            Ok(Verdict::Signed("k.pub".into()))
        );
        assert!(trust.check(path, &sha(b"other"), b"other", None).is_err());
    }
}

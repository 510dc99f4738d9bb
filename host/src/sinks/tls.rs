//! A webhook's TLS: the system's roots or the sink's `ca_file`, and a client certificate
//! for mutual TLS. Verification is always on (no option turns it off): a SIEM's collector
//! behind a private CA is reached by naming that CA, never by trusting anyone.

use super::WebhookSpec;
use anyhow::{Context, Result, bail};
use std::path::Path;

/// `builder` with the sink's CA and client certificate, each file read and checked now
/// so a bad one is an error at start naming the file.
pub(super) fn configure(
    builder: reqwest::ClientBuilder,
    spec: &WebhookSpec,
) -> Result<reqwest::ClientBuilder> {
    let mut builder = builder.https_only(spec.url.starts_with("https:"));
    if let Some(ca_file) = &spec.ca_file {
        builder = builder.tls_certs_only(certificates(ca_file, "ca_file")?);
    }
    match (&spec.cert_file, &spec.key_file) {
        (Some(cert_file), Some(key_file)) => {
            builder = builder.identity(identity(cert_file, key_file)?);
        }
        (None, None) => {}
        (Some(_), None) => bail!("cert_file needs key_file (the client certificate's key)"),
        (None, Some(_)) => bail!("key_file needs cert_file (the client certificate)"),
    }
    Ok(builder)
}

/// What the sink trusts and presents, for its start line.
pub(super) fn describe(spec: &WebhookSpec) -> &'static str {
    match (
        spec.url.starts_with("https:"),
        spec.ca_file.is_some(),
        spec.cert_file.is_some(),
    ) {
        (false, ..) => "none",
        (true, false, false) => "system roots",
        (true, true, false) => "ca_file",
        (true, false, true) => "system roots, client certificate",
        (true, true, true) => "ca_file, client certificate",
    }
}

/// Every certificate in a PEM file; none is an error.
fn certificates(path: &Path, what: &str) -> Result<Vec<reqwest::Certificate>> {
    let pem = read(path, what)?;
    let certificates = reqwest::Certificate::from_pem_bundle(&pem)
        .with_context(|| format!("{what} {}: not a PEM certificate bundle", path.display()))?;
    if certificates.is_empty() {
        bail!("{what} {}: holds no PEM certificate", path.display());
    }
    Ok(certificates)
}

/// The client's certificate chain and key, as rustls presents them.
fn identity(cert_file: &Path, key_file: &Path) -> Result<reqwest::Identity> {
    certificates(cert_file, "cert_file")?;
    let mut pem = read(cert_file, "cert_file")?;
    pem.push(b'\n');
    pem.extend(read(key_file, "key_file")?);
    reqwest::Identity::from_pem(&pem).with_context(|| {
        format!(
            "key_file {}: no PEM private key (PKCS#8, RSA or EC)",
            key_file.display()
        )
    })
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{what} {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::WebhookFormat;

    fn spec(dir: &Path, files: [Option<&str>; 3]) -> WebhookSpec {
        let mut spec = WebhookSpec::new("https://siem.example/".into(), WebhookFormat::Rulehost);
        let [ca, cert, key] = files.map(|f| f.map(|f| dir.join(f)));
        (spec.ca_file, spec.cert_file, spec.key_file) = (ca, cert, key);
        spec
    }

    #[test]
    fn bad_tls_files_are_named_at_start() {
        crate::install_tls_provider();
        let dir = std::env::temp_dir().join(format!("rulehost-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("empty.pem"), "").unwrap();
        std::fs::write(dir.join("garbage.pem"), "-----BEGIN CERTIFICATE-----\n!!\n").unwrap();
        for (files, expected) in [
            ([Some("missing.pem"), None, None], "ca_file"),
            ([Some("empty.pem"), None, None], "holds no PEM certificate"),
            (
                [Some("garbage.pem"), None, None],
                "not a PEM certificate bundle",
            ),
            ([None, Some("empty.pem"), None], "cert_file needs key_file"),
            ([None, None, Some("empty.pem")], "key_file needs cert_file"),
            (
                [None, Some("empty.pem"), Some("empty.pem")],
                "holds no PEM certificate",
            ),
        ] {
            let spec = spec(&dir, files);
            let error = configure(reqwest::Client::builder(), &spec)
                .err()
                .map(|e| crate::logging::error_line(e.as_ref()))
                .unwrap_or_default();
            assert!(error.contains(expected), "{files:?}: {error}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

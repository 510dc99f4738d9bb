//! Registry credentials from Docker's `config.json`, the file `docker login` writes and a
//! Kubernetes `kubernetes.io/dockerconfigjson` Secret mounts: `auths` keyed by registry,
//! each with a base64 `auth` (`user:password`) or `username` and `password`. Read here
//! with serde rather than through the docker_credential crate: that crate finds the file
//! only through the environment and runs credential-helper programs, and an agent that
//! runs whatever program a config names would have ambient authority it must not have.
//! A secret never reaches a log, a metric or an error: only registry names and the file's
//! path do.

use anyhow::{Context, Result, bail};
use base64::Engine;
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The logins of one config file (none: anonymous everywhere).
#[derive(Clone, Default)]
pub struct Credentials {
    /// The file read, for messages; None when there was none.
    file: Option<PathBuf>,
    /// Normalised registry host[:port] -> (user, password).
    logins: BTreeMap<String, (String, String)>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("file", &self.file)
            .field("registries", &self.logins.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(serde::Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

#[derive(serde::Deserialize)]
struct Entry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

impl Credentials {
    /// `explicit` (`--registry-config`) must exist; without it Docker's own default
    /// (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`) is read if present.
    /// A file that exists but is malformed is an error naming it.
    pub fn load(explicit: Option<&Path>) -> Result<Credentials> {
        let (path, required) = match explicit {
            Some(path) => (path.to_owned(), true),
            None => match default_path() {
                Some(path) => (path, false),
                None => return Ok(Credentials::default()),
            },
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Credentials::default());
            }
            Err(e) => bail!("registry config {}: {e}", path.display()),
        };
        Credentials::parse(&text, &path)
    }

    fn parse(text: &str, path: &Path) -> Result<Credentials> {
        let config: ConfigFile = serde_json::from_str(text).with_context(|| {
            format!(
                "registry config {}: not Docker's config.json",
                path.display()
            )
        })?;
        let mut logins = BTreeMap::new();
        for (key, entry) in config.auths {
            let login = entry
                .login()
                .with_context(|| format!("registry config {}: auths {key:?}", path.display()))?;
            logins.insert(normalise(&key), login);
        }
        Ok(Credentials {
            file: Some(path.to_owned()),
            logins,
        })
    }

    /// How to authenticate to `registry` (host[:port], as a reference names it).
    pub(crate) fn auth_for(&self, registry: &str) -> RegistryAuth {
        match self.logins.get(&normalise(registry)) {
            Some((user, password)) => RegistryAuth::Basic(user.clone(), password.clone()),
            None => RegistryAuth::Anonymous,
        }
    }

    /// `error` as one line; a refused login says which registry and whether
    /// credentials for it were missing or refused.
    pub(crate) fn explain(
        &self,
        registry: &str,
        what: &str,
        error: OciDistributionError,
    ) -> anyhow::Error {
        if !is_unauthorized(&error) {
            return anyhow::anyhow!("{what}: {error}");
        }
        let known = self.logins.contains_key(&normalise(registry));
        match (&self.file, known) {
            (Some(file), true) => anyhow::anyhow!(
                "{what}: registry {registry} refused the credentials for it in {}",
                file.display()
            ),
            (Some(file), false) => anyhow::anyhow!(
                "{what}: registry {registry} requires credentials and {} has none for it",
                file.display()
            ),
            (None, _) => anyhow::anyhow!(
                "{what}: registry {registry} requires credentials and no registry config was found (--registry-config FILE, or Docker's config.json)"
            ),
        }
    }
}

impl Entry {
    /// The user and password, from `auth` or the separate fields.
    fn login(self) -> Result<(String, String)> {
        if let Some(auth) = self.auth.filter(|a| !a.is_empty()) {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .context("auth is not base64 of user:password")?;
            let (user, password) = decoded
                .split_once(':')
                .context("auth is not base64 of user:password")?;
            return Ok((user.to_owned(), password.to_owned()));
        }
        match (self.username, self.password) {
            (Some(user), Some(password)) => Ok((user, password)),
            _ => bail!(
                "neither auth nor username and password (identity tokens and credential helpers are not supported)"
            ),
        }
    }
}

/// Docker's default location of config.json.
fn default_path() -> Option<PathBuf> {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => Some(PathBuf::from(dir).join("config.json")),
        None => {
            std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker/config.json"))
        }
    }
}

/// A registry key as Docker writes it (`https://index.docker.io/v1/`, `host:5000`,
/// `http://host:5000/v2/`) reduced to the host[:port] a reference names.
fn normalise(key: &str) -> String {
    let bare = key
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = bare.split('/').next().unwrap_or(bare).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        _ => host,
    }
}

/// Whether the registry refused access (401 or 403, however oci-client reports it).
fn is_unauthorized(error: &OciDistributionError) -> bool {
    match error {
        OciDistributionError::AuthenticationFailure(_)
        | OciDistributionError::UnauthorizedError { .. } => true,
        OciDistributionError::ServerError { code, .. } => matches!(code, 401 | 403),
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|e| matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Credentials> {
        Credentials::parse(text, Path::new("/secrets/config.json"))
    }

    #[test]
    fn logins_come_from_auth_or_fields_and_keys_are_normalised() {
        let alice = base64::engine::general_purpose::STANDARD.encode("alice:pa:ss");
        let credentials = parse(&format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{alice}"}},
                "http://Registry.Example:5000/v2/": {{"username": "bob", "password": "pw"}}
            }}, "credsStore": "desktop"}}"#
        ))
        .unwrap();
        assert!(matches!(
            credentials.auth_for("docker.io"),
            RegistryAuth::Basic(u, p) if u == "alice" && p == "pa:ss"
        ));
        assert!(matches!(
            credentials.auth_for("registry.example:5000"),
            RegistryAuth::Basic(u, p) if u == "bob" && p == "pw"
        ));
        assert!(matches!(
            credentials.auth_for("other:5000"),
            RegistryAuth::Anonymous
        ));
        let shown = format!("{credentials:?}");
        assert!(!shown.contains("pw") && !shown.contains("alice"), "{shown}");
    }

    #[test]
    fn a_malformed_file_or_entry_is_named() {
        for (text, expected) in [
            ("{", "not Docker's config.json"),
            (r#"{"auths": {"h": {"auth": "%%"}}}"#, "auths \"h\""),
            (
                r#"{"auths": {"h": {"identitytoken": "t"}}}"#,
                "credential helpers are not supported",
            ),
        ] {
            let error = format!("{:#}", parse(text).unwrap_err());
            assert!(
                error.contains("/secrets/config.json") && error.contains(expected),
                "{error}"
            );
            assert!(!error.contains("%%"), "{error}");
        }
        let missing = Credentials::load(Some(Path::new("/nonexistent/config.json"))).unwrap_err();
        assert!(
            missing.to_string().contains("/nonexistent/config.json"),
            "{missing}"
        );
    }
}

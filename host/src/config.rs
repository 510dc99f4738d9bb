//! The operator's configuration file (`--config FILE`, YAML): what a command line says
//! badly. Unknown keys are errors, so a typo never silently weakens the sandbox.
//!
//! ```yaml
//! grants:                       # capabilities per rule id, beside the shipped defaults
//!   TRC-1013:
//!     env: [KUBERNETES_SERVICE_HOST]
//!     wasi: [clocks, random]    # what a JavaScript or Python rule's runtime reads
//! budgets:                      # bounds raised for one rule, by its name (file stem)
//!   k8s_api_connection_python: {max_mib: 48, memory_mib: 128, compile_cpu_secs: 60}
//! exceptions:                   # findings not written (counted per rule)
//!   - rule: TRC-1013
//!     namespace: kube-system
//! rules:                        # beside --rule/--rules; a string is a rules directory
//!   - path: /etc/rulehost/rules/k8s_api_connection.wasm
//!     sha256: 2757c361...        # optional: any other bytes are refused
//!   - oci: registry.example.com/rules/k8s:1    # pulled, verified, followed
//! trusted_keys: [/etc/rulehost/keys/cosign.pub]   # a run flag: only signed rules load
//! webhooks:                     # findings POSTed as JSON (beside --webhook URLs)
//!   - url: http://falcosidekick.falco:2801/
//!     format: falco
//!     queue: 10000
//!     timeout_ms: 5000
//! ```

use crate::exceptions::ExceptionSpec;
use crate::rules::{Grant, Grants};
use anyhow::{Context, Result, anyhow};
use std::collections::BTreeMap;
use std::path::Path;

/// Checks a loaded file's flag keys (`path`, its text, the parsed file).
pub type FlagCheck = fn(&Path, &str, &Config) -> Result<()>;

/// The configuration file's contents. Other top-level keys are `run` flags
/// ([`crate::cli`]), checked there.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Config {
    /// Capabilities granted per rule id, added to the shipped rules' defaults.
    #[serde(default)]
    pub grants: BTreeMap<String, Grant>,
    /// Bounds raised for single rules, by rule name (the file's stem).
    #[serde(default)]
    pub budgets: BTreeMap<String, crate::rules::RuleBudget>,
    /// Findings not to write: expected ones, such as legitimate API clients.
    #[serde(default)]
    pub exceptions: Vec<ExceptionSpec>,
    /// Webhook sinks with their options (beside `--webhook` URLs).
    #[serde(default)]
    pub webhooks: Vec<crate::sinks::WebhookSpec>,
    /// Rule files (optionally pinned), registry rules and rule directories.
    #[serde(default)]
    pub rules: Vec<RuleEntry>,
    /// `run` flags, by key.
    #[serde(flatten)]
    pub flags: BTreeMap<String, serde_json::Value>,
}

impl Config {
    /// Reads and parses `path`, then has `check` refuse keys that are no `run` flag (the
    /// command line knows its flags; this module does not); the error names the file,
    /// line and column in one line.
    pub fn load(path: &Path, check: FlagCheck) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        let config =
            Config::parse(&text).map_err(|error| anyhow!("config {}: {error}", path.display()))?;
        check(path, &text, &config)?;
        Ok(config)
    }

    /// Parses YAML text; the error is the parser's first line (where and what).
    pub fn parse(text: &str) -> Result<Config> {
        let config: Config = parse_yaml(text)?;
        for (id, grant) in &config.grants {
            grant
                .check_capabilities()
                .map_err(|error| anyhow!("grants: {id}: {error}"))?;
        }
        for (name, budget) in &config.budgets {
            budget
                .check()
                .map_err(|error| anyhow!("budgets: {name}: {error}"))?;
        }
        Ok(config)
    }

    /// The shipped defaults plus this file's grants plus `extra` (from `--grant`).
    pub fn grants(&self, extra: &[(String, Grant)]) -> Grants {
        let mut grants = Grants::builtin();
        for (id, grant) in self.grants.iter().chain(extra.iter().map(|(i, g)| (i, g))) {
            grants.add(id, grant.clone());
        }
        grants
    }
}

/// One item of the config's `rules`: a directory (as `--rules`), a file (as `--rule`,
/// optionally pinned to a digest), or a registry artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleEntry {
    Dir(std::path::PathBuf),
    File {
        path: std::path::PathBuf,
        sha256: Option<String>,
    },
    Oci {
        reference: String,
        sha256: Option<String>,
    },
}

/// The mapping form of a `rules` item.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    path: Option<std::path::PathBuf>,
    oci: Option<String>,
    sha256: Option<String>,
}

impl<'de> serde::Deserialize<'de> for RuleEntry {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Item {
            Dir(std::path::PathBuf),
            Spec(RuleSpec),
        }
        let spec = match Item::deserialize(deserializer).map_err(|_| {
            D::Error::custom("a rules item is a directory, {path, sha256} or {oci, sha256} (keys: path, oci, sha256)")
        })? {
            Item::Dir(dir) => return Ok(RuleEntry::Dir(dir)),
            Item::Spec(spec) => spec,
        };
        if let Some(sha) = &spec.sha256
            && (sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(D::Error::custom(format!(
                "sha256 `{sha}` is not 64 hex digits"
            )));
        }
        match (spec.path, spec.oci) {
            (Some(path), None) => Ok(RuleEntry::File {
                path,
                sha256: spec.sha256,
            }),
            (None, Some(reference)) => Ok(RuleEntry::Oci {
                reference,
                sha256: spec.sha256,
            }),
            _ => Err(D::Error::custom("a rules item has one of `path` and `oci`")),
        }
    }
}

/// Any YAML document (the config file, a kubeconfig) into `T`; an error is the
/// parser's first line, which says where and what.
pub(crate) fn parse_yaml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_saphyr::from_str(text).map_err(|error| {
        let error = error.to_string();
        let first = error.lines().next().unwrap_or("invalid YAML");
        anyhow!("{}", first.strip_prefix("error: ").unwrap_or(first))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_parse_and_add_to_the_defaults() {
        let config = Config::parse("grants:\n  X-1:\n    env: [HOME, PATH]\n").unwrap();
        let grants = config.grants(&[]);
        assert_eq!(grants.of("X-1").unwrap().env.len(), 2);
        assert!(
            grants
                .of("TRC-1013")
                .unwrap()
                .env
                .contains("KUBERNETES_SERVICE_HOST")
        );
    }

    #[test]
    fn the_shipped_exceptions_list_parses() {
        let text = include_str!("../../deploy/exceptions/common-k8s-clients.yaml");
        let config = Config::parse(text).unwrap();
        assert!(config.exceptions.len() >= 15, "{}", config.exceptions.len());
        assert!(config.exceptions.iter().all(|e| e.image.is_some()));
    }

    #[test]
    fn rules_entries_are_directories_pinned_files_or_registry_artifacts() {
        let sha = "ab".repeat(32);
        let text = format!(
            "rules:\n  - /etc/rules\n  - path: /r/k.wasm\n    sha256: {sha}\n  - oci: localhost:5000/rules/k:1\n"
        );
        let config = Config::parse(&text).unwrap();
        assert_eq!(
            config.rules,
            vec![
                RuleEntry::Dir("/etc/rules".into()),
                RuleEntry::File {
                    path: "/r/k.wasm".into(),
                    sha256: Some(sha)
                },
                RuleEntry::Oci {
                    reference: "localhost:5000/rules/k:1".into(),
                    sha256: None
                },
            ]
        );
        for bad in [
            "rules:\n  - path: a.wasm\n    sha265: abc\n",
            "rules:\n  - path: a.wasm\n    sha256: abc\n",
            "rules:\n  - {path: a.wasm, oci: x}\n",
        ] {
            let error = Config::parse(bad).unwrap_err().to_string();
            assert!(error.contains("line 2"), "{bad:?}: {error}");
            assert_eq!(error.lines().count(), 1, "{error}");
        }
    }

    #[test]
    fn mistakes_are_one_line_naming_where() {
        for (text, expected) in [
            (
                "grants:\n  X-1:\n    envs: [A]\n",
                "line 3 column 5: unknown field `envs`",
            ),
            ("grants: [\n", "line 1 column 9"),
        ] {
            let error = Config::parse(text).unwrap_err().to_string();
            assert!(error.starts_with(expected), "{text:?}: {error}");
            assert_eq!(error.lines().count(), 1, "{error}");
        }
    }
}

//! Capabilities are granted, not taken: a rule receives an environment variable (and,
//! as the world grows, any other capability) only if the operator granted it to that
//! rule id. The shipped rules' needs are granted by default; a rule asking for more is
//! refused at load, the same way by `inspect`, `run --check`, `run` and reload, with a
//! line saying how to grant it.

use super::*;
use std::collections::{BTreeMap, BTreeSet};

/// What one rule id may use.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Environment variable names the rule may read from process-exec events.
    #[serde(default)]
    pub env: BTreeSet<String>,
    /// WASI capabilities ([`CAPABILITIES`]: `clocks`, `random`) the rule's language
    /// runtime may use.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub wasi: BTreeSet<String>,
}

/// Grants by rule id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grants {
    /// Everything a rule asks for: in-process engines for trusted rules only (tests).
    All,
    /// Only what is listed.
    Listed(BTreeMap<String, Grant>),
}

/// The shipped rules' needs: TRC-1013 reads the address a container was told for the
/// API server; its JavaScript and Python builds' runtimes read clocks and random.
const BUILTIN: &[(&str, &[&str], &[&str])] = &[(
    "TRC-1013",
    &["KUBERNETES_SERVICE_HOST"],
    &["clocks", "random"],
)];

/// The safe default: the shipped rules' grants only.
impl Default for Grants {
    fn default() -> Self {
        Grants::builtin()
    }
}

impl Grants {
    /// The shipped rules' grants.
    pub fn builtin() -> Grants {
        let mut grants = BTreeMap::new();
        for (id, env, wasi) in BUILTIN {
            grants.insert(
                (*id).to_owned(),
                Grant {
                    env: env.iter().map(|name| (*name).to_owned()).collect(),
                    wasi: wasi.iter().map(|name| (*name).to_owned()).collect(),
                },
            );
        }
        Grants::Listed(grants)
    }

    /// Adds `grant` to what `id` may use.
    pub fn add(&mut self, id: &str, grant: Grant) {
        if let Grants::Listed(grants) = self {
            let granted = grants.entry(id.to_owned()).or_default();
            granted.env.extend(grant.env);
            granted.wasi.extend(grant.wasi);
        }
    }

    /// What `id` may use; `None` under [`Grants::All`].
    pub fn of(&self, id: &str) -> Option<Grant> {
        match self {
            Grants::All => None,
            Grants::Listed(grants) => Some(grants.get(id).cloned().unwrap_or_default()),
        }
    }

    /// Refuses a rule that asks for anything not granted to its id: env names in its
    /// metadata, WASI capabilities its imports (`needs`) use.
    pub fn check(&self, metadata: &Metadata, needs: &[(String, &'static str)]) -> Result<()> {
        let Some(grant) = self.of(&metadata.id) else {
            return Ok(());
        };
        if let Some((import, capability)) = needs
            .iter()
            .find(|(_, capability)| !grant.wasi.contains(*capability))
        {
            bail!(
                "rule {id} imports `{import}`, and {capability} is not granted to it: grant it with `--grant {id}=wasi:{capability}` or `grants: {{{id}: {{wasi: [{capability}]}}}}` in --config",
                id = metadata.id,
            );
        }
        let missing: Vec<&str> = metadata
            .env_vars
            .iter()
            .filter(|name| !grant.env.contains(*name))
            .map(String::as_str)
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        bail!(
            "rule {id} asks for env {names}, not granted to it: grant it with `--grant {id}=env:{list}` or `grants: {{{id}: {{env: [{list}]}}}}` in --config",
            id = metadata.id,
            names = missing.join(", "),
            list = missing.join(","),
        )
    }
}

/// Parses `--grant ID=env:NAME[,NAME...]` or `--grant ID=wasi:CAPABILITY[,...]`.
pub fn parse_grant(text: &str) -> Result<(String, Grant)> {
    let usage = "ID=env:NAME[,NAME...] or ID=wasi:clocks|random[,...]";
    let (id, what) = text
        .split_once('=')
        .ok_or_else(|| anyhow!("grant {text:?} is not {usage}"))?;
    let (kind, names) = what
        .split_once(':')
        .ok_or_else(|| anyhow!("grant {text:?} grants no known capability ({usage})"))?;
    let names: BTreeSet<String> = names
        .split(',')
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect();
    if id.is_empty() || names.is_empty() {
        bail!("grant {text:?} names no rule id or nothing to grant");
    }
    let grant = match kind {
        "env" => Grant {
            env: names,
            ..Grant::default()
        },
        "wasi" => Grant {
            wasi: names,
            ..Grant::default()
        },
        _ => bail!("grant {text:?} grants no known capability ({usage})"),
    };
    grant.check_capabilities()?;
    Ok((id.to_owned(), grant))
}

impl Grant {
    /// Refuses WASI capabilities this host does not know (a typo would grant nothing).
    pub fn check_capabilities(&self) -> Result<()> {
        match self
            .wasi
            .iter()
            .find(|c| !CAPABILITIES.contains(&c.as_str()))
        {
            Some(unknown) => bail!(
                "unknown WASI capability {unknown:?} (known: {})",
                CAPABILITIES.join(", ")
            ),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asking(id: &str, env: &[&str]) -> Metadata {
        Metadata {
            id: id.into(),
            env_vars: env.iter().map(|e| (*e).into()).collect(),
            ..Metadata::default()
        }
    }

    impl Grants {
        fn check_env(&self, metadata: &Metadata) -> Result<()> {
            self.check(metadata, &[])
        }
    }

    #[test]
    fn only_granted_names_pass_and_the_refusal_says_how_to_grant() {
        let mut grants = Grants::builtin();
        grants
            .check_env(&asking("TRC-1013", &["KUBERNETES_SERVICE_HOST"]))
            .unwrap();
        let error = grants
            .check_env(&asking("X-1", &["AWS_SECRET_ACCESS_KEY", "HOME"]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "rule X-1 asks for env AWS_SECRET_ACCESS_KEY, HOME, not granted to it: grant it with `--grant X-1=env:AWS_SECRET_ACCESS_KEY,HOME` or `grants: {X-1: {env: [AWS_SECRET_ACCESS_KEY,HOME]}}` in --config"
        );
        // A grant to another id, or of another name, does not count.
        grants.add("X-2", parse_grant("X-2=env:HOME").unwrap().1);
        assert!(grants.check_env(&asking("X-1", &["HOME"])).is_err());
        grants.add("X-1", parse_grant("X-1=env:HOME").unwrap().1);
        grants.check_env(&asking("X-1", &["HOME"])).unwrap();
        assert!(grants.check_env(&asking("TRC-1013", &["HOME"])).is_err());
        Grants::All.check_env(&asking("X-1", &["ANY"])).unwrap();
    }

    #[test]
    fn grant_flags_parse_or_say_why_not() {
        let (id, grant) = parse_grant("TRC-9=env:A,B").unwrap();
        assert_eq!(id, "TRC-9");
        assert_eq!(grant.env.len(), 2);
        let (_, grant) = parse_grant("JS-1=wasi:clocks,random").unwrap();
        assert_eq!(grant.wasi.len(), 2);
        for bad in [
            "TRC-9",
            "TRC-9=A",
            "=env:A",
            "TRC-9=env:",
            "X=wasi:sockets",
            "X=fs:a",
        ] {
            assert!(parse_grant(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn wasi_imports_need_their_capability_granted() {
        let needs = vec![("wasi:clocks/wall-clock@0.2.9".to_owned(), "clocks")];
        let grants = Grants::builtin();
        grants.check(&asking("TRC-1013", &[]), &needs).unwrap();
        let error = grants
            .check(&asking("JS-1", &[]), &needs)
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "rule JS-1 imports `wasi:clocks/wall-clock@0.2.9`, and clocks is not granted to it: grant it with `--grant JS-1=wasi:clocks` or `grants: {JS-1: {wasi: [clocks]}}` in --config"
        );
    }
}

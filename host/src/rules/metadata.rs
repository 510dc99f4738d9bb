//! A compiled rule and what it declares about itself, validated once at load.

use super::*;

/// A compiled rule.
pub struct Rule {
    /// The file stem it was loaded from (or the built-in name).
    pub name: String,
    /// sha256 of the exact .wasm bytes, carried by every finding.
    pub sha256: String,
    pub size: usize,
    /// The component, compiled and linked against the host's imports.
    pub pre: bindings::RulePre<InstanceState>,
    /// Interfaces it imports (all from the rule world).
    pub imports: Vec<String>,
    /// Its `packed.on-events` export: batches go to it as bytes (0.1.3). `None` for a
    /// rule without one, which is given typed batches through `detector`.
    pub packed: Option<ComponentExportIndex>,
    /// WASI imports that need a grant, with the capability each needs.
    pub needs: Vec<(String, &'static str)>,
    /// Linear memory its instances may grow to (the default, or its budget's).
    pub memory_bytes: usize,
    pub metadata: Metadata,
}

/// What produced a finding: the rule's metadata (printed as `signature`) and its exact
/// bytes (printed as `rule`). Made once per rule instance and shared by its findings'
/// shapes ([`FieldShape`]).
#[derive(Debug, Default)]
pub struct FindingSource {
    pub signature: Metadata,
    pub rule: RuleRef,
}

/// Names the rule file a finding came from.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RuleRef {
    pub name: Arc<str>,
    pub sha256: Arc<str>,
}

impl FindingSource {
    /// What each finding of `rule` says it came from.
    pub fn of(rule: &Rule) -> Arc<FindingSource> {
        Arc::new(FindingSource {
            signature: rule.metadata.clone(),
            rule: RuleRef {
                name: rule.name.as_str().into(),
                sha256: rule.sha256.as_str().into(),
            },
        })
    }
}

impl Rule {
    /// The WASI capabilities its imports need, each once, in order.
    pub fn capabilities(&self) -> Vec<&'static str> {
        let mut capabilities: Vec<&str> = self.needs.iter().map(|(_, c)| *c).collect();
        capabilities.sort_unstable();
        capabilities.dedup();
        capabilities
    }
}

/// A rule's metadata, in the host's terms; also the `signature` of its findings.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Metadata {
    pub id: String,
    pub version: String,
    pub name: String,
    pub event_name: String,
    pub description: String,
    pub severity: u8,
    pub tags: Vec<String>,
    pub mitre: Option<Mitre>,
    #[serde(skip)]
    pub selects: Vec<EventKind>,
    #[serde(skip)]
    pub origin: Origin,
    #[serde(skip)]
    pub env_vars: Vec<String>,
}

/// MITRE ATT&CK classification.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Mitre {
    pub tactic: String,
    pub technique: String,
    pub technique_id: String,
}

/// Whose events a rule wants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    #[default]
    Any,
    Container,
    Host,
}

impl Metadata {
    pub(super) fn from_wit(m: wit::RuleMetadata) -> Metadata {
        Metadata {
            id: m.id,
            version: m.version,
            name: m.name,
            event_name: m.event_name,
            description: m.description,
            severity: m.severity,
            tags: m.tags,
            mitre: m.mitre.map(|m| Mitre {
                tactic: m.tactic,
                technique: m.technique,
                technique_id: m.technique_id,
            }),
            selects: m
                .selects
                .into_iter()
                .map(|kind| match kind {
                    wit::EventKind::ProcessExec => EventKind::ProcessExec,
                    wit::EventKind::SocketConnect => EventKind::SocketConnect,
                })
                .collect(),
            origin: match m.origin {
                wit::Origin::Any => Origin::Any,
                wit::Origin::Container => Origin::Container,
                wit::Origin::Host => Origin::Host,
            },
            env_vars: m.env_vars,
        }
    }

    /// Whether this rule is given an event of `kind` from a process in or out of a container.
    pub fn wants(&self, kind: EventKind, in_container: bool) -> bool {
        let origin_ok = match self.origin {
            Origin::Any => true,
            Origin::Container => in_container,
            Origin::Host => !in_container,
        };
        origin_ok && self.selects.contains(&kind)
    }

    /// Whether an env entry (`NAME=value`) is one this rule asked for.
    pub fn wants_env(&self, entry: &str) -> bool {
        // Compared name by name rather than by finding the '=' first; the byte after
        // the name is checked before the name itself, which rejects most entries
        // without comparing strings.
        let entry = entry.as_bytes();
        self.env_vars.iter().any(|wanted| {
            let wanted = wanted.as_bytes();
            let ends_at_name = match entry.get(wanted.len()) {
                Some(&byte) => byte == b'=',
                None => entry.len() == wanted.len(),
            };
            ends_at_name && entry.starts_with(wanted)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_entries_match_by_whole_name() {
        let metadata = Metadata {
            env_vars: vec!["KUBERNETES_SERVICE_HOST".into()],
            ..Metadata::default()
        };
        for wanted in [
            "KUBERNETES_SERVICE_HOST=10.96.0.1",
            "KUBERNETES_SERVICE_HOST=",
            "KUBERNETES_SERVICE_HOST",
        ] {
            assert!(metadata.wants_env(wanted), "{wanted}");
        }
        for other in [
            "KUBERNETES_SERVICE_HOSTX=1",
            "KUBERNETES_SERVICE_HOS=1",
            "PATH=/bin",
            "",
            "KUBERNETES_SERVICE_PORT=443",
        ] {
            assert!(!metadata.wants_env(other), "{other}");
        }
    }
}

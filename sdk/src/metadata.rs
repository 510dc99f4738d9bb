//! A builder for a rule's metadata, so a rule states only what differs from the usual:
//! container origin, severity 1, no tags, no MITRE mapping, no env names.

use crate::{EventKind, Mitre, Origin, RuleMetadata};

/// Builds a [`RuleMetadata`].
#[derive(Debug, Clone)]
pub struct Metadata(RuleMetadata);

impl Metadata {
    /// A rule with its id (`TRC-1013`), version, human name and event name (the
    /// `signature.event_name` of its findings).
    pub fn new(id: &str, version: &str, name: &str, event_name: &str) -> Metadata {
        Metadata(RuleMetadata {
            id: id.into(),
            version: version.into(),
            name: name.into(),
            event_name: event_name.into(),
            description: String::new(),
            tags: Vec::new(),
            severity: 1,
            mitre: None,
            selects: Vec::new(),
            origin: Origin::Container,
            env_vars: Vec::new(),
        })
    }

    pub fn description(mut self, text: &str) -> Metadata {
        self.0.description = text.into();
        self
    }

    pub fn tags(mut self, tags: &[&str]) -> Metadata {
        self.0.tags = tags.iter().map(|t| (*t).into()).collect();
        self
    }

    /// 0 (informational) to 4 (critical).
    pub fn severity(mut self, severity: u8) -> Metadata {
        self.0.severity = severity;
        self
    }

    pub fn mitre(mut self, tactic: &str, technique: &str, technique_id: &str) -> Metadata {
        self.0.mitre = Some(Mitre {
            tactic: tactic.into(),
            technique: technique.into(),
            technique_id: technique_id.into(),
        });
        self
    }

    /// The event kinds the rule is delivered.
    pub fn selects(mut self, kinds: &[EventKind]) -> Metadata {
        self.0.selects = kinds.to_vec();
        self
    }

    /// Which processes' events it wants (default: containers only).
    pub fn origin(mut self, origin: Origin) -> Metadata {
        self.0.origin = origin;
        self
    }

    /// Env variable names whose `NAME=value` entries exec events should carry.
    pub fn env_vars(mut self, names: &[&str]) -> Metadata {
        self.0.env_vars = names.iter().map(|n| (*n).into()).collect();
        self
    }

    pub fn build(self) -> RuleMetadata {
        self.0
    }
}

//! Exceptions: findings an operator expects (legitimate API clients: operators,
//! controllers, mesh sidecars, monitoring agents) are matched by rule id and by what is
//! known of the process, container and pod, and not written. Every suppression is
//! counted per rule, so an exception never hides findings silently. A key that needs
//! runtime metadata matches only when that metadata is known.

use crate::sinks::Finding;
use globset::{Glob, GlobMatcher};
use std::collections::BTreeMap;

/// One exception as written in the config file; every given key must match.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExceptionSpec {
    /// A rule id, or `*` for every rule.
    pub rule: String,
    pub namespace: Option<String>,
    #[serde(default)]
    pub pod_labels: BTreeMap<String, String>,
    /// Glob over the image name (`quay.io/prometheus-operator/*`).
    pub image: Option<Glob>,
    /// Glob over the container name.
    pub container_name: Option<Glob>,
    /// The process's command name, exactly.
    pub comm: Option<String>,
}

/// An exception, ready to match.
#[derive(Debug, Clone)]
struct Exception {
    rule: String,
    namespace: Option<String>,
    pod_labels: BTreeMap<String, String>,
    image: Option<GlobMatcher>,
    container_name: Option<GlobMatcher>,
    comm: Option<String>,
}

impl From<&ExceptionSpec> for Exception {
    fn from(spec: &ExceptionSpec) -> Exception {
        Exception {
            rule: spec.rule.clone(),
            namespace: spec.namespace.clone(),
            pod_labels: spec.pod_labels.clone(),
            image: spec.image.as_ref().map(Glob::compile_matcher),
            container_name: spec.container_name.as_ref().map(Glob::compile_matcher),
            comm: spec.comm.clone(),
        }
    }
}

impl Exception {
    fn matches(&self, finding: &Finding) -> bool {
        if self.rule != "*" && self.rule != finding.signature().id {
            return false;
        }
        let event = &finding.event.event;
        if self
            .comm
            .as_ref()
            .is_some_and(|c| event.process.comm != c.as_str())
        {
            return false;
        }
        let container = event.container.as_deref();
        let pod = container.and_then(|c| c.pod.as_ref());
        let glob = |matcher: &Option<GlobMatcher>, value: Option<&String>| match matcher {
            None => true,
            Some(m) => value.is_some_and(|v| m.is_match(v)),
        };
        let namespace_ok = match &self.namespace {
            None => true,
            Some(ns) => pod.is_some_and(|p| &p.namespace == ns),
        };
        let labels_ok = self.pod_labels.iter().all(|(key, value)| {
            pod.and_then(|p| p.labels.get(key))
                .is_some_and(|v| v == value)
        });
        namespace_ok
            && labels_ok
            && glob(&self.image, container.and_then(|c| c.image.as_ref()))
            && glob(
                &self.container_name,
                container.and_then(|c| c.name.as_ref()),
            )
    }
}

/// The exceptions in force, and what they suppressed per rule id.
#[derive(Debug, Default)]
pub struct Exceptions {
    list: Vec<Exception>,
    suppressed: BTreeMap<String, u64>,
}

impl Exceptions {
    pub fn new(specs: &[ExceptionSpec]) -> Exceptions {
        Exceptions {
            list: specs.iter().map(Exception::from).collect(),
            suppressed: BTreeMap::new(),
        }
    }

    /// Replaces the list (a config reload); the counts go on.
    pub fn replace(&mut self, specs: &[ExceptionSpec]) {
        self.list = specs.iter().map(Exception::from).collect();
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Removes the findings an exception matches, counting them; `suppressed` hears
    /// the rule id of each.
    pub fn filter(&mut self, findings: &mut Vec<Finding>, mut on_suppressed: impl FnMut(&str)) {
        if self.list.is_empty() {
            return;
        }
        let (list, suppressed) = (&self.list, &mut self.suppressed);
        findings.retain(|finding| {
            let matched = list.iter().any(|e| e.matches(finding));
            if matched {
                *suppressed
                    .entry(finding.signature().id.clone())
                    .or_default() += 1;
                on_suppressed(&finding.signature().id);
            }
            !matched
        });
    }

    /// Findings suppressed so far, per rule id.
    pub fn suppressed(&self) -> &BTreeMap<String, u64> {
        &self.suppressed
    }
}

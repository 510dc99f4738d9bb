//! What the loaded rules declare that this kernel cannot give them. Never silent: a
//! `run --check` fails on it, `run` logs it at WARN, exports it as a metric and lists it
//! in the ready summary.

use crate::dispatch::Dispatcher;
use crate::rules::Origin;
use crate::sensor::{EnvCapture, Probes, Unmet};

/// The unmet needs of every loaded rule, given the hooks the probes got.
pub(crate) fn unmet(dispatcher: &Dispatcher, probes: &Probes) -> Vec<Unmet> {
    let mut unmet = Vec::new();
    for rule in dispatcher.rules() {
        let metadata = &rule.metadata;
        if !metadata.env_vars.is_empty() && probes.env_capture() == EnvCapture::Proc {
            unmet.push(Unmet {
                rule: metadata.id.clone(),
                need: "env capture at exec",
                reason: format!(
                    "the kernel refused every environment walk ({}); {} are read {}",
                    refusals(probes.fallbacks(), "exec_"),
                    metadata.env_vars.join(","),
                    EnvCapture::Proc.describe()
                ),
            });
        }
        if metadata.origin == Origin::Container && probes.lineage_hook() == "none" {
            unmet.push(Unmet {
                rule: metadata.id.clone(),
                need: "attribution after leaving the container cgroup",
                reason: refusals(probes.fallbacks(), "lineage"),
            });
        }
    }
    unmet
}

/// The fallback lines that start with `prefix`, joined.
fn refusals(fallbacks: &[String], prefix: &str) -> String {
    let lines: Vec<&str> = fallbacks
        .iter()
        .map(String::as_str)
        .filter(|line| line.starts_with(prefix))
        .collect();
    match lines.is_empty() {
        true => "no reason given".to_owned(),
        false => lines.join("; "),
    }
}

/// Logs each unmet need at WARN.
pub(crate) fn warn(unmet: &[Unmet]) {
    for need in unmet {
        tracing::warn!(
            rule = %need.rule,
            need = need.need,
            reason = %need.reason,
            "the kernel cannot meet a rule's need"
        );
    }
}

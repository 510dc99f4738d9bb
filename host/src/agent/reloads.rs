//! Hot reload inside the agent: file events and SIGHUP become reload requests; a plan
//! (compile and validate what changed) runs off the event path, one at a time, and a
//! request that arrives meanwhile is planned again once that one is applied; the plan is
//! applied between two batches, so every event is handled by exactly one version.

use crate::dispatch::Dispatcher;
use crate::logging::error_line;
use crate::rules::reload::{Change, Loaded, RuleSources, Watcher};
use crate::rules::{Rule, RuleEngine};
use anyhow::Result;
use std::sync::Arc;
use tokio::sync::mpsc::{Receiver, Sender, channel};

/// The agent's side of hot reload.
pub(crate) struct Reloads {
    runtime: Arc<RuleEngine>,
    sources: RuleSources,
    pub(crate) loaded: Loaded,
    planning: bool,
    pending: bool,
    /// A rule file or directory changed (from the watcher task).
    pub(crate) changed: Receiver<()>,
    plans_tx: Sender<Vec<Change>>,
    /// A finished plan, to apply between two batches.
    pub(crate) plans: Receiver<Vec<Change>>,
}

impl Reloads {
    /// Watches `sources` (nothing to watch for the built-in rule).
    pub(crate) fn new(
        runtime: Arc<RuleEngine>,
        sources: RuleSources,
        loaded: Loaded,
    ) -> Result<Self> {
        let (changed_tx, changed) = channel::<()>(1);
        if !sources.is_empty() {
            // Its own task: waiting for settled file events is not cancel-safe; the
            // channel it feeds is.
            let mut watcher = Watcher::new(&sources)?;
            tokio::spawn(async move {
                loop {
                    watcher.changed().await;
                    if changed_tx.send(()).await.is_err() {
                        break;
                    }
                }
            });
        }
        let (plans_tx, plans) = channel(1);
        Ok(Reloads {
            runtime,
            sources,
            loaded,
            planning: false,
            pending: false,
            changed,
            plans_tx,
            plans,
        })
    }

    /// SIGHUP: rescan, retrying files rejected before.
    pub(crate) fn request_rescan(&mut self) {
        tracing::info!("SIGHUP: rescanning rules");
        self.loaded.rejected.clear();
        self.request();
    }

    /// Asks for a plan; starts one now unless one is running.
    pub(crate) fn request(&mut self) {
        self.pending = true;
        self.start_plan();
    }

    fn start_plan(&mut self) {
        if !self.pending || self.planning || self.sources.is_empty() {
            return;
        }
        self.planning = true;
        self.pending = false;
        let (runtime, sources, tx) = (
            self.runtime.clone(),
            self.sources.clone(),
            self.plans_tx.clone(),
        );
        let (rules, rejected) = (self.loaded.rules.clone(), self.loaded.rejected.clone());
        tokio::task::spawn_blocking(move || {
            let changes = crate::rules::reload::plan(&runtime, &sources, &rules, &rejected);
            let _ = tx.blocking_send(changes);
        });
    }

    /// Applies a finished plan, then starts the next one if a request came meanwhile.
    pub(crate) fn apply_plan(&mut self, dispatcher: &mut Dispatcher, changes: Vec<Change>) {
        self.planning = false;
        for change in changes {
            apply(dispatcher, &mut self.loaded, change);
        }
        self.start_plan();
    }
}

/// Applies one change to the dispatcher, logging it in one line.
pub(crate) fn apply(dispatcher: &mut Dispatcher, loaded: &mut Loaded, change: Change) {
    match change {
        Change::Add { path, rule } => {
            let key = path.display().to_string();
            match dispatcher.add_from(&key, rule.clone()) {
                Ok(()) => {
                    log_rule("rule loaded", &rule, &key, None);
                    loaded.record(&path, Some(&rule.sha256));
                }
                Err(error) => {
                    log_rejected(dispatcher, &key, &error_line(error.as_ref()));
                    loaded.reject(&path, Some(&rule.sha256));
                }
            }
        }
        Change::Replace { path, rule } => {
            let key = path.display().to_string();
            match dispatcher.replace(&key, rule.clone()) {
                Ok(old) => {
                    log_rule("rule reloaded", &rule, &key, Some(&old));
                    loaded.record(&path, Some(&rule.sha256));
                }
                Err(error) => {
                    log_rejected(dispatcher, &key, &error_line(error.as_ref()));
                    loaded.reject(&path, Some(&rule.sha256));
                }
            }
        }
        Change::Remove { path } => {
            let key = path.display().to_string();
            if let Some(old) = dispatcher.remove(&key) {
                log_rule("rule unloaded", &old, &key, None);
            }
            loaded.record(&path, None);
        }
        Change::Reject {
            path,
            reason,
            sha256,
        } => {
            log_rejected(dispatcher, &path.display().to_string(), &reason);
            loaded.reject(&path, sha256.as_deref());
        }
    }
}

/// Logs a loaded, reloaded or unloaded rule with what identifies it.
pub(crate) fn log_rule(what: &'static str, rule: &Rule, source: &str, previous: Option<&Rule>) {
    tracing::info!(
        rule = %rule.name,
        id = %rule.metadata.id,
        event = %rule.metadata.event_name,
        version = %rule.metadata.version,
        sha256 = %rule.sha256,
        source,
        previous_version = previous.map(|p| p.metadata.version.as_str()),
        previous_sha256 = previous.map(|p| p.sha256.as_str()),
        "{what}"
    );
}

/// Logs a refused rule file, and the version that keeps running in its place, if any.
fn log_rejected(dispatcher: &Dispatcher, source: &str, reason: &str) {
    let kept = dispatcher.rule_from(source);
    tracing::warn!(
        source,
        reason,
        kept_version = kept.map(|r| r.metadata.version.as_str()),
        kept_sha256 = kept.map(|r| r.sha256.as_str()),
        "rule rejected"
    );
}

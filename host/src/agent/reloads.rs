//! Hot reload inside the agent: file events and SIGHUP become rescans; a rescan (read
//! and hash the rule files) runs off the event path, one at a time, and every changed
//! file then compiles in its own task (a bounded child process), so a slow compile
//! never holds back another file's reload. A result is applied between two batches, so
//! every event is handled by exactly one version. A file that changes again while it
//! compiles is rescanned when that compile ends, and only the newest bytes are applied.

use crate::dispatch::Dispatcher;
use crate::logging::error_line;
use crate::rules::{Rule, RuleEngine};
use crate::sources::reload::{Change, Compile, Loaded, RuleSources, Scan, Watcher};
use crate::trust::Verdict;
use anyhow::Result;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::mpsc::{Receiver, Sender, channel};

/// What a reload task finished.
pub(crate) enum Update {
    /// A rescan: changes to apply now, files to compile.
    Scanned(Scan),
    /// One file compiled (or refused).
    Compiled { path: PathBuf, change: Change },
}

/// The agent's side of hot reload.
pub(crate) struct Reloads {
    runtime: Arc<RuleEngine>,
    sources: RuleSources,
    pub(crate) loaded: Loaded,
    scanning: bool,
    /// A rescan was asked for while one ran, or a file changed again while compiling.
    pending: bool,
    /// Files compiling now, with the sha256 of the bytes being compiled.
    compiling: BTreeMap<PathBuf, String>,
    /// Files that changed again while compiling: their result is outdated.
    stale: BTreeSet<PathBuf>,
    /// A rule file or directory changed (from the watcher task).
    pub(crate) changed: Receiver<()>,
    updates_tx: Sender<Update>,
    /// Finished rescans and compiles, to apply between two batches.
    pub(crate) updates: Receiver<Update>,
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
        let (updates_tx, updates) = channel(16);
        Ok(Reloads {
            runtime,
            sources,
            loaded,
            scanning: false,
            pending: false,
            compiling: BTreeMap::new(),
            stale: BTreeSet::new(),
            changed,
            updates_tx,
            updates,
        })
    }

    /// SIGHUP: rescan, retrying files rejected before.
    pub(crate) fn request_rescan(&mut self) {
        tracing::info!("SIGHUP: rescanning rules");
        self.loaded.rejected.clear();
        self.request();
    }

    /// Asks for a rescan; starts one now unless one is running.
    pub(crate) fn request(&mut self) {
        self.pending = true;
        self.start_scan();
    }

    fn start_scan(&mut self) {
        if !self.pending || self.scanning || self.sources.is_empty() {
            return;
        }
        self.scanning = true;
        self.pending = false;
        let (sources, tx) = (self.sources.clone(), self.updates_tx.clone());
        let (rules, rejected) = (self.loaded.rules.clone(), self.loaded.rejected.clone());
        tokio::task::spawn_blocking(move || {
            let scan = crate::sources::reload::scan(&sources, &rules, &rejected);
            let _ = tx.blocking_send(Update::Scanned(scan));
        });
    }

    /// Applies a finished rescan or compile, then starts what it calls for.
    pub(crate) fn apply_update(&mut self, dispatcher: &mut Dispatcher, update: Update) {
        match update {
            Update::Scanned(scan) => {
                self.scanning = false;
                for change in scan.changes {
                    apply(dispatcher, &mut self.loaded, change);
                }
                for compile in scan.compiles {
                    self.start_compile(compile);
                }
            }
            Update::Compiled { path, change } => {
                self.compiling.remove(&path);
                if self.stale.remove(&path) {
                    tracing::debug!(path = %path.display(), "compiled an outdated version: dropped");
                } else {
                    apply(dispatcher, &mut self.loaded, change);
                }
            }
        }
        self.start_scan();
    }

    /// Compiles one changed file in its own task, unless those bytes already compile;
    /// newer bytes of a file still compiling wait for a rescan after it.
    fn start_compile(&mut self, compile: Compile) {
        match self.compiling.get(&compile.path) {
            Some(sha256) if *sha256 == compile.sha256 => return,
            Some(_) => {
                self.stale.insert(compile.path);
                self.pending = true;
                return;
            }
            None => {}
        }
        tracing::debug!(path = %compile.path.display(), sha256 = %compile.sha256, "compiling rule");
        self.compiling
            .insert(compile.path.clone(), compile.sha256.clone());
        let (runtime, tx) = (self.runtime.clone(), self.updates_tx.clone());
        tokio::task::spawn_blocking(move || {
            let path = compile.path.clone();
            let change = compile.run(&runtime);
            let _ = tx.blocking_send(Update::Compiled { path, change });
        });
    }
}

/// Applies one change to the dispatcher, logging it in one line and counting it.
pub(crate) fn apply(dispatcher: &mut Dispatcher, loaded: &mut Loaded, change: Change) {
    let result = apply_one(dispatcher, loaded, change);
    if let Some(metrics) = &dispatcher.metrics {
        metrics.reload(result);
        metrics.rules_loaded(dispatcher.rules());
    }
}

/// Applies one change; says how it went: `loaded`, `replaced`, `removed` or `rejected`.
fn apply_one(dispatcher: &mut Dispatcher, loaded: &mut Loaded, change: Change) -> &'static str {
    match change {
        Change::Add { path, rule, trust } => {
            let key = path.display().to_string();
            match dispatcher.add_from(&key, rule.clone()) {
                Ok(()) => {
                    log_rule("rule loaded", &rule, &key, None, &trust);
                    loaded.record(&path, Some(&rule.sha256));
                    "loaded"
                }
                Err(error) => {
                    log_rejected(dispatcher, &key, &error_line(error.as_ref()));
                    loaded.reject(&path, Some(&rule.sha256));
                    "rejected"
                }
            }
        }
        Change::Replace { path, rule, trust } => {
            let key = path.display().to_string();
            match dispatcher.replace(&key, rule.clone()) {
                Ok(old) => {
                    log_rule("rule reloaded", &rule, &key, Some(&old), &trust);
                    loaded.record(&path, Some(&rule.sha256));
                    "replaced"
                }
                Err(error) => {
                    log_rejected(dispatcher, &key, &error_line(error.as_ref()));
                    loaded.reject(&path, Some(&rule.sha256));
                    "rejected"
                }
            }
        }
        Change::Remove { path } => {
            let key = path.display().to_string();
            if let Some(old) = dispatcher.remove(&key) {
                log_rule("rule unloaded", &old, &key, None, &Verdict::Open);
            }
            loaded.record(&path, None);
            "removed"
        }
        Change::Reject {
            path,
            reason,
            sha256,
        } => {
            log_rejected(dispatcher, &path.display().to_string(), &reason);
            loaded.reject(&path, sha256.as_deref());
            "rejected"
        }
    }
}

/// Logs a loaded, reloaded or unloaded rule with what identifies it and what vouched
/// for its bytes (`trust`: `signed` with `signed_by`, `pinned`, or `open`).
pub(crate) fn log_rule(
    what: &'static str,
    rule: &Rule,
    source: &str,
    previous: Option<&Rule>,
    trust: &Verdict,
) {
    let (trust, signed_by) = match trust {
        Verdict::Open => ("open", None),
        Verdict::Pinned => ("pinned", None),
        Verdict::Signed(key) => ("signed", Some(key.as_str())),
    };
    tracing::info!(
        rule = %rule.name,
        id = %rule.metadata.id,
        event = %rule.metadata.event_name,
        version = %rule.metadata.version,
        sha256 = %rule.sha256,
        source,
        previous_version = previous.map(|p| p.metadata.version.as_str()),
        previous_sha256 = previous.map(|p| p.sha256.as_str()),
        trust,
        signed_by,
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

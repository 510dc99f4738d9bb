//! The config file, watched like rules: an edited exceptions list applies between two
//! batches without a restart; a broken edit keeps the list in force, and says why.
//! (Grants and limits apply at start: they change what rules were loaded under.)

use crate::exceptions::Exceptions;
use crate::logging::error_line;
use crate::sources::reload::{RuleSources, Watcher};
use anyhow::Result;
use std::path::PathBuf;
use tokio::sync::mpsc::{Receiver, channel};

/// A watched config file.
pub(crate) struct ConfigWatch {
    path: PathBuf,
    /// Refuses keys that are no `run` flag (given by the command line).
    check: crate::config::FlagCheck,
    changed: Receiver<()>,
}

impl ConfigWatch {
    /// Watches `path`'s directory (atomic renames and ConfigMap swaps included).
    pub(crate) fn new(path: PathBuf, check: crate::config::FlagCheck) -> Result<ConfigWatch> {
        let mut watcher = Watcher::new(&RuleSources {
            files: vec![path.clone()],
            dirs: Vec::new(),
            ..Default::default()
        })?;
        let (tx, changed) = channel(1);
        tokio::spawn(async move {
            loop {
                watcher.changed().await;
                if tx.send(()).await.is_err() {
                    break;
                }
            }
        });
        Ok(ConfigWatch {
            path,
            check,
            changed,
        })
    }

    /// Waits for a change; never returns without a watch.
    pub(crate) async fn changed(watch: &mut Option<ConfigWatch>) {
        let Some(watch) = watch else {
            return std::future::pending().await;
        };
        if watch.changed.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
    }

    /// Rereads the file and replaces the exceptions, or keeps them if it is broken.
    pub(crate) fn reload(&self, exceptions: &mut Exceptions) {
        match crate::config::Config::load(&self.path, self.check) {
            Ok(config) => {
                exceptions.replace(&config.exceptions);
                tracing::info!(
                    path = %self.path.display(),
                    exceptions = exceptions.len(),
                    "config reloaded: exceptions in force"
                );
            }
            Err(error) => tracing::warn!(
                path = %self.path.display(),
                error = %error_line(error.as_ref()),
                kept = exceptions.len(),
                "config reload failed; the previous exceptions stay in force"
            ),
        }
    }
}

/// Logs what the exceptions suppressed, per rule, once (at the end of a run).
pub(crate) fn report_suppressed(exceptions: &Exceptions) {
    for (rule, suppressed) in exceptions.suppressed() {
        tracing::info!(id = %rule, suppressed, "findings suppressed by exceptions");
    }
}

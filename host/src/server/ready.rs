//! The agent's readiness signal for machines: a file written once the probes are
//! attached, the start-up sweep is done and persisted state is restored, and removed on
//! a clean exit. Tests, benches, `rulehost trigger` and exec readiness probes wait for it
//! instead of reading the human log.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// What the agent reports once it is ready: enough for a caller to know what it attached
/// and what it found, without parsing log lines.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Ready {
    pub pid: u32,
    pub exec_hook: &'static str,
    pub connect_hook: &'static str,
    pub cgroup_hook: &'static str,
    /// The fork/exit hooks that keep attribution after a process leaves its cgroup.
    pub lineage_hook: &'static str,
    /// How exec events get the env entries rules asked for.
    pub env_capture: crate::sensor::EnvCapture,
    /// Each program the kernel loaded: its verifier figure and load time.
    pub programs: Vec<crate::sensor::ProgramLoad>,
    /// Needs of loaded rules this kernel cannot meet (also logged at WARN).
    pub unmet: Vec<crate::sensor::Unmet>,
    /// The env names the kernel captures for the loaded rules.
    pub env_vars: Vec<String>,
    /// Processes and containers found running by the start-up sweep.
    pub swept_processes: usize,
    pub swept_containers: usize,
    /// Persisted state put back (absent without a state directory).
    pub restored: Option<crate::state::store::RestoreReport>,
    /// Loaded rules by id.
    pub rules: Vec<String>,
    /// Where `/healthz`, `/readyz` and `/metrics` are served (`--listen`; port 0
    /// resolved).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<std::net::SocketAddr>,
}

/// The ready file while the agent runs; removed when dropped (a clean exit), so a
/// stale file never claims a stopped agent is ready.
pub(crate) struct ReadyFile {
    path: PathBuf,
}

impl ReadyFile {
    /// Writes `ready` to `path` atomically (a reader sees all of it or nothing).
    pub(crate) fn write(path: &Path, ready: &Ready) -> Result<ReadyFile> {
        let tmp = path.with_extension("tmp-ready");
        let text = serde_json::to_string(ready)? + "\n";
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, path))
            .with_context(|| format!("writing the ready file {}", path.display()))?;
        Ok(ReadyFile {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for ReadyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

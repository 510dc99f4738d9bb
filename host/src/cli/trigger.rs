//! `rulehost trigger`: a self-test a user runs on a node to prove the live pipeline
//! works end to end (in the spirit of Falco's event-generator).

use anyhow::{Context, Result, bail};
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What to trigger.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Scenario {
    /// TRC-1013: a container process connects to its Kubernetes API server address.
    K8sApiConnection,
}

/// A cgroup named like a containerd container, removed (with its process gone) on drop.
pub(crate) struct ThrowawayCgroup {
    pub path: PathBuf,
    pub container_id: String,
}

impl ThrowawayCgroup {
    /// Creates `<cgroup v2 root>/rulehost-trigger.slice/cri-containerd-<id>.scope`.
    pub(crate) fn create(tag: &str) -> Result<ThrowawayCgroup> {
        let root = crate::sys::mounts::cgroup2_root()?;
        let container_id = pseudo_container_id(tag);
        let path = root
            .join(format!("rulehost-{tag}.slice"))
            .join(format!("cri-containerd-{container_id}.scope"));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("creating cgroup {} (needs root)", path.display()))?;
        Ok(ThrowawayCgroup { path, container_id })
    }

    /// A command that joins this cgroup before it execs.
    pub(crate) fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let procs = self.path.join("cgroup.procs");
        let mut command = Command::new(program);
        // SAFETY: only async-signal-safe work between fork and exec: one open + write.
        unsafe {
            command.pre_exec(move || std::fs::write(&procs, b"0"));
        }
        command
    }
}

impl Drop for ThrowawayCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.path);
        if let Some(parent) = self.path.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

/// A 64-hex id, unique per run, that every container-id parser accepts.
pub(crate) fn pseudo_container_id(tag: &str) -> String {
    let seed = format!(
        "{tag}-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
    );
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut id = String::with_capacity(64);
    for round in 0..4u64 {
        for byte in seed.bytes().chain(round.to_le_bytes()) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
        }
        id.push_str(&format!("{hash:016x}"));
    }
    id
}

/// The body of the hidden `trigger-connect` command: one TCP connect.
pub(crate) fn connect(address: SocketAddr) -> Result<()> {
    TcpStream::connect_timeout(&address, Duration::from_secs(5))
        .with_context(|| format!("connecting to {address}"))?;
    Ok(())
}

/// Runs a scenario and prints the finding it produced.
pub(crate) fn run(scenario: Scenario, findings: Option<PathBuf>, timeout: Duration) -> Result<()> {
    let Scenario::K8sApiConnection = scenario;
    let exe = std::env::current_exe().context("locating the rulehost binary")?;
    let (findings_file, agent) = match findings {
        Some(path) => (path, None),
        None => {
            let path =
                std::env::temp_dir().join(format!("rulehost-trigger-{}.jsonl", std::process::id()));
            let _ = std::fs::remove_file(&path);
            let agent = Agent::start(&exe, &path)?;
            (path, Some(agent))
        }
    };
    let start_len = std::fs::metadata(&findings_file).map_or(0, |m| m.len());

    let listener = TcpListener::bind("127.0.0.1:0").context("binding a local listener")?;
    let address = listener.local_addr()?;
    let cgroup = ThrowawayCgroup::create("trigger")?;
    tracing::info!(
        container = %cgroup.container_id,
        cgroup = %cgroup.path.display(),
        %address,
        "trigger: a container process connects to its KUBERNETES_SERVICE_HOST"
    );
    let status = cgroup
        .command(&exe)
        .arg("trigger-connect")
        .arg(address.to_string())
        .env("KUBERNETES_SERVICE_HOST", address.ip().to_string())
        .status()
        .context("starting the process in the throwaway cgroup")?;
    if !status.success() {
        bail!("the process in the throwaway cgroup failed: {status}");
    }
    let finding = wait_for_finding(&findings_file, start_len, &cgroup.container_id, timeout);
    if let Some(agent) = agent {
        agent.stop();
        let _ = std::fs::remove_file(&findings_file);
    }
    let finding = finding?;
    crate::logging::say(format_args!("{finding}"))?;
    tracing::info!("trigger: detected");
    Ok(())
}

/// Polls a findings file for a k8s_api_connection finding of `container_id`.
fn wait_for_finding(
    path: &Path,
    from: u64,
    container_id: &str,
    timeout: Duration,
) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(mut file) = std::fs::File::open(path) {
            let mut text = String::new();
            file.read_to_string(&mut text).ok();
            let fresh = text.get(from as usize..).unwrap_or("");
            for line in fresh.lines() {
                let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                if value["signature"]["event_name"] == "k8s_api_connection"
                    && value["data"]["container_id"] == container_id
                {
                    return Ok(line.to_owned());
                }
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "no k8s_api_connection finding for container {container_id} in {} within {}s",
                path.display(),
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A private `rulehost run` for the trigger, stopped with SIGTERM.
struct Agent {
    child: Child,
    ready_file: PathBuf,
}

/// How long a private agent may take to attach (it compiles the rule first).
const AGENT_START: Duration = Duration::from_secs(60);

impl Agent {
    /// Starts the agent (its log goes to our stderr) and waits for its ready file.
    fn start(exe: &Path, findings: &Path) -> Result<Agent> {
        let ready_file = findings.with_extension("ready");
        let _ = std::fs::remove_file(&ready_file);
        let mut child = Command::new(exe)
            .args(["run", "--no-state-dir"])
            .arg("--output")
            .arg(findings)
            .arg("--ready-file")
            .arg(&ready_file)
            .stdin(Stdio::null())
            .spawn()
            .context("starting rulehost run")?;
        let deadline = Instant::now() + AGENT_START;
        while !ready_file.exists() {
            if let Some(status) = child.try_wait()? {
                bail!("rulehost run exited before it was ready ({status})");
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "rulehost run wrote no ready file within {}s",
                    AGENT_START.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Agent { child, ready_file })
    }

    fn stop(mut self) {
        // SAFETY: sending a signal to our own child.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.ready_file);
    }
}

//! A real `rulehost run` for the live tests, and container-like cgroups to run
//! workloads in. Everything here needs root and the real kernel (CI has both).

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a test waits for a finding that must come.
pub const FINDING_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `rulehost run --output FILE`, stopped with SIGTERM on drop.
pub struct LiveAgent {
    child: Child,
    pub output: PathBuf,
    pub record: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
}

impl LiveAgent {
    /// Starts the agent (with extra arguments) and waits until its probes are attached.
    pub fn start(name: &str, extra: &[&str]) -> LiveAgent {
        let dir = std::env::temp_dir().join(format!("rulehost-live-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let output = dir.join("findings.jsonl");
        let record = dir.join("events.jsonl");
        let _ = std::fs::remove_file(&output);
        let _ = std::fs::remove_file(&record);
        let mut command = Command::new(crate::rulehost_bin());
        command
            .arg("run")
            .arg("--output")
            .arg(&output)
            .arg("--record")
            .arg(&record)
            .args(extra);
        // Each agent its own state store (one redb file admits one host at a time).
        if !extra
            .iter()
            .any(|a| a.starts_with("--state-dir") || *a == "--no-state-dir")
        {
            let state = dir.join("state");
            let _ = std::fs::remove_dir_all(&state);
            command.arg("--state-dir").arg(state);
        }
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start rulehost run");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.starts_with("rulehost: ready") {
                    let _ = ready_tx.send(());
                }
                sink.lock().unwrap().push(line);
            }
        });
        if ready_rx.recv_timeout(Duration::from_secs(30)).is_err() {
            let _ = child.kill();
            panic!("rulehost run did not get ready: {:?}", log.lock().unwrap());
        }
        LiveAgent {
            child,
            output,
            record,
            log,
        }
    }

    /// Every finding written so far.
    pub fn findings(&self) -> Vec<Value> {
        read_json_lines(&self.output)
    }

    /// Findings about one container.
    pub fn findings_for(&self, container_id: &str) -> Vec<Value> {
        self.findings()
            .into_iter()
            .filter(|f| f["data"]["container_id"] == container_id)
            .collect()
    }

    /// Waits until `predicate` holds for some finding; returns it.
    pub fn wait_for(&self, what: &str, predicate: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + FINDING_TIMEOUT;
        loop {
            if let Some(found) = self.findings().into_iter().find(|f| predicate(f)) {
                return found;
            }
            if Instant::now() > deadline {
                panic!(
                    "no finding {what} within {FINDING_TIMEOUT:?}; findings: {:?}; log: {:?}",
                    self.findings(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the agent logged a line containing `text`.
    pub fn wait_for_log(&self, text: &str) {
        let deadline = Instant::now() + FINDING_TIMEOUT;
        while !self.log().iter().any(|l| l.contains(text)) {
            assert!(
                Instant::now() < deadline,
                "no log line with {text:?}: {:?}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Stops the agent with SIGTERM and returns its exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().unwrap()
    }
}

impl Drop for LiveAgent {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.stop();
        }
    }
}

pub fn read_json_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The cgroup v2 mount (e.g. /sys/fs/cgroup/unified here, /sys/fs/cgroup elsewhere).
pub fn cgroup_root() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    rulehost::containers::find_cgroup2_mount(&mounts).expect("a cgroup v2 mount")
}

/// A cgroup directory for a test, removed on drop (after its processes exited).
pub struct TestCgroup {
    pub path: PathBuf,
}

impl TestCgroup {
    /// `<root>/rulehost-test-<pid>.slice/<leaf>`.
    pub fn new(leaf: &str) -> TestCgroup {
        let path = cgroup_root()
            .join(format!("rulehost-test-{}.slice", std::process::id()))
            .join(leaf);
        std::fs::create_dir_all(&path).expect("create cgroup (root needed)");
        TestCgroup { path }
    }

    /// Runs `connector ARGS` inside this cgroup with `env`, waiting for it to exit.
    pub fn run(&self, env: &[(&str, &str)], args: &[&str]) {
        run_connector(Some(&self.path), env, args);
    }

    pub fn remove(&self) {
        remove_cgroup(&self.path);
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        remove_cgroup(&self.path);
        if let Some(parent) = self.path.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

fn remove_cgroup(path: &Path) {
    // rmdir fails with EBUSY while a just-exited process is still being reaped.
    for _ in 0..100 {
        if std::fs::remove_dir(path).is_ok() || !path.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The `connector` binary, built beside the test executables (target/<profile>/).
pub fn connector_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    profile_dir.join("connector")
}

/// Starts the `connector` workload inside `cgroup` without waiting for it.
pub fn spawn_connector(cgroup: &Path, env: &[(&str, &str)], args: &[&str]) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(connector_bin());
    command.args(args).env_clear().envs(env.iter().copied());
    let procs = cgroup.join("cgroup.procs");
    // SAFETY: one write between fork and exec.
    unsafe {
        command.pre_exec(move || std::fs::write(&procs, b"0"));
    }
    command.spawn().expect("spawn connector")
}

/// Runs the `connector` workload (optionally inside `cgroup`) and waits for it.
pub fn run_connector(cgroup: Option<&Path>, env: &[(&str, &str)], args: &[&str]) {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(connector_bin());
    command.args(args).env_clear().envs(env.iter().copied());
    if let Some(cgroup) = cgroup {
        let procs = cgroup.join("cgroup.procs");
        // SAFETY: one write between fork and exec.
        unsafe {
            command.pre_exec(move || std::fs::write(&procs, b"0"));
        }
    }
    let status = command.status().expect("run connector");
    assert!(status.success(), "connector {args:?} failed: {status}");
}

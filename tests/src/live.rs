//! A real `rulehost run` for the live tests, and container-like cgroups to run
//! workloads in. Everything here needs root and the real kernel (CI has both).

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{LogRecord, brief};

/// How long a test waits for something that must come (a finding, a log line, a ready
/// file): a bound for failure on a busy machine, never a readiness guess; a passing test
/// waits only as long as it takes.
pub const FINDING_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `rulehost run --output FILE`, stopped with SIGTERM on drop.
pub struct LiveAgent {
    child: Child,
    pub output: PathBuf,
    pub record: PathBuf,
    /// What the agent wrote to its `--ready-file` once attached, swept and restored.
    pub ready: Value,
    log: Arc<Mutex<Vec<String>>>,
}

impl LiveAgent {
    /// Starts the agent (with extra arguments) and waits for its ready file: probes
    /// attached, start-up sweep done, persisted state restored.
    pub fn start(name: &str, extra: &[&str]) -> LiveAgent {
        Self::start_with_env(name, extra, &[])
    }

    /// [`LiveAgent::start`] with environment variables for the agent alone (such as
    /// `RULEHOST_TEST_FORBID_HOOKS`).
    pub fn start_with_env(name: &str, extra: &[&str], env: &[(&str, &str)]) -> LiveAgent {
        let dir = std::env::temp_dir().join(format!("rulehost-live-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let output = dir.join("findings.jsonl");
        let record = dir.join("events.jsonl");
        let ready_file = dir.join("ready.json");
        for file in [&output, &record, &ready_file] {
            let _ = std::fs::remove_file(file);
        }
        let mut command = Command::new(crate::rulehost_bin());
        command
            .arg("run")
            .arg("--output")
            .arg(&output)
            .arg("--record")
            .arg(&record)
            .arg("--ready-file")
            .arg(&ready_file)
            .args(["--log-format", "json"])
            .args(extra)
            .envs(env.iter().copied());
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
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let ready = match wait_for_ready_file(&mut child, &ready_file) {
            Ok(ready) => ready,
            Err(why) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "rulehost run did not get ready: {why}; log: {}",
                    brief(&log.lock().unwrap())
                );
            }
        };
        LiveAgent {
            child,
            output,
            record,
            ready,
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
        let mut found = None;
        wait_until(
            || {
                found = self.findings().into_iter().find(|f| predicate(f));
                found.is_some()
            },
            || {
                format!(
                    "no finding {what}; findings: {}; log: {}",
                    brief(&self.findings()),
                    brief(&self.log())
                )
            },
        );
        found.expect("found")
    }

    /// Waits until the agent logged a record for which `predicate` holds; returns it.
    pub fn wait_for_log(&self, what: &str, predicate: impl Fn(&LogRecord) -> bool) -> LogRecord {
        let mut found = None;
        wait_until(
            || {
                found = self.log_records().into_iter().find(|r| predicate(r));
                found.is_some()
            },
            || format!("no log record {what}: {}", brief(&self.log())),
        );
        found.expect("found")
    }

    /// The agent's log so far, as records.
    pub fn log_records(&self) -> Vec<LogRecord> {
        crate::log_records(&self.log().join("\n"))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Stops the agent with SIGTERM and returns its exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        // SAFETY: signalling our own child (SIGCONT first, in case a test stopped it).
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGCONT);
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        self.child.wait().unwrap()
    }

    /// Freezes the agent (SIGSTOP) until the guard drops (SIGCONT): while frozen it
    /// reads nothing, so a test can fill its ring buffer for certain.
    pub fn freeze(&self) -> Frozen {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGSTOP) };
        wait_until_stopped(self.child.id());
        Frozen(self.child.id())
    }
}

/// A frozen agent; thawed (SIGCONT) on drop.
pub struct Frozen(u32);

impl Drop for Frozen {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0 as i32, libc::SIGCONT) };
    }
}

/// Polls `done` until it holds; past [`FINDING_TIMEOUT`] panics with `failure()`. For
/// things that must happen: a failure bound for a busy machine, never a readiness guess.
pub fn wait_until(mut done: impl FnMut() -> bool, failure: impl FnOnce() -> String) {
    let deadline = Instant::now() + FINDING_TIMEOUT;
    while !done() {
        if Instant::now() > deadline {
            panic!("within {FINDING_TIMEOUT:?}: {}", failure());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until every thread of `pid` is in the stopped state (`T` in /proc).
fn wait_until_stopped(pid: u32) {
    let stopped = || {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return false;
        };
        tasks.flatten().all(|task| {
            std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
                // The state follows the parenthesised comm.
                stat.rsplit_once(") ")
                    .is_some_and(|(_, rest)| rest.starts_with('T') || rest.starts_with('t'))
            })
        })
    };
    wait_until(stopped, || format!("pid {pid} did not stop"));
}

/// Waits for the agent's ready file; an error if the agent exits or time runs out.
pub fn wait_for_ready_file(child: &mut Child, path: &Path) -> Result<Value, String> {
    let deadline = Instant::now() + FINDING_TIMEOUT;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return serde_json::from_str(&text).map_err(|e| format!("bad ready file: {e}"));
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("it exited ({status})"));
        }
        if Instant::now() > deadline {
            return Err(format!("no ready file within {FINDING_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
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
    rulehost::sys::mounts::cgroup2_root().expect("a cgroup v2 mount")
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

    /// Runs `connector ARGS` inside this cgroup with `env`, waiting for it to exit;
    /// returns its pid.
    pub fn run(&self, env: &[(&str, &str)], args: &[&str]) -> u32 {
        run_connector(Some(&self.path), env, args)
    }

    /// As [`TestCgroup::run`], executing `program` (the connector under another name,
    /// through a symlink, has that name as its command name).
    pub fn run_as(&self, program: &Path, env: &[(&str, &str)], args: &[&str]) -> u32 {
        run_program(program, Some(&self.path), env, args)
    }

    pub fn remove(&self) {
        remove_cgroup(&self.path);
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Do not turn one failure into a double panic.
            let _ = std::fs::remove_dir(&self.path);
        } else {
            remove_cgroup(&self.path);
        }
        if let Some(parent) = self.path.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

fn remove_cgroup(path: &Path) {
    // rmdir fails with EBUSY while a just-exited process is still being reaped.
    let deadline = Instant::now() + FINDING_TIMEOUT;
    loop {
        match std::fs::remove_dir(path) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) if Instant::now() > deadline => {
                panic!("cannot remove cgroup {}: {e}", path.display())
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// The `connector` binary, built beside the test executables (target/<profile>/).
pub fn connector_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    profile_dir.join("connector")
}

/// A `connector wait ADDR` inside a cgroup: exec'd now, connecting only when released.
pub struct HeldConnector {
    child: std::process::Child,
}

impl HeldConnector {
    /// Starts it in `cgroup` with `env`; it execs at once and then waits.
    pub fn start(cgroup: &Path, env: &[(&str, &str)], address: &str) -> HeldConnector {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(connector_bin());
        command
            .args(["wait", address])
            .env_clear()
            .envs(env.iter().copied())
            .stdin(Stdio::piped());
        let procs = cgroup.join("cgroup.procs");
        // SAFETY: one write between fork and exec.
        unsafe {
            command.pre_exec(move || std::fs::write(&procs, b"0"));
        }
        HeldConnector {
            child: command.spawn().expect("spawn connector"),
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets it connect, and waits for it to exit.
    pub fn release(mut self) {
        use std::io::Write;
        let mut stdin = self.child.stdin.take().unwrap();
        stdin.write_all(b"go\n").unwrap();
        drop(stdin);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "connector wait failed: {status}");
    }
}

impl Drop for HeldConnector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the `connector` workload (optionally inside `cgroup`) and waits for it.
pub fn run_connector(cgroup: Option<&Path>, env: &[(&str, &str)], args: &[&str]) -> u32 {
    run_program(&connector_bin(), cgroup, env, args)
}

fn run_program(program: &Path, cgroup: Option<&Path>, env: &[(&str, &str)], args: &[&str]) -> u32 {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(program);
    command.args(args).env_clear().envs(env.iter().copied());
    if let Some(cgroup) = cgroup {
        let procs = cgroup.join("cgroup.procs");
        // SAFETY: one write between fork and exec.
        unsafe {
            command.pre_exec(move || std::fs::write(&procs, b"0"));
        }
    }
    let mut child = command.spawn().expect("run connector");
    let pid = child.id();
    let status = child.wait().expect("wait for the connector");
    assert!(status.success(), "connector {args:?} failed: {status}");
    pid
}

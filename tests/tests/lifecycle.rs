//! The agent's lifecycle on the real kernel: the start-up sweep finds containers that
//! were running before it, kernel drops reach the findings stream, `run --check`
//! validates without attaching, and a second SIGTERM ends a stuck shutdown.

use rulehost_tests::brief;
use rulehost_tests::live::FINDING_TIMEOUT;
use rulehost_tests::live::{HeldConnector, LiveAgent, TestCgroup};
use rulehost_tests::{rulehost_bin, trigger_id};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const KSH: &str = "KUBERNETES_SERVICE_HOST";

/// A loopback port nobody listens on: a burst of connects to it is refused at once
/// (a listener's backlog would stall them), and each still passes the connect hooks.
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_container_started_before_the_host_is_detected_by_the_sweep() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let id = trigger_id(60);
    let cgroup = TestCgroup::new(&format!("cri-containerd-{id}.scope"));
    // Execs before the agent exists; connects (without any exec) only once it is ready.
    let workload = HeldConnector::start(
        &cgroup.path,
        &[(KSH, "127.0.0.1")],
        &format!("127.0.0.1:{port}"),
    );
    let agent = LiveAgent::start("sweep", &[]);
    assert!(
        agent.ready["swept_containers"].as_u64().unwrap() >= 1,
        "the sweep found the running container: {}",
        agent.ready
    );
    workload.release();
    let finding = agent.wait_for("from the pre-existing container", |f| {
        f["data"]["container_id"] == id.as_str()
    });
    assert_eq!(finding["data"]["ip"], "127.0.0.1");
    let recorded = rulehost_tests::live::read_json_lines(&agent.record);
    assert!(
        recorded.iter().any(|e| e["type"] == "process_exec"
            && e["synthetic"] == true
            && e["container"]["id"] == id.as_str()),
        "the sweep's exec is recorded, marked synthetic ({} events recorded)",
        recorded.len()
    );
}

#[test]
fn kernel_drops_are_counted_and_reported_in_the_findings_stream() {
    let port = closed_port();
    // A 16 KiB ring holds about 170 connect records.
    let agent = LiveAgent::start("drops", &["--ring-buffer-kib", "16"]);
    let id = trigger_id(61);
    let cgroup = TestCgroup::new(&format!("cri-containerd-{id}.scope"));
    {
        // Frozen, the agent reads nothing: a burst of 2,000 connects overflows the
        // ring for certain.
        let _frozen = agent.freeze();
        cgroup.run(
            &[(KSH, "127.0.0.1")],
            &["burst", "2000", &format!("127.0.0.1:{port}")],
        );
    }
    let health = agent.wait_for("health record", |f| f["type"] == "health");
    assert_eq!(health["reason"], "kernel_drops");
    assert!(health["dropped"].as_u64().unwrap() > 0, "{health}");
    assert!(health["dropped_connect"].as_u64().unwrap() > 0, "{health}");
    // What fitted in the ring before it overflowed was still delivered.
    let delivered = agent.wait_for("a finding from the burst", |f| {
        f["data"]["container_id"] == id.as_str()
    });
    assert_eq!(delivered["data"]["ip"], "127.0.0.1");
}

#[test]
fn check_validates_without_attaching() {
    let out = Command::new(rulehost_bin())
        .args(["run", "--check", "--log-format", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("rule k8s_api_connection: TRC-1013 v0.1.0"),
        "{stdout}"
    );
    assert!(
        stdout.contains("kernel BTF:") && stdout.contains("cgroup v2:"),
        "{stdout}"
    );
    assert!(stdout.trim_end().ends_with("check passed"), "{stdout}");
    let logs = rulehost_tests::log_records(&String::from_utf8_lossy(&out.stderr));
    assert!(
        logs.iter().all(|r| r.message() != "ready"),
        "nothing attached: {}",
        brief(&logs)
    );
    // A bad rule fails the check with one line naming it.
    let out = Command::new(rulehost_bin())
        .args(["run", "--check", "--rule", "/nonexistent.wasm"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot load rule /nonexistent.wasm"));
}

#[test]
fn without_privileges_run_says_what_is_missing_in_one_line() {
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(rulehost_bin())
        .args(["run", "--cache-dir", "/nonexistent/cache"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert_eq!(
        errors.len(),
        1,
        "{}",
        brief(&stderr.lines().collect::<Vec<_>>())
    );
    assert!(errors[0].contains("CAP_BPF"), "{}", errors[0]);
}

#[test]
fn a_second_sigterm_ends_a_blocked_shutdown_at_once() {
    use std::os::fd::AsRawFd;
    let port = closed_port();
    let dir = std::env::temp_dir().join(format!("rulehost-blocked-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ready_file = dir.join("ready.json");
    let _ = std::fs::remove_file(&ready_file);
    // Findings go to a pipe nobody reads: once it is full, writes block.
    let mut agent = Command::new(rulehost_bin())
        .args(["run", "--no-state-dir", "--ready-file"])
        .arg(&ready_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = agent.stdout.take().unwrap();
    // SAFETY: shrinking our own pipe to one page (the kernel's minimum).
    unsafe { libc::fcntl(stdout.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };
    let deadline = Instant::now() + FINDING_TIMEOUT;
    while !ready_file.exists() {
        assert!(agent.try_wait().unwrap().is_none(), "the agent exited");
        assert!(Instant::now() < deadline, "no ready file");
        std::thread::sleep(Duration::from_millis(10));
    }
    let id = trigger_id(62);
    let cgroup = TestCgroup::new(&format!("cri-containerd-{id}.scope"));
    // ~1 KiB per finding: 100 of them are far more than a one-page pipe holds, so the
    // agent cannot finish writing them, before or after a SIGTERM.
    cgroup.run(
        &[(KSH, "127.0.0.1")],
        &["burst", "100", &format!("127.0.0.1:{port}")],
    );
    wait_until_blocked_writing(agent.id());
    // SAFETY: signalling our own child.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    // Two SIGTERMs sent before the agent takes the first would merge into one.
    wait_until_taken(agent.id(), libc::SIGTERM);
    // The first SIGTERM asks for a drain and flush, which cannot end while the pipe is
    // full: the agent is still there, blocked in the same write.
    wait_until_blocked_writing(agent.id());
    assert!(
        agent.try_wait().unwrap().is_none(),
        "the first SIGTERM waits for the blocked flush"
    );
    let second = Instant::now();
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    let status = loop {
        if let Some(status) = agent.try_wait().unwrap() {
            break status;
        }
        assert!(
            second.elapsed() < Duration::from_secs(10),
            "a second SIGTERM ends it at once"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    drop(stdout);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{status}");
}

/// Waits until `signal` is no longer pending for process `pid` (its signal thread took
/// it), from the process-wide pending mask in /proc.
fn wait_until_taken(pid: u32, signal: i32) {
    let deadline = Instant::now() + FINDING_TIMEOUT;
    let pending = || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("ShdPnd:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .is_some_and(|mask| mask & (1 << (signal - 1)) != 0)
    };
    while pending() {
        assert!(Instant::now() < deadline, "signal {signal} never taken");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until some thread of `pid` sleeps in a pipe write (its kernel wait channel).
fn wait_until_blocked_writing(pid: u32) {
    let deadline = Instant::now() + FINDING_TIMEOUT;
    let blocked = || {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|task| {
                std::fs::read_to_string(task.path().join("wchan"))
                    .is_ok_and(|wchan| wchan.contains("pipe_write"))
            })
    };
    while !blocked() {
        assert!(
            Instant::now() < deadline,
            "the agent never blocked writing to its stdout pipe"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn an_oversized_env_is_captured_bounded_and_marked() {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::process::CommandExt;
    let agent = LiveAgent::start("truncation", &[]);
    let id = trigger_id(63);
    let cgroup = TestCgroup::new(&format!("cri-containerd-{id}.scope"));
    let long_value = "1".repeat(400);
    let procs = cgroup.path.join("cgroup.procs");
    let mut command = Command::new(rulehost_tests::live::connector_bin());
    command.arg("none").env_clear().env(KSH, &long_value).env(
        std::ffi::OsStr::from_bytes(b"KUBERNETES_SERVICE_PORT"),
        std::ffi::OsStr::from_bytes(b"\xff\xfe443"),
    );
    // SAFETY: one write between fork and exec.
    unsafe { command.pre_exec(move || std::fs::write(&procs, b"0")) };
    assert!(command.status().unwrap().success());
    // A connect afterwards proves the exec was processed before we look at the record.
    cgroup.run(&[(KSH, "127.0.0.1")], &["tcp", "127.0.0.1:9"]);
    agent.wait_for("marker", |f| f["data"]["container_id"] == id.as_str());
    let recorded = rulehost_tests::live::read_json_lines(&agent.record);
    let exec = recorded
        .iter()
        .find(|e| {
            e["type"] == "process_exec"
                && e["container"]["id"] == id.as_str()
                && e["argv"][1] == "none"
        })
        .expect("the exec with the oversized env is recorded");
    let env = exec["env"].as_array().unwrap();
    assert_eq!(
        env.len(),
        1,
        "only the wanted name is captured: {}",
        brief(env)
    );
    let captured = env[0].as_str().unwrap();
    assert!(
        captured.starts_with("KUBERNETES_SERVICE_HOST=111") && captured.len() < 400,
        "{captured}"
    );
    assert_eq!(exec["truncated"]["env"], true, "{exec}");
}

#[test]
fn detection_survives_kill_9_of_the_host() {
    let state = std::env::temp_dir().join(format!("rulehost-kill9-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    let state_arg = format!("--state-dir={}", state.display());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let id = trigger_id(64);
    let cgroup = TestCgroup::new(&format!("cri-containerd-{id}.scope"));

    let mut first = LiveAgent::start("kill9-a", &[&state_arg]);
    cgroup.run(
        &[(KSH, "127.0.0.1")],
        &["tcp", &format!("127.0.0.1:{port}")],
    );
    first.wait_for("before the kill", |f| {
        f["data"]["container_id"] == id.as_str()
    });
    // The container keeps running across the restart and connects later, without exec
    // and without the variable: only the restored state can tell it is the API server.
    let workload = HeldConnector::start(&cgroup.path, &[], &format!("127.0.0.1:{port}"));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(first.pid() as i32, libc::SIGKILL) };
    first.stop();

    let second = LiveAgent::start("kill9-b", &[&state_arg]);
    let restored = &second.ready["restored"];
    assert!(
        restored["restored"].as_u64().unwrap() >= 1
            && restored["containers"].as_u64().unwrap() >= 1,
        "the container's state was restored: {restored}"
    );
    workload.release();
    let finding = second.wait_for("after the restart", |f| {
        f["data"]["container_id"] == id.as_str()
    });
    assert_eq!(finding["data"]["ip"], "127.0.0.1");
    drop(second);
    let _ = std::fs::remove_dir_all(&state);
}

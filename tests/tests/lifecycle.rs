//! The agent's lifecycle on the real kernel: the start-up sweep finds containers that
//! were running before it, kernel drops reach the findings stream, `run --check`
//! validates without attaching, and a second SIGTERM ends a stuck shutdown.

use rulehost_tests::brief;
use rulehost_tests::live::{HeldConnector, LiveAgent, TestCgroup};
use rulehost_tests::live::{wait_for_ready_file, wait_until};
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
        stdout.contains("rule k8s_api_connection: TRC-1013 v0.3.0"),
        "{stdout}"
    );
    assert!(
        stdout.contains(" ok, granted env KUBERNETES_SERVICE_HOST, ")
            && stdout.contains(" KiB, memory "),
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
    if let Err(why) = wait_for_ready_file(&mut agent, &ready_file) {
        panic!("the agent did not get ready: {why}");
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
    let pending = || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("ShdPnd:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .is_some_and(|mask| mask & (1 << (signal - 1)) != 0)
    };
    wait_until(|| !pending(), || format!("signal {signal} never taken"));
}

/// Waits until some thread of `pid` sleeps in a pipe write (its kernel wait channel).
fn wait_until_blocked_writing(pid: u32) {
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
    wait_until(blocked, || {
        "the agent never blocked writing to its stdout pipe".into()
    });
}

//! The agent's lifecycle on the real kernel: the start-up sweep finds containers that
//! were running before it, kernel drops reach the findings stream, `run --check`
//! validates without attaching, and a second SIGTERM ends a stuck shutdown.

use rulehost_tests::live::{LiveAgent, TestCgroup, spawn_connector};
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
    // Execs before the agent exists, then connects (without any exec) once it runs.
    let mut workload = spawn_connector(
        &cgroup.path,
        &[(KSH, "127.0.0.1")],
        &["later", "1500", &format!("127.0.0.1:{port}")],
    );
    let agent = LiveAgent::start("sweep", &[]);
    agent.wait_for_log("start-up sweep: ");
    let finding = agent.wait_for("from the pre-existing container", |f| {
        f["data"]["container_id"] == id.as_str()
    });
    assert!(workload.wait().unwrap().success());
    assert_eq!(finding["data"]["ip"], "127.0.0.1");
    let recorded = rulehost_tests::live::read_json_lines(&agent.record);
    assert!(
        recorded.iter().any(|e| e["type"] == "process_exec"
            && e["synthetic"] == true
            && e["container"]["id"] == id.as_str()),
        "the sweep's exec is recorded, marked synthetic"
    );
}

#[test]
fn kernel_drops_are_counted_and_reported_in_the_findings_stream() {
    let port = closed_port();
    // A 16 KiB ring cannot hold a burst of thousands of connects.
    let agent = LiveAgent::start("drops", &["--ring-buffer-kib", "16"]);
    let id = trigger_id(61);
    let cgroup = TestCgroup::new(&format!("cri-containerd-{id}.scope"));
    cgroup.run(
        &[(KSH, "127.0.0.1")],
        &["burst", "20000", &format!("127.0.0.1:{port}")],
    );
    let health = agent.wait_for("health record", |f| f["type"] == "health");
    assert_eq!(health["reason"], "kernel_drops");
    assert!(health["dropped"].as_u64().unwrap() > 0);
    assert!(health["dropped_connect"].as_u64().unwrap() > 0);
    agent.wait_for_log("the kernel dropped");
}

#[test]
fn check_validates_without_attaching() {
    let out = Command::new(rulehost_bin())
        .args(["run", "--check"])
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
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("ready:"),
        "nothing attached"
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
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("rulehost: error"))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("CAP_BPF"), "{stderr}");
}

#[test]
fn a_second_sigterm_ends_a_blocked_shutdown_at_once() {
    let port = closed_port();
    // Findings go to a pipe nobody reads: once it is full, writes block.
    let mut agent = Command::new(rulehost_bin())
        .args(["run", "--no-state-dir"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = agent.stderr.take().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains("ready:") {
                let _ = ready_tx.send(());
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("agent ready");
    let id = trigger_id(62);
    let cgroup = TestCgroup::new(&format!("cri-containerd-{id}.scope"));
    // ~1 KiB per finding: 400 of them overflow a 64 KiB pipe.
    cgroup.run(
        &[(KSH, "127.0.0.1")],
        &["burst", "400", &format!("127.0.0.1:{port}")],
    );
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(agent.id() as i32, libc::SIGTERM) };
    std::thread::sleep(Duration::from_millis(200));
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
            second.elapsed() < Duration::from_secs(2),
            "a second SIGTERM ends it at once"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{status}");
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
    assert_eq!(env.len(), 1, "only the wanted name is captured: {env:?}");
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
    // The container keeps running across the restart and connects later, without exec.
    let mut workload = spawn_connector(
        &cgroup.path,
        &[],
        &["later", "3000", &format!("127.0.0.1:{port}")],
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(first.pid() as i32, libc::SIGKILL) };
    first.stop();

    let second = LiveAgent::start("kill9-b", &[&state_arg]);
    second.wait_for_log("restored 1 entry for 1 container(s)");
    let finding = second.wait_for("after the restart", |f| {
        f["data"]["container_id"] == id.as_str()
    });
    assert!(workload.wait().unwrap().success());
    assert_eq!(finding["data"]["ip"], "127.0.0.1");
    drop(second);
    let _ = std::fs::remove_dir_all(&state);
}

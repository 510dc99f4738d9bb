//! Live detection on the real kernel: `rulehost run` with its eBPF probes, processes in
//! container-like cgroups, findings read from its output. Runs as root (as CI does).

use rulehost_tests::live::{LiveAgent, TestCgroup, run_connector};
use rulehost_tests::{brief, trigger_id};
use serde_json::Value;
use std::net::TcpListener;

const KSH: &str = "KUBERNETES_SERVICE_HOST";

/// A dual-stack listener so IPv4, IPv4-mapped and IPv6 connects all succeed.
fn listener() -> (TcpListener, u16) {
    let listener = TcpListener::bind("[::]:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

fn port_of(finding: &Value) -> u64 {
    finding["data"]["port"].as_u64().unwrap()
}

#[test]
fn container_connect_to_its_api_server_gives_exactly_one_finding() {
    let agent = LiveAgent::start("basic", &[]);
    let (_l, port) = listener();
    let id = trigger_id(1);
    let cgroup = TestCgroup::new(&format!("cri-containerd-{id}.scope"));
    // The process declares 127.0.0.1 and connects elsewhere first, then to it.
    cgroup.run(
        &[(KSH, "127.0.0.1")],
        &["tcp", &format!("127.0.0.2:{port}")],
    );
    cgroup.run(&[], &["tcp", &format!("127.0.0.1:{port}")]);
    let finding = agent.wait_for("for the containerd container", |f| {
        f["data"]["container_id"] == id.as_str()
    });
    assert_eq!(finding["data"]["ip"], "127.0.0.1");
    assert_eq!(port_of(&finding), u64::from(port));
    assert_eq!(finding["data"]["comm"], "connector");
    assert_eq!(finding["event"]["container"]["runtime"], "containerd");
    assert_eq!(finding["signature"]["id"], "TRC-1013");
    // A marker connect proves later events were processed before counting.
    cgroup.run(&[], &["tcp", &format!("127.0.0.1:{}", port)]);
    agent.wait_for("second", |f| {
        agent.findings_for(&id).len() >= 2 && f["data"]["container_id"] == id.as_str()
    });
    let all = agent.findings_for(&id);
    assert_eq!(
        all.len(),
        2,
        "one finding per matching connect, none for 127.0.0.2: {}",
        brief(&all)
    );
    assert!(all.iter().all(|f| f["data"]["ip"] == "127.0.0.1"));
}

/// The JavaScript and Python builds of TRC-1013 in the live agent, alone: the same
/// scenario, the same finding, named by their own rule file.
#[test]
fn the_javascript_and_python_rules_detect_live() {
    for (n, (language, file)) in rulehost_tests::k8s_rule_files()
        .into_iter()
        .enumerate()
        .skip(1)
    {
        let agent = LiveAgent::start(
            &format!("lang-{language}"),
            &["--rule", file.to_str().unwrap()],
        );
        let (_l, port) = listener();
        let id = trigger_id(40 + n as u8);
        let cgroup = TestCgroup::new(&format!("cri-containerd-{id}.scope"));
        cgroup.run(
            &[(KSH, "127.0.0.1")],
            &["tcp", &format!("127.0.0.2:{port}")],
        );
        cgroup.run(&[], &["tcp", &format!("127.0.0.1:{port}")]);
        let finding = agent.wait_for(language, |f| f["data"]["container_id"] == id.as_str());
        assert_eq!(finding["data"]["ip"], "127.0.0.1", "{language}");
        assert_eq!(port_of(&finding), u64::from(port), "{language}");
        assert_eq!(finding["data"]["comm"], "connector", "{language}");
        assert_eq!(finding["signature"]["id"], "TRC-1013", "{language}");
        assert_eq!(
            finding["rule"]["name"],
            file.file_stem().unwrap().to_str().unwrap(),
            "{language}"
        );
        // A marker connect proves the first one (to 127.0.0.2) was processed.
        cgroup.run(&[], &["tcp", &format!("127.0.0.1:{port}")]);
        agent.wait_for("second", |f| {
            agent.findings_for(&id).len() >= 2 && f["data"]["container_id"] == id.as_str()
        });
        let all = agent.findings_for(&id);
        assert_eq!(all.len(), 2, "{language}: {}", brief(&all));
    }
}

#[test]
fn host_processes_and_plain_cgroups_give_none() {
    let agent = LiveAgent::start("negative", &[]);
    let (_l, port) = listener();
    let target = format!("127.0.0.1:{port}");
    // A host process with the same env.
    run_connector(None, &[(KSH, "127.0.0.1")], &["tcp", &target]);
    // A process in a cgroup that is no container's.
    let plain = TestCgroup::new("plain-service.scope");
    plain.run(&[(KSH, "127.0.0.1")], &["tcp", &target]);
    // Positive control afterwards, so the negatives were certainly processed.
    let id = trigger_id(2);
    let container = TestCgroup::new(&format!("docker-{id}.scope"));
    container.run(&[(KSH, "127.0.0.1")], &["tcp", &target]);
    let finding = agent.wait_for("for the docker container", |f| {
        f["data"]["container_id"] == id.as_str()
    });
    assert_eq!(finding["event"]["container"]["runtime"], "docker");
    // The agent sees the whole node (other tests run in parallel): count this test's
    // connects, by the port only this test's listener has.
    let ours: Vec<_> = agent
        .findings()
        .into_iter()
        .filter(|f| f["data"]["port"] == u64::from(port))
        .collect();
    assert_eq!(
        ours.len(),
        1,
        "only the container's connect: {}",
        brief(&ours)
    );
}

#[test]
fn mapped_ipv6_io_uring_and_fast_open_connects_are_detected() {
    let agent = LiveAgent::start("paths", &[]);
    let (_l, port) = listener();
    let id = trigger_id(3);
    let cgroup = TestCgroup::new(&format!("crio-{id}.scope"));
    cgroup.run(&[(KSH, "127.0.0.1")], &["none"]);
    cgroup.run(&[], &["tcp", &format!("[::ffff:127.0.0.1]:{port}")]);
    cgroup.run(&[], &["uring", &format!("127.0.0.1:{port}")]);
    cgroup.run(&[], &["tfo", &format!("127.0.0.1:{port}")]);
    agent.wait_for("three", |_| agent.findings_for(&id).len() >= 3);
    let found = agent.findings_for(&id);
    assert_eq!(found.len(), 3, "{}", brief(&found));
    for finding in &found {
        assert_eq!(finding["data"]["ip"], "127.0.0.1");
        assert_eq!(port_of(finding), u64::from(port));
        assert_eq!(finding["event"]["container"]["runtime"], "crio");
    }
    assert_eq!(found[0]["event"]["address"]["family"], "ipv6");
}

#[test]
fn env_of_a_process_that_execs_and_exits_at_once_is_captured() {
    let agent = LiveAgent::start("short", &[]);
    let (_l, port) = listener();
    let id = trigger_id(4);
    let cgroup = TestCgroup::new(&format!("cri-containerd-{id}.scope"));
    // `none` execs and exits immediately: only an in-kernel capture sees its env.
    cgroup.run(&[(KSH, "127.0.0.1")], &["none"]);
    // A different process, without the variable, then connects.
    cgroup.run(&[], &["tcp", &format!("127.0.0.1:{port}")]);
    agent.wait_for("after a short-lived exec", |f| {
        f["data"]["container_id"] == id.as_str()
    });
    let recorded = rulehost_tests::live::read_json_lines(&agent.record);
    assert!(
        recorded.iter().any(|e| e["type"] == "process_exec"
            && e["env"]
                .as_array()
                .is_some_and(|env| env.iter().any(|v| v == "KUBERNETES_SERVICE_HOST=127.0.0.1"))),
        "--record holds the exec with its captured env"
    );
}

#[test]
fn state_is_evicted_when_the_cgroup_is_removed() {
    let agent = LiveAgent::start("evict", &[]);
    let (_l, port) = listener();
    let id = trigger_id(5);
    let leaf = format!("cri-containerd-{id}.scope");
    let first = TestCgroup::new(&leaf);
    first.run(
        &[(KSH, "127.0.0.1")],
        &["tcp", &format!("127.0.0.1:{port}")],
    );
    agent.wait_for("before removal", |f| {
        f["data"]["container_id"] == id.as_str()
    });
    // The ring buffer keeps the kernel's order: the agent sees this removal before
    // anything that happens in the new cgroup below.
    first.remove();
    // Same container id, new cgroup: nothing remembered, so no finding without a new exec.
    let again = TestCgroup::new(&leaf);
    again.run(&[], &["tcp", &format!("127.0.0.1:{port}")]);
    // Positive control: a declaring exec now gives a finding again.
    again.run(
        &[(KSH, "127.0.0.1")],
        &["tcp", &format!("127.0.0.1:{port}")],
    );
    agent.wait_for("after a new exec", |_| agent.findings_for(&id).len() >= 2);
    assert_eq!(
        agent.findings_for(&id).len(),
        2,
        "the connect without exec after eviction gave none"
    );
}

#[test]
fn trigger_command_shows_the_finding() {
    let output = std::process::Command::new(rulehost_tests::rulehost_bin())
        .args(["trigger", "k8s-api-connection", "--timeout-secs", "60"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let finding: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(finding["signature"]["event_name"], "k8s_api_connection");
    assert_eq!(finding["data"]["ip"], "127.0.0.1");
    assert_eq!(finding["event"]["container"]["runtime"], "containerd");
}

#[test]
fn replaying_the_recording_gives_the_same_findings() {
    let mut agent = LiveAgent::start("record", &[]);
    let (_l, port) = listener();
    let id = trigger_id(6);
    let cgroup = TestCgroup::new(&format!("cri-containerd-{id}.scope"));
    cgroup.run(
        &[(KSH, "127.0.0.1")],
        &["tcp", &format!("127.0.0.1:{port}")],
    );
    agent.wait_for("live", |f| f["data"]["container_id"] == id.as_str());
    assert!(agent.stop().success(), "clean exit on SIGTERM");
    let replay = std::process::Command::new(rulehost_tests::rulehost_bin())
        .arg("replay")
        .arg(&agent.record)
        .output()
        .unwrap();
    let replayed: Vec<Value> = String::from_utf8_lossy(&replay.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|f: &Value| f["data"]["container_id"] == id.as_str())
        .collect();
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0]["data"], agent.findings_for(&id)[0]["data"]);
}

//! What must hold on every kernel a node runs (`make test-kernels` boots Debian's 5.10,
//! 6.1 and 6.12 and runs this file inside each; `make test` runs it on this machine's
//! kernel): TRC-1013's cases through each connect hook the kernel offers, each made the
//! best one by forbidding the better ones (`RULEHOST_TEST_FORBID_HOOKS`):
//! - a container process connecting to the address its `KUBERNETES_SERVICE_HOST`
//!   declares (the env captured at exec, in the kernel or from /proc), also as an
//!   IPv4-mapped IPv6 address, through io_uring and as a TCP Fast Open sendto;
//! - one connecting to a known endpoint (`--api-server`) with no env;
//! - one that left its container's cgroup (moved to the root cgroup) and connects;
//! - one connecting elsewhere: never reported.
//!
//! And, once per kernel, a container started before the agent (the start-up sweep) and
//! the env captured with the in-kernel walk forbidden (the `/proc` fallback, with its
//! unmet need reported and `run --check` refusing).

use rulehost_tests::live::*;
use rulehost_tests::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::TcpListener;
use std::process::Command;

const KSH: &str = "KUBERNETES_SERVICE_HOST";

/// A listener on 127.0.0.1; connects to it succeed.
fn listener() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

/// The agent's compile cache, shared by this file's agents so the rule is compiled once
/// (slow under emulation).
fn cache_dir() -> String {
    let dir = std::env::temp_dir().join(format!("rulehost-kernels-cache-{}", std::process::id()));
    dir.to_string_lossy().into_owned()
}

/// Arguments for every agent here: the compile cache, and the emulation budgets (this
/// file tests the kernel's hooks, here and in the matrix's VMs).
fn agent_args(cache: &str) -> Vec<&str> {
    let mut args = vec!["--cache-dir", cache];
    args.extend(rulehost_tests::EMULATION_BUDGETS);
    args
}

#[test]
fn detection_holds_through_every_connect_hook_this_kernel_offers() {
    let (_api, api_port) = listener();
    let (_known, known_port) = listener();
    let known = format!("127.0.0.1:{known_port}");
    let cache = cache_dir();
    let mut hooks_seen = BTreeSet::new();
    for (round, forbid) in ["", "lsm", "lsm,fentry"].into_iter().enumerate() {
        let mut args = agent_args(&cache);
        args.extend(["--api-server", &known]);
        let agent = LiveAgent::start_with_env(
            &format!("kernels-{round}"),
            &args,
            &[("RULEHOST_TEST_FORBID_HOOKS", forbid)],
        );
        let hook = agent.ready["connect_hook"].as_str().unwrap().to_owned();
        eprintln!("forbidding {forbid:?}: {}", agent.ready);
        if !hooks_seen.insert(hook.clone()) {
            // This kernel lacks the forbidden hook anyway: already covered.
            continue;
        }
        assert_eq!(
            agent.ready["unmet"],
            Value::Array(vec![]),
            "{}",
            agent.ready
        );
        let tag = 0x40 + round as u8 * 8;
        detects_env_declared_known_endpoint_and_escape(&agent, tag, api_port, known_port, &hook);
    }
    eprintln!("connect hooks exercised: {hooks_seen:?}");
    assert!(
        hooks_seen.contains("cgroup/connect4+connect6"),
        "the cgroup hooks always run: {hooks_seen:?}"
    );
}

/// The four TRC-1013 cases against one agent; `tag` makes its container ids unique.
fn detects_env_declared_known_endpoint_and_escape(
    agent: &LiveAgent,
    tag: u8,
    api_port: u16,
    known_port: u16,
    hook: &str,
) {
    // Env-declared: the address in KUBERNETES_SERVICE_HOST, captured at exec.
    let declared = trigger_id(tag);
    let cgroup = TestCgroup::new(&format!("cri-containerd-{declared}.scope"));
    cgroup.run(
        &[(KSH, "127.0.0.1")],
        &["tcp", &format!("127.0.0.1:{api_port}")],
    );
    let finding = agent.wait_for(&format!("{hook}: env-declared"), |f| {
        f["data"]["container_id"] == declared.as_str()
    });
    assert_eq!(finding["data"]["port"], u64::from(api_port), "{hook}");
    // Evasions: the same address as IPv4-mapped IPv6, through io_uring, and as a TCP
    // Fast Open sendto.
    cgroup.run(&[], &["tcp", &format!("[::ffff:127.0.0.1]:{api_port}")]);
    cgroup.run(&[], &["uring", &format!("127.0.0.1:{api_port}")]);
    cgroup.run(&[], &["tfo", &format!("127.0.0.1:{api_port}")]);
    agent.wait_for(&format!("{hook}: the three evasions"), |_| {
        agent.findings_for(&declared).len() >= 4
    });
    let families: Vec<Value> = agent
        .findings_for(&declared)
        .iter()
        .map(|f| f["event"]["address"]["family"].clone())
        .collect();
    assert_eq!(families, ["ipv4", "ipv6", "ipv4", "ipv4"], "{hook}");

    // Elsewhere, then the known endpoint from the same container (no env): the second
    // finding fences the first connect, which must have given none.
    let plain = trigger_id(tag + 1);
    let cgroup = TestCgroup::new(&format!("cri-containerd-{plain}.scope"));
    cgroup.run(&[], &["tcp", &format!("127.0.0.9:{api_port}")]);
    cgroup.run(&[], &["tcp", &format!("127.0.0.1:{known_port}")]);
    agent.wait_for(&format!("{hook}: known endpoint"), |f| {
        f["data"]["container_id"] == plain.as_str()
    });
    let elsewhere: Vec<Value> = agent
        .findings()
        .into_iter()
        .filter(|f| f["data"]["ip"] == "127.0.0.9")
        .collect();
    assert!(elsewhere.is_empty(), "{hook}: {}", brief(&elsewhere));

    // Escape: exec'd in the container with the address declared, moved to the root
    // cgroup, then connects.
    let escaper = trigger_id(tag + 2);
    let cgroup = TestCgroup::new(&format!("cri-containerd-{escaper}.scope"));
    let held = HeldConnector::start(
        &cgroup.path,
        &[(KSH, "127.0.0.1")],
        &format!("127.0.0.1:{api_port}"),
    );
    std::fs::write(cgroup_root().join("cgroup.procs"), held.pid().to_string())
        .expect("moving the process to the root cgroup");
    held.release();
    let escaped = agent.wait_for(&format!("{hook}: after leaving the cgroup"), |f| {
        f["data"]["container_id"] == escaper.as_str()
    });
    assert_eq!(
        escaped["event"]["process"]["left_container_cgroup"], true,
        "{hook}: {}",
        escaped["event"]
    );
}

#[test]
fn without_an_env_walk_env_comes_from_proc_and_the_unmet_need_is_reported() {
    let forbid = [("RULEHOST_TEST_FORBID_HOOKS", "env_walk")];
    let check = Command::new(rulehost_bin())
        .args(["run", "--check"])
        .envs(forbid)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(!check.status.success(), "check passed without env capture");
    assert!(
        stderr.contains("rule TRC-1013 needs env capture at exec")
            && stderr.contains("env_walk forbidden"),
        "{stderr}"
    );

    let (_api, port) = listener();
    let id = trigger_id(0x70);
    let cgroup = TestCgroup::new(&format!("cri-containerd-{id}.scope"));
    // Started before the agent: the sweep reads its env; it connects once released.
    let swept = HeldConnector::start(
        &cgroup.path,
        &[(KSH, "127.0.0.1")],
        &format!("127.0.0.1:{port}"),
    );
    let cache = cache_dir();
    let mut args = agent_args(&cache);
    args.extend(["--listen", "127.0.0.1:0"]);
    let agent = LiveAgent::start_with_env("kernels-proc", &args, &forbid);
    assert_eq!(agent.ready["env_capture"], "proc", "{}", agent.ready);
    rulehost::install_tls_provider();
    let metrics = format!("http://{}/metrics", agent.ready["listen"].as_str().unwrap());
    let scrape = reqwest::blocking::get(metrics)
        .and_then(|r| r.text())
        .expect("GET /metrics");
    let unmet: Vec<&str> = scrape
        .lines()
        .filter(|l| l.starts_with("rulehost_unmet_needs{"))
        .collect();
    assert_eq!(
        unmet,
        ["rulehost_unmet_needs{rule=\"TRC-1013\",need=\"env capture at exec\"} 1"],
        "the metric's series"
    );
    assert_eq!(
        agent.ready["unmet"][0]["rule"], "TRC-1013",
        "{}",
        agent.ready
    );
    assert!(
        agent.ready["swept_containers"].as_u64() >= Some(1),
        "{}",
        agent.ready
    );
    agent.wait_for_log("the unmet need's WARN", |r| {
        r.level() == "WARN" && r.message() == "the kernel cannot meet a rule's need"
    });
    swept.release();
    agent.wait_for("the swept container's connect", |f| {
        f["data"]["container_id"] == id.as_str()
    });

    // Exec'd while the agent runs: its env read from /proc (it waits, so it is there).
    let late = trigger_id(0x71);
    let cgroup = TestCgroup::new(&format!("cri-containerd-{late}.scope"));
    let held = HeldConnector::start(
        &cgroup.path,
        &[(KSH, "127.0.0.1")],
        &format!("127.0.0.1:{port}"),
    );
    wait_until(
        || {
            read_json_lines(&agent.record)
                .iter()
                .any(|e| e["process"]["pid"] == held.pid() && e["type"] == "process_exec")
        },
        || "the held connector's exec was not recorded".to_owned(),
    );
    held.release();
    let finding = agent.wait_for("the connect declared through /proc", |f| {
        f["data"]["container_id"] == late.as_str()
    });
    assert_eq!(finding["data"]["ip"], "127.0.0.1");
    let exec = read_json_lines(&agent.record)
        .into_iter()
        .find(|e| e["type"] == "process_exec" && e["container"]["id"] == late.as_str())
        .expect("the exec is recorded");
    assert_eq!(exec["truncated"]["env_from_proc"], true, "{exec}");
}

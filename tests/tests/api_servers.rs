//! Known API server endpoints (issue: detection an attacker cannot step around): the
//! k8s rule reads them through the world's `cluster` import (0.1.1), so a connect to an
//! endpoint is a finding with or without an env declaration; the same address on
//! another port is not; a rule built for world 0.1.0 still loads and runs. In-process
//! with the real wasm rule; then live, with real Docker containers connecting to the
//! agent's `--api-server` and its kubelet kubeconfig's endpoint, with and without a
//! ClusterIP in their env; and an EndpointSlices watch that changes while the agent runs.

use rulehost::dispatch::Dispatcher;
use rulehost::rules::{Limits, RuleEngine};
use rulehost_tests::apiserver::FakeApiServer;
use rulehost_tests::docker::{Dockerd, IMAGE, closing_listener};
use rulehost_tests::live::{LiveAgent, TestCgroup, wait_until};
use rulehost_tests::*;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

const CLUSTER_IP: &str = "KUBERNETES_SERVICE_HOST=10.96.0.1";

/// The shipped k8s rule on a host that knows `endpoints`; the engine, to change them.
fn host_knowing(endpoints: &[&str], rule: PathBuf) -> (Dispatcher, Arc<RuleEngine>) {
    let runtime = Arc::new(RuleEngine::new(Limits::default()).expect("runtime"));
    runtime.set_api_servers(endpoints.iter().map(|e| e.parse().unwrap()).collect());
    let mut host = Dispatcher::new(runtime.clone());
    for rule in rulehost::sources::load_all(&runtime, &[rule]).expect("rule loads") {
        host.add(rule).expect("add rule");
    }
    (host, runtime)
}

fn ports(findings: &[rulehost::sinks::Finding]) -> Vec<u64> {
    findings
        .iter()
        .map(|f| f.data()["port"].as_u64().unwrap())
        .collect()
}

#[test]
fn a_known_endpoint_is_detected_with_or_without_an_env_declaration() {
    let (mut host, runtime) = host_knowing(&["192.0.2.10:6443"], k8s_rule_file());
    let (quiet, declared) = (container(80), container(81));
    let findings = run(
        &mut host,
        vec![
            // No env declaration at all.
            connect(quiet.clone(), "192.0.2.10", 6443),
            // The kubelet on the same address: not the API server.
            connect(quiet.clone(), "192.0.2.10", 10250),
            // Declares only the ClusterIP, connects straight to the endpoint.
            exec(declared.clone(), &[CLUSTER_IP]),
            connect(declared.clone(), "192.0.2.10", 6443),
            // The declared ClusterIP still matches, on any port (as Tracee's).
            connect(declared.clone(), "10.96.0.1", 443),
            // A host process is out of scope.
            connect(None, "192.0.2.10", 6443),
        ],
    );
    assert_eq!(
        ports(&findings),
        vec![6443, 6443, 443],
        "{}",
        brief(&findings)
    );

    // The endpoints change while the rule runs: the next batch sees the new set.
    runtime.set_api_servers(vec!["192.0.2.11:6443".parse::<SocketAddr>().unwrap()]);
    let findings = run(
        &mut host,
        vec![
            connect(quiet.clone(), "192.0.2.10", 6443),
            connect(quiet, "192.0.2.11", 6443),
        ],
    );
    assert_eq!(findings.len(), 1, "{}", brief(&findings));
    assert_eq!(findings[0].data()["ip"], "192.0.2.11");
}

#[test]
fn a_rule_built_for_world_0_1_0_loads_and_runs_unchanged() {
    // Committed as built by rulehost 0.1.0 (before the `cluster` interface existed).
    let old = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/world-0.1.0/k8s_api_connection.wasm");
    let (mut host, _) = host_knowing(&["192.0.2.10:6443"], old.clone());
    let rule = host.rules().next().unwrap().clone();
    assert!(
        rule.imports.iter().all(|i| i.ends_with("@0.1.0")),
        "{:?}",
        rule.imports
    );
    // It has no `packed` export: it is given typed batches.
    assert!(rule.packed.is_none());
    let c = container(82);
    let findings = run(
        &mut host,
        vec![
            exec(c.clone(), &[CLUSTER_IP]),
            connect(c.clone(), "10.96.0.1", 443),
            // It cannot know endpoints: no finding, and no failure either.
            connect(c, "192.0.2.10", 6443),
        ],
    );
    assert_eq!(ports(&findings), vec![443], "{}", brief(&findings));
    assert_eq!(host.counters.rule_faults, 0);
}

#[test]
fn live_endpoints_from_a_flag_and_the_kubelet_kubeconfig_are_detected_from_docker_containers() {
    let mut dockerd = Dockerd::start("endpoints");
    // Each accepts and closes, so every `nc` exits at once.
    let flagged_port = closing_listener("127.0.0.1");
    let kube_port = closing_listener("127.0.0.3");
    let kubelet_port = closing_listener("127.0.0.1");
    let dir = std::env::temp_dir().join(format!("rulehost-endpoints-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubelet.conf");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: default\n  cluster:\n    server: https://127.0.0.3:{kube_port}\n"
        ),
    )
    .unwrap();
    let socket = dockerd.socket.to_str().unwrap().to_owned();
    let mut agent = LiveAgent::start(
        "endpoints",
        &[
            "--api-server",
            &format!("127.0.0.1:{flagged_port}"),
            "--kubelet-kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--docker-socket",
            &socket,
        ],
    );
    // One container per case, each connecting once with busybox nc; each has exited
    // before the next starts, so their findings come in this order.
    let mut run = |name: &str, env: &[&str], address: &str, port: u16| {
        let mut args = vec!["--name", name];
        for entry in env {
            args.extend(["-e", entry]);
        }
        let port = port.to_string();
        args.extend(["--entrypoint", "/bin/nc", IMAGE, address, &port]);
        let id = dockerd.run(&args);
        dockerd.wait_exited(&id);
        id
    };
    let cluster_ip = [CLUSTER_IP];
    let cases = [
        // The kubelet's port on a known address: nothing.
        run("kubelet", &[], "127.0.0.1", kubelet_port),
        run("flag-no-env", &[], "127.0.0.1", flagged_port),
        run("flag-cluster-ip", &cluster_ip, "127.0.0.1", flagged_port),
        run("kubeconfig-no-env", &[], "127.0.0.3", kube_port),
        run("kubeconfig-cluster-ip", &cluster_ip, "127.0.0.3", kube_port),
    ];
    agent.wait_for("the last container's finding", |f| {
        f["data"]["container_id"] == cases[4].as_str()
    });
    let status = agent.stop();
    assert!(status.success(), "{status}");
    let seen: Vec<(String, u64)> = agent
        .findings()
        .iter()
        .map(|f| {
            let id = f["data"]["container_id"].as_str().unwrap_or("");
            let case = cases.iter().position(|c| c == id).map_or("?", |i| {
                [
                    "kubelet",
                    "flag-no-env",
                    "flag-cluster-ip",
                    "kubeconfig-no-env",
                    "kubeconfig-cluster-ip",
                ][i]
            });
            (case.to_owned(), f["data"]["port"].as_u64().unwrap_or(0))
        })
        .collect();
    let (flag, kube) = (u64::from(flagged_port), u64::from(kube_port));
    assert_eq!(
        seen,
        [
            ("flag-no-env".to_owned(), flag),
            ("flag-cluster-ip".to_owned(), flag),
            ("kubeconfig-no-env".to_owned(), kube),
            ("kubeconfig-cluster-ip".to_owned(), kube),
        ]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_endpointslice_change_applies_without_a_restart() {
    // No cluster runs here: a local server speaks the API server's wire format (see
    // rulehost_tests::apiserver); the agent watches it through kube-rs as in a cluster.
    let old = std::net::TcpListener::bind("127.0.0.4:0").unwrap();
    let old_port = old.local_addr().unwrap().port();
    let new = std::net::TcpListener::bind("127.0.0.5:0").unwrap();
    let new_port = new.local_addr().unwrap().port();
    let server = FakeApiServer::start(&[("127.0.0.4", old_port)]);
    let dir = std::env::temp_dir().join(format!("rulehost-slices-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, server.kubeconfig()).unwrap();
    let agent = LiveAgent::start("slices", &["--kubeconfig", kubeconfig.to_str().unwrap()]);
    let listed = |port: u16| {
        move |r: &LogRecord| {
            r.message() == "API server endpoints changed"
                && r.field("endpointslices").contains(&format!(":{port}"))
        }
    };
    agent.wait_for_log("the listed slice", listed(old_port));
    let id = trigger_id(84);
    let cgroup = TestCgroup::new(&format!("cri-containerd-{id}.scope"));
    cgroup.run(&[], &["tcp", &format!("127.0.0.4:{old_port}")]);
    agent.wait_for("the listed endpoint's finding", |f| {
        f["data"]["container_id"] == id.as_str()
    });

    // The control plane moves: one MODIFIED event on the open watch.
    wait_until(
        || server.watchers() > 0,
        || "the agent never opened a watch".to_owned(),
    );
    server.set_endpoints(&[("127.0.0.5", new_port)]);
    agent.wait_for_log("the changed slice", listed(new_port));
    cgroup.run(&[], &["tcp", &format!("127.0.0.4:{old_port}")]);
    cgroup.run(&[], &["tcp", &format!("127.0.0.5:{new_port}")]);
    agent.wait_for("the new endpoint's finding", |f| {
        f["data"]["container_id"] == id.as_str() && f["data"]["port"] == u64::from(new_port)
    });
    let seen: Vec<u64> = agent
        .findings_for(&id)
        .iter()
        .map(|f| f["data"]["port"].as_u64().unwrap())
        .collect();
    assert_eq!(seen, vec![u64::from(old_port), u64::from(new_port)]);
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

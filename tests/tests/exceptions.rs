//! Findings an operator can act on and exceptions for expected ones: the node, the
//! container's name and image and its pod travel from the input into the finding
//! (Tracee's wire format carries them), and `exceptions` in the config file suppress
//! exactly what they match, counted per rule, reloaded live without a restart.

use rulehost::events::{Container, ContainerRuntime, Event, Pod};
use rulehost_tests::live::*;
use rulehost_tests::*;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

/// `rulehost replay ARGS -` with `events` on stdin (and `env` set).
fn replay(args: &[&str], env: &[(&str, &str)], events: &[Event]) -> Output {
    let mut child = Command::new(rulehost_bin())
        .arg("replay")
        .args(args)
        .args(["--log-format", "json", "-"])
        .env_remove("NODE_NAME")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("target/release/rulehost (run `make build`)");
    let mut input = child.stdin.take().unwrap();
    for event in events {
        writeln!(input, "{}", serde_json::to_string(event).unwrap()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn findings(out: &Output) -> Vec<Value> {
    rulehost_tests::hostile::stdout_findings(out)
}

/// A temp file holding `text`, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("rulehost-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn the_finding_names_node_container_image_and_pod_from_tracee_input() {
    let tracee = events_file("tracee-v0.24.jsonl");
    for (args, env, node) in [
        (
            vec!["--node-name", "node-a"],
            vec![("NODE_NAME", "node-b")],
            "node-a",
        ),
        (vec![], vec![("NODE_NAME", "node-b")], "node-b"),
    ] {
        let mut all = args.clone();
        all.push(&tracee);
        let out = Command::new(rulehost_bin())
            .arg("replay")
            .args(&all)
            .env_remove("NODE_NAME")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let found = findings(&out);
        assert_eq!(found.len(), 1, "{}", brief(&found));
        let f = &found[0];
        assert_eq!(f["node"], node);
        let container = &f["event"]["container"];
        assert_eq!(container["name"], "curl");
        assert_eq!(container["image"], "docker.io/curlimages/curl:8.5.0");
        assert!(
            container["image_id"]
                .as_str()
                .unwrap()
                .starts_with("sha256:4bfa3e2c")
        );
        assert_eq!(container["runtime"], "kubernetes");
        let pod = &f["event"]["pod"];
        assert!(container.get("pod").is_none(), "{container}");
        assert_eq!(pod["name"], "debug-curl");
        assert_eq!(pod["namespace"], "default");
        assert_eq!(pod["uid"], "4f1d2c3b-8a9e-4b7c-9d6e-1a2b3c4d5e6f");
    }
}

/// A pod's container with the given namespace, labels, name and image.
fn pod_container(
    tag: u8,
    namespace: &str,
    labels: &[(&str, &str)],
    name: &str,
    image: &str,
) -> Option<Arc<Container>> {
    Some(Arc::new(Container {
        name: Some(name.into()),
        image: Some(image.into()),
        pod: Some(Pod {
            name: format!("pod-{tag}"),
            namespace: namespace.into(),
            uid: format!("00000000-0000-0000-0000-0000000000{tag:02}"),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
        }),
        ..Container::new(container_id(tag), ContainerRuntime::Kubernetes)
    }))
}

/// An exec declaring the API server, then a connect to it, from `container` as `comm`.
fn api_client(container: Option<Arc<Container>>, comm: &str) -> Vec<Event> {
    let mut events = vec![
        exec(container.clone(), &["KUBERNETES_SERVICE_HOST=10.96.0.1"]),
        connect(container, "10.96.0.1", 443),
    ];
    for event in &mut events {
        event.process.comm = comm.into();
    }
    events
}

#[test]
fn exceptions_suppress_only_what_they_match_and_are_counted() {
    let config = TempFile::new(
        "exceptions.yaml",
        r#"exceptions:
  - rule: TRC-1013
    namespace: kube-system
  - rule: "*"
    pod_labels: {app.kubernetes.io/name: prometheus-operator}
  - rule: TRC-1013
    image: "quay.io/prometheus-operator/*"
  - rule: TRC-1013
    container_name: "istio-*"
  - rule: TRC-1013
    comm: kubectl
  - rule: TRC-9999
    namespace: default
"#,
    );
    let clients = [
        (
            1,
            "kube-system",
            vec![],
            "coredns",
            "registry.k8s.io/coredns:v1",
            "coredns",
            false,
        ),
        (
            2,
            "monitoring",
            vec![("app.kubernetes.io/name", "prometheus-operator")],
            "op",
            "docker.io/x:1",
            "operator",
            false,
        ),
        (
            3,
            "monitoring",
            vec![],
            "op",
            "quay.io/prometheus-operator/prometheus-operator:v0.7",
            "operator",
            false,
        ),
        (
            4,
            "default",
            vec![],
            "istio-proxy",
            "docker.io/istio/proxyv2:1.20",
            "pilot-agent",
            false,
        ),
        (
            5,
            "default",
            vec![],
            "shell",
            "docker.io/busybox:1",
            "kubectl",
            false,
        ),
        // Near misses: another namespace, label value, image, name and comm.
        (
            6,
            "default",
            vec![("app.kubernetes.io/name", "grafana")],
            "app",
            "quay.io/other/app:1",
            "curl",
            true,
        ),
        (
            7,
            "kube-systemx",
            vec![],
            "istio",
            "docker.io/quay.io/prometheus-operator/x",
            "kubectl2",
            true,
        ),
    ];
    let mut events = Vec::new();
    for (tag, namespace, labels, name, image, comm, _) in &clients {
        events.extend(api_client(
            pod_container(*tag, namespace, labels, name, image),
            comm,
        ));
    }
    let out = replay(&["--config", config.path()], &[], &events);
    let logs = log_records(&String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{}", brief(&logs));
    let reported: Vec<String> = findings(&out)
        .iter()
        .map(|f| f["event"]["pod"]["name"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = clients
        .iter()
        .filter(|c| c.6)
        .map(|c| format!("pod-{}", c.0))
        .collect();
    assert_eq!(reported, expected);
    let counted: Vec<_> = logs
        .iter()
        .filter(|r| {
            r.is(
                "findings suppressed by exceptions",
                &[("id", "TRC-1013"), ("suppressed", "5")],
            )
        })
        .collect();
    assert_eq!(counted.len(), 1, "{}", brief(&logs));

    // Without the config every client is reported.
    assert_eq!(findings(&replay(&[], &[], &events)).len(), clients.len());
}

#[test]
fn a_bad_exception_is_one_line_naming_file_line_and_key() {
    let config = TempFile::new(
        "bad-exceptions.yaml",
        "exceptions:\n  - rule: TRC-1013\n    namespaces: [a]\n",
    );
    let out = replay(&["--config", config.path()], &[], &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", brief(&lines));
    assert!(
        lines[0].contains(&format!(
            "config {}: line 3 column 5: unknown field `namespaces`",
            config.path()
        )),
        "{}",
        lines[0]
    );
}

/// Replaces `path` atomically.
fn write_atomically(path: &Path, text: &str) {
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

#[test]
fn an_edited_exceptions_list_applies_live_and_a_broken_edit_keeps_it() {
    let dir = std::env::temp_dir().join(format!("rulehost-exceptions-live-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(&config, "exceptions: []\n").unwrap();
    // The connector under the name `kubectl`: its command name is `kubectl`.
    let kubectl = dir.join("kubectl");
    std::os::unix::fs::symlink(connector_bin(), &kubectl).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    let env = [("KUBERNETES_SERVICE_HOST", "127.0.0.1")];
    let id = trigger_id(60);
    let cgroup = TestCgroup::new(&format!("cri-containerd-{id}.scope"));
    let agent = LiveAgent::start(
        "exceptions",
        &[
            "--config",
            config.to_str().unwrap(),
            "--node-name",
            "node-live",
        ],
    );
    let comms = || -> Vec<String> {
        agent
            .findings_for(&id)
            .iter()
            .map(|f| f["data"]["comm"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let wait_for_count = |n: usize| {
        agent.wait_for(&format!("{n} findings"), |_| comms().len() >= n);
    };

    cgroup.run_as(&kubectl, &env, &["tcp", &address]);
    wait_for_count(1);
    assert_eq!(agent.findings_for(&id)[0]["node"], "node-live");

    write_atomically(
        &config,
        "exceptions:\n  - rule: TRC-1013\n    comm: kubectl\n",
    );
    agent.wait_for_log("exceptions reloaded", |r| {
        r.is(
            "config reloaded: exceptions in force",
            &[("exceptions", "1")],
        )
    });
    // The kubectl connect comes first; once the connector's finding after it is out,
    // the kubectl one has been through the pipeline too.
    cgroup.run_as(&kubectl, &env, &["tcp", &address]);
    cgroup.run(&env, &["tcp", &address]);
    wait_for_count(2);
    assert_eq!(comms(), vec!["kubectl", "connector"]);

    write_atomically(
        &config,
        "exceptions:\n  - rule: TRC-1013\n    comm: [broken\n",
    );
    agent.wait_for_log("the broken edit refused", |r| {
        r.is(
            "config reload failed; the previous exceptions stay in force",
            &[("kept", "1")],
        )
    });
    cgroup.run_as(&kubectl, &env, &["tcp", &address]);
    cgroup.run(&env, &["tcp", &address]);
    wait_for_count(3);
    assert_eq!(comms(), vec!["kubectl", "connector", "connector"]);
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_shipped_list_spares_known_clients_in_their_home_only() {
    let shipped = format!(
        "{}/../deploy/exceptions/common-k8s-clients.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let coredns = "registry.k8s.io/coredns/coredns:v1.11.1";
    let mut events = api_client(
        pod_container(1, "kube-system", &[], "coredns", coredns),
        "coredns",
    );
    // The same image run from another namespace is not the cluster's DNS.
    events.extend(api_client(
        pod_container(2, "default", &[], "coredns", coredns),
        "coredns",
    ));
    events.extend(api_client(
        pod_container(
            3,
            "monitoring",
            &[],
            "operator",
            "quay.io/prometheus-operator/prometheus-operator:v0.75.0",
        ),
        "operator",
    ));
    let out = replay(&["--config", &shipped], &[], &events);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reported: Vec<String> = findings(&out)
        .iter()
        .map(|f| f["event"]["pod"]["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(reported, vec!["pod-2"]);
}

#[test]
fn every_run_flag_is_a_config_key_and_the_command_line_wins() {
    let hoarder = fixture("hoarder");
    // A private compile cache, so the rule is compiled (under the file's bound).
    let cache =
        std::env::temp_dir().join(format!("rulehost-run-flags-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let config = TempFile::new(
        "run-flags.yaml",
        &format!(
            "rule: [{}]\ngrant: [\"FIXTURE-HOARDER=env:HOARD\"]\nno_state_dir: true\ncache_dir: {}\nrule_compile_memory_mib: 1\n",
            hoarder.display(),
            cache.display()
        ),
    );
    let check = |extra: &[&str]| {
        Command::new(rulehost_bin())
            .args(["run", "--check", "--config", config.path()])
            .args(extra)
            .output()
            .unwrap()
    };
    // The file's keys apply: 1 MiB is too little to compile the rule it names.
    let out = check(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("compiling needed more than the 1 MiB a rule compile may use"),
        "{stderr}"
    );
    // A flag given on the command line replaces the file's value.
    let out = check(&["--rule-compile-memory-mib", "1024"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("rule hoarder: FIXTURE-HOARDER v0.1.0 sha256 ")
            && stdout.contains(" ok, granted env HOARD, ")
            && stdout.contains(" KiB, memory "),
        "{stdout}"
    );
    let _ = std::fs::remove_dir_all(&cache);
    let typo = TempFile::new("typo.yaml", "rule_memory_mb: 4\n");
    let out = Command::new(rulehost_bin())
        .args(["run", "--check", "--config", typo.path()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "config {}: line 1: unknown key `rule_memory_mb`",
            typo.path()
        )),
        "{stderr}"
    );
}

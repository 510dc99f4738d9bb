//! Metadata from real runtimes, started by the tests (Debian's packages): a containerd
//! with pods created through the CRI gRPC API as kubelet would, and a Docker Engine.
//! The agent asks the same APIs. Findings name the node, pod, namespace, container and
//! image, even for a container that connects the instant it starts; exceptions by
//! namespace, pod label and image suppress exactly those containers.

use rulehost_tests::cri::{Containerd, IMAGE, PodSpec};
use rulehost_tests::docker::api_server;
use rulehost_tests::live::*;
use rulehost_tests::*;

/// A listener that accepts and closes every connection, so each `nc` ends at once.
const KSH: (&str, &str) = ("KUBERNETES_SERVICE_HOST", "127.0.0.1");

fn uid(n: u8) -> String {
    format!("{:08x}-0000-4000-8000-{n:012x}", std::process::id())
}

#[test]
fn a_pod_finding_names_node_pod_namespace_container_and_image() {
    let mut containerd = Containerd::start("metadata");
    let port = api_server();
    let socket = containerd.socket.to_str().unwrap().to_owned();
    // A generous wait: this test is about the metadata, not the bound.
    let agent = LiveAgent::start(
        "cri-metadata",
        &[
            "--cri-socket",
            &socket,
            "--node-name",
            "node-cri",
            "--metadata-wait-ms",
            "30000",
        ],
    );
    let pod_uid = uid(1);
    // `nc` is the container's first process: it connects the instant it starts.
    let id = containerd.run_pod(&PodSpec {
        name: "api-client",
        namespace: "team-a",
        uid: &pod_uid,
        labels: &[("app", "api-client")],
        container: "client",
        command: &["/bin/nc", "127.0.0.1", &port],
        env: &[KSH],
    });
    let finding = agent.wait_for("the pod's finding", |f| {
        f["data"]["container_id"] == id.as_str()
    });
    assert_eq!(finding["node"], "node-cri");
    let container = &finding["event"]["container"];
    assert_eq!(container["name"], "client", "{container}");
    assert_eq!(container["image"], IMAGE, "{container}");
    assert!(
        container["image_id"]
            .as_str()
            .is_some_and(|i| i.starts_with("sha256:")),
        "{container}"
    );
    let pod = &finding["event"]["pod"];
    assert_eq!(pod["name"], "api-client", "{pod}");
    assert_eq!(pod["namespace"], "team-a", "{pod}");
    assert_eq!(pod["uid"], pod_uid.as_str(), "{pod}");
    assert_eq!(pod["labels"]["app"], "api-client", "{pod}");
}

#[test]
fn exceptions_by_namespace_and_pod_label_spare_only_those_pods() {
    let mut containerd = Containerd::start("exceptions");
    let port = api_server();
    let socket = containerd.socket.to_str().unwrap().to_owned();
    let dir = std::env::temp_dir().join(format!("rulehost-runtimes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        "exceptions:\n  - rule: TRC-1013\n    namespace: kube-system\n  - rule: TRC-1013\n    pod_labels: {app.kubernetes.io/name: prometheus-operator}\n",
    )
    .unwrap();
    let mut agent = LiveAgent::start(
        "cri-exceptions",
        &[
            "--cri-socket",
            &socket,
            "--config",
            config.to_str().unwrap(),
            "--metadata-wait-ms",
            "30000",
        ],
    );
    let pods = [
        ("coredns", "kube-system", vec![], 2),
        (
            "prom-operator",
            "monitoring",
            vec![("app.kubernetes.io/name", "prometheus-operator")],
            3,
        ),
        (
            "curious",
            "kube-systemx",
            vec![("app.kubernetes.io/name", "grafana")],
            4,
        ),
    ];
    let mut ids = Vec::new();
    for (name, namespace, labels, n) in &pods {
        let id = containerd.run_pod(&PodSpec {
            name,
            namespace,
            uid: &uid(*n),
            labels,
            container: "client",
            command: &["/bin/nc", "127.0.0.1", &port],
            env: &[KSH],
        });
        // Each pod's connect is over before the next starts: ring-buffer order.
        containerd.wait_exited(&id);
        ids.push(id);
    }
    agent.wait_for("the unexcepted pod's finding", |f| {
        f["data"]["container_id"] == ids[2].as_str()
    });
    stop_expecting(&mut agent, "/event/pod/name", &["curious"], "2");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_docker_container_finding_names_its_name_and_image_and_an_image_exception_works() {
    use rulehost_tests::docker::{Dockerd, IMAGE as DOCKER_IMAGE};
    let mut dockerd = Dockerd::start("metadata");
    // The same image under an operator's name, which an exception spares.
    let operator_image = "quay.io/prometheus-operator/prometheus-operator:v0.75.0";
    dockerd
        .docker(&["tag", DOCKER_IMAGE, operator_image])
        .expect("docker tag");
    let port = api_server();
    let socket = dockerd.socket.to_str().unwrap().to_owned();
    let dir = std::env::temp_dir().join(format!("rulehost-docker-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        "exceptions:\n  - rule: TRC-1013\n    image: \"quay.io/prometheus-operator/*\"\n",
    )
    .unwrap();
    let mut agent = LiveAgent::start(
        "docker-metadata",
        &[
            "--docker-socket",
            &socket,
            "--config",
            config.to_str().unwrap(),
            "--metadata-wait-ms",
            "30000",
            "--log-level",
            "info,rulehost::metadata=debug",
        ],
    );
    let run = |dockerd: &mut Dockerd, name: &str, image: &str| {
        let id = dockerd.run(&[
            "--name",
            name,
            "-e",
            "KUBERNETES_SERVICE_HOST=127.0.0.1",
            "--entrypoint",
            "/bin/nc",
            image,
            "127.0.0.1",
            &port,
        ]);
        // Its connect is over before the next container starts: ring-buffer order.
        dockerd.wait_exited(&id);
        id
    };
    run(&mut dockerd, "operator", operator_image);
    let id = run(&mut dockerd, "api-client", DOCKER_IMAGE);
    let finding = agent.wait_for("the container's finding", |f| {
        f["data"]["container_id"] == id.as_str()
    });
    let container = &finding["event"]["container"];
    assert_eq!(container["runtime"], "docker", "{container}");
    let runtimes: Vec<String> = agent
        .log()
        .into_iter()
        .filter(|l| l.contains("connected") || l.contains("metadata"))
        .collect();
    assert_eq!(
        container["name"],
        "api-client",
        "{container}; {}",
        brief(&runtimes)
    );
    assert_eq!(container["image"], DOCKER_IMAGE, "{container}");
    assert!(
        container["image_id"]
            .as_str()
            .is_some_and(|i| i.starts_with("sha256:")),
        "{container}"
    );
    stop_expecting(&mut agent, "/event/container/name", &["api-client"], "1");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Stops the agent (which writes every finding still waiting for metadata) and checks
/// what was written, by the value at `pointer`, and that the stop summary counted
/// `suppressed` TRC-1013 findings.
fn stop_expecting(agent: &mut LiveAgent, pointer: &str, written: &[&str], suppressed: &str) {
    let status = agent.stop();
    assert!(status.success(), "{status}");
    let reported: Vec<String> = agent
        .findings()
        .iter()
        .filter_map(|f| f.pointer(pointer)?.as_str().map(str::to_owned))
        .collect();
    assert_eq!(reported, written);
    let logs = agent.log_records();
    let counted = logs
        .iter()
        .filter(|r| {
            r.is(
                "findings suppressed by exceptions",
                &[("id", "TRC-1013"), ("suppressed", suppressed)],
            )
        })
        .count();
    assert_eq!(counted, 1, "{}", brief(&logs));
}

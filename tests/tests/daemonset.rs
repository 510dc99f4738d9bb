//! The DaemonSet's pod, run for real: `deploy/kubernetes/daemonset.yaml` read and run as
//! kubelet runs it (tests/src/daemonset.rs) through a test-started containerd's CRI API,
//! with the image `make image` saved, containerd's default seccomp profile in force, and
//! the ConfigMaps of `config.yaml` and `rules-configmap.sh` laid out as kubelet lays them
//! out. Checked: the probes' endpoints answer as the probes ask; a connect from another
//! CRI pod is reported with that pod's name, namespace and image; a ConfigMap-style
//! `..data` swap hot-reloads the rule. No API server runs here: the pod gets no service
//! account token, and the API server is the one its client's environment names.

use rulehost_tests::cri::{Containerd, IMAGE, PodSpec};
use rulehost_tests::daemonset::*;
use rulehost_tests::docker::api_server;
use rulehost_tests::live::wait_until;
use rulehost_tests::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const NODE: &str = "node-ds";

/// The lines a container wrote to `stream`, from its CRI log file (`TIME STREAM P|F
/// TEXT`, partial lines joined).
fn container_lines(log: &Path, stream: &str) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut lines = Vec::new();
    let mut partial = String::new();
    for line in text.lines() {
        let mut parts = line.splitn(4, ' ');
        let (_time, which, tag, content) = (parts.next(), parts.next(), parts.next(), parts.next());
        if which != Some(stream) {
            continue;
        }
        partial.push_str(content.unwrap_or(""));
        if tag == Some("F") {
            lines.push(std::mem::take(&mut partial));
        }
    }
    lines
}

/// The rules ConfigMap `rules-configmap.sh` writes for `rules`, as files.
fn rules_config_map(rules: &[PathBuf]) -> BTreeMap<String, Vec<u8>> {
    let out = std::process::Command::new("bash")
        .arg(manifests_dir().join("rules-configmap.sh"))
        .args(rules)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: Value = serde_saphyr::from_str(&String::from_utf8(out.stdout).unwrap()).unwrap();
    config_map_files(&manifest)
}

/// The port and path of a probe's httpGet, the named port resolved.
fn probe(container: &Value, which: &str) -> (u16, String) {
    let get = &container[which]["httpGet"];
    let port = match &get["port"] {
        Value::String(name) => container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name.as_str())
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("{which}: no port named {name}")),
        port => port.as_u64().unwrap(),
    };
    (port as u16, get["path"].as_str().unwrap().to_owned())
}

/// The pid of container `id`'s first process (its cgroup path names the id).
fn pid_of(id: &str) -> u32 {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| c.contains(id))
        })
        .collect();
    pids.sort();
    *pids
        .first()
        .unwrap_or_else(|| panic!("no process in container {id}"))
}

/// A field of /proc/PID/status.
fn status_field(pid: u32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| Some(l.strip_prefix(field)?.strip_prefix(':')?.trim().to_owned()))
        .unwrap_or_default()
}

/// The DaemonSet this kernel needs: the manifest, or on kernels before 5.11 (BPF maps
/// charged to RLIMIT_MEMLOCK) the old-kernels overlay's build of it.
fn daemonset_for_this_kernel() -> Value {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut numbers = release
        .split(['.', '-'])
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    if version >= (5, 11) {
        return read_manifest(&manifests_dir().join("daemonset.yaml"));
    }
    let overlay = manifests_dir().join("../overlays/old-kernels");
    let out = std::process::Command::new(target_dir().join("tools/bin/kustomize"))
        .arg("build")
        .arg(&overlay)
        .output()
        .expect("kustomize (`make setup` fetches it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split("\n---\n")
        .map(|doc| serde_saphyr::from_str::<Value>(doc).unwrap())
        .find(|doc| doc["kind"] == "DaemonSet")
        .expect("the overlay builds a DaemonSet")
}

/// The effective capability mask of a capability list as the manifest names them.
fn capability_mask(names: &Value) -> u64 {
    names
        .as_array()
        .unwrap()
        .iter()
        .map(|name| match name.as_str().unwrap() {
            "NET_ADMIN" => 12,
            "SYS_PTRACE" => 19,
            "SYS_ADMIN" => 21,
            "SYS_RESOURCE" => 24,
            "PERFMON" => 38,
            "BPF" => 39,
            other => panic!("capability {other} not mapped here"),
        })
        .fold(0, |mask, bit| mask | (1u64 << bit))
}

fn tracefs_mounted() {
    if !Path::new("/sys/kernel/tracing/events").exists() {
        let status = std::process::Command::new("mount")
            .args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"])
            .status()
            .unwrap();
        assert!(status.success(), "mounting tracefs");
    }
}

#[test]
fn the_daemonsets_pod_becomes_ready_reports_a_pod_and_hot_reloads_a_configmap_swap() {
    tracefs_mounted();
    let mut containerd = Containerd::start("daemonset");
    containerd.import(&target_dir().join("image/rulehost.tar"));
    let dir = std::env::temp_dir().join(format!("rulehost-daemonset-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let daemonset = daemonset_for_this_kernel();
    let container = daemonset["spec"]["template"]["spec"]["containers"][0].clone();
    let config = config_map_files(&read_manifest(&manifests_dir().join("config.yaml")));
    let shipped: Vec<PathBuf> = ["k8s_api_connection.wasm", "cloud_metadata_access.wasm"]
        .iter()
        .map(|name| target_dir().join("rules").join(name))
        .collect();
    let objects = BTreeMap::from([
        ("rulehost-config".to_owned(), config),
        ("rulehost-rules".to_owned(), rules_config_map(&shipped)),
    ]);
    let state = dir.join("state");
    let log_directory = containerd.log_directory().join("rulehost");
    let pod_uid = format!("{:08x}-0000-4000-8000-00000000d5e7", std::process::id());
    let volumes = dir.join("volumes");
    let node = Node {
        name: NODE,
        pod_uid: &pod_uid,
        volumes_dir: &volumes,
        host_paths: &[
            ("/var/lib/rulehost", &state),
            (
                "/run/containerd/containerd.sock",
                &containerd.socket.clone(),
            ),
        ],
        objects: &objects,
        log_directory: &log_directory,
    };
    let (sandbox, mut config) = pod_configs(&daemonset, &node);
    if emulated() {
        // In the matrix's emulated VMs a rule call is tens of times slower than the
        // default budgets expect; the manifest is otherwise run as is.
        config.args.extend(EMULATION_BUDGETS.map(String::from));
    }
    let log = log_directory.join(&config.log_path);
    let agent_id = containerd.run(sandbox, config);
    let log_tail = || {
        let lines = container_lines(&log, "stderr");
        brief(&lines[lines.len().saturating_sub(4)..])
    };

    // Both probes' endpoints answer 200, as kubelet's httpGet asks them.
    rulehost::install_tls_provider();
    let client = reqwest::blocking::Client::new();
    let status = |(port, path): &(u16, String)| {
        client
            .get(format!("http://127.0.0.1:{port}{path}"))
            .send()
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    let readiness = probe(&container, "readinessProbe");
    wait_until(
        || status(&readiness) == 200,
        || {
            format!(
                "{readiness:?} never answered 200; agent {agent_id}: {}",
                log_tail()
            )
        },
    );
    let liveness = probe(&container, "livenessProbe");
    assert_eq!(status(&liveness), 200, "{liveness:?}");

    // It runs confined as the manifest asks: seccomp filter on, no new privileges, and
    // exactly the capabilities it adds effective.
    let agent_pid = pid_of(&agent_id);
    assert_eq!(status_field(agent_pid, "Seccomp"), "2", "seccomp mode");
    assert_eq!(status_field(agent_pid, "NoNewPrivs"), "1");
    let caps = capability_mask(&container["securityContext"]["capabilities"]["add"]);
    assert_eq!(status_field(agent_pid, "CapEff"), format!("{caps:016x}"));

    // A connect from another pod is reported with that pod's name, namespace and image.
    let port = api_server();
    let finding_for = |id: &str| {
        let mut found = None;
        wait_until(
            || {
                found = container_lines(&log, "stdout")
                    .iter()
                    .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                    .find(|f| f["data"]["container_id"] == id);
                found.is_some()
            },
            || format!("no finding for {id}; agent: {}", log_tail()),
        );
        found.unwrap()
    };
    let mut client_pod = |n: u8| {
        containerd.run_pod(&PodSpec {
            name: &format!("api-client-{n}"),
            namespace: "team-ds",
            uid: &format!(
                "{:08x}-0000-4000-8000-0000000000{n:02x}",
                std::process::id()
            ),
            labels: &[("app", "api-client")],
            container: "client",
            command: &["/bin/nc", "127.0.0.1", &port],
            env: &[("KUBERNETES_SERVICE_HOST", "127.0.0.1")],
        })
    };
    let first = client_pod(1);
    let finding = finding_for(&first);
    assert_eq!(finding["node"], NODE);
    assert_eq!(finding["event"]["pod"]["name"], "api-client-1", "{finding}");
    assert_eq!(finding["event"]["pod"]["namespace"], "team-ds", "{finding}");
    assert_eq!(finding["event"]["container"]["image"], IMAGE, "{finding}");
    assert_eq!(
        finding["rule"]["sha256"],
        sha256_hex(&std::fs::read(&shipped[0]).unwrap()),
        "{finding}"
    );

    // The rules ConfigMap is updated: kubelet swaps `..data`; the agent hot-reloads.
    let variant_dir = dir.join("variant");
    std::fs::create_dir_all(&variant_dir).unwrap();
    let variant = variant_dir.join("k8s_api_connection.wasm");
    let bytes = rule_variant(&std::fs::read(&shipped[0]).unwrap(), "daemonset-swap");
    std::fs::write(&variant, &bytes).unwrap();
    write_projection(
        &volumes.join("rules"),
        &rules_config_map(&[variant, shipped[1].clone()]),
    );
    let reloaded = sha256_hex(&bytes);
    wait_until(
        || {
            container_lines(&log, "stderr")
                .iter()
                .any(|l| l.contains("rule reloaded") && l.contains(&reloaded))
        },
        || format!("no reload to {reloaded}: {}", log_tail()),
    );
    let second = client_pod(2);
    assert_eq!(finding_for(&second)["rule"]["sha256"], reloaded.as_str());
    drop(containerd);
    let _ = std::fs::remove_dir_all(&dir);
}

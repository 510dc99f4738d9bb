//! `deploy/kubernetes/daemonset.yaml` run as kubelet runs a DaemonSet's pod, through the
//! CRI API of a test-started containerd (tests/src/cri.rs): the manifest's image, args,
//! env (`fieldRef: spec.nodeName` filled as the downward API fills it), security context
//! (capabilities, read-only root, no privilege escalation, `RuntimeDefault` seccomp,
//! kubelet's default masked and read-only /proc paths), host PID, resources and mounts.
//! ConfigMap and Secret volumes are laid out as kubelet lays them out (files behind a
//! `..data` symlink to a timestamped directory, swapped atomically on update); absent
//! optional ones are empty directories. What differs from a cluster, and why: the pod
//! uses the node's network (no CNI here), hostPath volumes that would write to this
//! machine (the state directory) point into the test's directory, and the containerd
//! socket is the test containerd's.

use k8s_cri::v1::{
    Capability, ContainerConfig, ContainerMetadata, ImageSpec, Int64Value, KeyValue,
    LinuxContainerConfig, LinuxContainerResources, LinuxContainerSecurityContext,
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, Mount, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata, SecurityProfile, security_profile::ProfileType,
};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The repository's manifests directory.
pub fn manifests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

/// A YAML manifest as JSON values.
pub fn read_manifest(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// kubelet's default masked and read-only paths for a container that is not privileged.
const MASKED: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];
const READ_ONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// What the node gives the pod that the manifest names but this machine cannot share
/// as is.
pub struct Node<'a> {
    pub name: &'a str,
    pub pod_uid: &'a str,
    /// Where volumes are laid out (kubelet's pods/<uid>/volumes).
    pub volumes_dir: &'a Path,
    /// hostPath path -> the path used instead (the state directory, the CRI socket).
    pub host_paths: &'a [(&'a str, &'a Path)],
    /// ConfigMaps and Secrets that exist: name -> files.
    pub objects: &'a BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    pub log_directory: &'a Path,
}

/// The DaemonSet's pod template as the CRI sandbox and container kubelet would ask for.
pub fn pod_configs(daemonset: &Value, node: &Node) -> (PodSandboxConfig, ContainerConfig) {
    let template = &daemonset["spec"]["template"];
    let spec = &template["spec"];
    let container = &spec["containers"][0];
    let pid = match spec["hostPID"].as_bool() {
        Some(true) => NamespaceMode::Node,
        _ => NamespaceMode::Container,
    };
    let namespaces = NamespaceOption {
        // No CNI here: the node's network (the manifest asks for a pod network).
        network: NamespaceMode::Node as i32,
        pid: pid as i32,
        ..NamespaceOption::default()
    };
    let labels = strings(&template["metadata"]["labels"]);
    let metadata = &daemonset["metadata"];
    let sandbox = PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: format!("{}-{}", text(&metadata["name"]), node.name),
            uid: node.pod_uid.into(),
            namespace: text(&metadata["namespace"]),
            attempt: 0,
        }),
        log_directory: node.log_directory.display().to_string(),
        labels: labels.clone(),
        annotations: strings(&template["metadata"]["annotations"]),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: format!("/kubepods/burstable/pod{}", node.pod_uid),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces.clone()),
                ..LinuxSandboxSecurityContext::default()
            }),
            ..LinuxPodSandboxConfig::default()
        }),
        ..PodSandboxConfig::default()
    };
    let name = text(&container["name"]);
    let config = ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.clone(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: normalised_image(&text(&container["image"])),
            ..ImageSpec::default()
        }),
        command: list(&container["command"]),
        args: list(&container["args"]),
        envs: env(container, node),
        mounts: mounts(spec, container, node),
        labels: HashMap::from([
            ("io.kubernetes.container.name".into(), name.clone()),
            (
                "io.kubernetes.pod.name".into(),
                format!("{}-{}", text(&metadata["name"]), node.name),
            ),
            (
                "io.kubernetes.pod.namespace".into(),
                text(&metadata["namespace"]),
            ),
            ("io.kubernetes.pod.uid".into(), node.pod_uid.into()),
        ]),
        log_path: format!("{name}.log"),
        linux: Some(LinuxContainerConfig {
            resources: Some(resources(&container["resources"])),
            security_context: Some(security_context(&container["securityContext"], namespaces)),
        }),
        ..ContainerConfig::default()
    };
    (sandbox, config)
}

/// `rulehost:0.1.0` as kubelet passes it on (docker.io/library/...).
fn normalised_image(image: &str) -> String {
    match image.split('/').count() {
        1 => format!("docker.io/library/{image}"),
        _ => image.into(),
    }
}

fn security_context(context: &Value, namespaces: NamespaceOption) -> LinuxContainerSecurityContext {
    assert_ne!(
        context["privileged"], true,
        "the DaemonSet's pod must not be privileged"
    );
    let profile = match context["seccompProfile"]["type"].as_str() {
        Some("RuntimeDefault") => ProfileType::RuntimeDefault,
        Some("Unconfined") | None => ProfileType::Unconfined,
        Some(other) => panic!("seccompProfile {other} is not handled here"),
    };
    LinuxContainerSecurityContext {
        capabilities: Some(Capability {
            add_capabilities: list(&context["capabilities"]["add"]),
            drop_capabilities: list(&context["capabilities"]["drop"]),
            ..Capability::default()
        }),
        privileged: false,
        namespace_options: Some(namespaces),
        run_as_user: context["runAsUser"]
            .as_i64()
            .map(|value| Int64Value { value }),
        readonly_rootfs: context["readOnlyRootFilesystem"] == true,
        no_new_privs: context["allowPrivilegeEscalation"] == false,
        seccomp: Some(SecurityProfile {
            profile_type: profile as i32,
            localhost_ref: String::new(),
        }),
        masked_paths: MASKED.iter().map(|p| (*p).into()).collect(),
        readonly_paths: READ_ONLY.iter().map(|p| (*p).into()).collect(),
        ..LinuxContainerSecurityContext::default()
    }
}

/// Limits and requests as kubelet turns them into cgroup values.
fn resources(resources: &Value) -> LinuxContainerResources {
    let millicores = |v: &Value| match v.as_str() {
        Some(m) if m.ends_with('m') => m.trim_end_matches('m').parse::<i64>().unwrap(),
        Some(cores) => cores.parse::<i64>().unwrap() * 1000,
        None => v.as_i64().map_or(0, |c| c * 1000),
    };
    let bytes = |v: &Value| {
        let text = v.as_str().unwrap_or("0");
        let (number, unit) = text.split_at(text.trim_end_matches(char::is_alphabetic).len());
        let scale = match unit {
            "Ki" => 1 << 10,
            "Mi" => 1 << 20,
            "Gi" => 1 << 30,
            "" => 1,
            other => panic!("memory unit {other} not handled here"),
        };
        number.parse::<i64>().unwrap() * scale
    };
    LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: millicores(&resources["limits"]["cpu"]) * 100,
        cpu_shares: (millicores(&resources["requests"]["cpu"]) * 1024 / 1000).max(2),
        memory_limit_in_bytes: bytes(&resources["limits"]["memory"]),
        ..LinuxContainerResources::default()
    }
}

/// The container's env: values as given, `fieldRef: spec.nodeName` as the downward API.
fn env(container: &Value, node: &Node) -> Vec<KeyValue> {
    let mut envs = Vec::new();
    for entry in container["env"].as_array().into_iter().flatten() {
        let value = match (
            &entry["value"],
            &entry["valueFrom"]["fieldRef"]["fieldPath"],
        ) {
            (Value::String(value), _) => value.clone(),
            (_, Value::String(field)) if field == "spec.nodeName" => node.name.into(),
            _ => panic!("env {} is not handled here", entry["name"]),
        };
        envs.push(KeyValue {
            key: text(&entry["name"]),
            value,
        });
    }
    envs
}

/// The container's volume mounts, each volume made as kubelet makes it.
fn mounts(spec: &Value, container: &Value, node: &Node) -> Vec<Mount> {
    let volumes: BTreeMap<String, &Value> = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| (text(&v["name"]), v))
        .collect();
    let mut mounts = Vec::new();
    for mount in container["volumeMounts"].as_array().into_iter().flatten() {
        let name = text(&mount["name"]);
        let volume = volumes
            .get(&name)
            .unwrap_or_else(|| panic!("volumeMount {name} has no volume"));
        mounts.push(Mount {
            container_path: text(&mount["mountPath"]),
            host_path: volume_path(&name, volume, node).display().to_string(),
            readonly: mount["readOnly"] == true,
            ..Mount::default()
        });
    }
    mounts
}

/// Where a volume is on the node.
fn volume_path(name: &str, volume: &Value, node: &Node) -> PathBuf {
    if let Some(path) = volume["hostPath"]["path"].as_str() {
        let path = node
            .host_paths
            .iter()
            .find(|(from, _)| *from == path)
            .map_or(PathBuf::from(path), |(_, to)| to.to_path_buf());
        if volume["hostPath"]["type"] == "DirectoryOrCreate" {
            std::fs::create_dir_all(&path).unwrap();
        }
        return path;
    }
    let (object, optional) = match (&volume["configMap"], &volume["secret"]) {
        (Value::Object(c), _) => (
            text(&c["name"].clone()),
            c.get("optional") == Some(&Value::Bool(true)),
        ),
        (_, Value::Object(s)) => (
            text(&s["secretName"].clone()),
            s.get("optional") == Some(&Value::Bool(true)),
        ),
        _ => panic!("volume {name}: only hostPath, configMap and secret are handled here"),
    };
    let dir = node.volumes_dir.join(name);
    let files = match node.objects.get(&object) {
        Some(files) => project(files, volume),
        None if optional => BTreeMap::new(),
        None => panic!("volume {name}: {object} does not exist and is not optional"),
    };
    write_projection(&dir, &files);
    dir
}

/// The files a volume shows: all keys, or the `items` it picks, renamed.
fn project(files: &BTreeMap<String, Vec<u8>>, volume: &Value) -> BTreeMap<String, Vec<u8>> {
    let source = volume.get("configMap").or(volume.get("secret")).unwrap();
    match source["items"].as_array() {
        None => files.clone(),
        Some(items) => items
            .iter()
            .filter_map(|item| {
                Some((
                    text(&item["path"]),
                    files.get(item["key"].as_str()?)?.clone(),
                ))
            })
            .collect(),
    }
}

/// Lays `files` out in `dir` as kubelet's atomic writer does, or swaps an existing
/// layout to them: a new timestamped directory, `..data` renamed onto it, one symlink
/// per file through `..data`, the old directory removed.
pub fn write_projection(dir: &Path, files: &BTreeMap<String, Vec<u8>>) {
    use std::os::unix::fs::symlink;
    std::fs::create_dir_all(dir).unwrap();
    let stamp = format!(
        "..{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    std::fs::create_dir(dir.join(&stamp)).unwrap();
    for (name, bytes) in files {
        std::fs::write(dir.join(&stamp).join(name), bytes).unwrap();
    }
    let old = std::fs::read_link(dir.join("..data")).ok();
    let _ = std::fs::remove_file(dir.join("..data_tmp"));
    symlink(&stamp, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    for name in files.keys() {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(Path::new("..data").join(name), link).unwrap();
        }
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).unwrap();
    }
}

/// A ConfigMap manifest's files (`data` and base64 `binaryData`).
pub fn config_map_files(config_map: &Value) -> BTreeMap<String, Vec<u8>> {
    use base64::Engine;
    let mut files = BTreeMap::new();
    for (name, value) in config_map["data"].as_object().into_iter().flatten() {
        files.insert(name.clone(), text(value).into_bytes());
    }
    for (name, value) in config_map["binaryData"].as_object().into_iter().flatten() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text(value))
            .unwrap_or_else(|e| panic!("binaryData {name}: {e}"));
        files.insert(name.clone(), bytes);
    }
    files
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

fn list(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect()
}

fn strings(value: &Value) -> HashMap<String, String> {
    value
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), text(v)))
        .collect()
}

//! Cgroup paths (and `/proc/<pid>/cgroup` files) into a container id and runtime, for
//! docker, containerd, CRI-O, podman, nerdctl and Kubernetes, systemd and cgroupfs
//! drivers, cgroup v1 and v2.

use super::*;

/// Length of a full container id (64 lowercase hex characters).
pub(super) const ID_LEN: usize = 64;

/// Single-component forms `<prefix><id>` with an optional `.scope` suffix.
pub(super) const PREFIXES: &[(&str, ContainerRuntime)] = &[
    ("docker-", ContainerRuntime::Docker),
    ("cri-containerd-", ContainerRuntime::Containerd),
    ("nerdctl-", ContainerRuntime::Containerd),
    ("crio-", ContainerRuntime::Crio),
    ("libpod-payload-", ContainerRuntime::Podman),
    ("libpod-", ContainerRuntime::Podman),
];

/// Suffix the kernel appends to the v2 path of a removed cgroup in `/proc/<pid>/cgroup`.
pub(super) const DELETED_SUFFIX: &str = " (deleted)";

/// True for exactly 64 lowercase hex characters, the only id form accepted.
pub(super) fn is_container_id(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// ContainerRuntime named in the middle field of a runc-style `<parent>:<runtime>:<id>` name.
pub(super) fn runtime_from_name(name: &str) -> ContainerRuntime {
    match name {
        "cri-containerd" | "containerd" | "nerdctl" => ContainerRuntime::Containerd,
        "crio" | "cri-o" => ContainerRuntime::Crio,
        "docker" | "cri-dockerd" => ContainerRuntime::Docker,
        "libpod" | "podman" => ContainerRuntime::Podman,
        _ => ContainerRuntime::Unknown,
    }
}

/// True for the components of a Kubernetes pod hierarchy (`kubepods`, `kubepods.slice`,
/// `kubepods-burstable.slice`, kind's `kubelet-kubepods.slice`, ...).
pub(super) fn is_kubepods(component: &str) -> bool {
    component.starts_with("kubepods") || component.starts_with("kubelet-kubepods")
}

/// The container one path component names, given its parent component and whether a
/// Kubernetes pod hierarchy encloses it.
pub(super) fn match_component(
    component: &str,
    parent: Option<&str>,
    in_kube: bool,
) -> Option<Container> {
    let found = |id: &str, runtime| Some(Container::new(id, runtime));

    // Non-systemd cgroup driver with a systemd-style parent, e.g.
    // `kubepods-burstable-pod<uid>.slice:cri-containerd:<id>`.
    if component.contains(':') {
        let mut fields = component.rsplitn(3, ':');
        let id = fields.next()?;
        let runtime = fields.next()?;
        fields.next()?;
        return if is_container_id(id) {
            found(id, runtime_from_name(runtime))
        } else {
            None
        };
    }

    let base = component.strip_suffix(".scope").unwrap_or(component);
    for &(prefix, runtime) in PREFIXES {
        // Monitor processes (`crio-conmon-<id>`, `libpod-conmon-<id>`) fail the id check
        // here and so are not containers.
        if let Some(id) = base.strip_prefix(prefix)
            && is_container_id(id)
        {
            return found(id, runtime);
        }
    }

    // A bare id directory (cgroupfs drivers): the parent tells the runtime.
    if is_container_id(component) {
        let runtime = match parent {
            Some("docker" | "actions_job") => ContainerRuntime::Docker,
            _ if in_kube => ContainerRuntime::Kubernetes,
            _ => ContainerRuntime::Unknown,
        };
        return found(component, runtime);
    }
    None
}

/// Container id and runtime for a cgroup path, as written in `/proc/<pid>/cgroup` or
/// relative to (or under) a cgroup mount, for cgroup v2 and v1 layouts of Docker,
/// containerd, nerdctl, CRI-O, Podman and Kubernetes. With nested runtimes (kind,
/// Docker-in-Docker) the innermost container wins, since that is where the process runs.
/// `None` for host cgroups, runtime monitors (`conmon`) and anything unrecognised.
pub fn parse_cgroup_path(path: &str) -> Option<Container> {
    let path = path.trim();
    let path = path.strip_suffix(DELETED_SUFFIX).unwrap_or(path);
    let mut found = None;
    let mut parent: Option<&str> = None;
    let mut in_kube = false;
    let mut pod_uid = None;
    for component in path.split('/').filter(|c| !c.is_empty()) {
        // A pod cgroup is a parent of its containers' (or, with `:`, the same component).
        let pod_part = component.split(':').next().unwrap_or(component);
        if (in_kube || is_kubepods(component))
            && let Some(uid) = pod_uid_of(pod_part)
        {
            pod_uid = Some(uid);
        }
        if let Some(mut container) = match_component(component, parent, in_kube) {
            container.pod = pod_uid.take().map(|uid| Pod {
                uid,
                ..Pod::default()
            });
            found = Some(container);
        }
        in_kube |= is_kubepods(component);
        parent = Some(component);
    }
    found
}

/// The pod uid a Kubernetes pod cgroup names: `pod<uid>` (cgroupfs driver) or
/// `kubepods-<qos>-pod<uid with _ for ->.slice` (systemd driver).
fn pod_uid_of(component: &str) -> Option<String> {
    let base = component.strip_suffix(".slice").unwrap_or(component);
    let (_, uid) = base.rsplit_once("pod")?;
    let uid = uid.replace('_', "-");
    let is_uid = uid.len() == 36 && uid.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    is_uid.then_some(uid)
}

/// The container of a whole `/proc/<pid>/cgroup` file. The cgroup v2 (`0::`) line is
/// preferred; on hybrid hosts runtimes may only place processes in v1 hierarchies, so
/// any v1 line naming a container is used otherwise.
pub fn parse_proc_cgroup(contents: &str) -> Option<Container> {
    let mut v1 = None;
    for line in contents.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(hierarchy), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let is_v2 = hierarchy == "0" && controllers.is_empty();
        if !is_v2 && v1.is_some() {
            continue;
        }
        let Some(container) = parse_cgroup_path(path) else {
            continue;
        };
        if is_v2 {
            return Some(container);
        }
        v1 = Some(container);
    }
    v1
}

/// The cgroup v2 path in a `/proc/<pid>/cgroup` file (the `0::` line), without the
/// ` (deleted)` marker.
pub(super) fn proc_cgroup_v2_path(contents: &str) -> Option<&str> {
    contents.lines().find_map(|line| {
        let path = line.strip_prefix("0::")?.trim_end();
        Some(path.strip_suffix(DELETED_SUFFIX).unwrap_or(path))
    })
}

/// The directory of cgroup `path` under `root`. `None` for paths with `..` (a process
/// outside our cgroup namespace), which would otherwise escape the mount.
pub(super) fn dir_under(root: &Path, path: &str) -> Option<PathBuf> {
    let relative = path.trim_start_matches('/');
    if relative.split('/').any(|c| c == "..") {
        return None;
    }
    Some(root.join(relative))
}

/// Kernel cgroup id of process `pid`: the inode of its cgroup v2 directory under the
/// v2 mount `cgroup_root`. This is the value BPF programs see for the same process, so
/// processes running before the agent started can be matched with live events.
pub fn cgroup_id_of_pid(cgroup_root: &Path, pid: u32) -> Option<u64> {
    let contents = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = proc_cgroup_v2_path(&contents)?;
    let dir = dir_under(cgroup_root, path)?;
    fs::metadata(dir).ok().map(|m| m.ino())
}

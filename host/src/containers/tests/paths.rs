//! Path parsing against every runtime's layout: cgroup paths and /proc cgroup files of
//! docker, containerd, CRI-O, podman, nerdctl and Kubernetes (both drivers), and garbage.

use super::super::*;

pub(super) const ID: &str = "3f4e8a1c2b9d0e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f";
pub(super) const ID2: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";
pub(super) const POD_UID: &str = "0f3c5b2e_8c2a_4d1e_9b7a_1234567890ab";
pub(super) const POD_UID_DASHES: &str = "0f3c5b2e-8c2a-4d1e-9b7a-1234567890ab";

pub(super) fn c(id: &str, runtime: ContainerRuntime) -> Option<Container> {
    Some(Container::new(id, runtime))
}

/// The container id and runtime a path names (its pod uid is checked on its own).
fn check(path: &str, expected: Option<Container>) {
    let found = parse_cgroup_path(path).map(without_pod);
    assert_eq!(found, expected, "path {path:?}");
}

#[test]
fn a_kubernetes_path_names_the_pod_uid() {
    let uid = |path: &str| parse_cgroup_path(path).and_then(|c| c.pod).map(|p| p.uid);
    for path in [
        format!("/kubepods/besteffort/pod{POD_UID_DASHES}/{ID}"),
        format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_UID}.slice/cri-containerd-{ID}.scope"
        ),
        format!("/kubepods-burstable-pod{POD_UID}.slice:cri-containerd:{ID}"),
    ] {
        assert_eq!(uid(&path).as_deref(), Some(POD_UID_DASHES), "{path}");
    }
    // Outside a pod hierarchy, or a pod-like name that is no uid: no pod.
    assert_eq!(uid(&format!("/docker/{ID}")), None);
    assert_eq!(uid(&format!("/kubepods/besteffort/podnotauid/{ID}")), None);
    assert_eq!(
        uid(&format!("/system.slice/pod{POD_UID_DASHES}/{ID}")),
        None
    );
}

#[test]
fn docker_paths() {
    check(
        &format!("/system.slice/docker-{ID}.scope"),
        c(ID, ContainerRuntime::Docker),
    );
    check(&format!("/docker/{ID}"), c(ID, ContainerRuntime::Docker));
    check(&format!("/docker/{ID}/"), c(ID, ContainerRuntime::Docker));
    check(
        &format!("/actions_job/{ID}"),
        c(ID, ContainerRuntime::Docker),
    );
    // Absolute path under a mount.
    check(
        &format!("/sys/fs/cgroup/unified/system.slice/docker-{ID}.scope"),
        c(ID, ContainerRuntime::Docker),
    );
    // Relative to the mount, no leading slash.
    check(
        &format!("system.slice/docker-{ID}.scope"),
        c(ID, ContainerRuntime::Docker),
    );
    // A sub-cgroup the container made (cgroup namespace, delegated).
    check(
        &format!("/system.slice/docker-{ID}.scope/init.scope"),
        c(ID, ContainerRuntime::Docker),
    );
}

#[test]
fn kubernetes_systemd_driver_paths() {
    let besteffort =
        format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{POD_UID}.slice");
    check(
        &format!("{besteffort}/cri-containerd-{ID}.scope"),
        c(ID, ContainerRuntime::Containerd),
    );
    check(
        &format!("{besteffort}/crio-{ID}.scope"),
        c(ID, ContainerRuntime::Crio),
    );
    check(&format!("{besteffort}/crio-conmon-{ID}.scope"), None);
    check(
        &format!("{besteffort}/docker-{ID}.scope"),
        c(ID, ContainerRuntime::Docker),
    );
    // The pod slice alone is not a container.
    check(&besteffort, None);
    // Guaranteed pods have no QoS slice.
    check(
        &format!("/kubepods.slice/kubepods-pod{POD_UID}.slice/cri-containerd-{ID}.scope"),
        c(ID, ContainerRuntime::Containerd),
    );
    check(
        &format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_UID}.slice/crio-{ID}.scope"
        ),
        c(ID, ContainerRuntime::Crio),
    );
}

#[test]
fn containerd_without_systemd_cgroup() {
    check(
        &format!("/kubepods-burstable-pod{POD_UID}.slice:cri-containerd:{ID}"),
        c(ID, ContainerRuntime::Containerd),
    );
    check(
        &format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_UID}.slice:cri-containerd:{ID}"
        ),
        c(ID, ContainerRuntime::Containerd),
    );
    check(
        &format!("/kubepods-pod{POD_UID}.slice:crio:{ID}"),
        c(ID, ContainerRuntime::Crio),
    );
    check(
        &format!("/system.slice:docker:{ID}"),
        c(ID, ContainerRuntime::Docker),
    );
    check(
        &format!("/kubepods-pod{POD_UID}.slice:somethingelse:{ID}"),
        c(ID, ContainerRuntime::Unknown),
    );
    // Too few fields, bad id.
    check(&format!("/cri-containerd:{ID}"), None);
    check(&format!("/x.slice:cri-containerd:{}", &ID[1..]), None);
    check(&format!("/x.slice:cri-containerd:{ID}:"), None);
}

#[test]
fn kubernetes_cgroupfs_driver_paths() {
    check(
        &format!("/kubepods/besteffort/pod{POD_UID_DASHES}/{ID}"),
        c(ID, ContainerRuntime::Kubernetes),
    );
    check(
        &format!("/kubepods/burstable/pod{POD_UID_DASHES}/{ID}"),
        c(ID, ContainerRuntime::Kubernetes),
    );
    check(
        &format!("/kubepods/pod{POD_UID_DASHES}/{ID}"),
        c(ID, ContainerRuntime::Kubernetes),
    );
    check(
        &format!("/kubepods/burstable/pod{POD_UID_DASHES}/crio-{ID}"),
        c(ID, ContainerRuntime::Crio),
    );
    check(
        &format!("/kubepods/burstable/pod{POD_UID_DASHES}/crio-conmon-{ID}"),
        None,
    );
    check(&format!("/kubepods/burstable/pod{POD_UID_DASHES}"), None);
    check("/kubepods/besteffort", None);
}

#[test]
fn crio_paths() {
    check(
        &format!("/machine.slice/crio-{ID}.scope"),
        c(ID, ContainerRuntime::Crio),
    );
    check(&format!("/crio-{ID}"), c(ID, ContainerRuntime::Crio));
    check(&format!("/machine.slice/crio-conmon-{ID}.scope"), None);
    check(&format!("/crio-conmon-{ID}"), None);
}

#[test]
fn podman_paths() {
    check(
        &format!("/machine.slice/libpod-{ID}.scope"),
        c(ID, ContainerRuntime::Podman),
    );
    check(
        &format!("/machine.slice/libpod-{ID}.scope/container"),
        c(ID, ContainerRuntime::Podman),
    );
    let rootless = "/user.slice/user-1000.slice/user@1000.service/user.slice";
    check(
        &format!("{rootless}/libpod-{ID}.scope"),
        c(ID, ContainerRuntime::Podman),
    );
    check(
        &format!("{rootless}/libpod-{ID}.scope/container"),
        c(ID, ContainerRuntime::Podman),
    );
    check(&format!("/machine.slice/libpod-conmon-{ID}.scope"), None);
    check(&format!("{rootless}/libpod-conmon-{ID}.scope"), None);
    // Split mode: conmon stays in the caller's cgroup, the payload gets its own.
    check(
        &format!("{rootless}/podman-4242.scope/libpod-payload-{ID}"),
        c(ID, ContainerRuntime::Podman),
    );
    check(&format!("{rootless}/podman-4242.scope"), None);
    // cgroupfs manager.
    check(
        &format!("/libpod_parent/libpod-{ID}"),
        c(ID, ContainerRuntime::Podman),
    );
    // A pod's infra container under its pod slice.
    check(
        &format!("/machine.slice/machine-libpod_pod_{ID2}.slice/libpod-{ID}.scope"),
        c(ID, ContainerRuntime::Podman),
    );
}

#[test]
fn nerdctl_paths() {
    check(
        &format!("/system.slice/nerdctl-{ID}.scope"),
        c(ID, ContainerRuntime::Containerd),
    );
}

#[test]
fn nested_runtimes_take_innermost() {
    // kind node (Docker container) running a containerd pod, cgroup v2 with cgroupns.
    let node = format!("/system.slice/docker-{ID2}.scope");
    check(
        &format!(
            "{node}/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{POD_UID}.slice/cri-containerd-{ID}.scope"
        ),
        c(ID, ContainerRuntime::Containerd),
    );
    // The node's own services are the node container.
    check(
        &format!("{node}/system.slice/containerd.service"),
        c(ID2, ContainerRuntime::Docker),
    );
    // A conmon inside the node is the node container, not a pod container.
    check(
        &format!("{node}/kubepods.slice/crio-conmon-{ID}.scope"),
        c(ID2, ContainerRuntime::Docker),
    );
    // kind on cgroup v1, cgroupfs inside the node.
    check(
        &format!("/docker/{ID2}/kubepods/besteffort/pod{POD_UID_DASHES}/{ID}"),
        c(ID, ContainerRuntime::Kubernetes),
    );
    // Docker in Docker.
    check(
        &format!("/docker/{ID2}/docker/{ID}"),
        c(ID, ContainerRuntime::Docker),
    );
    // Podman inside a Docker container.
    check(
        &format!("/system.slice/docker-{ID2}.scope/libpod_parent/libpod-{ID}"),
        c(ID, ContainerRuntime::Podman),
    );
    // Unknown runtime nested in Docker still wins: that is where the process runs.
    check(
        &format!("/system.slice/docker-{ID2}.scope/custom/{ID}"),
        c(ID, ContainerRuntime::Unknown),
    );
}

#[test]
fn bare_id_under_unknown_parent_is_unknown_runtime() {
    check(&format!("/{ID}"), c(ID, ContainerRuntime::Unknown));
    check(&format!("/default/{ID}"), c(ID, ContainerRuntime::Unknown));
    // The runtime is told by the immediate parent only.
    check(&format!("/docker/x/{ID}"), c(ID, ContainerRuntime::Unknown));
}

#[test]
fn host_cgroups_are_not_containers() {
    for path in [
        "/",
        "/init.scope",
        "/system.slice",
        "/system.slice/sshd.service",
        "/system.slice/docker.service",
        "/system.slice/containerd.service",
        "/user.slice/user-1000.slice/session-3.scope",
        "/user.slice/user-1000.slice/user@1000.service/app.slice/dbus.service",
        "/machine.slice",
        // 32-hex ids (systemd machine ids, this sandbox's memory cgroup) are not containers.
        "/process_api/40835ea83409f81b325696cd51c01260",
        "/machine.slice/machine-qemu\\x2d1\\x2dvm.scope",
        "/docker",
        "/actions_job",
    ] {
        check(path, None);
    }
}

#[test]
fn id_must_be_exactly_64_lowercase_hex() {
    let upper = ID.to_uppercase();
    let short = &ID[..63];
    let long = format!("{ID}0");
    let non_hex = format!("{}g", &ID[..63]);
    let short_id = &ID[..12];
    for bad in [
        upper.as_str(),
        short,
        long.as_str(),
        non_hex.as_str(),
        short_id,
    ] {
        check(&format!("/system.slice/docker-{bad}.scope"), None);
        check(&format!("/docker/{bad}"), None);
        check(&format!("/kubepods/pod{POD_UID}/{bad}"), None);
        check(&format!("/x.slice:cri-containerd:{bad}"), None);
        check(&format!("/machine.slice/libpod-{bad}.scope"), None);
    }
    // 64 bytes that are not 64 hex characters.
    check(&format!("/docker/{}", "é".repeat(32)), None);
    check(&format!("/docker/{}", "é".repeat(64)), None);
    // Wrong suffixes.
    check(&format!("/system.slice/docker-{ID}.scopex"), None);
    check(&format!("/system.slice/docker-{ID}.service"), None);
    check(&format!("/system.slice/docker-{ID}.scope.scope"), None);
    check(&format!("/system.slice/xdocker-{ID}.scope"), None);
    // A 64-hex id with `.scope` but no prefix.
    check(&format!("/system.slice/{ID}.scope"), None);
}

#[test]
fn whitespace_and_deleted_marker() {
    check(&format!("/docker/{ID}\n"), c(ID, ContainerRuntime::Docker));
    check(
        &format!("/system.slice/docker-{ID}.scope (deleted)"),
        c(ID, ContainerRuntime::Docker),
    );
    check(
        &format!("//docker//{ID}//"),
        c(ID, ContainerRuntime::Docker),
    );
}

#[test]
fn garbage_and_empty() {
    for path in [
        "",
        " ",
        "/",
        "//",
        "\n",
        "\0",
        "docker-",
        "docker-.scope",
        "/docker/",
        ":",
        "::",
        ":::",
        "a:b:",
        ":b:c",
        ".scope",
        "/système/docker-é.scope",
        "/💥/🐳-🐳.scope",
        " (deleted)",
        "..",
        "/../../..",
    ] {
        check(path, None);
    }
}

#[test]
fn long_inputs() {
    let deep = "/a".repeat(200_000);
    check(&deep, None);
    check(
        &format!("{deep}/docker-{ID}.scope"),
        c(ID, ContainerRuntime::Docker),
    );
    check(
        &format!("/docker-{ID}.scope{deep}"),
        c(ID, ContainerRuntime::Docker),
    );
    let wide = "x".repeat(1_000_000);
    check(&wide, None);
    check(&format!("/docker-{wide}.scope"), None);
    check(
        &format!("/{wide}:cri-containerd:{ID}"),
        c(ID, ContainerRuntime::Containerd),
    );
    check(&":".repeat(100_000), None);
    let many_ids = format!("/docker/{ID}").repeat(10_000);
    check(&many_ids, c(ID, ContainerRuntime::Docker));
}

#[test]
fn proc_cgroup_files() {
    // Pure cgroup v2.
    check_proc(
        &format!("0::/system.slice/docker-{ID}.scope\n"),
        c(ID, ContainerRuntime::Docker),
    );
    // Hybrid host: the v2 line is the root, v1 lines name the container.
    let hybrid = format!(
        "12:pids:/docker/{ID}\n11:memory:/docker/{ID}\n1:name=systemd:/docker/{ID}\n0::/\n"
    );
    check_proc(&hybrid, c(ID, ContainerRuntime::Docker));
    // The v2 line wins over v1 lines, wherever it is.
    let both = format!(
        "4:memory:/docker/{ID2}\n0::/kubepods.slice/kubepods-pod{POD_UID}.slice/crio-{ID}.scope\n"
    );
    check_proc(&both, c(ID, ContainerRuntime::Crio));
    // Colons inside a v1 path.
    check_proc(
        &format!("5:memory:/kubepods-burstable-pod{POD_UID}.slice:cri-containerd:{ID}\n"),
        c(ID, ContainerRuntime::Containerd),
    );
    // First v1 line naming a container.
    check_proc(
        &format!("3:cpu:/\n2:pids:/docker/{ID}\n1:blkio:/docker/{ID2}\n"),
        c(ID, ContainerRuntime::Docker),
    );
    // This sandbox's own file: a host process.
    check_proc(
        "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/40835ea83409f81b325696cd51c01260\n0::/\n",
        None,
    );
    // Deleted cgroup.
    check_proc(
        &format!("0::/system.slice/docker-{ID}.scope (deleted)\n"),
        c(ID, ContainerRuntime::Docker),
    );
    // A `0:cpu:` line is v1 syntax with hierarchy 0, not the v2 line; still usable.
    check_proc(
        &format!("0:cpu:/docker/{ID}\n"),
        c(ID, ContainerRuntime::Docker),
    );
    for garbage in [
        "",
        "\n\n",
        "0::",
        "0::\n",
        "garbage",
        "a:b",
        ":::",
        "0:/docker",
    ] {
        check_proc(garbage, None);
    }
    check_proc(&format!("0:/docker/{ID}"), None);
}

fn check_proc(contents: &str, expected: Option<Container>) {
    assert_eq!(
        parse_proc_cgroup(contents).map(without_pod),
        expected,
        "contents {contents:?}"
    );
}

/// A container's id and runtime only.
pub(super) fn without_pod(container: Container) -> Container {
    Container::new(container.id, container.runtime)
}

#[test]
fn proc_cgroup_v2_path_extraction() {
    assert_eq!(proc_cgroup_v2_path("1:cpu:/a\n0::/b/c\n"), Some("/b/c"));
    assert_eq!(proc_cgroup_v2_path("0::/b (deleted)\n"), Some("/b"));
    assert_eq!(proc_cgroup_v2_path("1:cpu:/a\n"), None);
    assert_eq!(
        dir_under(Path::new("/r"), "/a/b"),
        Some(PathBuf::from("/r/a/b"))
    );
    assert_eq!(dir_under(Path::new("/r"), "/"), Some(PathBuf::from("/r/")));
    assert_eq!(dir_under(Path::new("/r"), "/../../x"), None);
}

/// Deterministic pseudo-random inputs built from path fragments and raw characters:
/// no panics, and any id returned is a valid full id.
#[test]
fn fuzz_like_inputs_never_panic() {
    let fragments = [
        "/",
        ":",
        "docker-",
        "cri-containerd-",
        "crio-",
        "crio-conmon-",
        "libpod-",
        "libpod-conmon-",
        "libpod-payload-",
        "nerdctl-",
        ".scope",
        "kubepods",
        "docker",
        "actions_job",
        " (deleted)",
        "\n",
        "0::",
        "1:cpu:",
        ID,
        &ID[..63],
        "é",
        "\u{0}",
        "\\",
        "a",
        "F",
    ];
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let parts = (next() % 12) as usize;
        let mut input = String::new();
        for _ in 0..parts {
            let r = next();
            if r % 5 == 0 {
                input.push(char::from_u32((r >> 8) as u32 % 0x3000).unwrap_or('?'));
            } else {
                input.push_str(fragments[(r >> 8) as usize % fragments.len()]);
            }
        }
        for found in [parse_cgroup_path(&input), parse_proc_cgroup(&input)]
            .into_iter()
            .flatten()
        {
            assert!(is_container_id(&found.id), "input {input:?}");
        }
        let _ = crate::sys::mounts::cgroup2_root_in(&crate::sys::mounts::parse(&input));
        let _ = proc_cgroup_v2_path(&input);
    }
}

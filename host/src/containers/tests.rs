//! Path parsing against every runtime's layout, and the resolver on real cgroups.

use super::resolver::*;
use super::*;
use std::process::{Child, Command, Stdio};

/// Directories made for a test, removed innermost first even if the test fails.
struct TestDirs {
    dirs: Vec<PathBuf>,
}

impl TestDirs {
    /// Creates `base/<components...>` one level at a time.
    fn create(base: PathBuf, components: &[&str]) -> TestDirs {
        let mut dirs = vec![base];
        for component in components {
            let next = dirs.last().unwrap().join(component);
            dirs.push(next);
        }
        for dir in &dirs {
            fs::create_dir(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        }
        TestDirs { dirs }
    }

    fn leaf(&self) -> &Path {
        self.dirs.last().unwrap()
    }

    fn remove(&mut self) {
        while let Some(dir) = self.dirs.pop() {
            // A just-killed process can keep a cgroup busy for a moment.
            for attempt in 0.. {
                match fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(_) if attempt < 100 => std::thread::sleep(Duration::from_millis(10)),
                    Err(e) => panic!("rmdir {}: {e}", dir.display()),
                }
            }
        }
    }
}

impl Drop for TestDirs {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.remove();
        } else {
            for dir in self.dirs.drain(..).rev() {
                let _ = fs::remove_dir(dir);
            }
        }
    }
}

/// No rate limit at all, so a test can make walks back to back.
fn unlimited(resolver: ContainerResolver, max_entries: usize) -> ContainerResolver {
    let mut resolver = resolver.with_limits(max_entries, Duration::ZERO);
    resolver.walk_cost_factor = 0;
    resolver
}

fn ino(path: &Path) -> u64 {
    fs::metadata(path).unwrap().ino()
}

fn test_cgroup(tag: &str, components: &[&str]) -> (ContainerResolver, TestDirs) {
    let resolver = ContainerResolver::detect().expect("cgroup v2 mount");
    let base = resolver
        .root()
        .join(format!("rulehost-test-{}-{tag}", std::process::id()));
    let dirs = TestDirs::create(base, components);
    (resolver, dirs)
}

const ID: &str = "3f4e8a1c2b9d0e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f";
const ID2: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";
const POD_UID: &str = "0f3c5b2e_8c2a_4d1e_9b7a_1234567890ab";
const POD_UID_DASHES: &str = "0f3c5b2e-8c2a-4d1e-9b7a-1234567890ab";

fn c(id: &str, runtime: ContainerRuntime) -> Option<Container> {
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
fn without_pod(container: Container) -> Container {
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

#[test]
fn resolves_real_cgroup_and_forgets_it() {
    let scope = format!("cri-containerd-{ID}.scope");
    let (resolver, mut dirs) = test_cgroup("resolve", &[&scope]);
    let mut resolver = unlimited(resolver, DEFAULT_MAX_ENTRIES);
    let leaf = dirs.leaf().to_path_buf();
    let id = ino(&leaf);
    let parent_id = ino(leaf.parent().unwrap());
    let expected_path = format!("/rulehost-test-{}-resolve/{scope}", std::process::id());

    assert_eq!(
        resolver.resolve_owned(id),
        c(ID, ContainerRuntime::Containerd)
    );
    assert_eq!(resolver.walks(), 1);
    assert_eq!(resolver.path_of(id), Some(expected_path.as_str()));
    // The same walk cached the parent (a host cgroup) and the root.
    assert_eq!(resolver.resolve_owned(parent_id), None);
    assert_eq!(
        resolver.path_of(parent_id),
        Some(&expected_path[..expected_path.len() - scope.len() - 1])
    );
    let root_id = ino(resolver.root());
    assert_eq!(resolver.path_of(root_id), Some("/"));
    assert_eq!(
        resolver.resolve_owned(id),
        c(ID, ContainerRuntime::Containerd)
    );
    assert_eq!(resolver.walks(), 1, "cache hits must not walk");
    // Id 0 means "unknown" and never walks.
    assert_eq!(resolver.resolve_owned(0), None);
    assert_eq!(resolver.walks(), 1);

    dirs.remove();
    resolver.forget(id);
    assert!(!resolver.entries.contains_key(&id));
    // Gone from the tree: a walk finds nothing and the answer is cached.
    assert_eq!(resolver.resolve_owned(id), None);
    assert_eq!(resolver.walks(), 2);
    assert_eq!(resolver.resolve_owned(id), None);
    assert_eq!(resolver.path_of(id), None);
    assert_eq!(resolver.walks(), 2, "negative answers are cached");
    // The removed parent dropped out of the cache with that walk.
    assert!(!resolver.entries.contains_key(&parent_id));
}

#[test]
fn podman_child_cgroup_resolves_to_the_container() {
    let scope = format!("libpod-{ID}.scope");
    let (mut resolver, _dirs) = test_cgroup("podman", &["machine.slice", &scope, "container"]);
    let base = resolver
        .root()
        .join(format!("rulehost-test-{}-podman", std::process::id()));
    let child = base.join("machine.slice").join(&scope).join("container");
    assert_eq!(
        resolver.resolve_owned(ino(&child)),
        c(ID, ContainerRuntime::Podman)
    );
    assert_eq!(
        resolver.resolve_owned(ino(child.parent().unwrap())),
        c(ID, ContainerRuntime::Podman)
    );
    assert_eq!(
        resolver.resolve_owned(ino(&base.join("machine.slice"))),
        None
    );
    assert_eq!(resolver.walks(), 1);
}

/// Kills and reaps a child process started by a test.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn cgroup_id_of_pid_is_the_directory_inode() {
    let scope = format!("docker-{ID2}.scope");
    let (mut resolver, dirs) = test_cgroup("pid", &["system.slice", &scope]);
    let leaf = dirs.leaf().to_path_buf();
    let child = Command::new("sleep")
        .arg("60")
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn sleep");
    let child = ChildGuard(child);
    let pid = child.0.id();
    fs::write(leaf.join("cgroup.procs"), pid.to_string()).expect("move child into cgroup");

    let id = ino(&leaf);
    assert_eq!(cgroup_id_of_pid(resolver.root(), pid), Some(id));
    let contents = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert_eq!(
        parse_proc_cgroup(&contents),
        c(ID2, ContainerRuntime::Docker)
    );
    // The method caches the path, so resolving needs no walk.
    assert_eq!(resolver.cgroup_id_of_pid(pid), Some(id));
    assert_eq!(resolver.resolve_owned(id), c(ID2, ContainerRuntime::Docker));
    assert_eq!(resolver.walks(), 0);

    // Our own process: whatever cgroup it is in, the id is its directory's inode.
    let own = fs::read_to_string("/proc/self/cgroup").unwrap();
    let own_dir = dir_under(resolver.root(), proc_cgroup_v2_path(&own).unwrap()).unwrap();
    assert_eq!(
        cgroup_id_of_pid(resolver.root(), std::process::id()),
        Some(ino(&own_dir))
    );
    assert_eq!(cgroup_id_of_pid(resolver.root(), u32::MAX), None);
    drop(child);
    drop(dirs);
}

#[test]
fn walks_are_rate_limited_and_insert_needs_none() {
    let scope = format!("crio-{ID}.scope");
    let (resolver, dirs) = test_cgroup("ratelimit", &[&scope]);
    let mut resolver = resolver.with_limits(DEFAULT_MAX_ENTRIES, Duration::from_secs(3600));
    let id = ino(dirs.leaf());

    // A flood of unknown ids: one walk, then none until the interval passes.
    assert_eq!(resolver.resolve_owned(u64::MAX - 1), None);
    assert_eq!(resolver.walks(), 1);
    for unknown in 2..1000 {
        assert_eq!(resolver.resolve_owned(u64::MAX - unknown), None);
    }
    assert_eq!(resolver.walks(), 1);
    // The walk filled the cache for the test cgroup too.
    assert_eq!(resolver.resolve_owned(id), c(ID, ContainerRuntime::Crio));

    // A path told by the kernel needs no walk.
    let told = u64::MAX - 5000;
    assert_eq!(
        resolver
            .insert(told, &format!("kubepods/pod{POD_UID}/{ID2}"))
            .map(|c| without_pod((*c).clone())),
        c(ID2, ContainerRuntime::Kubernetes)
    );
    assert_eq!(
        resolver.resolve_owned(told).map(without_pod),
        c(ID2, ContainerRuntime::Kubernetes)
    );
    assert_eq!(
        resolver.path_of(told),
        Some(format!("/kubepods/pod{POD_UID}/{ID2}").as_str())
    );
    assert_eq!(resolver.walks(), 1);
}

#[test]
fn negative_answer_is_fixed_by_a_later_walk() {
    let scope = format!("nerdctl-{ID}.scope");
    let (resolver, dirs) = test_cgroup("negative", &[&scope]);
    let mut resolver = unlimited(resolver, DEFAULT_MAX_ENTRIES);
    let id = ino(dirs.leaf());

    // As if an earlier walk had run before the cgroup existed.
    resolver.entries.insert(id, Entry::missing(Instant::now()));
    assert_eq!(
        resolver.resolve_owned(id),
        None,
        "fresh negative answer stands"
    );
    assert_eq!(resolver.walks(), 0);
    let long_ago = Instant::now()
        .checked_sub(Duration::from_secs(60))
        .unwrap_or_else(Instant::now);
    resolver.entries.insert(id, Entry::missing(long_ago));
    resolver.negative_retry = Duration::from_secs(30);
    assert_eq!(
        resolver.resolve_owned(id),
        c(ID, ContainerRuntime::Containerd)
    );
    assert_eq!(resolver.walks(), 1);

    // A walk for another id also fixes a negative entry.
    resolver.entries.insert(id, Entry::missing(Instant::now()));
    assert_eq!(resolver.resolve_owned(u64::MAX - 3), None);
    assert_eq!(resolver.walks(), 2);
    assert_eq!(
        resolver.resolve_owned(id),
        c(ID, ContainerRuntime::Containerd)
    );
    assert_eq!(resolver.walks(), 2);
}

#[test]
fn cache_is_bounded_and_keeps_containers_first() {
    // Any directory tree works: the resolver only needs inode numbers.
    let base = std::env::temp_dir().join(format!("rulehost-containers-{}", std::process::id()));
    let _ = fs::remove_dir_all(&base);
    fs::create_dir(&base).unwrap();
    struct Cleanup(PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(base.clone());
    for i in 0..20 {
        fs::create_dir(base.join(format!("host-{i}.service"))).unwrap();
    }
    let containers = [ID, ID2];
    for id in containers {
        fs::create_dir(base.join(format!("docker-{id}.scope"))).unwrap();
    }

    let mut resolver = unlimited(ContainerResolver::new(base.clone()), 5);
    let host_id = ino(&base.join("host-7.service"));
    assert_eq!(resolver.resolve_owned(host_id), None);
    assert_eq!(resolver.path_of(host_id), Some("/host-7.service"));
    assert!(resolver.cache_len() <= 5, "len {}", resolver.cache_len());
    let walks = resolver.walks();
    for id in containers {
        let dir = base.join(format!("docker-{id}.scope"));
        assert_eq!(
            resolver.resolve_owned(ino(&dir)),
            c(id, ContainerRuntime::Docker)
        );
    }
    assert_eq!(resolver.walks(), walks, "containers were kept by the walk");

    // Inserts beyond the bound evict, missing ids first.
    for i in 0..50 {
        resolver
            .entries
            .insert(u64::MAX - i, Entry::missing(Instant::now()));
    }
    resolver.insert(1_000_000, &format!("/x/docker-{ID}.scope"));
    assert!(resolver.entries.values().all(|e| e.path.is_some()));
    assert!(resolver.cache_len() <= 5, "len {}", resolver.cache_len());
    for i in 1..50 {
        resolver.insert(1_000_000 + i, &format!("/x/docker-{ID}.scope"));
        assert!(resolver.cache_len() <= 5, "len {}", resolver.cache_len());
    }
    assert_eq!(
        resolver.resolve_owned(1_000_049),
        c(ID, ContainerRuntime::Docker)
    );
    // Re-inserting a cached id evicts nothing.
    let before = resolver.cache_len();
    resolver.insert(1_000_049, "/other");
    assert_eq!(resolver.cache_len(), before);
    assert_eq!(resolver.resolve_owned(1_000_049), None);

    // A floor of one entry.
    let mut tiny = unlimited(ContainerResolver::new(base.clone()), 0);
    assert_eq!(tiny.resolve(host_id), None);
    assert_eq!(tiny.cache_len(), 1);
    assert_eq!(tiny.path_of(host_id), Some("/host-7.service"));
}

//! Which container a process runs in: parsing cgroup paths into a container id and
//! runtime, and mapping the kernel's cgroup id (the cgroup v2 directory's inode number,
//! what `bpf_get_current_cgroup_id` returns) to a path and container with a bounded cache.

use crate::events::{Container, ContainerRuntime};
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Length of a full container id (64 lowercase hex characters).
const ID_LEN: usize = 64;

/// Single-component forms `<prefix><id>` with an optional `.scope` suffix.
const PREFIXES: &[(&str, ContainerRuntime)] = &[
    ("docker-", ContainerRuntime::Docker),
    ("cri-containerd-", ContainerRuntime::Containerd),
    ("nerdctl-", ContainerRuntime::Containerd),
    ("crio-", ContainerRuntime::Crio),
    ("libpod-payload-", ContainerRuntime::Podman),
    ("libpod-", ContainerRuntime::Podman),
];

/// Suffix the kernel appends to the v2 path of a removed cgroup in `/proc/<pid>/cgroup`.
const DELETED_SUFFIX: &str = " (deleted)";

/// True for exactly 64 lowercase hex characters, the only id form accepted.
fn is_container_id(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// ContainerRuntime named in the middle field of a runc-style `<parent>:<runtime>:<id>` name.
fn runtime_from_name(name: &str) -> ContainerRuntime {
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
fn is_kubepods(component: &str) -> bool {
    component.starts_with("kubepods") || component.starts_with("kubelet-kubepods")
}

/// The container one path component names, given its parent component and whether a
/// Kubernetes pod hierarchy encloses it.
fn match_component(component: &str, parent: Option<&str>, in_kube: bool) -> Option<Container> {
    let found = |id: &str, runtime| {
        Some(Container {
            id: id.to_owned(),
            runtime,
        })
    };

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
    for component in path.split('/').filter(|c| !c.is_empty()) {
        if let Some(container) = match_component(component, parent, in_kube) {
            found = Some(container);
        }
        in_kube |= is_kubepods(component);
        parent = Some(component);
    }
    found
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
fn proc_cgroup_v2_path(contents: &str) -> Option<&str> {
    contents.lines().find_map(|line| {
        let path = line.strip_prefix("0::")?.trim_end();
        Some(path.strip_suffix(DELETED_SUFFIX).unwrap_or(path))
    })
}

/// The directory of cgroup `path` under `root`. `None` for paths with `..` (a process
/// outside our cgroup namespace), which would otherwise escape the mount.
fn dir_under(root: &Path, path: &str) -> Option<PathBuf> {
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

/// Default bound on cached cgroups; a host with more cgroups keeps the containers first.
pub const DEFAULT_MAX_ENTRIES: usize = 16 * 1024;
/// Default minimum time between two tree walks.
pub const DEFAULT_MIN_WALK_INTERVAL: Duration = Duration::from_millis(50);
/// Walks are also spaced by this many times the last walk's duration, so that a flood of
/// unknown ids spends at most about 1/20 of a core on walking, however large the tree.
const WALK_COST_FACTOR: u32 = 20;
/// How long a "not found" answer stands before an id may trigger a walk again (a walk
/// made for another id refreshes it anyway).
const NEGATIVE_RETRY: Duration = Duration::from_secs(5);
/// Safety bound on directories visited in one walk.
const MAX_WALK_DIRS: usize = 1 << 20;

/// What is known about one cgroup id.
#[derive(Debug)]
struct Entry {
    /// Path relative to the mount (`/system.slice/...`); `None` when a walk did not find it.
    path: Option<Box<str>>,
    container: Option<Arc<Container>>,
    /// When a walk last failed to find it (negative entries only).
    checked: Instant,
}

impl Entry {
    fn found(path: &str, now: Instant) -> Entry {
        Entry {
            container: parse_cgroup_path(path).map(Arc::new),
            path: Some(path.into()),
            checked: now,
        }
    }

    fn missing(now: Instant) -> Entry {
        Entry {
            path: None,
            container: None,
            checked: now,
        }
    }
}

/// What an event's cgroup turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    Container(Arc<Container>),
    /// A cgroup that exists and is no container's.
    Host,
    /// Not found (yet): neither a container nor known to be the host's.
    Unknown,
}

/// Maps kernel cgroup ids to containers. Events carry only the cgroup id; the path (and
/// so the container) is found by walking the cgroup v2 tree, where a directory's inode
/// is its cgroup id. One walk caches every directory it sees, walks are rate-limited,
/// and the cache is bounded, so unknown or forged ids cannot make it expensive.
#[derive(Debug)]
pub struct ContainerResolver {
    root: PathBuf,
    entries: HashMap<u64, Entry>,
    max_entries: usize,
    min_walk_interval: Duration,
    negative_retry: Duration,
    walk_cost_factor: u32,
    /// End and duration of the last walk.
    last_walk: Option<(Instant, Duration)>,
    walks: u64,
}

impl ContainerResolver {
    /// A resolver over the cgroup v2 hierarchy mounted at `cgroup_root`.
    pub fn new(cgroup_root: PathBuf) -> ContainerResolver {
        ContainerResolver {
            root: cgroup_root,
            entries: HashMap::new(),
            max_entries: DEFAULT_MAX_ENTRIES,
            min_walk_interval: DEFAULT_MIN_WALK_INTERVAL,
            negative_retry: NEGATIVE_RETRY,
            walk_cost_factor: WALK_COST_FACTOR,
            last_walk: None,
            walks: 0,
        }
    }

    /// A resolver over this host's cgroup v2 mount, found in `/proc/self/mounts`.
    pub fn detect() -> anyhow::Result<ContainerResolver> {
        Ok(ContainerResolver::new(crate::mounts::cgroup2_root()?))
    }

    /// Overrides the cache bound (at least 1) and the minimum time between walks, for
    /// hosts with unusually many cgroups and for tests.
    pub fn with_limits(
        mut self,
        max_entries: usize,
        min_walk_interval: Duration,
    ) -> ContainerResolver {
        self.max_entries = max_entries.max(1);
        self.min_walk_interval = min_walk_interval;
        self
    }

    /// The cgroup v2 mount point this resolver walks.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Number of cached ids (found or not), for metrics.
    pub fn cache_len(&self) -> usize {
        self.entries.len()
    }

    /// Number of tree walks made so far, for metrics.
    pub fn walks(&self) -> u64 {
        self.walks
    }

    /// The container whose cgroup has kernel id `cgroup_id`; `None` for host cgroups
    /// and ids not (yet) found. Cache hits cost a hash lookup; a miss walks the tree
    /// when the rate limit allows.
    pub fn resolve(&mut self, cgroup_id: u64) -> Option<Arc<Container>> {
        self.lookup(cgroup_id)?.container.clone()
    }

    /// [`ContainerResolver::resolve`], unshared (for comparisons in tests and tools).
    pub fn resolve_owned(&mut self, cgroup_id: u64) -> Option<Container> {
        self.resolve(cgroup_id).map(|c| (*c).clone())
    }

    /// The path of cgroup `cgroup_id` relative to the mount (as in `/proc/<pid>/cgroup`),
    /// looked up like [`ContainerResolver::resolve`].
    pub fn path_of(&mut self, cgroup_id: u64) -> Option<&str> {
        self.lookup(cgroup_id)?.path.as_deref()
    }

    /// Records the path of `cgroup_id` when it is known without a walk (the kernel
    /// reported it, or it was read from `/proc`); returns its container.
    pub fn insert(&mut self, cgroup_id: u64, path: &str) -> Option<Arc<Container>> {
        let path = path.strip_suffix(DELETED_SUFFIX).unwrap_or(path);
        let path = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        };
        self.make_room(cgroup_id);
        let entry = Entry::found(&path, Instant::now());
        let container = entry.container.clone();
        self.entries.insert(cgroup_id, entry);
        container
    }

    /// Drops `cgroup_id` from the cache, when its cgroup is removed.
    pub fn forget(&mut self, cgroup_id: u64) {
        self.entries.remove(&cgroup_id);
    }

    /// Resolves the cgroup of an event from process `pid`: cache first, then the
    /// process's `/proc/<pid>/cgroup` (no walk; fails only if it already exited), then
    /// a rate-limited walk.
    pub fn resolve_event(&mut self, cgroup_id: u64, pid: u32) -> Resolution {
        let cached = matches!(self.entries.get(&cgroup_id), Some(e) if e.path.is_some());
        if !cached && cgroup_id != 0 {
            let _ = self.cgroup_id_of_pid(pid);
        }
        match self.lookup(cgroup_id) {
            Some(Entry {
                path: Some(_),
                container: Some(container),
                ..
            }) => Resolution::Container(container.clone()),
            Some(Entry { path: Some(_), .. }) => Resolution::Host,
            _ => Resolution::Unknown,
        }
    }

    /// Kernel cgroup id of process `pid` (see [`cgroup_id_of_pid`]); its path is cached
    /// too, so resolving that id needs no walk.
    pub fn cgroup_id_of_pid(&mut self, pid: u32) -> Option<u64> {
        let contents = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let path = proc_cgroup_v2_path(&contents)?;
        let id = fs::metadata(dir_under(&self.root, path)?).ok()?.ino();
        self.insert(id, path);
        Some(id)
    }

    fn lookup(&mut self, cgroup_id: u64) -> Option<&Entry> {
        // 0 is what events carry when the id is unknown; no directory has inode 0.
        if cgroup_id == 0 {
            return None;
        }
        let now = Instant::now();
        let stale = match self.entries.get(&cgroup_id) {
            Some(entry) if entry.path.is_some() => false,
            Some(entry) => now.saturating_duration_since(entry.checked) >= self.negative_retry,
            None => true,
        };
        if stale && self.may_walk(now) {
            self.walk(cgroup_id);
        }
        self.entries.get(&cgroup_id)
    }

    fn may_walk(&self, now: Instant) -> bool {
        match self.last_walk {
            None => true,
            Some((end, cost)) => {
                let interval = self
                    .min_walk_interval
                    .max(cost.saturating_mul(self.walk_cost_factor));
                now.saturating_duration_since(end) >= interval
            }
        }
    }

    /// Walks the whole tree and rebuilds the cache from it: `wanted` first (found or
    /// not), then containers, then host cgroups, then still-missing ids, up to the bound.
    /// Cached cgroups that no longer exist drop out.
    fn walk(&mut self, wanted: u64) {
        let start = Instant::now();
        let seen = scan_tree(&self.root);
        let now = Instant::now();

        let mut fresh = HashMap::with_capacity(self.max_entries.min(seen.len() + 1));
        let mut containers = Vec::new();
        let mut hosts = Vec::new();
        for (id, path) in seen {
            let entry = Entry::found(&path, now);
            if id == wanted {
                fresh.insert(id, entry);
            } else if entry.container.is_some() {
                containers.push((id, entry));
            } else {
                hosts.push((id, entry));
            }
        }
        fresh.entry(wanted).or_insert_with(|| Entry::missing(now));
        for (id, entry) in containers.into_iter().chain(hosts) {
            if fresh.len() >= self.max_entries {
                break;
            }
            fresh.insert(id, entry);
        }
        for (id, entry) in self.entries.drain() {
            if fresh.len() >= self.max_entries {
                break;
            }
            if entry.path.is_none() {
                fresh.entry(id).or_insert_with(|| Entry::missing(now));
            }
        }
        self.entries = fresh;
        self.walks += 1;
        self.last_walk = Some((now, now.saturating_duration_since(start)));
    }

    /// Frees a slot for a new id when the cache is full: missing ids go first, then an
    /// arbitrary entry.
    fn make_room(&mut self, incoming: u64) {
        if self.entries.len() < self.max_entries || self.entries.contains_key(&incoming) {
            return;
        }
        self.entries.retain(|_, entry| entry.path.is_some());
        if self.entries.len() >= self.max_entries
            && let Some(&victim) = self.entries.keys().next()
        {
            self.entries.remove(&victim);
        }
    }
}

/// Every directory under `root` (itself included) as (inode, path relative to `root`
/// starting with `/`). Inodes come from `readdir`, so no directory is stat'ed but the root.
fn scan_tree(root: &Path) -> Vec<(u64, String)> {
    let mut seen = Vec::new();
    if let Ok(meta) = fs::metadata(root) {
        seen.push((meta.ino(), "/".to_owned()));
    }
    let mut pending = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, relative)) = pending.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue; // removed while walking, or unreadable
        };
        for entry in entries.flatten() {
            if seen.len() >= MAX_WALK_DIRS {
                return seen;
            }
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let child = format!("{relative}/{}", entry.file_name().to_string_lossy());
            seen.push((entry.ino(), child.clone()));
            pending.push((entry.path(), child));
        }
    }
    seen
}

#[cfg(test)]
mod tests {
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
        Some(Container {
            id: id.to_owned(),
            runtime,
        })
    }

    fn check(path: &str, expected: Option<Container>) {
        assert_eq!(parse_cgroup_path(path), expected, "path {path:?}");
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
        let besteffort = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{POD_UID}.slice"
        );
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
            parse_proc_cgroup(contents),
            expected,
            "contents {contents:?}"
        );
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
            let _ = crate::mounts::cgroup2_root_in(&crate::mounts::parse(&input));
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
                .map(|c| (*c).clone()),
            c(ID2, ContainerRuntime::Kubernetes)
        );
        assert_eq!(
            resolver.resolve_owned(told),
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
}

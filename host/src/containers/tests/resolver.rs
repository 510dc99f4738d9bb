//! The resolver on real cgroups: ids resolved and forgotten, rate-limited walks, a
//! negative answer fixed later, the bounded cache.

use super::super::resolver::*;
use super::super::*;
use super::paths::{ID, ID2, POD_UID, c, without_pod};
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

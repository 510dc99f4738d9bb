//! The kernel's cgroup id to a path and container, with a bounded cache and rate-limited
//! walks of the cgroup tree for ids it has not seen.

use super::*;

/// Default bound on cached cgroups; a host with more cgroups keeps the containers first.
pub const DEFAULT_MAX_ENTRIES: usize = 16 * 1024;
/// Default minimum time between two tree walks.
pub const DEFAULT_MIN_WALK_INTERVAL: Duration = Duration::from_millis(50);
/// Walks are also spaced by this many times the last walk's duration, so that a flood of
/// unknown ids spends at most about 1/20 of a core on walking, however large the tree.
pub(super) const WALK_COST_FACTOR: u32 = 20;
/// How long a "not found" answer stands before an id may trigger a walk again (a walk
/// made for another id refreshes it anyway).
pub(super) const NEGATIVE_RETRY: Duration = Duration::from_secs(5);
/// Safety bound on directories visited in one walk.
pub(super) const MAX_WALK_DIRS: usize = 1 << 20;

/// What is known about one cgroup id.
#[derive(Debug)]
pub(super) struct Entry {
    /// Path relative to the mount (`/system.slice/...`); `None` when a walk did not find it.
    pub(super) path: Option<Box<str>>,
    pub(super) container: Option<Arc<Container>>,
    /// When a walk last failed to find it (negative entries only).
    pub(super) checked: Instant,
}

impl Entry {
    pub(super) fn found(path: &str, now: Instant) -> Entry {
        Entry {
            container: parse_cgroup_path(path).map(Arc::new),
            path: Some(path.into()),
            checked: now,
        }
    }

    pub(super) fn missing(now: Instant) -> Entry {
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
    pub(super) root: PathBuf,
    pub(super) entries: HashMap<u64, Entry>,
    pub(super) max_entries: usize,
    pub(super) min_walk_interval: Duration,
    pub(super) negative_retry: Duration,
    pub(super) walk_cost_factor: u32,
    /// End and duration of the last walk.
    pub(super) last_walk: Option<(Instant, Duration)>,
    pub(super) walks: u64,
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
        Ok(ContainerResolver::new(crate::sys::mounts::cgroup2_root()?))
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

    /// Ids of every host (non-container) cgroup in the tree now, the root included, for
    /// the kernel's host set; nothing is cached.
    pub fn host_cgroups(&self) -> Vec<u64> {
        scan_tree(&self.root)
            .into_iter()
            .filter(|(_, path)| super::parse_cgroup_path(path).is_none())
            .map(|(id, _)| id)
            .collect()
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
pub(super) fn scan_tree(root: &Path) -> Vec<(u64, String)> {
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

//! Live kernel events: loads rulehost's eBPF programs (`ebpf/programs`, layouts in
//! `rulehost-ebpf-common`), attaches each hook with the best mechanism the running
//! kernel allows, and decodes the ring-buffer records into [`Event`]s.
//!
//! Hook choice, best first:
//! - exec: `tp_btf/sched_process_exec`, else `tracepoint/sched/sched_process_exec`,
//!   each walking the environment with `bpf_loop`, else with a bounded loop, else not
//!   at all (then wanted entries are read from `/proc/<pid>/environ` when drained);
//! - connect: `lsm/socket_connect` (BPF LSM), else `fentry/security_socket_connect`,
//!   else `cgroup/connect4` + `cgroup/connect6` on the cgroup v2 root;
//! - cgroup removal: `tracepoint/cgroup/cgroup_rmdir` (optional).
//!
//! Kernel structure offsets (task_struct, mm_struct, linux_binprm, socket) are read
//! from the running kernel's BTF (`/sys/kernel/btf/vmlinux`) and tracepoint offsets
//! from tracefs format files at start-up, then set as the programs' read-only global
//! `KERNEL_OFFSETS` before load, so the object runs on any kernel layout and the
//! verifier checks each BTF field read against the kernel's own types.

mod attach;
mod config;
mod decode;
mod environ;
mod offsets;
mod preflight;
mod report;
#[cfg(test)]
mod tests;

use attach::*;
use config::*;
use decode::disarmed_exec;
pub use decode::{decode, decode_with_clock, monotonic_to_epoch_ns};
use offsets::*;
use preflight::*;
pub use report::{EnvCapture, FORBID_HOOKS_ENV, Forbidden, ProgramLoad, Unmet};
use report::{Mechanism, timed};

use crate::events::{Body, Event, Process, SocketAddress, SocketType, Truncation};
use anyhow::{Context, Result, anyhow, bail};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        BtfTracePoint, CgroupAttachMode, CgroupSockAddr, FEntry, Lsm, ProgramError, TracePoint,
    },
};
use rulehost_ebpf_common as abi;
use std::{
    fs,
    mem::size_of,
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::{AsFd, OwnedFd},
    path::{Path, PathBuf},
    time::Duration,
};
use tokio::io::unix::AsyncFd;

/// Bytes waiting in the ring buffer (at most a quarter of it) before the kernel wakes
/// user space; below it records are only picked up by the caller's short polling timer.
pub const WAKEUP_BYTES: u32 = 256 << 10;

/// Most records one [`Probes::drain`] call takes, so a producer that never stops
/// cannot keep the caller in `drain` forever.
const DRAIN_MAX: usize = 1 << 16;

/// What to capture.
#[derive(Debug, Clone, Default)]
pub struct ProbeConfig {
    /// Environment variable names whose `NAME=value` entries are captured at exec
    /// (at most 8, each at most 63 bytes), reported in this order. Empty: no
    /// environment is read.
    pub env_vars: Vec<String>,
    /// Suppress exec/connect events, in the kernel, from cgroups marked with
    /// [`Probes::mark_host_cgroup`]. Unmarked cgroups are always reported.
    pub containers_only: bool,
    /// The eBPF object to load; `None` loads the one embedded at build time.
    pub bpf_object: Option<PathBuf>,
    /// Ring buffer size in bytes (a power-of-two number of pages); `None`: 8 MiB.
    pub ring_bytes: Option<u32>,
}

/// One decoded ring-buffer record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeEvent {
    /// An exec or a connect, with `container: None` (resolved from `cgroup_id` by the
    /// caller) and, for connects, `ppid: 0`.
    Event(Event),
    /// An exec or a connect by a process whose lineage started in another cgroup,
    /// `origin_cgroup_id` (it, or an ancestor, moved out of it): the caller attributes
    /// it there when its current cgroup is not a container's.
    Escaped { event: Event, origin_cgroup_id: u64 },
    /// A cgroup v2 directory was removed; `path` is relative to the cgroup v2 root.
    CgroupRemoved { cgroup_id: u64, path: String },
    /// A cgroup v2 directory was created; `path` is relative to the cgroup v2 root.
    CgroupCreated { cgroup_id: u64, path: String },
}

/// Loaded and attached probes. Dropping it detaches everything.
pub struct Probes {
    // Field order is drop order: the epoll registration goes before the ring buffer,
    // and both before the programs and maps.
    async_fd: Option<AsyncFd<OwnedFd>>,
    ring: RingBuf<MapData>,
    ebpf: Ebpf,
    exec_hook: &'static str,
    connect_hook: &'static str,
    cgroup_hook: &'static str,
    lineage_hook: &'static str,
    env_capture: EnvCapture,
    fallbacks: Vec<String>,
    loads: Vec<ProgramLoad>,
    /// The env names wanted, for the `/proc` fallback.
    env_vars: Vec<String>,
    config: abi::Config,
    decode_errors: u64,
    /// Cgroups already in `HOST_CGROUPS`, so each costs one map update.
    host_marked: rustc_hash::FxHashSet<u64>,
    /// The connect filter: destinations in `WATCHED`, execs drained but not yet
    /// counted in `PROCESSED`, and the counts written there.
    watched: rustc_hash::FxHashSet<[u8; 16]>,
    unsettled: Vec<u64>,
    processed: rustc_hash::FxHashMap<u64, u64>,
}

// ---- aya::Pod wrappers (the shared crate stays dependency-free) --------------------------

macro_rules! pod {
    ($name:ident, $inner:ty) => {
        #[derive(Clone, Copy)]
        #[repr(transparent)]
        struct $name($inner);
        // SAFETY: `$inner` is `#[repr(C)]`, made only of integers and integer arrays,
        // with explicit padding fields: every bit pattern is valid.
        unsafe impl aya::Pod for $name {}
    };
}
pod!(PodConfig, abi::Config);
pod!(PodOffsets, abi::KernelOffsets);
pod!(PodDrops, abi::DropCounters);

/// Knobs of [`Probes::start_with`], for tests that exercise fallbacks and overflow.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Mechanisms to pass over (besides [`FORBID_HOOKS_ENV`]), to run the fallbacks.
    pub forbidden: Forbidden,
    /// Load (verify) the programs and choose the hooks, but attach nothing: what
    /// `run --check` reports.
    pub load_only: bool,
    /// Ring buffer size instead of [`abi::EVENTS_BYTES`] (a power-of-two number of pages).
    pub ring_bytes: Option<u32>,
}

impl Probes {
    /// Loads the eBPF object, hands it the kernel's offsets and the configuration, and
    /// attaches every hook, falling back per hook as the kernel requires. Mounts tracefs
    /// (`/sys/kernel/tracing`) and bpffs (`/sys/fs/bpf`) if missing. Without the needed
    /// privileges, the error's first line names the missing capability.
    pub fn start(cfg: &ProbeConfig) -> Result<Probes> {
        Self::start_with(cfg, StartOptions::default())
    }

    /// [`Probes::start`] with knobs tests use to exercise fallbacks and overflow.
    pub fn start_with(cfg: &ProbeConfig, options: StartOptions) -> Result<Probes> {
        check_capabilities()?;
        raise_memlock_limit();
        let tracefs = ensure_tracefs();
        ensure_bpffs();

        let ring_bytes = match (options.ring_bytes, cfg.ring_bytes) {
            (Some(bytes), _) | (None, Some(bytes)) => check_ring_bytes(bytes)?,
            (None, None) => abi::EVENTS_BYTES,
        };
        let config = build_config(cfg, ring_bytes)?;
        let btf_bytes = fs::read("/sys/kernel/btf/vmlinux").ok();
        let kernel_btf = btf_bytes.as_deref().and_then(|b| KernelBtf::parse(b).ok());
        let aya_btf = btf_bytes
            .as_deref()
            .and_then(|b| Btf::parse(b, aya::Endianness::default()).ok());
        let offsets = kernel_offsets(kernel_btf.as_ref(), tracefs.as_deref());
        let offsets_global = PodOffsets(offsets);

        let mut loader = EbpfLoader::new();
        loader.override_global(abi::GLOBAL_OFFSETS, &offsets_global, true);
        loader.map_max_entries(abi::MAP_EVENTS, ring_bytes);
        loader.map_max_entries(abi::MAP_LINEAGE, lineage_entries());
        if let Some(btf) = aya_btf.as_ref() {
            loader.btf(btf);
        }
        let mut ebpf = match &cfg.bpf_object {
            Some(path) => loader
                .load_file(path)
                .map_err(|e| load_error(e, &format!("loading {}", path.display())))?,
            None => loader
                .load(EMBEDDED_OBJECT)
                .map_err(|e| load_error(e, "loading the embedded eBPF object"))?,
        };

        write_config(&mut ebpf, &config)?;

        let mut forbidden = Forbidden::from_env()?;
        forbidden.extend(&options.forbidden);
        let mut at = Attaching {
            btf: aya_btf.as_ref(),
            offsets: &offsets,
            forbidden,
            fallbacks: Vec::new(),
            loads: Vec::new(),
            attach: !options.load_only,
        };
        let (exec_hook, env_capture) = attach_exec(&mut ebpf, &mut at)?;
        let connect_hook = attach_connect(&mut ebpf, &mut at)?;
        let cgroup_hook = attach_cgroup_rmdir(&mut ebpf, &mut at);
        let lineage_hook = attach_lineage(&mut ebpf, &mut at);
        let Attaching {
            fallbacks, loads, ..
        } = at;
        let mut config = config;
        if lineage_hook != "none" {
            config.lineage = 1;
            write_config(&mut ebpf, &config)?;
        }

        let ring = RingBuf::try_from(
            ebpf.take_map(abi::MAP_EVENTS)
                .ok_or_else(|| anyhow!("the eBPF object has no {} map", abi::MAP_EVENTS))?,
        )?;
        Ok(Probes {
            async_fd: None,
            ring,
            ebpf,
            exec_hook,
            connect_hook,
            cgroup_hook,
            lineage_hook,
            env_capture,
            fallbacks,
            loads,
            env_vars: cfg.env_vars.clone(),
            config,
            decode_errors: 0,
            host_marked: Default::default(),
            watched: Default::default(),
            unsettled: Vec::new(),
            processed: Default::default(),
        })
    }

    /// The connect hook in use: `lsm/socket_connect`, `fentry/security_socket_connect`
    /// or `cgroup/connect4+connect6`.
    pub fn connect_hook(&self) -> &'static str {
        self.connect_hook
    }

    /// The exec hook in use: `tp_btf/sched_process_exec` or
    /// `tracepoint/sched/sched_process_exec`.
    pub fn exec_hook(&self) -> &'static str {
        self.exec_hook
    }

    /// How exec events get their wanted env entries on this kernel.
    pub fn env_capture(&self) -> EnvCapture {
        self.env_capture
    }

    /// Each program the kernel loaded, with its verifier figure and load time.
    pub fn loads(&self) -> &[ProgramLoad] {
        &self.loads
    }

    /// The cgroup-removal hook in use: `tracepoint/cgroup/cgroup_rmdir`, or `none`
    /// when it could not be attached (no removal events then).
    pub fn cgroup_hook(&self) -> &'static str {
        self.cgroup_hook
    }

    /// The process-lineage hooks in use, or `none` (then a process that leaves its
    /// container's cgroup is no longer attributed to it).
    pub fn lineage_hook(&self) -> &'static str {
        self.lineage_hook
    }

    /// Records that process `pid` (running before the probes started) belongs to the
    /// lineage of `cgroup_id`, as the exec hook would have.
    pub fn seed_lineage(&mut self, pid: u32, cgroup_id: u64) -> Result<()> {
        if self.config.lineage == 0 {
            return Ok(());
        }
        let mut map: Array<_, u64> = Array::try_from(map_mut(&mut self.ebpf, abi::MAP_LINEAGE)?)?;
        map.set(pid, &cgroup_id, 0)
            .with_context(|| format!("seeding the lineage of process {pid}"))
    }

    /// Why better hooks were passed over (one line each), for the start-up log.
    pub fn fallbacks(&self) -> &[String] {
        &self.fallbacks
    }

    /// Non-blocking: decodes the records currently in the ring buffer (at most 65536
    /// per call) into `out` and returns how many were added. Undecodable records are
    /// skipped and counted ([`Probes::decode_errors`]). A removed cgroup is also
    /// dropped from the host-cgroup filter.
    pub fn drain(&mut self, out: &mut Vec<ProbeEvent>) -> usize {
        let offset = monotonic_to_epoch_ns();
        let start = out.len();
        let mut removed = Vec::new();
        for _ in 0..DRAIN_MAX {
            let Some(item) = self.ring.next() else { break };
            if let Some(cgroup_id) = disarmed_exec(&item) {
                self.unsettled.push(cgroup_id);
            }
            match decode_with_clock(&item, offset) {
                Ok(mut event) => {
                    environ::complete(&mut event, &self.env_vars);
                    if let ProbeEvent::CgroupRemoved { cgroup_id, .. } = &event {
                        removed.push(*cgroup_id);
                    }
                    out.push(event);
                }
                Err(_) => self.decode_errors += 1,
            }
        }
        for id in removed {
            let _ = self.forget_cgroup(id);
        }
        let drained = out.len() - start;
        if drained > 0 {
            // A record was sent: the kernel cleared `idle` (or it was never set).
            self.config.idle = 0;
        }
        drained
    }

    /// Tells the kernel which destinations to keep connects to (`None`: all). Keys are
    /// IPv6 octets, IPv4 as IPv4-mapped. Call after the rules saw the drained events
    /// and before [`Probes::settle`].
    pub fn set_connect_filter(
        &mut self,
        watched: Option<&rustc_hash::FxHashSet<[u8; 16]>>,
    ) -> Result<()> {
        let Some(watched) = watched else {
            if self.config.filter_connects != 0 {
                self.config.filter_connects = 0;
                let config = self.config;
                write_config(&mut self.ebpf, &config)?;
            }
            return Ok(());
        };
        if watched.len() > abi::WATCHED_MAX as usize {
            bail!(
                "{} watched destinations, more than the kernel's {}",
                watched.len(),
                abi::WATCHED_MAX
            );
        }
        {
            let mut map: HashMap<_, [u8; 16], u8> =
                HashMap::try_from(map_mut(&mut self.ebpf, abi::MAP_WATCHED)?)?;
            for key in watched.difference(&self.watched) {
                map.insert(key, &1, 0)
                    .context("adding a watched destination")?;
            }
            for key in self.watched.difference(watched) {
                match map.remove(key) {
                    Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        self.watched = watched.clone();
        if self.config.filter_connects == 0 {
            self.config.filter_connects = 1;
            let config = self.config;
            write_config(&mut self.ebpf, &config)?;
        }
        Ok(())
    }

    /// Counts the execs drained so far as processed (the rules saw them and said what
    /// they watch), so their cgroups' connects are filtered again.
    /// Returns whether there was any.
    pub fn settle(&mut self) -> Result<bool> {
        if self.unsettled.is_empty() {
            return Ok(false);
        }
        let mut map: HashMap<_, u64, u64> =
            HashMap::try_from(map_mut(&mut self.ebpf, abi::MAP_PROCESSED)?)?;
        self.unsettled.sort_unstable();
        let mut cgroups = self.unsettled.chunk_by(|a, b| a == b);
        let result = cgroups.try_for_each(|same| {
            let count = self.processed.entry(same[0]).or_insert(0);
            *count += same.len() as u64;
            map.insert(&same[0], &*count, 0)
                .with_context(|| format!("settling the execs of cgroup {}", same[0]))
        });
        self.unsettled.clear();
        result.map(|()| true)
    }

    /// Whether the kernel turned the connect filter off itself (its pending-exec map
    /// filled up): every connect is sent again.
    pub fn connect_filter_lost(&self) -> bool {
        self.config.filter_connects != 0
            && self
                .ebpf
                .map(abi::MAP_CONFIG)
                .and_then(|m| Array::<_, PodConfig>::try_from(m).ok())
                .and_then(|a| a.get(&0, 0).ok())
                .is_some_and(|c| c.0.filter_connects == 0)
    }

    /// Before sleeping without a short timer: from now on the next record wakes the
    /// caller at once. Drain once more after this (a record sent just before woke no
    /// one); any record drained disarms it.
    pub fn arm_idle_wakeup(&mut self) -> Result<()> {
        if self.config.idle == 0 {
            self.config.idle = 1;
            let config = self.config;
            write_config(&mut self.ebpf, &config)?;
        }
        Ok(())
    }

    /// Whether the next record wakes the caller at once ([`Probes::arm_idle_wakeup`]).
    pub fn idle_armed(&self) -> bool {
        self.config.idle != 0
    }

    /// Waits until the kernel signals data (it does so once [`WAKEUP_BYTES`] are
    /// waiting, or a quarter of the ring buffer) or `timeout` passes. Smaller amounts are only signalled by the timeout,
    /// so call it with a short one (about 10 ms) and [`Probes::drain`] after each
    /// return. Needs a tokio runtime with IO and time enabled.
    pub async fn readable(&mut self, timeout: Duration) {
        if self.async_fd.is_none() {
            let registered = self.ring.as_fd().try_clone_to_owned().ok().and_then(|fd| {
                // SAFETY: the AsyncFd owns this duplicate of the ring buffer's fd, so
                // it stays open for the AsyncFd's whole life.
                unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }.ok()
            });
            match registered {
                Some(fd) => self.async_fd = Some(fd),
                None => {
                    tokio::time::sleep(timeout).await;
                    return;
                }
            }
        }
        let Some(fd) = self.async_fd.as_ref() else {
            return;
        };
        if let Ok(Ok(mut guard)) = tokio::time::timeout(timeout, fd.readable()).await {
            // The caller drains next; data arriving later raises a new edge or is
            // picked up by the next timeout.
            guard.clear_ready();
        }
    }

    /// Records lost because the ring buffer was full (sum over CPUs and kinds).
    pub fn drops(&self) -> u64 {
        let c = self.counters();
        c.exec + c.connect + c.cgroup
    }

    /// All kernel-side counters, summed over CPUs (`filtered`: events suppressed by the
    /// host-cgroup filter).
    pub fn counters(&self) -> abi::DropCounters {
        let mut sum = abi::DropCounters::default();
        let Some(map) = self.ebpf.map(abi::MAP_DROPS) else {
            return sum;
        };
        let Ok(array) = PerCpuArray::<_, PodDrops>::try_from(map) else {
            return sum;
        };
        if let Ok(values) = array.get(&0, 0) {
            for PodDrops(v) in values.iter() {
                sum.exec += v.exec;
                sum.connect += v.connect;
                sum.cgroup += v.cgroup;
                sum.filtered += v.filtered;
                sum.unwatched += v.unwatched;
            }
        }
        sum
    }

    /// Records that could not be decoded since start-up.
    pub fn decode_errors(&self) -> u64 {
        self.decode_errors
    }

    /// Marks a cgroup as a host (non-container) one: an exec there keeps its process's
    /// lineage, and with `containers_only` its exec/connect events are no longer sent
    /// (unless the process came from elsewhere). The set is an LRU of 16384 ids; an
    /// evicted id is simply reported again.
    pub fn mark_host_cgroup(&mut self, cgroup_id: u64) -> Result<()> {
        if self.host_marked.len() >= abi::HOST_CGROUPS_MAX as usize {
            // The kernel's LRU may have dropped some: mark again from scratch.
            self.host_marked.clear();
        }
        if !self.host_marked.insert(cgroup_id) {
            return Ok(());
        }
        let mut map: HashMap<_, u64, u8> =
            HashMap::try_from(map_mut(&mut self.ebpf, abi::MAP_HOST_CGROUPS)?)?;
        map.insert(&cgroup_id, &1, 0)
            .with_context(|| format!("marking cgroup {cgroup_id} as a host cgroup"))
    }

    /// Forgets a removed cgroup: its host mark and its exec counts (done automatically
    /// when the kernel reports the removal).
    pub fn forget_cgroup(&mut self, cgroup_id: u64) -> Result<()> {
        self.host_marked.remove(&cgroup_id);
        // Its exec counts go too, also of execs drained but not settled yet and of
        // exec records the kernel dropped (their ISSUED count was never seen here):
        // otherwise short-lived containers would fill the kernel's map.
        self.processed.remove(&cgroup_id);
        self.unsettled.retain(|&c| c != cgroup_id);
        if self.config.filter_connects != 0 || !self.watched.is_empty() {
            for name in [abi::MAP_ISSUED, abi::MAP_PROCESSED] {
                let mut map: HashMap<_, u64, u64> =
                    HashMap::try_from(map_mut(&mut self.ebpf, name)?)?;
                let _ = map.remove(&cgroup_id);
            }
        }
        let mut map: HashMap<_, u64, u8> =
            HashMap::try_from(map_mut(&mut self.ebpf, abi::MAP_HOST_CGROUPS)?)?;
        match map.remove(&cgroup_id) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Turns the kernel-side host-cgroup filter on or off (e.g. after rules reload).
    pub fn set_containers_only(&mut self, containers_only: bool) -> Result<()> {
        self.config.containers_only = containers_only as u32;
        let config = self.config;
        write_config(&mut self.ebpf, &config)
    }

    /// Checks, without attaching anything, that this host can run the probes: the
    /// privileges, the kernel's BTF, tracefs, a cgroup v2 mount, and that the eBPF
    /// object loads (maps created, then released). Returns one line per fact.
    pub fn preflight() -> Result<Vec<String>> {
        preflight::facts()
    }

    /// Whether the kernel side can capture these env names together (what the loaded
    /// rules ask for in all), as [`Probes::start`] would check them.
    pub fn check_env_vars(env_vars: &[String]) -> Result<()> {
        let wanted = ProbeConfig {
            env_vars: env_vars.to_vec(),
            ..ProbeConfig::default()
        };
        build_config(&wanted, abi::EVENTS_BYTES).map(|_| ())
    }

    /// Changes which environment variables exec events capture (after a rule reload
    /// changed what the rules ask for). Execs in flight may see either set.
    pub fn set_env_vars(&mut self, env_vars: &[String]) -> Result<()> {
        let wanted = ProbeConfig {
            env_vars: env_vars.to_vec(),
            containers_only: self.config.containers_only != 0,
            ..ProbeConfig::default()
        };
        let mut config = build_config(&wanted, abi::EVENTS_BYTES)?;
        config.wakeup_bytes = self.config.wakeup_bytes;
        config.lineage = self.config.lineage;
        config.idle = self.config.idle;
        config.filter_connects = self.config.filter_connects;
        write_config(&mut self.ebpf, &config)?;
        self.config = config;
        self.env_vars = env_vars.to_vec();
        Ok(())
    }
}

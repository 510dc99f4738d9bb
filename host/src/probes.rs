//! Live kernel events: loads rulehost's eBPF programs (`ebpf/programs`, layouts in
//! `rulehost-ebpf-common`), attaches each hook with the best mechanism the running
//! kernel allows, and decodes the ring-buffer records into [`Event`]s.
//!
//! Hook choice, best first:
//! - exec: `tp_btf/sched_process_exec`, else `tracepoint/sched/sched_process_exec`;
//! - connect: `lsm/socket_connect` (BPF LSM), else `fentry/security_socket_connect`,
//!   else `cgroup/connect4` + `cgroup/connect6` on the cgroup v2 root;
//! - cgroup removal: `tracepoint/cgroup/cgroup_rmdir` (optional).
//!
//! Kernel structure offsets (task_struct, mm_struct, linux_binprm, socket) are read
//! from the running kernel's BTF (`/sys/kernel/btf/vmlinux`) and tracepoint offsets
//! from tracefs format files at start-up, then handed to the programs through the
//! `OFFSETS` map, so the object runs on any kernel layout.

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
    fallbacks: Vec<String>,
    config: abi::Config,
    decode_errors: u64,
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
pod!(PodEnvName, abi::EnvName);
pod!(PodDrops, abi::DropCounters);

impl Probes {
    /// Loads the eBPF object, hands it the kernel's offsets and the configuration, and
    /// attaches every hook, falling back per hook as the kernel requires. Mounts tracefs
    /// (`/sys/kernel/tracing`) and bpffs (`/sys/fs/bpf`) if missing. Without the needed
    /// privileges, the error's first line names the missing capability.
    pub fn start(cfg: &ProbeConfig) -> Result<Probes> {
        Self::start_with(cfg, StartOptions::default())
    }

    /// [`Probes::start`] with knobs tests use to exercise fallbacks and overflow.
    fn start_with(cfg: &ProbeConfig, options: StartOptions) -> Result<Probes> {
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

        let mut loader = EbpfLoader::new();
        loader.map_max_entries(abi::MAP_EVENTS, ring_bytes);
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

        {
            let mut map: Array<_, PodOffsets> =
                Array::try_from(map_mut(&mut ebpf, abi::MAP_OFFSETS)?)?;
            map.set(0, &PodOffsets(offsets), 0)?;
        }
        {
            let mut names: HashMap<_, PodEnvName, u8> =
                HashMap::try_from(map_mut(&mut ebpf, abi::MAP_ENV_NAMES)?)?;
            for (index, name) in cfg.env_vars.iter().enumerate() {
                let mut key = abi::EnvName::default();
                key.name[..name.len()].copy_from_slice(name.as_bytes());
                names.insert(&PodEnvName(key), &(index as u8), 0)?;
            }
        }
        write_config(&mut ebpf, &config)?;

        let mut fallbacks = Vec::new();
        let exec_hook = attach_exec(
            &mut ebpf,
            aya_btf.as_ref(),
            &offsets,
            options.exec_skip,
            &mut fallbacks,
        )?;
        let connect_hook = attach_connect(&mut ebpf, aya_btf.as_ref(), &offsets, &mut fallbacks)?;
        let cgroup_hook = attach_cgroup_rmdir(&mut ebpf, &offsets, &mut fallbacks);

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
            fallbacks,
            config,
            decode_errors: 0,
        })
    }

    /// The connect hook in use: `lsm/socket_connect`, `fentry/security_socket_connect`
    /// or `cgroup/connect4+connect6`.
    pub fn connect_hook(&self) -> &'static str {
        self.connect_hook
    }

    /// The exec hook in use: `tp_btf/sched_process_exec` or
    /// `tracepoint/sched/sched_process_exec`, either suffixed ` (no env capture)` on
    /// kernels without `bpf_loop` (before 5.17).
    pub fn exec_hook(&self) -> &'static str {
        self.exec_hook
    }

    /// The cgroup-removal hook in use: `tracepoint/cgroup/cgroup_rmdir`, or `none`
    /// when it could not be attached (no removal events then).
    pub fn cgroup_hook(&self) -> &'static str {
        self.cgroup_hook
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
            match decode_with_clock(&item, offset) {
                Ok(event) => {
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
        out.len() - start
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
            }
        }
        sum
    }

    /// Records that could not be decoded since start-up.
    pub fn decode_errors(&self) -> u64 {
        self.decode_errors
    }

    /// Marks a cgroup as a host (non-container) one: with `containers_only`, its
    /// exec/connect events are no longer sent. The set is an LRU of 16384 ids; an
    /// evicted id is simply reported again.
    pub fn mark_host_cgroup(&mut self, cgroup_id: u64) -> Result<()> {
        let mut map: HashMap<_, u64, u8> =
            HashMap::try_from(map_mut(&mut self.ebpf, abi::MAP_HOST_CGROUPS)?)?;
        map.insert(&cgroup_id, &1, 0)
            .with_context(|| format!("marking cgroup {cgroup_id} as a host cgroup"))
    }

    /// Removes a cgroup from the host set (done automatically when it is removed).
    pub fn forget_cgroup(&mut self, cgroup_id: u64) -> Result<()> {
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
        check_capabilities()?;
        raise_memlock_limit();
        let mut facts =
            vec!["privileges: CAP_BPF/CAP_PERFMON (or CAP_SYS_ADMIN) present".to_owned()];
        let btf = fs::read("/sys/kernel/btf/vmlinux")
            .context("kernel BTF (/sys/kernel/btf/vmlinux) is not readable: structure offsets cannot be found")?;
        facts.push(format!("kernel BTF: {} bytes", btf.len()));
        match ensure_tracefs() {
            Some(path) => facts.push(format!("tracefs: {}", path.display())),
            None => bail!("tracefs is not mounted and cannot be mounted at /sys/kernel/tracing"),
        }
        let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let cgroup = crate::containers::find_cgroup2_mount(&mounts)
            .context("no cgroup v2 mount: containers cannot be resolved nor connects hooked")?;
        facts.push(format!("cgroup v2: {}", cgroup.display()));
        let ebpf = EbpfLoader::new()
            .load(EMBEDDED_OBJECT)
            .map_err(|e| load_error(e, "loading the embedded eBPF object"))?;
        facts.push(format!(
            "eBPF object: {} programs, maps created",
            ebpf.programs().count()
        ));
        Ok(facts)
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
        {
            let mut names: HashMap<_, PodEnvName, u8> =
                HashMap::try_from(map_mut(&mut self.ebpf, abi::MAP_ENV_NAMES)?)?;
            let old: Vec<PodEnvName> = names.keys().filter_map(|k| k.ok()).collect();
            for key in old {
                names.remove(&key)?;
            }
            for (index, name) in env_vars.iter().enumerate() {
                let mut key = abi::EnvName::default();
                key.name[..name.len()].copy_from_slice(name.as_bytes());
                names.insert(&PodEnvName(key), &(index as u8), 0)?;
            }
        }
        write_config(&mut self.ebpf, &config)?;
        self.config = config;
        Ok(())
    }
}

/// The object built by `ebpf/build.sh`, copied into OUT_DIR by build.rs.
static EMBEDDED_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/rulehost-probes.o"));

fn map_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::maps::Map> {
    ebpf.map_mut(name)
        .ok_or_else(|| anyhow!("the eBPF object has no {name} map"))
}

fn write_config(ebpf: &mut Ebpf, config: &abi::Config) -> Result<()> {
    let mut map: Array<_, PodConfig> = Array::try_from(map_mut(ebpf, abi::MAP_CONFIG)?)?;
    map.set(0, &PodConfig(*config), 0)?;
    Ok(())
}

/// Test knobs of [`Probes::start_with`].
#[derive(Debug, Clone, Copy, Default)]
struct StartOptions {
    /// Skip this many exec hook candidates.
    exec_skip: usize,
    /// Ring buffer size instead of [`abi::EVENTS_BYTES`] (a power-of-two number of pages).
    ring_bytes: Option<u32>,
}

/// A ring buffer must be a power-of-two number of pages.
fn check_ring_bytes(bytes: u32) -> Result<u32> {
    if bytes < 4096 || !bytes.is_power_of_two() {
        bail!("the ring buffer size must be a power of two of at least 4 KiB, not {bytes} bytes");
    }
    Ok(bytes)
}

/// Validates the configuration and turns it into the kernel's `Config`.
fn build_config(cfg: &ProbeConfig, ring_bytes: u32) -> Result<abi::Config> {
    let mut names: Vec<&str> = cfg.env_vars.iter().map(String::as_str).collect();
    names.sort_unstable();
    names.dedup();
    if names.len() != cfg.env_vars.len() {
        bail!("env_vars lists a name twice");
    }
    if names.len() > abi::ENV_NAMES_MAX {
        bail!(
            "at most {} env_vars can be captured, {} given",
            abi::ENV_NAMES_MAX,
            names.len()
        );
    }
    let mut lens: Vec<u8> = Vec::new();
    for name in &names {
        if name.is_empty() || name.len() > abi::ENV_NAME_MAX || name.contains(['=', '\0']) {
            bail!(
                "env var name {name:?} is invalid (1..={} bytes, no '=' or NUL)",
                abi::ENV_NAME_MAX
            );
        }
        if !lens.contains(&(name.len() as u8)) {
            lens.push(name.len() as u8);
        }
    }
    let mut config = abi::Config {
        containers_only: cfg.containers_only as u32,
        wakeup_bytes: WAKEUP_BYTES.min(ring_bytes / 4),
        // cgroup v2's hierarchy id is always 0 (the `0::` line of /proc/self/cgroup).
        cgroup_hierarchy: 0,
        env_names: names.len() as u32,
        env_name_lens: [0; abi::ENV_NAMES_MAX],
    };
    config.env_name_lens[..lens.len()].copy_from_slice(&lens);
    Ok(config)
}

// ---- attaching ---------------------------------------------------------------------------

/// Exec program candidates, best first: (program, uses BTF).
const EXEC_PROGRAMS: [(&str, bool); 4] = [
    ("exec_btf", true),
    ("exec_tp", false),
    // Without the environment walk (no bpf_loop before Linux 5.17).
    ("exec_btf_noenv", true),
    ("exec_tp_noenv", false),
];

fn attach_exec(
    ebpf: &mut Ebpf,
    btf: Option<&Btf>,
    offsets: &abi::KernelOffsets,
    skip: usize,
    fallbacks: &mut Vec<String>,
) -> Result<&'static str> {
    for (prog, uses_btf) in EXEC_PROGRAMS.into_iter().skip(skip) {
        let result = if uses_btf {
            match btf {
                Some(btf) if offsets.flags & abi::OFFSETS_BPRM != 0 => {
                    try_btf_tracepoint(ebpf, prog, "sched_process_exec", btf)
                }
                _ => Err(anyhow!("{prog}: no kernel BTF")),
            }
        } else if offsets.tp_exec_filename == 0 {
            Err(anyhow!(
                "{prog}: no sched/sched_process_exec tracepoint format (tracefs not mounted?)"
            ))
        } else {
            (|| -> Result<()> {
                let program: &mut TracePoint = program_mut(ebpf, prog)?;
                program.load().map_err(|e| program_error(e, prog))?;
                program
                    .attach("sched", "sched_process_exec")
                    .map_err(|e| program_error(e, prog))?;
                Ok(())
            })()
        };
        match result {
            Ok(()) => {
                return Ok(match prog {
                    "exec_btf" => "tp_btf/sched_process_exec",
                    "exec_tp" => "tracepoint/sched/sched_process_exec",
                    "exec_btf_noenv" => "tp_btf/sched_process_exec (no env capture)",
                    _ => "tracepoint/sched/sched_process_exec (no env capture)",
                });
            }
            Err(e) => fallbacks.push(format!("{e:#}")),
        }
    }
    bail!("no exec hook could be attached: {}", fallbacks.join("; "))
}

fn try_btf_tracepoint(ebpf: &mut Ebpf, prog: &str, tp: &str, btf: &Btf) -> Result<()> {
    let program: &mut BtfTracePoint = program_mut(ebpf, prog)?;
    program.load(tp, btf).map_err(|e| program_error(e, prog))?;
    program.attach().map_err(|e| program_error(e, prog))?;
    Ok(())
}

fn attach_connect(
    ebpf: &mut Ebpf,
    btf: Option<&Btf>,
    offsets: &abi::KernelOffsets,
    fallbacks: &mut Vec<String>,
) -> Result<&'static str> {
    if let Some(btf) = btf.filter(|_| offsets.flags & abi::OFFSETS_SOCKET != 0) {
        let lsm_result = (|| -> Result<()> {
            if !bpf_lsm_enabled() {
                bail!("BPF LSM is not enabled (no \"bpf\" in /sys/kernel/security/lsm)");
            }
            let program: &mut Lsm = program_mut(ebpf, "connect_lsm")?;
            program
                .load("socket_connect", btf)
                .map_err(|e| program_error(e, "lsm/socket_connect"))?;
            program
                .attach()
                .map_err(|e| program_error(e, "lsm/socket_connect"))?;
            Ok(())
        })();
        match lsm_result {
            Ok(()) => return Ok("lsm/socket_connect"),
            Err(e) => fallbacks.push(format!("{e:#}")),
        }
        let fentry_result = (|| -> Result<()> {
            let program: &mut FEntry = program_mut(ebpf, "connect_fentry")?;
            program
                .load("security_socket_connect", btf)
                .map_err(|e| program_error(e, "fentry/security_socket_connect"))?;
            program
                .attach()
                .map_err(|e| program_error(e, "fentry/security_socket_connect"))?;
            Ok(())
        })();
        match fentry_result {
            Ok(()) => return Ok("fentry/security_socket_connect"),
            Err(e) => fallbacks.push(format!("{e:#}")),
        }
    }
    let root = cgroup2_root().map_err(|e| {
        e.context(format!(
            "no connect hook could be attached (tried: {})",
            fallbacks.join("; ")
        ))
    })?;
    let cgroup = fs::File::open(&root)
        .with_context(|| format!("opening the cgroup v2 root {}", root.display()))?;
    for prog in ["connect4", "connect6"] {
        let program: &mut CgroupSockAddr = program_mut(ebpf, prog)?;
        program
            .load()
            .map_err(|e| program_error(e, &format!("loading cgroup/{prog}")))?;
        // Kernels with BPF links (5.7+) take no attach flags (a link always coexists
        // with other programs); older ones attach with BPF_F_ALLOW_MULTI.
        program
            .attach(&cgroup, CgroupAttachMode::Single)
            .or_else(|_| program.attach(&cgroup, CgroupAttachMode::AllowMultiple))
            .map_err(|e| {
                let what = format!("attaching cgroup/{prog} to {}", root.display());
                if is_eperm(&e) {
                    anyhow!("{what}: needs CAP_NET_ADMIN (or CAP_SYS_ADMIN)")
                } else {
                    program_error(e, &what)
                }
            })?;
    }
    Ok("cgroup/connect4+connect6")
}

fn attach_cgroup_rmdir(
    ebpf: &mut Ebpf,
    offsets: &abi::KernelOffsets,
    fallbacks: &mut Vec<String>,
) -> &'static str {
    if offsets.tp_rmdir_path == 0 {
        fallbacks.push("cgroup_rmdir: no cgroup/cgroup_rmdir tracepoint format".into());
        return "none";
    }
    let result = (|| -> Result<()> {
        for name in ["cgroup_rmdir", "cgroup_mkdir"] {
            let program: &mut TracePoint = program_mut(ebpf, name)?;
            program.load().map_err(|e| program_error(e, name))?;
            program
                .attach("cgroup", name)
                .map_err(|e| program_error(e, name))?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => "tracepoint/cgroup/cgroup_mkdir+cgroup_rmdir",
        Err(e) => {
            fallbacks.push(format!("{e:#}"));
            "none"
        }
    }
}

fn program_mut<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let program = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("the eBPF object has no program {name}"))?;
    program
        .try_into()
        .with_context(|| format!("program {name} has an unexpected type"))
}

/// One-line error for a program load/attach failure, naming the missing privilege on
/// EPERM and ending with the verifier's last lines on a rejection.
fn program_error(error: ProgramError, what: &str) -> anyhow::Error {
    match &error {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            let tail: Vec<&str> = log
                .lines()
                .filter(|l| !l.trim().is_empty())
                .rev()
                .take(6)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            let hint = if io_error.raw_os_error() == Some(libc::EPERM) {
                " (operation not permitted: needs CAP_BPF+CAP_PERFMON or CAP_SYS_ADMIN, or the kernel forbids this program type)"
            } else {
                ""
            };
            let verifier = if tail.is_empty() {
                String::new()
            } else {
                format!("; verifier: {}", tail.join(" | "))
            };
            anyhow!("{what}: the kernel refused the program: {io_error}{hint}{verifier}")
        }
        _ => anyhow::Error::new(error).context(what.to_string()),
    }
}

/// Whether an error (or one of its sources) is EPERM.
fn is_eperm(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.raw_os_error() == Some(libc::EPERM)
        {
            return true;
        }
        next = e.source();
    }
    false
}

fn load_error(error: aya::EbpfError, what: &str) -> anyhow::Error {
    let text = error.to_string();
    let hint = if text.contains("Operation not permitted") || text.contains("EPERM") {
        " (needs CAP_BPF or CAP_SYS_ADMIN)"
    } else if text.contains("Invalid argument") && text.contains("ring") {
        " (the kernel may lack BPF ring buffers: Linux 5.8 or later is needed)"
    } else {
        ""
    };
    anyhow!("{what}: {}{hint}", text.replace('\n', " "))
}

// ---- environment: privileges, mounts, cgroup root -------------------------------------------

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

fn effective_capabilities() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

fn check_capabilities() -> Result<()> {
    let Some(caps) = effective_capabilities() else {
        return Ok(()); // Cannot tell; the kernel will.
    };
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    let admin = has(CAP_SYS_ADMIN);
    if !admin && !has(CAP_BPF) {
        bail!("eBPF probes need CAP_BPF (or CAP_SYS_ADMIN): run rulehost as root or grant it");
    }
    if !admin && !has(CAP_PERFMON) {
        bail!("eBPF probes need CAP_PERFMON (or CAP_SYS_ADMIN) for tracing programs");
    }
    Ok(())
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid pointer.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
}

/// (mount point, fs type) pairs of /proc/self/mounts.
fn mounts() -> Vec<(PathBuf, String)> {
    let text = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let _source = fields.next()?;
            let target = unescape_mount_path(fields.next()?);
            let fstype = fields.next()?.to_string();
            Some((PathBuf::from(target), fstype))
        })
        .collect()
}

/// /proc/self/mounts escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount_path(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value = (bytes[i + 1] - b'0') as u32 * 64
                + (bytes[i + 2] - b'0') as u32 * 8
                + (bytes[i + 3] - b'0') as u32;
            out.push(value as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn mount(fstype: &str, target: &Path) -> bool {
    let (Ok(fs), Ok(dir)) = (
        std::ffi::CString::new(fstype),
        std::ffi::CString::new(target.as_os_str().as_encoded_bytes()),
    ) else {
        return false;
    };
    // SAFETY: valid NUL-terminated strings; no data argument.
    unsafe { libc::mount(fs.as_ptr(), dir.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) == 0 }
}

/// The tracefs mount (mounting it at /sys/kernel/tracing if none), if any.
fn ensure_tracefs() -> Option<PathBuf> {
    let find = || {
        mounts()
            .into_iter()
            .find(|(_, t)| t == "tracefs")
            .map(|(p, _)| p)
            .filter(|p| p.join("events").is_dir())
    };
    if let Some(path) = find() {
        return Some(path);
    }
    let target = Path::new("/sys/kernel/tracing");
    if target.is_dir() && mount("tracefs", target) {
        return Some(target.to_path_buf());
    }
    // debugfs's automount, on kernels that only offer it there.
    let legacy = Path::new("/sys/kernel/debug/tracing");
    legacy.join("events").is_dir().then(|| legacy.to_path_buf())
}

fn ensure_bpffs() {
    let target = Path::new("/sys/fs/bpf");
    if mounts().iter().any(|(p, t)| t == "bpf" && p == target) {
        return;
    }
    if target.is_dir() {
        mount("bpf", target);
    }
}

fn bpf_lsm_enabled() -> bool {
    fs::read_to_string("/sys/kernel/security/lsm")
        .map(|s| s.trim().split(',').any(|l| l == "bpf"))
        .unwrap_or(false)
}

/// The cgroup v2 mount point (e.g. /sys/fs/cgroup or /sys/fs/cgroup/unified).
fn cgroup2_root() -> Result<PathBuf> {
    mounts()
        .into_iter()
        .find(|(_, t)| t == "cgroup2")
        .map(|(p, _)| p)
        .ok_or_else(|| {
            anyhow!("no cgroup v2 hierarchy is mounted (needed for cgroup/connect hooks)")
        })
}

// ---- kernel offsets --------------------------------------------------------------------------

/// Offsets for the programs, from BTF and tracefs; missing pieces clear a flag or
/// leave a tracepoint offset at 0, and the programs skip what they cannot read.
fn kernel_offsets(btf: Option<&KernelBtf>, tracefs: Option<&Path>) -> abi::KernelOffsets {
    let mut o = abi::KernelOffsets::default();
    if let Some(btf) = btf {
        let task = (|| {
            Some((
                btf.member_offset("task_struct", "mm")?,
                btf.member_offset("task_struct", "real_parent")?,
                btf.member_offset("task_struct", "tgid")?,
                btf.member_offset("mm_struct", "arg_start")?,
                btf.member_offset("mm_struct", "arg_end")?,
                btf.member_offset("mm_struct", "env_start")?,
                btf.member_offset("mm_struct", "env_end")?,
            ))
        })();
        if let Some((mm, parent, tgid, arg_start, arg_end, env_start, env_end)) = task {
            o.task_mm = mm;
            o.task_real_parent = parent;
            o.task_tgid = tgid;
            o.mm_arg_start = arg_start;
            o.mm_arg_end = arg_end;
            o.mm_env_start = env_start;
            o.mm_env_end = env_end;
            o.flags |= abi::OFFSETS_TASK;
        }
        if let Some(off) = btf.member_offset("linux_binprm", "filename") {
            o.bprm_filename = off;
            o.flags |= abi::OFFSETS_BPRM;
        }
        if let Some(off) = btf.member_offset("socket", "type") {
            o.socket_type = off;
            o.flags |= abi::OFFSETS_SOCKET;
        }
    }
    if let Some(tracefs) = tracefs {
        let format = |cat: &str, name: &str| {
            fs::read_to_string(tracefs.join("events").join(cat).join(name).join("format"))
                .unwrap_or_default()
        };
        let exec = format("sched", "sched_process_exec");
        o.tp_exec_filename = tracepoint_field_offset(&exec, "filename").unwrap_or(0);
        let rmdir = format("cgroup", "cgroup_rmdir");
        if let (Some(root), Some(id), Some(path)) = (
            tracepoint_field_offset(&rmdir, "root"),
            tracepoint_field_offset(&rmdir, "id"),
            tracepoint_field_offset(&rmdir, "path"),
        ) {
            o.tp_rmdir_root = root;
            o.tp_rmdir_id = id;
            o.tp_rmdir_path = path;
        }
    }
    o
}

/// The offset of a field in a tracefs `format` file, e.g. for
/// `field:__data_loc char[] filename; offset:8; size:4; signed:0;`.
fn tracepoint_field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let mut parts = line.trim().split(';');
        let decl = parts.next()?.trim().strip_prefix("field:")?;
        let name = decl.split_whitespace().last()?;
        let name = name.split('[').next()?;
        if name != field {
            return None;
        }
        parts.find_map(|p| p.trim().strip_prefix("offset:")?.trim().parse().ok())
    })
}

/// Just enough of a BTF parser to find struct member offsets (through anonymous
/// struct/union members) in `/sys/kernel/btf/vmlinux`.
struct KernelBtf<'a> {
    types: &'a [u8],
    strings: &'a [u8],
    /// Byte offset in `types` of each type, indexed by type id (0 = void).
    starts: Vec<usize>,
}

const BTF_KIND_STRUCT: u32 = 4;
const BTF_KIND_UNION: u32 = 5;

impl<'a> KernelBtf<'a> {
    fn parse(data: &'a [u8]) -> Result<Self> {
        let u16_at = |o: usize| -> Option<u16> {
            Some(u16::from_le_bytes(data.get(o..o + 2)?.try_into().ok()?))
        };
        let u32_at = |o: usize| -> Option<u32> {
            Some(u32::from_le_bytes(data.get(o..o + 4)?.try_into().ok()?))
        };
        if u16_at(0) != Some(0xeb9f) {
            bail!("not little-endian BTF");
        }
        let field = |o: usize| u32_at(o).map(|v| v as usize).context("short BTF header");
        let hdr_len = field(4)?;
        let (type_off, type_len, str_off, str_len) =
            (field(8)?, field(12)?, field(16)?, field(20)?);
        let section = |off: usize, len: usize| {
            hdr_len
                .checked_add(off)
                .and_then(|s| Some((s, s.checked_add(len)?)))
                .and_then(|(s, e)| data.get(s..e))
                .context("BTF section out of bounds")
        };
        let types = section(type_off, type_len)?;
        let strings = section(str_off, str_len)?;
        let mut starts = vec![0usize];
        let mut pos = 0usize;
        while pos + 12 <= types.len() {
            starts.push(pos);
            let info = u32::from_le_bytes(types[pos + 4..pos + 8].try_into()?);
            let vlen = (info & 0xffff) as usize;
            let extra = match (info >> 24) & 0x1f {
                1 | 14 | 17 => 4,                            // INT, VAR, DECL_TAG
                2 | 7 | 8 | 9 | 10 | 11 | 12 | 16 | 18 => 0, // PTR, FWD, TYPEDEF, modifiers, FUNC, FLOAT, TYPE_TAG
                3 => 12,                                     // ARRAY
                4 | 5 | 15 | 19 => 12 * vlen,                // STRUCT, UNION, DATASEC, ENUM64
                6 | 13 => 8 * vlen,                          // ENUM, FUNC_PROTO
                kind => bail!("unknown BTF kind {kind}"),
            };
            pos += 12 + extra;
        }
        Ok(KernelBtf {
            types,
            strings,
            starts,
        })
    }

    fn u32_at(&self, pos: usize) -> Option<u32> {
        Some(u32::from_le_bytes(
            self.types.get(pos..pos + 4)?.try_into().ok()?,
        ))
    }

    fn name(&self, off: u32) -> &[u8] {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
    }

    /// (name offset, kind, kind_flag, vlen, size_or_type, start) of a type id.
    fn header(&self, id: u32) -> Option<(u32, u32, bool, usize, u32, usize)> {
        let start = *self.starts.get(id as usize).filter(|_| id != 0)?;
        let info = self.u32_at(start + 4)?;
        Some((
            self.u32_at(start)?,
            (info >> 24) & 0x1f,
            info >> 31 == 1,
            (info & 0xffff) as usize,
            self.u32_at(start + 8)?,
            start,
        ))
    }

    /// Follows typedefs and const/volatile/restrict/type-tag modifiers.
    fn resolve(&self, mut id: u32) -> Option<u32> {
        for _ in 0..32 {
            let (_, kind, _, _, next, _) = self.header(id)?;
            match kind {
                8 | 9 | 10 | 11 | 18 => id = next,
                _ => return Some(id),
            }
        }
        None
    }

    /// Byte offset of `member` in the struct named `name`.
    fn member_offset(&self, name: &str, member: &str) -> Option<u32> {
        (1..self.starts.len() as u32).find_map(|id| {
            let (name_off, kind, _, vlen, _, _) = self.header(id)?;
            if kind != BTF_KIND_STRUCT || vlen == 0 || self.name(name_off) != name.as_bytes() {
                return None;
            }
            self.find_member(id, member.as_bytes(), 0)
                .filter(|bits| bits % 8 == 0)
                .map(|bits| bits / 8)
        })
    }

    /// Bit offset of `member` in struct/union `id`, looking into anonymous members.
    fn find_member(&self, id: u32, member: &[u8], base_bits: u32) -> Option<u32> {
        let (_, kind, kind_flag, vlen, _, start) = self.header(id)?;
        if kind != BTF_KIND_STRUCT && kind != BTF_KIND_UNION {
            return None;
        }
        for i in 0..vlen {
            let m = start + 12 + 12 * i;
            let (name_off, ty, raw) = (self.u32_at(m)?, self.u32_at(m + 4)?, self.u32_at(m + 8)?);
            let bits = if kind_flag { raw & 0x00ff_ffff } else { raw };
            let at = base_bits.checked_add(bits)?;
            if name_off != 0 {
                if self.name(name_off) == member {
                    return Some(at);
                }
            } else if let Some(found) = self
                .resolve(ty)
                .and_then(|inner| self.find_member(inner, member, at))
            {
                return Some(found);
            }
        }
        None
    }
}

// ---- decoding ----------------------------------------------------------------------------------

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// What to add to a `bpf_ktime_get_ns` (CLOCK_MONOTONIC) value to get Unix-epoch ns.
pub fn monotonic_to_epoch_ns() -> i64 {
    (clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_MONOTONIC)) as i64
}

/// Decodes one ring-buffer record, converting its kernel timestamp with the current
/// clocks. Errors (never panics) on short, garbled or unknown records.
pub fn decode(record: &[u8]) -> Result<ProbeEvent> {
    decode_with_clock(record, monotonic_to_epoch_ns())
}

/// [`decode`] with an explicit monotonic-to-epoch offset (pure).
pub fn decode_with_clock(record: &[u8], epoch_offset_ns: i64) -> Result<ProbeEvent> {
    let header: abi::RecordHeader = read_pod(record).context("record shorter than its header")?;
    if header.version != abi::RECORD_VERSION {
        bail!(
            "record version {} (expected {})",
            header.version,
            abi::RECORD_VERSION
        );
    }
    let len = header.len as usize;
    let record = record.get(..len).with_context(|| {
        format!(
            "record truncated: header says {len} bytes, {} present",
            record.len()
        )
    })?;
    let timestamp =
        |ktime: u64| (ktime as i128 + epoch_offset_ns as i128).clamp(0, u64::MAX as i128) as u64;
    match header.kind {
        abi::KIND_EXEC => {
            let ev: abi::ExecEvent = read_pod(record).context("exec record too short")?;
            let payload = &record[size_of::<abi::ExecEvent>()..];
            let (f, a, e) = (
                ev.filename_len as usize,
                ev.argv_len as usize,
                ev.env_len as usize,
            );
            if f + a + e > payload.len() {
                bail!(
                    "exec record payload lengths {f}+{a}+{e} exceed its {} bytes",
                    payload.len()
                );
            }
            let (filename, rest) = payload.split_at(f);
            let (argv, rest) = rest.split_at(a);
            let env = &rest[..e];
            Ok(ProbeEvent::Event(Event {
                timestamp: timestamp(ev.timestamp_ns),
                process: Process {
                    pid: ev.pid,
                    tid: ev.tid,
                    ppid: ev.ppid,
                    uid: ev.uid,
                    comm: c_string(&ev.comm).into(),
                },
                cgroup_id: ev.cgroup_id,
                container: None,
                body: Body::ProcessExec {
                    filename: c_string(filename),
                    argv: nul_separated(argv),
                    env: nul_separated(env),
                    synthetic: false,
                    truncated: Truncation {
                        filename: ev.flags & abi::EXEC_FILENAME_TRUNCATED != 0,
                        argv: ev.flags & abi::EXEC_ARGV_TRUNCATED != 0,
                        env: ev.flags & abi::EXEC_ENV_TRUNCATED != 0,
                        env_incomplete: ev.flags & (abi::EXEC_ENV_INCOMPLETE | abi::EXEC_NO_MM)
                            != 0,
                    },
                },
            }))
        }
        abi::KIND_CONNECT => {
            let ev: abi::ConnectEvent = read_pod(record).context("connect record too short")?;
            let address = match ev.family {
                abi::AF_INET => SocketAddress::Ipv4 {
                    ip: Ipv4Addr::new(ev.addr[0], ev.addr[1], ev.addr[2], ev.addr[3]),
                    port: ev.port,
                },
                abi::AF_INET6 => SocketAddress::Ipv6 {
                    ip: Ipv6Addr::from(ev.addr),
                    port: ev.port,
                    flow_info: ev.flowinfo,
                    scope_id: ev.scope_id,
                },
                abi::AF_UNIX => SocketAddress::Unix,
                af => SocketAddress::Other { af },
            };
            Ok(ProbeEvent::Event(Event {
                timestamp: timestamp(ev.timestamp_ns),
                process: Process {
                    pid: ev.pid,
                    tid: ev.tid,
                    ppid: 0,
                    uid: ev.uid,
                    comm: c_string(&ev.comm).into(),
                },
                cgroup_id: ev.cgroup_id,
                container: None,
                body: Body::SocketConnect {
                    address,
                    socket_type: SocketType::from_raw(ev.sock_type),
                },
            }))
        }
        abi::KIND_CGROUP_RMDIR | abi::KIND_CGROUP_MKDIR => {
            let ev: abi::CgroupRmdirEvent = read_pod(record).context("cgroup record too short")?;
            let path = &record[size_of::<abi::CgroupRmdirEvent>()..];
            let path = path
                .get(..ev.path_len as usize)
                .context("cgroup record path length exceeds the record")?;
            let (cgroup_id, path) = (ev.cgroup_id, c_string(path));
            Ok(if header.kind == abi::KIND_CGROUP_MKDIR {
                ProbeEvent::CgroupCreated { cgroup_id, path }
            } else {
                ProbeEvent::CgroupRemoved { cgroup_id, path }
            })
        }
        kind => bail!("unknown record kind {kind}"),
    }
}

/// Marker for the shared `#[repr(C)]` layouts, which are integers and integer arrays
/// only, so any bytes are a valid value.
trait Pod: Copy {}
impl Pod for abi::RecordHeader {}
impl Pod for abi::ExecEvent {}
impl Pod for abi::ConnectEvent {}
impl Pod for abi::CgroupRmdirEvent {}

fn read_pod<T: Pod>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: length checked; `T: Pod` accepts any bit pattern; unaligned read.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Bytes up to the first NUL (or all of them), lossily as UTF-8.
fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// NUL-separated strings; a trailing NUL does not make an empty last element.
fn nul_separated(bytes: &[u8]) -> Vec<String> {
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .split(|&b| b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T: Pod>(value: &T) -> Vec<u8> {
        // SAFETY: `T: Pod` is plain data with explicit padding; reading its bytes is fine.
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    fn comm(name: &str) -> [u8; abi::COMM_LEN] {
        let mut comm = [0; abi::COMM_LEN];
        comm[..name.len()].copy_from_slice(name.as_bytes());
        comm
    }

    fn exec_record() -> Vec<u8> {
        let filename = b"/usr/bin/curl\0";
        let argv = b"curl\0-s\0https://kubernetes.default.svc\0";
        let env = b"KUBERNETES_SERVICE_HOST=10.96.0.1\0";
        let len = size_of::<abi::ExecEvent>() + filename.len() + argv.len() + env.len();
        let ev = abi::ExecEvent {
            header: abi::RecordHeader {
                kind: abi::KIND_EXEC,
                version: abi::RECORD_VERSION,
                len: len as u32,
            },
            timestamp_ns: 5_000,
            cgroup_id: 4242,
            pid: 100,
            tid: 100,
            ppid: 1,
            uid: 1000,
            flags: 0,
            filename_len: filename.len() as u16,
            argv_len: argv.len() as u16,
            env_len: env.len() as u16,
            _pad: [0; 6],
            comm: comm("curl"),
        };
        let mut record = bytes_of(&ev);
        record.extend_from_slice(filename);
        record.extend_from_slice(argv);
        record.extend_from_slice(env);
        record
    }

    fn connect_record(family: u16, addr: [u8; 16], port: u16) -> Vec<u8> {
        bytes_of(&abi::ConnectEvent {
            header: abi::RecordHeader {
                kind: abi::KIND_CONNECT,
                version: abi::RECORD_VERSION,
                len: size_of::<abi::ConnectEvent>() as u32,
            },
            timestamp_ns: 7,
            cgroup_id: 9,
            pid: 10,
            tid: 11,
            uid: 12,
            sock_type: 1,
            flowinfo: 3,
            scope_id: 4,
            family,
            port,
            _pad: 0,
            addr,
            comm: comm("curl"),
        })
    }

    #[test]
    fn decodes_an_exec_record() {
        let event = decode_with_clock(&exec_record(), 1_000_000).unwrap();
        let ProbeEvent::Event(event) = event else {
            panic!("not an event: {event:?}")
        };
        assert_eq!(event.timestamp, 1_005_000);
        assert_eq!(event.cgroup_id, 4242);
        assert_eq!(event.container, None);
        assert_eq!(
            event.process,
            Process {
                pid: 100,
                tid: 100,
                ppid: 1,
                uid: 1000,
                comm: "curl".into()
            }
        );
        assert_eq!(
            event.body,
            Body::ProcessExec {
                filename: "/usr/bin/curl".into(),
                argv: vec![
                    "curl".into(),
                    "-s".into(),
                    "https://kubernetes.default.svc".into()
                ],
                env: vec!["KUBERNETES_SERVICE_HOST=10.96.0.1".into()],
                synthetic: false,
                truncated: Truncation::default(),
            }
        );
    }

    #[test]
    fn decodes_truncated_argv_without_trailing_nul() {
        // argv cut mid-argument, as when it exceeds EXEC_ARGV_MAX.
        let mut record = exec_record();
        let hdr = size_of::<abi::ExecEvent>();
        let ev: abi::ExecEvent = read_pod(&record).unwrap();
        let f = ev.filename_len as usize;
        record.truncate(hdr + f);
        let argv = b"curl\0-s\0https://kube";
        record.extend_from_slice(argv);
        let mut ev = ev;
        ev.argv_len = argv.len() as u16;
        ev.env_len = 0;
        ev.flags = abi::EXEC_ARGV_TRUNCATED;
        ev.header.len = record.len() as u32;
        record[..hdr].copy_from_slice(&bytes_of(&ev));
        let ProbeEvent::Event(event) = decode_with_clock(&record, 0).unwrap() else {
            panic!()
        };
        let Body::ProcessExec { argv, env, .. } = event.body else {
            panic!()
        };
        assert_eq!(argv, ["curl", "-s", "https://kube"]);
        assert!(env.is_empty());
    }

    #[test]
    fn decodes_connect_records() {
        let mut v4 = [0u8; 16];
        v4[..4].copy_from_slice(&[10, 96, 0, 1]);
        let ProbeEvent::Event(event) =
            decode_with_clock(&connect_record(abi::AF_INET, v4, 443), 0).unwrap()
        else {
            panic!()
        };
        assert_eq!(event.timestamp, 7);
        assert_eq!(event.process.pid, 10);
        assert_eq!(event.process.tid, 11);
        assert_eq!(event.process.uid, 12);
        assert_eq!(event.process.comm, "curl");
        assert_eq!(
            event.body,
            Body::SocketConnect {
                address: SocketAddress::Ipv4 {
                    ip: Ipv4Addr::new(10, 96, 0, 1),
                    port: 443
                },
                socket_type: SocketType::Stream,
            }
        );

        let mapped: Ipv6Addr = "::ffff:10.96.0.1".parse().unwrap();
        let ProbeEvent::Event(event) =
            decode_with_clock(&connect_record(abi::AF_INET6, mapped.octets(), 6443), 0).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            event.body,
            Body::SocketConnect {
                address: SocketAddress::Ipv6 {
                    ip: mapped,
                    port: 6443,
                    flow_info: 3,
                    scope_id: 4
                },
                socket_type: SocketType::Stream,
            }
        );

        let ProbeEvent::Event(unix) =
            decode_with_clock(&connect_record(abi::AF_UNIX, [0; 16], 0), 0).unwrap()
        else {
            panic!()
        };
        assert!(matches!(
            unix.body,
            Body::SocketConnect {
                address: SocketAddress::Unix,
                ..
            }
        ));
        let ProbeEvent::Event(other) =
            decode_with_clock(&connect_record(16, [0; 16], 0), 0).unwrap()
        else {
            panic!()
        };
        assert!(matches!(
            other.body,
            Body::SocketConnect {
                address: SocketAddress::Other { af: 16 },
                ..
            }
        ));
    }

    #[test]
    fn decodes_a_cgroup_removal() {
        let path = b"/kubepods/besteffort/pod1234\0";
        let len = size_of::<abi::CgroupRmdirEvent>() + path.len();
        let mut record = bytes_of(&abi::CgroupRmdirEvent {
            header: abi::RecordHeader {
                kind: abi::KIND_CGROUP_RMDIR,
                version: abi::RECORD_VERSION,
                len: len as u32,
            },
            timestamp_ns: 1,
            cgroup_id: 777,
            path_len: path.len() as u16,
            _pad: [0; 6],
        });
        record.extend_from_slice(path);
        assert_eq!(
            decode(&record).unwrap(),
            ProbeEvent::CgroupRemoved {
                cgroup_id: 777,
                path: "/kubepods/besteffort/pod1234".into()
            }
        );
    }

    #[test]
    fn rejects_truncated_records() {
        let records = [
            exec_record(),
            connect_record(
                abi::AF_INET,
                [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                80,
            ),
        ];
        for record in records {
            assert!(decode(&record).is_ok());
            for cut in 0..record.len() {
                assert!(
                    decode(&record[..cut]).is_err(),
                    "prefix of {cut} bytes decoded"
                );
            }
        }
    }

    #[test]
    fn rejects_bad_kinds_versions_and_lengths() {
        let mut record = exec_record();
        record[0..2].copy_from_slice(&99u16.to_ne_bytes());
        let error = decode(&record).unwrap_err().to_string();
        assert!(error.contains("unknown record kind 99"), "{error}");

        let mut record = exec_record();
        record[2..4].copy_from_slice(&7u16.to_ne_bytes());
        assert!(decode(&record).unwrap_err().to_string().contains("version"));

        // Header length shorter than the fixed part.
        let mut record = exec_record();
        record[4..8].copy_from_slice(&16u32.to_ne_bytes());
        assert!(decode(&record).is_err());

        // Payload lengths larger than the record.
        let mut record = exec_record();
        let mut ev: abi::ExecEvent = read_pod(&record).unwrap();
        ev.env_len = 4000;
        record[..size_of::<abi::ExecEvent>()].copy_from_slice(&bytes_of(&ev));
        assert!(decode(&record).unwrap_err().to_string().contains("exceed"));

        assert!(decode(&[]).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let base = exec_record();
        for _ in 0..20_000 {
            let mut record = base.clone();
            for _ in 0..(next() % 8) {
                let at = (next() as usize) % record.len();
                record[at] = next() as u8;
            }
            record.truncate((next() as usize) % (record.len() + 1));
            let _ = decode_with_clock(&record, i64::MAX);
            let _ = decode_with_clock(&record, i64::MIN);
        }
    }

    fn build_config_default(cfg: &ProbeConfig) -> Result<abi::Config> {
        build_config(cfg, abi::EVENTS_BYTES)
    }

    #[test]
    fn probes_can_move_to_another_thread() {
        fn send<T: Send>() {}
        send::<Probes>();
        send::<ProbeEvent>();
    }

    #[test]
    fn config_validation() {
        let cfg = |names: &[&str]| ProbeConfig {
            env_vars: names.iter().map(|s| s.to_string()).collect(),
            ..ProbeConfig::default()
        };
        let config = build_config(
            &cfg(&["HOME", "PATH", "KUBERNETES_SERVICE_HOST"]),
            abi::EVENTS_BYTES,
        )
        .unwrap();
        assert_eq!(config.env_names, 3);
        assert_eq!(config.env_name_lens, [4, 23, 0, 0, 0, 0, 0, 0]);
        assert_eq!(config.wakeup_bytes, WAKEUP_BYTES);
        assert!(build_config_default(&cfg(&["A=B"])).is_err());
        assert!(build_config_default(&cfg(&[""])).is_err());
        assert!(build_config_default(&cfg(&["X", "X"])).is_err());
        assert!(build_config_default(&cfg(&[&"N".repeat(64)])).is_err());
        assert!(
            build_config_default(&cfg(&["A", "B", "C", "D", "E", "F", "G", "H", "I"])).is_err()
        );
    }

    #[test]
    fn parses_tracepoint_formats_and_mounts() {
        let format = "name: cgroup_rmdir\nID: 1\nformat:\n\
            \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
            \tfield:int root;\toffset:8;\tsize:4;\tsigned:1;\n\
            \tfield:u64 id;\toffset:16;\tsize:8;\tsigned:0;\n\
            \tfield:__data_loc char[] path;\toffset:24;\tsize:4;\tsigned:0;\n";
        assert_eq!(tracepoint_field_offset(format, "root"), Some(8));
        assert_eq!(tracepoint_field_offset(format, "id"), Some(16));
        assert_eq!(tracepoint_field_offset(format, "path"), Some(24));
        assert_eq!(tracepoint_field_offset(format, "level"), None);
        assert_eq!(unescape_mount_path("/mnt/a\\040b"), "/mnt/a b");
        assert_eq!(unescape_mount_path("/x\\04"), "/x\\04");
    }

    /// A tiny BTF blob: `struct outer { int a; union { long b; int c; }; }` plus a
    /// typedef chain, to check member lookup through anonymous members.
    #[test]
    fn finds_btf_members_through_anonymous_unions() {
        let strings = b"\0int\0long\0outer\0a\0b\0c\0";
        let name = |s: &str| {
            strings
                .windows(s.len() + 2)
                .position(|w| w[0] == 0 && &w[1..=s.len()] == s.as_bytes() && w[s.len() + 1] == 0)
                .unwrap() as u32
                + 1
        };
        let mut types = Vec::new();
        let mut push = |words: &[u32]| words.iter().for_each(|w| types.extend(w.to_le_bytes()));
        // 1: int (INT, 4 bytes)
        push(&[name("int"), 1 << 24, 4, 32]);
        // 2: long (INT, 8 bytes)
        push(&[name("long"), 1 << 24, 8, 64]);
        // 3: anonymous union { long b; int c; }
        push(&[0, (5 << 24) | 2, 8, name("b"), 2, 0, name("c"), 1, 0]);
        // 4: const of 3
        push(&[0, 10 << 24, 3]);
        // 5: struct outer { int a; <anon> at 64 bits }
        push(&[name("outer"), (4 << 24) | 2, 16, name("a"), 1, 0, 0, 4, 64]);
        let mut blob = Vec::new();
        for w in [
            0x0001_eb9fu32,
            24,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            blob.extend(w.to_le_bytes());
        }
        blob.extend(&types);
        blob.extend(strings);
        let btf = KernelBtf::parse(&blob).unwrap();
        assert_eq!(btf.member_offset("outer", "a"), Some(0));
        assert_eq!(btf.member_offset("outer", "b"), Some(8));
        assert_eq!(btf.member_offset("outer", "c"), Some(8));
        assert_eq!(btf.member_offset("outer", "d"), None);
        assert_eq!(btf.member_offset("nope", "a"), None);
        assert!(KernelBtf::parse(&blob[..30]).is_err());
    }

    fn object_path() -> Option<PathBuf> {
        let object = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bpf/rulehost-probes.o");
        object.exists().then_some(object)
    }

    /// How long a live test waits for events that must come: a failure bound for a
    /// busy machine; a passing test stops waiting as soon as they are there.
    const LIVE_WAIT: Duration = Duration::from_secs(60);

    /// Drains the probes until `until` holds or `wait` passes, polling as the agent
    /// does (10 ms timer besides the ring buffer's wake-ups).
    fn collect(
        probes: &mut Probes,
        until: &dyn Fn(&[ProbeEvent]) -> bool,
        wait: Duration,
    ) -> Vec<ProbeEvent> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut events = Vec::new();
        let deadline = std::time::Instant::now() + wait;
        while std::time::Instant::now() < deadline && !until(&events) {
            runtime.block_on(probes.readable(Duration::from_millis(10)));
            probes.drain(&mut events);
        }
        events
    }

    /// Runs `sh -c 'exec env KUBERNETES_SERVICE_HOST=10.1.2.3 true'`; returns its pid.
    fn exec_child() -> u32 {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "exec env KUBERNETES_SERVICE_HOST=10.1.2.3 true"])
            .env("RULEHOST_NOT_WANTED", "secret")
            .spawn()
            .unwrap();
        assert!(child.wait().unwrap().success());
        child.id()
    }

    /// The execs of process `pid`, in order.
    fn execs_of(events: &[ProbeEvent], pid: u32) -> Vec<&Event> {
        events
            .iter()
            .filter_map(|e| match e {
                ProbeEvent::Event(
                    ev @ Event {
                        body: Body::ProcessExec { .. },
                        ..
                    },
                ) if ev.process.pid == pid => Some(ev),
                _ => None,
            })
            .collect()
    }

    /// The exec fallbacks (tracepoint, and both hooks without the environment walk)
    /// load and report execs on this kernel too.
    #[test]
    fn live_exec_fallbacks() {
        for (skip, hook, with_env) in [
            (1, "tracepoint/sched/sched_process_exec", true),
            (2, "tp_btf/sched_process_exec (no env capture)", false),
            (
                3,
                "tracepoint/sched/sched_process_exec (no env capture)",
                false,
            ),
        ] {
            let mut probes = Probes::start_with(
                &ProbeConfig {
                    env_vars: vec!["KUBERNETES_SERVICE_HOST".into()],
                    containers_only: false,
                    bpf_object: object_path(),
                    ring_bytes: None,
                },
                StartOptions {
                    exec_skip: skip,
                    ..StartOptions::default()
                },
            )
            .expect("starting the probes");
            assert_eq!(probes.exec_hook(), hook);
            let child = exec_child();
            let events = collect(
                &mut probes,
                &|events| execs_of(events, child).len() == 3,
                LIVE_WAIT,
            );
            let execs = execs_of(&events, child);
            assert_eq!(
                execs.len(),
                3,
                "{hook}: {} events, execs of the child: {execs:?}",
                events.len()
            );
            let Body::ProcessExec {
                filename,
                argv,
                env,
                ..
            } = &execs[2].body
            else {
                unreachable!()
            };
            assert!(filename.ends_with("/true"), "{hook}: {filename}");
            assert_eq!(argv, &["true"], "{hook}");
            assert_eq!(execs[2].process.ppid, std::process::id(), "{hook}");
            if with_env {
                assert_eq!(env, &["KUBERNETES_SERVICE_HOST=10.1.2.3"], "{hook}");
            } else {
                assert!(env.is_empty(), "{hook}: {env:?}");
            }
        }
    }

    /// A large environment: 300 fillers, an entry longer than one read whose second
    /// piece looks like a wanted entry (must not match), a long wanted value (cut to
    /// one read), and the wanted entry last.
    #[test]
    fn live_env_walk_handles_large_environments() {
        // The embedded object (the others load target/bpf/rulehost-probes.o).
        let mut probes = Probes::start(&ProbeConfig {
            env_vars: vec!["KUBERNETES_SERVICE_HOST".into(), "LONG_ONE".into()],
            containers_only: false,
            bpf_object: None,
            ring_bytes: None,
        })
        .expect("starting the probes");
        let mut command = std::process::Command::new("/bin/sh");
        command.args(["-c", "exec /usr/bin/env true"]).env_clear();
        for i in 0..300 {
            command.env(format!("FILLER_{i}"), format!("value-{i}"));
        }
        // "BIG=" + 251 bytes fills one 255-byte read exactly; the next piece starts
        // with a wanted name.
        command.env(
            "BIG",
            format!("{}KUBERNETES_SERVICE_HOST=evil", "x".repeat(251)),
        );
        command.env("LONG_ONE", "y".repeat(400));
        command.env("KUBERNETES_SERVICE_HOSTX", "decoy");
        command.env("KUBERNETES_SERVICE_HOST", "10.9.9.9");
        command.env("PATH", "/usr/bin:/bin");
        let mut child = command.spawn().unwrap();
        assert!(child.wait().unwrap().success());
        let pid = child.id();
        let events = collect(
            &mut probes,
            &|events| execs_of(events, pid).len() == 3,
            LIVE_WAIT,
        );
        let execs = execs_of(&events, pid);
        assert_eq!(execs.len(), 3, "{} events, execs: {execs:?}", events.len());
        for exec in &execs {
            let Body::ProcessExec { env, .. } = &exec.body else {
                unreachable!()
            };
            assert_eq!(env.len(), 2, "{env:?}");
            assert_eq!(env[0], "KUBERNETES_SERVICE_HOST=10.9.9.9");
            assert_eq!(
                env[1],
                format!("LONG_ONE={}", "y".repeat(abi::EXEC_ENV_ENTRY_MAX - 1 - 9))
            );
        }
    }

    /// Records below the wake-up threshold do not wake user space (the timer picks
    /// them up); a burst past it does; a full ring counts drops.
    #[test]
    fn live_wakeups_are_batched_and_overflow_is_counted() {
        use std::net::UdpSocket;
        use std::time::Instant;

        // Large enough that what other tests and processes do on the node meanwhile
        // (the probes see everything) cannot reach the wake-up threshold by itself.
        let ring = 16 << 20;
        let mut probes = Probes::start_with(
            &ProbeConfig {
                bpf_object: object_path(),
                ..ProbeConfig::default()
            },
            StartOptions {
                ring_bytes: Some(ring),
                ..StartOptions::default()
            },
        )
        .expect("starting the probes");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // UDP connect() runs the connect hooks without needing a peer.
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let connects = |n: usize| (0..n).for_each(|_| socket.connect(addr).unwrap());
        let mut sink = Vec::new();
        probes.drain(&mut sink);
        // Register the ring buffer with epoll while it is empty.
        runtime.block_on(probes.readable(Duration::from_millis(1)));
        probes.drain(&mut sink);

        connects(1);
        let started = Instant::now();
        runtime.block_on(probes.readable(Duration::from_millis(300)));
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "a single record woke user space"
        );
        sink.clear();
        assert!(probes.drain(&mut sink) >= 1);

        // A burst past a quarter of the ring (88-byte records + 8-byte headers).
        connects(ring as usize / 4 / 96 + 50);
        let started = Instant::now();
        runtime.block_on(probes.readable(LIVE_WAIT));
        assert!(
            started.elapsed() < LIVE_WAIT,
            "a burst did not wake user space"
        );
        assert_eq!(probes.drops(), 0);

        // Overflow: more than the ring holds, without draining.
        connects(ring as usize / 96 + 200);
        assert!(probes.drops() > 0, "no drops counted");
        assert!(probes.counters().connect > 0);
        sink.clear();
        probes.drain(&mut sink);
        assert!(!sink.is_empty());
    }

    /// Runs the real probes (this machine and CI run as root): an exec whose
    /// environment is captured, IPv4 / IPv4-mapped IPv6 / IPv6 connects, a cgroup
    /// removal, and the kernel-side host-cgroup filter.
    #[test]
    fn live_probes_capture_exec_env_connects_and_cgroup_removal() {
        use std::net::{SocketAddr, TcpListener, TcpStream};
        use std::time::{SystemTime, UNIX_EPOCH};

        let mut probes = Probes::start(&ProbeConfig {
            env_vars: vec!["KUBERNETES_SERVICE_HOST".into(), "PATH".into()],
            containers_only: false,
            bpf_object: object_path(),
            ring_bytes: None,
        })
        .expect("starting the probes");
        eprintln!(
            "hooks: exec={} connect={} cgroup={}; passed over: {:?}",
            probes.exec_hook(),
            probes.connect_hook(),
            probes.cgroup_hook(),
            probes.fallbacks()
        );
        let child = exec_child();

        let v4 = TcpListener::bind("127.0.0.1:0").unwrap();
        let v4_port = v4.local_addr().unwrap().port();
        let v6 = TcpListener::bind("[::]:0").unwrap();
        let v6_port = v6.local_addr().unwrap().port();
        let tid = unsafe { libc::gettid() } as u32;
        let _a = TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, v4_port))).unwrap();
        let mapped = Ipv4Addr::LOCALHOST.to_ipv6_mapped();
        let _b = TcpStream::connect(SocketAddr::from((mapped, v6_port))).unwrap();
        let _c = TcpStream::connect(SocketAddr::from((Ipv6Addr::LOCALHOST, v6_port))).unwrap();

        let cgroup_dir = cgroup2_root()
            .unwrap()
            .join(format!("rulehost-probe-test-{}", std::process::id()));
        fs::create_dir(&cgroup_dir).unwrap();
        let cgroup_ino = {
            use std::os::unix::fs::MetadataExt;
            fs::metadata(&cgroup_dir).unwrap().ino()
        };
        fs::remove_dir(&cgroup_dir).unwrap();
        let cgroup_name = format!("/{}", cgroup_dir.file_name().unwrap().to_string_lossy());

        let me = std::process::id();
        let is_exec_of = |e: &ProbeEvent, name: &str| {
            matches!(e, ProbeEvent::Event(Event { process, body: Body::ProcessExec { .. }, .. })
                if process.pid == child && process.comm == name)
        };
        let connect_to = |e: &ProbeEvent, ip: std::net::IpAddr, port: u16| match e {
            ProbeEvent::Event(Event {
                process,
                body: Body::SocketConnect { address, .. },
                ..
            }) => process.pid == me && address.ip_port() == Some((ip, port)),
            _ => false,
        };
        let all_seen = |events: &[ProbeEvent]| {
            events.iter().any(|e| is_exec_of(e, "true"))
                && events.iter().any(|e| connect_to(e, Ipv4Addr::LOCALHOST.into(), v4_port))
                && events.iter().any(|e| connect_to(e, mapped.into(), v6_port))
                && events.iter().any(|e| connect_to(e, Ipv6Addr::LOCALHOST.into(), v6_port))
                && events
                    .iter()
                    .any(|e| matches!(e, ProbeEvent::CgroupRemoved { cgroup_id, .. } if *cgroup_id == cgroup_ino))
        };
        let events = collect(&mut probes, &all_seen, LIVE_WAIT);

        // The exec chain sh -> env -> true, all one pid, parent = this test process.
        let execs = execs_of(&events, child);
        let comms: Vec<&str> = execs.iter().map(|e| e.process.comm.as_str()).collect();
        assert_eq!(
            comms,
            ["sh", "env", "true"],
            "execs of the child: {execs:#?}"
        );
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        for exec in &execs {
            assert_eq!(exec.process.ppid, me);
            assert_eq!(exec.process.tid, child);
            assert_eq!(exec.process.uid, unsafe { libc::getuid() });
            assert!(exec.cgroup_id != 0);
            assert!(
                now.abs_diff(exec.timestamp) < 10_000_000_000,
                "timestamp {}",
                exec.timestamp
            );
        }
        let Body::ProcessExec {
            filename,
            argv,
            env,
            ..
        } = &execs[0].body
        else {
            unreachable!()
        };
        assert!(filename.ends_with("sh"), "{filename}");
        assert_eq!(
            argv,
            &["sh", "-c", "exec env KUBERNETES_SERVICE_HOST=10.1.2.3 true"]
        );
        assert!(env.iter().all(|e| e.starts_with("PATH=")), "{env:?}");
        let Body::ProcessExec {
            filename,
            argv,
            env,
            ..
        } = &execs[2].body
        else {
            unreachable!()
        };
        assert!(filename.ends_with("/true"), "{filename}");
        assert_eq!(argv, &["true"]);
        assert!(
            env.contains(&"KUBERNETES_SERVICE_HOST=10.1.2.3".to_string()),
            "{env:?}"
        );
        assert!(env.iter().any(|e| e.starts_with("PATH=")), "{env:?}");
        assert_eq!(env.len(), 2, "only the requested names: {env:?}");
        eprintln!("exec of true: {:?}", execs[2]);

        for (ip, port) in [
            (std::net::IpAddr::from(Ipv4Addr::LOCALHOST), v4_port),
            (mapped.into(), v6_port),
            (Ipv6Addr::LOCALHOST.into(), v6_port),
        ] {
            let event = events
                .iter()
                .find(|e| connect_to(e, ip, port))
                .unwrap_or_else(|| panic!("no connect to {ip} port {port}"));
            let ProbeEvent::Event(event) = event else {
                unreachable!()
            };
            assert_eq!(event.process.tid, tid);
            assert!(matches!(
                event.body,
                Body::SocketConnect {
                    socket_type: SocketType::Stream,
                    ..
                }
            ));
            eprintln!("connect: {event:?}");
        }
        let removed = events
            .iter()
            .find(|e| matches!(e, ProbeEvent::CgroupRemoved { cgroup_id, .. } if *cgroup_id == cgroup_ino))
            .expect("cgroup removal");
        assert_eq!(
            removed,
            &ProbeEvent::CgroupRemoved {
                cgroup_id: cgroup_ino,
                path: cgroup_name
            }
        );
        assert_eq!(probes.drops(), 0);

        // The host-cgroup filter: this process's cgroup marked as host is suppressed
        // in the kernel once containers_only is on, and reported again when forgotten.
        let my_cgroup = events
            .iter()
            .find_map(|e| match e {
                ProbeEvent::Event(ev) if connect_to(e, Ipv4Addr::LOCALHOST.into(), v4_port) => {
                    Some(ev.cgroup_id)
                }
                _ => None,
            })
            .unwrap();
        probes.mark_host_cgroup(my_cgroup).unwrap();
        probes.set_containers_only(true).unwrap();
        let filtered_before = probes.counters().filtered;
        let _d = TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, v4_port))).unwrap();
        let events = collect(&mut probes, &|_| false, Duration::from_millis(200));
        assert!(
            !events
                .iter()
                .any(|e| connect_to(e, Ipv4Addr::LOCALHOST.into(), v4_port)),
            "a host cgroup's connect was sent ({} events)",
            events.len()
        );
        assert!(probes.counters().filtered > filtered_before);
        probes.forget_cgroup(my_cgroup).unwrap();
        let _e = TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, v4_port))).unwrap();
        let seen = |events: &[ProbeEvent]| {
            events
                .iter()
                .any(|e| connect_to(e, Ipv4Addr::LOCALHOST.into(), v4_port))
        };
        let events = collect(&mut probes, &seen, LIVE_WAIT);
        assert!(seen(&events), "an unknown cgroup's connect was not sent");
        assert_eq!(probes.decode_errors(), 0);
    }
}

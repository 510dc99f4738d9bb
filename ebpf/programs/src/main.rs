//! rulehost's kernel side: exec, connect and cgroup-removal probes feeding one ring
//! buffer. Layouts live in `rulehost-ebpf-common`; kernel structure offsets come from
//! user space (computed from the running kernel's BTF) through the read-only global
//! `KERNEL_OFFSETS`, so nothing here depends on one kernel's layout, yet the verifier
//! sees each offset as a constant.
//!
//! Program names (user space loads them by name and picks one per hook):
//! - exec: `exec_btf` (tp_btf/sched_process_exec), else `exec_tp`
//!   (tracepoint/sched/sched_process_exec), else the same two without the
//!   environment walk (`exec_btf_noenv`, `exec_tp_noenv`: no `bpf_loop` before 5.17);
//! - connect: `connect_lsm` (lsm/socket_connect), else `connect_fentry`
//!   (fentry/security_socket_connect), else `connect4` + `connect6`
//!   (cgroup/connect4, cgroup/connect6 on the cgroup v2 root);
//! - cgroup creation and removal: `cgroup_mkdir` / `cgroup_rmdir` (tracepoints);
//! - process lineage: `fork_btf` (tp_btf/sched_process_fork) keeps `LINEAGE`, so a
//!   process that leaves its container's cgroup (or is forked by one that did) is still
//!   attributed to it.

#![no_std]
#![no_main]
// An atomic add on a map value (`BPF_ATOMIC`): core's AtomicU64::fetch_add is not
// offered on the BPF target (no compare-and-swap), the intrinsic is.
#![feature(core_intrinsics)]
#![allow(internal_features)]

use core::{
    ffi::c_void,
    mem::size_of,
    ptr::{addr_of_mut, read_volatile, write_volatile},
};

use aya_ebpf::{
    EbpfContext,
    bindings::{
        BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP,
    },
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid, bpf_ktime_get_ns,
        generated::{
            bpf_get_current_cgroup_id, bpf_get_current_task, bpf_loop, bpf_probe_read_kernel,
            bpf_probe_read_kernel_str, bpf_probe_read_user, bpf_probe_read_user_str,
            bpf_ringbuf_output,
        },
    },
    macros::{btf_tracepoint, cgroup_sock_addr, fentry, lsm, map, tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{
        BtfTracePointContext, FEntryContext, LsmContext, SockAddrContext, TracePointContext,
    },
};
use rulehost_ebpf_common::{
    AF_INET, AF_INET6, CGROUP_PATH_MAX, CgroupRmdirEvent, Config, ConnectEvent, DropCounters,
    ENV_NAME_MAX, ENV_NAME_WORDS, ENV_NAMES_MAX, EVENTS_BYTES, EXEC_ARGV_MAX, EXEC_ARGV_TRUNCATED,
    EXEC_ENV_ENTRY_MAX, EXEC_ENV_INCOMPLETE, EXEC_ENV_MAX, EXEC_ENV_SCAN_BOUNDED, EXEC_ENV_SCAN_MAX, EXEC_ENV_TRUNCATED,
    EXEC_DISARMED, EXEC_FILENAME_MAX, EXEC_FILENAME_TRUNCATED, EXEC_NO_MM, ExecEvent,
    HOST_CGROUPS_MAX, PENDING_MAX, WATCHED_MAX,
    KIND_CGROUP_MKDIR, KIND_CGROUP_RMDIR, KIND_CONNECT, KIND_EXEC, KernelOffsets, LINEAGE_DEFAULT,
    OFFSETS_BPRM, OFFSETS_SOCKET, OFFSETS_TASK, RECORD_VERSION, RecordHeader,
};

// ---- maps ---------------------------------------------------------------------------

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

#[map]
static DROPS: PerCpuArray<DropCounters> = PerCpuArray::with_max_entries(1, 0);

#[map]
static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

/// Set by user space before load (`.rodata`, frozen): read it only through [`offset`].
#[unsafe(no_mangle)]
static KERNEL_OFFSETS: KernelOffsets = KernelOffsets::NONE;

#[map]
static HOST_CGROUPS: LruHashMap<u64, u8> = LruHashMap::with_max_entries(HOST_CGROUPS_MAX, 0);

#[map]
static LINEAGE: Array<u64> = Array::with_max_entries(LINEAGE_DEFAULT, 0);

#[map]
static WATCHED: HashMap<[u8; 16], u8> = HashMap::with_max_entries(WATCHED_MAX, 0);

#[map]
static ISSUED: HashMap<u64, u64> = HashMap::with_max_entries(PENDING_MAX, 0);

#[map]
static PROCESSED: HashMap<u64, u64> = HashMap::with_max_entries(PENDING_MAX, 0);

/// Per-CPU staging areas for variable-length records: 0 for exec, 1 for cgroup
/// removal.
/// Twice [`WINDOW`] so any offset masked with `WINDOW - 1` plus any read of at most
/// `WINDOW` bytes stays inside the value, which is what the verifier checks.
const WINDOW: usize = 4096;
#[repr(C)]
struct Scratch {
    buf: [u8; 2 * WINDOW],
}

#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(2, 0);

// ---- shared helpers ---------------------------------------------------------------

const EXEC_HDR: usize = size_of::<ExecEvent>();
const _: () = assert!(EXEC_HDR + EXEC_FILENAME_MAX + EXEC_ARGV_MAX + EXEC_ENV_MAX <= WINDOW);
const _: () = assert!(EXEC_ENV_ENTRY_MAX <= EXEC_ENV_MAX);

#[inline(always)]
fn config() -> Option<&'static Config> {
    CONFIG.get(0)
}

/// One kernel structure offset. A volatile read, so the compiler keeps the load the
/// verifier resolves to the value user space set, instead of folding in the zero.
#[inline(always)]
fn offset(field: impl FnOnce(&KernelOffsets) -> &u32) -> u32 {
    unsafe { read_volatile(field(&KERNEL_OFFSETS)) }
}

/// Whether user space found the offsets `flag` covers (`OFFSETS_*`).
#[inline(always)]
fn offsets_for(flag: u32) -> bool {
    offset(|o| &o.flags) & flag != 0
}

/// Whether events of this cgroup are suppressed: only when every rule wants
/// container events, user space classified the cgroup as a host one, and the process
/// did not come from another cgroup (`origin`). Unknown cgroups are always sent.
#[inline(always)]
fn suppressed(cgroup_id: u64, origin: u64) -> bool {
    let Some(cfg) = config() else { return false };
    if unsafe { read_volatile(&cfg.containers_only) } == 0 || origin != 0 {
        return false;
    }
    if is_host(cgroup_id) {
        count(|d| unsafe { addr_of_mut!((*d).filtered) });
        return true;
    }
    false
}

#[inline(always)]
fn is_host(cgroup_id: u64) -> bool {
    HOST_CGROUPS.get_ptr(&cgroup_id).is_some()
}

#[inline(always)]
fn filter_on() -> bool {
    config().is_some_and(|c| unsafe { read_volatile(&c.filter_connects) } != 0)
}

/// Counts an exec that may have declared a destination: until user space has
/// processed it, the connects of its cgroup are all sent. Returns whether it counted.
#[inline(always)]
fn disarm(cgroup_id: u64) -> bool {
    if let Some(issued) = ISSUED.get_ptr_mut(&cgroup_id) {
        add_one(issued);
        return true;
    }
    if ISSUED.insert(&cgroup_id, &1, BPF_NOEXIST as u64).is_ok() {
        return true;
    }
    if let Some(issued) = ISSUED.get_ptr_mut(&cgroup_id) {
        // Another CPU inserted it meanwhile.
        add_one(issued);
        return true;
    }
    // The map is full: no connect may be filtered any more (user space notices).
    if let Some(cfg) = CONFIG.get_ptr_mut(0) {
        unsafe { write_volatile(&mut (*cfg).filter_connects, 0) };
    }
    false
}

#[inline(always)]
fn add_one(counter: *mut u64) {
    use core::intrinsics::{AtomicOrdering, atomic_xadd};
    // SAFETY: a live, 8-byte aligned map value.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, 1) };
}

/// Whether a connect to `family`/`addr` from `cgroup_id` is one no rule wants: the
/// filter is on, the destination is not watched, and every exec of the cgroup that
/// may have declared a new one was processed.
#[inline(always)]
fn unwatched(cgroup_id: u64, family: u16, addr: &[u8; 16]) -> bool {
    if !filter_on() {
        return false;
    }
    let key = match family {
        AF_INET => {
            let mut mapped = [0u8; 16];
            mapped[10] = 0xff;
            mapped[11] = 0xff;
            mapped[12..].copy_from_slice(&addr[..4]);
            mapped
        }
        AF_INET6 => *addr,
        // No IP destination: no rule that filters can want it.
        _ => [0u8; 16],
    };
    if (family == AF_INET || family == AF_INET6) && WATCHED.get_ptr(&key).is_some() {
        return false;
    }
    // No exec of this cgroup ever counted: nothing can be pending (one lookup, not two).
    let Some(&issued) = (unsafe { ISSUED.get(&cgroup_id) }) else {
        return true;
    };
    let processed = unsafe { PROCESSED.get(&cgroup_id) }.copied().unwrap_or(0);
    issued == processed
}

#[inline(always)]
fn lineage_on() -> bool {
    config().is_some_and(|c| unsafe { read_volatile(&c.lineage) } != 0)
}

/// The cgroup process `tgid`'s lineage started in, if it is not `cgroup_id`; else 0
/// (also for a process with no lineage: its entry is 0, or past the array's end).
#[inline(always)]
fn origin_of(tgid: u32, cgroup_id: u64) -> u64 {
    match LINEAGE.get(tgid) {
        Some(&origin) if origin != cgroup_id => origin,
        _ => 0,
    }
}

#[inline(always)]
fn count(field: impl FnOnce(*mut DropCounters) -> *mut u64) {
    if let Some(d) = DROPS.get_ptr_mut(0) {
        unsafe { *field(d) += 1 };
    }
}

/// Flags for submitting a record: wake user space only once enough is waiting, or at
/// once when it sleeps without a timer (`Config::idle`).
#[inline(always)]
fn wake_flags() -> u64 {
    if let Some(cfg) = CONFIG.get_ptr_mut(0)
        && unsafe { read_volatile(&(*cfg).idle) } != 0
    {
        // User space sleeps without a timer: this record ends the sleep.
        unsafe { write_volatile(&mut (*cfg).idle, 0) };
        return BPF_RB_FORCE_WAKEUP as u64;
    }
    let threshold = match config() {
        Some(cfg) => (unsafe { read_volatile(&cfg.wakeup_bytes) }) as u64,
        None => 0,
    };
    if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= threshold {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

#[inline(always)]
fn header(kind: u16, len: usize) -> RecordHeader {
    RecordHeader {
        kind,
        version: RECORD_VERSION,
        len: len as u32,
    }
}

#[inline(always)]
unsafe fn read_kernel<T: Copy + Default>(addr: u64) -> T {
    let mut value = T::default();
    let ret = unsafe {
        bpf_probe_read_kernel(
            (&raw mut value).cast(),
            size_of::<T>() as u32,
            addr as *const c_void,
        )
    };
    if ret < 0 { T::default() } else { value }
}

/// How a program reads kernel memory: through a BTF pointer its `tp_btf` hook handed
/// it, with a plain load (the JIT turns a fault into zero), or with a helper call from
/// a `tracepoint`, which knows `current` only as a number.
#[derive(Clone, Copy)]
enum Kernel {
    Direct,
    Helper,
}

impl Kernel {
    /// The field `off` bytes into the structure at `base` (zero if unreadable).
    #[inline(always)]
    fn read<T: Copy + Default>(self, base: u64, off: u32) -> T {
        let at = base + off as u64;
        match self {
            // SAFETY: the verifier checks a load through a BTF pointer against the
            // kernel's own types when the program loads, and refuses any other (a
            // `base` that is not one fails the load, not the kernel); the JIT turns a
            // faulting load into zero.
            Kernel::Direct => unsafe { read_volatile(at as *const T) },
            Kernel::Helper => unsafe { read_kernel(at) },
        }
    }
}

#[inline(always)]
fn comm() -> [u8; 16] {
    bpf_get_current_comm().unwrap_or([0; 16])
}

/// Sends `len` bytes of the scratch area as one record.
#[inline(always)]
fn output(buf: *mut u8, len: usize) -> bool {
    let len = len & (WINDOW - 1);
    let ret = unsafe {
        bpf_ringbuf_output(
            (&raw const EVENTS).cast_mut().cast(),
            buf.cast(),
            len as u64,
            wake_flags(),
        )
    };
    ret == 0
}

// ---- exec -----------------------------------------------------------------------------

/// Where the exec's filename comes from.
enum Filename {
    /// A kernel `char *` (`linux_binprm::filename`).
    Kernel(u64),
    /// A tracepoint record at this address with a `__data_loc` field at this offset.
    DataLoc(u64, u64),
}

/// How an exec program walks the environment: `bpf_loop` (5.17+), a loop the verifier
/// unrolls (any kernel, fewer entries), or not at all.
const WALK_LOOP: u8 = 0;
const WALK_BOUNDED: u8 = 1;
const WALK_NONE: u8 = 2;

#[btf_tracepoint(function = "sched_process_exec")]
pub fn exec_btf(ctx: BtfTracePointContext) -> i32 {
    handle_exec::<WALK_LOOP>(btf_filename(&ctx), btf_task(&ctx));
    0
}

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn exec_tp(ctx: TracePointContext) -> u32 {
    handle_exec::<WALK_LOOP>(tp_filename(&ctx), current_task());
    0
}

// The same with a bounded walk, for kernels without `bpf_loop` (< 5.17).

#[btf_tracepoint(function = "sched_process_exec")]
pub fn exec_btf_bounded(ctx: BtfTracePointContext) -> i32 {
    handle_exec::<WALK_BOUNDED>(btf_filename(&ctx), btf_task(&ctx));
    0
}

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn exec_tp_bounded(ctx: TracePointContext) -> u32 {
    handle_exec::<WALK_BOUNDED>(tp_filename(&ctx), current_task());
    0
}

// The same without the environment walk: the last resort (user space then reads
// `/proc/<pid>/environ`).

#[btf_tracepoint(function = "sched_process_exec")]
pub fn exec_btf_noenv(ctx: BtfTracePointContext) -> i32 {
    handle_exec::<WALK_NONE>(btf_filename(&ctx), btf_task(&ctx));
    0
}

#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn exec_tp_noenv(ctx: TracePointContext) -> u32 {
    handle_exec::<WALK_NONE>(tp_filename(&ctx), current_task());
    0
}

// sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)

#[inline(always)]
fn btf_filename(ctx: &BtfTracePointContext) -> Filename {
    let bprm: u64 = ctx.arg(2);
    if !offsets_for(OFFSETS_BPRM) || bprm == 0 {
        return Filename::Kernel(0);
    }
    Filename::Kernel(Kernel::Direct.read(bprm, offset(|o| &o.bprm_filename)))
}

/// The exec'ing task (`p`, which is `current`), as the BTF pointer the hook hands over.
#[inline(always)]
fn btf_task(ctx: &BtfTracePointContext) -> (u64, Kernel) {
    (ctx.arg(0), Kernel::Direct)
}

#[inline(always)]
fn tp_filename(ctx: &TracePointContext) -> Filename {
    let at = offset(|o| &o.tp_exec_filename) as u64;
    if at == 0 {
        return Filename::Kernel(0);
    }
    Filename::DataLoc(ctx.as_ptr() as u64, at)
}

#[inline(always)]
fn current_task() -> (u64, Kernel) {
    (unsafe { bpf_get_current_task() }, Kernel::Helper)
}

/// Builds the exec record in the per-CPU scratch area and sends it. Its flags and
/// lengths live in the record (map memory) from the start and are read back where used:
/// a register the verifier tracked through every branch (a flag set or not, a length cut
/// or not) would split its states at each, and old verifiers would not prune them.
#[inline(always)]
fn handle_exec<const WALK: u8>(filename: Filename, (task, kernel): (u64, Kernel)) {
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let origin = origin_of(tgid, cgroup_id);
    anchor_lineage(tgid, cgroup_id);
    if suppressed(cgroup_id, origin) {
        return;
    }
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let buf = unsafe { addr_of_mut!((*scratch).buf) } as *mut u8;
    let ev = buf as *mut ExecEvent;
    unsafe {
        write_volatile(&mut (*ev).flags, 0);
        write_volatile(&mut (*ev).filename_len, 0);
        write_volatile(&mut (*ev).argv_len, 0);
        write_volatile(&mut (*ev).env_len, 0);
    }

    // Filename, right after the fixed part.
    let src = match filename {
        Filename::Kernel(ptr) => ptr,
        Filename::DataLoc(record, field) => data_loc(record, field),
    };
    if src != 0 {
        let n = unsafe {
            bpf_probe_read_kernel_str(
                buf.add(EXEC_HDR).cast(),
                EXEC_FILENAME_MAX as u32,
                src as *const c_void,
            )
        };
        if n > 0 {
            let mut len = n as usize & (WINDOW - 1);
            if len >= EXEC_FILENAME_MAX {
                len = EXEC_FILENAME_MAX;
                mark(ev, EXEC_FILENAME_TRUNCATED);
            }
            unsafe { write_volatile(&mut (*ev).filename_len, len as u16) };
        } else {
            mark(ev, EXEC_FILENAME_TRUNCATED);
        }
    }

    let mut ppid = 0u32;
    if offsets_for(OFFSETS_TASK) && task != 0 {
        let parent: u64 = kernel.read(task, offset(|o| &o.task_real_parent));
        if parent != 0 {
            ppid = kernel.read(parent, offset(|o| &o.task_tgid));
        }
        let mm: u64 = kernel.read(task, offset(|o| &o.task_mm));
        if mm == 0 {
            mark(ev, EXEC_NO_MM);
        } else {
            let arg_start: u64 = kernel.read(mm, offset(|o| &o.mm_arg_start));
            let arg_end: u64 = kernel.read(mm, offset(|o| &o.mm_arg_end));
            let env_start: u64 = kernel.read(mm, offset(|o| &o.mm_env_start));
            let env_end: u64 = kernel.read(mm, offset(|o| &o.mm_env_end));
            let len = read_argv(buf, lengths(ev).0, arg_start, arg_end, ev);
            unsafe { write_volatile(&mut (*ev).argv_len, len as u16) };
            if WALK != WALK_NONE {
                let len = read_env::<WALK>(buf, lengths(ev).1, env_start, env_end, ev);
                unsafe { write_volatile(&mut (*ev).env_len, len as u16) };
            } else if config().is_some_and(|c| unsafe { read_volatile(&c.env_names) } != 0) {
                mark(ev, EXEC_ENV_INCOMPLETE);
            }
        }
    } else {
        mark(ev, EXEC_NO_MM);
    }

    // An exec that declared env entries, or whose environment user space must read
    // from /proc, keeps its cgroup's connects flowing until user space processed it.
    // Counted whether or not the filter is on yet: user space turns it on after a drain,
    // and an exec sent before that with its connect after must still hold them open.
    let declared = unsafe { read_volatile(&(*ev).env_len) } != 0
        || unsafe { read_volatile(&(*ev).flags) } & EXEC_ENV_INCOMPLETE != 0;
    if declared && disarm(cgroup_id) {
        mark(ev, EXEC_DISARMED);
    }

    let len = lengths(ev).2;
    unsafe {
        write_volatile(&mut (*ev).header, header(KIND_EXEC, len));
        write_volatile(&mut (*ev).timestamp_ns, bpf_ktime_get_ns());
        write_volatile(&mut (*ev).cgroup_id, cgroup_id);
        write_volatile(&mut (*ev).origin_cgroup_id, origin);
        write_volatile(&mut (*ev).pid, tgid);
        write_volatile(&mut (*ev).tid, pid_tgid as u32);
        write_volatile(&mut (*ev).ppid, ppid);
        write_volatile(&mut (*ev).uid, bpf_get_current_uid_gid() as u32);
        write_volatile(&mut (*ev)._pad, [0; 6]);
        write_volatile(&mut (*ev).comm, comm());
    }
    if !output(buf, len) {
        count(|d| unsafe { addr_of_mut!((*d).exec) });
    }
}

/// Sets a flag in the record being built.
#[inline(always)]
fn mark(ev: *mut ExecEvent, flag: u32) {
    unsafe { write_volatile(&mut (*ev).flags, read_volatile(&(*ev).flags) | flag) };
}

/// Where argv starts, where env starts and where the record ends, from the lengths
/// written so far (read back from the record, each bounded by its maximum).
#[inline(always)]
fn lengths(ev: *mut ExecEvent) -> (usize, usize, usize) {
    let (f, a, e) = unsafe {
        (
            read_volatile(&(*ev).filename_len) as usize & (EXEC_FILENAME_MAX * 2 - 1),
            read_volatile(&(*ev).argv_len) as usize & (EXEC_ARGV_MAX * 2 - 1),
            read_volatile(&(*ev).env_len) as usize & (EXEC_ENV_MAX * 2 - 1),
        )
    };
    let f = f.min(EXEC_FILENAME_MAX);
    let a = a.min(EXEC_ARGV_MAX);
    let e = e.min(EXEC_ENV_MAX);
    (EXEC_HDR + f, EXEC_HDR + f + a, EXEC_HDR + f + a + e)
}

/// An exec outside the host cgroups starts a new lineage there (a container's first
/// process was forked on the host, then joined its cgroup); one in a host cgroup keeps
/// what the process inherited, so leaving a container and exec'ing does not clear it.
#[inline(always)]
fn anchor_lineage(tgid: u32, cgroup_id: u64) {
    if lineage_on()
        && !is_host(cgroup_id)
        && let Some(origin) = LINEAGE.get_ptr_mut(tgid)
        // Most execs already carry this lineage (forked in the same cgroup): reading
        // first keeps the line clean.
        && unsafe { read_volatile(origin) } != cgroup_id
    {
        unsafe { write_volatile(origin, cgroup_id) };
    }
}

/// The address of a tracepoint record's `__data_loc` string (0 when absent).
#[inline(always)]
fn data_loc(record: u64, field: u64) -> u64 {
    let loc: u32 = unsafe { read_kernel(record + (field & 0xfff)) };
    if loc == 0 {
        return 0;
    }
    // Low 16 bits: offset of the string from the start of the record.
    record + (loc & 0xffff) as u64
}

/// Copies the NUL-separated argv area into the record; returns its length.
#[inline(always)]
fn read_argv(buf: *mut u8, off: usize, start: u64, end: u64, ev: *mut ExecEvent) -> usize {
    if start == 0 || end <= start {
        return 0;
    }
    let mut len = (end - start) as usize;
    if len > EXEC_ARGV_MAX {
        len = EXEC_ARGV_MAX;
        mark(ev, EXEC_ARGV_TRUNCATED);
    }
    let len = len & (WINDOW - 1);
    let ret = unsafe {
        bpf_probe_read_user(
            buf.add(off & (WINDOW - 1)).cast(),
            len as u32,
            start as *const c_void,
        )
    };
    if ret < 0 {
        mark(ev, EXEC_ARGV_TRUNCATED);
        return 0;
    }
    len
}

/// State of one environment walk, in a per-CPU map: a `bpf_loop` callback can only be
/// handed a stack pointer, and values loaded from a map are unknown to the verifier, so
/// every step starts from the same verifier state and its paths prune (no state
/// explosion, on old verifiers too).
#[repr(C, align(8))]
struct EnvWalk {
    /// Next user address to read, and the end of the environment.
    pos: u64,
    end: u64,
    /// User address of the first entry found for each name index (0: not found).
    found: [u64; ENV_NAMES_MAX],
    /// Non-zero while skipping the rest of an entry longer than one read.
    continuing: u64,
    /// Non-zero when a read failed.
    failed: u64,
    /// Bytes of entries copied into the record so far.
    copied: u64,
    /// Bytes the last read returned (its NUL included).
    len: u64,
    /// Distinct lengths of the wanted names.
    lens: [u8; ENV_NAMES_MAX],
    /// The entry being looked at (8-aligned: names are compared a word at a time).
    entry: [u8; EXEC_ENV_ENTRY_MAX],
}

#[map]
static ENV_WALK: PerCpuArray<EnvWalk> = PerCpuArray::with_max_entries(1, 0);

/// Walks the new process's environment (`env_start..env_end`, user memory) one entry
/// (or one piece of a longer entry) per step, remembering where the first entry of each
/// wanted name is; then copies those entries into the record in name order. Returns
/// the bytes appended.
#[inline(always)]
fn read_env<const WALK: u8>(
    buf: *mut u8,
    base: usize,
    start: u64,
    end: u64,
    ev: *mut ExecEvent,
) -> usize {
    let Some(cfg) = config() else { return 0 };
    if unsafe { read_volatile(&cfg.env_names) } == 0 || start == 0 || end <= start {
        return 0;
    }
    let Some(walk) = ENV_WALK.get_ptr_mut(0) else {
        return 0;
    };
    unsafe {
        (*walk).pos = start;
        (*walk).end = end;
        (*walk).found = [0; ENV_NAMES_MAX];
        (*walk).continuing = 0;
        (*walk).failed = 0;
        (*walk).copied = 0;
        (*walk).lens = read_volatile(&cfg.env_name_lens);
    }
    let complete = if WALK == WALK_LOOP {
        let steps = unsafe {
            bpf_loop(
                EXEC_ENV_SCAN_MAX,
                env_step as *mut c_void,
                core::ptr::null_mut(),
                0,
            )
        };
        steps >= 0
    } else {
        let mut step = 0;
        while step < EXEC_ENV_SCAN_BOUNDED {
            step += 1;
            if env_walk_step(walk) {
                break;
            }
        }
        true
    };
    let (pos, failed) = unsafe { (read_volatile(&(*walk).pos), read_volatile(&(*walk).failed)) };
    if !complete || failed != 0 || pos < end {
        mark(ev, EXEC_ENV_INCOMPLETE);
    }
    copy_found(walk, buf, base, ev)
}

/// Copies the entries the walk found into the record at `base`, in name order.
#[inline(always)]
fn copy_found(walk: *mut EnvWalk, buf: *mut u8, base: usize, ev: *mut ExecEvent) -> usize {
    let mut i = 0;
    while i < ENV_NAMES_MAX {
        let at = unsafe { read_volatile(&(*walk).found[i]) };
        i += 1;
        if at == 0 {
            continue;
        }
        // Re-read from the map each time: an unknown scalar, masked below.
        let len = unsafe { read_volatile(&(*walk).copied) } as usize;
        if len > EXEC_ENV_MAX - EXEC_ENV_ENTRY_MAX {
            mark(ev, EXEC_ENV_TRUNCATED);
            break;
        }
        let dst = unsafe { buf.add((base + (len & (EXEC_ENV_MAX - 1))) & (WINDOW - 1)) };
        let n = unsafe {
            bpf_probe_read_user_str(dst.cast(), EXEC_ENV_ENTRY_MAX as u32, at as *const c_void)
        };
        if n > 0 {
            let n = n as usize & (EXEC_ENV_ENTRY_MAX * 2 - 1);
            if n >= EXEC_ENV_ENTRY_MAX {
                mark(ev, EXEC_ENV_TRUNCATED);
            }
            unsafe { write_volatile(&mut (*walk).copied, (len + n) as u64) };
        }
    }
    unsafe { read_volatile(&(*walk).copied) as usize & (EXEC_ENV_MAX * 2 - 1) }
}

/// One `bpf_loop` step of the environment walk: returns 1 to stop, 0 to go on.
#[inline(never)]
extern "C" fn env_step(_index: u64, _ctx: *mut c_void) -> i64 {
    let Some(walk) = ENV_WALK.get_ptr_mut(0) else {
        return 1;
    };
    env_walk_step(walk) as i64
}

/// One step of the walk: reads the entry (or piece) at `pos` and notes it if it is a
/// wanted one. Returns whether the walk is over. The read's length goes through the map
/// (`walk.len`) and is read back at each use, so no comparison narrows a register the
/// rest of the step keeps: every path ends in the same verifier state, and they prune.
#[inline(always)]
fn env_walk_step(walk: *mut EnvWalk) -> bool {
    let walk = unsafe { &mut *walk };
    if walk.pos >= walk.end {
        return true;
    }
    let n = unsafe {
        bpf_probe_read_user_str(
            walk.entry.as_mut_ptr().cast(),
            EXEC_ENV_ENTRY_MAX as u32,
            walk.pos as *const c_void,
        )
    };
    if n <= 0 {
        walk.failed = 1;
        return true;
    }
    unsafe { write_volatile(&mut walk.len, n as u64) };
    if unsafe { read_volatile(&walk.continuing) } == 0
        && let Some(index) = env_name_index(walk)
    {
        let slot = &mut walk.found[index as usize & (ENV_NAMES_MAX - 1)];
        if *slot == 0 {
            *slot = walk.pos;
        }
    }
    let n = unsafe { read_volatile(&walk.len) };
    // A piece that filled the read (no NUL in it) continues in the next read.
    let truncated = n >= EXEC_ENV_ENTRY_MAX as u64;
    walk.continuing = truncated as u64;
    walk.pos += n - truncated as u64;
    false
}

/// The index of the wanted name the entry in `walk.entry` (`walk.len` bytes with its
/// NUL) starts `NAME=` with, if any. Each name is compared where its `=` would be, then
/// word by word under the masks user space computed for its length (no branch per
/// word, so few verifier states).
#[inline(always)]
fn env_name_index(walk: &EnvWalk) -> Option<u8> {
    let cfg = config()?;
    let mut slot = 0;
    while slot < ENV_NAMES_MAX {
        let l = walk.lens[slot] as usize & ENV_NAME_MAX;
        let index = slot;
        slot += 1;
        if l == 0 {
            // Names are packed at the front.
            break;
        }
        let n = unsafe { read_volatile(&walk.len) } as usize;
        if n < l + 2 || walk.entry[l] != b'=' {
            continue;
        }
        if name_matches(
            &walk.entry,
            &cfg.env_name_masks[index],
            &cfg.env_name_words[index],
        ) {
            return Some(index as u8);
        }
    }
    None
}

/// Whether the entry's first words, masked, are the name's: the differences are
/// or-ed together, so there is one branch, not one per word (no read whose size
/// depends on the name's length either, which older verifiers cannot bound).
#[inline(always)]
fn name_matches(
    entry: &[u8; EXEC_ENV_ENTRY_MAX],
    masks: &[u64; ENV_NAME_WORDS],
    words: &[u64; ENV_NAME_WORDS],
) -> bool {
    let src = entry.as_ptr() as *const u64;
    let mut diff = 0;
    let mut w = 0;
    while w < ENV_NAME_WORDS {
        // SAFETY: `entry` holds at least ENV_NAME_WORDS words and is 8-aligned in
        // EnvWalk.
        let word = unsafe { src.add(w).read() };
        diff |= (word & unsafe { read_volatile(&masks[w]) }) ^ unsafe { read_volatile(&words[w]) };
        w += 1;
    }
    diff == 0
}

// ---- connect --------------------------------------------------------------------------

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    let (ip, port, ty) = unsafe {
        (
            read_volatile(&(*sa).user_ip4),
            read_volatile(&(*sa).user_port),
            read_volatile(&(*sa).type_),
        )
    };
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&ip.to_ne_bytes());
    emit_connect(AF_INET, ty, u16::from_be(port as u16), addr, 0, 0);
    // Always allow: rulehost observes, it does not enforce.
    1
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    let (w0, w1, w2, w3, port, ty) = unsafe {
        (
            read_volatile(&(*sa).user_ip6[0]),
            read_volatile(&(*sa).user_ip6[1]),
            read_volatile(&(*sa).user_ip6[2]),
            read_volatile(&(*sa).user_ip6[3]),
            read_volatile(&(*sa).user_port),
            read_volatile(&(*sa).type_),
        )
    };
    let mut addr = [0u8; 16];
    addr[0..4].copy_from_slice(&w0.to_ne_bytes());
    addr[4..8].copy_from_slice(&w1.to_ne_bytes());
    addr[8..12].copy_from_slice(&w2.to_ne_bytes());
    addr[12..16].copy_from_slice(&w3.to_ne_bytes());
    emit_connect(AF_INET6, ty, u16::from_be(port as u16), addr, 0, 0);
    1
}

#[lsm(hook = "socket_connect")]
pub fn connect_lsm(ctx: LsmContext) -> i32 {
    // LSM_HOOK(int, 0, socket_connect, struct socket *sock, struct sockaddr *address,
    //          int addrlen) plus the previous BPF LSM program's return value.
    let ret: i32 = ctx.arg(3);
    if ret != 0 {
        // Already denied: no connect happens; keep the verdict.
        return ret;
    }
    connect_from_sockaddr(ctx.arg(0), ctx.arg(1), ctx.arg(2));
    0
}

#[fentry(function = "security_socket_connect")]
pub fn connect_fentry(ctx: FEntryContext) -> i32 {
    // int security_socket_connect(struct socket *sock, struct sockaddr *address, int addrlen)
    connect_from_sockaddr(ctx.arg(0), ctx.arg(1), ctx.arg(2));
    0
}

/// `struct sockaddr_in6` (UAPI, stable).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct SockaddrIn6 {
    family: u16,
    port: u16,
    flowinfo: u32,
    addr: [u8; 16],
    scope_id: u32,
}

#[inline(always)]
fn connect_from_sockaddr(sock: u64, address: u64, addrlen: i32) {
    if address == 0 || addrlen < 2 {
        return;
    }
    let family: u16 = unsafe { read_kernel(address) };
    if family == 0 {
        // AF_UNSPEC: a disconnect, not a connect.
        return;
    }
    let ty = if offsets_for(OFFSETS_SOCKET) && sock != 0 {
        (unsafe { read_kernel::<u16>(sock + offset(|o| &o.socket_type) as u64) }) as u32
    } else {
        0
    };
    let mut addr = [0u8; 16];
    match family {
        AF_INET if addrlen >= 8 => {
            // struct sockaddr_in { u16 family; __be16 port; __be32 addr; ... }
            let raw: [u8; 8] = unsafe { read_kernel(address) };
            addr[..4].copy_from_slice(&raw[4..8]);
            let port = u16::from_be_bytes([raw[2], raw[3]]);
            emit_connect(family, ty, port, addr, 0, 0);
        }
        AF_INET6 if addrlen >= 24 => {
            let sin6: SockaddrIn6 = unsafe { read_kernel(address) };
            let scope_id = if addrlen >= 28 { sin6.scope_id } else { 0 };
            emit_connect(
                family,
                ty,
                u16::from_be(sin6.port),
                sin6.addr,
                u32::from_be(sin6.flowinfo),
                scope_id,
            );
        }
        AF_INET | AF_INET6 => {}
        _ => emit_connect(family, ty, 0, addr, 0, 0),
    }
}

#[inline(always)]
fn emit_connect(
    family: u16,
    sock_type: u32,
    port: u16,
    addr: [u8; 16],
    flowinfo: u32,
    scope_id: u32,
) {
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    // First what no rule watches (most connects on a busy node): dropped on the
    // destination alone, before the lineage and host-cgroup lookups. A connect dropped
    // here would be dropped by the checks below too, or sent only to be unwatched.
    if unwatched(cgroup_id, family, &addr) {
        count(|d| unsafe { addr_of_mut!((*d).unwatched) });
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let origin = origin_of(tgid, cgroup_id);
    if suppressed(cgroup_id, origin) {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<ConnectEvent>(0) else {
        count(|d| unsafe { addr_of_mut!((*d).connect) });
        return;
    };
    entry.write(ConnectEvent {
        header: header(KIND_CONNECT, size_of::<ConnectEvent>()),
        timestamp_ns: unsafe { bpf_ktime_get_ns() },
        cgroup_id,
        origin_cgroup_id: origin,
        pid: tgid,
        tid: pid_tgid as u32,
        uid: bpf_get_current_uid_gid() as u32,
        sock_type,
        flowinfo,
        scope_id,
        family,
        port,
        _pad: 0,
        addr,
        comm: comm(),
    });
    entry.submit(wake_flags());
}

// ---- process lineage ----------------------------------------------------------------------

/// A new process (not a thread) inherits its parent's lineage; a parent without one
/// outside the host cgroups starts it, and one in them leaves the child none. Every
/// new process passes here, so its entry is always written: whatever an earlier
/// process with the same pid left is overwritten, and no exit hook is needed. Runs in
/// the parent.
#[btf_tracepoint(function = "sched_process_fork")]
pub fn fork_btf(ctx: BtfTracePointContext) -> i32 {
    // sched_process_fork(struct task_struct *parent, struct task_struct *child)
    if !offsets_for(OFFSETS_TASK) || !lineage_on() {
        return 0;
    }
    let child: u64 = ctx.arg(1);
    if child == 0 {
        return 0;
    }
    let parent_tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let child_tgid: u32 = Kernel::Direct.read(child, offset(|o| &o.task_tgid));
    if child_tgid == 0 || child_tgid == parent_tgid {
        return 0;
    }
    // A pid past the array's end (pid_max raised after start) goes untracked: its
    // attribution after leaving a cgroup is lost, never a false one.
    let Some(entry) = LINEAGE.get_ptr_mut(child_tgid) else {
        return 0;
    };
    let origin = match LINEAGE.get(parent_tgid) {
        Some(&origin) if origin != 0 => origin,
        _ => {
            let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
            if is_host(cgroup_id) { 0 } else { cgroup_id }
        }
    };
    unsafe { write_volatile(entry, origin) };
    0
}

// ---- cgroup removal -------------------------------------------------------------------

const RMDIR_HDR: usize = size_of::<CgroupRmdirEvent>();

#[tracepoint(category = "cgroup", name = "cgroup_rmdir")]
pub fn cgroup_rmdir(ctx: TracePointContext) -> u32 {
    cgroup_event(ctx, KIND_CGROUP_RMDIR)
}

/// Creation is reported too, so user space knows a new container's cgroup before any
/// process in it can exec or connect (no race with a directory walk).
#[tracepoint(category = "cgroup", name = "cgroup_mkdir")]
pub fn cgroup_mkdir(ctx: TracePointContext) -> u32 {
    cgroup_event(ctx, KIND_CGROUP_MKDIR)
}

/// `cgroup_mkdir` and `cgroup_rmdir` share one tracepoint class, so one record layout.
#[inline(always)]
fn cgroup_event(ctx: TracePointContext, kind: u16) -> u32 {
    let Some(cfg) = config() else {
        return 0;
    };
    let record = ctx.as_ptr() as u64;
    let root: u32 = unsafe { read_kernel(record + (offset(|o| &o.tp_rmdir_root) as u64 & 0xfff)) };
    if root != unsafe { read_volatile(&cfg.cgroup_hierarchy) } {
        return 0;
    }
    let id: u64 = unsafe { read_kernel(record + (offset(|o| &o.tp_rmdir_id) as u64 & 0xfff)) };
    let Some(scratch) = SCRATCH.get_ptr_mut(1) else {
        return 0;
    };
    let buf = unsafe { addr_of_mut!((*scratch).buf) } as *mut u8;
    let mut path_len = 0usize;
    let src = data_loc(record, offset(|o| &o.tp_rmdir_path) as u64);
    if src != 0 {
        let n = unsafe {
            bpf_probe_read_kernel_str(
                buf.add(RMDIR_HDR).cast(),
                CGROUP_PATH_MAX as u32,
                src as *const c_void,
            )
        };
        if n > 0 {
            path_len = n as usize & (CGROUP_PATH_MAX * 2 - 1);
        }
    }
    let len = RMDIR_HDR + path_len;
    unsafe {
        (buf as *mut CgroupRmdirEvent).write(CgroupRmdirEvent {
            header: header(kind, len),
            timestamp_ns: bpf_ktime_get_ns(),
            cgroup_id: id,
            path_len: path_len as u16,
            _pad: [0; 6],
        });
    }
    if !output(buf, len) {
        count(|d| unsafe { addr_of_mut!((*d).cgroup) });
    }
    0
}

// ---- boilerplate ------------------------------------------------------------------------

/// GPL-compatible, as helpers such as `bpf_probe_read_kernel` require (see Cargo.toml).
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

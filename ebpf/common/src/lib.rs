//! Layouts shared by rulehost's eBPF programs (`rulehost-ebpf`) and its user space
//! (`rulehost::probes`).
//!
//! Every ring-buffer record starts with a [`RecordHeader`] whose `kind` says which
//! fixed part follows and whose `len` is the record's total length. Exec and
//! cgroup-removal records are variable-length: their fixed part is followed by the
//! payload bytes its length fields describe, so a short exec costs a short record.
//! All integers are in the host's byte order except where a field says otherwise.
//! Everything is `#[repr(C)]`, padded explicitly, and 8-byte aligned so the kernel
//! (which aligns ring-buffer records to 8 bytes) and user space agree.

#![no_std]

/// `TASK_COMM_LEN` in the kernel.
pub const COMM_LEN: usize = 16;

/// Record kinds ([`RecordHeader::kind`]).
pub const KIND_EXEC: u16 = 1;
pub const KIND_CONNECT: u16 = 2;
pub const KIND_CGROUP_RMDIR: u16 = 3;
/// A cgroup v2 directory was created (same layout as [`CgroupRmdirEvent`]).
pub const KIND_CGROUP_MKDIR: u16 = 4;

/// Layout version written in every header; user space rejects other versions.
pub const RECORD_VERSION: u16 = 2;

/// Leads every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordHeader {
    /// One of the `KIND_*` constants.
    pub kind: u16,
    /// [`RECORD_VERSION`].
    pub version: u16,
    /// Total record length in bytes, header and payload included.
    pub len: u32,
}

// ---- exec ----------------------------------------------------------------------

/// Longest filename copied (bytes, terminating NUL included).
pub const EXEC_FILENAME_MAX: usize = 512;
/// Longest argv area copied (bytes of the NUL-separated `arg_start..arg_end`).
pub const EXEC_ARGV_MAX: usize = 2048;
/// Longest single captured environment entry (`NAME=value` plus NUL).
pub const EXEC_ENV_ENTRY_MAX: usize = 256;
/// Most bytes of captured environment entries in one record.
pub const EXEC_ENV_MAX: usize = 1024;
/// Most `bpf_probe_read_user_str` calls spent walking one process's environment
/// (an entry longer than [`EXEC_ENV_ENTRY_MAX`] costs more than one); one `bpf_loop`
/// step each.
pub const EXEC_ENV_SCAN_MAX: u32 = 512;
/// The same bound for kernels without `bpf_loop` (before 5.17), where the walk is a
/// loop the verifier follows step by step: kept small so it verifies quickly. A longer
/// environment is marked [`EXEC_ENV_INCOMPLETE`] and user space reads the rest.
pub const EXEC_ENV_SCAN_BOUNDED: u32 = 24;

/// The filename was longer than [`EXEC_FILENAME_MAX`] (or could not be read).
pub const EXEC_FILENAME_TRUNCATED: u32 = 1 << 0;
/// argv was longer than [`EXEC_ARGV_MAX`] (or could not be read).
pub const EXEC_ARGV_TRUNCATED: u32 = 1 << 1;
/// A captured env entry was longer than [`EXEC_ENV_ENTRY_MAX`], or the captured
/// entries did not fit in [`EXEC_ENV_MAX`].
pub const EXEC_ENV_TRUNCATED: u32 = 1 << 2;
/// The environment was larger than [`EXEC_ENV_SCAN_MAX`] reads could walk, or
/// reading it failed: a wanted entry may have been missed.
pub const EXEC_ENV_INCOMPLETE: u32 = 1 << 3;
/// No `mm` (or no kernel offsets): ppid, argv and env are missing.
pub const EXEC_NO_MM: u32 = 1 << 4;
/// This exec captured env entries while the connect filter was on, so it counted in
/// `ISSUED` for its cgroup: user space counts it in `PROCESSED` once rules saw it.
pub const EXEC_DISARMED: u32 = 1 << 5;

/// Fixed part of an exec record. Followed by `filename_len` bytes of filename
/// (NUL-terminated unless truncated), `argv_len` bytes of NUL-separated argv, and
/// `env_len` bytes of NUL-terminated `NAME=value` entries whose names user space
/// listed in `Config::env_name_words`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecEvent {
    pub header: RecordHeader,
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC) at the exec.
    pub timestamp_ns: u64,
    /// cgroup v2 id of the process (`bpf_get_current_cgroup_id`).
    pub cgroup_id: u64,
    /// The cgroup the process's lineage started in, when it is not `cgroup_id` (the
    /// process, or an ancestor, left it); 0 otherwise. See `LINEAGE`.
    pub origin_cgroup_id: u64,
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    /// `EXEC_*` flags.
    pub flags: u32,
    pub filename_len: u16,
    pub argv_len: u16,
    pub env_len: u16,
    pub _pad: [u8; 6],
    pub comm: [u8; COMM_LEN],
}

/// Largest exec record.
pub const EXEC_RECORD_MAX: usize =
    core::mem::size_of::<ExecEvent>() + EXEC_FILENAME_MAX + EXEC_ARGV_MAX + EXEC_ENV_MAX;

// ---- connect -------------------------------------------------------------------

pub const AF_UNIX: u16 = 1;
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// A connect (fixed size). For `AF_INET` the address is `addr[..4]`; for `AF_INET6`
/// all 16 bytes; both in network byte order (as on the wire). `port` is in host
/// byte order. `flowinfo`/`scope_id` are only known on the LSM/fentry hooks (0 on
/// the cgroup hooks).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectEvent {
    pub header: RecordHeader,
    pub timestamp_ns: u64,
    pub cgroup_id: u64,
    /// As [`ExecEvent::origin_cgroup_id`].
    pub origin_cgroup_id: u64,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    /// Raw `SOCK_*` type of the socket.
    pub sock_type: u32,
    pub flowinfo: u32,
    pub scope_id: u32,
    /// `AF_*` of the destination.
    pub family: u16,
    pub port: u16,
    pub _pad: u32,
    pub addr: [u8; 16],
    pub comm: [u8; COMM_LEN],
}

// ---- cgroup removal --------------------------------------------------------------

/// Longest cgroup path copied (bytes, NUL included).
pub const CGROUP_PATH_MAX: usize = 256;

/// A cgroup v2 directory was removed. Followed by `path_len` bytes of its path
/// relative to the cgroup v2 root (NUL-terminated unless truncated).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupRmdirEvent {
    pub header: RecordHeader,
    pub timestamp_ns: u64,
    pub cgroup_id: u64,
    pub path_len: u16,
    pub _pad: [u8; 6],
}

/// Largest cgroup-removal record.
pub const CGROUP_RECORD_MAX: usize = core::mem::size_of::<CgroupRmdirEvent>() + CGROUP_PATH_MAX;

// ---- maps shared with user space ---------------------------------------------------

/// Name of the ring buffer map.
pub const MAP_EVENTS: &str = "EVENTS";
/// `PerCpuArray<DropCounters>`, one entry.
pub const MAP_DROPS: &str = "DROPS";
/// `Array<Config>`, one entry.
pub const MAP_CONFIG: &str = "CONFIG";
/// The programs' read-only global (`KernelOffsets`), set by user space before load: the
/// verifier then knows each offset as a constant, so a BTF program can read a kernel
/// field with a plain load instead of a helper call.
pub const GLOBAL_OFFSETS: &str = "KERNEL_OFFSETS";
/// `LruHashMap<u64, u8>`: cgroup ids user space classified as host (not a container):
/// the filter for `Config::containers_only`, and where an exec does not re-anchor
/// its process's lineage.
pub const MAP_HOST_CGROUPS: &str = "HOST_CGROUPS";

/// `Array<u64>` indexed by process (tgid): the cgroup its lineage started in, 0 for
/// none. Set at exec to the current cgroup unless that is a host one, and written for
/// every new process at fork (inherited, or 0), so a reused pid never keeps what the
/// last process with it left and nothing runs at exit; user space seeds the processes
/// running when it starts. Consulted by the exec and connect programs, so a process
/// that left its container's cgroup (or whose parent did) is still reported with the
/// container it came from.
pub const MAP_LINEAGE: &str = "LINEAGE";
/// Entries of `LINEAGE` in the object; user space sizes it to the kernel's `pid_max`
/// (8 bytes per possible pid: 256 KiB at the kernel's default of 32,768, 32 MiB at the
/// 4,194,304 systemd sets). An array indexed by pid costs a fork one store and an exit
/// nothing, where a hash map cost both a locked update.
pub const LINEAGE_DEFAULT: u32 = 32768;
/// The kernel's ceiling on `pid_max` (`PID_MAX_LIMIT` on 64-bit), so `LINEAGE` is never
/// sized past it.
pub const LINEAGE_MAX: u32 = 4 << 20;

/// `HashMap<[u8; 16], u8>`: the destinations some rule watches (IPv4 as IPv4-mapped
/// IPv6). With `Config::filter_connects`, a connect elsewhere is not sent, unless its
/// cgroup has execs user space has not processed yet (`ISSUED` != `PROCESSED`).
pub const MAP_WATCHED: &str = "WATCHED";
/// Capacity of `WATCHED`.
pub const WATCHED_MAX: u32 = 16384;
/// `HashMap<u64, u64>`: per cgroup, execs that captured env entries while the
/// connect filter was on (written by the kernel only).
pub const MAP_ISSUED: &str = "ISSUED";
/// `HashMap<u64, u64>`: per cgroup, how many of those user space has processed
/// (written by user space only).
pub const MAP_PROCESSED: &str = "PROCESSED";
/// Capacity of `ISSUED` and `PROCESSED` (cgroups; a full `ISSUED` turns the filter
/// off in the kernel, never silently misses).
pub const PENDING_MAX: u32 = 65536;

/// Default size of the ring buffer (bytes).
pub const EVENTS_BYTES: u32 = 8 << 20;
/// Capacity of `HOST_CGROUPS` (LRU: an evicted host cgroup just gets reported).
pub const HOST_CGROUPS_MAX: u32 = 16384;

/// Per-CPU counters of records that could not be sent.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropCounters {
    /// Exec records lost because the ring buffer was full.
    pub exec: u64,
    /// Connect records lost because the ring buffer was full.
    pub connect: u64,
    /// Cgroup-removal records lost because the ring buffer was full.
    pub cgroup: u64,
    /// Events deliberately suppressed by the host-cgroup filter (not a loss).
    pub filtered: u64,
    /// Connects to destinations no rule watches, deliberately not sent (not a loss).
    pub unwatched: u64,
}

/// How many env names can be captured, and their longest name (bytes, no NUL).
pub const ENV_NAMES_MAX: usize = 8;
pub const ENV_NAME_MAX: usize = 63;

/// Run-time settings (the single entry of `CONFIG`); user space may rewrite it
/// at any time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Non-zero: exec/connect events from cgroups in `HOST_CGROUPS` are not sent.
    pub containers_only: u32,
    /// Records are submitted without waking user space until this many bytes are
    /// waiting in the ring buffer (user space polls on a short timer besides, except
    /// while `idle`).
    pub wakeup_bytes: u32,
    /// Cgroup hierarchy id whose removals are reported (0: cgroup v2).
    pub cgroup_hierarchy: u32,
    /// Number of env names to capture (0 skips the environment walk).
    pub env_names: u32,
    /// The length of each name to capture, packed at the front (0: unused slot); a
    /// slot's index is its entries' place in the record.
    pub env_name_lens: [u8; ENV_NAMES_MAX],
    /// Non-zero once the fork hook is attached: only then may exec and fork write
    /// `LINEAGE` (an entry no fork overwrites could outlive its pid).
    pub lineage: u32,
    /// Non-zero while user space sleeps on the ring buffer with no short timer: the
    /// next record wakes it at once, whatever `wakeup_bytes` says, and clears this.
    pub idle: u32,
    /// Non-zero: connects to destinations not in `WATCHED` are not sent (every rule
    /// that selects connects asked for only watched ones).
    pub filter_connects: u32,
    pub _pad: u32,
    /// For each name, the word masks that keep a name of its length (and zero the
    /// rest) of an entry's first [`ENV_NAME_MAX`] + 1 bytes.
    pub env_name_masks: [[u64; ENV_NAME_WORDS]; ENV_NAMES_MAX],
    /// Each name, zero-padded, as words: an entry is that name when its first words,
    /// masked, equal these. Compared in place, with no branch per word, this costs an
    /// exec less than a hash-map lookup of the masked words did.
    pub env_name_words: [[u64; ENV_NAME_WORDS]; ENV_NAMES_MAX],
}

/// Words (u64) in a name of at most [`ENV_NAME_MAX`] bytes and its NUL.
pub const ENV_NAME_WORDS: usize = (ENV_NAME_MAX + 1) / 8;

/// The masks of [`Config::env_name_masks`] for a name of `len` bytes: whole words
/// kept, the word holding the name's end kept in part, the rest zeroed (little-endian:
/// a word's first byte is its lowest).
pub fn env_name_masks(len: usize) -> [u64; ENV_NAME_WORDS] {
    let mut masks = [0u64; ENV_NAME_WORDS];
    let mut w = 0;
    while w < ENV_NAME_WORDS {
        let low = w * 8;
        masks[w] = if len >= low + 8 {
            u64::MAX
        } else if len <= low {
            0
        } else {
            (1u64 << ((len - low) * 8)) - 1
        };
        w += 1;
    }
    masks
}

/// `KernelOffsets::flags`: the task/mm offsets are valid.
pub const OFFSETS_TASK: u32 = 1 << 0;
/// The `linux_binprm::filename` offset is valid (tp_btf exec hook).
pub const OFFSETS_BPRM: u32 = 1 << 1;
/// The `socket::type` offset is valid (LSM/fentry connect hooks).
pub const OFFSETS_SOCKET: u32 = 1 << 2;

/// [`Config::env_name_words`] for `name` (at most [`ENV_NAME_MAX`] bytes).
pub fn env_name_words(name: &[u8]) -> [u64; ENV_NAME_WORDS] {
    let mut bytes = [0u8; ENV_NAME_WORDS * 8];
    let len = name.len().min(ENV_NAME_MAX);
    bytes[..len].copy_from_slice(&name[..len]);
    let mut words = [0u64; ENV_NAME_WORDS];
    for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
        let mut le = [0u8; 8];
        le.copy_from_slice(chunk);
        *word = u64::from_le_bytes(le);
    }
    words
}

/// Kernel structure offsets (bytes) computed by user space from the running
/// kernel's BTF and tracepoint formats at start-up (the global `KERNEL_OFFSETS`),
/// so no kernel layout is compiled into the programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `OFFSETS_*` flags.
    pub flags: u32,
    /// `task_struct::mm`
    pub task_mm: u32,
    /// `task_struct::real_parent`
    pub task_real_parent: u32,
    /// `task_struct::tgid`
    pub task_tgid: u32,
    /// `mm_struct::{arg_start, arg_end, env_start, env_end}`
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    pub mm_env_start: u32,
    pub mm_env_end: u32,
    /// `linux_binprm::filename`
    pub bprm_filename: u32,
    /// `socket::type`
    pub socket_type: u32,
    /// Offset of the `__data_loc char[] filename` field in the
    /// `sched/sched_process_exec` tracepoint record.
    pub tp_exec_filename: u32,
    /// Offsets of `root`, `id` and `__data_loc char[] path` in the
    /// `cgroup/cgroup_rmdir` tracepoint record.
    pub tp_rmdir_root: u32,
    pub tp_rmdir_id: u32,
    pub tp_rmdir_path: u32,
}

impl KernelOffsets {
    /// No offset known: what the programs hold until user space sets them.
    pub const NONE: Self = Self {
        flags: 0,
        task_mm: 0,
        task_real_parent: 0,
        task_tgid: 0,
        mm_arg_start: 0,
        mm_arg_end: 0,
        mm_env_start: 0,
        mm_env_end: 0,
        bprm_filename: 0,
        socket_type: 0,
        tp_exec_filename: 0,
        tp_rmdir_root: 0,
        tp_rmdir_id: 0,
        tp_rmdir_path: 0,
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, size_of};

    #[test]
    fn layouts_are_padded_and_aligned() {
        assert_eq!(size_of::<RecordHeader>(), 8);
        assert_eq!(size_of::<ExecEvent>(), 80);
        assert_eq!(size_of::<ConnectEvent>(), 96);
        assert_eq!(size_of::<CgroupRmdirEvent>(), 32);
        assert_eq!(size_of::<DropCounters>(), 40);
        assert_eq!(size_of::<Config>(), 40 + 2 * 8 * 8 * 8);
        assert_eq!(size_of::<KernelOffsets>(), 56);
        assert_eq!(align_of::<ExecEvent>(), 8);
        const { assert!(EXEC_RECORD_MAX < 4096) };
    }

    #[test]
    fn name_masks_keep_exactly_the_name() {
        for len in 1..=ENV_NAME_MAX {
            let masks = env_name_masks(len);
            let kept: u32 = masks.iter().map(|m| m.count_ones()).sum();
            assert_eq!(kept as usize, len * 8, "length {len}");
            // The kept bytes are the first ones (little-endian words).
            let bytes: [u8; ENV_NAME_MAX + 1] =
                unsafe { core::mem::transmute::<[u64; ENV_NAME_WORDS], _>(masks) };
            assert!(bytes[..len].iter().all(|b| *b == 0xff), "length {len}");
            assert!(bytes[len..].iter().all(|b| *b == 0), "length {len}");
        }
    }

    #[test]
    fn name_words_are_the_name_zero_padded() {
        let words = env_name_words(b"KUBERNETES_SERVICE_HOST");
        assert_eq!(words[0], u64::from_le_bytes(*b"KUBERNET"));
        assert_eq!(words[1], u64::from_le_bytes(*b"ES_SERVI"));
        assert_eq!(words[2], u64::from_le_bytes(*b"CE_HOST\0"));
        assert!(words[3..].iter().all(|w| *w == 0));
        // An entry's masked words equal the name's exactly when it starts with it.
        let masks = env_name_masks(23);
        let is_name = |entry: &[u8]| {
            let entry = env_name_words(entry);
            (0..ENV_NAME_WORDS).all(|i| entry[i] & masks[i] == words[i])
        };
        assert!(is_name(b"KUBERNETES_SERVICE_HOST=10.0.0.1"));
        assert!(!is_name(b"KUBERNETES_SERVICE_PORT=443"));
    }
}

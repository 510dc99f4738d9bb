//! What the host must offer before probes can run: privileges, memlock, tracefs and
//! bpffs mounts, BPF LSM.

use super::*;

pub(super) const CAP_SYS_ADMIN: u32 = 21;
pub(super) const CAP_PERFMON: u32 = 38;
pub(super) const CAP_BPF: u32 = 39;

pub(super) fn effective_capabilities() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

pub(super) fn check_capabilities() -> Result<()> {
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

/// The RLIMIT_MEMLOCK left in bytes when it could not be lifted (0: unlimited), for
/// the hint on a map that cannot be created.
static MEMLOCK_LEFT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK: lifted when the agent may
/// (CAP_SYS_RESOURCE), else raised to its hard limit, and what is left remembered.
pub(super) fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscalls with valid pointers.
    unsafe {
        if libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) == 0 {
            return;
        }
        let mut limit = std::mem::zeroed::<libc::rlimit>();
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit);
            if limit.rlim_max != libc::RLIM_INFINITY {
                MEMLOCK_LEFT.store(limit.rlim_max, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

/// Why a map may not be created on a kernel before 5.11, when the limit could not be
/// lifted; empty otherwise.
pub(super) fn memlock_hint() -> String {
    match MEMLOCK_LEFT.load(std::sync::atomic::Ordering::Relaxed) {
        0 => String::new(),
        left => format!(
            " (RLIMIT_MEMLOCK is {} KiB and could not be lifted: kernels before 5.11 charge BPF maps to it; grant CAP_SYS_RESOURCE, as deploy/overlays/old-kernels does)",
            left >> 10
        ),
    }
}

/// (mount point, fs type) pairs of /proc/self/mounts.
pub(super) fn mount(fstype: &str, target: &Path) -> bool {
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
pub(super) fn ensure_tracefs() -> Option<PathBuf> {
    let find = || {
        crate::sys::mounts::find(&crate::sys::mounts::current(), "tracefs")
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

pub(super) fn ensure_bpffs() {
    let target = Path::new("/sys/fs/bpf");
    if crate::sys::mounts::current()
        .iter()
        .any(|m| m.fstype == "bpf" && m.target == target)
    {
        return;
    }
    if target.is_dir() {
        mount("bpf", target);
    }
}

pub(super) fn bpf_lsm_enabled() -> bool {
    fs::read_to_string("/sys/kernel/security/lsm")
        .map(|s| s.trim().split(',').any(|l| l == "bpf"))
        .unwrap_or(false)
}

/// `run --check`: whether this host can run the probes, without attaching anything: the
/// privileges, the kernel's BTF, tracefs, the cgroup v2 root, and that the eBPF object
/// loads (maps created, then released). One line per fact.
pub(super) fn facts() -> Result<Vec<String>> {
    check_capabilities()?;
    raise_memlock_limit();
    let mut facts = vec!["privileges: CAP_BPF/CAP_PERFMON (or CAP_SYS_ADMIN) present".to_owned()];
    let btf = fs::read("/sys/kernel/btf/vmlinux").context(
        "kernel BTF (/sys/kernel/btf/vmlinux) is not readable: structure offsets cannot be found",
    )?;
    facts.push(format!("kernel BTF: {} bytes", btf.len()));
    match ensure_tracefs() {
        Some(path) => facts.push(format!("tracefs: {}", path.display())),
        None => bail!("tracefs is not mounted and cannot be mounted at /sys/kernel/tracing"),
    }
    facts.push(format!(
        "cgroup v2: {}",
        crate::sys::mounts::cgroup2_root()?.display()
    ));
    let ebpf = EbpfLoader::new()
        .load(EMBEDDED_OBJECT)
        .map_err(|e| load_error(e, "loading the embedded eBPF object"))?;
    facts.push(format!(
        "eBPF object: {} programs, maps created",
        ebpf.programs().count()
    ));
    Ok(facts)
}

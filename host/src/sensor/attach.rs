//! Attaching each hook with the best mechanism the running kernel allows, falling back
//! per hook and saying why.

use super::*;

/// Exec program candidates, best first: (program, uses BTF).
pub(super) const EXEC_PROGRAMS: [(&str, bool); 4] = [
    ("exec_btf", true),
    ("exec_tp", false),
    // Without the environment walk (no bpf_loop before Linux 5.17).
    ("exec_btf_noenv", true),
    ("exec_tp_noenv", false),
];

pub(super) fn attach_exec(
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

pub(super) fn try_btf_tracepoint(ebpf: &mut Ebpf, prog: &str, tp: &str, btf: &Btf) -> Result<()> {
    let program: &mut BtfTracePoint = program_mut(ebpf, prog)?;
    program.load(tp, btf).map_err(|e| program_error(e, prog))?;
    program.attach().map_err(|e| program_error(e, prog))?;
    Ok(())
}

pub(super) fn attach_connect(
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
    let root = crate::mounts::cgroup2_root().map_err(|e| {
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

pub(super) fn attach_cgroup_rmdir(
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

/// The lineage hooks: the exit hook first, and the fork hook only once it is in (an
/// entry nothing removes could outlive its pid and misattribute a reused one). On
/// success the caller turns `Config::lineage` on.
pub(super) fn attach_lineage(
    ebpf: &mut Ebpf,
    btf: Option<&Btf>,
    offsets: &abi::KernelOffsets,
    fallbacks: &mut Vec<String>,
) -> &'static str {
    let result = (|| -> Result<()> {
        let btf = btf
            .filter(|_| offsets.flags & abi::OFFSETS_TASK != 0)
            .ok_or_else(|| anyhow!("fork_btf: no kernel BTF"))?;
        let exit: &mut TracePoint = program_mut(ebpf, "process_exit")?;
        exit.load().map_err(|e| program_error(e, "process_exit"))?;
        exit.attach("sched", "sched_process_exit")
            .map_err(|e| program_error(e, "process_exit"))?;
        try_btf_tracepoint(ebpf, "fork_btf", "sched_process_fork", btf)
    })();
    match result {
        Ok(()) => "tp_btf/sched_process_fork+tracepoint/sched/sched_process_exit",
        Err(e) => {
            fallbacks.push(format!(
                "lineage (attribution after leaving a cgroup) is off: {e:#}"
            ));
            "none"
        }
    }
}

pub(super) fn program_mut<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T>
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
pub(super) fn program_error(error: ProgramError, what: &str) -> anyhow::Error {
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
pub(super) fn is_eperm(error: &(dyn std::error::Error + 'static)) -> bool {
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

pub(super) fn load_error(error: aya::EbpfError, what: &str) -> anyhow::Error {
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

//! Attaching each hook with the best mechanism the running kernel allows, falling back
//! per hook and saying why.

use super::*;

/// What attaching needs and gathers: the kernel's BTF and offsets, the mechanisms a
/// test forbade, why better hooks were passed over, and each loaded program's figures.
pub(super) struct Attaching<'a> {
    pub btf: Option<&'a Btf>,
    pub offsets: &'a abi::KernelOffsets,
    pub forbidden: Forbidden,
    pub fallbacks: Vec<String>,
    pub loads: Vec<ProgramLoad>,
    /// False for `run --check`: programs are loaded (verified), never attached.
    pub attach: bool,
}

impl Attaching<'_> {
    /// Loads `name` with `load`, timing it, and records its verifier figure.
    fn load<T>(
        &mut self,
        ebpf: &mut Ebpf,
        name: &'static str,
        load: impl FnOnce(&mut Ebpf) -> Result<T>,
    ) -> Result<T> {
        let (result, took) = timed(|| load(ebpf));
        let value = result?;
        let verified_insns = ebpf
            .program(name)
            .and_then(|p| p.info().ok())
            .and_then(|info| info.verified_instruction_count());
        self.loads.push(ProgramLoad {
            program: name,
            verified_insns,
            load_us: took.as_micros() as u64,
        });
        Ok(value)
    }
}

/// An exec program: its name, whether it is a BTF tracepoint, how it captures env.
pub(super) struct ExecProgram {
    pub name: &'static str,
    pub btf: bool,
    pub env: EnvCapture,
}

/// Exec program candidates, best first: `bpf_loop` env walks (5.17+), bounded ones
/// (older verifiers), none (then env comes from /proc only); each a BTF tracepoint,
/// else a classic one.
pub(super) const EXEC_PROGRAMS: [ExecProgram; 6] = [
    exec_program("exec_btf", true, EnvCapture::BpfLoop),
    exec_program("exec_tp", false, EnvCapture::BpfLoop),
    exec_program("exec_btf_bounded", true, EnvCapture::Bounded),
    exec_program("exec_tp_bounded", false, EnvCapture::Bounded),
    exec_program("exec_btf_noenv", true, EnvCapture::Proc),
    exec_program("exec_tp_noenv", false, EnvCapture::Proc),
];

const fn exec_program(name: &'static str, btf: bool, env: EnvCapture) -> ExecProgram {
    ExecProgram { name, btf, env }
}

/// Attaches the best exec program; returns its hook and how it captures env.
pub(super) fn attach_exec(
    ebpf: &mut Ebpf,
    at: &mut Attaching,
) -> Result<(&'static str, EnvCapture)> {
    for candidate in &EXEC_PROGRAMS {
        let prog = candidate.name;
        let result = (|| -> Result<&'static str> {
            if candidate.env == EnvCapture::BpfLoop {
                at.forbidden.check(Mechanism::BpfLoop, prog)?;
            }
            if candidate.env != EnvCapture::Proc {
                at.forbidden.check(Mechanism::EnvWalk, prog)?;
            }
            if candidate.btf {
                at.forbidden.check(Mechanism::TpBtf, prog)?;
                let btf = at
                    .btf
                    .filter(|_| at.offsets.flags & abi::OFFSETS_BPRM != 0)
                    .ok_or_else(|| anyhow!("{prog}: no kernel BTF"))?;
                let attach = at.attach;
                at.load(ebpf, prog, |ebpf| {
                    try_btf_tracepoint(ebpf, prog, "sched_process_exec", btf, attach)
                })?;
                return Ok("tp_btf/sched_process_exec");
            }
            if at.offsets.tp_exec_filename == 0 {
                bail!(
                    "{prog}: no sched/sched_process_exec tracepoint format (tracefs not mounted?)"
                );
            }
            at.load(ebpf, prog, |ebpf| {
                let program: &mut TracePoint = program_mut(ebpf, prog)?;
                program.load().map_err(|e| program_error(e, prog))
            })?;
            if at.attach {
                let program: &mut TracePoint = program_mut(ebpf, prog)?;
                program
                    .attach("sched", "sched_process_exec")
                    .map_err(|e| program_error(e, prog))?;
            }
            Ok("tracepoint/sched/sched_process_exec")
        })();
        match result {
            Ok(hook) => return Ok((hook, candidate.env)),
            Err(e) => at.fallbacks.push(format!("{e:#}")),
        }
    }
    bail!(
        "no exec hook could be attached: {}",
        at.fallbacks.join("; ")
    )
}

/// Loads (verifies) a BTF tracepoint program, and attaches it unless checking.
pub(super) fn try_btf_tracepoint(
    ebpf: &mut Ebpf,
    prog: &str,
    tp: &str,
    btf: &Btf,
    attach: bool,
) -> Result<()> {
    let program: &mut BtfTracePoint = program_mut(ebpf, prog)?;
    program.load(tp, btf).map_err(|e| program_error(e, prog))?;
    if attach {
        program.attach().map_err(|e| program_error(e, prog))?;
    }
    Ok(())
}

/// Attaches the best connect hook: the BPF LSM, else fentry, else the cgroup hooks.
pub(super) fn attach_connect(ebpf: &mut Ebpf, at: &mut Attaching) -> Result<&'static str> {
    if let Some(btf) = at
        .btf
        .filter(|_| at.offsets.flags & abi::OFFSETS_SOCKET != 0)
    {
        let lsm_result = (|| -> Result<()> {
            at.forbidden.check(Mechanism::Lsm, "lsm/socket_connect")?;
            if !bpf_lsm_enabled() {
                bail!("BPF LSM is not enabled (no \"bpf\" in /sys/kernel/security/lsm)");
            }
            at.load(ebpf, "connect_lsm", |ebpf| {
                let program: &mut Lsm = program_mut(ebpf, "connect_lsm")?;
                program
                    .load("socket_connect", btf)
                    .map_err(|e| program_error(e, "lsm/socket_connect"))
            })?;
            if at.attach {
                let program: &mut Lsm = program_mut(ebpf, "connect_lsm")?;
                program
                    .attach()
                    .map_err(|e| program_error(e, "lsm/socket_connect"))?;
            }
            Ok(())
        })();
        match lsm_result {
            Ok(()) => return Ok("lsm/socket_connect"),
            Err(e) => at.fallbacks.push(format!("{e:#}")),
        }
        let fentry_result = (|| -> Result<()> {
            at.forbidden
                .check(Mechanism::Fentry, "fentry/security_socket_connect")?;
            at.load(ebpf, "connect_fentry", |ebpf| {
                let program: &mut FEntry = program_mut(ebpf, "connect_fentry")?;
                program
                    .load("security_socket_connect", btf)
                    .map_err(|e| program_error(e, "fentry/security_socket_connect"))
            })?;
            if at.attach {
                let program: &mut FEntry = program_mut(ebpf, "connect_fentry")?;
                program
                    .attach()
                    .map_err(|e| program_error(e, "fentry/security_socket_connect"))?;
            }
            Ok(())
        })();
        match fentry_result {
            Ok(()) => return Ok("fentry/security_socket_connect"),
            Err(e) => at.fallbacks.push(format!("{e:#}")),
        }
    }
    let root = crate::sys::mounts::cgroup2_root().map_err(|e| {
        e.context(format!(
            "no connect hook could be attached (tried: {})",
            at.fallbacks.join("; ")
        ))
    })?;
    let cgroup = fs::File::open(&root)
        .with_context(|| format!("opening the cgroup v2 root {}", root.display()))?;
    for prog in ["connect4", "connect6"] {
        at.load(ebpf, prog, |ebpf| {
            let program: &mut CgroupSockAddr = program_mut(ebpf, prog)?;
            program
                .load()
                .map_err(|e| program_error(e, &format!("loading cgroup/{prog}")))
        })?;
        if !at.attach {
            continue;
        }
        let program: &mut CgroupSockAddr = program_mut(ebpf, prog)?;
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

pub(super) fn attach_cgroup_rmdir(ebpf: &mut Ebpf, at: &mut Attaching) -> &'static str {
    if at.offsets.tp_rmdir_path == 0 {
        at.fallbacks
            .push("cgroup_rmdir: no cgroup/cgroup_rmdir tracepoint format".into());
        return "none";
    }
    let result = (|| -> Result<()> {
        for name in ["cgroup_rmdir", "cgroup_mkdir"] {
            at.load(ebpf, name, |ebpf| {
                let program: &mut TracePoint = program_mut(ebpf, name)?;
                program.load().map_err(|e| program_error(e, name))
            })?;
            if !at.attach {
                continue;
            }
            let program: &mut TracePoint = program_mut(ebpf, name)?;
            program
                .attach("cgroup", name)
                .map_err(|e| program_error(e, name))?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => "tracepoint/cgroup/cgroup_mkdir+cgroup_rmdir",
        Err(e) => {
            at.fallbacks.push(format!("{e:#}"));
            "none"
        }
    }
}

/// The lineage hook (the fork hook writes every new process's entry, so nothing runs at
/// exit). On success the caller turns `Config::lineage` on.
pub(super) fn attach_lineage(ebpf: &mut Ebpf, at: &mut Attaching) -> &'static str {
    let result = (|| -> Result<()> {
        let btf = at
            .btf
            .filter(|_| at.offsets.flags & abi::OFFSETS_TASK != 0)
            .ok_or_else(|| anyhow!("fork_btf: no kernel BTF"))?;
        let attach = at.attach;
        at.load(ebpf, "fork_btf", |ebpf| {
            try_btf_tracepoint(ebpf, "fork_btf", "sched_process_fork", btf, attach)
        })
    })();
    match result {
        Ok(()) => "tp_btf/sched_process_fork",
        Err(e) => {
            at.fallbacks.push(format!(
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
    let text = crate::logging::error_line(&error);
    let hint = if text.contains("failed to create map") {
        super::preflight::memlock_hint()
    } else if text.contains("Operation not permitted") || text.contains("EPERM") {
        " (needs CAP_BPF or CAP_SYS_ADMIN)".into()
    } else if text.contains("Invalid argument") && text.contains("ring") {
        " (the kernel may lack BPF ring buffers: Linux 5.8 or later is needed)".into()
    } else {
        String::new()
    };
    anyhow!("{what}: {}{hint}", text.replace('\n', " "))
}

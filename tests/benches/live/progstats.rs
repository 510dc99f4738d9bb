//! The kernel programs' own cost, from the kernel's BPF statistics
//! (`kernel.bpf_stats_enabled`: run time and run count per program, read from the
//! agent's program descriptors in `/proc/<pid>/fdinfo`). It is what the probes add to
//! each hooked call itself, measured exactly, where the on/off ratios of the workload
//! are within this VM's run-to-run noise. The statistics' own clock reads (two per run,
//! a few tens of ns) are included.

use std::collections::BTreeMap;

const STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Turns the statistics on while it lives (and back off after, if they were off).
pub struct StatsOn {
    was: String,
}

impl StatsOn {
    pub fn enable() -> Option<StatsOn> {
        let was = std::fs::read_to_string(STATS).ok()?;
        std::fs::write(STATS, "1").ok()?;
        Some(StatsOn { was })
    }
}

impl Drop for StatsOn {
    fn drop(&mut self) {
        let _ = std::fs::write(STATS, self.was.trim());
    }
}

/// Run time (ns) and runs, summed per program type, of the programs `pid` holds.
pub fn by_type(pid: u32) -> BTreeMap<&'static str, (u64, u64)> {
    let mut totals = BTreeMap::new();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return totals;
    };
    for fd in fds.flatten() {
        let Ok(info) = std::fs::read_to_string(fd.path()) else {
            continue;
        };
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
        };
        let (Some(kind), Some(time), Some(runs)) = (
            field("prog_type:"),
            field("run_time_ns:"),
            field("run_cnt:"),
        ) else {
            continue;
        };
        let entry = totals.entry(type_name(kind)).or_insert((0, 0));
        entry.0 += time;
        entry.1 += runs;
    }
    totals
}

/// What the agent uses each program type for.
fn type_name(kind: u64) -> &'static str {
    match kind {
        5 => "tracepoint (exit, cgroup mkdir/rmdir, exec fallback)",
        18 => "cgroup/connect4+6",
        26 => "tp_btf (exec, fork)",
        _ => "other",
    }
}

/// One line: ns per run of each program type over what ran between two readings.
pub fn report(
    before: &BTreeMap<&'static str, (u64, u64)>,
    after: &BTreeMap<&'static str, (u64, u64)>,
) -> String {
    let mut parts = Vec::new();
    for (name, &(time, runs)) in after {
        let (time0, runs0) = before.get(name).copied().unwrap_or((0, 0));
        let runs = runs - runs0;
        if let Some(each) = (time - time0).checked_div(runs) {
            parts.push(format!("{name} {each} ns/run over {runs} runs"));
        }
    }
    parts.join("; ")
}

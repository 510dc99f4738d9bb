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

/// Run time (ns) and runs of each program `pid` holds, by the program's name (the
/// kernel's 16-byte name, from aya's view of the loaded programs).
pub fn by_program(pid: u32) -> BTreeMap<String, (u64, u64)> {
    let names: BTreeMap<u32, String> = aya::programs::loaded_programs()
        .flatten()
        .map(|p| (p.id(), p.name_as_str().unwrap_or("?").to_owned()))
        .collect();
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
        let (Some(kind), Some(id), Some(time), Some(runs)) = (
            field("prog_type:"),
            field("prog_id:"),
            field("run_time_ns:"),
            field("run_cnt:"),
        ) else {
            continue;
        };
        let name = names
            .get(&(id as u32))
            .cloned()
            .unwrap_or_else(|| format!("id {id}"));
        let entry = totals
            .entry(format!("{name} ({})", type_name(kind)))
            .or_insert((0, 0));
        entry.0 += time;
        entry.1 += runs;
    }
    totals
}

/// What the agent uses each program type for.
fn type_name(kind: u64) -> &'static str {
    match kind {
        5 => "tracepoint",
        18 => "cgroup sock_addr",
        26 => "tp_btf",
        _ => "other",
    }
}

/// One line: ns per run of each program type over what ran between two readings.
pub fn report(
    before: &BTreeMap<String, (u64, u64)>,
    after: &BTreeMap<String, (u64, u64)>,
) -> String {
    let mut parts = Vec::new();
    for (name, &(time, runs)) in after {
        let (time0, runs0) = before.get(name).copied().unwrap_or((0, 0));
        let runs = runs - runs0;
        if let Some(each) = (time - time0).checked_div(runs)
            && runs > 0
        {
            parts.push(format!("{name} {each} ns/run over {runs} runs"));
        }
    }
    parts.join("; ")
}

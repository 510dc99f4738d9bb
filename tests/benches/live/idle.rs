//! # `idle`
//!
//! What an agent with nothing to do costs the node: a fresh `rulehost run` (default
//! rule), ready, left 2 s to settle, then watched for 20 s with no container traffic
//! (host processes keep running; the kernel filters their events). Reported: its CPU
//! time over the window (the on-CPU nanoseconds of all its threads, from
//! `/proc/<pid>/task/*/schedstat`) as a share of one core, and its wake-ups per second
//! (the context switches, voluntary and not, of all its threads, from
//! `/proc/<pid>/task/*/status`), with the threads that woke most. Goals: at most 0.2% of
//! one core and about 20 wake-ups per second.

use rulehost_tests::live::LiveAgent;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const SETTLE: Duration = Duration::from_secs(2);
const WINDOW: Duration = Duration::from_secs(20);
const WINDOW_TEST: Duration = Duration::from_secs(1);

/// Per thread (by tid and name): on-CPU ns and context switches.
#[derive(Default)]
struct Snapshot(BTreeMap<(u32, String), (u64, u64)>);

impl Snapshot {
    fn take(pid: u32) -> Snapshot {
        let mut threads = BTreeMap::new();
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return Snapshot(threads);
        };
        for task in tasks.flatten() {
            let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            let read = |file: &str| std::fs::read_to_string(task.path().join(file));
            let name = read("comm").unwrap_or_default().trim().to_owned();
            let cpu_ns = read("schedstat")
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse().ok())
                .unwrap_or(0);
            let switches = read("status")
                .map(|status| {
                    status
                        .lines()
                        .filter(|l| l.contains("ctxt_switches:"))
                        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                        .sum()
                })
                .unwrap_or(0);
            threads.insert((tid, name), (cpu_ns, switches));
        }
        Snapshot(threads)
    }

    /// Per thread name: (on-CPU ns, switches) since `before`.
    fn since(&self, before: &Snapshot) -> BTreeMap<String, (u64, u64)> {
        let mut by_name: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for (key, &(cpu, switches)) in &self.0 {
            let (cpu0, switches0) = before.0.get(key).copied().unwrap_or((0, 0));
            let entry = by_name.entry(key.1.clone()).or_default();
            entry.0 += cpu.saturating_sub(cpu0);
            entry.1 += switches.saturating_sub(switches0);
        }
        by_name
    }
}

/// Runs the idle measurement and prints its `idle:` line.
pub(crate) fn idle(benchmarking: bool) {
    let window = if benchmarking { WINDOW } else { WINDOW_TEST };
    let agent = LiveAgent::start("bench-idle", &[]);
    let pid = agent.pid();
    std::thread::sleep(SETTLE);
    let before = Snapshot::take(pid);
    let started = Instant::now();
    std::thread::sleep(window);
    let after = Snapshot::take(pid);
    let seconds = started.elapsed().as_secs_f64();
    drop(agent);

    let threads = after.since(&before);
    let cpu_ns: u64 = threads.values().map(|t| t.0).sum();
    let switches: u64 = threads.values().map(|t| t.1).sum();
    let mut busiest: Vec<(&String, &(u64, u64))> = threads.iter().collect();
    busiest.sort_by_key(|t| std::cmp::Reverse(t.1.1));
    let top: Vec<String> = busiest
        .iter()
        .take(4)
        .map(|(name, (_, s))| format!("{name} {:.1}/s", *s as f64 / seconds))
        .collect();
    println!(
        "idle: {:.3}% of one core, {:.1} wake-ups/s over {seconds:.1} s ({}); goals 0.2%, ~20/s",
        cpu_ns as f64 / 1e9 / seconds * 100.0,
        switches as f64 / seconds,
        top.join(", ")
    );
}

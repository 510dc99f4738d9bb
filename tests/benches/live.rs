//! What rulehost's probes cost the watched workload, and how fast and how completely
//! findings come out under a burst, on the real kernel (root needed, as for the live
//! tests). One run (`cargo bench -p rulehost-tests --bench live`) does both parts.
//!
//! # `workload` (criterion group)
//!
//! `connect/off` and `exec/off` are measured with no agent running; then a
//! `rulehost run` (default rule, through [`LiveAgent`]) is started and `connect/on` and
//! `exec/on` are measured in the same process. While a function is measured, the whole
//! bench process sits in a container-like cgroup `cri-containerd-<id>.scope` (moved there
//! by writing its pid to `cgroup.procs`, moved back to its own cgroup afterwards), so
//! the kernel sees container events. Before the "on" half, one exec in that container
//! declares `KUBERNETES_SERVICE_HOST=10.96.0.1`, so the rule holds state for the
//! container and evaluates every connect; none matches (the connects go to 127.0.0.1).
//!
//! - `connect/*`: one `connect(2)` of a fresh IPv4 TCP socket to a listener on
//!   127.0.0.1. Only the connect call is timed; creating the socket, accepting and
//!   dropping the connection (same thread, non-blocking) and the close (SO_LINGER 0: a
//!   reset, so no TIME_WAIT piles up) are not.
//! - `exec/*`: fork+exec (std's `posix_spawn`) of `/bin/true` with a 6-entry
//!   container-like environment, waiting for it to exit.
//!
//! Flat sampling; the closing `workload:` line gives each function's mean time per
//! iteration over criterion's measurement samples (criterion's own point estimate in
//! flat mode) and the on/off ratios, then the same for the median sample, which a few
//! samples disturbed by other work on the machine move less. Goals: connect at most
//! +3%, exec at most +5%. The kernel programs' own time per run in the "on" half (BPF
//! statistics, `live/progstats.rs`) follows: the part of the cost that is the probes'
//! alone, exact where the ratios are within this VM's noise. The agent's own CPU use (it shares the machine's cores) is
//! part of what "on" costs; the line before gives the hooks it used and its CPU time.
//! Samples taken while some other process held eBPF programs (another agent, a probe
//! test) are counted and warned about: "off" would not be a no-probe baseline then.
//! The CPU that other processes used while each function was sampled (machine busy time
//! from `/proc/stat`, softirq left out, minus this process, its reaped children and its
//! agent) is printed too: above a few tenths of a CPU the ratios are mostly noise.
//!
//! The bench runs at nice -10 (the agent and every workload process inherit it), so
//! unrelated work on the machine disturbs it less while the agent and the workload still
//! compete as equals. With `RULEHOST_BENCH_NO_AGENT=1` no agent is started, so the "on"
//! functions measure the same thing as the "off" ones: the ratios then show the
//! machine's noise floor for this off-then-on sequence.
//!
//! # `node`
//!
//! See `live/node.rs`: 50 containers' mix of execs, API-server and other connects at a
//! busy node's rate, agent off then on: throughput, the agent's CPU and RSS, findings
//! delivered, latency, drops.
//!
//! # `idle`
//!
//! See `live/idle.rs`: the agent's CPU share and wake-ups per second with no traffic.
//!
//! # `e2e`
//!
//! A fresh agent. One process (`connector none`) runs in a container cgroup with
//! `KUBERNETES_SERVICE_HOST=127.0.0.1` in its env; then the bench re-executes itself as
//! a child (env `RULEHOST_BENCH_BURST`), placed into the same cgroup before its exec,
//! which does 100,000 connects to a listener of its own on 127.0.0.1 back to back (one
//! thread: fresh socket, connect, accept and drop, close with a reset), taking
//! CLOCK_REALTIME just before each connect call and handing those send times back on
//! stdout. Every connect matches the
//! declared address, so each must give one finding.
//!
//! - Delivered: findings whose `data.container_id` is the container's, read from the
//!   agent's output once 100,000 have arrived or no new line came for 3 s (at most
//!   120 s). Lost = sent − delivered. Kernel drops: the agent's closing
//!   `stopped: … N kernel drops` line (its `the kernel dropped N event(s)` warnings are
//!   summed as a check).
//! - Latency, connect → finding written: a thread tails the output file while the
//!   burst runs (re-reading it every 1 ms when at its end, at SCHED_FIFO priority so
//!   other work does not delay it) and stamps each complete line with CLOCK_REALTIME
//!   when it reads it. Latency = that stamp − the finding's
//!   `timestamp` (the kernel's `bpf_ktime_get_ns` at the hook, turned into
//!   CLOCK_REALTIME ns by the agent). The stamp is late by at most the 1 ms poll plus
//!   scheduling, so the figures are an upper bound. p50/p99 by nearest rank.
//! - The agent's CPU time from the burst's start to its stop, per connect; and the
//!   median latency in each tenth of the burst (does it keep up, or fall behind?).
//! - Cross-check, when every finding arrived: the i-th finding is the i-th connect (one
//!   thread, one ring buffer, order kept), so the same latency is also given from the
//!   user-space send times, and the burst's connect rate from their span.

#[path = "live/idle.rs"]
mod idle;
#[path = "live/node.rs"]
mod node;
#[path = "live/progstats.rs"]
mod progstats;

use criterion::{Criterion, SamplingMode};
use rulehost_tests::live::{LiveAgent, TestCgroup, cgroup_root, connector_bin};
use rulehost_tests::trigger_id;
use serde_json::Value;
use std::cell::{Cell, RefCell};
use std::io::Read;
use std::net::{SocketAddrV4, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const KSH: &str = "KUBERNETES_SERVICE_HOST";
/// Set in the burst child's environment: how many connects to make.
const BURST_ENV: &str = "RULEHOST_BENCH_BURST";
/// Set (to anything): the workload's "on" half runs without an agent (a control).
const NO_AGENT_ENV: &str = "RULEHOST_BENCH_NO_AGENT";
/// Connects in the end-to-end burst (a smaller one when run as a test).
const E2E_CONNECTS: usize = 100_000;
const E2E_CONNECTS_TEST: usize = 1_000;
/// The end-to-end wait ends when no finding line came for this long...
const E2E_QUIET: Duration = Duration::from_secs(3);
/// ...or after this long in all.
const E2E_TIMEOUT: Duration = Duration::from_secs(120);
/// The environment of the exec workload: what a pod's process typically carries.
const EXEC_ENV: [(&str, &str); 6] = [
    (
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ),
    ("HOSTNAME", "web-7d9f"),
    (KSH, "10.96.0.1"),
    ("KUBERNETES_SERVICE_PORT", "443"),
    ("KUBERNETES_PORT", "tcp://10.96.0.1:443"),
    ("HOME", "/root"),
];
const SAMPLE_SIZE: usize = 20;
/// The bench's nice value (inherited by the agent and every workload process).
const BENCH_NICE: libc::c_int = -10;

fn main() {
    if let Ok(spec) = std::env::var(BURST_ENV) {
        burst_child(&spec);
    }
    if let Ok(spec) = std::env::var(node::NODE_ENV) {
        node::worker(&spec);
    }
    // Ahead of unrelated work on the machine; the agent and the workload's children
    // inherit it, so they compete with each other as equals.
    // SAFETY: setpriority on this (still single-threaded) process.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, BENCH_NICE) } != 0 {
        eprintln!(
            "bench: cannot renice to {BENCH_NICE}: {}",
            std::io::Error::last_os_error()
        );
    }
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    let listing = has("--list");
    let benchmarking = has("--bench") && !has("--test") && !listing;
    let filter = name_filter(&args);
    let selected = |name: &str| filter.as_ref().is_none_or(|f| name.contains(f.as_str()));

    let mut criterion = Criterion::default()
        .sample_size(SAMPLE_SIZE)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();
    let start_agent = !listing && (selected("workload/connect/on") || selected("workload/exec/on"));
    workload(&mut criterion, start_agent, listing);
    if !listing && selected("e2e") {
        let connects = if benchmarking {
            E2E_CONNECTS
        } else {
            E2E_CONNECTS_TEST
        };
        e2e(connects);
    }
    if !listing && selected("idle") {
        idle::idle(benchmarking);
    }
    if !listing && selected("node") {
        node::node(benchmarking);
    }
    criterion.final_summary();
}

// ---- workload -----------------------------------------------------------------------

/// One call of a function's timing routine.
struct Sample {
    iters: u64,
    /// What the routine reported to criterion.
    time: Duration,
    /// Wall time of the whole call, and the CPU other processes used meanwhile.
    wall: Duration,
    other_cpu: Duration,
    /// Another process held eBPF programs at its start or end.
    foreign: bool,
}

/// Every call of one function's timing routine, in order (the last [`SAMPLE_SIZE`]
/// are criterion's measurement samples).
type Samples = RefCell<Vec<Sample>>;

/// Runs one call of a timing routine and records it.
fn sampled(samples: &Samples, iters: u64, routine: impl FnOnce() -> Duration) -> Duration {
    let foreign = foreign_probes();
    let cpu_before = CpuSnapshot::take();
    let start = Instant::now();
    let time = routine();
    let wall = start.elapsed();
    let other_cpu = CpuSnapshot::take().others_since(&cpu_before);
    let foreign = foreign || foreign_probes();
    samples.borrow_mut().push(Sample {
        iters,
        time,
        wall,
        other_cpu,
        foreign,
    });
    time
}

/// The measurement samples of one function.
fn measured(samples: &Samples) -> std::cell::Ref<'_, [Sample]> {
    std::cell::Ref::map(samples.borrow(), |all| {
        &all[all.len().saturating_sub(SAMPLE_SIZE)..]
    })
}

/// Busy CPU time of the whole machine and of this process, its reaped children and
/// its agent, in clock ticks.
struct CpuSnapshot {
    machine: u64,
    ours: u64,
}

impl CpuSnapshot {
    fn take() -> CpuSnapshot {
        // cpu  user nice system idle iowait irq softirq steal: softirq is left out, as
        // this process's own loopback traffic is mostly handled there.
        let machine = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|stat| {
                let fields: Vec<u64> = stat
                    .lines()
                    .next()?
                    .split_whitespace()
                    .skip(1)
                    .filter_map(|f| f.parse().ok())
                    .collect();
                Some([0, 1, 2, 5, 7].iter().filter_map(|&i| fields.get(i)).sum())
            })
            .unwrap_or(0);
        // utime stime cutime cstime: fields 14-17, 12-15 after the comm.
        let ours = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|stat| {
                let after_comm = stat.rsplit_once(')')?.1.to_owned();
                Some(
                    after_comm
                        .split_whitespace()
                        .skip(11)
                        .take(4)
                        .filter_map(|f| f.parse::<u64>().ok())
                        .sum(),
                )
            })
            .unwrap_or(0);
        CpuSnapshot {
            machine,
            ours: ours + agent_ticks(),
        }
    }

    fn others_since(&self, before: &CpuSnapshot) -> Duration {
        let machine = self.machine.saturating_sub(before.machine);
        let ours = self.ours.saturating_sub(before.ours);
        Duration::from_secs_f64(machine.saturating_sub(ours) as f64 / clock_ticks())
    }
}

/// The benchmark-name filter criterion was given (its one positional argument), if any.
fn name_filter(args: &[String]) -> Option<String> {
    const WITH_VALUE: &[&str] = &[
        "-c",
        "--color",
        "--colour",
        "-s",
        "--save-baseline",
        "-b",
        "--baseline",
        "--baseline-lenient",
        "--load-baseline",
        "--sample-size",
        "--warm-up-time",
        "--measurement-time",
        "--nresamples",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--profile-time",
        "--format",
        "--plotting-backend",
        "--output-format",
    ];
    let mut after_option = false;
    for arg in args.iter().skip(1) {
        if after_option {
            after_option = false;
        } else if arg.starts_with('-') {
            after_option = WITH_VALUE.contains(&arg.as_str());
        } else {
            return Some(arg.clone());
        }
    }
    None
}

fn workload(criterion: &mut Criterion, start_agent: bool, listing: bool) {
    let listener = Listener::new();
    let id = trigger_id(0xb1);
    let cgroup = TestCgroup::new(&format!("cri-containerd-{id}.scope"));
    let samples: [Samples; 4] = Default::default();
    let [connect_off, exec_off, connect_on, exec_on] = &samples;
    let failed_connects = Cell::new(0u64);
    let mut exec = Command::new("/bin/true");
    exec.env_clear().envs(EXEC_ENV);

    let mut group = criterion.benchmark_group("workload");
    group.sampling_mode(SamplingMode::Flat);
    {
        let _inside = InCgroup::enter(&cgroup.path);
        group.bench_function("connect/off", |b| {
            b.iter_custom(|iters| time_connects(iters, &listener, connect_off, &failed_connects))
        });
        group.bench_function("exec/off", |b| {
            b.iter_custom(|iters| time_execs(iters, &mut exec, exec_off))
        });
    }
    // Started outside the container cgroup, so the agent is a host process.
    let agent = (start_agent && std::env::var_os(NO_AGENT_ENV).is_none())
        .then(|| LiveAgent::start("bench-workload", &[]));
    if agent.is_some() {
        cgroup.run(&[(KSH, "10.96.0.1")], &["none"]);
    }
    let stats = agent.as_ref().and_then(|_| progstats::StatsOn::enable());
    let programs_before = agent.as_ref().map(|a| progstats::by_program(a.pid()));
    {
        let _inside = InCgroup::enter(&cgroup.path);
        let (cpu_before, connects_before) = (agent_ticks(), connects_sampled(connect_on));
        group.bench_function("connect/on", |b| {
            b.iter_custom(|iters| time_connects(iters, &listener, connect_on, &failed_connects))
        });
        let connects = connects_sampled(connect_on) - connects_before;
        if agent.is_some() && connects > 0 {
            // The connects go to 127.0.0.1, which the rule does not watch.
            let cpu = (agent_ticks() - cpu_before) as f64 / clock_ticks();
            eprintln!(
                "workload: agent CPU during connect/on: {:.3} s for {connects} unrelated connects ({:.0} ns per connect; goal <= 300 ns)",
                cpu,
                cpu * 1e9 / connects as f64
            );
        }
        group.bench_function("exec/on", |b| {
            b.iter_custom(|iters| time_execs(iters, &mut exec, exec_on))
        });
    }
    group.finish();
    if let (Some(agent), Some(before), Some(_)) = (&agent, &programs_before, &stats) {
        eprintln!(
            "workload: kernel programs' own time during the \"on\" half: {}",
            progstats::report(before, &progstats::by_program(agent.pid()))
        );
    }
    drop(stats);

    if let Some(agent) = agent {
        let stopped = stop(agent);
        eprintln!(
            "workload: the agent ({}) handled {} events ({} findings, {} rule faults, {} kernel drops) in {:.2} s of CPU",
            stopped.hooks,
            stopped.events,
            stopped.findings,
            stopped.faults,
            stopped.drops,
            stopped.cpu.as_secs_f64()
        );
    }
    let mut background = Vec::new();
    for (name, samples) in [
        ("connect/off", connect_off),
        ("exec/off", exec_off),
        ("connect/on", connect_on),
        ("exec/on", exec_on),
    ] {
        let measured = measured(samples);
        if measured.is_empty() {
            continue;
        }
        let foreign = measured.iter().filter(|s| s.foreign).count();
        if foreign > 0 {
            eprintln!(
                "workload: warning: during {foreign} of {} {name} samples another process had eBPF programs loaded (another agent or probe test): not a clean measurement",
                measured.len()
            );
        }
        let other: Duration = measured.iter().map(|s| s.other_cpu).sum();
        let wall: Duration = measured.iter().map(|s| s.wall).sum();
        background.push(format!(
            "{name} {:.2}",
            other.as_secs_f64() / wall.as_secs_f64()
        ));
    }
    if failed_connects.get() > 0 {
        eprintln!("workload: {} connect(s) failed", failed_connects.get());
    }
    // Seconds per iteration over criterion's measurement samples: the mean (criterion's
    // estimate in flat mode) and the median sample.
    let per_iteration = |samples: &Samples| {
        let measured = measured(samples);
        let iters: u64 = measured.iter().map(|s| s.iters).sum();
        let time: Duration = measured.iter().map(|s| s.time).sum();
        let mut each: Vec<f64> = measured
            .iter()
            .map(|s| s.time.as_secs_f64() / s.iters as f64)
            .collect();
        each.sort_by(f64::total_cmp);
        (iters > 0).then(|| (time.as_secs_f64() / iters as f64, each[each.len() / 2]))
    };
    let line = |what: &str, off: &Samples, on: &Samples, goal: f64| match (
        per_iteration(off),
        per_iteration(on),
    ) {
        (Some((off, off_median)), Some((on, on_median))) => format!(
            "{what} off {} on {} ({:.3}x, {:+.1}%, goal <= +{goal}%; medians {} / {}, {:+.1}%)",
            human(off),
            human(on),
            on / off,
            (on / off - 1.0) * 100.0,
            human(off_median),
            human(on_median),
            (on_median / off_median - 1.0) * 100.0
        ),
        _ => format!("{what} not measured"),
    };
    let measured = samples.iter().any(|s| !s.borrow().is_empty());
    if !listing && measured {
        eprintln!(
            "workload: CPUs busy with other processes while sampling: {}",
            background.join(", ")
        );
        let control = match std::env::var_os(NO_AGENT_ENV) {
            Some(_) => " (control: no agent in the \"on\" half either)",
            None => "",
        };
        eprintln!(
            "workload{control}: {}; {}",
            line("connect", connect_off, connect_on, 3.0),
            line("exec", exec_off, exec_on, 5.0)
        );
    }
}

/// Connects made so far by the samples of one function (warm-up included).
fn connects_sampled(samples: &Samples) -> u64 {
    samples.borrow().iter().map(|s| s.iters).sum()
}

/// Times `iters` connects to `listener` (the connect call only).
fn time_connects(
    iters: u64,
    listener: &Listener,
    samples: &Samples,
    failed: &Cell<u64>,
) -> Duration {
    sampled(samples, iters, || {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let socket = tcp_socket();
            let start = Instant::now();
            let result = connect(&socket, &listener.address);
            total += start.elapsed();
            if result.is_err() {
                failed.set(failed.get() + 1);
            }
            listener.discard_pending();
        }
        total
    })
}

/// Times `iters` runs of `command`, each waited for.
fn time_execs(iters: u64, command: &mut Command, samples: &Samples) -> Duration {
    sampled(samples, iters, || {
        let start = Instant::now();
        for _ in 0..iters {
            let status = command.status().expect("spawn /bin/true");
            assert!(status.success(), "/bin/true: {status}");
        }
        start.elapsed()
    })
}

/// Whether a process other than this one and its children (the agent the bench
/// started) holds eBPF programs or links: another agent, or a test loading probes,
/// whose cost would fall on the measurement too.
fn foreign_probes() -> bool {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            return false;
        };
        let parent = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|stat| {
                let after_comm = stat.rsplit_once(')')?.1;
                after_comm.split_whitespace().nth(1)?.parse::<u32>().ok()
            });
        if pid == me || parent == Some(me) {
            return false;
        }
        std::fs::read_dir(entry.path().join("fd")).is_ok_and(|fds| {
            fds.flatten().any(|fd| {
                std::fs::read_link(fd.path()).is_ok_and(|target| {
                    let target = target.to_string_lossy();
                    target == "anon_inode:bpf-prog" || target == "anon_inode:bpf_link"
                })
            })
        })
    })
}

/// The whole process inside a cgroup until dropped; then back where it was.
struct InCgroup {
    home: PathBuf,
}

impl InCgroup {
    fn enter(cgroup: &Path) -> InCgroup {
        let procs = std::fs::read_to_string("/proc/self/cgroup").expect("/proc/self/cgroup");
        let relative = procs
            .lines()
            .find_map(|line| line.strip_prefix("0::"))
            .expect("a cgroup v2 line in /proc/self/cgroup");
        let home = cgroup_root().join(relative.trim_start_matches('/'));
        move_self(cgroup);
        InCgroup { home }
    }
}

impl Drop for InCgroup {
    fn drop(&mut self) {
        move_self(&self.home);
    }
}

/// Moves every thread of this process into `cgroup`.
fn move_self(cgroup: &Path) {
    let procs = cgroup.join("cgroup.procs");
    if let Err(error) = std::fs::write(&procs, std::process::id().to_string()) {
        panic!("moving the bench into {}: {error}", procs.display());
    }
}

// ---- e2e ----------------------------------------------------------------------------

fn e2e(connects: usize) {
    assert!(
        connector_bin().exists(),
        "no connector binary at {}",
        connector_bin().display()
    );
    let id = trigger_id(0xe2);
    let cgroup = TestCgroup::new(&format!("cri-containerd-{id}.scope"));
    let agent = LiveAgent::start("bench-e2e", &[]);
    let tail = Tail::start(agent.output.clone());
    cgroup.run(&[(KSH, "127.0.0.1")], &["none"]);

    let procs = cgroup.path.join("cgroup.procs");
    let mut child = Command::new(std::env::current_exe().expect("the bench executable"));
    child
        .env_clear()
        .env(BURST_ENV, connects.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // SAFETY: one write between fork and exec.
    unsafe {
        child.pre_exec(move || std::fs::write(&procs, b"0"));
    }
    let cpu_before = agent_cpu();
    let started = Instant::now();
    let output = child.output().expect("run the burst child");
    assert!(output.status.success(), "burst child: {}", output.status);
    let sent: Vec<u64> = output
        .stdout
        .as_chunks::<8>()
        .0
        .iter()
        .map(|b| u64::from_le_bytes(*b))
        .collect();
    assert_eq!(sent.len(), connects, "send times from the burst child");
    let burst_time = started.elapsed();

    // Wait for the findings to stop coming.
    let marker = format!("\"container_id\":\"{id}\"");
    let deadline = started + E2E_TIMEOUT;
    let (mut seen_lines, mut quiet_since) = (0, Instant::now());
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let lines = tail.lines.lock().unwrap();
        if lines.len() != seen_lines {
            seen_lines = lines.len();
            quiet_since = Instant::now();
            if seen_lines >= connects
                && lines.iter().filter(|l| l.1.contains(&marker)).count() >= connects
            {
                break;
            }
        }
        if quiet_since.elapsed() > E2E_QUIET || Instant::now() > deadline {
            break;
        }
    }
    let stopped = stop(agent);
    let lines = tail.stop();

    let mut latency = Vec::new();
    let mut observed = Vec::new();
    let mut stamps = Vec::new();
    for (seen_at, line) in &lines {
        let Ok(finding) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if finding["data"]["container_id"] != id.as_str() {
            continue;
        }
        let stamp = finding["timestamp"].as_u64().unwrap_or(0);
        latency.push(seen_at.saturating_sub(stamp));
        observed.push(*seen_at);
        stamps.push(stamp);
    }
    let delivered = latency.len();
    latency.sort_unstable();
    eprintln!(
        "e2e: sent {connects}, findings {delivered}, lost {}, kernel drops {}, latency p50 {} p99 {}",
        connects.saturating_sub(delivered),
        stopped.drops,
        ms(percentile(&latency, 0.50)),
        ms(percentile(&latency, 0.99)),
    );
    let burst_cpu = stopped.cpu.saturating_sub(cpu_before);
    let span = sent.last().copied().unwrap_or(0) - sent.first().copied().unwrap_or(0);
    eprintln!(
        "e2e: burst {:.2} s ({:.0} connects/s), latency max {}; the agent logged {} kernel drop(s) in warnings and handled {} events, {} findings, {} rule faults, using {:.2} s of CPU from the burst on ({:.1} µs per connect)",
        burst_time.as_secs_f64(),
        connects as f64 / (span.max(1) as f64 / 1e9),
        ms(latency.last().copied()),
        stopped.warned_drops,
        stopped.events,
        stopped.findings,
        stopped.faults,
        burst_cpu.as_secs_f64(),
        burst_cpu.as_secs_f64() * 1e6 / connects as f64
    );
    // Whether the agent keeps up: the median latency in each tenth of the burst.
    let tenth = (observed.len() / 10).max(1);
    let by_tenth: Vec<String> = observed
        .chunks(tenth)
        .zip(stamps.chunks(tenth))
        .map(|(seen, stamp)| {
            let mut each: Vec<u64> = seen
                .iter()
                .zip(stamp)
                .map(|(s, t)| s.saturating_sub(*t))
                .collect();
            each.sort_unstable();
            format!("{:.1}", percentile(&each, 0.5).unwrap_or(0) as f64 / 1e6)
        })
        .collect();
    eprintln!(
        "e2e: p50 latency (ms) by tenth of the burst: {}",
        by_tenth.join(" ")
    );
    if delivered == connects {
        let mut from_send: Vec<u64> = observed
            .iter()
            .zip(&sent)
            .map(|(seen_at, sent_at)| seen_at.saturating_sub(*sent_at))
            .collect();
        from_send.sort_unstable();
        let last = observed.iter().max().copied().unwrap_or(0);
        eprintln!(
            "e2e: cross-check from user-space send times: p50 {} p99 {}; last finding {} after the last connect",
            ms(percentile(&from_send, 0.50)),
            ms(percentile(&from_send, 0.99)),
            ms(Some(last.saturating_sub(*sent.last().unwrap())))
        );
    }
}

/// The burst child: `count` connects to a listener of its own on 127.0.0.1, as fast as
/// one thread goes; writes each connect's CLOCK_REALTIME send time (u64 LE) to stdout,
/// then exits.
fn burst_child(spec: &str) -> ! {
    let count: usize = spec
        .parse()
        .unwrap_or_else(|_| panic!("{BURST_ENV}={spec:?}: expected a count"));
    let listener = Listener::new();
    eprintln!(
        "e2e: bursting {count} connects to 127.0.0.1:{}",
        listener.port()
    );
    let mut sent = Vec::with_capacity(count);
    let mut failed = 0usize;
    for _ in 0..count {
        let socket = tcp_socket();
        sent.push(realtime_ns());
        if connect(&socket, &listener.address).is_err() {
            failed += 1;
        }
        listener.discard_pending();
    }
    if failed > 0 {
        eprintln!("e2e: {failed} of {count} connects failed (still seen by the hook)");
    }
    let bytes: Vec<u8> = sent.iter().flat_map(|t| t.to_le_bytes()).collect();
    let mut stdout = std::io::stdout().lock();
    std::io::Write::write_all(&mut stdout, &bytes).expect("write send times");
    std::io::Write::flush(&mut stdout).expect("flush send times");
    std::process::exit(0);
}

/// Follows a growing file, stamping each complete line with CLOCK_REALTIME when read.
struct Tail {
    lines: Arc<Mutex<Vec<(u64, String)>>>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Tail {
    fn start(path: PathBuf) -> Tail {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (sink, stopping) = (lines.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            // Real-time priority, so the stamps are not late by however long other work
            // keeps this thread off a CPU; it reads and splits, nothing more.
            let param = libc::sched_param { sched_priority: 1 };
            // SAFETY: this thread's own handle and a valid sched_param.
            unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) };
            let mut file = loop {
                match std::fs::File::open(&path) {
                    Ok(file) => break file,
                    Err(_) if !stopping.load(Ordering::Relaxed) => {
                        std::thread::sleep(Duration::from_millis(1))
                    }
                    Err(_) => return,
                }
            };
            let mut buffer = vec![0u8; 1 << 20];
            let mut partial = Vec::new();
            loop {
                let n = file.read(&mut buffer).unwrap_or(0);
                if n == 0 {
                    if stopping.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                let now = realtime_ns();
                partial.extend_from_slice(&buffer[..n]);
                let mut complete = Vec::new();
                let mut start = 0;
                for end in partial
                    .iter()
                    .enumerate()
                    .filter_map(|(i, b)| (*b == b'\n').then_some(i))
                {
                    complete.push((
                        now,
                        String::from_utf8_lossy(&partial[start..end]).into_owned(),
                    ));
                    start = end + 1;
                }
                partial.drain(..start);
                sink.lock().unwrap().extend(complete);
            }
        });
        Tail {
            lines,
            stop,
            thread,
        }
    }

    /// Reads to the end of the file, stops, and returns every line seen.
    fn stop(self) -> Vec<(u64, String)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("tail thread");
        std::mem::take(&mut *self.lines.lock().unwrap())
    }
}

// ---- the agent ----------------------------------------------------------------------

/// The agent's closing counters.
#[derive(Debug, Default)]
struct Stopped {
    events: u64,
    findings: u64,
    faults: u64,
    drops: u64,
    /// Sum of the "the kernel dropped N event(s)" warnings.
    warned_drops: u64,
    /// The hooks it used, from its ready file.
    hooks: String,
    /// CPU time (user + system) it used in all.
    cpu: Duration,
}

/// Stops the agent, reads its closing line, and removes its output files.
fn stop(mut agent: LiveAgent) -> Stopped {
    let cpu = agent_cpu();
    let status = agent.stop();
    // The stderr reader thread may still be taking the last lines after the exit.
    let deadline = Instant::now() + Duration::from_secs(10);
    let logs = loop {
        let logs = agent.log_records();
        if logs.iter().any(|r| r.message() == "stopped") || Instant::now() > deadline {
            break logs;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let number = |record: &rulehost_tests::LogRecord, field: &str| -> u64 {
        record.field(field).parse().unwrap_or(0)
    };
    let ready = &agent.ready;
    let mut stopped = Stopped {
        cpu,
        hooks: format!(
            "exec hook {}, connect hook {}, cgroup hook {}",
            ready["exec_hook"].as_str().unwrap_or("?"),
            ready["connect_hook"].as_str().unwrap_or("?"),
            ready["cgroup_hook"].as_str().unwrap_or("?")
        ),
        ..Stopped::default()
    };
    for record in &logs {
        if record.message().starts_with("the kernel dropped events") {
            stopped.warned_drops += number(record, "dropped");
        }
        if record.message() == "stopped" {
            stopped.events = number(record, "events");
            stopped.findings = number(record, "findings");
            stopped.faults = number(record, "rule_faults");
            stopped.drops = number(record, "kernel_drops");
        }
    }
    if !status.success() || !logs.iter().any(|r| r.message() == "stopped") {
        eprintln!(
            "rulehost run ended with {status}; log: {}",
            rulehost_tests::brief(&logs)
        );
    }
    let _ = std::fs::remove_file(&agent.output);
    let _ = std::fs::remove_file(&agent.record);
    if let Some(dir) = agent.output.parent() {
        let _ = std::fs::remove_dir(dir);
    }
    stopped
}

/// CPU time used so far by the `rulehost` this process started (one at a time).
fn agent_cpu() -> Duration {
    Duration::from_secs_f64(agent_ticks() as f64 / clock_ticks())
}

/// [`agent_cpu`] in clock ticks (0 when no agent runs).
fn agent_ticks() -> u64 {
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    for entry in entries.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((head, tail)) = stat.rsplit_once(')') else {
            continue;
        };
        // After the comm: state ppid ... utime (12th) stime (13th).
        let fields: Vec<&str> = tail.split_whitespace().collect();
        if head.ends_with("(rulehost") && fields.get(1) == Some(&me.as_str()) {
            let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
            return field(11).unwrap_or(0) + field(12).unwrap_or(0);
        }
    }
    0
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

// ---- sockets and helpers ------------------------------------------------------------

/// A non-blocking listener on a loopback address (backlog 4096). The connecting thread accepts
/// and drops each connection itself after its connect (untimed): no second thread is
/// woken per connection.
struct Listener {
    listener: TcpListener,
    /// Where to connect.
    address: libc::sockaddr_in,
}

impl Listener {
    fn new() -> Listener {
        Listener::on([127, 0, 0, 1])
    }

    fn on(ip: [u8; 4]) -> Listener {
        // SAFETY: plain socket(2); the fd is owned right away.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let any_port = sockaddr(SocketAddrV4::new(ip.into(), 0));
        // SAFETY: a valid fd and sockaddr_in for the calls' duration.
        unsafe {
            assert_eq!(
                libc::bind(
                    fd.as_raw_fd(),
                    (&any_port as *const libc::sockaddr_in).cast(),
                    size_of::<libc::sockaddr_in>() as libc::socklen_t,
                ),
                0,
                "bind: {}",
                std::io::Error::last_os_error()
            );
            assert_eq!(
                libc::listen(fd.as_raw_fd(), 4096),
                0,
                "listen: {}",
                std::io::Error::last_os_error()
            );
        }
        let listener = TcpListener::from(fd);
        listener.set_nonblocking(true).expect("O_NONBLOCK");
        let std::net::SocketAddr::V4(local) = listener.local_addr().expect("local address") else {
            unreachable!("bound to an IPv4 address")
        };
        Listener {
            listener,
            address: sockaddr(local),
        }
    }

    fn port(&self) -> u16 {
        u16::from_be(self.address.sin_port)
    }

    /// One connect from a fresh socket, accepted and dropped (a reset at close).
    fn connect_once(&self) {
        let socket = tcp_socket();
        let _ = connect(&socket, &self.address);
        self.discard_pending();
    }

    /// Accepts and drops every pending connection.
    fn discard_pending(&self) {
        while self.listener.accept().is_ok() {}
    }
}

fn sockaddr(address: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: address.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(address.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

/// A TCP socket that resets on close (SO_LINGER 0), so no TIME_WAIT is left behind.
fn tcp_socket() -> OwnedFd {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid fd and option buffer of the stated size.
    let set = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(set, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
    fd
}

fn connect(socket: &OwnedFd, address: &libc::sockaddr_in) -> std::io::Result<()> {
    // SAFETY: a valid fd and sockaddr_in for the call's duration.
    let result = unsafe {
        libc::connect(
            socket.as_raw_fd(),
            (address as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn realtime_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
}

fn ms(ns: Option<u64>) -> String {
    match ns {
        Some(ns) => format!("{:.2} ms", ns as f64 / 1e6),
        None => "n/a".into(),
    }
}

fn human(seconds: f64) -> String {
    if seconds < 1e-3 {
        format!("{:.2} µs", seconds * 1e6)
    } else {
        format!("{:.3} ms", seconds * 1e3)
    }
}

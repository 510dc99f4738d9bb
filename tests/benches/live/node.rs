//! `node`: a whole node's worth of containers, agent off then on in one run.
//!
//! 50 container-like cgroups (`cri-containerd-<id>.scope`), each running one worker
//! process (this bench re-executed with `RULEHOST_BENCH_NODE`, placed into its cgroup
//! before its exec, `KUBERNETES_SERVICE_HOST=127.0.0.1` in its env as a pod's processes
//! have it) that paces, per second: 1 fork+exec of `/bin/true` with a 6-entry env, 2
//! connects to the API server (127.0.0.1, a listener of its own) and 20 unrelated
//! connects (127.0.0.2). The node as a whole: 50 execs/s, 100 API-server connects/s and
//! 1,000 other connects/s. Why that rate: a node packed with 50 pods where each pod's
//! processes open about 20 outbound connections a second (service calls, databases,
//! caches, mostly pooled), a client of the API server among them reconnecting every
//! half second (controllers and operators keep watches open; this is the heavy end), and
//! an exec a second per pod (exec probes every 10 s, sidecars, shells, cron-like work).
//!
//! Reported: the workload's throughput (operations completed per second) and its time
//! per operation, on/off; the agent's CPU share of one core and its peak RSS; findings
//! delivered of those expected (every API-server connect is one); p50/p99 latency from
//! the connect (kernel timestamp) to the finding line being readable; kernel drops.
//! Goals (issue 26): nothing lost, agent under 2% of one core, throughput ratio ≥ 0.98.

use super::*;

/// Set in a worker's environment: `SECONDS,EXECS,API,OTHER` (per second).
pub(super) const NODE_ENV: &str = "RULEHOST_BENCH_NODE";
/// Containers on the node, and each one's rates per second.
const CONTAINERS: u8 = 50;
const RATES: (u32, u32, u32) = (1, 2, 20);
const SECONDS: u64 = 20;
/// As a test (`cargo bench -- --test`): fewer and shorter.
const CONTAINERS_TEST: u8 = 4;
const SECONDS_TEST: u64 = 2;

/// What the workers of one half did.
#[derive(Debug, Default)]
struct Half {
    execs: u64,
    api: u64,
    other: u64,
    /// Time spent inside the operations themselves, summed over workers.
    busy: Duration,
    /// The longest a worker took from its first operation's due time to its last
    /// operation's end: the window its paced operations took (longer if it fell behind).
    wall: Duration,
}

impl Half {
    fn ops(&self) -> u64 {
        self.execs + self.api + self.other
    }
}

pub(super) fn node(benchmarking: bool) {
    let (containers, seconds) = match benchmarking {
        true => (CONTAINERS, SECONDS),
        false => (CONTAINERS_TEST, SECONDS_TEST),
    };
    let cgroups: Vec<(String, TestCgroup)> = (0..containers)
        .map(|i| {
            let id = trigger_id(0x60 + i);
            let cgroup = TestCgroup::new(&format!("cri-containerd-{id}.scope"));
            (id, cgroup)
        })
        .collect();
    let off = run_half(&cgroups, seconds);

    let agent = LiveAgent::start("bench-node", &[]);
    let tail = Tail::start(agent.output.clone());
    let cpu_before = agent_cpu();
    let on = run_half(&cgroups, seconds);
    let agent_cpu_on = agent_cpu().saturating_sub(cpu_before);
    let (rss, peak) = (memory(agent.pid(), "VmRSS"), memory(agent.pid(), "VmHWM"));
    let ids: Vec<String> = cgroups
        .iter()
        .map(|(id, _)| format!("\"container_id\":\"{id}\""))
        .collect();
    let ours = |line: &str| ids.iter().any(|id| line.contains(id.as_str()));
    let expected = on.api as usize;
    let (mut seen, mut quiet_since) = (0, Instant::now());
    while quiet_since.elapsed() < E2E_QUIET {
        std::thread::sleep(Duration::from_millis(50));
        let count = tail
            .lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| ours(&l.1))
            .count();
        if count != seen {
            (seen, quiet_since) = (count, Instant::now());
        }
        if count >= expected {
            break;
        }
    }
    let stopped = stop(agent);
    let mut latency: Vec<u64> = tail
        .stop()
        .iter()
        .filter(|(_, line)| ours(line))
        .filter_map(|(seen_at, line)| {
            let finding: Value = serde_json::from_str(line).ok()?;
            Some(seen_at.saturating_sub(finding["timestamp"].as_u64()?))
        })
        .collect();
    latency.sort_unstable();
    report(
        &off,
        &on,
        agent_cpu_on,
        (rss, peak),
        (latency, expected),
        &stopped,
    );
    for (_, cgroup) in &cgroups {
        cgroup.remove();
    }
}

fn report(
    off: &Half,
    on: &Half,
    agent_cpu: Duration,
    (rss, peak): (u64, u64),
    (latency, expected): (Vec<u64>, usize),
    stopped: &Stopped,
) {
    let rate = |h: &Half| h.ops() as f64 / h.wall.as_secs_f64();
    let per_op = |h: &Half| h.busy.as_secs_f64() * 1e6 / h.ops().max(1) as f64;
    eprintln!(
        "node: off {} execs, {} API connects, {} other connects in {:.1} s; on {}, {}, {} in {:.1} s",
        off.execs,
        off.api,
        off.other,
        off.wall.as_secs_f64(),
        on.execs,
        on.api,
        on.other,
        on.wall.as_secs_f64()
    );
    eprintln!(
        "node: throughput {:.1} / {:.1} ops/s, ratio on/off {:.3} (goal ≥ 0.98); time per operation {:.1} / {:.1} µs, ratio {:.3}",
        rate(on),
        rate(off),
        rate(on) / rate(off),
        per_op(on),
        per_op(off),
        per_op(on) / per_op(off)
    );
    eprintln!(
        "node: agent CPU {:.2}% of one core (goal < 2%), RSS {} MiB (peak {} MiB); findings {} of {expected} expected; latency p50 {} p99 {}; kernel drops {} ({})",
        agent_cpu.as_secs_f64() * 100.0 / on.wall.as_secs_f64(),
        rss >> 10,
        peak >> 10,
        latency.len(),
        ms(percentile(&latency, 0.50)),
        ms(percentile(&latency, 0.99)),
        stopped.drops,
        stopped.hooks
    );
}

/// Starts one worker per cgroup for `seconds`, waits for all; their sums.
fn run_half(cgroups: &[(String, TestCgroup)], seconds: u64) -> Half {
    let (execs, api, other) = RATES;
    let spec = format!("{seconds},{execs},{api},{other}");
    let children: Vec<std::process::Child> = cgroups
        .iter()
        .map(|(_, cgroup)| {
            let procs = cgroup.path.join("cgroup.procs");
            let mut child = Command::new(std::env::current_exe().expect("the bench executable"));
            child
                .env_clear()
                .env(NODE_ENV, &spec)
                .env(KSH, "127.0.0.1")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            // SAFETY: one write between fork and exec.
            unsafe {
                child.pre_exec(move || std::fs::write(&procs, b"0"));
            }
            child.spawn().expect("start a node worker")
        })
        .collect();
    let mut half = Half::default();
    for child in children {
        let output = child.wait_with_output().expect("a node worker");
        assert!(output.status.success(), "node worker: {}", output.status);
        let counts: Vec<u64> = String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect();
        let [e, a, o, busy, elapsed] = counts[..] else {
            panic!("node worker printed {counts:?}")
        };
        half.execs += e;
        half.api += a;
        half.other += o;
        half.busy += Duration::from_nanos(busy);
        half.wall = half.wall.max(Duration::from_nanos(elapsed));
    }
    half
}

/// A worker: paces its execs and connects for the given seconds, then prints
/// `EXECS API OTHER BUSY_NS ELAPSED_NS`.
pub(super) fn worker(spec: &str) -> ! {
    let numbers: Vec<u64> = spec.split(',').filter_map(|n| n.parse().ok()).collect();
    let [seconds, execs, api, other] = numbers[..] else {
        panic!("{NODE_ENV}={spec:?}: expected SECONDS,EXECS,API,OTHER")
    };
    let api_server = Listener::on([127, 0, 0, 1]);
    let elsewhere = Listener::on([127, 0, 0, 2]);
    let mut command = Command::new("/bin/true");
    command.env_clear().envs(EXEC_ENV).stdout(Stdio::null());
    let period = |per_second: u64| Duration::from_nanos(1_000_000_000 / per_second.max(1));
    // Each kind of operation at its own period, from a start spread by the pid.
    let kinds = [period(execs), period(api), period(other)];
    let start = Instant::now() + Duration::from_micros(u64::from(std::process::id() % 50) * 1000);
    let end = start + Duration::from_secs(seconds);
    let mut due = [start; 3];
    let (mut done, mut busy) = ([0u64; 3], Duration::ZERO);
    loop {
        let (kind, when) = due
            .iter()
            .enumerate()
            .min_by_key(|(_, when)| **when)
            .map(|(k, w)| (k, *w))
            .unwrap();
        if when >= end {
            break;
        }
        if let Some(wait) = when.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let began = Instant::now();
        match kind {
            0 => {
                let _ = command.status();
            }
            1 => api_server.connect_once(),
            _ => elsewhere.connect_once(),
        }
        busy += began.elapsed();
        done[kind] += 1;
        due[kind] += kinds[kind];
    }
    println!(
        "{} {} {} {} {}",
        done[0],
        done[1],
        done[2],
        busy.as_nanos(),
        start.elapsed().as_nanos()
    );
    std::process::exit(0);
}

/// A field of /proc/PID/status in KiB.
fn memory(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

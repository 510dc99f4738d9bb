//! The eBPF sensor on the real kernel (root, as CI runs): exec capture with each hook
//! fallback, the in-kernel env walk, batched wake-ups and overflow counting, connects of
//! every address family, cgroup removal, and the kernel-side host-cgroup filter.

use rulehost::events::{Body, Event, SocketType};
use rulehost::sensor::{EnvCapture, Forbidden, ProbeConfig, ProbeEvent, Probes, StartOptions};
use rulehost_ebpf_common as abi;
use std::fs;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a live test waits for events that must come: a failure bound for a busy
/// machine; a passing test stops waiting as soon as they are there.
const LIVE_WAIT: Duration = Duration::from_secs(60);

fn object_path() -> Option<PathBuf> {
    let object = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bpf/rulehost-probes.o");
    object.exists().then_some(object)
}

/// Drains the probes until `until` holds or `wait` passes, polling as the agent
/// does (10 ms timer besides the ring buffer's wake-ups).
fn collect(
    probes: &mut Probes,
    until: &dyn Fn(&[ProbeEvent]) -> bool,
    wait: Duration,
) -> Vec<ProbeEvent> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut events = Vec::new();
    let deadline = std::time::Instant::now() + wait;
    while std::time::Instant::now() < deadline && !until(&events) {
        runtime.block_on(probes.readable(Duration::from_millis(10)));
        probes.drain(&mut events);
    }
    events
}

/// Runs `sh -c 'exec env KUBERNETES_SERVICE_HOST=10.1.2.3 true'`; returns its pid.
fn exec_child() -> u32 {
    let mut child = std::process::Command::new("sh")
        .args(["-c", "exec env KUBERNETES_SERVICE_HOST=10.1.2.3 true"])
        .env("RULEHOST_NOT_WANTED", "secret")
        .spawn()
        .unwrap();
    assert!(child.wait().unwrap().success());
    child.id()
}

/// The execs of process `pid`, in order.
fn execs_of(events: &[ProbeEvent], pid: u32) -> Vec<&Event> {
    events
        .iter()
        .filter_map(|e| match e {
            ProbeEvent::Event(
                ev @ Event {
                    body: Body::ProcessExec { .. },
                    ..
                },
            ) if ev.process.pid == pid => Some(ev),
            _ => None,
        })
        .collect()
}

/// Every exec program runs here, each made the best one by forbidding the better
/// mechanisms (as `RULEHOST_TEST_FORBID_HOOKS` does for the agent): the `bpf_loop` and
/// bounded env walks on both tracepoint kinds, and the walk-less ones, whose wanted
/// entries come from `/proc` (this child lives until it is read: it waits on a pipe).
#[test]
fn live_exec_fallbacks() {
    let walk = best_walk();
    for (forbid, hook, env_capture) in [
        ("", "tp_btf/sched_process_exec", walk),
        ("tp_btf", "tracepoint/sched/sched_process_exec", walk),
        ("bpf_loop", "tp_btf/sched_process_exec", EnvCapture::Bounded),
        (
            "bpf_loop,tp_btf",
            "tracepoint/sched/sched_process_exec",
            EnvCapture::Bounded,
        ),
        ("env_walk", "tp_btf/sched_process_exec", EnvCapture::Proc),
        (
            "env_walk,tp_btf",
            "tracepoint/sched/sched_process_exec",
            EnvCapture::Proc,
        ),
    ] {
        let mut probes = Probes::start_with(
            &ProbeConfig {
                env_vars: vec!["KUBERNETES_SERVICE_HOST".into()],
                containers_only: false,
                bpf_object: object_path(),
                ring_bytes: None,
            },
            StartOptions {
                forbidden: Forbidden::parse(forbid).unwrap(),
                ..StartOptions::default()
            },
        )
        .expect("starting the probes");
        let what = format!("forbidding {forbid:?}");
        assert_eq!(probes.exec_hook(), hook, "{what}");
        assert_eq!(probes.env_capture(), env_capture, "{what}");
        let exec_program = probes.loads()[0].program;
        assert!(exec_program.starts_with("exec_"), "{what}: {exec_program}");
        let child = HeldChild::start();
        let events = collect(
            &mut probes,
            &|events| execs_of(events, child.pid).len() == 3,
            LIVE_WAIT,
        );
        let pid = child.pid;
        drop(child);
        let execs = execs_of(&events, pid);
        assert_eq!(
            execs.len(),
            3,
            "{what}: {} events, execs of the child: {execs:?}",
            events.len()
        );
        let Body::ProcessExec {
            filename,
            argv,
            env,
            truncated,
            ..
        } = &execs[2].body
        else {
            unreachable!()
        };
        assert!(filename.ends_with("/cat"), "{what}: {filename}");
        assert_eq!(argv, &["cat"], "{what}");
        assert_eq!(execs[2].process.ppid, std::process::id(), "{what}");
        assert_eq!(env, &["KUBERNETES_SERVICE_HOST=10.1.2.3"], "{what}");
        assert_eq!(
            truncated.env_from_proc,
            env_capture == EnvCapture::Proc,
            "{what}: {truncated:?}"
        );
    }
}

/// The best environment walk this kernel verifies: `bpf_loop` from Linux 5.17, the
/// bounded one before.
fn best_walk() -> EnvCapture {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").expect("the kernel release");
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    match version >= (5, 17) {
        true => EnvCapture::BpfLoop,
        false => EnvCapture::Bounded,
    }
}

/// `sh -c 'exec env KUBERNETES_SERVICE_HOST=10.1.2.3 cat'` reading a pipe: it lives
/// until dropped, so `/proc/<pid>/environ` can be read while it runs.
struct HeldChild {
    child: std::process::Child,
    pid: u32,
}

impl HeldChild {
    fn start() -> HeldChild {
        let child = std::process::Command::new("sh")
            .args(["-c", "exec env KUBERNETES_SERVICE_HOST=10.1.2.3 cat"])
            // A small environment: the bounded walk reads all of it in the kernel.
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("RULEHOST_NOT_WANTED", "secret")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        HeldChild { child, pid }
    }
}

impl Drop for HeldChild {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// A large environment: 300 fillers, an entry longer than one read whose second
/// piece looks like a wanted entry (must not match), a long wanted value (cut to
/// one read), and the wanted entry last.
#[test]
fn live_env_walk_handles_large_environments() {
    // The embedded object (the others load target/bpf/rulehost-probes.o).
    let mut probes = Probes::start(&ProbeConfig {
        env_vars: vec!["KUBERNETES_SERVICE_HOST".into(), "LONG_ONE".into()],
        containers_only: false,
        bpf_object: None,
        ring_bytes: None,
    })
    .expect("starting the probes");
    // It waits on a pipe until read: on a kernel whose walk is bounded, the entries past
    // it come from /proc, which a process that already exited no longer has.
    let mut command = std::process::Command::new("/bin/sh");
    command
        .args(["-c", "exec /usr/bin/env cat"])
        .env_clear()
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null());
    for i in 0..300 {
        command.env(format!("FILLER_{i}"), format!("value-{i}"));
    }
    // "BIG=" + 251 bytes fills one 255-byte read exactly; the next piece starts
    // with a wanted name.
    command.env(
        "BIG",
        format!("{}KUBERNETES_SERVICE_HOST=evil", "x".repeat(251)),
    );
    command.env("LONG_ONE", "y".repeat(400));
    command.env("KUBERNETES_SERVICE_HOSTX", "decoy");
    command.env("KUBERNETES_SERVICE_HOST", "10.9.9.9");
    command.env("PATH", "/usr/bin:/bin");
    let mut child = command.spawn().unwrap();
    let pid = child.id();
    let events = collect(
        &mut probes,
        &|events| execs_of(events, pid).len() == 3,
        LIVE_WAIT,
    );
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    let execs = execs_of(&events, pid);
    assert_eq!(execs.len(), 3, "{} events, execs: {execs:?}", events.len());
    // Read whole in the kernel with bpf_loop; past the bounded walk, from /proc.
    let from_proc = best_walk() == EnvCapture::Bounded;
    for exec in &execs {
        let Body::ProcessExec { env, truncated, .. } = &exec.body else {
            unreachable!()
        };
        assert_eq!(truncated.env_from_proc, from_proc, "{truncated:?}");
        assert_eq!(env.len(), 2, "{env:?}");
        assert_eq!(env[0], "KUBERNETES_SERVICE_HOST=10.9.9.9");
        assert_eq!(
            env[1],
            format!("LONG_ONE={}", "y".repeat(abi::EXEC_ENV_ENTRY_MAX - 1 - 9))
        );
    }
}

/// Records below the wake-up threshold do not wake user space (the timer picks
/// them up); a burst past it does; a full ring counts drops.
#[test]
fn live_wakeups_are_batched_and_overflow_is_counted() {
    use std::net::UdpSocket;
    use std::time::Instant;

    // Large enough that what other tests and processes do on the node meanwhile
    // (the probes see everything) cannot reach the wake-up threshold by itself.
    let ring = 16 << 20;
    let mut probes = Probes::start_with(
        &ProbeConfig {
            bpf_object: object_path(),
            ..ProbeConfig::default()
        },
        StartOptions {
            ring_bytes: Some(ring),
            ..StartOptions::default()
        },
    )
    .expect("starting the probes");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // UDP connect() runs the connect hooks without needing a peer.
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let connects = |n: usize| (0..n).for_each(|_| socket.connect(addr).unwrap());
    let mut sink = Vec::new();
    probes.drain(&mut sink);
    // Register the ring buffer with epoll while it is empty.
    runtime.block_on(probes.readable(Duration::from_millis(1)));
    probes.drain(&mut sink);

    connects(1);
    let started = Instant::now();
    runtime.block_on(probes.readable(Duration::from_millis(300)));
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "a single record woke user space"
    );
    sink.clear();
    assert!(probes.drain(&mut sink) >= 1);

    // A burst past a quarter of the ring (88-byte records + 8-byte headers).
    connects(ring as usize / 4 / 96 + 50);
    let started = Instant::now();
    runtime.block_on(probes.readable(LIVE_WAIT));
    assert!(
        started.elapsed() < LIVE_WAIT,
        "a burst did not wake user space"
    );
    assert_eq!(probes.drops(), 0);

    // Overflow: more than the ring holds, without draining.
    connects(ring as usize / 96 + 200);
    assert!(probes.drops() > 0, "no drops counted");
    assert!(probes.counters().connect > 0);
    sink.clear();
    probes.drain(&mut sink);
    assert!(!sink.is_empty());
}

/// Runs the real probes (this machine and CI run as root): an exec whose
/// environment is captured, IPv4 / IPv4-mapped IPv6 / IPv6 connects, a cgroup
/// removal, and the kernel-side host-cgroup filter.
#[test]
fn live_probes_capture_exec_env_connects_and_cgroup_removal() {
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::time::{SystemTime, UNIX_EPOCH};

    let mut probes = Probes::start(&ProbeConfig {
        env_vars: vec!["KUBERNETES_SERVICE_HOST".into(), "PATH".into()],
        containers_only: false,
        bpf_object: object_path(),
        ring_bytes: None,
    })
    .expect("starting the probes");
    eprintln!(
        "hooks: exec={} connect={} cgroup={}; passed over: {:?}",
        probes.exec_hook(),
        probes.connect_hook(),
        probes.cgroup_hook(),
        probes.fallbacks()
    );
    let child = exec_child();

    let v4 = TcpListener::bind("127.0.0.1:0").unwrap();
    let v4_port = v4.local_addr().unwrap().port();
    let v6 = TcpListener::bind("[::]:0").unwrap();
    let v6_port = v6.local_addr().unwrap().port();
    let tid = unsafe { libc::gettid() } as u32;
    let _a = TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, v4_port))).unwrap();
    let mapped = Ipv4Addr::LOCALHOST.to_ipv6_mapped();
    let _b = TcpStream::connect(SocketAddr::from((mapped, v6_port))).unwrap();
    let _c = TcpStream::connect(SocketAddr::from((Ipv6Addr::LOCALHOST, v6_port))).unwrap();

    let cgroup_dir = rulehost::sys::mounts::cgroup2_root()
        .unwrap()
        .join(format!("rulehost-probe-test-{}", std::process::id()));
    fs::create_dir(&cgroup_dir).unwrap();
    let cgroup_ino = {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(&cgroup_dir).unwrap().ino()
    };
    fs::remove_dir(&cgroup_dir).unwrap();
    let cgroup_name = format!("/{}", cgroup_dir.file_name().unwrap().to_string_lossy());

    let me = std::process::id();
    let is_exec_of = |e: &ProbeEvent, name: &str| {
        matches!(e, ProbeEvent::Event(Event { process, body: Body::ProcessExec { .. }, .. })
            if process.pid == child && process.comm == name)
    };
    let connect_to = |e: &ProbeEvent, ip: std::net::IpAddr, port: u16| match e {
        ProbeEvent::Event(Event {
            process,
            body: Body::SocketConnect { address, .. },
            ..
        }) => process.pid == me && address.ip_port() == Some((ip, port)),
        _ => false,
    };
    let all_seen = |events: &[ProbeEvent]| {
        events.iter().any(|e| is_exec_of(e, "true"))
            && events.iter().any(|e| connect_to(e, Ipv4Addr::LOCALHOST.into(), v4_port))
            && events.iter().any(|e| connect_to(e, mapped.into(), v6_port))
            && events.iter().any(|e| connect_to(e, Ipv6Addr::LOCALHOST.into(), v6_port))
            && events
                .iter()
                .any(|e| matches!(e, ProbeEvent::CgroupRemoved { cgroup_id, .. } if *cgroup_id == cgroup_ino))
    };
    let events = collect(&mut probes, &all_seen, LIVE_WAIT);

    // The exec chain sh -> env -> true, all one pid, parent = this test process.
    let execs = execs_of(&events, child);
    let comms: Vec<&str> = execs.iter().map(|e| e.process.comm.as_str()).collect();
    assert_eq!(
        comms,
        ["sh", "env", "true"],
        "execs of the child: {execs:#?}"
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    for exec in &execs {
        assert_eq!(exec.process.ppid, me);
        assert_eq!(exec.process.tid, child);
        assert_eq!(exec.process.uid, unsafe { libc::getuid() });
        assert!(exec.cgroup_id != 0);
        assert!(
            now.abs_diff(exec.timestamp) < 10_000_000_000,
            "timestamp {}",
            exec.timestamp
        );
    }
    let Body::ProcessExec {
        filename,
        argv,
        env,
        ..
    } = &execs[0].body
    else {
        unreachable!()
    };
    assert!(filename.ends_with("sh"), "{filename}");
    assert_eq!(
        argv,
        &["sh", "-c", "exec env KUBERNETES_SERVICE_HOST=10.1.2.3 true"]
    );
    assert!(env.iter().all(|e| e.starts_with("PATH=")), "{env:?}");
    let Body::ProcessExec {
        filename,
        argv,
        env,
        ..
    } = &execs[2].body
    else {
        unreachable!()
    };
    assert!(filename.ends_with("/true"), "{filename}");
    assert_eq!(argv, &["true"]);
    assert!(
        env.contains(&"KUBERNETES_SERVICE_HOST=10.1.2.3".to_string()),
        "{env:?}"
    );
    assert!(env.iter().any(|e| e.starts_with("PATH=")), "{env:?}");
    assert_eq!(env.len(), 2, "only the requested names: {env:?}");
    eprintln!("exec of true: {:?}", execs[2]);

    for (ip, port) in [
        (std::net::IpAddr::from(Ipv4Addr::LOCALHOST), v4_port),
        (mapped.into(), v6_port),
        (Ipv6Addr::LOCALHOST.into(), v6_port),
    ] {
        let event = events
            .iter()
            .find(|e| connect_to(e, ip, port))
            .unwrap_or_else(|| panic!("no connect to {ip} port {port}"));
        let ProbeEvent::Event(event) = event else {
            unreachable!()
        };
        assert_eq!(event.process.tid, tid);
        assert!(matches!(
            event.body,
            Body::SocketConnect {
                socket_type: SocketType::Stream,
                ..
            }
        ));
        eprintln!("connect: {event:?}");
    }
    let removed = events
        .iter()
        .find(|e| matches!(e, ProbeEvent::CgroupRemoved { cgroup_id, .. } if *cgroup_id == cgroup_ino))
        .expect("cgroup removal");
    assert_eq!(
        removed,
        &ProbeEvent::CgroupRemoved {
            cgroup_id: cgroup_ino,
            path: cgroup_name
        }
    );
    assert_eq!(probes.drops(), 0);

    // The host-cgroup filter: this process's cgroup marked as host is suppressed
    // in the kernel once containers_only is on, and reported again when forgotten.
    let my_cgroup = events
        .iter()
        .find_map(|e| match e {
            ProbeEvent::Event(ev) if connect_to(e, Ipv4Addr::LOCALHOST.into(), v4_port) => {
                Some(ev.cgroup_id)
            }
            _ => None,
        })
        .unwrap();
    probes.mark_host_cgroup(my_cgroup).unwrap();
    probes.set_containers_only(true).unwrap();
    let filtered_before = probes.counters().filtered;
    let _d = TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, v4_port))).unwrap();
    let events = collect(&mut probes, &|_| false, Duration::from_millis(200));
    assert!(
        !events
            .iter()
            .any(|e| connect_to(e, Ipv4Addr::LOCALHOST.into(), v4_port)),
        "a host cgroup's connect was sent ({} events)",
        events.len()
    );
    assert!(probes.counters().filtered > filtered_before);
    probes.forget_cgroup(my_cgroup).unwrap();
    let _e = TcpStream::connect(SocketAddr::from((Ipv4Addr::LOCALHOST, v4_port))).unwrap();
    let seen = |events: &[ProbeEvent]| {
        events
            .iter()
            .any(|e| connect_to(e, Ipv4Addr::LOCALHOST.into(), v4_port))
    };
    let events = collect(&mut probes, &seen, LIVE_WAIT);
    assert!(seen(&events), "an unknown cgroup's connect was not sent");
    assert_eq!(probes.decode_errors(), 0);
}

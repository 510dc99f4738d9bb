//! Per-event cost of the k8s_api_connection rule as a wasm component driven by the host,
//! in Rust (`wasm`), JavaScript (`wasm-js`) and Python (`wasm-python`), beside the same
//! logic written natively, on one mixed 10,000-event stream.
//!
//! Each iteration is one pass over the stream in batches of [`BATCH`] (what a ring-buffer
//! drain delivers). ns/event = iteration time / 10,000. Both sides build their findings
//! inside the timing and free the previous pass's; neither frees the stream's events.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rulehost::dispatch::Dispatcher;
use rulehost::events::{
    Body, Container, ContainerRuntime as Rt, Event, Process, SocketAddress, SocketType,
};
use rulehost::rules::{Limits, RuleEngine};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

/// The allocator the `rulehost` binary uses, so host-side costs match it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EVENTS: usize = 10_000;
const BATCH: usize = 256;
const CONTAINERS: usize = 50;
/// Container connects to the declared API server: 2 in every 10 events.
const EXPECTED_FINDINGS: usize = EVENTS / 5;

/// 10% execs (with a realistic env), 20% connects to the API server, 50% connects
/// elsewhere, 20% host-process events.
fn stream() -> Vec<Event> {
    let env: Vec<String> = [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOSTNAME=web-7d9f",
        "KUBERNETES_SERVICE_HOST=10.96.0.1",
        "KUBERNETES_SERVICE_PORT=443",
        "KUBERNETES_PORT=tcp://10.96.0.1:443",
        "HOME=/root",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let containers: Vec<Arc<Container>> = (0..CONTAINERS)
        .map(|c| Arc::new(Container::new(format!("{:064x}", c + 1), Rt::Containerd)))
        .collect();
    (0..EVENTS)
        .map(|i| {
            let slot = i % 10;
            let container = (slot < 8).then(|| containers[(i / 10) % CONTAINERS].clone());
            let body = match slot {
                0 | 8 => Body::ProcessExec {
                    filename: "/usr/bin/curl".into(),
                    argv: vec!["curl".into(), "-s".into()],
                    env: env.clone(),
                    synthetic: false,
                    truncated: Default::default(),
                },
                1 | 2 | 9 => connect(Ipv4Addr::new(10, 96, 0, 1), 443),
                _ => connect(Ipv4Addr::new(10, 244, (i % 200) as u8, 7), 8080),
            };
            Event {
                timestamp: i as u64,
                process: Process {
                    pid: 1000 + i as u32 % 97,
                    tid: 1000 + i as u32 % 97,
                    ppid: 1,
                    uid: 0,
                    comm: "curl".into(),
                    ..Process::default()
                },
                cgroup_id: 0,
                container,
                body,
            }
        })
        .collect()
}

fn connect(ip: Ipv4Addr, port: u16) -> Body {
    Body::SocketConnect {
        address: SocketAddress::Ipv4 { ip, port },
        socket_type: SocketType::Stream,
    }
}

/// The same detection, written natively: what the wasm rule is compared against.
#[derive(Default)]
struct NativeRule {
    addresses: HashMap<String, Vec<IpAddr>>,
    /// The node's known API server endpoints (none in this stream, as for the wasm rule).
    endpoints: Vec<(IpAddr, u16)>,
}

impl NativeRule {
    fn on_event(&mut self, event: &Event, findings: &mut Vec<(String, u16, String, String)>) {
        let Some(container) = &event.container else {
            return;
        };
        match &event.body {
            Body::ProcessExec { env, .. } => {
                for entry in env {
                    if let Some(value) = entry.strip_prefix("KUBERNETES_SERVICE_HOST=")
                        && let Ok(ip) = value.trim().parse::<IpAddr>()
                    {
                        let ip = ip.to_canonical();
                        let set = self.addresses.entry(container.id.clone()).or_default();
                        if !set.contains(&ip) && set.len() < 8 {
                            set.push(ip);
                        }
                    }
                }
            }
            Body::SocketConnect { address, .. } => {
                let Some((ip, port)) = address.ip_port() else {
                    return;
                };
                let ip = ip.to_canonical();
                if self
                    .addresses
                    .get(&container.id)
                    .is_some_and(|set| set.contains(&ip))
                    || self.endpoints.contains(&(ip, port))
                {
                    findings.push((
                        ip.to_string(),
                        port,
                        container.id.clone(),
                        event.process.comm.to_string(),
                    ));
                }
            }
        }
    }
}

fn bench(c: &mut Criterion) {
    let events = stream();
    let mut group = c.benchmark_group("dispatch");
    group.throughput(Throughput::Elements(EVENTS as u64));

    let runtime = Arc::new(RuleEngine::new(Limits::default()).expect("runtime"));
    let builtin = rulehost::rules::BUILTIN_K8S_API_CONNECTION.to_vec();
    let rules_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/rules");
    let other = |file: &str| {
        std::fs::read(rules_dir.join(file))
            .unwrap_or_else(|e| panic!("{file}: {e} (`make build` builds it)"))
    };
    for (name, bytes, samples) in [
        ("wasm", builtin, 100),
        ("wasm-js", other("k8s_api_connection_js.wasm"), 10),
        ("wasm-python", other("k8s_api_connection_python.wasm"), 10),
    ] {
        let mut host = Dispatcher::new(runtime.clone());
        let rule = runtime.load(name, &bytes).expect("rule loads");
        host.add(rule).expect("add rule");
        let mut findings = Vec::new();
        group.sample_size(samples);
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    events
                        .chunks(BATCH)
                        .map(<[Event]>::to_vec)
                        .collect::<Vec<_>>()
                },
                |batches| {
                    findings.clear();
                    let done: Vec<Vec<Event>> = batches
                        .into_iter()
                        .map(|batch| host.dispatch(batch, &mut findings))
                        .collect();
                    assert_eq!(findings.len(), EXPECTED_FINDINGS, "{name}");
                    // Dropped by criterion after timing: the native rule reads the
                    // stream by reference and never frees it, so neither side pays.
                    done
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.sample_size(100);

    let mut native = NativeRule::default();
    let mut native_findings = Vec::new();
    group.bench_function("native", |b| {
        b.iter(|| {
            native_findings.clear();
            for event in &events {
                native.on_event(event, &mut native_findings);
            }
            assert_eq!(native_findings.len(), EXPECTED_FINDINGS);
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

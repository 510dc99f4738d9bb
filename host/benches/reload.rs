//! Hot-reload latency: from a rule file being replaced (atomic rename) to the new version
//! live in the dispatcher, through the real inotify watcher, compile/validate and swap.
//! `cold`: never-seen bytes each time (full compilation); `cached`: alternating between
//! two versions already compiled (the content-hash cache). Also checks, under a steady
//! event stream, that a reload loses no event.

use criterion::{Criterion, criterion_group, criterion_main};
use rulehost::dispatch::Dispatcher;
use rulehost::events::{
    Body, Container, ContainerRuntime as Rt, Event, Process, SocketAddress, SocketType,
};
use rulehost::rules::{Limits, RuleEngine};
use rulehost::sources::reload::{Change, RuleSources, Watcher, plan};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The built-in rule with a custom section appended: same code, new bytes.
fn variant(tag: u64) -> Vec<u8> {
    let mut bytes = rulehost::rules::BUILTIN_K8S_API_CONNECTION.to_vec();
    let name = b"bench-variant";
    let payload = tag.to_le_bytes();
    bytes.push(0);
    bytes.push((1 + name.len() + payload.len()) as u8);
    bytes.push(name.len() as u8);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(&payload);
    bytes
}

fn write_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// File change -> watcher -> plan (compile/validate) -> swap; returns when live.
async fn reload_once(
    runtime: &RuleEngine,
    sources: &RuleSources,
    watcher: &mut Watcher,
    host: &mut Dispatcher,
    loaded: &mut BTreeMap<std::path::PathBuf, String>,
    bytes: &[u8],
) {
    let path = &sources.files[0];
    write_atomically(path, bytes);
    watcher.changed().await;
    for change in plan(runtime, sources, loaded, &BTreeMap::new()) {
        match change {
            Change::Replace { path, rule, .. } => {
                let key = path.display().to_string();
                loaded.insert(path, rule.sha256.clone());
                host.replace(&key, rule).unwrap();
            }
            _ => panic!("unexpected change"),
        }
    }
}

fn event(container: &Arc<Container>, body: Body) -> Event {
    Event {
        timestamp: 0,
        process: Process {
            pid: 1,
            tid: 1,
            ppid: 0,
            uid: 0,
            comm: "curl".into(),
            ..Process::default()
        },
        cgroup_id: 0,
        container: Some(container.clone()),
        body,
    }
}

fn bench(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("rulehost-bench-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("k8s.wasm");
    std::fs::write(&path, variant(0)).unwrap();
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let runtime = Arc::new(RuleEngine::new(Limits::default()).unwrap());
    let sources = RuleSources {
        files: vec![path.clone()],
        dirs: vec![],
        ..Default::default()
    };
    let mut host = Dispatcher::new(runtime.clone());
    let first = runtime.load("k8s", &variant(0)).unwrap();
    let mut loaded = BTreeMap::from([(path.clone(), first.sha256.clone())]);
    host.add_from(&path.display().to_string(), first).unwrap();
    let mut watcher = tokio.block_on(async { Watcher::new(&sources).unwrap() });

    let mut group = c.benchmark_group("reload");
    group.sample_size(10);
    let mut next = 1u64;
    group.bench_function("cold", |b| {
        b.iter(|| {
            next += 1;
            let bytes = variant(next);
            tokio.block_on(reload_once(
                &runtime,
                &sources,
                &mut watcher,
                &mut host,
                &mut loaded,
                &bytes,
            ));
        })
    });
    let warm = [variant(u64::MAX), variant(u64::MAX - 1)];
    for bytes in &warm {
        runtime.load("k8s", bytes).unwrap();
    }
    let mut flip = 0;
    group.sample_size(30);
    group.bench_function("cached", |b| {
        b.iter(|| {
            flip ^= 1;
            tokio.block_on(reload_once(
                &runtime,
                &sources,
                &mut watcher,
                &mut host,
                &mut loaded,
                &warm[flip],
            ));
        })
    });
    group.finish();

    // Steady stream across reloads: every connect must give exactly one finding.
    let containers: Vec<Arc<Container>> = (0..16)
        .map(|i| Arc::new(Container::new(format!("{:064x}", i + 1), Rt::Containerd)))
        .collect();
    let execs = containers
        .iter()
        .map(|c| {
            event(
                c,
                Body::ProcessExec {
                    filename: "/bin/sh".into(),
                    argv: vec![],
                    env: vec!["KUBERNETES_SERVICE_HOST=10.96.0.1".into()],
                    synthetic: false,
                    truncated: Default::default(),
                },
            )
        })
        .collect();
    let mut findings = Vec::new();
    host.dispatch(execs, &mut findings);
    let (mut sent, mut delivered) = (0usize, 0usize);
    for round in 0..40 {
        if round % 4 == 0 {
            next += 1;
            let bytes = variant(next);
            tokio.block_on(reload_once(
                &runtime,
                &sources,
                &mut watcher,
                &mut host,
                &mut loaded,
                &bytes,
            ));
        }
        let batch: Vec<Event> = containers
            .iter()
            .map(|c| {
                event(
                    c,
                    Body::SocketConnect {
                        address: SocketAddress::Ipv4 {
                            ip: [10, 96, 0, 1].into(),
                            port: 443,
                        },
                        socket_type: SocketType::Stream,
                    },
                )
            })
            .collect();
        sent += batch.len();
        findings.clear();
        host.dispatch(batch, &mut findings);
        delivered += findings.len();
    }
    eprintln!(
        "reload under a steady stream: {sent} matching connects across 10 reloads, {delivered} findings, {} lost",
        sent - delivered
    );
    assert_eq!(sent, delivered);
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, bench);
criterion_main!(benches);

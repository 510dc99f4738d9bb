//! Shared helpers for the end-to-end tests: event builders, a host with real rules, and
//! (in `live`) a real agent on the real kernel.

pub mod apiserver;
pub mod cri;
pub mod daemonset;
pub mod docker;
pub mod hostile;
pub mod live;
pub mod registry;
pub mod scene;
pub mod scrape;
pub mod signing;
pub mod slow_compile;
pub mod tls;

use rulehost::dispatch::Dispatcher;
use rulehost::events::{
    Body, Container, ContainerRuntime, Event, Process, SocketAddress, SocketType,
};
use rulehost::rules::{Limits, RuleEngine};
use rulehost::sinks::Finding;
use std::path::PathBuf;
use std::sync::Arc;

/// A 64-hex container id derived from a short tag.
pub fn container_id(tag: u8) -> String {
    format!("{tag:02x}").repeat(32)
}

pub fn container(tag: u8) -> Option<Arc<Container>> {
    Some(Arc::new(Container::new(
        container_id(tag),
        ContainerRuntime::Containerd,
    )))
}

fn process(pid: u32, comm: &str) -> Process {
    Process {
        pid,
        tid: pid,
        ppid: 1,
        uid: 0,
        comm: comm.into(),
        ..Process::default()
    }
}

/// An exec in `container` (None: a host process) with the given env entries.
pub fn exec(container: Option<Arc<Container>>, env: &[&str]) -> Event {
    Event {
        timestamp: 1,
        process: process(100, "sh"),
        cgroup_id: 0,
        container,
        body: Body::ProcessExec {
            filename: "/bin/sh".into(),
            argv: vec!["sh".into()],
            env: env.iter().map(|e| e.to_string()).collect(),
            synthetic: false,
            truncated: Default::default(),
        },
    }
}

/// A stream connect from `container` to `ip:port` (IPv4 or IPv6 text).
pub fn connect(container: Option<Arc<Container>>, ip: &str, port: u16) -> Event {
    let address = match ip.parse::<std::net::IpAddr>().expect("test address") {
        std::net::IpAddr::V4(ip) => SocketAddress::Ipv4 { ip, port },
        std::net::IpAddr::V6(ip) => SocketAddress::Ipv6 {
            ip,
            port,
            flow_info: 0,
            scope_id: 0,
        },
    };
    connect_to(container, address)
}

pub fn connect_to(container: Option<Arc<Container>>, address: SocketAddress) -> Event {
    Event {
        timestamp: 2,
        process: process(101, "curl"),
        cgroup_id: 0,
        container,
        body: Body::SocketConnect {
            address,
            socket_type: SocketType::Stream,
        },
    }
}

/// The repository's target directory (built by `make build` before tests run).
pub fn target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target")
}

/// The `rulehost` binary under test.
pub fn rulehost_bin() -> PathBuf {
    target_dir().join("release/rulehost")
}

/// The shippable k8s_api_connection rule file.
pub fn k8s_rule_file() -> PathBuf {
    target_dir().join("rules/k8s_api_connection.wasm")
}

/// A recorded events file from `tests/events/`.
pub fn events_file(name: &str) -> String {
    format!("{}/events/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The TRC-1013 rule in each language it ships in, as (language, rule file): Rust
/// (`host/build.rs`), JavaScript and Python (`scripts/build-rules.sh`, run by `make
/// build`).
pub fn k8s_rule_files() -> Vec<(&'static str, PathBuf)> {
    vec![
        ("rust", k8s_rule_file()),
        ("javascript", built("rules/k8s_api_connection_js.wasm")),
        ("python", built("rules/k8s_api_connection_python.wasm")),
    ]
}

/// The hostile fixture written in `language` (`js` or `python`), from
/// `tests/fixtures-<language>/`, built by `scripts/build-rules.sh`.
pub fn hostile_fixture(language: &str) -> PathBuf {
    built(&format!("fixtures/hostile-{language}.wasm"))
}

/// A file `make build` leaves under `target/`.
fn built(path: &str) -> PathBuf {
    let path = target_dir().join(path);
    assert!(
        path.exists(),
        "no {}: `make build` builds it (scripts/build-rules.sh)",
        path.display()
    );
    path
}

/// A host running `file` alone, under `limits`, granting everything (tests only).
pub fn host_of(limits: Limits, file: &std::path::Path) -> Dispatcher {
    let runtime = Arc::new(RuleEngine::new(limits).expect("runtime"));
    let mut dispatcher = Dispatcher::new(runtime.clone());
    for rule in rulehost::sources::load_all(&runtime, &[file.to_path_buf()]).expect("rule loads") {
        dispatcher.add(rule).expect("add rule");
    }
    dispatcher
}

/// A fixture rule component from `tests/fixtures/<name>/`, componentized by `build.rs`.
pub fn fixture(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("OUT_DIR"))
        .join("fixtures")
        .join(format!("{name}.wasm"));
    assert!(path.exists(), "no fixture rule at {}", path.display());
    path
}

/// A host running under `limits` with the given fixture rules, then the built-in
/// k8s_api_connection rule, loaded.
pub fn host_with(limits: Limits, fixtures: &[&str]) -> Dispatcher {
    let runtime = Arc::new(RuleEngine::new(limits).expect("runtime"));
    let mut dispatcher = Dispatcher::new(runtime.clone());
    let mut paths: Vec<PathBuf> = fixtures.iter().map(|name| fixture(name)).collect();
    paths.push(k8s_rule_file());
    for rule in rulehost::sources::load_all(&runtime, &paths).expect("rules load") {
        dispatcher.add(rule).expect("add rule");
    }
    dispatcher
}

/// A host with the built-in k8s_api_connection rule loaded, running in wasmtime.
pub fn k8s_host() -> Dispatcher {
    let runtime = Arc::new(RuleEngine::new(Limits::default()).expect("runtime"));
    let mut dispatcher = Dispatcher::new(runtime.clone());
    for rule in rulehost::sources::load_all(&runtime, &[] as &[PathBuf]).expect("built-in rule") {
        dispatcher.add(rule).expect("add rule");
    }
    dispatcher
}

/// Dispatches `events` as one batch and returns the findings.
pub fn run(host: &mut Dispatcher, events: Vec<Event>) -> Vec<Finding> {
    let mut findings = Vec::new();
    host.dispatch(events, &mut findings);
    findings
}

/// Dispatches each event alone (the single-event export) and returns all findings.
pub fn run_one_by_one(host: &mut Dispatcher, events: Vec<Event>) -> Vec<Finding> {
    events
        .into_iter()
        .flat_map(|e| run(host, vec![e]))
        .collect()
}

/// Rule CPU budgets that a rule call under QEMU's emulation (tens of times slower, the
/// kernel matrix's VMs) stays within, for tests about the kernel rather than the
/// sandbox (whose budgets have their own tests).
pub const EMULATION_BUDGETS: [&str; 4] =
    ["--rule-cpu-ms", "2000", "--rule-cpu-per-call-ms", "10000"];

/// Whether the tests run in the kernel matrix's emulated VMs (`make test-kernels` sets
/// `RULEHOST_TEST_EMULATED`).
pub fn emulated() -> bool {
    std::env::var_os("RULEHOST_TEST_EMULATED").is_some()
}

/// A 64-hex container id unique to this test process and `tag`.
pub fn trigger_id(tag: u8) -> String {
    format!("{:08x}{tag:02x}", std::process::id()).repeat(7)[..64].to_owned()
}

/// The same rule component with a custom section appended: identical behaviour,
/// different bytes and sha256 (a "new version" for reload tests).
pub fn rule_variant(bytes: &[u8], tag: &str) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"rulehost-test-variant";
    let mut body = Vec::new();
    leb(name.len(), &mut body);
    body.extend_from_slice(name);
    body.extend_from_slice(tag.as_bytes());
    let mut out = bytes.to_vec();
    out.push(0); // custom section
    leb(body.len(), &mut out);
    out.extend_from_slice(&body);
    out
}

/// sha256 of `bytes` as lowercase hex, via the system's sha256sum (independent of the
/// host's own hashing).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// The shippable cloud_metadata_access example rule file.
pub fn cloud_rule_file() -> PathBuf {
    target_dir().join("rules/cloud_metadata_access.wasm")
}

/// A host with the given rule files loaded, in order.
pub fn host_with_files(files: &[PathBuf]) -> anyhow::Result<Dispatcher> {
    let runtime = Arc::new(RuleEngine::new(Limits::default())?);
    let mut dispatcher = Dispatcher::new(runtime.clone());
    for rule in rulehost::sources::load_all(&runtime, files)? {
        dispatcher.add(rule)?;
    }
    Ok(dispatcher)
}

/// At most a few items and the count, for assertion messages: never a whole file.
pub fn brief<T: std::fmt::Debug>(items: &[T]) -> String {
    const SHOWN: usize = 3;
    let shown: Vec<String> = items
        .iter()
        .rev()
        .take(SHOWN)
        .rev()
        .map(|item| {
            let text = format!("{item:?}");
            match text.char_indices().nth(400) {
                Some((cut, _)) => format!("{}…", &text[..cut]),
                None => text,
            }
        })
        .collect();
    format!(
        "{} item(s), last {}: [{}]",
        items.len(),
        shown.len(),
        shown.join(", ")
    )
}

/// One of rulehost's log records (`--log-format json`): a message and named fields, so
/// tests check what happened, not how a sentence is worded.
#[derive(Debug, Clone)]
pub struct LogRecord(serde_json::Value);

impl LogRecord {
    pub fn message(&self) -> &str {
        self.0["fields"]["message"].as_str().unwrap_or("")
    }

    pub fn level(&self) -> &str {
        self.0["level"].as_str().unwrap_or("")
    }

    /// A field as text ("" when absent); numbers and booleans as JSON prints them.
    pub fn field(&self, name: &str) -> String {
        match &self.0["fields"][name] {
            serde_json::Value::Null => String::new(),
            serde_json::Value::String(text) => text.clone(),
            other => other.to_string(),
        }
    }

    /// Whether this is `message` with every given field equal to the given text.
    pub fn is(&self, message: &str, fields: &[(&str, &str)]) -> bool {
        self.message() == message && fields.iter().all(|(k, v)| self.field(k) == *v)
    }
}

/// The JSON log records in a process's stderr; other lines are not records and skipped.
pub fn log_records(stderr: &str) -> Vec<LogRecord> {
    stderr
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .map(LogRecord)
        .collect()
}

//! TRC-1013, `k8s_api_connection`: a process inside a container connects to the
//! Kubernetes API server.
//!
//! At exec, a container's `KUBERNETES_SERVICE_HOST` tells where its API server is; a
//! later connect from that container to that address is a finding. Improvements over
//! Tracee's signature:
//! - every address a container declared is kept (up to [`MAX_ADDRESSES`]), so an exec
//!   with a different value (`env KUBERNETES_SERVICE_HOST=x curl ...`) cannot erase the
//!   real one;
//! - addresses are compared as parsed IPs, so `::ffff:10.96.0.1` matches `10.96.0.1`
//!   and IPv6 spellings compare canonically;
//! - the state lives in the host, so a rule reload or crash forgets nothing;
//! - a connect to any API server endpoint the node knows (address and port, from the
//!   world's `cluster` import: the agent's flags, its own pod environment, the
//!   kubelet's kubeconfig, the cluster's EndpointSlices) is a finding too, whatever
//!   the container's environment declares or whether it declares anything;
//! - it tells the host what it watches (the world's `interest`, 0.1.2): the declared
//!   addresses and the known endpoints, so connects anywhere else are dropped in the
//!   kernel and cost nothing.

mod addresses;
mod cache;

pub use addresses::{AddressSet, MAX_ADDRESSES};

use cache::Cache;
use rulehost_sdk::{
    ContainerHandle, Event, EventBody, EventKind, Findings, LogLevel, Metadata, Rule, RuleMetadata,
    Value, cluster, export_rule, from_std, interest, log_line, socket_ip_port, state, to_std,
};
use std::cell::RefCell;
use std::net::IpAddr;

/// The environment variable that names a container's API server.
const ENV_NAME: &str = "KUBERNETES_SERVICE_HOST";
/// State key under which a container's declared API server addresses are kept.
const STATE_KEY: &str = "k8s-api-addresses";

/// Most addresses this instance remembers having told the host to watch; past it,
/// every exec tells the host again (which dedups).
const WATCHED_CAPACITY: usize = 64;

/// The node's known API server endpoints, with the host's generation they are from.
type KnownEndpoints = Option<(u64, Vec<(IpAddr, u16)>)>;

thread_local! {
    static ENDPOINTS: RefCell<KnownEndpoints> = const { RefCell::new(None) };

    /// Addresses this instance asked the host to watch (the host keeps them for the
    /// rule id, across instances).
    static WATCHED: RefCell<Vec<IpAddr>> = const { RefCell::new(Vec::new()) };

    /// Read-through cache of host state, so a connect costs no host call once its
    /// container was seen. The host's copy is authoritative (it outlives this instance);
    /// container handles are never reused, so a stale entry can never match.
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

/// Runs `f` on the container's address set, loading it from host state on first use.
fn with_addresses<T>(container: ContainerHandle, f: impl FnOnce(&mut AddressSet) -> T) -> T {
    CACHE.with_borrow_mut(|cache| {
        if let Some(set) = cache.get(container) {
            return f(set);
        }
        f(cache.insert(container, stored(container)))
    })
}

/// The container's addresses as host state has them (first sight of it).
#[cold]
#[inline(never)]
fn stored(container: ContainerHandle) -> AddressSet {
    state::get(container, STATE_KEY)
        .map(|bytes| AddressSet::decode(&bytes))
        .unwrap_or_default()
}

struct K8sApiConnection;

impl Rule for K8sApiConnection {
    fn metadata() -> RuleMetadata {
        Metadata::new(
            "TRC-1013",
            "0.3.0",
            "Kubernetes API server connection detected",
            "k8s_api_connection",
        )
        .description(
            "A process inside a container connected to the Kubernetes API server: the address \
             its environment declares, or an API server endpoint the node knows. Adversaries \
             use the API server to discover and control cluster resources.",
        )
        .tags(&["container"])
        .severity(1)
        .mitre("Discovery", "Cloud Service Discovery", "T1526")
        .selects(&[EventKind::ProcessExec, EventKind::SocketConnect])
        .env_vars(&[ENV_NAME])
        .build()
    }

    fn init(_config: &str) -> Result<(), String> {
        interest::only_watched_connects();
        interest::watch_api_servers();
        Ok(())
    }

    fn before_batch() {
        refresh_endpoints();
    }

    fn on_event(index: u32, event: &Event, findings: &mut Findings) {
        handle(index, event, findings);
    }
}

export_rule!(K8sApiConnection);

/// Applies one event: remembers declared addresses at exec, reports matching connects.
fn handle(index: u32, event: &Event, findings: &mut Findings) {
    let Some(container) = event.container else {
        return; // host processes are out of scope
    };
    match &event.body {
        EventBody::ProcessExec(exec) => learn(container, &exec.env),
        EventBody::SocketConnect(connect) => {
            let Some((ip, port)) = socket_ip_port(&connect.address) else {
                return;
            };
            if with_addresses(container, |set| set.contains(ip)) || known_endpoint(ip, port) {
                report(findings, index, container, ip, port);
            }
        }
    }
}

/// Remembers and watches the addresses an exec's env declares. Kept out of the connect
/// path, so the code every event runs stays small (fewer spills in the compiled wasm).
#[inline(never)]
fn learn(container: ContainerHandle, env: &[String]) {
    for value in env.iter().filter_map(|entry| declared_address(entry)) {
        remember(container, value);
        watch(value);
    }
}

/// Tells the host to watch `ip`, once per instance: not only when a container first
/// declares it, since the host's watch set may be younger than the state (an agent
/// restart without a state directory), but not on every exec either (a host call each).
fn watch(ip: IpAddr) {
    let new = WATCHED.with_borrow_mut(|watched| {
        if watched.contains(&ip) {
            return false;
        }
        if watched.len() < WATCHED_CAPACITY {
            watched.push(ip);
        }
        true
    });
    if new {
        interest::watch_address(from_std(ip));
    }
}

/// Reads the node's known API server endpoints again if the host's generation moved.
fn refresh_endpoints() {
    let generation = cluster::api_servers_generation();
    ENDPOINTS.with_borrow_mut(|known| {
        if known.as_ref().is_none_or(|(seen, _)| *seen != generation) {
            let endpoints = cluster::api_servers()
                .into_iter()
                .map(|e| (addresses::canonical(to_std(e.address)), e.port))
                .collect();
            *known = Some((generation, endpoints));
        }
    });
}

/// Whether `ip:port` is an API server endpoint the node knows (as of this batch).
fn known_endpoint(ip: IpAddr, port: u16) -> bool {
    let ip = addresses::canonical(ip);
    ENDPOINTS.with_borrow(|known| {
        known
            .as_ref()
            .is_some_and(|(_, endpoints)| endpoints.contains(&(ip, port)))
    })
}

/// The API server address an env entry declares, if it is `KUBERNETES_SERVICE_HOST=...`.
fn declared_address(entry: &str) -> Option<IpAddr> {
    let value = entry.strip_prefix(ENV_NAME)?.strip_prefix('=')?;
    addresses::parse_ip(value.trim())
}

/// Adds an address to the container's set, writing through to host state (bounded;
/// the first addresses declared are kept).
fn remember(container: ContainerHandle, ip: IpAddr) {
    let encoded = with_addresses(container, |set| set.insert(ip).then(|| set.encode()));
    if let Some(encoded) = encoded
        && let Err(error) = state::set(container, STATE_KEY, &encoded)
    {
        log_line(
            LogLevel::Warn,
            &format!("cannot store API server address {ip}: {error:?}"),
        );
    }
}

/// Reports a connect to an API server: no string is built (the host fills in the
/// container id and the command name).
fn report(findings: &mut Findings, index: u32, container: ContainerHandle, ip: IpAddr, port: u16) {
    findings.report(
        index,
        &[
            ("ip", Value::Ip(from_std(addresses::canonical(ip)))),
            ("port", Value::Unsigned(port.into())),
            ("container_id", Value::ContainerId(container)),
            ("comm", Value::Comm(index)),
        ],
    );
}

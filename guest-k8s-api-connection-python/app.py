"""TRC-1013, `k8s_api_connection`, in Python: a process inside a container connects to
the Kubernetes API server. The same detection as the Rust rule (guest-k8s-api-connection):

- at exec, a container's `KUBERNETES_SERVICE_HOST` tells where its API server is; every
  address a container declared is kept (up to MAX_ADDRESSES), compared as parsed IPs;
- a later connect from that container to one of them, or to any API server endpoint the
  node knows (the world's `cluster` import), is a finding;
- the addresses live in host state, in the Rust rule's encoding (16 bytes per address,
  IPv4 mapped), so either rule can replace the other by hot reload and forget nothing;
- it tells the host what it watches, so unrelated connects are dropped in the kernel.
"""

import ipaddress
from typing import Dict, List, Optional, Tuple

import rulehost_rule as sdk
from wit_world.imports import cluster, interest, state, types

ENV_NAME = "KUBERNETES_SERVICE_HOST"
STATE_KEY = "k8s-api-addresses"
MAX_ADDRESSES = 8
CACHE_CAPACITY = 4096
WATCHED_CAPACITY = 64

# Read-through cache of host state per container handle (handles are never reused).
cache: Dict[int, List[sdk.IpAddr]] = {}
# Addresses this instance asked the host to watch.
watched: List[sdk.IpAddr] = []
# The node's known API server endpoints, with the host's generation they are from.
endpoints: Optional[Tuple[int, List[Tuple[sdk.IpAddr, int]]]] = None


def decode(data: bytes) -> List[sdk.IpAddr]:
    addresses: List[sdk.IpAddr] = []
    for at in range(0, len(data) - len(data) % 16, 16):
        insert(addresses, ipaddress.IPv6Address(data[at : at + 16]))
    return addresses


def encode(addresses: List[sdk.IpAddr]) -> bytes:
    out = bytearray()
    for ip in addresses:
        if isinstance(ip, ipaddress.IPv4Address):
            out += ipaddress.IPv6Address("::ffff:" + str(ip)).packed
        else:
            out += ip.packed
    return bytes(out)


def insert(addresses: List[sdk.IpAddr], ip: sdk.IpAddr) -> bool:
    ip = sdk.canonical(ip)
    if ip in addresses or len(addresses) >= MAX_ADDRESSES:
        return False
    addresses.append(ip)
    return True


def addresses_of(container: int) -> List[sdk.IpAddr]:
    found = cache.get(container)
    if found is None:
        if len(cache) >= CACHE_CAPACITY:
            cache.clear()
        stored = state.get(container, STATE_KEY)
        found = decode(stored) if stored is not None else []
        cache[container] = found
    return found


def declared_address(entry: str) -> Optional[sdk.IpAddr]:
    prefix = ENV_NAME + "="
    if not entry.startswith(prefix):
        return None
    return sdk.parse_ip(entry[len(prefix) :].strip())


def remember(container: int, ip: sdk.IpAddr) -> None:
    addresses = addresses_of(container)
    if insert(addresses, ip):
        try:
            state.set(container, STATE_KEY, encode(addresses))
        except Exception as error:  # the host's state-error
            sdk.log(sdk.LogLevel.WARN, f"cannot store API server address {ip}: {error}")


def watch(ip: sdk.IpAddr) -> None:
    if ip in watched:
        return
    if len(watched) < WATCHED_CAPACITY:
        watched.append(ip)
    interest.watch_address(sdk.from_std(ip))


def refresh_endpoints() -> None:
    global endpoints
    generation = cluster.api_servers_generation()
    if endpoints is None or endpoints[0] != generation:
        known = [(sdk.canonical(sdk.to_std(e.address)), e.port) for e in cluster.api_servers()]
        endpoints = (generation, known)


def on_event(index: int, event: types.Event, findings: List[types.Finding]) -> None:
    container = event.container
    if container is None:
        return  # host processes are out of scope
    body = event.body
    if isinstance(body, types.EventBody_ProcessExec):
        for entry in body.value.env:
            ip = declared_address(entry)
            if ip is not None:
                remember(container, ip)
                watch(ip)
        return
    ip_port = sdk.socket_ip_port(body.value.address)
    if ip_port is None:
        return
    ip, port = sdk.canonical(ip_port[0]), ip_port[1]
    known = endpoints is not None and (ip, port) in endpoints[1]
    if ip in addresses_of(container) or known:
        findings.append(
            sdk.finding(
                index,
                [
                    ("ip", sdk.ip(ip)),
                    ("port", sdk.unsigned(port)),
                    ("container_id", sdk.container_id(container)),
                    ("comm", sdk.comm(index)),
                ],
            )
        )


def init(config: str) -> None:
    interest.only_watched_connects()
    interest.watch_api_servers()


Detector = sdk.rule(
    sdk.metadata(
        id="TRC-1013",
        version="0.3.0",
        name="Kubernetes API server connection detected",
        event_name="k8s_api_connection",
        description=(
            "A process inside a container connected to the Kubernetes API server: the "
            "address its environment declares, or an API server endpoint the node knows. "
            "Adversaries use the API server to discover and control cluster resources."
        ),
        tags=["container"],
        severity=1,
        mitre=("Discovery", "Cloud Service Discovery", "T1526"),
        selects=[types.EventKind.PROCESS_EXEC, types.EventKind.SOCKET_CONNECT],
        env_vars=[ENV_NAME],
    ),
    on_event,
    init=init,
    before_batch=refresh_endpoints,
)

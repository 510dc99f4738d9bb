"""The rulehost rule SDK for Python: the world's types with `ipaddress` on both sides,
a metadata builder and a finding helper, so a rule reads like the Rust SDK's.

A rule module imports this, defines its logic, and exposes `Detector = rule(...)`:
componentize-py then builds it against `wit/rule.wit`'s `rule` world.
"""

import ipaddress
from typing import Callable, List, Optional, Tuple

from wit_world.imports import types
from wit_world.imports import log as _log

IpAddr = ipaddress.IPv4Address | ipaddress.IPv6Address

# The world's types, under the names the Rust SDK uses.
Event = types.Event
Finding = types.Finding
EventKind = types.EventKind
LogLevel = types.LogLevel


def canonical(ip: IpAddr) -> IpAddr:
    """An IPv4-mapped IPv6 address as the IPv4 address it maps."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def to_std(ip: types.IpAddress) -> IpAddr:
    """A world address as an `ipaddress` one."""
    if isinstance(ip, types.IpAddress_Ipv4):
        return ipaddress.IPv4Address(bytes(ip.value))
    return ipaddress.IPv6Address(b"".join(s.to_bytes(2, "big") for s in ip.value))


def from_std(ip: IpAddr) -> types.IpAddress:
    """An `ipaddress` address as a world one (for a finding's IP value)."""
    packed = ip.packed
    if isinstance(ip, ipaddress.IPv4Address):
        return types.IpAddress_Ipv4(tuple(packed))
    return types.IpAddress_Ipv6(
        tuple(int.from_bytes(packed[i : i + 2], "big") for i in range(0, 16, 2))
    )


def socket_ip_port(address: types.SocketAddress) -> Optional[Tuple[IpAddr, int]]:
    """The IP and port a socket address names; None for AF_UNIX and other families."""
    if isinstance(address, types.SocketAddress_Ipv4):
        return to_std(types.IpAddress_Ipv4(address.value.address)), address.value.port
    if isinstance(address, types.SocketAddress_Ipv6):
        return to_std(types.IpAddress_Ipv6(address.value.address)), address.value.port
    return None


def parse_ip(text: str) -> Optional[IpAddr]:
    """An address as an env value spells it (brackets allowed), canonical; None if not one."""
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return canonical(ipaddress.ip_address(text))
    except ValueError:
        return None


# A finding's values, by kind: what the world's `value` variant carries.
def text(value: str) -> types.Value:
    return types.Value_Text(value)


def unsigned(value: int) -> types.Value:
    return types.Value_Unsigned(value)


def signed(value: int) -> types.Value:
    return types.Value_Signed(value)


def boolean(value: bool) -> types.Value:
    return types.Value_Boolean(value)


def ip(value: IpAddr) -> types.Value:
    return types.Value_Ip(from_std(value))


def container_id(handle: int) -> types.Value:
    """Filled in by the host: no string crosses for it."""
    return types.Value_ContainerId(handle)


def comm(index: int) -> types.Value:
    """The command name of the finding's event, filled in by the host."""
    return types.Value_Comm(index)


def finding(index: int, fields: List[Tuple[str, types.Value]]) -> types.Finding:
    """A finding about the `index`-th event of the batch, from named values."""
    return types.Finding(index, [types.Field(name, value) for name, value in fields])


def log(level: types.LogLevel, message: str) -> None:
    """A line in the agent's log, tagged with the rule's name (rate-limited by the host)."""
    _log.log(level, message)


def metadata(
    id: str,
    version: str,
    name: str,
    event_name: str,
    description: str = "",
    tags: Optional[List[str]] = None,
    severity: int = 0,
    mitre: Optional[Tuple[str, str, str]] = None,
    selects: Optional[List[types.EventKind]] = None,
    origin: types.Origin = types.Origin.CONTAINER,
    env_vars: Optional[List[str]] = None,
) -> types.RuleMetadata:
    """A rule's metadata with the Rust SDK's defaults: container origin, no tags, no
    MITRE mapping, no env names, every event kind."""
    return types.RuleMetadata(
        id=id,
        version=version,
        name=name,
        event_name=event_name,
        description=description,
        tags=tags or [],
        severity=severity,
        mitre=types.Mitre(*mitre) if mitre else None,
        selects=selects
        if selects is not None
        else [types.EventKind.PROCESS_EXEC, types.EventKind.SOCKET_CONNECT],
        origin=origin,
        env_vars=env_vars or [],
    )


def rule(
    meta: types.RuleMetadata,
    on_event: Callable[[int, types.Event, List[types.Finding]], None],
    init: Callable[[str], None] = lambda config: None,
    before_batch: Callable[[], None] = lambda: None,
):
    """The `detector` export for a rule made of `on_event(index, event, findings)`:
    batches and single events go through the same function, as in the Rust SDK."""

    class Detector:
        def metadata(self) -> types.RuleMetadata:
            return meta

        def init(self, config: str) -> None:
            init(config)

        def on_event(self, event: types.Event) -> List[types.Finding]:
            return self.on_events([event])

        def on_events(self, events: List[types.Event]) -> List[types.Finding]:
            before_batch()
            findings: List[types.Finding] = []
            for index, event in enumerate(events):
                on_event(index, event, findings)
            return findings

    return Detector

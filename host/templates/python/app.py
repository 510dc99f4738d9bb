"""{{NAME}}: a container connects to the cloud metadata service."""

import ipaddress
from typing import List

import rulehost_rule as sdk
from wit_world.imports import types

METADATA = ipaddress.IPv4Address("169.254.169.254")


def on_event(index: int, event: types.Event, findings: List[types.Finding]) -> None:
    if not isinstance(event.body, types.EventBody_SocketConnect):
        return
    ip_port = sdk.socket_ip_port(event.body.value.address)
    if ip_port is None or sdk.canonical(ip_port[0]) != METADATA:
        return
    findings.append(
        sdk.finding(
            index,
            [
                ("ip", sdk.ip(ip_port[0])),
                ("port", sdk.unsigned(ip_port[1])),
                ("comm", sdk.comm(index)),
            ],
        )
    )


Detector = sdk.rule(
    sdk.metadata(
        id="{{ID}}",
        version="0.1.0",
        name="Cloud metadata service contacted",
        event_name="{{EVENT}}",
        severity=2,
        selects=[types.EventKind.SOCKET_CONNECT],
    ),
    on_event,
)

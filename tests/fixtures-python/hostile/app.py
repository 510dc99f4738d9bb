"""Hostile fixture in Python: what a rule written in a language with a runtime might
try. An exec's `HOSTILE=<mode>` env entry picks it:
- loop: never returns (the CPU deadline must cut it off);
- bomb: allocates without bound (the memory cap must stop it);
- log: 10,000 log lines and 10,000 printed lines (the log rate limit must hold);
- escape: reads the environment, a file (the service account token, /etc/hostname),
  and opens a socket; reports what it got;
anything else: one finding, so a test sees the rule alive.
"""

import os
import socket
from typing import List

import rulehost_rule as sdk
from wit_world.imports import types


def mode(event: types.Event):
    if not isinstance(event.body, types.EventBody_ProcessExec):
        return None
    for entry in event.body.value.env:
        if entry.startswith("HOSTILE="):
            return entry[len("HOSTILE=") :]
    return None


def try_read(path: str) -> bool:
    try:
        with open(path, "rb") as file:
            file.read(1)
        return True
    except Exception:
        return False


def try_connect() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 22), timeout=1).close()
        return True
    except Exception:
        return False


def on_event(index: int, event: types.Event, findings: List[types.Finding]) -> None:
    what = mode(event)
    if what is None:
        return
    if what == "loop":
        while True:
            pass
    if what == "bomb":
        hoard = []
        while True:
            hoard.append(bytearray(1 << 20))
    if what == "log":
        for i in range(10000):
            sdk.log(sdk.LogLevel.INFO, f"flooding the log {i}")
        for i in range(10000):
            print(f"flooding stdout {i}")
    env, read, connected = -1, False, False
    if what == "escape":
        env = len(os.environ)
        read = try_read("/var/run/secrets/kubernetes.io/serviceaccount/token") or try_read(
            "/etc/hostname"
        )
        connected = try_connect()
    findings.append(
        sdk.finding(
            index,
            [
                ("mode", sdk.text(what)),
                ("env", sdk.signed(env)),
                ("read", sdk.boolean(read)),
                ("connected", sdk.boolean(connected)),
            ],
        )
    )


Detector = sdk.rule(
    sdk.metadata(
        id="FIXTURE-HOSTILE-PY",
        version="0.1.0",
        name="Hostile Python rule",
        event_name="hostile_py",
        tags=["fixture"],
        origin=types.Origin.ANY,
        selects=[types.EventKind.PROCESS_EXEC],
        env_vars=["HOSTILE"],
    ),
    on_event,
)

"""``--address`` checked before any work: a typo or an unreachable Ray cluster is one
line naming the option, not a long hang inside ``ray.init`` followed by a traceback.

Accepted forms (as ``ray.init`` takes them): ``auto`` (the cluster this machine
started, from ``RAY_ADDRESS`` or Ray's ``/tmp/ray/ray_current_cluster``), ``HOST:PORT``
(the GCS address, e.g. ``10.0.0.5:6379``) and ``ray://HOST[:PORT]`` (Ray Client,
default port 10001). The check opens and closes one TCP connection.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

from .errors import UserError

CONNECT_TIMEOUT_S = 3.0


def _split(address: str, default_port: int | None, option: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep:
        host, port = address, ""
    host = host.strip("[]")
    if not port and default_port is not None:
        return host, default_port
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"not a Ray address: {address!r} (expected auto, HOST:PORT or ray://HOST:PORT)",
                        None, option)
    return host, int(port)


def resolve_auto() -> str | None:
    """The address ``auto`` would use, or None when no running cluster is recorded."""
    env = os.environ.get("RAY_ADDRESS")
    if env and env != "auto":
        return env
    current = Path(os.environ.get("RAY_TMPDIR", "/tmp")) / "ray" / "ray_current_cluster"
    try:
        text = current.read_text().strip()
    except OSError:
        return None
    return text or None


LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def is_loopback(address: str) -> bool:
    """True when ``address`` (any accepted form) names a Ray instance on the loopback
    interface, e.g. one nasplat started itself (a driver joining it must use 127.0.0.1 as
    its own address too, see :mod:`nasplat.ray_runtime`)."""
    a = address.strip()
    if a == "auto":
        a = resolve_auto() or ""
    if a.startswith("ray://"):
        a = a[len("ray://"):]
    host = a.rpartition(":")[0] if ":" in a else a
    return host.strip("[]") in LOOPBACK


def check_address(address: str, option: str = "--address") -> None:
    """Raise a one-line UserError unless ``address`` names a reachable Ray cluster."""
    a = address.strip()
    shown = a
    if a == "auto":
        found = resolve_auto()
        if found is None:
            raise UserError("no running Ray cluster found for 'auto' (start one with `ray start --head`, or "
                            "leave --address out for a local instance)", None, option)
        a = found
    if a.startswith("ray://"):
        host, port = _split(a[len("ray://"):], 10001, option)
    elif "://" in a:
        raise UserError(f"not a Ray address: {address!r} (expected auto, HOST:PORT or ray://HOST:PORT)",
                        None, option)
    else:
        host, port = _split(a, None, option)
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise UserError(f"cannot reach a Ray cluster at {shown!r} ({host}:{port}: {reason})", None, option) from None

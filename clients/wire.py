"""The protocol's vocabulary as the Python client uses it (docs/signaling.md): version, error
and close codes, the client's error type, and the small helpers the session needs around it."""

from __future__ import annotations

import ipaddress
import json
import urllib.request
from collections.abc import Callable
from typing import Any

Message = dict[str, Any]

PROTOCOL = 1
# Errors after which the server closes the socket (docs/signaling.md, "Errors").
FATAL_CODES = frozenset({
    "too_large", "join_timeout", "token_missing", "token_invalid", "token_expired",
    "wrong_room", "unsupported_protocol", "room_full", "room_locked", "replaced", "removed",
    "too_many_connections", "unavailable",
})  # fmt: skip
# For a socket closed without an error message first.
CLOSE_CODES = {1009: "too_large", 4001: "token_invalid", 4002: "unsupported_protocol",
                4003: "room_full", 4004: "removed", 4005: "too_many_connections",
                4008: "rate_limited", 4009: "replaced", 4010: "keepalive",
                1013: "unavailable"}  # fmt: skip


class SignalingError(Exception):
    """An `error` from the server, or the session ending; `.code` is the protocol's code."""

    def __init__(self, code: str, message: str = "", re: Any = None) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code, self.message, self.re = code, message, re


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # an mDNS .local name, for one
        return False


def filter_candidates(sdp: str, keep: Callable[[str], bool]) -> str:
    """SDP without the `a=candidate` lines whose address fails `keep`.

    On loopback this drops LAN and mDNS candidates: aioice would try them, and resolving a
    .local name sends multicast DNS off the machine.
    """
    out = []
    for line in sdp.splitlines():
        parts = line.split()
        if line.startswith("a=candidate:") and (len(parts) < 5 or not keep(parts[4])):
            continue
        out.append(line)
    return "\r\n".join(out) + "\r\n"


def get_json(url: str, timeout: float) -> Message:
    # Never through a proxy: the server is reached directly (on loopback nothing else exists).
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as resp:
        data = json.loads(resp.read().decode())
    if not isinstance(data, dict):
        raise SignalingError("bad_info", f"{url} did not return a JSON object")
    return data

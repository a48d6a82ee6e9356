"""The STUN Binding messages of ICE consent checks (RFC 8489, 8445, 7675), sans I/O.

Every connected bridge exchanges a consent check with the server every ~5 s in each direction,
for as long as the conference lasts. aioice handles them with a general STUN codec (attribute
objects, address parsing through `ipaddress`, ~190 µs a check on the development VM); with
thousands of mostly idle bridges that is a fixed cost worth cutting. This codec knows only what
a connected pair's checks carry, works on bytes with `struct`, `hmac` and `zlib` (a few µs),
and leaves everything else (connectivity checks before nomination, role conflicts, errors) to
aioice: `parse` returns None for anything it does not fully understand.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import struct
import zlib
from dataclasses import dataclass

COOKIE = 0x2112A442
BINDING_REQUEST, BINDING_SUCCESS = 0x0001, 0x0101
USERNAME, MESSAGE_INTEGRITY, XOR_MAPPED_ADDRESS = 0x0006, 0x0008, 0x0020
PRIORITY, USE_CANDIDATE = 0x0024, 0x0025
FINGERPRINT, ICE_CONTROLLED, ICE_CONTROLLING = 0x8028, 0x8029, 0x802A
_KNOWN = {USERNAME, MESSAGE_INTEGRITY, XOR_MAPPED_ADDRESS, PRIORITY, USE_CANDIDATE}
_FINGERPRINT_XOR = 0x5354554E
_HEADER = struct.Struct("!HHI12s")
_ATTR = struct.Struct("!HH")
_MI_SIZE, _FP_SIZE = 24, 8  # attribute header + HMAC-SHA1 / CRC-32


@dataclass(frozen=True)
class Binding:
    """A Binding request or success response whose every attribute was understood."""

    kind: int  # BINDING_REQUEST or BINDING_SUCCESS
    transaction: bytes  # 12 bytes
    username: str | None
    controlling: bool  # carries ICE-CONTROLLING
    controlled: bool  # carries ICE-CONTROLLED
    use_candidate: bool
    _signed: bytes  # the message up to MESSAGE-INTEGRITY, length field covering it
    _mac: bytes

    def authentic(self, password: str) -> bool:
        """MESSAGE-INTEGRITY (short-term credentials: the key is the password)."""
        mac = hmac.digest(password.encode(), self._signed, "sha1")
        return hmac.compare_digest(mac, self._mac)


def is_stun(data: bytes) -> bool:
    """RFC 7983 demultiplexing: the first byte of a STUN message is 0-3."""
    return len(data) >= 20 and data[0] < 4


def parse(data: bytes) -> Binding | None:
    """A consent-check Binding request or success response, or None (hand it to aioice).

    None also for anything malformed, unsigned or without a valid FINGERPRINT: the general
    codec decides what to answer to those.
    """
    if len(data) < 20:
        return None
    kind, length, cookie, transaction = _HEADER.unpack_from(data)
    if cookie != COOKIE or kind not in (BINDING_REQUEST, BINDING_SUCCESS) or (
            length + 20 != len(data) or length % 4):
        return None
    username: str | None = None
    controlling = controlled = use_candidate = False
    mi_at = fp_at = -1
    pos = 20
    while pos < len(data):
        if pos + 4 > len(data):
            return None
        attr, size = _ATTR.unpack_from(data, pos)
        value = pos + 4
        end = value + size
        if end > len(data):
            return None
        if mi_at >= 0 and attr != FINGERPRINT:
            return None  # only FINGERPRINT may follow MESSAGE-INTEGRITY
        if attr == USERNAME:
            try:
                username = data[value:end].decode()
            except UnicodeDecodeError:
                return None
        elif attr == MESSAGE_INTEGRITY:
            if size != 20:
                return None
            mi_at = pos
        elif attr == FINGERPRINT:
            if size != 4 or end != len(data):
                return None
            fp_at = pos
        elif attr == ICE_CONTROLLING:
            controlling = True
        elif attr == ICE_CONTROLLED:
            controlled = True
        elif attr == USE_CANDIDATE:
            use_candidate = True
        elif attr < 0x8000 and attr not in _KNOWN:
            return None  # comprehension-required and unknown: aioice answers 420
        pos = end + (-size % 4)
    if mi_at < 0 or fp_at < 0:
        return None
    (crc,) = struct.unpack_from("!I", data, fp_at + 4)
    if crc != (zlib.crc32(data[:fp_at]) ^ _FINGERPRINT_XOR):
        return None
    signed = bytearray(data[:mi_at])
    struct.pack_into("!H", signed, 2, mi_at + _MI_SIZE - 20)
    return Binding(kind, transaction, username, controlling, controlled, use_candidate,
                   bytes(signed), data[mi_at + 4 : mi_at + 24])


def binding_success(transaction: bytes, addr: tuple[str, int], password: str) -> bytes:
    """The answer to a request from `addr`: XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY,
    FINGERPRINT (RFC 8445 §7.3.1)."""
    return _finish(BINDING_SUCCESS, transaction, _xor_address(addr, transaction), password)


def binding_request(transaction: bytes, username: str, priority: int, controlling: bool,
                    tie_breaker: int, password: str) -> bytes:
    """A consent check (RFC 7675): USERNAME "remote:local", PRIORITY, our role, signed with
    the remote password."""
    name = username.encode()
    attrs = _attr(USERNAME, name) + _attr(PRIORITY, struct.pack("!I", priority))
    attrs += _attr(ICE_CONTROLLING if controlling else ICE_CONTROLLED,
                   struct.pack("!Q", tie_breaker))
    return _finish(BINDING_REQUEST, transaction, attrs, password)


def _attr(kind: int, value: bytes) -> bytes:
    return _ATTR.pack(kind, len(value)) + value + b"\0" * (-len(value) % 4)


@functools.lru_cache(maxsize=4096)
def _packed(host: str) -> bytes:
    return ipaddress.ip_address(host).packed  # a connection's peer: the same few, cached


def _xor_address(addr: tuple[str, int], transaction: bytes) -> bytes:
    packed = _packed(addr[0])
    port = addr[1] ^ (COOKIE >> 16)
    key = struct.pack("!I", COOKIE) + (transaction if len(packed) == 16 else b"")
    raw = bytes(a ^ b for a, b in zip(packed, key, strict=False))
    family = 0x01 if len(packed) == 4 else 0x02
    return _attr(XOR_MAPPED_ADDRESS, struct.pack("!BBH", 0, family, port) + raw)


def _finish(kind: int, transaction: bytes, attrs: bytes, password: str) -> bytes:
    head = _HEADER.pack(kind, len(attrs) + _MI_SIZE, COOKIE, transaction) + attrs
    mac = hmac.digest(password.encode(), head, "sha1")
    signed = head + _ATTR.pack(MESSAGE_INTEGRITY, 20) + mac
    signed = signed[:2] + struct.pack("!H", len(signed) - 20 + _FP_SIZE) + signed[4:]
    crc = zlib.crc32(signed) ^ _FINGERPRINT_XOR
    return signed + _ATTR.pack(FINGERPRINT, 4) + struct.pack("!I", crc)

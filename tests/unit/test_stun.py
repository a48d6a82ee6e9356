"""sfu.core.stun against aioice's STUN codec (the one the clients' aiortc uses)."""

from __future__ import annotations

import os
import struct

import aioice.stun as aio
import pytest

from sfu.core import stun

PASSWORD = "local-password-0123456789"


def aioice_check(*, username: str = "local:remote", controlling: bool = True,
                 use_candidate: bool = False, password: str = PASSWORD) -> aio.Message:
    m = aio.Message(message_method=aio.Method.BINDING, message_class=aio.Class.REQUEST)
    m.attributes["USERNAME"] = username
    m.attributes["PRIORITY"] = 1853824767
    m.attributes["ICE-CONTROLLING" if controlling else "ICE-CONTROLLED"] = 0x1122334455667788
    if use_candidate:
        m.attributes["USE-CANDIDATE"] = None
    m.add_message_integrity(password.encode())
    m.add_fingerprint()
    return m


def without_fingerprint() -> bytes:
    data = bytearray(bytes(aioice_check())[:-8])
    struct.pack_into("!H", data, 2, len(data) - 20)
    return bytes(data)


def test_a_consent_check_from_aioice_is_understood_and_authenticated() -> None:
    m = aioice_check()
    b = stun.parse(bytes(m))
    assert b is not None
    assert (b.kind, b.transaction, b.username) == (stun.BINDING_REQUEST, m.transaction_id,
                                                    "local:remote")
    assert b.controlling and not b.controlled and not b.use_candidate
    assert b.authentic(PASSWORD) and not b.authentic("another-password")
    nominating = stun.parse(bytes(aioice_check(controlling=False, use_candidate=True)))
    assert nominating is not None and nominating.controlled and nominating.use_candidate


@pytest.mark.parametrize("host", ["127.0.0.1", "203.0.113.7", "::1", "2001:db8::42"])
def test_our_answer_is_a_signed_success_aioice_accepts(host: str) -> None:
    transaction = os.urandom(12)
    data = stun.binding_success(transaction, (host, 50123), PASSWORD)
    r = aio.parse_message(data)
    assert r.message_class == aio.Class.RESPONSE and r.transaction_id == transaction
    assert r.attributes["XOR-MAPPED-ADDRESS"] == (host, 50123)
    assert r.check_message_integrity(PASSWORD.encode())
    assert "FINGERPRINT" in r.attributes
    ours = stun.parse(data)  # and ours reads it back
    assert ours is not None and ours.kind == stun.BINDING_SUCCESS and ours.authentic(PASSWORD)


@pytest.mark.parametrize("controlling", [True, False])
def test_our_consent_check_is_one_aioice_accepts(controlling: bool) -> None:
    transaction = os.urandom(12)
    data = stun.binding_request(transaction, "remote:local", 99, controlling, 7, PASSWORD)
    q = aio.parse_message(data)
    assert q.message_class == aio.Class.REQUEST and q.transaction_id == transaction
    assert q.attributes["USERNAME"] == "remote:local" and q.attributes["PRIORITY"] == 99
    assert q.attributes["ICE-CONTROLLING" if controlling else "ICE-CONTROLLED"] == 7
    assert q.check_message_integrity(PASSWORD.encode())


def unknown_required_attribute() -> bytes:
    data = bytearray(without_fingerprint())
    body = struct.pack("!HH", 0x0013, 4) + b"data"  # DATA: comprehension-required, not ours
    struct.pack_into("!H", data, 2, len(data) - 20 + len(body))
    return bytes(data[:20] + body + data[20:])


def broken_fingerprint() -> bytes:
    data = bytearray(bytes(aioice_check()))
    data[-1] ^= 1
    return bytes(data)


@pytest.mark.parametrize("data", [
    b"",
    b"\x00\x01\x00\x00" + b"\0" * 16,  # wrong magic cookie
    bytes(aioice_check())[:-4],  # length field says more than there is
    without_fingerprint(),  # aioice's to judge
    broken_fingerprint(),
    unknown_required_attribute(),
    bytes(aio.Message(message_method=aio.Method.BINDING, message_class=aio.Class.INDICATION)),
    b"\x16\xfe\xfd" + b"\0" * 30,  # a DTLS record
], ids=["empty", "cookie", "truncated", "no-fingerprint", "bad-fingerprint", "unknown-attr",
        "indication", "dtls"])
def test_what_it_does_not_fully_understand_is_left_to_aioice(data: bytes) -> None:
    assert stun.parse(data) is None


def test_demultiplexing_tells_stun_from_dtls_and_srtp() -> None:
    assert stun.is_stun(bytes(aioice_check()))
    assert not stun.is_stun(b"\x16\xfe\xfd" + b"\0" * 30)
    assert not stun.is_stun(b"\x80\x60" + b"\0" * 30)

"""sfu.fastpath: the C fan-out helper and its pure-Python fallback, run by the same tests.

Real parts only: pylibsrtp sessions with a known key, `Consumer`s configured through the real
`SrtpPath` on real asyncio datagram transports (the ICE pair is the only stand-in), and plain UDP
sockets on 127.0.0.1 that receive, unprotect with the matching inbound session and check every
header field and payload byte. The C cases skip only when the helper is not built; the last tests
check that installing builds it, and that a broken compiler does not break the install.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from pylibsrtp import Policy, Session

from sfu import fastpath
from sfu.adapters.aiortc_tap import Negotiated, SrtpPath
from sfu.config import SfuConfig
from sfu.consumer import Consumer
from sfu.core.rtp import URI_ABS_SEND_TIME, URI_MID, RtpHeader, build_extensions, parse_into
from sfu.producer import Producer, Source
from sfu.router import TrackInfo

REPO = Path(__file__).resolve().parents[2]
KEY = bytes(range(44))  # AEAD_AES_256_GCM: 32-byte key + 12-byte salt
PROFILE = Policy.SRTP_PROFILE_AEAD_AES_256_GCM
HDR = struct.Struct("!BBHII")
VP8_KEY = b"\x10\x50\x02\x00\x9d\x01\x2a" + bytes(50)  # descriptor S=1, then P=0 (key)
VP8_DELTA = b"\x10\x51" + bytes(50)  # P=1


def tx_session(key: bytes = KEY) -> Session:
    return Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=PROFILE))


def rx_session(key: bytes = KEY) -> Session:
    return Session(Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=PROFILE))


@dataclass
class Peer:
    """One subscriber connection: our sending transport, its receiving socket, its consumer."""

    consumer: Consumer
    transport: asyncio.DatagramTransport
    rx: socket.socket
    rx_srtp: Session
    pair: SimpleNamespace

    def receive(self) -> bytes:
        return self.rx_srtp.unprotect(self.rx.recv(4096))

    def nothing_waiting(self) -> bool:
        self.rx.setblocking(False)
        try:
            self.rx.recv(4096)
        except BlockingIOError:
            return True
        finally:
            self.rx.settimeout(2.0)
        return False


def receiver(host: str = "127.0.0.1") -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.bind((host, 0))
    s.settimeout(2.0)
    return s


async def make_peer(i: int, key: bytes = KEY, host: str = "127.0.0.1",
                    producer: Any = None, mid: str | None = None) -> Peer:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=(host, 0))
    rx = receiver(host)
    pair = SimpleNamespace(protocol=SimpleNamespace(transport=transport),
                           remote_addr=rx.getsockname()[:2])
    dtls = SimpleNamespace(_tx_srtp=tx_session(key),
                           transport=SimpleNamespace(_connection=SimpleNamespace(
                               _nominated={1: pair})))
    if producer is None:
        producer = SimpleNamespace(track=SimpleNamespace(id="pub/camera"))
    c = Consumer(producer, f"sub{i}", random.Random(i))
    neg = Negotiated(
        mid=str(i) if mid is None else mid, kind="video",
        codec=RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000,
                                    payloadType=96 + i % 32),
        rtx_payload_type=0, extensions={URI_MID: 1, URI_ABS_SEND_TIME: 3},
        payload_types=frozenset({96 + i % 32}))
    c.configure(neg, 0x10000000 + i * 0x01010101, 0, SrtpPath(dtls))  # type: ignore[arg-type]
    # Offsets chosen so seq and ts both wrap for some consumers.
    c.seq_off = (0xFFF0 + 7 * i) & 0xFFFF
    c.ts_off = (0xFFFFFF00 + 123456 * i) & 0xFFFFFFFF
    return Peer(c, transport, rx, rx_session(key), pair)


def close_all(peers: list[Peer]) -> None:
    for p in peers:
        p.transport.close()
        p.rx.close()


def check(p: Peer, data: bytes, b0: int, mark: int, seq: int, ts: int, tail: bytes) -> None:
    c = p.consumer
    got_b0, b1, got_seq, got_ts, ssrc = HDR.unpack_from(data)
    assert got_b0 == b0
    assert b1 == (mark | c.pt)
    assert got_seq == (seq + c.seq_off) & 0xFFFF
    assert got_ts == (ts + c.ts_off) & 0xFFFFFFFF
    assert ssrc == c.ssrc
    assert data[12:] == tail  # extension block and every payload byte


def received_all(peers: list[Peer], batch: list[tuple[bytes, int, int, int, int]]) -> None:
    """Every peer got exactly the batch's packets, in order, byte for byte."""
    for p in peers:
        for tail, b0, mark, seq, ts in batch:
            check(p, p.receive(), b0, mark, seq, ts, tail)
        assert p.nothing_waiting()


def packet_tail(i: int, size: int = 1000) -> bytes:
    ext = build_extensions(1, b"7", 3, bytes([i & 0xFF, 2, 3]), 0, -1)
    return ext + bytes((i * 31 + k) & 0xFF for k in range(size))


# ------------------------------------------------------------------------------ both paths


async def test_every_header_field_and_payload_byte(native: bool) -> None:
    peers = [await make_peer(i) for i in range(3)]
    try:
        g = fastpath.FastGroup([p.consumer for p in peers], native=native)
        assert g.native == native and len(g) == 3
        if native:
            assert g.native_count == 3  # all of them through C, none left to Python
        seq, ts = 0xFFFD, 0xFFFFF000  # the input wraps too
        for k in range(6):
            tail = packet_tail(k, 200 + 150 * k)
            b0 = 0x90 if k % 3 else 0xB0  # extension bit; padding bit on some
            mark = 0x80 if k % 2 else 0
            s, t = (seq + k) & 0xFFFF, (ts + 3000 * k) & 0xFFFFFFFF
            assert g.send(tail, b0, mark, s, t) == 3
            for p in peers:
                check(p, p.receive(), b0, mark, s, t, tail)
        assert g.errors == 0 and not g.failed
    finally:
        close_all(peers)


async def test_update_offsets_after_a_resync(native: bool) -> None:
    peers = [await make_peer(i) for i in range(2)]
    try:
        g = fastpath.FastGroup([p.consumer for p in peers], native=native)
        tail = packet_tail(1)
        g.send(tail, 0x90, 0, 100, 5000)
        for p in peers:
            p.receive()
        for p in peers:  # what Consumer.sync_to_source does to them on a source switch
            p.consumer.sync_to_source(100, 5000, 1.0, 40000, 123, 1.02, 90000)
        g.update_offsets()
        assert g.send(tail, 0x90, 0x80, 40000, 123) == 2
        for p in peers:  # the new offsets are in use (continuity itself: test_munger)
            check(p, p.receive(), 0x90, 0x80, 40000, 123, tail)
    finally:
        close_all(peers)


async def test_refresh_follows_a_new_ice_pair(native: bool) -> None:
    peers = [await make_peer(i) for i in range(2)]
    moved = receiver()
    loop = asyncio.get_running_loop()
    new_transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
    try:
        g = fastpath.FastGroup([p.consumer for p in peers], native=native)
        for p in peers:
            p.consumer.refresh_path()  # what the router does every second
        assert g.refresh() is False  # nothing moved: nothing rebuilt
        p0 = peers[0]
        # ICE restart: the nominated pair is now another local socket and remote address.
        p0.pair.protocol = SimpleNamespace(transport=new_transport)
        p0.pair.remote_addr = moved.getsockname()
        p0.consumer.path._pair = None  # type: ignore[union-attr]  # force SrtpPath to re-read
        p0.consumer.refresh_path()
        assert g.refresh() is native  # the Python path reads the consumer live
        tail = packet_tail(2)
        assert g.send(tail, 0x90, 0, 7, 9) == 2
        check(p0, p0.rx_srtp.unprotect(moved.recv(4096)), 0x90, 0, 7, 9, tail)
        assert p0.nothing_waiting()
        check(peers[1], peers[1].receive(), 0x90, 0, 7, 9, tail)
    finally:
        new_transport.close()
        moved.close()
        close_all(peers)


async def test_a_failing_destination_drops_only_its_packet(native: bool) -> None:
    peers = [await make_peer(i) for i in range(3)]
    try:
        bad = peers[1]
        # Broadcast without SO_BROADCAST: sendto fails with EACCES on every send.
        bad.pair.remote_addr = ("255.255.255.255", 9)
        bad.consumer.path._pair = None  # type: ignore[union-attr]
        bad.consumer.refresh_path()
        g = fastpath.FastGroup([p.consumer for p in peers], native=native)
        tail = packet_tail(3)
        sent = g.send(tail, 0x90, 0, 1, 2)
        for p in (peers[0], peers[2]):
            check(p, p.receive(), 0x90, 0, 1, 2, tail)
        if native:
            assert sent == 2 and g.errors == 1
            errors, errno = g.errors_by_consumer()[bad.consumer]
            assert (errors, errno) == (1, 13)  # EACCES
        else:
            assert sent == 3  # asyncio swallows the OSError (error_received): counted as sent
        assert not g.failed
    finally:
        close_all(peers)


async def test_oversize_packets_are_dropped_and_counted(native: bool) -> None:
    peers = [await make_peer(i) for i in range(2)]
    try:
        g = fastpath.FastGroup([p.consumer for p in peers], native=native)
        biggest = fastpath.MAX_PACKET - 12  # tail bytes that still leave room for the SRTP tag
        assert g.send(b"\0" * (biggest + 1), 0x80, 0, 1, 1) == 0
        assert g.errors == 2
        assert g.send(b"\1" * biggest, 0x80, 0, 1, 1) == 2
        for p in peers:  # too long for pylibsrtp's unprotect buffer: check length and header
            data = p.rx.recv(4096)
            assert len(data) == fastpath.MAX_PACKET + 16  # + the AES-GCM tag
            c = p.consumer
            assert HDR.unpack_from(data) == (0x80, c.pt, (1 + c.seq_off) & 0xFFFF,
                                             (1 + c.ts_off) & 0xFFFFFFFF, c.ssrc)
        tail = packet_tail(7, 1400)  # and the largest a publisher really sends goes through
        assert g.send(tail, 0x90, 0, 2, 2) == 2
        for p in peers:
            check(p, p.receive(), 0x90, 0, 2, 2, tail)
    finally:
        close_all(peers)


async def test_a_batch_reaches_every_consumer_in_order(native: bool) -> None:
    peers = [await make_peer(i) for i in range(3)]
    try:
        g = fastpath.FastGroup([p.consumer for p in peers], native=native)
        # More than one C call's worth (MAX_BATCH), wrapping seq and ts, mixed sizes and flags.
        batch = [(packet_tail(k, 100 + 37 * k), 0x90 if k % 3 else 0xB0, k % 2 * 0x80,
                  (0xFFF0 + k) & 0xFFFF, (0xFFFFFF00 + 3000 * k) & 0xFFFFFFFF)
                 for k in range(fastpath.MAX_BATCH + 5)]
        assert g.send_batch(batch) == 3 * len(batch)
        received_all(peers, batch)
        assert g.errors == 0 and not g.failed
    finally:
        close_all(peers)


async def test_an_oversize_packet_in_a_batch_drops_only_itself(native: bool) -> None:
    peers = [await make_peer(i) for i in range(2)]
    try:
        g = fastpath.FastGroup([p.consumer for p in peers], native=native)
        good = [(packet_tail(k), 0x90, 0, 10 + k, 20 + k) for k in range(3)]
        huge = (b"\0" * fastpath.MAX_PACKET, 0x80, 0, 99, 99)
        assert g.send_batch([good[0], huge, good[1], good[2]]) == 2 * 3
        assert g.errors == 2  # the huge one, once per consumer
        for p in peers:
            for item in good:
                check(p, p.receive(), *item[1:], item[0])
            assert p.nothing_waiting()
    finally:
        close_all(peers)


def out_seq_ts(got: bytes, sent: bytes) -> tuple[int, int]:
    """(seq, ts) of a packet the producer forwarded; its payload must be the one sent."""
    assert got.endswith(sent[12:])
    return HDR.unpack_from(got)[2], HDR.unpack_from(got)[3]


def rtp(seq: int, ts: int, payload: bytes, mark: int = 0) -> tuple[bytes, RtpHeader]:
    data = HDR.pack(0x80, mark | 96, seq, ts, 0xAAAA) + payload
    h = RtpHeader()
    assert parse_into(h, data)
    return data, h


async def test_producer_batch_admits_a_resuming_consumer_at_the_keyframe(
        native: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # What the ingress does with packets that arrived together: queue the fan-out, send each
    # consumer its share at flush. A keyframe inside the batch regroups (a paused consumer
    # joins): what was queued before must go out with the old groups, and the joiner must get
    # exactly the packets from the keyframe on.
    monkeypatch.setattr(fastpath, "AVAILABLE", native)
    track = TrackInfo("pub/camera", "pub", "video", "camera", "VP8")
    producer = Producer(track, 90000, SfuConfig(), random.Random(1))
    src = Source(96, 0, 0)
    src.ssrc = 0xAAAA
    producer.bind_source(src)
    peers = [await make_peer(i, producer=producer) for i in range(2)]
    try:
        watching, paused = peers[0].consumer, peers[1].consumer
        for c in (watching, paused):
            producer.add_consumer(c, 1.0)
        first, h = rtp(1000, 9000, VP8_KEY)
        producer.on_rtp(first, h, 1.0)  # unbatched: both get it at once
        before = [out_seq_ts(p.receive(), first) for p in peers]
        producer.pause(paused)
        producer.resume(paused, 1.1)  # back: joins at the next keyframe
        packets = [rtp(1001, 12000, VP8_DELTA, 0x80), rtp(1002, 15000, VP8_KEY),
                   rtp(1003, 15000, VP8_DELTA, 0x80)]
        producer.batching = True
        for data, h in packets:
            producer.on_rtp(data, h, 1.2)
        producer.batching = False
        # The keyframe regrouped mid-batch, which first sent the delta frame queued for the
        # old group (the watching consumer only).
        assert out_seq_ts(peers[0].receive(), packets[0][0]) == (
            (before[0][0] + 1) & 0xFFFF, (before[0][1] + 3000) & 0xFFFFFFFF)
        assert peers[1].nothing_waiting()
        producer.flush()
        for p, start in zip(peers, before, strict=True):
            got = [out_seq_ts(p.receive(), data) for data, _ in packets[1:]]
            assert p.nothing_waiting()
            if p is peers[0]:
                assert [s for s, _ in got] == [(start[0] + k) & 0xFFFF for k in (2, 3)]
            else:  # the joiner continues from its pause point: no gap, no repeat
                assert [s for s, _ in got] == [(start[0] + k) & 0xFFFF for k in (1, 2)]
            assert got[0][1] == got[1][1]  # one frame: one timestamp
        assert producer.forwarded == 2 + 1 + 2 + 2
    finally:
        close_all(peers)


# ------------------------------------------------------------------------------ C specifics


@pytest.mark.usefixtures("sends")
@pytest.mark.skipif(not fastpath.COMPILED, reason=fastpath.reason())
async def test_c_and_python_put_the_same_bytes_on_the_wire() -> None:
    # Same key, fresh sessions on both sides: AES-GCM is deterministic per (key, ssrc, index),
    # so the two paths must produce identical SRTP packets, tag included.
    c_peers = [await make_peer(i) for i in range(3)]
    py_peers = [await make_peer(i) for i in range(3)]
    try:
        g_c = fastpath.FastGroup([p.consumer for p in c_peers], native=True)
        g_py = fastpath.FastGroup([p.consumer for p in py_peers], native=False)
        for k in range(4):
            tail = packet_tail(k, 1100)
            assert g_c.send(tail, 0x90, k % 2 * 0x80, 500 + k, 9000 * k) == 3
            assert g_py.send(tail, 0x90, k % 2 * 0x80, 500 + k, 9000 * k) == 3
            for a, b in zip(c_peers, py_peers, strict=True):
                assert a.rx.recv(4096) == b.rx.recv(4096)
        batch = [(packet_tail(k, 900), 0x90, 0, 600 + k, 7000 * k) for k in range(5)]
        assert g_c.send_batch(batch) == g_py.send_batch(batch) == 15  # sendmmsg, byte-equal
        for _ in batch:
            for a, b in zip(c_peers, py_peers, strict=True):
                assert a.rx.recv(4096) == b.rx.recv(4096)
    finally:
        close_all(c_peers + py_peers)


@pytest.mark.usefixtures("sends")
@pytest.mark.skipif(not fastpath.COMPILED, reason=fastpath.reason())
async def test_consumers_c_cannot_address_go_through_python() -> None:
    peers = [await make_peer(i) for i in range(3)]
    plain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        odd = peers[2].consumer
        odd.sendto = plain.sendto  # not an asyncio transport: no socket to borrow
        g = fastpath.FastGroup([p.consumer for p in peers], native=True)
        assert g.native_count == 2
        tail = packet_tail(4)
        assert g.send(tail, 0x90, 0, 11, 22) == 3
        for p in peers:
            check(p, p.receive(), 0x90, 0, 11, 22, tail)
    finally:
        plain.close()
        close_all(peers)


@pytest.mark.usefixtures("sends")
@pytest.mark.skipif(not fastpath.COMPILED, reason=fastpath.reason())
async def test_a_closed_connection_never_reaches_a_reused_fd() -> None:
    peers = [await make_peer(i) for i in range(2)]
    try:
        g = fastpath.FastGroup([p.consumer for p in peers], native=True)
        old_fd = peers[0].transport.get_extra_info("socket").fileno()
        peers[0].transport.close()
        await asyncio.sleep(0)  # asyncio closes the socket on the next loop iteration
        await asyncio.sleep(0)
        # The next socket opened gets the lowest free fd, typically old_fd: the group must not
        # be holding that number, or its next send would go out through the newcomer.
        newcomer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            fds = {g._entries[i].fd for i in range(g.native_count)}
            assert newcomer.fileno() not in fds and old_fd not in fds
            tail = packet_tail(5)
            assert g.send(tail, 0x90, 0, 1, 1) == 2  # still its own (dup'd) socket
            check(peers[0], peers[0].receive(), 0x90, 0, 1, 1, tail)
            g.refresh()  # a closing transport now goes through Python (asyncio drops it)
            assert g.native_count == 1
        finally:
            newcomer.close()
    finally:
        close_all(peers)


@pytest.mark.usefixtures("sends")
@pytest.mark.skipif(not fastpath.COMPILED, reason=fastpath.reason())
async def test_ipv6_destinations() -> None:
    try:
        receiver("::1").close()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    peers = [await make_peer(i, host="::1") for i in range(2)]
    try:
        g = fastpath.FastGroup([p.consumer for p in peers], native=True)
        assert g.native_count == 2
        tail = packet_tail(6)
        assert g.send(tail, 0x90, 0x80, 3, 4) == 2
        for p in peers:
            check(p, p.receive(), 0x90, 0x80, 3, 4, tail)
    finally:
        close_all(peers)


def test_forcing_c_without_the_module_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastpath, "_lib", None)
    with pytest.raises(RuntimeError):
        fastpath.FastGroup([], native=True)


# ------------------------------------------------------------------------------ selection, build


def test_env_var_forces_the_python_path() -> None:
    code = ("import sfu.fastpath as f; g = f.FastGroup([]); "
            "print(f.AVAILABLE, f.DISABLED, g.native, f.reason())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "HOINGHI_FASTPATH": "0"}, cwd=REPO, check=True)
    assert out.stdout.split()[:3] == ["False", "True", "False"]


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")


@pytest.mark.skipif(_compiler() is None, reason="no C compiler on this machine")
def test_the_install_built_the_helper() -> None:
    # `pip install -e '.[test]'` (what `make test` runs) compiles it wherever a compiler exists.
    assert fastpath.COMPILED, "sfu.fastpath._fanout missing: rerun pip install -e '.[test]'"
    assert fastpath._protect_is_libsrtp2()


def _build_ext(tmp: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "setup.py", "build_ext", "-b", str(tmp / "lib"), "-t", str(tmp / "tmp")],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, **env}, timeout=300)


@pytest.mark.skipif(_compiler() is None, reason="no C compiler on this machine")
def test_setup_py_builds_the_extension(tmp_path: Path) -> None:
    done = _build_ext(tmp_path)
    assert done.returncode == 0, done.stderr
    assert list((tmp_path / "lib" / "sfu" / "fastpath").glob("_fanout*.so"))


def test_setup_py_survives_a_broken_compiler(tmp_path: Path) -> None:
    done = _build_ext(tmp_path, CC="false")
    assert done.returncode == 0, done.stderr
    assert "optional C fan-out helper not built" in done.stderr
    assert not list(tmp_path.rglob("_fanout*.so"))

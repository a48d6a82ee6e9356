"""aiortc peers for the benchmark's own processes: loopback-only, and cheap packet counting.

The light subscribers must not be the bottleneck: stock aiortc runs every received packet through
RtpPacket.parse, the receiver's jitter buffer, NACK/REMB bookkeeping and a decoder thread. We
replace the DTLS transport's `_handle_rtp_data` (called with the SRTP-*decrypted* datagram) with a
counter that reads the 12-byte header only. Decryption is kept on purpose: it proves each packet
was a valid SRTP packet for this very connection, not just a datagram that reached the port.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.rtcconfiguration import RTCBundlePolicy

from bench.lossy import Dropper, Nacker
from sfu.adapters.aiortc_tap import set_ice_hosts
from sfu.core.rtcp import ReportBlock, build_nack, build_rr

_RTP_HEADER = struct.Struct("!BBHII")  # v/p/x/cc, m/pt, seq, ts, ssrc
_CANDIDATE = re.compile(r"^a=candidate:\S+ \d+ \S+ \d+ (\S+) \d+ typ", re.MULTILINE)

RtpHandler = Callable[[bytes, int], Awaitable[None]]
NackSender = Callable[[int, list[int]], Awaitable[None]]  # (media SSRC, lost sequence numbers)


def loopback_pc() -> RTCPeerConnection:
    # The only sanctioned way to make aioice offer 127.0.0.1 (it skips loopback by itself).
    set_ice_hosts(["127.0.0.1"])
    # iceServers given explicitly: left unset, aiortc adds a public Google STUN server.
    return RTCPeerConnection(
        RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
    )


def candidate_addresses(sdp: str) -> list[str]:
    return _CANDIDATE.findall(sdp)


def require_loopback(sdp: str, who: str) -> None:
    """Refuse an SDP whose ICE candidates are not all 127.0.0.1.

    A figure taken over a real NIC, or a run that silently fell back to another interface, is not
    the loopback benchmark it claims to be.
    """
    addrs = candidate_addresses(sdp)
    if not addrs:
        raise RuntimeError(f"{who}: SDP has no ICE candidates")
    bad = sorted({a for a in addrs if a != "127.0.0.1"})
    if bad:
        raise RuntimeError(f"{who}: SDP has non-loopback candidates {bad}")


def dtls_transports(pc: RTCPeerConnection) -> list[Any]:
    seen: dict[int, Any] = {}
    for tr in pc.getTransceivers():
        for t in (tr.receiver.transport, tr.sender.transport):
            if t is not None:
                seen[id(t)] = t
    return list(seen.values())


def hook_rtp(pc: RTCPeerConnection, make_handler: Callable[[RtpHandler], RtpHandler]) -> None:
    """Install make_handler(original) as every DTLS transport's decrypted-RTP entry point.

    Call after setRemoteDescription and before setLocalDescription/answer: the transports exist
    by then and no media can have arrived. Idempotent (renegotiations call it again).
    """
    for t in dtls_transports(pc):
        if getattr(t, "_bench_hooked", False):
            continue
        t._handle_rtp_data = make_handler(t._handle_rtp_data)
        t._bench_hooked = True


# Linux's SO_TIMESTAMPNS (== SCM_TIMESTAMPNS) on asm-generic and x86; Python does not export it.
_SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("qq")
_SEQ_SSRC = struct.Struct("!H4xI")


def kernel_receive_times(pc: RTCPeerConnection, store: dict[tuple[int, int], float]) -> int:
    """Record the kernel's receive time (SO_TIMESTAMPNS) of every SRTP packet, by (ssrc, seq).

    Why: an arrival time read in Python includes however long this (busy, shared-core) process
    took to get to the packet; the kernel's timestamp is when the datagram reached the socket,
    which is what "latency through the server" means. SRTP leaves the RTP header in clear, so
    packets are keyed before decryption. Replaces the asyncio reader of each ICE socket with an
    equivalent one that uses recvmsg. Returns the number of sockets hooked (0: not available).
    """
    loop: Any = asyncio.get_running_loop()
    # The private selector-loop calls: the public ones refuse an fd a transport owns. The
    # transport's own close() later removes our reader like it would have removed its own.
    if not hasattr(loop, "_add_reader"):
        return 0
    hooked = 0
    for t in dtls_transports(pc):
        connection = getattr(t.transport, "_connection", None)
        for protocol in getattr(connection, "_protocols", []):
            transport = protocol.transport
            sock = getattr(transport, "_sock", None)
            if sock is None:
                continue
            try:
                sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
            except OSError:
                continue
            fd = sock.fileno()
            loop._remove_reader(fd)
            loop._add_reader(fd, _read_with_timestamp, sock, protocol, store)
            hooked += 1
    return hooked


def _read_with_timestamp(sock: socket.socket, protocol: Any,
                         store: dict[tuple[int, int], float]) -> None:
    # Mirrors asyncio's datagram transport reader (_SelectorDatagramTransport._read_ready).
    try:
        data, ancdata, _, addr = sock.recvmsg(65536, 64)
    except (BlockingIOError, InterruptedError):
        return
    except OSError as exc:
        protocol.error_received(exc)
        return
    if len(data) >= 12 and 128 <= data[0] < 192 and not 192 <= data[1] <= 223:
        for level, kind, cdata in ancdata:
            if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS:
                sec, nsec = _TIMESPEC.unpack(cdata[:16])
                seq, ssrc = _SEQ_SSRC.unpack_from(data, 2)
                store[(ssrc, seq)] = sec + nsec * 1e-9
                if len(store) > 8000:  # bounded: the decoder needs only the last second
                    for key in list(store)[:4000]:
                        del store[key]
    protocol.datagram_received(data, addr)


class SsrcCounter:
    """RTP loss accounting for one SSRC, RFC 3550 style (extended highest seq − first + 1)."""

    __slots__ = ("base", "bytes", "max_ext", "received", "reordered", "reported")

    def __init__(self, seq: int) -> None:
        self.base = seq
        self.max_ext = seq
        self.received = 0
        self.bytes = 0
        self.reordered = 0
        self.reported = (0, 0)  # (expected, received) at the last receiver report

    def add(self, seq: int, size: int) -> None:
        self.received += 1
        self.bytes += size
        delta = (seq - self.max_ext) & 0xFFFF
        if delta < 0x8000:
            self.max_ext += delta
        else:
            self.reordered += 1  # late or duplicate: counted as received, moves nothing

    @property
    def expected(self) -> int:
        return self.max_ext - self.base + 1

    def report_block(self, ssrc: int) -> ReportBlock:
        """RFC 3550 §6.4.1 / A.3, since the last report (jitter and LSR are not tracked)."""
        expected, received = self.expected, self.received
        interval = expected - self.reported[0]
        lost = interval - (received - self.reported[1])
        self.reported = (expected, received)
        fraction = (lost << 8) // interval if interval > 0 and lost > 0 else 0
        cumulative = max(-0x800000, min(0x7FFFFF, expected - received))
        return ReportBlock(ssrc, fraction, cumulative, self.max_ext & 0xFFFFFFFF, 0, 0, 0)


class RtpCounter:
    """Counts packets per SSRC for one subscriber. Optionally records video arrival times."""

    def __init__(self) -> None:
        self.ssrcs: dict[int, SsrcCounter] = {}
        # RTP timestamp -> (kernel, app) wall times the latest packet of that frame arrived
        # (decoders only); kernel is None when the socket gave no timestamp.
        self.arrivals: dict[int, tuple[float | None, float]] | None = None
        self.kernel_times: dict[tuple[int, int], float] = {}
        self.video_pts: set[int] = set()
        self.rtx_pts: set[int] = set()
        # RTP timestamp -> (sequence numbers that arrived, the marker packet's), decoders only:
        # whether a damaged picture had all its packets (`frame_complete`).
        self.frames: dict[int, tuple[set[int], list[int]]] | None = None
        # `bench forward --loss` (bench/lossy.py): packets dropped on arrival, and for a light
        # subscriber its NACKs (one Nacker per video SSRC, sent through `send_nack`).
        self.dropper: Dropper | None = None
        self.nackers: dict[int, Nacker] | None = None
        self.send_nack: NackSender | None = None
        self.nacks = 0  # NACK packets sent

    def handler(self, decode: bool) -> Callable[[RtpHandler], RtpHandler]:
        """A hook factory for hook_rtp. decode=False: count only, aiortc never sees the packet."""
        unpack = _RTP_HEADER.unpack_from
        ssrcs = self.ssrcs

        def make(orig: RtpHandler) -> RtpHandler:
            forward = orig if decode else None

            async def on_rtp(data: bytes, arrival_time_ms: int) -> None:
                if len(data) < 12:
                    return
                dropper = self.dropper
                if dropper is not None and dropper.drop():
                    return  # lost on the way: neither counted nor seen by aiortc
                _, mpt, seq, ts, ssrc = unpack(data)
                c = ssrcs.get(ssrc)
                if c is None:
                    c = ssrcs[ssrc] = SsrcCounter(seq)
                c.add(seq, len(data))
                arrivals = self.arrivals
                if arrivals is not None and (mpt & 0x7F) in self.video_pts:
                    arrivals[ts] = (self.kernel_times.get((ssrc, seq)), time.time())
                    if len(arrivals) > 2000:
                        # Bounded: only the last seconds matter to a decoder that keeps up.
                        for k in list(arrivals)[:1000]:
                            del arrivals[k]
                    self._frame_packet(ts, seq, mpt & 0x80)
                elif arrivals is not None and (mpt & 0x7F) in self.rtx_pts:
                    osn = rtx_original_seq(data)  # RFC 4588: same timestamp and marker
                    if osn is not None:
                        self._frame_packet(ts, osn, mpt & 0x80)
                if self.nackers is not None:
                    await self._nack(self.nackers, mpt & 0x7F, seq, ssrc, data)
                if forward is not None:
                    await forward(data, arrival_time_ms)

            return on_rtp

        return make

    async def _nack(self, nackers: dict[int, Nacker], pt: int, seq: int, ssrc: int,
                    data: bytes) -> None:
        """A light subscriber's NACKs: gaps in a video stream are asked for, RTX fills them."""
        now = time.monotonic()
        if pt in self.video_pts:
            nacker = nackers.get(ssrc)
            if nacker is None:
                nacker = nackers[ssrc] = Nacker()
            nacker.on_media(seq, now)
        elif pt in self.rtx_pts:
            osn = rtx_original_seq(data)
            if osn is not None:
                any(n.on_rtx(osn) for n in nackers.values())
        else:
            return
        for media_ssrc, nacker in nackers.items():
            lost = nacker.due(now)
            if lost and self.send_nack is not None:
                self.nacks += 1
                await self.send_nack(media_ssrc, lost)

    def _frame_packet(self, ts: int, seq: int, marker: int) -> None:
        frames = self.frames
        if frames is None:
            return
        f = frames.get(ts)
        if f is None:
            f = frames[ts] = (set(), [])
            if len(frames) > 2000:
                for k in list(frames)[:1000]:
                    del frames[k]
        f[0].add(seq)
        if marker and not f[1]:
            f[1].append(seq)

    def frame_complete(self, ts: int) -> bool | None:
        """Did every packet of the frame with this RTP timestamp arrive? From the previous
        frame's marker packet to this one's, every sequence number (RTX counted by its
        original). False when its marker packet never came; None when unknown: no earlier
        frame with its marker on record, so nothing tells where this one starts."""
        frames = self.frames
        f = frames.get(ts) if frames is not None else None
        if f is None:
            return False  # not one packet of it
        seqs, marker = f
        if not marker:
            return False  # its last packet never came
        before = [(t, g) for t, g in frames.items()  # type: ignore[union-attr]
                  if 0 < (ts - t) & 0xFFFFFFFF < 0x80000000 and g[1]]
        if not before:
            return None
        # The latest frame before this one that has its marker: its successor starts here.
        _, (_, prev_marker) = min(before, key=lambda item: (ts - item[0]) & 0xFFFFFFFF)
        start, end = (prev_marker[0] + 1) & 0xFFFF, marker[0]
        span = ((end - start) & 0xFFFF) + 1
        return span < 0x8000 and all((start + i) & 0xFFFF in seqs for i in range(span))

    def snapshot(self) -> dict[str, int]:
        nackers = list((self.nackers or {}).values())
        return {
            "received": sum(c.received for c in self.ssrcs.values()),
            "expected": sum(c.expected for c in self.ssrcs.values()),
            "bytes": sum(c.bytes for c in self.ssrcs.values()),
            "reordered": sum(c.reordered for c in self.ssrcs.values()),
            "ssrcs": len(self.ssrcs),
            "dropped": self.dropper.dropped if self.dropper is not None else 0,
            "nacks": self.nacks,
            "nack_asked": sum(n.asked for n in nackers),
            # Came back after being asked for: by RTX, or itself (a server without RTX)
            "nack_recovered": sum(n.recovered + n.late for n in nackers),
            "nack_given_up": sum(n.given_up for n in nackers),
            "nacked_expected": sum(self.ssrcs[s].expected for s in self.nackers or ()
                                   if s in self.ssrcs),
        }


async def send_receiver_reports(pc: RTCPeerConnection, counter: RtpCounter) -> None:
    """A receiver report per received stream every 0.5-1.5 s (RFC 3550 §6.3.5's spread),
    as aiortc's receivers do (a browser's: every 1 s for video): a light subscriber never
    reaches aiortc's receiver, but the server must still carry its RTCP, as it would a real
    one's. Runs until cancelled."""
    sender_ssrc = random.getrandbits(32)
    due: dict[int, float] = {}
    while True:
        now = time.monotonic()
        for ssrc, c in list(counter.ssrcs.items()):
            at = due.setdefault(ssrc, now + 0.5 + random.random())
            if at > now:
                continue
            due[ssrc] = now + 0.5 + random.random()
            transports = dtls_transports(pc)  # one: BUNDLE
            if transports:
                with contextlib.suppress(ConnectionError):  # not (or no longer) connected
                    await transports[0]._send_rtp(build_rr(sender_ssrc, [c.report_block(ssrc)]))
        await asyncio.sleep(0.1)


def nack_sender(pc: RTCPeerConnection) -> NackSender:
    """Sends a generic NACK as RTCP on this peer's one (BUNDLE) transport; nothing while it is
    not, or no longer, connected. Its sender SSRC is the video transceiver's, which the answer
    announced, as aiortc's own receiver does: Janus finds the stream a NACK is about by it."""
    async def send(media_ssrc: int, lost: list[int]) -> None:
        transports = dtls_transports(pc)
        video = [t.sender._ssrc for t in pc.getTransceivers() if t.kind == "video"]
        if transports and video:
            with contextlib.suppress(ConnectionError):
                await transports[0]._send_rtp(build_nack(video[0], media_ssrc, lost))

    return send


def rtx_original_seq(data: bytes) -> int | None:
    """The original sequence number an RTX packet carries (RFC 4588: the payload's first two
    bytes, after the CSRCs and the header extension)."""
    if len(data) < 12:
        return None
    off = 12 + 4 * (data[0] & 0x0F)
    if data[0] & 0x10:
        if len(data) < off + 4:
            return None
        off += 4 + 4 * int.from_bytes(data[off + 2:off + 4], "big")
    if len(data) < off + 2:
        return None
    return int.from_bytes(data[off:off + 2], "big")


def rtx_payload_types(sdp: str) -> set[int]:
    """Payload types of the video m-lines' RTX (RFC 4588)."""
    return _video_payload_types(sdp)[1]


def video_payload_types(sdp: str) -> set[int]:
    """Payload types of the video m-lines (media, not RTX: RTX never reaches a decoder)."""
    media, rtx = _video_payload_types(sdp)
    return media - rtx


def _video_payload_types(sdp: str) -> tuple[set[int], set[int]]:
    pts: set[int] = set()
    kind = None
    rtx: set[int] = set()
    for line in sdp.splitlines():
        if line.startswith("m="):
            parts = line.split()
            kind = parts[0][2:]
            if kind == "video":
                pts.update(int(p) for p in parts[3:] if p.isdigit())
        elif kind == "video" and line.startswith("a=rtpmap:"):
            pt, _, enc = line[9:].partition(" ")
            if enc.lower().startswith("rtx/"):
                rtx.add(int(pt))
    return pts, rtx


async def wait_connected(pc: RTCPeerConnection, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while pc.connectionState != "connected":
        if pc.connectionState in ("failed", "closed"):
            raise RuntimeError(f"peer connection {pc.connectionState}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"peer connection still {pc.connectionState} after {timeout}s")
        await asyncio.sleep(0.05)

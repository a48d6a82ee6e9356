"""Receive-side RTP accounting for load-test bridges: loss, jitter, bytes, first keyframe.

Extends bench/peer.py's light-subscriber idea (a counter installed as the DTLS transport's
decrypted-RTP entry point, see `hook_rtp`) with what an operator asks about a bridge:
RFC 3550 interarrival jitter per SSRC and the moment the first complete VP8 keyframe arrived
(the earliest a real receiver could show a picture), without decoding anything.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable

from bench.peer import RtpHandler, SsrcCounter

_RTP_HEADER = struct.Struct("!BBHII")


def clock_rates(sdp: str) -> dict[int, tuple[int, str]]:
    """payload type -> (clock rate, encoding name) from every a=rtpmap of an SDP."""
    out: dict[int, tuple[int, str]] = {}
    for line in sdp.splitlines():
        if line.startswith("a=rtpmap:"):
            pt, _, enc = line[9:].partition(" ")
            name, _, rest = enc.partition("/")
            rate = rest.split("/")[0]
            if pt.isdigit() and rate.isdigit():
                out[int(pt)] = (int(rate), name.upper())
    return out


def vp8_keyframe_start(data: bytes) -> bool:
    """True when this RTP packet starts a VP8 keyframe (RFC 7741 payload descriptor)."""
    b0 = data[0]
    off = 12 + 4 * (b0 & 0x0F)
    if b0 & 0x10:  # header extension: 4-byte header + length in 32-bit words
        if len(data) < off + 4:
            return False
        off += 4 + 4 * int.from_bytes(data[off + 2:off + 4], "big")
    if len(data) <= off:
        return False
    d = data[off]
    if not d & 0x10 or d & 0x07:  # not the start of a partition, or not partition 0
        return False
    off += 1
    if d & 0x80:  # extended control bits
        if len(data) <= off:
            return False
        x = data[off]
        off += 1
        if x & 0x80:  # picture id, 7 or 15 bits
            if len(data) <= off:
                return False
            off += 2 if data[off] & 0x80 else 1
        if x & 0x40:  # TL0PICIDX
            off += 1
        if x & 0x30:  # TID / KEYIDX
            off += 1
    # VP8 payload header: bit 0 of the first byte is P, the *inverse* key frame flag.
    return len(data) > off and not data[off] & 0x01


class _Stream:
    """One SSRC: loss (bench.peer.SsrcCounter) plus RFC 3550 jitter, in RTP clock units."""

    __slots__ = ("clock", "counter", "jitter", "last_arrival", "last_ts")

    def __init__(self, seq: int, clock: int) -> None:
        self.counter = SsrcCounter(seq)
        self.clock = clock
        self.jitter = 0.0
        self.last_ts: int | None = None
        self.last_arrival = 0.0

    def add(self, seq: int, ts: int, size: int, now: float) -> None:
        self.counter.add(seq, size)
        if self.last_ts is not None:
            # D = (Rj − Ri) − (Sj − Si), both in the stream's clock; J += (|D| − J) / 16.
            sent = ((ts - self.last_ts + 0x80000000) & 0xFFFFFFFF) - 0x80000000
            d = (now - self.last_arrival) * self.clock - sent
            self.jitter += (abs(d) - self.jitter) / 16
        self.last_ts = ts
        self.last_arrival = now


class ReceiveStats:
    """Everything one bridge received on its subscriber connection (all SSRCs)."""

    def __init__(self) -> None:
        self.streams: dict[int, _Stream] = {}
        self.rates: dict[int, tuple[int, str]] = {}  # pt -> (clock, codec), from the offers
        self.first_packet: float | None = None  # time.monotonic()
        self.first_keyframe: float | None = None  # whole first VP8 keyframe received
        self._key_ts: int | None = None  # RTP timestamp of a keyframe being received
        self._window: tuple[float, int] | None = None  # (t, bytes) at the window start

    def learn(self, sdp: str) -> None:
        """Called with every subscriber offer: which payload types are what."""
        self.rates.update(clock_rates(sdp))

    def handler(self, decode: bool) -> Callable[[RtpHandler], RtpHandler]:
        """A hook factory for bench.peer.hook_rtp. decode=False: aiortc never sees the packet."""
        unpack = _RTP_HEADER.unpack_from
        streams = self.streams
        clock = time.monotonic

        def make(orig: RtpHandler) -> RtpHandler:
            forward = orig if decode else None

            async def on_rtp(data: bytes, arrival_time_ms: int) -> None:
                if len(data) >= 12:
                    now = clock()
                    _, mpt, seq, ts, ssrc = unpack(data)
                    s = streams.get(ssrc)
                    if s is None:
                        rate = self.rates.get(mpt & 0x7F, (90_000, ""))[0]
                        s = streams[ssrc] = _Stream(seq, rate)
                        if self.first_packet is None:
                            self.first_packet = now
                    s.add(seq, ts, len(data), now)
                    if self.first_keyframe is None:
                        self._watch_keyframe(data, mpt, ts, now)
                if forward is not None:
                    await forward(data, arrival_time_ms)

            return on_rtp

        return make

    def _watch_keyframe(self, data: bytes, mpt: int, ts: int, now: float) -> None:
        codec = self.rates.get(mpt & 0x7F, (0, ""))[1]
        if codec != "VP8":
            return
        if vp8_keyframe_start(data):
            self._key_ts = ts
        if mpt & 0x80 and self._key_ts == ts:  # marker: the keyframe's last packet
            self.first_keyframe = now

    # --- summaries --------------------------------------------------------------------------

    @property
    def packets(self) -> int:
        return sum(s.counter.received for s in self.streams.values())

    @property
    def bytes(self) -> int:
        return sum(s.counter.bytes for s in self.streams.values())

    def start_window(self, now: float) -> None:
        """Start the received-bitrate window (the hold, or this bridge's first packet if later)."""
        if self._window is None:
            self._window = (now, self.bytes)

    def kbps(self, now: float) -> float | None:
        if self._window is None or now - self._window[0] < 0.5:
            return None
        return (self.bytes - self._window[1]) * 8 / (now - self._window[0]) / 1000

    def summary(self) -> dict[str, float | int | None]:
        received = expected = 0
        jitter_ms: list[float] = []
        video_jitter: list[float] = []  # 90 kHz streams; the rest are audio
        audio_jitter: list[float] = []
        for s in self.streams.values():
            received += s.counter.received
            expected += s.counter.expected
            if s.counter.received > 1 and s.clock:
                ms = 1000 * s.jitter / s.clock
                jitter_ms.append(ms)
                (video_jitter if s.clock == 90_000 else audio_jitter).append(ms)
        lost = max(0, expected - received)
        return {
            "packets": received,
            "expected": expected,
            "lost": lost,
            "loss_pct": round(100 * lost / expected, 3) if expected else None,
            # Worst stream: one stream in trouble is what a viewer notices.
            "jitter_ms": round(max(jitter_ms), 2) if jitter_ms else None,
            "video_jitter_ms": round(max(video_jitter), 2) if video_jitter else None,
            "audio_jitter_ms": round(max(audio_jitter), 2) if audio_jitter else None,
            "bytes": self.bytes,
            "ssrcs": len(self.streams),
        }

"""Producer: one published track (media in) and its fan-out to consumers.

A Producer outlives the publisher's connection: when the publisher reconnects, a new *source*
(new SSRC, new seq/ts space) is bound behind the same track id and every consumer re-syncs its
munger, so subscribers see one continuous stream.

The per-packet path is `on_rtp` → `_fanout`: parse once, rewrite a 12-byte header per consumer
into one reused buffer, SRTP-protect in place, sendto. No awaits, no logging, no per-consumer
objects. When the ingress read several packets in one wake-up it sets `batching`: the fan-out
then queues them and `flush` hands each consumer its share in one call (one sendmmsg in C), so
a subscriber is woken once per batch, not once per packet.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from sfu.adapters.aiortc_tap import MAX_RTP, SrtpPath
from sfu.config import SfuConfig
from sfu.core.keyframes import KeyframeThrottle, is_keyframe
from sfu.core.nack import NackGenerator
from sfu.core.ring import RetransmitRing
from sfu.core.rtcp import build_nack, build_pli
from sfu.core.rtp import (
    HEADER,
    RtpHeader,
    abs_send_time,
    build_extensions,
    find_extension,
    parse_into,
)
from sfu.core.stats import ReceiveStats
from sfu.fastpath import MAX_BATCH, Batch, FastGroup

if TYPE_CHECKING:
    from sfu.consumer import Consumer
    from sfu.pipe import TrackPipe
    from sfu.router import TrackInfo



class Source:
    """What the current publisher connection sends for this track."""

    __slots__ = ("level_id", "path", "pt", "rtx_pt", "rtx_ssrc", "ssrc")

    def __init__(self, pt: int, rtx_pt: int, level_id: int) -> None:
        self.ssrc = 0  # learned from the first packet when not signaled
        self.rtx_ssrc = 0
        self.pt = pt
        self.rtx_pt = rtx_pt
        self.level_id = level_id
        self.path: SrtpPath | None = None


class Producer:
    def __init__(
        self, track: TrackInfo, clock_rate: int, config: SfuConfig, rng: random.Random
    ) -> None:
        self.track = track
        self.kind = track.kind
        self.codec = track.codec
        self.clock_rate = clock_rate
        self.video = track.kind == "video"
        self.source: Source | None = None
        self.rtcp_ssrc = rng.randrange(1, 0xFFFFFFFF)
        # Ordered sets (dicts): membership tests and removals stay O(1) at 3,356 bridges.
        self.consumers: dict[Consumer, None] = {}
        # The consumers it sends to (ready, not paused, not resuming), grouped by extension
        # layout so the extension block is built once per group: packed arrays for the
        # compiled send loop (Python fallback inside), by layout. Changed one consumer at a
        # time (`_join`, `_leave`).
        self.fast: dict[tuple[int, bytes, int, int], FastGroup] = {}
        self.enabled = True  # False: nothing is forwarded (server-side mute)
        self.resuming: dict[Consumer, None] = {}  # back from a pause: join at a clean point
        self.rejoin = False  # enabled again: every member re-syncs at the next clean point
        self.on_level: Callable[[str, int, float], None] | None = None  # active speaker feed
        self.ring = RetransmitRing(config.retransmit_cache)
        self.nack = NackGenerator() if self.video else None
        self.keyframes = KeyframeThrottle(config.keyframe_interval_s)
        # The room's producers with timer work (`timer_work`): its tick visits only those, not
        # the thousands of idle tracks of a national conference. Set by the router.
        self.ticking: set[Producer] | None = None
        self.waiting_keyframe = False
        self.stats = ReceiveStats(clock_rate)
        self.last_sr: tuple[int, int, float] | None = None  # (ntp, rtp_ts, arrival) from pub
        # Copies of every input packet to the edge workers of a conference spanning workers
        # (sfu/span.py); `generation` counts publisher connections, so edges see a switch.
        self.pipes: list[TrackPipe] = []
        self.generation = 0
        # Last input packet, for re-syncing consumers when the source changes.
        self.last_seq: int | None = None
        self.last_ts: int | None = None
        self.last_time: float | None = None
        self.holding = False
        self.resync = False
        # Set by the ingress while it feeds packets that arrived together: the fan-out queues
        # them (per group) and `flush` sends each consumer its share at once.
        self.batching = False
        self._pending: dict[FastGroup, Batch] = {}
        self.frames_held = 0  # batches kept back by the ingress for the rest of their frame
        self.packets = 0
        self.octets = 0
        self.forwarded = 0
        self.dropped = 0
        self.plis_sent = 0
        self.keyframes_seen = 0

    # ------------------------------------------------------------------ sources
    def bind_source(self, source: Source) -> None:
        """A (new) publisher connection feeds this track from now on."""
        if self.source is not None:
            self.resync = True  # consumers re-sync on the new source's first packet
        self.source = source
        self.generation = (self.generation + 1) & 0xFF
        for pipe in self.pipes:
            pipe.rebind(self.generation)
        self.ring.clear()
        if self.nack is not None:
            self.nack = NackGenerator()
        self.stats = ReceiveStats(self.clock_rate)
        self.last_sr = None

    def set_sender_report(self, ntp: int, rtp_ts: int, now: float) -> None:
        """The publisher's NTP/RTP pair (its SR): our SRs to subscribers keep its lip sync."""
        self.last_sr = (ntp, rtp_ts, now)
        for pipe in self.pipes:
            pipe.sender_report(ntp, rtp_ts)

    # ------------------------------------------------------------------ consumers
    def add_consumer(self, c: Consumer, now: float) -> None:
        c.packet_base, c.octet_base = self.packets, self.octets
        c.sync_to_source(None, None, None, self.last_seq or 0, self.last_ts or 0, now,
                         self.clock_rate)
        self.consumers[c] = None
        if c.paused:  # selected out (Last-N) before it was even connected
            c.paused_at = (self.last_seq, self.last_ts, self.last_time)
            return
        if self.video:
            # Delta frames before its first keyframe are of no use to a new viewer, and a
            # decoder fed them may show garbage (libvpx does): it joins at the next keyframe,
            # as a resumed one does (mediasoup's consumers wait for one too).
            self.resuming[c] = None
        elif c.ready:
            self._join(c)
        self.request_keyframe(now)  # a new viewer needs a picture now, not at the next GOP

    def remove_consumer(self, c: Consumer) -> None:
        if c in self.consumers:
            del self.consumers[c]
            if c in self.resuming:
                del self.resuming[c]
            else:
                self._leave(c)

    def close(self) -> None:
        """The track is gone: every consumer with it, at once."""
        self._pending = {}
        for g in self.fast.values():
            g.close()
        self.fast, self.consumers, self.resuming = {}, {}, {}

    def pause(self, c: Consumer) -> None:
        """Stop forwarding to one consumer (Last-N): no work is done for it from now on."""
        if c.paused:
            return
        c.paused = True
        if c in self.resuming:
            del self.resuming[c]  # sent nothing since its pause point: keep that one
        else:
            c.paused_at = (self.last_seq, self.last_ts, self.last_time)
            self._leave(c)

    def resume(self, c: Consumer, now: float) -> None:
        """Forward to it again, from the next keyframe (video) or packet (audio) on."""
        if not c.paused:
            return
        c.paused = False
        if c.ready and c not in self.resuming:
            self.resuming[c] = None
            self.request_keyframe(now)

    def adopt(self, c: Consumer, now: float) -> None:
        """A reused slot (sfu/slots.py) now sends this track: it joins from the next keyframe
        (video) or packet (audio) on, its output continuing from `c.paused_at`."""
        self.consumers[c] = None
        if not c.paused:
            self.resuming[c] = None
            self.request_keyframe(now)

    def set_enabled(self, enabled: bool, now: float) -> None:
        """Server-side gate for the whole track (floor control mutes audio here)."""
        if enabled == self.enabled:
            return
        self.enabled = enabled
        if not enabled:
            for c in self.consumers:
                if not c.paused and c not in self.resuming:
                    c.paused_at = (self.last_seq, self.last_ts, self.last_time)
        else:
            # The members stay in their groups (nothing was sent meanwhile, and the floor
            # holder's audio to a national room must not leave and rejoin 3,356 of them): each
            # continues from its pause point at the next clean point, as a resumed one does.
            self.rejoin = bool(self.fast)
            self.request_keyframe(now)

    def _admit_resuming(self, h: RtpHeader, now: float) -> None:
        if self.rejoin:
            self.rejoin = False
            self.flush()
            for g in self.fast.values():
                for c in g.consumers:
                    c.sync_to_source(*c.paused_at, h.seq, h.ts, now, self.clock_rate)
                g.update_offsets()
        resuming, self.resuming = self.resuming, {}
        for c in resuming:
            c.sync_to_source(*c.paused_at, h.seq, h.ts, now, self.clock_rate)
            self._join(c)

    def _join(self, c: Consumer) -> None:
        self.flush()  # queued packets go out to the groups they were made for
        g = self.fast.get(c.ext_key)
        if g is None:
            g = self.fast[c.ext_key] = FastGroup([])
        g.add(c)

    def _leave(self, c: Consumer) -> None:
        g = self.fast.get(c.ext_key)
        if g is None:
            return
        self.flush()
        if g.remove(c) and not len(g):
            g.close()
            del self.fast[c.ext_key]

    def refresh_paths(self) -> None:
        """Follow consumers' ICE pairs (they change on ICE restart); cheap when none moved."""
        for g in self.fast.values():
            g.refresh()

    # ------------------------------------------------------------------ ingress (hot)
    def on_rtp(self, data: bytes, h: RtpHeader, now: float) -> None:
        seq = h.seq
        self.stats.add(seq, h.ts, now)
        if self.nack is not None and self.nack.on_packet(seq, now * 1000.0):
            self._needs_tick()
        self.ring.put(seq, data)
        for pipe in self.pipes:
            pipe.rtp(data)
        if self.resync:
            self._resync(h, now)
        if self.waiting_keyframe and is_keyframe(
            self.codec, memoryview(data)[h.payload_off : h.payload_end]
        ):
            self.waiting_keyframe = False
            self.holding = False
            self.keyframes_seen += 1
            self.keyframes.on_keyframe(now)
            if self.resuming or self.rejoin:
                self._admit_resuming(h, now)
        elif (self.resuming or self.rejoin) and not self.video and self.enabled:
            self._admit_resuming(h, now)
        level = self._audio_level(data, h)  # read once: the speaker and the fan-out use it
        if level >= 0 and self.on_level is not None:
            self.on_level(self.track.participant_id, level & 0x7F, now)
        self.last_seq, self.last_ts, self.last_time = seq, h.ts, now
        self.packets += 1
        self.octets += h.payload_end - h.payload_off
        if self.fast and self.enabled and not self.holding:
            self._fanout(data, h, now, None, level)

    def _audio_level(self, data: bytes, h: RtpHeader) -> int:
        """The publisher's RFC 6464 byte (V bit + level), or -1 when it sent none."""
        src = self.source
        if src is None or not src.level_id:
            return -1
        off = find_extension(data, h, src.level_id)
        return data[off] if off >= 0 else -1

    def _resync(self, h: RtpHeader, now: float) -> None:
        self.flush()
        self.resync = False
        if self.video:
            # Delta frames of the new source cannot be decoded by anyone yet: forward from its
            # first keyframe on.
            self.holding = True
        self.request_keyframe(now)
        # No seq gap on the switch: aiortc's jitter buffer stalls on a gap until it overflows
        # (~3 s) and may then drop the new keyframe. If the old source stopped mid-frame, a
        # receiver may show that one frame damaged; the next (key)frame repairs it.
        for c in self.consumers:
            if c.paused or c in self.resuming:
                continue  # they re-sync from their pause point when they come back
            c.sync_to_source(self.last_seq, self.last_ts, self.last_time, h.seq, h.ts, now,
                             self.clock_rate)
        for g in self.fast.values():
            g.update_offsets()

    def _fanout(
        self, data: bytes, h: RtpHeader, now: float, only: Consumer | None, level: int
    ) -> None:
        abs_value = abs_send_time(now) if self.video else b""
        body = memoryview(data)[h.payload_off :]  # payload + padding; copied once, into tail
        nbody = len(body)
        b0 = 0x80 | (h.b0 & 0x20)
        mark = h.b1 & 0x80
        seq, ts = h.seq, h.ts
        # A retransmission to one consumer goes through the Python path: rare, not worth a
        # packed array.
        one = {only.ext_key: FastGroup([only], native=False)} if only is not None else None
        groups = self.fast if one is None else one
        # Queued while batching, and behind anything already queued (a held frame): in order.
        queue = self._pending if (self.batching or self._pending) and one is None else None
        sent = 0
        for key, g in groups.items():
            ext = build_extensions(key[0], key[1], key[2], abs_value, key[3], level)
            if 12 + len(ext) + nbody > MAX_RTP:
                self.dropped += 1
                continue
            if queue is not None:
                queue.setdefault(g, []).append((ext + body, b0 | 0x10 if ext else b0, mark,
                                                seq, ts))
            else:
                sent += g.send(ext + body, b0 | 0x10 if ext else b0, mark, seq, ts)
        self._sent(sent, groups.values())

    @property
    def frame_open(self) -> bool:
        """A video frame is queued but its last packet has not come yet (and the queue is not
        full): the ingress may hold it back until it does (sfu/transports/webrtc.py)."""
        if not self.video or not self._pending:
            return False
        batch = next(iter(self._pending.values()))  # every group queues the same packets
        return len(batch) < MAX_BATCH and not batch[-1][2]  # (tail, b0, mark, seq, ts)

    def flush(self) -> None:
        """Send what the fan-out queued while batching: per group, every consumer gets the
        queued packets in order, in one call (one sendmmsg each on the C path)."""
        pending = self._pending
        if not pending:
            return
        self._pending = {}
        sent = sum(g.send_batch(batch) for g, batch in pending.items())
        self._sent(sent, pending)

    def _sent(self, sent: int, groups: Iterable[FastGroup]) -> None:
        self.forwarded += sent
        failed: list[Consumer] = []
        for g in groups:
            if g.failed:  # the Python path's sends that raised: the transport is gone
                failed += g.failed
                g.failed.clear()
        for c in failed:
            c.ready = False
            self.remove_consumer(c)

    # ------------------------------------------------------------------ feedback
    def request_keyframe(self, now: float) -> None:
        """Ask the publisher for a keyframe, at most once per interval (the rest deferred)."""
        if not self.video:
            return
        self.waiting_keyframe = True
        if self.keyframes.request(now):
            self._send_pli()
        else:
            self._needs_tick()  # deferred: `tick` sends it when the interval ends

    @property
    def timer_work(self) -> bool:
        """Whether `tick` has anything to do: a deferred keyframe request, NACKs to send."""
        return self.keyframes.pending or (self.nack is not None and self.nack.busy)

    def _needs_tick(self) -> None:
        if self.ticking is not None:
            self.ticking.add(self)

    def tick(self, now: float) -> None:
        """Timers: deferred keyframe requests and NACKs to the publisher (every ~20 ms while
        `timer_work`)."""
        if not self.video:
            return
        if self.keyframes.due(now):
            self._send_pli()
        nack = self.nack
        if nack is None or self.source is None:
            return
        lost = nack.due(now * 1000.0)
        if lost:
            self._send_to_publisher(self._build_nack(lost))
        if nack.keyframe_needed:
            nack.clear_keyframe_needed()
            self.request_keyframe(now)

    def _build_nack(self, lost: list[int]) -> bytes:
        assert self.source is not None
        return build_nack(self.rtcp_ssrc, self.source.ssrc, lost)

    def _send_pli(self) -> None:
        src = self.source
        if src is None or not src.ssrc:
            return
        if self._send_to_publisher(build_pli(self.rtcp_ssrc, src.ssrc)):
            self.plis_sent += 1

    def _send_to_publisher(self, rtcp: bytes) -> bool:
        src = self.source
        if src is None or src.path is None:
            return False
        return src.path.send_rtcp(rtcp)

    def retransmit(self, c: Consumer, lost: tuple[int, ...] | list[int]) -> int:
        """Answer a subscriber's NACK from the ring (RTX when negotiated). Returns count."""
        h = RtpHeader()
        n = 0
        for out_seq in lost:
            if (out_seq - c.first_out_seq) & 0xFFFF >= 0x8000:
                continue  # from before the last source switch
            in_seq = (out_seq - c.seq_off) & 0xFFFF
            data = self.ring.get(in_seq)
            if data is None or not parse_into(h, data):
                continue
            if c.rtx_pt:
                packet = self._rtx_packet(c, data, h, out_seq)
                if c.path is not None and c.path.send_rtp(packet):
                    n += 1
            else:
                self._fanout(data, h, time.time(), c, self._audio_level(data, h))
                n += 1
        c.retransmitted += n
        return n

    def _rtx_packet(self, c: Consumer, data: bytes, h: RtpHeader, out_seq: int) -> bytes:
        c.rtx_seq = (c.rtx_seq + 1) & 0xFFFF
        ext = build_extensions(c.mid_id, c.mid, 0, b"", 0, -1)
        head = HEADER.pack(0x80 | (0x10 if ext else 0), (h.b1 & 0x80) | c.rtx_pt, c.rtx_seq,
                           (h.ts + c.ts_off) & 0xFFFFFFFF, c.rtx_ssrc)
        osn = out_seq.to_bytes(2, "big")
        return head + ext + osn + data[h.payload_off : h.payload_end]

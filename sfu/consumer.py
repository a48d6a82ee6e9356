"""Consumer: one track sent to one subscriber (mediasoup's word): its own SSRC, payload type,
sequence/timestamp space and header-extension ids, as its connection negotiated them."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from sfu.core.munger import Munger
from sfu.core.rtp import URI_ABS_SEND_TIME, URI_AUDIO_LEVEL, URI_MID

if TYPE_CHECKING:
    from sfu.adapters.aiortc_tap import Negotiated, SrtpPath
    from sfu.producer import Producer


class Consumer:
    __slots__ = (
        "abs_id",
        "addr",
        "ctx",
        "ext_key",
        "first_out_seq",
        "fraction_lost",
        "jitter",
        "level_id",
        "mid",
        "mid_id",
        "munger",
        "octet_base",
        "packet_base",
        "path",
        "paused",
        "paused_at",
        "producer",
        "pt",
        "ready",
        "retransmitted",
        "rtt_s",
        "rtx_pt",
        "rtx_seq",
        "rtx_ssrc",
        "sendto",
        "seq_off",
        "ssrc",
        "subscriber_id",
        "track_id",
        "ts_off",
    )

    def __init__(self, producer: Producer, subscriber_id: str, rng: random.Random) -> None:
        self.producer = producer
        self.track_id = producer.track.id
        self.subscriber_id = subscriber_id
        self.munger = Munger(rng)
        self.seq_off = self.munger.seq_off
        self.ts_off = self.munger.ts_off
        self.first_out_seq = 0
        self.ready = False
        # Paused: not forwarded (Last-N, nobody wants it now). paused_at keeps the last input
        # seq/ts/time that was sent, so resuming continues the output stream seamlessly.
        self.paused = False
        self.paused_at: tuple[int | None, int | None, float | None] = (None, None, None)
        self.ssrc = self.pt = self.rtx_ssrc = self.rtx_pt = 0
        self.rtx_seq = rng.randrange(0x10000)
        self.mid = b""
        self.mid_id = self.abs_id = self.level_id = 0
        self.ext_key: tuple[int, bytes, int, int] = (0, b"", 0, 0)
        self.path: SrtpPath | None = None
        self.ctx = None
        self.sendto = None
        self.addr: tuple[str, int] = ("", 0)
        self.packet_base = self.octet_base = 0
        self.retransmitted = 0
        # From the subscriber's receiver reports, for quality and stats.
        self.fraction_lost = 0.0
        self.jitter = 0
        self.rtt_s: float | None = None

    def configure(self, neg: Negotiated, ssrc: int, rtx_ssrc: int, path: SrtpPath) -> None:
        """The slot is negotiated and DTLS is up: take its ids and the path to the peer."""
        self.ssrc = ssrc
        self.pt = neg.codec.payloadType or 0
        self.rtx_pt = neg.rtx_payload_type
        self.rtx_ssrc = rtx_ssrc if self.rtx_pt else 0
        self.mid = neg.mid.encode()
        ext = neg.extensions
        self.mid_id = ext.get(URI_MID, 0)
        self.abs_id = ext.get(URI_ABS_SEND_TIME, 0) if neg.kind == "video" else 0
        self.level_id = ext.get(URI_AUDIO_LEVEL, 0) if neg.kind == "audio" else 0
        self.ext_key = (self.mid_id, self.mid, self.abs_id, self.level_id)
        self.path = path
        self.refresh_path()
        self.ready = True

    def refresh_path(self) -> None:
        """Copy the path's current pair into slots the hot loop reads without indirection."""
        p = self.path
        if p is None:
            return
        p.refresh()
        self.ctx, self.sendto, self.addr = p.ctx, p.sendto, p.addr

    def sync_to_source(
        self,
        prev_seq: int | None,
        prev_ts: int | None,
        prev_time: float | None,
        first_seq: int,
        first_ts: int,
        now: float,
        clock_rate: int,
    ) -> None:
        """A new source feeds this stream (publisher reconnect): keep seq/ts continuous."""
        self.munger.switch(prev_seq, prev_ts, prev_time, first_seq, first_ts, now, clock_rate)
        self.seq_off = self.munger.seq_off
        self.ts_off = self.munger.ts_off
        # NACKs for output seqs before this one belong to the previous source: the ring no
        # longer holds them, and mapping them through the new offsets would send wrong packets.
        self.first_out_seq = (first_seq + self.seq_off) & 0xFFFF

    @property
    def packets_sent(self) -> int:
        return self.producer.packets - self.packet_base + self.retransmitted

    @property
    def octets_sent(self) -> int:
        return self.producer.octets - self.octet_base

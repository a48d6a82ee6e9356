"""WebRTC transports: a participant's publisher and subscriber peer connections (aiortc).

PublisherConnection demultiplexes decrypted RTP by SSRC to Producers (learning unsignaled SSRCs
from the payload type) and reads the publisher's RTCP. SubscriberConnection owns the sending
slots (one Consumer each) and reads the subscriber's RTCP: PLI/FIR, NACK, receiver reports.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.rtcconfiguration import RTCBundlePolicy
from aiortc.sdp import SessionDescription

from sfu.adapters import aiortc_tap as tap
from sfu.adapters.direct_ingress import DirectIngress
from sfu.config import SfuConfig
from sfu.consumer import Consumer
from sfu.core.rtcp import (
    Fir,
    Nack,
    Pli,
    ReceiverReport,
    RtcpError,
    RtcpItem,
    SenderReport,
    ntp_from_unix,
    ntp_middle,
    parse_rtcp,
    sender_infos,
)
from sfu.core.rtp import RtpHeader, parse_into, unwrap_rtx
from sfu.producer import Producer, Source

log = logging.getLogger(__name__)
_UFRAG = re.compile(r"^a=ice-ufrag:(\S+)", re.M)


def new_peer_connection(config: SfuConfig) -> RTCPeerConnection:
    # iceServers is always explicit: aiortc adds a public STUN server when it is left unset.
    servers = [
        RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
        for s in config.ice_servers
    ]
    tap.install()
    # max-bundle: one ICE/DTLS transport per connection whatever the number of slots (aiortc's
    # default "balanced" gives each extra m-line of a kind its own transport, never started).
    return RTCPeerConnection(
        RTCConfiguration(iceServers=servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
    )


def ice_ufrag(sdp: str) -> str | None:
    m = _UFRAG.search(sdp)
    return m.group(1) if m else None


class MediaCounters:
    """Drops on the ingress path, counted not logged (they can come at packet rate)."""

    __slots__ = ("malformed", "rtcp_malformed", "unknown_ssrc")

    def __init__(self) -> None:
        self.malformed = self.unknown_ssrc = self.rtcp_malformed = 0


class PublisherConnection:
    def __init__(self, participant_id: str, pc: RTCPeerConnection, counters: MediaCounters,
                 park_after_s: float = 0.0, frame_hold_s: float = 0.0):
        self.participant_id = participant_id
        self.pc = pc
        self.counters = counters
        self.park_after_s = park_after_s  # idle this long (no RTP): read by the shared poller
        self.frame_hold_s = frame_hold_s  # SfuConfig.frame_hold_ms
        self._hold: asyncio.TimerHandle | None = None  # releases a held frame
        self.ufrag: str | None = None
        self.by_ssrc: dict[int, tuple[Producer, bool]] = {}  # ssrc -> (producer, is_rtx)
        self.by_pt: dict[int, tuple[Producer, bool]] = {}  # for SSRCs not in the SDP
        self.sources: dict[int, Source] = {}  # id(producer) -> its source on this connection
        self.producers: list[Producer] = []
        self.path: tap.SrtpPath | None = None
        self.ingress: DirectIngress | None = None
        # The router's timers, run after each batch (no wake-up of their own while media flows).
        self.after_batch: Callable[[float], None] | None = None
        self._h = RtpHeader()

    def bind(self, producer: Producer, neg: tap.Negotiated, media_ssrc: int, rtx_ssrc: int):
        src = Source(neg.codec.payloadType or 0, neg.rtx_payload_type,
                     neg.extensions.get("urn:ietf:params:rtp-hdrext:ssrc-audio-level", 0))
        src.ssrc, src.rtx_ssrc = media_ssrc, rtx_ssrc
        src.path = self.path
        producer.bind_source(src)
        self.sources[id(producer)] = src
        self.producers.append(producer)
        for pt in neg.payload_types:
            self.by_pt[pt] = (producer, False)
        if neg.rtx_payload_type:
            self.by_pt[neg.rtx_payload_type] = (producer, True)
        if media_ssrc:
            self.by_ssrc[media_ssrc] = (producer, False)
        if rtx_ssrc:
            self.by_ssrc[rtx_ssrc] = (producer, True)

    def retire(self) -> None:
        """Stop routing: the tracks now come from a newer connection."""
        self._release()
        self.by_ssrc.clear()
        self.by_pt.clear()
        self.sources.clear()

    def on_connected(self) -> None:
        dtls = tap.dtls_of(self.pc)
        if dtls is None or self.path is not None:
            return
        self.path = tap.SrtpPath(dtls)
        for src in self.sources.values():
            src.path = self.path
        self.ingress = DirectIngress.attach(dtls, self.on_rtp_batch, self.on_rtcp,
                                            self.park_after_s, on_reports=self.on_reports)

    def on_rtp_single(self, data: bytes, arrival_ms: int) -> None:
        """aiortc's own receive path (before DirectIngress took the socket over)."""
        self.on_rtp_batch([data], arrival_ms)

    def on_rtp_batch(self, packets: list[bytes], arrival_ms: int) -> None:
        """Packets one wake-up read together: the producers send each subscriber its share of
        them in one go (`Producer.flush`), after every packet went through `on_rtp`. A video
        frame whose last packet has not come yet is held for it (at most frame_hold_s)."""
        producers = self.producers
        for p in producers:
            p.batching = True
        held = False
        try:
            for data in packets:
                self.on_rtp(data, arrival_ms)
        finally:
            for p in producers:
                p.batching = False
                if self.frame_hold_s and p.frame_open:
                    p.frames_held += 1
                    held = True
                else:
                    p.flush()
        if held and self._hold is None:
            self._hold = asyncio.get_running_loop().call_later(self.frame_hold_s, self._release)
        elif not held and self._hold is not None:
            self._hold.cancel()
            self._hold = None
        if self.after_batch is not None:
            self.after_batch(time.time())

    def _release(self) -> None:
        """The hold expired (the frame's last packet is late or lost), or routing stops."""
        if self._hold is not None:
            self._hold.cancel()
            self._hold = None
        for p in self.producers:
            p.flush()

    # ------------------------------------------------------------------ taps (hot)
    def on_rtp(self, data: bytes, arrival_ms: int) -> None:
        h = self._h
        if not parse_into(h, data):
            self.counters.malformed += 1
            return
        entry = self.by_ssrc.get(h.ssrc)
        if entry is None:
            entry = self._learn(h)
            if entry is None:
                self.counters.unknown_ssrc += 1
                return
        producer, is_rtx = entry
        if self.path is None:
            self.on_connected()
        now = time.time()
        if is_rtx:
            src = producer.source
            if src is None or src.rtx_ssrc != h.ssrc:
                return
            original = unwrap_rtx(data, h, src.ssrc, src.pt)
            if original is None or not parse_into(h, original):
                self.counters.malformed += 1
                return
            producer.on_rtp(original, h, now)
        else:
            producer.on_rtp(data, h, now)

    def _learn(self, h: RtpHeader) -> tuple[Producer, bool] | None:
        """An SSRC the SDP did not signal: bind it by its (unique) payload type."""
        entry = self.by_pt.get(h.b1 & 0x7F)
        if entry is None:
            return None
        producer, is_rtx = entry
        src = self.sources.get(id(producer))
        if src is None:
            return None
        if is_rtx:
            if src.rtx_ssrc:
                return None
            src.rtx_ssrc = h.ssrc
        else:
            if src.ssrc:
                return None  # a second SSRC on one m-line (simulcast) is not supported yet
            src.ssrc = h.ssrc
        self.by_ssrc[h.ssrc] = entry
        return entry

    def on_rtcp(self, data: bytes) -> None:
        try:
            reports = sender_infos(data)  # all we read a publisher's RTCP for
        except RtcpError:
            self.counters.rtcp_malformed += 1
            return
        self.on_reports(reports, [])

    def on_reports(self, senders: list[tuple[int, ...]], blocks: list[list[int]]) -> None:
        """Its SRs' (ssrc, NTP, RTP time), from `on_rtcp` or from the C read (which reduced
        report-only RTCP to them, sfu/fastpath/ingress.c); report blocks are of no use here."""
        now = time.time()
        for ssrc, ntp, rtp_ts in senders:
            entry = self.by_ssrc.get(ssrc)
            if entry is not None and not entry[1]:
                entry[0].set_sender_report(ntp, rtp_ts, now)


class SubscriberConnection:
    def __init__(self, participant_id: str, pc: RTCPeerConnection, counters: MediaCounters,
                 park_after_s: float = 0.0):
        self.participant_id = participant_id
        self.pc = pc
        self.counters = counters
        self.park_after_s = park_after_s  # > 0: read by the shared poller (no RTP comes)
        self.consumers: dict[str, Consumer] = {}  # track id -> consumer
        self.by_ssrc: dict[int, Consumer] = {}
        self.transceivers: dict[str, object] = {}  # track id -> transceiver
        self.free: list = []  # slots whose track went away, for the next one (sfu/slots.py)
        self.path: tap.SrtpPath | None = None
        self.ingress: DirectIngress | None = None  # RTCP from the subscriber, read directly
        self.claimed = False
        self.awaiting_answer = False
        self.dirty = False
        # Slots (id of transceiver) the last offer opened, None before any (sfu/slots.py).
        self.opened: set[int] | None = None
        self.cname = ""  # from our own SDP, so SDES matches what the subscriber was told

    def slot_ready(self, c: Consumer, transceiver: object, on_ready: Callable[[Consumer], None]):
        """aiortc calls this (via the claimed sender) when DTLS is up for the slot."""

        def ready(_parameters: object) -> None:
            if self.path is None:
                dtls = tap.dtls_of(self.pc)
                if dtls is None:
                    return
                self.path = tap.SrtpPath(dtls)
                # Parked at once (its RTCP read after media batches, sfu/adapters/parking.py)
                # unless parking is off.
                self.ingress = DirectIngress.attach(dtls, _ignore_batch, self.on_rtcp,
                                                    self.park_after_s, self.park_after_s > 0,
                                                    self.on_reports, connect=True)
            neg = tap.negotiated(transceiver)  # type: ignore[arg-type]
            ssrc, rtx_ssrc = tap.sender_ssrcs(transceiver)  # type: ignore[arg-type]
            c.configure(neg, ssrc, rtx_ssrc, self.path)
            self.by_ssrc[ssrc] = c
            on_ready(c)

        return ready

    def on_rtcp(self, data: bytes) -> None:
        items = _parse_counted(data, self.counters)
        now = time.time()
        for item in items:
            if isinstance(item, Pli):
                c = self.by_ssrc.get(item.media_ssrc)
                if c is not None:
                    c.producer.request_keyframe(now)
            elif isinstance(item, Fir):
                for ssrc, _seqnr in item.entries:
                    c = self.by_ssrc.get(ssrc)
                    if c is not None:
                        c.producer.request_keyframe(now)
            elif isinstance(item, Nack):
                c = self.by_ssrc.get(item.media_ssrc)
                if c is not None and c.ready:
                    c.producer.retransmit(c, item.lost)
            elif isinstance(item, (ReceiverReport, SenderReport)):
                for b in item.reports:
                    c = self.by_ssrc.get(b.ssrc)
                    if c is not None:
                        _on_report(c, b.fraction_lost, b.jitter, b.lsr, b.dlsr, now)

    def on_reports(self, senders: list[tuple[int, int, int]], blocks: list[list[int]]) -> None:
        """Report blocks [ssrc, fraction lost, jitter, LSR, DLSR] of the reports that the C read
        took whole (sfu/fastpath/ingress.c; a subscriber's SRs carry nothing else we use);
        other RTCP comes to `on_rtcp`."""
        now = time.time()
        for ssrc, fraction_lost, jitter, lsr, dlsr in blocks:
            c = self.by_ssrc.get(ssrc)
            if c is not None:
                _on_report(c, fraction_lost, jitter, lsr, dlsr, now)


def _on_report(c: Consumer, fraction_lost: int, jitter: int, lsr: int, dlsr: int,
               now: float) -> None:
    c.fraction_lost = fraction_lost / 256.0
    c.jitter = jitter
    if lsr:
        # RTT = now - LSR - DLSR, all in 1/65536 s (RFC 3550 6.4.1)
        rtt = ((ntp_middle(ntp_from_unix(now)) - lsr - dlsr) & 0xFFFFFFFF) / 65536.0
        if rtt < 60:
            c.rtt_s = rtt


def _ignore_batch(packets: list[bytes], arrival_ms: int) -> None:
    return None  # subscribers send no media on their connection


def _parse_counted(data: bytes, counters: MediaCounters) -> list[RtcpItem]:
    """A peer's compound RTCP; malformed ones are counted and dropped, never raised."""
    try:
        return parse_rtcp(data)
    except RtcpError:
        counters.rtcp_malformed += 1
        return []


def parse_offer(sdp: str) -> SessionDescription:
    """Parse an SDP with aiortc's parser; any failure is the client's (bad_sdp)."""
    return SessionDescription.parse(sdp)


def signaled_ssrcs(desc: SessionDescription, index: int) -> tuple[int, int]:
    """(media ssrc, rtx ssrc) a remote m-line signaled with a=ssrc / a=ssrc-group:FID."""
    media = desc.media[index]
    for group in media.ssrc_group:
        if group.semantic == "FID" and len(group.items) >= 2:
            return int(group.items[0]), int(group.items[1])
    if media.ssrc:
        return media.ssrc[0].ssrc, 0
    return 0, 0

"""Sending slots of a subscriber connection: one m-line (transceiver) and its Consumer each.

A slot whose track is unsubscribed is not dropped: its transceiver goes inactive and its
Consumer is detached from the Producer, and the next subscription of the same kind and codec
takes it over (docs/signaling.md: a section whose track went away may be reused for another
track). The Consumer keeps its SSRC, payload types, extension ids and path, and its output
sequence numbers and timestamps continue where they stopped: to the subscriber's receiver the
slot is one stream whose picture changes at a keyframe. So a subscriber's m-line count is the
most tracks it was sent at once, not every track it was ever sent.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiortc import RTCRtpSender

from sfu.adapters import aiortc_tap as tap
from sfu.config import SfuConfig
from sfu.consumer import Consumer
from sfu.producer import Producer
from sfu.transports.webrtc import SubscriberConnection


@dataclass
class FreeSlot:
    transceiver: object
    consumer: Consumer
    kind: str
    codec: str  # the codec the slot was offered (and negotiated) in
    packets: int  # what the consumer had sent when freed: its sender reports stay monotonic
    octets: int


def add(sub: SubscriberConnection, producer: Producer, c: Consumer,
        on_ready: Callable[[Consumer], None]) -> None:
    """A new slot (m-line) for `c`."""
    tr = sub.pc.addTransceiver(producer.kind, direction="sendonly")
    _prefer_codec(tr, producer)
    tap.claim_receiver(tr)
    tap.claim_sender(tr, sub.slot_ready(c, tr, on_ready))
    sub.consumers[producer.track.id] = c
    sub.transceivers[producer.track.id] = tr


def spare(sub: SubscriberConnection, kind: str, codec: str, rng: random.Random,
          on_ready: Callable[[Consumer], None]) -> None:
    """A slot opened before any track needs it, free from the start: the first track of its
    kind and codec takes it without an offer (a conference's floor audio and video: the first
    floor turn is then a `remap` on every bridge, not an offer to each)."""
    placeholder = _placeholder(kind, codec)
    c = Consumer(placeholder, sub.participant_id, rng)
    tr = sub.pc.addTransceiver(kind, direction="sendonly")
    _prefer_codec(tr, placeholder)
    tap.claim_receiver(tr)
    tap.claim_sender(tr, sub.slot_ready(c, tr, on_ready))
    sub.free.append(FreeSlot(tr, c, kind, codec, 0, 0))


_placeholders: dict[tuple[str, str], Producer] = {}


def _placeholder(kind: str, codec: str) -> Producer:
    """What a spare slot's consumer points at until a track takes the slot: a producer of that
    kind and codec in no room (no source, never any consumer; a PLI or NACK from the
    subscriber for the empty section reaches it and does nothing). One per kind and codec."""
    p = _placeholders.get((kind, codec))
    if p is None:
        from sfu.router import TrackInfo  # (the router imports this module)

        info = TrackInfo("", "", kind, "", codec)
        p = _placeholders[kind, codec] = Producer(
            info, 48000 if kind == "audio" else 90000, SfuConfig(), random.Random(0))
    return p


def free(sub: SubscriberConnection, track_id: str) -> bool:
    """Stop sending `track_id`; keep its slot for a later track. False if it was not sent."""
    c = sub.consumers.pop(track_id, None)
    if c is None:
        return False
    tr = sub.transceivers.pop(track_id)
    old = c.producer
    if not c.paused and c not in old.resuming:
        # The last input packet sent to it: the output stream continues from there.
        c.paused_at = (old.last_seq, old.last_ts, old.last_time)
    old.resuming.pop(c, None)
    old.remove_consumer(c)
    sub.by_ssrc.pop(c.ssrc, None)
    tr.direction = "inactive"  # type: ignore[attr-defined]
    sub.free.append(FreeSlot(tr, c, old.kind, old.codec, old.packets - c.packet_base,
                             old.octets - c.octet_base))
    return True


def reuse(sub: SubscriberConnection, producer: Producer, paused: bool) -> bool:
    """Send `producer` on a free slot of its kind and codec, if there is one."""
    slot = next((s for s in sub.free if s.kind == producer.kind
                 and s.codec.lower() == producer.codec.lower()), None)
    if slot is None:
        return False
    sub.free.remove(slot)
    c, tr = slot.consumer, slot.transceiver
    c.producer = producer
    c.track_id = producer.track.id
    c.paused = paused
    c.packet_base = producer.packets - slot.packets
    c.octet_base = producer.octets - slot.octets
    seq = c.paused_at[0]
    if seq is not None:
        # Until it joins the new source, NACKs may only name packets sent from now on: the
        # ring holds the new source's packets, not the ones the subscriber misses.
        c.first_out_seq = (seq + c.seq_off + 1) & 0xFFFF
    tr.direction = "sendonly"  # type: ignore[attr-defined]
    sub.consumers[producer.track.id] = c
    sub.transceivers[producer.track.id] = tr
    if c.ready:  # negotiated before: it joins the new source at its next keyframe / packet
        sub.by_ssrc[c.ssrc] = c
        producer.adopt(c, time.time())
    # else: the slot's first negotiation is still pending; `slot_ready` adds it then.
    return True


def mids(sub: SubscriberConnection) -> dict[str, str]:
    """The sections that carry a track now (a free slot's is not listed)."""
    return {tr.mid: tid for tid, tr in sub.transceivers.items()}  # type: ignore[attr-defined]


def offered(sub: SubscriberConnection) -> None:
    """An offer was made: the slots it opens (sendonly) are the ones a remap may use."""
    sub.opened = {id(tr) for tr in sub.pc.getTransceivers() if tr.direction == "sendonly"}


def reopened(sub: SubscriberConnection) -> bool:
    """Whether a slot is to send that the last offer did not open (a new one, or a free one
    that went inactive in an offer since): only an offer can tell the subscriber so. A slot
    freed since the last offer stays open in the SDP, carrying nothing until it is reused."""
    return sub.opened is None or any(
        tr.direction == "sendonly" and id(tr) not in sub.opened
        for tr in sub.pc.getTransceivers())


def attached(sub: SubscriberConnection | None, c: Consumer) -> bool:
    """`c` is a slot in use (not a free one) of a live subscriber connection."""
    return sub is not None and sub.consumers.get(c.track_id) is c


def _prefer_codec(transceiver, producer: Producer) -> None:  # type: ignore[no-untyped-def]
    """Offer the subscriber slot in the producer's codec: packets are forwarded as they are."""
    caps = RTCRtpSender.getCapabilities(producer.kind).codecs
    name = producer.codec.lower()
    chosen = [c for c in caps if c.mimeType.split("/")[1].lower() == name]
    rtx = [c for c in caps if c.mimeType.lower().endswith("/rtx")]
    transceiver.setCodecPreferences(chosen + rtx)

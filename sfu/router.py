"""Router: one conference's media switch (mediasoup's word). Signaling talks only to this.

It owns each participant's publisher and subscriber connections, the Producers (tracks in) and
Consumers (tracks out), and one set of timers for the whole room (NACK/PLI every 20 ms for the
tracks that have any due, speaker every 200 ms, sender and receiver reports every second) instead
of aiortc's tasks per sender and receiver. The timers run after each ingress batch, so while
media flows they cost no event-loop wake-up of their own (sfu/timers.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from aiortc import RTCSessionDescription
from aiortc.sdp import candidate_from_sdp

from sfu import slots
from sfu.adapters import aiortc_tap as tap
from sfu.adapters import parking
from sfu.config import SfuConfig
from sfu.consumer import Consumer
from sfu.core.speaker import SpeakerDetector
from sfu.producer import Producer
from sfu.reports import send_reports
from sfu.router_stats import router_stats
from sfu.timers import RoomTimers
from sfu.transports.webrtc import (
    MediaCounters,
    PublisherConnection,
    SubscriberConnection,
    ice_ufrag,
    new_peer_connection,
    parse_offer,
    signaled_ssrcs,
)

log = logging.getLogger(__name__)
SOURCES = ("camera", "microphone", "screen")
_CNAME = re.compile(r"a=ssrc:\d+ cname:(\S+)")


class SfuError(Exception):
    """Base of errors the SFU reports to signaling; `code` is the stable wire code."""

    code = "internal"


class SdpError(SfuError):
    code = "bad_sdp"


class CandidateError(SfuError):
    code = "bad_candidate"


class UnknownTrackError(SfuError):
    code = "unknown_track"


@dataclass(frozen=True)
class TrackInfo:
    id: str  # "{participant_id}/{source}"
    participant_id: str
    kind: str  # "audio" | "video"
    source: str  # "camera" | "microphone" | "screen"
    codec: str  # "opus" | "VP8" | "H264"
    muted: bool = False

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "participant_id": self.participant_id, "kind": self.kind,
                "source": self.source, "codec": self.codec, "muted": self.muted}


# send_offer(participant_id, sdp, mids) must deliver {"type": "offer", "pc": "subscriber", ...},
# or with sdp None {"type": "remap", ...} (see Router.update_subscriptions).
SendOffer = Callable[[str, str | None, dict[str, str]], Awaitable[None]]


class Router:
    def __init__(self, room_id: str, config: SfuConfig, send_offer: SendOffer) -> None:
        self.room_id = room_id
        self.config = config
        self._send_offer = send_offer
        self._rng = random.Random()
        self.producers: dict[str, Producer] = {}  # track id -> producer
        self._ticking: set[Producer] = set()  # those with timer work (Producer.ticking)
        self.publishers: dict[str, PublisherConnection] = {}
        self.subscribers: dict[str, SubscriberConnection] = {}
        self.counters = MediaCounters()
        self.offers = self.remaps = 0  # subscriber offers sent, and remaps sent instead
        # (kind, codec) of the slots a subscriber connection's first offer opens with nothing
        # in them yet (sfu/slots.py `spare`): a conference's floor audio and video.
        self.spare_slots: tuple[tuple[str, str], ...] = ()
        self._locks: dict[str, asyncio.Lock] = {}
        # Conference control (floor, Last-N) tells the router what to forward, never decides.
        self._audio_blocked: set[str] = set()  # participants whose audio is not forwarded
        self._video_from: dict[str, frozenset[str]] = {}  # subscriber -> publishers it sees
        self.speaker = SpeakerDetector(time.time())
        # Called with the new dominant speaker's id (sync; schedule any I/O yourself).
        self.on_dominant_speaker: Callable[[str], None] | None = None
        # Called with subscribers whose connection went with another worker (must rejoin).
        self.on_subscribers_lost: Callable[[list[str]], None] | None = None
        # Run after every publisher batch (`poll`), with an idle fallback: sfu/timers.py.
        self.timers = RoomTimers(room_id, self._tick, self._speaker_tick, self._report)
        self._closed = False

    # ------------------------------------------------------------------ publishing
    async def publish(
        self, participant_id: str, sdp: str, sources: dict[str, str]
    ) -> tuple[str, list[TrackInfo]]:
        """Answer a publisher offer; returns (answer sdp, tracks new to the room).

        An offer with new ICE credentials is a new connection (the publisher reconnected): the
        old one is closed and its tracks are re-bound to the new one, keeping their ids.
        """
        async with self._lock(participant_id):
            try:
                desc = parse_offer(sdp)
            except Exception as exc:
                raise SdpError("offer does not parse") from exc
            if not desc.media:
                raise SdpError("offer has no media")
            old = self.publishers.get(participant_id)
            if old is not None and old.ufrag == ice_ufrag(sdp):
                pub = old  # renegotiation on the same connection
            else:
                pub = PublisherConnection(participant_id, new_peer_connection(self.config),
                                          self.counters, self.config.park_idle_after_s,
                                          self.config.frame_hold_ms / 1000)
                pub.ufrag = ice_ufrag(sdp)
            try:
                await pub.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
                for tr in pub.pc.getTransceivers():
                    tr.direction = "recvonly"
                    tap.claim_receiver(tr)
                answer = await pub.pc.createAnswer()
                await pub.pc.setLocalDescription(answer)
            except Exception as exc:
                await _close_quietly(pub.pc)
                raise SdpError("offer cannot be negotiated") from exc
            tap.claim_transport(pub.pc, pub.on_rtp_single, pub.on_rtcp)
            try:
                new_tracks = self._bind_tracks(participant_id, pub, desc, sources)
            except SdpError:
                if pub is not old:  # nor its connection (ICE tasks, UDP sockets)
                    await _close_quietly(pub.pc)
                raise
            if old is not None and old is not pub:
                old.retire()  # its late packets must not interleave with the new source
                await _close_quietly(old.pc)
            self.publishers[participant_id] = pub
            pub.after_batch = self.after_media
            self._watch(pub.pc, participant_id, pub)
            self.timers.start()
            return pub.pc.localDescription.sdp, new_tracks

    def _bind_tracks(self, pid: str, pub: PublisherConnection, desc, sources: dict[str, str]):
        # The whole offer is checked before anything is created: a refused offer leaves no
        # producer behind.
        slots = []
        seen: set[str] = set()
        for index, tr in enumerate(pub.pc.getTransceivers()):
            if tr.mid is None or index >= len(desc.media):
                continue
            try:
                neg = tap.negotiated(tr)
            except ValueError:
                continue  # m-line rejected: nothing in common
            source = sources.get(tr.mid) or ("microphone" if tr.kind == "audio" else "camera")
            if source not in SOURCES or source in seen:
                raise SdpError(f"bad or duplicate source for mid {tr.mid}")
            existing = self.producers.get(f"{pid}/{source}")
            if existing is not None and existing.kind != tr.kind:
                raise SdpError(f"source {source} was published as {existing.kind}")
            seen.add(source)
            slots.append((index, tr, neg, source))
        new: list[TrackInfo] = []
        bound = {id(p) for p in pub.producers}
        for index, tr, neg, source in slots:
            track_id = f"{pid}/{source}"
            producer = self.producers.get(track_id)
            if producer is None:
                codec = neg.codec.mimeType.split("/")[1]
                info = TrackInfo(track_id, pid, tr.kind, source,
                                 "opus" if codec.lower() == "opus" else codec.upper())
                producer = Producer(info, neg.codec.clockRate, self.config, self._rng)
                self.producers[track_id] = producer
                new.append(info)
            elif id(producer) in bound:
                continue
            self._apply_gates(producer)
            media_ssrc, rtx_ssrc = signaled_ssrcs(desc, index)
            pub.bind(producer, neg, media_ssrc, rtx_ssrc)
        return new

    def _watch(self, pc, pid: str, conn: object) -> None:
        @pc.on("connectionstatechange")
        async def _state() -> None:
            state = pc.connectionState
            if state == "connected" and isinstance(conn, PublisherConnection):
                conn.on_connected()
            elif state in ("failed", "closed"):
                if state == "failed":
                    log.info("room %s: %s connection failed", self.room_id, pid)
                if isinstance(conn, SubscriberConnection):
                    self._detach(conn)

    @staticmethod
    def _detach(sub: SubscriberConnection) -> None:
        """Stop feeding a subscriber connection that is going away."""
        for c in sub.consumers.values():
            c.ready = False
            c.producer.remove_consumer(c)

    # ------------------------------------------------------------------ subscribing
    async def subscribe(self, participant_id: str, track_ids: list[str]) -> None:
        await self.update_subscriptions(participant_id, track_ids, [])

    async def unsubscribe(self, participant_id: str, track_ids: list[str]) -> None:
        await self.update_subscriptions(participant_id, [], track_ids)

    async def update_subscriptions(self, participant_id: str, add: list[str],
                                   remove: list[str]) -> None:
        """Stop sending `remove`, then send `add`, with one renegotiation at most. Removed
        tracks free their slots, and added ones take free slots of their kind and codec first
        (sfu/slots.py): the subscriber's m-line count stays the most it was sent at once. A
        change that only moves tracks in and out of slots the last offer opened (a floor turn:
        one bridge's audio and video out, another's in) needs no SDP: the subscriber is sent a
        `remap` of its sections, not an offer."""
        unknown = [t for t in add if t not in self.producers]
        if unknown:
            raise UnknownTrackError(f"unknown track {unknown[0]}")
        sub = self.subscribers.get(participant_id)
        if sub is None and not add:
            return
        first = sub is None
        sub = sub or self._subscriber(participant_id)
        changed = False
        for track_id in remove:
            changed = slots.free(sub, track_id) or changed
        allowed = self._video_from.get(participant_id)
        for track_id in add:
            if track_id in sub.consumers or track_id.startswith(participant_id + "/"):
                continue
            producer = self.producers[track_id]
            paused = (producer.video and allowed is not None
                      and producer.track.participant_id not in allowed)
            if not slots.reuse(sub, producer, paused):
                c = Consumer(producer, participant_id, self._rng)
                c.paused = paused
                slots.add(sub, producer, c, self._consumer_ready)
            changed = True
        if first:  # after the tracks asked for, which must not take them
            for kind, codec in self.spare_slots:
                slots.spare(sub, kind, codec, self._rng, self._consumer_ready)
        # A new slot is one the last offer did not open: `reopened` covers it.
        if changed and (sub.awaiting_answer or slots.reopened(sub)):
            await self._negotiate(sub)
        elif changed:
            self.remaps += 1
            await self._send_offer(sub.participant_id, None, slots.mids(sub))

    def _subscriber(self, pid: str) -> SubscriberConnection:
        sub = self.subscribers.get(pid)
        if sub is None:
            sub = SubscriberConnection(pid, new_peer_connection(self.config), self.counters,
                                       self.config.park_idle_after_s)
            self.subscribers[pid] = sub
            self._watch(sub.pc, pid, sub)
            self.timers.start()
        return sub

    def _consumer_ready(self, c: Consumer) -> None:
        sub = self.subscribers.get(c.subscriber_id)
        if c.producer.track.id in self.producers and slots.attached(sub, c):
            c.producer.add_consumer(c, time.time())

    async def _negotiate(self, sub: SubscriberConnection) -> None:
        """Send the next offer, one at a time: changes made meanwhile wait for the answer."""
        if sub.awaiting_answer:
            sub.dirty = True
            return
        sub.dirty = False
        sub.awaiting_answer = True  # before any await: a concurrent change waits its turn
        pc = sub.pc
        try:
            await pc.setLocalDescription(await pc.createOffer())
        except BaseException:
            sub.awaiting_answer = False
            raise
        slots.offered(sub)
        self.offers += 1
        if not sub.claimed:
            tap.claim_transport(pc, _ignore_rtp, sub.on_rtcp)
            sub.claimed = True
            m = _CNAME.search(pc.localDescription.sdp)
            sub.cname = m.group(1) if m else ""
        await self._send_offer(sub.participant_id, pc.localDescription.sdp, slots.mids(sub))

    async def subscriber_answer(self, participant_id: str, sdp: str) -> None:
        sub = self.subscribers.get(participant_id)
        if sub is None or not sub.awaiting_answer:
            raise SdpError("no offer is waiting for an answer")
        try:
            await sub.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        except Exception as exc:
            raise SdpError("answer cannot be applied") from exc
        sub.awaiting_answer = False
        if sub.dirty:
            await self._negotiate(sub)

    async def add_ice_candidate(self, participant_id: str, pc: str, candidate: dict | None) -> None:
        conn = (self.publishers if pc == "publisher" else self.subscribers).get(participant_id)
        if conn is None:
            raise CandidateError(f"no {pc} connection")
        if candidate is None or not candidate.get("candidate"):
            return  # end of candidates: aiortc needs nothing
        try:
            text = str(candidate["candidate"])
            cand = candidate_from_sdp(text.split(":", 1)[1] if text.startswith("candidate:")
                                      else text)
            cand.sdpMid = candidate.get("sdpMid")
            cand.sdpMLineIndex = candidate.get("sdpMLineIndex")
            await conn.pc.addIceCandidate(cand)
        except Exception as exc:
            raise CandidateError("candidate does not parse") from exc

    # ------------------------------------------------------------------ state
    def set_track_muted(self, track_id: str, muted: bool) -> TrackInfo:
        producer = self.producers.get(track_id)
        if producer is None:
            raise UnknownTrackError(f"unknown track {track_id}")
        producer.track = replace(producer.track, muted=muted)
        return producer.track

    def set_audio_allowed(self, participant_id: str, allowed: bool) -> None:
        """Floor control: forward this participant's audio or not, whatever its client does."""
        if allowed:
            self._audio_blocked.discard(participant_id)
        else:
            self._audio_blocked.add(participant_id)
        for p in self.producers_of(participant_id):
            self._apply_gates(p)

    def producers_of(self, participant_id: str) -> list[Producer]:
        """Its tracks' producers: ids are "<participant>/<source>" (sfu/edge.py checks those it
        is sent), so a few lookups, not a scan of a national room's thousands of tracks."""
        return [p for s in SOURCES
                if (p := self.producers.get(f"{participant_id}/{s}")) is not None]

    def set_video_from(self, subscriber_id: str, publishers: frozenset[str] | None) -> None:
        """Last-N: the publishers whose video this subscriber receives (None: all). Video it
        does not receive costs no forwarding work at all."""
        if publishers is None:
            self._video_from.pop(subscriber_id, None)
        else:
            self._video_from[subscriber_id] = publishers
        sub = self.subscribers.get(subscriber_id)
        if sub is None:
            return
        now = time.time()
        for c in sub.consumers.values():
            p = c.producer
            if not p.video:
                continue
            if publishers is None or p.track.participant_id in publishers:
                p.resume(c, now)
            else:
                p.pause(c)

    def subscribed(self, subscriber_id: str) -> set[str]:
        """Track ids this subscriber is being sent (or offered)."""
        sub = self.subscribers.get(subscriber_id)
        return set(sub.consumers) if sub is not None else set()

    def add_producer(self, producer: Producer) -> None:
        """A track fed by something other than a publisher connection (a pipe)."""
        self.producers[producer.track.id] = producer
        self._apply_gates(producer)

    def receiving_video(self, subscriber_id: str) -> list[str]:
        """Track ids of the video this subscriber is being sent now (for tests and stats)."""
        sub = self.subscribers.get(subscriber_id)
        if sub is None:
            return []
        return [t for t, c in sub.consumers.items() if c.producer.video and not c.paused]

    def _apply_gates(self, producer: Producer) -> None:
        producer.ticking = self._ticking  # its NACK and keyframe timers run in the room's tick
        if producer.kind == "audio":
            producer.on_level = self.speaker.add_level
            allowed = producer.track.participant_id not in self._audio_blocked
            producer.set_enabled(allowed, time.time())

    def tracks(self) -> list[TrackInfo]:
        return [p.track for p in self.producers.values()]

    async def reset_subscriber(self, participant_id: str) -> None:
        """Close only the participant's subscriber connection (its session was replaced):
        its tracks stay published, so when it publishes again on a new connection they are
        re-bound behind the same ids and everyone else sees one continuous stream."""
        sub = self.subscribers.pop(participant_id, None)
        if sub is not None:
            self._detach(sub)
            await _close_quietly(sub.pc)

    async def remove_participant(self, participant_id: str) -> list[str]:
        gone = [p.track.id for p in self.producers_of(participant_id)]
        for track_id in gone:
            producer = self.producers.pop(track_id)
            self._ticking.discard(producer)
            producer.close()
        pub = self.publishers.pop(participant_id, None)
        sub = self.subscribers.pop(participant_id, None)
        if sub is not None:
            self._detach(sub)
        for conn in (pub, sub):
            if conn is not None:
                await _close_quietly(conn.pc)
        for other in self.subscribers.values():
            stale = [t for t in gone if t in other.consumers]
            if stale:
                with contextlib.suppress(Exception):
                    await self.unsubscribe(other.participant_id, stale)
        self._locks.pop(participant_id, None)
        self._video_from.pop(participant_id, None)
        self.speaker.remove(participant_id)
        return gone

    def stats(self) -> dict[str, object]:
        return router_stats(self)

    async def close(self) -> None:
        self._closed = True
        self.timers.close()
        for pid in list(set(self.publishers) | set(self.subscribers)):
            await self.remove_participant(pid)

    # ------------------------------------------------------------------ timers
    def after_media(self, now: float) -> None:
        """After every media batch (publishers' here, the home's pipe at an edge): what rides
        on the loop being awake anyway, parked sockets (subscribers' NACKs) and the timers."""
        parking.drain()
        self.timers.poll(now)

    def _tick(self, now: float) -> None:
        ticking = self._ticking  # not every producer: a national room has thousands, idle
        for producer in list(ticking):
            producer.tick(now)
            if not producer.timer_work:
                ticking.discard(producer)

    def _speaker_tick(self, now: float) -> None:
        changed = self.speaker.tick(now)
        if changed is not None and self.on_dominant_speaker is not None:
            self.on_dominant_speaker(changed)

    def _report(self, now: float) -> None:
        send_reports(self.subscribers.values(), self.producers.values(),
                     self.publishers.values(), now, self.config.max_bitrate_bps)

    def _lock(self, pid: str) -> asyncio.Lock:
        return self._locks.setdefault(pid, asyncio.Lock())


def _ignore_rtp(data: bytes, arrival_ms: int) -> None:
    return None  # subscribers send no media on this connection


async def _close_quietly(pc) -> None:
    with contextlib.suppress(Exception):
        await pc.close()

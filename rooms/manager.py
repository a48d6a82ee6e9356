"""RoomManager: who is connected to which room on this node, and each room's media Router.

One `sfu.router.Router` and one `RoomControl` (floor control + Last-N, rooms/control.py) per
room: created on the first join, closed when the room empties. A conference created through the
API (rooms/conference.py) keeps its FloorControl (invited list, bans, event log) while empty.
Membership (join / leave / replace / remove) is serialized per room by a lock; media and floor
requests are not (they go straight to the Router / FloorControl, neither of which awaits).
Events go out through `Peer.send`, which only queues, so one slow or broken connection never
holds up the others.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rooms.audience import Audience
from rooms.conference import ConferenceSpec, floor_for, is_conference
from rooms.control import SERVER_ACTOR, RoomControl, floor_join
from rooms.floor import FloorControl, FloorEvent
from rooms.model import Room
from rooms.peer import JoinSnapshot, Peer
from rooms.roster import FEATURED, FULL, Roster
from rooms.store import RoomStore
from sfu.config import SfuConfig
from sfu.router import Router, SendOffer, TrackInfo
from signaling import errors
from signaling import messages as m
from signaling.errors import CLOSE_REPLACED, NotJoined, Removed, Replaced, RoomFull

logger = logging.getLogger(__name__)
# The sections a conference bridge's subscriber connection opens empty (sfu/slots.py `spare`).
FLOOR_SLOTS = (("audio", "opus"), ("video", "VP8"))

RouterFactory = Callable[[str, SfuConfig, SendOffer], Router]


@dataclass
class _LiveRoom:
    router: Router
    control: RoomControl
    audience: Audience
    peers: dict[str, Peer] = field(default_factory=dict)


class RoomManager:
    def __init__(
        self,
        store: RoomStore,
        sfu_config: SfuConfig,
        *,
        router_factory: RouterFactory = Router,
        max_participants: int = 5000,
        last_n: int = 4,
        last_n_max: int = 25,
        max_speakers: int = 1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.sfu_config = sfu_config
        self._router_factory = router_factory
        self.max_participants = max_participants
        self.last_n, self.last_n_max, self.max_speakers = last_n, last_n_max, max_speakers
        self._clock = clock
        self._rooms: dict[str, _LiveRoom] = {}
        # Conferences created through the API keep their floor while nobody is connected.
        self._floors: dict[str, FloorControl] = {}
        # One lock per room id, kept after the room closes (a few hundred bytes each) so that a
        # join racing a close always finds the same lock.
        self._locks: dict[str, asyncio.Lock] = {}

    # --- membership ----------------------------------------------------------------------------

    async def join(self, peer: Peer, on_admitted: Callable[[JoinSnapshot], None]) -> JoinSnapshot:
        """Admit `peer`, replacing a session with the same identity.

        `on_admitted` runs synchronously at the moment the peer becomes visible (before any
        event can reach it), so the shell can queue `joined` ahead of every event.
        Raises RoomLocked / RoomFull.
        """
        participant = peer.participant
        room_id, pid = participant.room_id, participant.id
        async with self._lock(room_id):
            room = await self.store.create_room(room_id)
            live = self._rooms.get(room_id)
            others = len(live.peers) - (pid in live.peers) if live else 0
            if others >= (room.max_participants or self.max_participants):
                raise RoomFull()
            floor = live.control.floor if live else self._floor(room)
            now = self._clock()
            # The floor decides admission (lock, bans) before anything else changes.
            result = floor_join(floor, participant, now)
            rejoined = bool(result.data and result.data.get("rejoined"))
            created = live is None
            old: Peer | None = None
            try:
                if live is None:
                    live = self._open_room(room, floor)
                old = live.peers.pop(pid, None)
                if old is not None:
                    await self._replace(live, old)
                # A featured roster lists only participants of this room's live sessions.
                full = live.audience.kind_for(participant) == FULL
                listed = await self.store.list_participants(room_id) if full else []
                await self.store.add_participant(participant)
            except BaseException:
                # Not admitted after all. The others knew only the session it replaced (if any):
                # they hear that it left; a fresh joiner's logged join they never saw.
                gone = floor.handle(pid, participant.role, "leave", {"reason": "disconnected"},
                                    now)
                if live is not None:
                    if old is not None:
                        live.control.apply(gone, replan=False)
                    live.control.forget(pid)
                    live.audience.remove(pid)
                    if created and not live.peers:
                        await self._close_room(room_id, live)
                raise
            live.audience.add(participant)
            if full:
                shown, tracks = [p for p in listed if p.id != pid], self._tracks(live)
            else:
                shown, tracks = live.audience.featured_view(pid)
            snapshot = JoinSnapshot(
                room=room, participants=shown, tracks=tracks,
                floor=live.audience.floor_view(live.control.snapshot(pid), pid),
                last_n=live.control.n_of(pid),
                roster=live.audience.kind_for(participant),
                participant_count=len(live.peers) + (pid not in live.peers),
            )
            # From here to the broadcast nothing awaits: the snapshot stays exact.
            live.peers[pid] = peer
            on_admitted(snapshot)
            if old is not None and rejoined:
                # The same bridge reconnecting: no floor change, nothing logged.
                self.broadcast(room_id, m.participant_left(pid, "replaced"), peer, pid)
                self.broadcast(room_id, m.participant_joined(participant.to_json()), peer, pid)
            else:
                live.control.apply(result, exclude=peer)
            logger.info("join room=%s participant=%s role=%s", room_id, pid, participant.role)
            return snapshot

    async def leave(self, peer: Peer, reason: str = "disconnected") -> None:
        """Remove `peer` if it is still the current session for its identity (a replaced
        session's leave is a no-op: the replacement already cleaned up)."""
        participant = peer.participant
        room_id, pid = participant.room_id, participant.id
        async with self._lock(room_id):
            live = self._rooms.get(room_id)
            if live is None or live.peers.get(pid) is not peer:
                return
            del live.peers[pid]
            result = live.control.leave(participant, reason, self._clock())
            held = live.control.apply(result, replan=False, hold_left=True)
            await self._drop_member(room_id, live, pid, held)
            logger.info("leave room=%s participant=%s reason=%s", room_id, pid, reason)

    async def _drop_member(
        self, room_id: str, live: _LiveRoom, pid: str, held: list[dict[str, Any]]
    ) -> None:
        """After a participant left the floor and the peers: store, media, events, Last-N."""
        try:
            await self.store.remove_participant(room_id, pid)
        except Exception:
            logger.exception("store failed removing room=%s participant=%s", room_id, pid)
        for track_id in await self._remove_media(live, pid):
            self.broadcast(room_id, m.track_unpublished(track_id), about=pid)
        for message in held:
            self.broadcast(room_id, message, about=pid)
        live.control.forget(pid)
        live.audience.remove(pid)
        if not live.peers:
            await self._close_room(room_id, live)
        else:
            live.control.after_leave(pid)

    async def _replace(self, live: _LiveRoom, old: Peer) -> None:
        pid = old.participant.id
        replaced = Replaced()
        old.send(m.error(replaced.code, replaced.message))
        old.close(CLOSE_REPLACED, replaced.code)
        room_id = old.participant.room_id
        # Only the old subscriber connection goes: the tracks stay published, and when the
        # bridge publishes again they are re-bound behind the same ids, so everyone else keeps
        # their slot and sees one continuous stream (docs/signaling.md, Identifiers).
        await live.router.reset_subscriber(pid)
        logger.info("replaced room=%s participant=%s", room_id, pid)

    # --- media (straight to the room's Router; errors propagate to the caller) ----------------

    async def auto_subscribe_joined(self, peer: Peer) -> None:
        """After `joined`: subscribe an auto-subscribing peer to every track of the others."""
        p = peer.participant
        if not (peer.auto_subscribe and p.can("subscribe")):
            return
        live = self._live(peer)
        if live.control.subscribe_by_plan:  # a conference: what its Last-N plan shows
            task = live.control.sync_tracks(p.id)
            if task is not None:
                await task
            return
        ids = [t.id for t in self._tracks(live) if t.participant_id != p.id]
        if ids:
            await live.router.subscribe(p.id, ids)

    async def publish(
        self, peer: Peer, sdp: str, sources: dict[str, str]
    ) -> tuple[str, list[TrackInfo]]:
        return await self._live(peer).router.publish(peer.participant.id, sdp, sources)

    async def announce_published(self, peer: Peer, tracks: list[TrackInfo]) -> None:
        """After the publisher's answer: tell everyone, then subscribe the auto-subscribers."""
        if not tracks:
            return
        live = self._live(peer)
        room_id = peer.participant.room_id
        for track in tracks:
            self.broadcast(room_id, m.track_published(track.to_json()), about=track.participant_id)
        # Planned before subscribing: unwatched video is never started.
        shown = any(t.kind == "video" for t in tracks) and live.control.video_published(
            peer.participant.id)
        if live.control.subscribe_by_plan:  # a conference: only those plan and floor give it
            await asyncio.gather(*live.control.sync_published(peer.participant.id, tracks,
                                                              shown))
            return
        ids = [t.id for t in tracks]
        targets = [
            other
            for other in live.peers.values()
            if other is not peer and other.auto_subscribe and other.participant.can("subscribe")
        ]
        results = await asyncio.gather(
            *(live.router.subscribe(t.participant.id, ids) for t in targets),
            return_exceptions=True,
        )
        for target, result in zip(targets, results, strict=True):
            if isinstance(result, BaseException):
                # One subscriber's failure must not stop the others; nothing to reply to.
                logger.warning(
                    "auto-subscribe failed room=%s participant=%s tracks=%s: %r",
                    room_id,
                    target.participant.id,
                    ids,
                    result,
                )

    async def subscribe(self, peer: Peer, track_ids: list[str]) -> None:
        await self._live(peer).router.subscribe(peer.participant.id, track_ids)

    async def unsubscribe(self, peer: Peer, track_ids: list[str]) -> None:
        await self._live(peer).router.unsubscribe(peer.participant.id, track_ids)

    async def subscriber_answer(self, peer: Peer, sdp: str) -> None:
        await self._live(peer).router.subscriber_answer(peer.participant.id, sdp)

    async def add_ice_candidate(
        self, peer: Peer, pc: str, candidate: dict[str, Any] | None
    ) -> None:
        await self._live(peer).router.add_ice_candidate(peer.participant.id, pc, candidate)

    def set_track_muted(self, peer: Peer, track_id: str, muted: bool) -> TrackInfo:
        return self._live(peer).router.set_track_muted(track_id, muted)

    # --- conference control (docs/floor.md) -----------------------------------------------

    async def control(self, peer: Peer, action: str, args: dict[str, Any]) -> dict[str, Any] | None:
        """A floor request from a participant: carried out, or its SignalingError raised.
        Returns the action's data (roll call), if any."""
        live = self._live(peer)
        room_id = peer.participant.room_id
        if action == "remove":
            await self._remove(peer, args)
            return None
        result = live.control.act(peer.participant, action, args, self._clock())
        live.control.apply(result)
        if action in ("lock", "unlock") and result.events:
            # Mirrored in the store: other nodes and the HTTP API see the same lock.
            try:
                await self.store.set_room_attributes(room_id, {"locked": action == "lock"})
            except Exception:
                logger.exception("store failed mirroring the lock room=%s", room_id)
        return result.data

    async def _remove(self, peer: Peer, args: dict[str, Any]) -> None:
        room_id = peer.participant.room_id
        async with self._lock(room_id):  # a membership change, as join and leave
            live = self._live(peer)
            result = live.control.act(peer.participant, "remove", args, self._clock())
            target_id = str(args["target"])
            target = live.peers.pop(target_id, None)
            held = live.control.apply(result, replan=False, hold_left=True)
            if target is not None:
                removed = Removed()
                target.send(m.error(removed.code, removed.message))
                target.close(removed.close_code or 4004, removed.code)
            await self._drop_member(room_id, live, target_id, held)
            logger.info("removed room=%s participant=%s by=%s", room_id, target_id,
                        peer.participant.id)

    def floor_snapshot(self, peer: Peer) -> dict[str, Any]:
        live, pid = self._live(peer), peer.participant.id
        return live.audience.floor_view(live.control.snapshot(pid), pid)

    def report_quality(self, peer: Peer, quality: dict[str, Any]) -> None:
        self._live(peer).control.report_quality(peer.participant.id, quality)

    def set_last_n(self, peer: Peer, n: int) -> int:
        return self._live(peer).control.set_last_n(peer.participant, n)

    async def create_conference(self, spec: ConferenceSpec) -> bool:
        """A conference with its invited bridges (POST /api/rooms). False if the room already
        has a floor (a conference, or an ad-hoc room with people in it): its invited list
        cannot change under a running roll call."""
        async with self._lock(spec.room):
            if spec.room in self._floors or spec.room in self._rooms:
                return False
            await self.store.create_room(spec.room)
            room = await self.store.set_room_attributes(spec.room, spec.attributes())
            self._floors[spec.room] = floor_for(room, self.max_speakers)
            return True

    def events(self, room_id: str, since: int = 0) -> list[FloorEvent] | None:
        """A room's event log after `since` (None: no such room here). For recordings."""
        live = self._rooms.get(room_id)
        floor = live.control.floor if live else self._floors.get(room_id)
        return None if floor is None else floor.log.since(since)

    def media_view(self, room_id: str, participant: str | None = None) -> dict[str, Any] | None:
        live = self._rooms.get(room_id)
        if live is None:
            return None
        return {**live.control.media_view(participant), **live.audience.view()}

    # --- events --------------------------------------------------------------------------------

    def broadcast(self, room_id: str, message: dict[str, Any], exclude: Peer | None = None,
                  about: str | None = None) -> None:
        """To the room's sessions (but `exclude`) whose roster lists `about`, the participant
        the message is about (None: everyone; rooms/roster.py)."""
        live = self._rooms.get(room_id)
        if live is not None:
            live.audience.send(message, exclude, about)

    async def _send_offer(
        self, room_id: str, participant_id: str, sdp: str | None, mids: dict[str, str]
    ) -> None:
        live = self._rooms.get(room_id)
        peer = live.peers.get(participant_id) if live else None
        if peer is None:
            logger.debug(
                "offer for absent participant room=%s participant=%s", room_id, participant_id
            )
            return
        peer.send(m.subscriber_offer(sdp, mids) if sdp is not None else m.remap(mids))

    # --- introspection (metrics, tests) --------------------------------------------------------

    def room_ids(self) -> list[str]:
        return list(self._rooms)

    def participant_count(self) -> int:
        return sum(len(live.peers) for live in self._rooms.values())

    def routers(self) -> dict[str, Router]:
        return {room_id: live.router for room_id, live in self._rooms.items()}

    def tracks(self, room_id: str) -> list[TrackInfo]:
        live = self._rooms.get(room_id)
        return self._tracks(live) if live else []

    async def set_room_attributes(self, room_id: str, attributes: dict[str, Any]) -> Room:
        async with self._lock(room_id):
            await self.store.create_room(room_id)
            room = await self.store.set_room_attributes(room_id, attributes)
            live = self._rooms.get(room_id)
            if "locked" in attributes and live is not None:
                live.control.set_locked(room.locked, self._clock())
            elif "locked" in attributes and room_id in self._floors:
                floor = self._floors[room_id]
                if floor.locked != room.locked:
                    floor.handle(SERVER_ACTOR, "operator", "lock" if room.locked else "unlock",
                                 None, self._clock())
            return room

    async def close(self) -> None:
        """Shutdown: close every Router."""
        for room_id, live in list(self._rooms.items()):
            live.peers.clear()
            await self._close_room(room_id, live)

    # --- internals -----------------------------------------------------------------------------

    def _lock(self, room_id: str) -> asyncio.Lock:
        lock = self._locks.get(room_id)
        if lock is None:
            lock = self._locks[room_id] = asyncio.Lock()
        return lock

    def _live(self, peer: Peer) -> _LiveRoom:
        p = peer.participant
        live = self._rooms.get(p.room_id)
        if live is None or live.peers.get(p.id) is not peer:
            raise NotJoined("this session is no longer in the room")
        return live

    def _make_router(self, room_id: str) -> Router:
        send_offer: SendOffer = functools.partial(self._send_offer, room_id)
        logger.info("router open room=%s", room_id)
        return self._router_factory(room_id, self.sfu_config, send_offer)

    def _floor(self, room: Room) -> FloorControl:
        """A conference's lasting floor, or a new one for an ad-hoc room."""
        floor = self._floors.get(room.id)
        if floor is None:
            floor = floor_for(room, self.max_speakers)
            if is_conference(room):
                self._floors[room.id] = floor
        if room.locked and not floor.locked:  # a lock set through the store before anyone came
            floor.handle(SERVER_ACTOR, "operator", "lock", None, self._clock())
        return floor

    def _open_room(self, room: Room, floor: FloorControl) -> _LiveRoom:
        router = self._make_router(room.id)
        peers: dict[str, Peer] = {}
        last_n = room.attributes.get("last_n")
        featured_only = is_conference(room) and room.attributes.get("roster", FEATURED) == FEATURED
        audience = Audience(Roster(featured_only), peers,
                            lambda pid: [p.track for p in router.producers_of(pid)])
        control = RoomControl(
            floor, router, peers, audience.send, feature=audience.feature,
            last_n=self.last_n if last_n is None else int(last_n), last_n_max=self.last_n_max,
            subscribe_by_plan=is_conference(room),
        )  # fmt: skip
        if is_conference(room):
            # Every bridge's first offer opens a floor audio and video section with nothing in
            # them: the first floor turn fills them by `remap`, not 3,356 offers at once. VP8:
            # what browsers and our client send (an H264 floor gets its sections by offer).
            router.spare_slots = FLOOR_SLOTS
        live = self._rooms[room.id] = _LiveRoom(router, control, audience, peers)
        router.on_subscribers_lost = functools.partial(self._subscribers_lost, peers)
        return live

    @staticmethod
    def _subscribers_lost(peers: dict[str, Peer], pids: list[str]) -> None:
        """Their subscriber connections were on a worker that went away (sfu/span.py): the
        sessions rejoin (1013, like any client of a lost worker) and are placed again."""
        err = errors.Unavailable()
        for pid in pids:
            peer = peers.get(pid)
            if peer is not None:
                peer.send(m.error(err.code, err.message))
                peer.close(errors.CLOSE_TRY_AGAIN, err.code)

    @staticmethod
    def _tracks(live: _LiveRoom) -> list[TrackInfo]:
        try:
            return live.router.tracks()
        except NotImplementedError:  # the Router is still a stub: no media yet
            return []

    @staticmethod
    async def _remove_media(live: _LiveRoom, participant_id: str) -> list[str]:
        # A failing Router must not break a leave (mediasoup: a failing listener cannot break
        # the close): log, and carry on with the membership change.
        try:
            return list(await live.router.remove_participant(participant_id))
        except NotImplementedError:
            return []
        except Exception:
            logger.exception("router failed removing participant=%s", participant_id)
            return []

    async def _close_room(self, room_id: str, live: _LiveRoom) -> None:
        if self._rooms.get(room_id) is live:
            del self._rooms[room_id]
        live.router.on_dominant_speaker = None
        live.audience.close()
        try:
            await live.router.close()
        except NotImplementedError:
            pass
        except Exception:
            logger.exception("router close failed room=%s", room_id)
        if room_id not in self._floors:  # a conference outlives its participants
            try:
                await self.store.delete_room(room_id)
            except Exception:
                logger.exception("store failed deleting room=%s", room_id)
        logger.info("router closed room=%s", room_id)

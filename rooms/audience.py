"""Audience: sends a room's messages to the sessions its Roster says are to be told.

The asyncio shell around rooms/roster.py: one per live room, beside the room's peers. Every
message to a room goes through `send`, tagged with whom it is about; introductions (a
participant that becomes featured) and the coalesced `presence` go out from here too. Sending
only queues (`Peer.send`), so nothing here awaits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from rooms.model import Participant
from rooms.roster import FEATURED, FULL, Roster
from sfu.router import TrackInfo
from signaling import messages as m

if TYPE_CHECKING:
    from rooms.peer import Peer

logger = logging.getLogger(__name__)

PRESENCE_INTERVAL_S = 1.0  # a surge of joins reaches featured-roster bridges once a second


def sees_all(p: Participant) -> bool:
    return p.can("moderate") or p.can("observe_all")


class Audience:
    def __init__(
        self,
        roster: Roster,
        peers: Mapping[str, Peer],
        tracks_of: Callable[[str], list[TrackInfo]],
        *,
        interval_s: float = PRESENCE_INTERVAL_S,
    ) -> None:
        self.roster = roster
        self.peers = peers
        self._tracks_of = tracks_of
        self.interval_s = interval_s
        self._timer: asyncio.TimerHandle | None = None
        self.introductions = 0  # participants introduced (GET /api/rooms/{room}/media)
        self.presences = 0  # `presence` messages (idem)

    # --- membership ------------------------------------------------------------------------

    def add(self, p: Participant) -> None:
        self.roster.add(p.id, sees_all(p))

    def remove(self, pid: str) -> None:
        self.roster.remove(pid)

    def kind_for(self, p: Participant) -> str:
        return self.roster.kind_for(sees_all(p))

    def featured_view(self, viewer: str) -> tuple[list[Participant], list[TrackInfo]]:
        """What a featured-roster `joined` lists: the featured others in join order, their
        tracks and the viewer's own (a reconnecting bridge's stay published). Costs the
        featured, not the room: 3,356 participants and 6,700 tracks at a national surge."""
        featured = self.roster.featured
        people = [peer.participant for pid, peer in self.peers.items()
                  if pid in featured and pid != viewer]
        tracks = [t for pid in [*(p.id for p in people), viewer] for t in self._tracks_of(pid)]
        return people, tracks

    def floor_view(self, snapshot: dict[str, Any], viewer: str) -> dict[str, Any]:
        """A floor snapshot as `viewer`'s roster allows: a featured roster's `hands` lists the
        featured participants', as the hand events it is sent do (its own position is in
        `you`)."""
        if viewer in self.roster.told_all or not self.roster.featured_only:
            return snapshot
        hands = [h for h in snapshot.get("hands", ()) if h["id"] in self.roster.featured]
        return {**snapshot, "hands": hands}

    # --- sending ---------------------------------------------------------------------------

    def send(self, message: dict[str, Any], exclude: Peer | None = None,
             about: str | None = None) -> None:
        """To every session (but `exclude`) whose roster lists `about` (None: everyone)."""
        seq = message.get("seq")
        logged = seq if isinstance(seq, int) else None
        if logged is not None and message["type"] in ("participant_joined", "participant_left"):
            self._arm()  # the count changed: a `presence` within the interval tells it
        if self.roster.public(about):
            cover = self.roster.before_public(logged, len(self.peers))
            if cover is not None:
                self._presence(cover)
            self._deliver(message, self.peers.values(), exclude)
            return
        # The told-all sessions; and the participant itself for what is not logged (its own
        # tracks): a log entry it would get uncovered by `presence` (its own hand; its
        # `floor_state` tells it) would be a gap in its `seq`.
        own = {about} if logged is None else set()
        told = [self.peers[p] for p in {*self.roster.told_all, *own} if p in self.peers]
        self._deliver(message, told, exclude)
        if logged is not None:
            self.roster.skipped(logged)

    def feature(self, pids: Iterable[str]) -> None:
        """These participants matter to everyone now (chairs, floor, spotlight, dominant
        speaker, someone's Last-N plan): introduce the new ones to the featured-roster
        sessions, with their tracks."""
        for pid in pids:
            if not self.roster.feature(pid):
                continue
            peer = self.peers.get(pid)
            if peer is None:
                continue
            self.introductions += 1
            targets = self._featured_sessions(pid)
            self._deliver(m.participant_joined(peer.participant.to_json()), targets, None)
            for track in self._tracks_of(pid):
                self._deliver(m.track_published(track.to_json()), targets, None)

    def view(self) -> dict[str, Any]:
        """For GET /api/rooms/{room}/media."""
        return {"roster": FEATURED if self.roster.featured_only else FULL,
                "featured": sorted(self.roster.featured), "introductions": self.introductions,
                "presences": self.presences}

    def flush(self) -> None:
        """Send the due `presence` now (the timer's callback; tests call it too)."""
        self._timer = None
        cover = self.roster.flush(len(self.peers))
        if cover is not None:
            self._presence(cover)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # --- internals -------------------------------------------------------------------------

    def _featured_sessions(self, exclude_pid: str | None = None) -> list[Peer]:
        told_all = self.roster.told_all
        return [peer for pid, peer in self.peers.items()
                if pid not in told_all and pid != exclude_pid]

    def _presence(self, seq: int) -> None:
        self.presences += 1
        self._deliver(m.presence(seq, len(self.peers)), self._featured_sessions(), None)

    def _arm(self) -> None:
        if self._timer is not None or not self.roster.featured_only:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a synchronous caller): the next logged event covers
            return
        self._timer = loop.call_later(self.interval_s, self.flush)

    @staticmethod
    def _deliver(message: dict[str, Any], peers: Iterable[Peer], exclude: Peer | None) -> None:
        for peer in list(peers):
            if peer is exclude:
                continue
            try:
                peer.send(message)
            except Exception:  # Peer.send must not raise; if one does, the others still get it
                logger.exception("send failed participant=%s", peer.participant.id)

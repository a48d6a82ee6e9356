"""A session as the room side sees it (`Peer`), and what a joiner is told (`JoinSnapshot`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from rooms.model import Participant, Room
from rooms.roster import FULL
from sfu.router import TrackInfo


class Peer(Protocol):
    """A connected session as the manager sees it (signaling.app's connection implements it)."""

    @property
    def participant(self) -> Participant: ...

    @property
    def auto_subscribe(self) -> bool: ...

    def send(self, message: dict[str, Any]) -> None:
        """Queue a message; never blocks, never raises."""
        ...

    def close(self, code: int, reason: str) -> None:
        """Close after what is already queued; never blocks, never raises."""
        ...


@dataclass(frozen=True)
class JoinSnapshot:
    room: Room
    participants: list[Participant]  # the others already in the room that its roster lists
    tracks: list[TrackInfo]
    floor: dict[str, Any] | None = None  # FloorControl.snapshot for the joiner
    last_n: int | None = None
    roster: str = FULL  # rooms/roster.py: FEATURED lists the featured participants only
    participant_count: int = 1  # everyone in the room, the joiner included

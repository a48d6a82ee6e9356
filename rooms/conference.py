"""A conference as created ahead of time (`POST /api/rooms`): its invited bridges and settings.

Pure: validates the request body, turns it into room attributes for the store (so every node
sees the same conference), and builds the room's `FloorControl` back from those attributes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rooms.floor import ROLE_GRANTS, FloorControl, Invitee
from rooms.model import Room
from rooms.roster import ROSTERS

IDENTITY_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")  # as a token's `sub` (signaling.auth)
MAX_TEXT = 128
MAX_INVITED = 10_000  # 3,355 bridges expected nationally, with room for special guests
MAX_LAST_N = 100
MAX_SPEAKERS = 16
MAX_PARTICIPANTS = 100_000
# Room attribute marking a conference created through the API: it outlives its participants
# (an empty ad-hoc room is forgotten, a conference keeps its invited list, bans and event log).
CONFERENCE = "conference"


class ConferenceError(ValueError):
    """The request body is not a valid conference; the text says which field."""


@dataclass(frozen=True)
class ConferenceSpec:
    room: str
    invited: tuple[Invitee, ...] = ()
    last_n: int | None = None
    max_speakers: int | None = None
    max_participants: int | None = None
    roster: str | None = None  # rooms/roster.py: "featured" (the default) or "full"

    def attributes(self) -> dict[str, Any]:
        """What the store keeps: JSON values only."""
        attrs: dict[str, Any] = {
            CONFERENCE: True,
            "invited": [{"id": i.id, "name": i.name, "province": i.province, "role": i.role}
                        for i in self.invited],
        }
        for key in ("last_n", "max_speakers", "max_participants", "roster"):
            if (value := getattr(self, key)) is not None:
                attrs[key] = value
        return attrs


def _text(value: Any, what: str, *, optional: bool) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise ConferenceError(f"'{what}' must be a string of 1-{MAX_TEXT} characters")
    return value


def _count(body: Mapping[str, Any], key: str, low: int, high: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConferenceError(f"'{key}' must be an integer from {low} to {high}")
    return value


def _invitee(entry: Any) -> Invitee:
    if not isinstance(entry, Mapping):
        raise ConferenceError("each of 'invited' must be an object")
    pid = entry.get("id")
    if not isinstance(pid, str) or not IDENTITY_RE.fullmatch(pid):
        raise ConferenceError("'invited[].id' must be 1-64 characters of [A-Za-z0-9._-]")
    role = entry.get("role", "commune")
    if role not in ROLE_GRANTS:
        raise ConferenceError(f"'invited[].role' must be one of {', '.join(ROLE_GRANTS)}")
    name = _text(entry.get("name"), "invited[].name", optional=True)
    province = _text(entry.get("province"), "invited[].province", optional=True)
    return Invitee(pid, name or pid, province, role)


def parse_conference(body: Any) -> ConferenceSpec:
    """`{room, invited: [{id, name?, province?, role?}], last_n?, max_speakers?,
    max_participants?, roster?}` → a spec. Raises ConferenceError."""
    if not isinstance(body, Mapping):
        raise ConferenceError("the body must be a JSON object")
    room = _text(body.get("room"), "room", optional=False)
    assert room is not None
    invited = body.get("invited", [])
    if not isinstance(invited, list) or len(invited) > MAX_INVITED:
        raise ConferenceError(f"'invited' must be a list of at most {MAX_INVITED} bridges")
    invitees = tuple(_invitee(e) for e in invited)
    if len({i.id for i in invitees}) != len(invitees):
        raise ConferenceError("'invited' lists an id twice")
    roster = body.get("roster")
    if roster is not None and roster not in ROSTERS:
        raise ConferenceError(f"'roster' must be one of {', '.join(ROSTERS)}")
    return ConferenceSpec(
        room=room,
        invited=invitees,
        last_n=_count(body, "last_n", 0, MAX_LAST_N),
        max_speakers=_count(body, "max_speakers", 1, MAX_SPEAKERS),
        max_participants=_count(body, "max_participants", 1, MAX_PARTICIPANTS),
        roster=roster,
    )


def is_conference(room: Room) -> bool:
    return bool(room.attributes.get(CONFERENCE))


def floor_for(room: Room, default_max_speakers: int) -> FloorControl:
    """The room's FloorControl, from the invited list and settings stored with it."""
    invited = [
        Invitee(e["id"], e.get("name") or e["id"], e.get("province"), e.get("role", "commune"))
        for e in room.attributes.get("invited", ())
        if isinstance(e, Mapping) and isinstance(e.get("id"), str)
    ]
    max_speakers = room.attributes.get("max_speakers") or default_max_speakers
    return FloorControl(invited=invited, max_speakers=int(max_speakers))

"""In-memory RoomStore: the single-node default. Not shared between processes."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

from rooms.model import Attributes, Participant, Room


def _merge(current: Attributes, changes: Attributes) -> dict[str, object]:
    merged = dict(current)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


class MemoryRoomStore:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._rooms: dict[str, Room] = {}
        # dicts keep insertion order, which is join order
        self._participants: dict[str, dict[str, Participant]] = {}

    async def create_room(self, room_id: str, attributes: Attributes | None = None) -> Room:
        room = self._rooms.get(room_id)
        if room is None:
            room = Room(id=room_id, created_at=self._clock(), attributes=dict(attributes or {}))
            self._rooms[room_id] = room
            self._participants[room_id] = {}
        return room

    async def get_room(self, room_id: str) -> Room | None:
        return self._rooms.get(room_id)

    async def delete_room(self, room_id: str) -> None:
        self._rooms.pop(room_id, None)
        self._participants.pop(room_id, None)

    async def list_rooms(self) -> list[Room]:
        return list(self._rooms.values())

    async def set_room_attributes(self, room_id: str, attributes: Attributes) -> Room:
        room = self._rooms[room_id]
        room = replace(room, attributes=_merge(room.attributes, attributes))
        self._rooms[room_id] = room
        return room

    async def add_participant(self, participant: Participant) -> None:
        members = self._participants[participant.room_id]
        # re-insert so that a rejoin moves to the end of the join order
        members.pop(participant.id, None)
        members[participant.id] = participant

    async def remove_participant(self, room_id: str, participant_id: str) -> Participant | None:
        return self._participants.get(room_id, {}).pop(participant_id, None)

    async def get_participant(self, room_id: str, participant_id: str) -> Participant | None:
        return self._participants.get(room_id, {}).get(participant_id)

    async def list_participants(self, room_id: str) -> list[Participant]:
        return list(self._participants.get(room_id, {}).values())

    async def set_participant_attributes(
        self, room_id: str, participant_id: str, attributes: Attributes
    ) -> Participant:
        members = self._participants[room_id]
        current = members[participant_id]
        updated = replace(current, attributes=_merge(current.attributes, attributes))
        members[participant_id] = updated
        return updated

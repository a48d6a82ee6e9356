"""RoomStore: where room membership lives. An async Protocol with an in-memory default
(rooms.memory) and, later, a Redis one for several nodes.

Called on join, leave and attribute changes only, never per packet or per media message.
Implementations return copies (frozen records), so callers never share mutable state with it.
"""

from __future__ import annotations

from typing import Protocol

from rooms.model import Attributes, Participant, Room


class RoomStore(Protocol):
    async def create_room(self, room_id: str, attributes: Attributes | None = None) -> Room:
        """Create the room, or return it unchanged if it exists (idempotent)."""
        ...

    async def get_room(self, room_id: str) -> Room | None: ...

    async def delete_room(self, room_id: str) -> None:
        """Forget the room and its participants; no error if absent."""
        ...

    async def list_rooms(self) -> list[Room]: ...

    async def set_room_attributes(self, room_id: str, attributes: Attributes) -> Room:
        """Merge `attributes` into the room's (a None value deletes a key). KeyError if absent."""
        ...

    async def add_participant(self, participant: Participant) -> None:
        """Add, or replace the one with the same id. KeyError if the room does not exist."""
        ...

    async def remove_participant(self, room_id: str, participant_id: str) -> Participant | None: ...

    async def get_participant(self, room_id: str, participant_id: str) -> Participant | None: ...

    async def list_participants(self, room_id: str) -> list[Participant]:
        """In join order."""
        ...

    async def set_participant_attributes(
        self, room_id: str, participant_id: str, attributes: Attributes
    ) -> Participant:
        """Merge like set_room_attributes. KeyError if absent."""
        ...

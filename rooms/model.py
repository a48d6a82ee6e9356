"""Control-plane records (LiveKit's words): a Room and the Participants in it.

Plain frozen dataclasses of JSON-able values, so that a store can keep them anywhere (memory
now, Redis later) via `to_dict` / `from_dict`. Media state (tracks) lives in the SFU's Router,
not here: nothing on the packet path reads a store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Attributes = Mapping[str, Any]  # JSON values only


@dataclass(frozen=True)
class Participant:
    id: str  # the token's identity
    room_id: str
    role: str
    name: str
    province: str | None = None
    grants: frozenset[str] = frozenset()  # names, e.g. {"publish", "subscribe"}
    joined_at: float = 0.0  # unix seconds
    attributes: Attributes = field(default_factory=dict)

    def can(self, grant: str) -> bool:
        return grant in self.grants

    def to_json(self) -> dict[str, Any]:
        """The protocol's `<participant>`."""
        return {"id": self.id, "name": self.name, "role": self.role, "province": self.province}

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "room_id": self.room_id,
            "role": self.role,
            "name": self.name,
            "province": self.province,
            "grants": sorted(self.grants),
            "joined_at": self.joined_at,
            "attributes": dict(self.attributes),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Participant:
        return cls(
            id=d["id"],
            room_id=d["room_id"],
            role=d["role"],
            name=d["name"],
            province=d.get("province"),
            grants=frozenset(d.get("grants", ())),
            joined_at=float(d.get("joined_at", 0.0)),
            attributes=dict(d.get("attributes", {})),
        )


@dataclass(frozen=True)
class Room:
    id: str
    created_at: float = 0.0
    # Known keys: "locked" (bool: only moderators may join), "max_participants" (int).
    attributes: Attributes = field(default_factory=dict)

    @property
    def locked(self) -> bool:
        return bool(self.attributes.get("locked", False))

    @property
    def max_participants(self) -> int | None:
        value = self.attributes.get("max_participants")
        return int(value) if value is not None else None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "created_at": self.created_at, "attributes": dict(self.attributes)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Room:
        return cls(
            id=d["id"],
            created_at=float(d.get("created_at", 0.0)),
            attributes=dict(d.get("attributes", {})),
        )

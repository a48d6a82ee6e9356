"""`joined` without encoding the room again for every joiner.

A conference's `joined` lists every participant and every track already there: at 3,356
bridges that is ~940 KB of JSON, and encoding it from scratch was ~20 ms of the event loop per
late joiner (`python -m bench.micro_conference`). The records it lists are immutable
(`Participant`, `TrackInfo`: a change makes a new object), so each one's JSON text is made once
and joined into every `joined` that lists it. The text is exactly what `json.dumps` makes of
the whole message (same separators, `ensure_ascii=False`): the wire does not change.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

from signaling import messages as m

if TYPE_CHECKING:
    from rooms.peer import JoinSnapshot


class _Record(Protocol):
    def to_json(self) -> dict[str, Any]: ...


def dumps(value: Any) -> str:
    """The signaling's one JSON encoding (compact, UTF-8 as is)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class Fragments:
    """JSON text per live record, dropped with the record (weak references)."""

    def __init__(self) -> None:
        self._texts: dict[int, tuple[weakref.ref[Any], str]] = {}
        self.made = 0  # texts encoded (the rest of `text`'s calls were served from here)

    def __len__(self) -> int:
        return len(self._texts)

    def text(self, record: _Record) -> str:
        key = id(record)
        hit = self._texts.get(key)
        if hit is not None and hit[0]() is record:
            return hit[1]
        texts = self._texts
        text = dumps(record.to_json())
        # An id is reused once its object is gone: the callback drops the entry first.
        texts[key] = (weakref.ref(record, lambda _ref: texts.pop(key, None)), text)
        self.made += 1
        return text

    def message(self, message: dict[str, Any], lists: dict[str, Iterable[_Record]]) -> str:
        """`dumps(message)` with each `lists` key set to that list of records, in key order of
        `message` (whose placeholders for those keys are ignored)."""
        parts = []
        for key, value in message.items():
            if key in lists:
                body = "[" + ",".join(self.text(r) for r in lists[key]) + "]"
            else:
                body = dumps(value)
            parts.append(dumps(key) + ":" + body)
        return "{" + ",".join(parts) + "}"


def joined_text(fragments: Fragments, re: Any, room_id: str, me: dict[str, Any],
                snapshot: JoinSnapshot, ice_servers: list[dict[str, Any]],
                keepalive_s: float) -> str:
    """The `joined` a joiner is sent, encoded: the room's participants and tracks from
    `fragments`, the rest as `messages.joined` makes it."""
    msg = m.joined(re, room_id, me, [], [], ice_servers, keepalive_s, floor=snapshot.floor,
                   last_n=snapshot.last_n, roster=snapshot.roster,
                   participant_count=snapshot.participant_count)
    return fragments.message(msg, {"participants": snapshot.participants,
                                   "tracks": snapshot.tracks})

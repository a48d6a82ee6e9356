"""Protocol v1 messages (docs/signaling.md): parse client frames into typed values, build replies.

Pure functions, no I/O. `parse` raises only signaling.errors.ProtocolError subclasses, carrying
the request's `id` as `re` whenever the frame got far enough for it to be read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from signaling.control_messages import (
    CONTROL_PARSERS,
    CONTROL_TYPES,
    Control,
    FloorSnapshot,
    Quality,
    SetLastN,
)
from signaling.errors import BadJson, BadMessage, Re, TooLarge, UnknownType
from signaling.fields import JsonObject
from signaling.fields import read_bool as _bool
from signaling.fields import read_id as _read_id
from signaling.fields import read_int as _int
from signaling.fields import read_pc as _pc
from signaling.fields import read_str as _str
from signaling.fields import read_str_list as _str_list

# The conference-control requests live in their own module; they are messages all the same.
__all__ = ["CONTROL_TYPES", "Control", "FloorSnapshot", "JsonObject", "Quality", "SetLastN"]

PROTOCOL = 1
MAX_MESSAGE_BYTES = 64 * 1024
SOURCES = ("camera", "microphone", "screen")


@dataclass(frozen=True)
class Join:
    id: Re
    protocol: int
    token: str | None
    room: str | None = None
    auto_subscribe: bool = True


@dataclass(frozen=True)
class Publish:
    id: Re
    sdp: str
    sources: dict[str, str]  # mid -> source, as the client declared them


@dataclass(frozen=True)
class Answer:
    """The client's answer to the server's offer for its subscriber pc."""

    id: Re
    sdp: str


@dataclass(frozen=True)
class Subscribe:
    id: Re
    tracks: tuple[str, ...]


@dataclass(frozen=True)
class Unsubscribe:
    id: Re
    tracks: tuple[str, ...]


@dataclass(frozen=True)
class Trickle:
    id: Re
    pc: str
    candidate: JsonObject | None  # None: end of candidates


@dataclass(frozen=True)
class Mute:
    id: Re
    track: str
    muted: bool


@dataclass(frozen=True)
class Ping:
    id: Re


@dataclass(frozen=True)
class Leave:
    id: Re


Message = (
    Join | Publish | Answer | Subscribe | Unsubscribe | Trickle | Mute | Ping | Leave
    | Control | FloorSnapshot | Quality | SetLastN
)  # fmt: skip


# --- size ------------------------------------------------------------------------------------


def check_size(frame: str | bytes, limit: int = MAX_MESSAGE_BYTES) -> None:
    """Raise TooLarge if the frame's UTF-8 size is over `limit`, without encoding when the
    character count already decides it (a char is 1 to 4 bytes)."""
    n = len(frame)
    if n > limit:
        raise TooLarge()
    if isinstance(frame, str) and n * 4 > limit and len(frame.encode("utf-8", "replace")) > limit:
        raise TooLarge()


# --- per type ----------------------------------------------------------------------------------


def _join(o: JsonObject, re: Re) -> Join:
    return Join(
        id=re,
        protocol=_int(o, "protocol", re),
        # token_missing is the session's call (a join without a token is still a join)
        token=_str(o, "token", re, optional=True),
        room=_str(o, "room", re, optional=True),
        auto_subscribe=_bool(o, "auto_subscribe", re, True),
    )


def _publish(o: JsonObject, re: Re) -> Publish:
    sdp = _str(o, "sdp", re)
    tracks = o.get("tracks", [])
    if not isinstance(tracks, list):
        raise BadMessage("'tracks' must be a list", re=re)
    sources: dict[str, str] = {}
    for entry in tracks:
        if not isinstance(entry, dict):
            raise BadMessage("each of 'tracks' must be an object", re=re)
        mid = _str(entry, "mid", re)
        source = entry.get("source")
        if source not in SOURCES:
            raise BadMessage(f"'source' must be one of {', '.join(SOURCES)}", re=re)
        sources[mid] = source
    return Publish(id=re, sdp=sdp, sources=sources)


def _answer(o: JsonObject, re: Re) -> Answer:
    # Only the subscriber pc is offered by the server; the publisher's answer is a reply.
    _pc(o, re, ("subscriber",))
    return Answer(id=re, sdp=_str(o, "sdp", re))


def _trickle(o: JsonObject, re: Re) -> Trickle:
    pc = _pc(o, re)
    if "candidate" not in o:
        raise BadMessage("'candidate' is required (null ends the candidates)", re=re)
    candidate = o["candidate"]
    if candidate is not None and not isinstance(candidate, dict):
        raise BadMessage("'candidate' must be an object or null", re=re)
    return Trickle(id=re, pc=pc, candidate=candidate)


def _mute(o: JsonObject, re: Re) -> Mute:
    muted = o.get("muted")
    if not isinstance(muted, bool):
        raise BadMessage("'muted' must be true or false", re=re)
    return Mute(id=re, track=_str(o, "track", re), muted=muted)


_PARSERS = {
    "join": _join,
    "publish": _publish,
    "answer": _answer,
    "subscribe": lambda o, re: Subscribe(id=re, tracks=_str_list(o, "tracks", re)),
    "unsubscribe": lambda o, re: Unsubscribe(id=re, tracks=_str_list(o, "tracks", re)),
    "trickle": _trickle,
    "mute": _mute,
    "ping": lambda o, re: Ping(id=re),
    "leave": lambda o, re: Leave(id=re),
    **CONTROL_PARSERS,
}
TYPES = frozenset(_PARSERS)


def parse(frame: str | bytes, limit: int = MAX_MESSAGE_BYTES) -> Message:
    """One client frame → one typed message. Binary frames are refused (`bad_message`)."""
    check_size(frame, limit)
    if isinstance(frame, bytes | bytearray):
        raise BadMessage("binary frames are not accepted; send JSON text")
    try:
        obj = json.loads(frame)
    except (ValueError, RecursionError):
        raise BadJson() from None
    if not isinstance(obj, dict):
        raise BadJson()
    re = _read_id(obj)
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise BadMessage("'type' must be a string", re=re)
    parser = _PARSERS.get(kind)
    if parser is None:
        raise UnknownType(re=re)
    return parser(obj, re)


def peek_id(frame: str | bytes) -> Re:
    """The request id of a frame that will not be handled (rate limited), if it has a valid one."""
    try:
        return _read_id(json.loads(frame)) if isinstance(frame, str) else None
    except (ValueError, RecursionError, TypeError, AttributeError, BadMessage):
        return None


# --- server → client ---------------------------------------------------------------------------


def _with_re(msg: JsonObject, re: Re) -> JsonObject:
    if re is not None:
        msg["re"] = re
    return msg


def error(code: str, message: str, re: Re = None) -> JsonObject:
    return _with_re({"type": "error", "code": code, "message": message}, re)


def ok(re: Re) -> JsonObject:
    return _with_re({"type": "ok"}, re)


def pong(re: Re) -> JsonObject:
    return _with_re({"type": "pong"}, re)


def left(re: Re = None) -> JsonObject:
    return _with_re({"type": "left"}, re)


def joined(
    re: Re,
    room_id: str,
    participant: JsonObject,
    participants: list[JsonObject],
    tracks: list[JsonObject],
    ice_servers: list[JsonObject],
    keepalive_s: float,
    floor: JsonObject | None = None,
    last_n: int | None = None,
    roster: str = "full",
    participant_count: int = 1,
) -> JsonObject:
    msg: JsonObject = {
        "type": "joined",
        "protocol": PROTOCOL,
        "room": {"id": room_id},
        "participant": participant,
        "participants": participants,
        "tracks": tracks,
        # "featured": `participants` and `tracks` list the featured participants only
        # (rooms/roster.py); `participant_count` counts everyone, the joiner included.
        "roster": roster,
        "participant_count": participant_count,
        "ice_servers": ice_servers,
        # an integer when it is one: clients compute timers from it
        "keepalive_s": int(keepalive_s) if float(keepalive_s).is_integer() else keepalive_s,
    }
    if floor is not None:
        msg["floor"] = floor
    if last_n is not None:
        msg["last_n"] = last_n
    return _with_re(msg, re)


def publisher_answer(re: Re, sdp: str, tracks: list[JsonObject]) -> JsonObject:
    return _with_re({"type": "answer", "pc": "publisher", "sdp": sdp, "tracks": tracks}, re)


def subscriber_offer(sdp: str, mids: dict[str, str]) -> JsonObject:
    return {"type": "offer", "pc": "subscriber", "sdp": sdp, "mids": dict(mids)}


def remap(mids: dict[str, str]) -> JsonObject:
    """The subscriber connection's sections now carry these tracks (no SDP change, no answer)."""
    return {"type": "remap", "pc": "subscriber", "mids": dict(mids)}


def participant_joined(participant: JsonObject, **logged: Any) -> JsonObject:
    """`logged`: `seq`, `time`, `invited` when the join is in the conference's event log."""
    return {"type": "participant_joined", "participant": participant, **logged}


def participant_left(participant_id: str, reason: str, **logged: Any) -> JsonObject:
    """`logged`: `seq`, `time`, `actor` when the leave is in the conference's event log."""
    return {"type": "participant_left", "participant_id": participant_id, "reason": reason,
            **logged}


def presence(seq: int, participant_count: int) -> JsonObject:
    """To featured-roster sessions: the log entries up to `seq` they were not sent were joins
    and leaves of participants they are not told of (rooms/roster.py)."""
    return {"type": "presence", "seq": seq, "participant_count": participant_count}


def track_published(track: JsonObject) -> JsonObject:
    return {"type": "track_published", "track": track}


def track_unpublished(track_id: str) -> JsonObject:
    return {"type": "track_unpublished", "track_id": track_id}


def track_muted(track_id: str, muted: bool) -> JsonObject:
    return {"type": "track_muted", "track_id": track_id, "muted": muted}


# --- conference control (docs/floor.md) ----------------------------------------------------------


def floor_event(
    kind: str, seq: int, time: float, actor: str | None, participant_id: str | None,
    details: JsonObject,
) -> JsonObject:
    """One conference-log event, as every participant receives it."""
    return {"type": kind, "seq": seq, "time": time, "actor": actor,
            "participant_id": participant_id, **details}


def floor_state(state: JsonObject) -> JsonObject:
    """A participant's own speak state (FloorControl.state_of, without its id)."""
    return {"type": "floor_state", **{k: v for k, v in state.items() if k != "id"}}


def floor_snapshot(re: Re, snapshot: JsonObject) -> JsonObject:
    return _with_re({"type": "floor_snapshot", **snapshot}, re)


def roll_call(re: Re, data: JsonObject) -> JsonObject:
    return _with_re({"type": "roll_call", **data}, re)


def dominant_speaker(participant_id: str) -> JsonObject:
    return {"type": "dominant_speaker", "participant_id": participant_id}


def last_n(re: Re, n: int) -> JsonObject:
    return _with_re({"type": "last_n", "n": n}, re)

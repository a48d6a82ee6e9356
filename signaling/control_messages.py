"""Conference-control requests (docs/signaling.md, "Conference control"): parsed into typed
values for the shell. `Control` carries a FloorControl action (rooms/floor.py) and its args."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from signaling.errors import BadMessage, Re
from signaling.fields import JsonObject, read_int, read_number, read_str


@dataclass(frozen=True)
class Control:
    """A conference-control request (docs/floor.md): `type` as on the wire, `action` and `args`
    as `rooms.floor.FloorControl.handle` takes them (`participant_id` becomes `target`)."""

    id: Re
    type: str
    action: str
    args: JsonObject


@dataclass(frozen=True)
class FloorSnapshot:
    id: Re


@dataclass(frozen=True)
class Quality:
    """What the client measures of its own connection, for the chair's roll call."""

    id: Re
    bitrate_kbps: float
    loss: float
    rtt_ms: float
    jitter_ms: float | None = None


@dataclass(frozen=True)
class SetLastN:
    id: Re
    n: int


# wire type -> (FloorControl action, participant_id: "required" string, "nullable" (present,
# string or null), or "optional"). Any type passes a given participant_id on: the core decides
# whether a bridge may name someone else (raise_hand for another is `forbidden`).
CONTROL_TYPES: dict[str, tuple[str, str]] = {
    "raise_hand": ("raise_hand", "optional"),
    "lower_hand": ("lower_hand", "optional"),
    "give_floor": ("give_floor", "required"),
    "take_floor": ("take_floor", "optional"),
    "mute_participant": ("mute", "required"),
    "unmute_participant": ("unmute", "required"),
    "mute_all": ("mute_all", "optional"),
    "spotlight": ("spotlight", "nullable"),
    "lock_room": ("lock", "optional"),
    "unlock_room": ("unlock", "optional"),
    "remove_participant": ("remove", "required"),
    "readmit_participant": ("readmit", "required"),
    "roll_call": ("roll_call", "optional"),
}
ROLL_STATUSES = ("all", "missing", "connected", "uninvited")
# A page of roll call rows; 200 rows are about 40 KiB of JSON.
MAX_ROLL_LIMIT = 500
MAX_LAST_N = 1000


def _control(kind: str) -> Any:
    action, pid_rule = CONTROL_TYPES[kind]

    def parse_control(o: JsonObject, re: Re) -> Control:
        args: JsonObject = {}
        if pid_rule == "nullable" and "participant_id" not in o:
            raise BadMessage("'participant_id' is required (null clears it)", re=re)
        target = read_str(o, "participant_id", re, optional=pid_rule != "required")
        if target is not None:
            args["target"] = target
        if kind == "roll_call":
            args.update(_roll_call_args(o, re))
        return Control(id=re, type=kind, action=action, args=args)

    return parse_control


def _roll_call_args(o: JsonObject, re: Re) -> JsonObject:
    args: JsonObject = {}
    province = read_str(o, "province", re, optional=True)
    if province is not None:
        args["province"] = province
    status = o.get("status", "all")
    if status not in ROLL_STATUSES:
        raise BadMessage(f"'status' must be one of {', '.join(ROLL_STATUSES)}", re=re)
    args["status"] = status
    for key, default, top in (("offset", 0, 10**9), ("limit", 200, MAX_ROLL_LIMIT)):
        value = o.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= top:
            raise BadMessage(f"'{key}' must be an integer from 0 to {top}", re=re)
        args[key] = value
    return args


def _quality(o: JsonObject, re: Re) -> Quality:
    return Quality(
        id=re,
        bitrate_kbps=read_number(o, "bitrate_kbps", re, 1e7),
        loss=read_number(o, "loss", re, 1.0),
        rtt_ms=read_number(o, "rtt_ms", re, 1e6),
        jitter_ms=read_number(o, "jitter_ms", re, 1e6, optional=True),
    )


def _set_last_n(o: JsonObject, re: Re) -> SetLastN:
    n = read_int(o, "n", re)
    if not 0 <= n <= MAX_LAST_N:
        raise BadMessage(f"'n' must be from 0 to {MAX_LAST_N}", re=re)
    return SetLastN(id=re, n=n)


CONTROL_PARSERS: dict[str, Callable[[JsonObject, Re], Any]] = {
    **{kind: _control(kind) for kind in CONTROL_TYPES},
    "floor_snapshot": lambda o, re: FloorSnapshot(id=re),
    "quality": _quality,
    "set_last_n": _set_last_n,
}

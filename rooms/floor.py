"""Floor control for one conference: who may speak, who is heard, who is shown. Sans-I/O.

The shell feeds actions in (`handle(actor_id, actor_role, action, args, now)`), broadcasts the
`FloorEvent`s each returns, and the SFU asks `audio_allowed(id)`. `now` is always an argument.

Rules (the why is in docs/floor.md): 1. a chair always may speak; others are heard only with the
floor and unmuted (mute overrides floor). 2. At most `max_speakers` holders besides the chair(s);
giving the floor at the limit takes it from the longest holder, lowers the new holder's hand and
lifts its mute. 3. Leaving or removal drops hand, floor and spotlight; a removed identity stays
out until readmitted. 4. A lock refuses identities never admitted (moderators and reconnecting
bridges still get in). 5. Every change appends events; a call that changes nothing has none.

Who may do what (SELF: on itself; MOD: the moderate grant, on anyone). A missing grant is
`forbidden`; a transition missing from SPEAK (a chair target...) is `not_allowed_in_state`.

    action       who          target                        speak state of the target
    -----------  -----------  ----------------------------  -------------------------------
    join         anyone       itself                        (absent) -> idle|always|silent
    leave        SELF         itself                        any -> (absent)
    raise_hand   SELF         itself, needs publish         idle -> hand_raised
    lower_hand   SELF or MOD  present (default: itself)     hand_raised -> idle
    give_floor   MOD          present publisher             idle | hand_raised -> floor
    take_floor   SELF or MOD  holder (MOD default: all)     floor -> idle
    mute/unmute  MOD          present non-chair publisher   (muted flag)
    mute_all     MOD          -                             (muted flag of every non-chair)
    spotlight    MOD          present publisher or none     -
    lock/unlock  MOD          -                             -
    remove       MOD          present, not itself           any -> (absent), banned
    readmit      MOD          a removed identity            (ban lifted)
    roll_call    MOD          -                             - (returns data, logs nothing)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from functools import partialmethod
from typing import Any

Args = Mapping[str, Any]


class ErrorCode(StrEnum):
    """Stable codes, sent on the wire as the `code` of an `error` message."""

    FORBIDDEN = "forbidden"  # the actor's grants do not allow the action
    NOT_JOINED = "not_joined"  # a SELF action by an identity that is not in the conference
    UNKNOWN_PARTICIPANT = "unknown_participant"  # the target is not in the conference
    NOT_ALLOWED_IN_STATE = "not_allowed_in_state"  # e.g. take_floor from a bridge without it
    ROOM_LOCKED = "room_locked"
    REMOVED = "removed"  # join by an identity that a moderator removed
    UNKNOWN_ACTION = "unknown_action"
    BAD_ARGS = "bad_args"


# Mirrors the grants table of docs/signaling.md, limited to what floor control needs.
ROLE_GRANTS: dict[str, frozenset[str]] = {
    "chair": frozenset({"publish", "moderate"}), "operator": frozenset({"moderate"}),
    "province": frozenset({"publish"}), "commune": frozenset({"publish"}),
    "secretary": frozenset(), "observer": frozenset(),
}

# Speak states. ALWAYS is the chair's and SILENT a non-publisher's: no transition leaves either.
IDLE, HAND, FLOOR, ALWAYS, SILENT = "idle", "hand_raised", "floor", "always", "silent"

# (state, action) -> new state. Anything missing is `not_allowed_in_state`.
SPEAK: dict[tuple[str, str], str] = {
    (IDLE, "raise_hand"): HAND,
    (HAND, "raise_hand"): HAND,  # repeated click: no-op
    (IDLE, "lower_hand"): IDLE,  # no-op
    (HAND, "lower_hand"): IDLE,
    (IDLE, "give_floor"): FLOOR,
    (HAND, "give_floor"): FLOOR,  # leaves the queue
    (FLOOR, "give_floor"): FLOOR,  # no-op (or lifts a mute)
    (FLOOR, "take_floor"): IDLE,
    (FLOOR, "preempt"): IDLE,  # internal: the floor went to another bridge at max_speakers
    (IDLE, "mute"): IDLE,  # the muted flag is orthogonal; the chair and non-publishers have none
    (HAND, "mute"): HAND,
    (FLOOR, "mute"): FLOOR,
}

# Who may act: SELF, MOD, or SELF_OR_MOD. What the target must be: PRESENT (a participant;
# SELF actions default it to the actor), OPTIONAL (absent or present), ID (any string), NONE.
SELF, MOD, SELF_OR_MOD = "self", "mod", "self_or_mod"
PRESENT, OPTIONAL, ID, NONE = "present", "optional", "id", "none"
RULES: dict[str, tuple[str, str]] = {
    "leave": (SELF, PRESENT), "raise_hand": (SELF, PRESENT), "lower_hand": (SELF_OR_MOD, PRESENT),
    "give_floor": (MOD, PRESENT), "take_floor": (SELF_OR_MOD, OPTIONAL),
    "mute": (MOD, PRESENT), "unmute": (MOD, PRESENT), "mute_all": (MOD, NONE),
    "spotlight": (MOD, OPTIONAL), "lock": (MOD, NONE), "unlock": (MOD, NONE),
    "remove": (MOD, PRESENT), "readmit": (MOD, ID), "roll_call": (MOD, NONE),
}
LEAVE_REASONS = frozenset({"left", "disconnected", "replaced"})
ROLL_FILTERS: dict[str, Callable[[dict[str, Any]], bool]] = {
    "all": lambda r: True, "uninvited": lambda r: not r["invited"],
    "connected": lambda r: r["connected"], "missing": lambda r: not r["connected"],
}


@dataclass(frozen=True, slots=True)
class Invitee:
    """An expected bridge, from the invited list the conference was created with."""

    id: str
    name: str = ""
    province: str | None = None
    role: str = "commune"


@dataclass(frozen=True, slots=True)
class FloorEvent:
    seq: int  # 1, 2, 3... in log order; a client resumes from a snapshot's `seq`
    type: str
    time: float
    actor: str | None
    target: str | None
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class EventLog:
    """Append-only and ordered; a recording's timeline reads it back with `since`."""

    __slots__ = ("_events",)

    def __init__(self) -> None:
        self._events: list[FloorEvent] = []

    def __len__(self) -> int:
        return len(self._events)

    def append(self, type_: str, now: float, actor: str | None, target: str | None,
               details: dict[str, Any]) -> FloorEvent:
        ev = FloorEvent(len(self._events) + 1, type_, now, actor, target, details)
        self._events.append(ev)
        return ev

    def since(self, seq: int = 0, types: Iterable[str] | None = None) -> list[FloorEvent]:
        """Events after `seq` (seq n sits at index n-1), optionally of some types only."""
        out = self._events[max(seq, 0):]
        wanted = frozenset(types) if types is not None else None
        return out if wanted is None else [e for e in out if e.type in wanted]

    def to_json(self, seq: int = 0) -> list[dict[str, Any]]:
        return [e.to_json() for e in self.since(seq)]


@dataclass(frozen=True, slots=True)
class FloorResult:
    ok: bool
    code: ErrorCode | None = None
    events: tuple[FloorEvent, ...] = ()
    # whose own state changed: they get `floor_state`, the SFU re-reads their audio_allowed
    affected: frozenset[str] = frozenset()
    data: dict[str, Any] | None = None


@dataclass(slots=True)
class _Participant:
    id: str
    role: str
    name: str
    province: str | None
    grants: frozenset[str]
    joined_at: float
    speak: str
    muted: bool = False
    quality: dict[str, Any] | None = None


_OptP = _Participant | None
Outcome = ErrorCode | dict[str, Any] | None  # what a handler returns: an error, data, or plain ok
Handler = Callable[[str, _OptP, str | None, Args, float], Outcome]


class FloorControl:
    """Floor, hands, mutes, spotlight, lock and roll call of one conference."""

    __slots__ = ("_admitted", "_affected", "_events", "_floor", "_hands", "_invited", "_locked",
                 "_participants", "_removed", "_spot", "log", "max_speakers")

    def __init__(self, *, invited: Iterable[Invitee] = (), max_speakers: int = 1) -> None:
        if max_speakers < 1:
            raise ValueError("max_speakers must be >= 1")
        self.max_speakers = max_speakers
        self.log = EventLog()
        self._invited: dict[str, Invitee] = {i.id: i for i in invited}
        self._participants: dict[str, _Participant] = {}
        self._hands: dict[str, float] = {}  # id -> raised at; dict order is the queue order
        self._floor: dict[str, float] = {}  # id -> given at; oldest first, so preempted first
        self._spot: str | None = None
        self._locked = False
        self._admitted: set[str] = set()  # ever joined: may come back while locked
        self._removed: set[str] = set()
        self._events: list[FloorEvent] = []  # what the call in progress appended
        self._affected: set[str] = set()

    # ---- queries: the SFU and the shell ------------------------------------------------------

    def audio_allowed(self, participant_id: str) -> bool:
        p = self._participants.get(participant_id)
        return p is not None and (p.speak == ALWAYS or (p.speak == FLOOR and not p.muted))

    def can_publish(self, participant_id: str) -> bool:
        p = self._participants.get(participant_id)
        return p is not None and "publish" in p.grants

    @property
    def locked(self) -> bool:
        return self._locked

    @property
    def spotlight(self) -> str | None:
        return self._spot

    def chair_ids(self) -> tuple[str, ...]:
        return tuple(p.id for p in self._participants.values() if p.speak == ALWAYS)

    def floor_holders(self) -> tuple[str, ...]:
        return tuple(self._floor)

    def state_of(self, participant_id: str) -> dict[str, Any] | None:
        """What one client is told about itself (`floor_state`)."""
        p = self._participants.get(participant_id)
        if p is None:
            return None
        position = list(self._hands).index(p.id) + 1 if p.id in self._hands else None
        return {"id": p.id, "state": p.speak, "hand_position": position,
                "floor": p.speak in (FLOOR, ALWAYS), "muted": p.muted,
                "audio_allowed": self.audio_allowed(p.id)}

    def snapshot(self, viewer_id: str | None = None) -> dict[str, Any]:
        """State for a client joining late. The muted set can hold thousands of ids, so a viewer
        without the moderate grant gets only its own entry (its `you` says the rest)."""
        viewer = self._participants.get(viewer_id) if viewer_id is not None else None
        full = viewer_id is None or (viewer is not None and "moderate" in viewer.grants)
        snap: dict[str, Any] = {
            "seq": len(self.log), "locked": self._locked, "max_speakers": self.max_speakers,
            "chairs": list(self.chair_ids()), "floor": list(self._floor),
            "hands": [{"id": i, "at": t} for i, t in self._hands.items()],
            "muted": [p.id for p in self._participants.values()
                      if p.muted and (full or p.id == viewer_id)],
            "spotlight": self._spot,
        }
        if viewer_id is not None:
            snap["you"] = self.state_of(viewer_id)
        return snap

    def set_quality(self, participant_id: str, quality: Mapping[str, Any]) -> FloorResult:
        """Connection quality for roll call, measured by the shell. No event: it changes often."""
        p = self._participants.get(participant_id)
        if p is None:
            return FloorResult(False, ErrorCode.UNKNOWN_PARTICIPANT)
        p.quality = dict(quality)
        return FloorResult(True)

    # ---- actions ------------------------------------------------------------------------------

    def handle(self, actor_id: str, actor_role: str, action: str, args: Args | None,
               now: float) -> FloorResult:
        self._events, self._affected = [], set()
        args = args or {}
        outcome = self._dispatch(actor_id, actor_role, action, args, now)
        if isinstance(outcome, ErrorCode):
            assert not self._events, "handlers validate before they change anything"
            return FloorResult(False, outcome)
        return FloorResult(True, None, tuple(self._events), frozenset(self._affected), outcome)

    def _dispatch(self, actor_id: str, actor_role: str, action: str, args: Args,
                  now: float) -> Outcome:
        if action != "join" and action not in RULES:
            return ErrorCode.UNKNOWN_ACTION
        if actor_role not in ROLE_GRANTS:
            return ErrorCode.FORBIDDEN
        if action == "join":
            return self._join(actor_id, actor_role, args, now)
        who, target_kind = RULES[action]
        actor = self._participants.get(actor_id)
        if actor is not None and actor.role != actor_role:
            return ErrorCode.FORBIDDEN
        # An absent moderator (the HTTP API, an ops tool) acts with its role's grants.
        moderator = "moderate" in (actor.grants if actor else ROLE_GRANTS[actor_role])
        target = args.get("target")
        if target is not None and not isinstance(target, str):
            return ErrorCode.BAD_ARGS
        if who == MOD and not moderator:
            return ErrorCode.FORBIDDEN
        if who == SELF or (who == SELF_OR_MOD and not moderator):
            if target not in (None, actor_id):
                return ErrorCode.FORBIDDEN
            if actor is None:
                return ErrorCode.NOT_JOINED
            target = actor_id
        elif who == SELF_OR_MOD and target_kind == PRESENT and target is None:
            target = actor_id
        if target is None and target_kind in (ID, PRESENT):
            return ErrorCode.BAD_ARGS
        t = self._participants.get(target) if target is not None else None
        if t is None and target is not None and target_kind in (PRESENT, OPTIONAL):
            return ErrorCode.UNKNOWN_PARTICIPANT
        handler: Handler = getattr(self, "_" + action)
        return handler(actor_id, t, target, args, now)

    def _emit(self, type_: str, now: float, actor: str | None, target: str | None,
              affects: Iterable[str] = (), **details: Any) -> None:
        self._events.append(self.log.append(type_, now, actor, target, details))
        self._affected.update(affects)

    def _join(self, pid: str, role: str, args: Args, now: float) -> ErrorCode | dict[str, Any]:
        name, province, narrowing = args.get("name", ""), args.get("province"), args.get("grants")
        if not (isinstance(name, str) and isinstance(province, str | None)
                and isinstance(narrowing, Mapping | None)):
            return ErrorCode.BAD_ARGS
        # A token may narrow its role's grants, never widen them.
        grants = frozenset(g for g in ROLE_GRANTS[role]
                           if narrowing is None or narrowing.get(g, True) is not False)
        old = self._participants.get(pid)
        if old is None and pid in self._removed:
            return ErrorCode.REMOVED
        if (old is None and self._locked and "moderate" not in grants
                and pid not in self._admitted):
            return ErrorCode.ROOM_LOCKED
        if old is not None:
            if old.role == role and old.grants == grants:
                # The same bridge reconnecting (signaling's `replaced`): it keeps hand and floor.
                old.name, old.province = name or old.name, province or old.province
                return {"rejoined": True}
            # Different rights: leave and join afresh, so every rule is checked again.
            self._drop(old, now, pid, "replaced")
        speak = ALWAYS if role == "chair" else IDLE if "publish" in grants else SILENT
        self._participants[pid] = _Participant(pid, role, name, province, grants, now, speak)
        self._admitted.add(pid)
        self._emit("participant_joined", now, pid, pid, (pid,), role=role, name=name,
                   province=province, invited=pid in self._invited)
        return {"rejoined": False}

    def _leave(self, actor: str, t: _Participant, target: str, args: Args, now: float) -> Any:
        if (reason := args.get("reason", "left")) not in LEAVE_REASONS:
            return ErrorCode.BAD_ARGS
        return self._drop(t, now, actor, reason)

    def _drop(self, p: _Participant, now: float, actor: str, reason: str) -> None:
        """Consequences first, then `participant_left`, while clients still know the bridge."""
        if self._floor.pop(p.id, None) is not None:
            self._emit("floor_taken", now, actor, p.id, reason=reason)
        if self._hands.pop(p.id, None) is not None:
            self._emit("hand_lowered", now, actor, p.id, reason=reason)
        if self._spot == p.id:
            self._spot = None
            self._emit("spotlight_changed", now, actor, None, reason=reason)
        del self._participants[p.id]
        self._emit("participant_left", now, actor, p.id, (p.id,), reason=reason)

    def _set_hand(self, up: bool, actor: str, t: _Participant, target: str, args: Args,
                  now: float) -> Any:
        if up and "publish" not in t.grants:  # a secretary or an observer has no voice to give
            return ErrorCode.FORBIDDEN
        new = SPEAK.get((t.speak, "raise_hand" if up else "lower_hand"))
        if new is None:
            return ErrorCode.NOT_ALLOWED_IN_STATE
        if new != t.speak:
            t.speak = new
            if up:
                self._hands[t.id] = now
                self._emit("hand_raised", now, actor, t.id, (t.id,), position=len(self._hands))
            else:
                del self._hands[t.id]
                self._emit("hand_lowered", now, actor, t.id, (t.id,),
                           reason="self" if actor == t.id else "moderator")
        return None

    _raise_hand = partialmethod(_set_hand, True)
    _lower_hand = partialmethod(_set_hand, False)

    def _give_floor(self, actor: str, t: _Participant, target: str, args: Args, now: float) -> Any:
        new = SPEAK.get((t.speak, "give_floor"))
        if new is None:
            return ErrorCode.NOT_ALLOWED_IN_STATE
        if t.muted:
            t.muted = False
            self._emit("participant_unmuted", now, actor, t.id, (t.id,), reason="floor")
        if t.speak != FLOOR:
            while len(self._floor) >= self.max_speakers:
                oldest = next(iter(self._floor))
                del self._floor[oldest]
                self._participants[oldest].speak = SPEAK[(FLOOR, "preempt")]
                self._emit("floor_taken", now, actor, oldest, (oldest,), reason="replaced",
                           by=t.id)
            if self._hands.pop(t.id, None) is not None:
                self._emit("hand_lowered", now, actor, t.id, reason="floor")
            t.speak = new
            self._floor[t.id] = now
            self._emit("floor_given", now, actor, t.id, (t.id,))
        return None

    def _take_floor(self, actor: str, t: _OptP, target: str | None, args: Args, now: float) -> Any:
        if t is not None and SPEAK.get((t.speak, "take_floor")) is None:
            return ErrorCode.NOT_ALLOWED_IN_STATE
        targets = [t.id] if t is not None else list(self._floor)  # MOD default: everyone
        if not targets:
            return ErrorCode.NOT_ALLOWED_IN_STATE
        for pid in targets:
            del self._floor[pid]
            self._participants[pid].speak = SPEAK[(FLOOR, "take_floor")]
            reason = "released" if pid == actor else "taken"
            self._emit("floor_taken", now, actor, pid, (pid,), reason=reason)
        return None

    def _set_muted(self, muted: bool, actor: str, t: _Participant, target: str, args: Args,
                   now: float) -> Any:
        if muted and (t.speak, "mute") not in SPEAK:
            return ErrorCode.NOT_ALLOWED_IN_STATE
        if t.muted != muted:
            t.muted = muted
            type_ = "participant_muted" if muted else "participant_unmuted"
            self._emit(type_, now, actor, t.id, (t.id,), reason="moderator")
        return None

    _mute = partialmethod(_set_muted, True)
    _unmute = partialmethod(_set_muted, False)

    def _mute_all(self, actor: str, t: None, target: None, args: Args, now: float) -> Any:
        newly = [p for p in self._participants.values()
                 if (p.speak, "mute") in SPEAK and not p.muted]
        for p in newly:
            p.muted = True
        if newly:  # one event, not thousands: a non-chair client knows it is muted now
            self._emit("muted_all", now, actor, None, (p.id for p in newly), count=len(newly))
        return None

    def _spotlight(self, actor: str, t: _OptP, target: str | None, args: Args, now: float) -> Any:
        if t is not None and "publish" not in t.grants:  # no video to show
            return ErrorCode.NOT_ALLOWED_IN_STATE
        if self._spot != target:
            self._spot = target
            self._emit("spotlight_changed", now, actor, target, reason="moderator")
        return None

    def _set_locked(self, locked: bool, actor: str, t: None, target: None, args: Args,
                    now: float) -> Any:
        if self._locked != locked:
            self._locked = locked
            self._emit("room_locked" if locked else "room_unlocked", now, actor, None)
        return None

    _lock = partialmethod(_set_locked, True)
    _unlock = partialmethod(_set_locked, False)

    def _remove(self, actor: str, t: _Participant, target: str, args: Args, now: float) -> Any:
        if t.speak == ALWAYS or t.id == actor:
            return ErrorCode.NOT_ALLOWED_IN_STATE
        self._removed.add(t.id)
        self._admitted.discard(t.id)
        return self._drop(t, now, actor, "removed")

    def _readmit(self, actor: str, t: None, target: str, args: Args, now: float) -> Any:
        if target not in self._removed:
            return ErrorCode.NOT_ALLOWED_IN_STATE
        self._removed.remove(target)
        self._admitted.add(target)  # it was part of the conference: a lock does not keep it out
        self._emit("participant_readmitted", now, actor, target)
        return None

    def _roll_call(self, actor: str, t: None, target: None, args: Args, now: float) -> Any:
        province, status = args.get("province"), args.get("status", "all")
        offset, limit = args.get("offset", 0), args.get("limit", 200)
        if (status not in ROLL_FILTERS or type(offset) is not int or type(limit) is not int
                or offset < 0 or limit < 0):
            return ErrorCode.BAD_ARGS
        rows = [self._roll_row(i.id, i) for i in self._invited.values()]
        rows += [self._roll_row(p.id, None) for p in self._participants.values()
                 if p.id not in self._invited and p.speak in (IDLE, HAND, FLOOR)]
        exp = Counter(r["province"] or "" for r in rows if r["invited"])
        con = Counter(r["province"] or "" for r in rows if r["invited"] and r["connected"])
        by_province = {k: {"expected": n, "connected": con[k]} for k, n in exp.items()}
        expected, connected = exp.total(), con.total()
        keep = ROLL_FILTERS[status]
        wanted = [r for r in rows if keep(r) and province in (None, r["province"])]
        return {"time": now, "expected": expected, "connected": connected,
                "missing": expected - connected, "by_province": by_province,
                "uninvited": sum(1 for r in rows if not r["invited"]),
                "total": len(wanted), "offset": offset,  # a page: bridges[offset:offset+limit]
                "bridges": wanted[offset:offset + limit]}

    def _roll_row(self, pid: str, inv: Invitee | None) -> dict[str, Any]:
        p = self._participants.get(pid)
        name = p.name if p is not None and p.name else inv.name if inv else ""
        province = p.province if p is not None and p.province else inv.province if inv else None
        return {"id": pid, "name": name, "province": province,
                "role": p.role if p is not None else inv.role if inv else None,
                "invited": inv is not None, "connected": p is not None,
                "joined_at": p.joined_at if p is not None else None,
                "quality": dict(p.quality) if p is not None and p.quality is not None else None,
                "floor": p is not None and p.speak in (FLOOR, ALWAYS),
                "hand": pid in self._hands, "muted": p is not None and p.muted}

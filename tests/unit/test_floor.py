"""FloorControl: rules, permissions, events, roll call. Pure: no clock, no I/O."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rooms.floor import RULES, ErrorCode, FloorControl, FloorResult, Invitee

ROLES = {"hq": "chair", "ops": "operator", "sec": "secretary", "obs": "observer",
         "hn": "province", "hp": "province", "dn": "province", "xa1": "commune", "xa2": "commune"}


def act(f: FloorControl, who: str, action: str, now: float = 1.0, **args: object) -> FloorResult:
    return f.handle(who, ROLES[who], action, args or None, now)


def room(*ids: str, **kw: object) -> FloorControl:
    f = FloorControl(**kw)  # type: ignore[arg-type]
    for i, pid in enumerate(ids):
        assert act(f, pid, "join", float(i), name=pid.upper()).ok
    return f


def types(r: FloorResult) -> list[str]:
    return [e.type for e in r.events]


ALL = ("hq", "ops", "sec", "obs", "hn", "hp", "dn", "xa1", "xa2")


def test_chair_always_speaks_bridges_are_muted_until_given_the_floor() -> None:
    f = room(*ALL)
    assert f.audio_allowed("hq")
    assert not any(f.audio_allowed(p) for p in ALL if p != "hq")
    assert f.chair_ids() == ("hq",)
    assert not f.audio_allowed("nobody")
    assert f.can_publish("xa1") and f.can_publish("hq")
    assert not f.can_publish("sec") and not f.can_publish("ops") and not f.can_publish("nobody")


def test_hand_queue_is_ordered_and_retries_are_harmless() -> None:
    f = room(*ALL)
    r = act(f, "xa2", "raise_hand", 2.0)
    assert r.ok and types(r) == ["hand_raised"] and r.affected == {"xa2"}
    assert r.events[0].details == {"position": 1}
    assert act(f, "hn", "raise_hand", 3.0).events[0].details == {"position": 2}
    again = act(f, "xa2", "raise_hand", 4.0)
    assert again.ok and again.events == ()
    snap = f.snapshot()
    assert snap["hands"] == [{"id": "xa2", "at": 2.0}, {"id": "hn", "at": 3.0}]
    assert f.state_of("hn")["hand_position"] == 2  # type: ignore[index]
    assert act(f, "xa2", "lower_hand").events[0].details == {"reason": "self"}
    assert [h["id"] for h in f.snapshot()["hands"]] == ["hn"]
    assert act(f, "xa2", "lower_hand").events == ()  # already down: no-op


def test_who_may_raise_and_lower_hands() -> None:
    f = room(*ALL)
    assert act(f, "sec", "raise_hand").code is ErrorCode.FORBIDDEN  # cannot publish
    assert act(f, "obs", "raise_hand").code is ErrorCode.FORBIDDEN
    assert act(f, "hq", "raise_hand").code is ErrorCode.NOT_ALLOWED_IN_STATE  # always has it
    assert act(f, "xa1", "raise_hand").ok
    assert act(f, "xa2", "lower_hand", target="xa1").code is ErrorCode.FORBIDDEN
    assert act(f, "xa2", "raise_hand", target="xa1").code is ErrorCode.FORBIDDEN
    r = act(f, "ops", "lower_hand", target="xa1")
    assert r.ok and r.events[0].details == {"reason": "moderator"} and r.events[0].actor == "ops"
    assert f.snapshot()["hands"] == []


def test_give_floor_moves_the_bridge_out_of_the_queue_and_takes_it_from_the_last_one() -> None:
    f = room(*ALL)
    act(f, "hn", "raise_hand")
    act(f, "hp", "raise_hand")
    r = act(f, "hq", "give_floor", 5.0, target="hn")
    assert types(r) == ["hand_lowered", "floor_given"]
    assert f.floor_holders() == ("hn",) and f.audio_allowed("hn")
    assert [h["id"] for h in f.snapshot()["hands"]] == ["hp"]
    r = act(f, "ops", "give_floor", 6.0, target="hp")  # the operator may too
    assert types(r) == ["floor_taken", "hand_lowered", "floor_given"]
    assert r.events[0].target == "hn" and r.events[0].details == {"reason": "replaced", "by": "hp"}
    assert r.affected == {"hn", "hp"}
    assert f.floor_holders() == ("hp",)
    assert not f.audio_allowed("hn") and f.audio_allowed("hp") and f.audio_allowed("hq")
    assert f.state_of("hn")["state"] == "idle"  # type: ignore[index]
    assert act(f, "hq", "give_floor", target="hp").events == ()  # already holds it


def test_give_floor_permissions_and_targets() -> None:
    f = room(*ALL)
    assert act(f, "hn", "give_floor", target="hn").code is ErrorCode.FORBIDDEN
    assert act(f, "sec", "give_floor", target="hn").code is ErrorCode.FORBIDDEN
    assert act(f, "hq", "give_floor", target="ghost").code is ErrorCode.UNKNOWN_PARTICIPANT
    assert act(f, "hq", "give_floor").code is ErrorCode.BAD_ARGS
    assert act(f, "hq", "give_floor", target=7).code is ErrorCode.BAD_ARGS
    assert act(f, "ops", "give_floor", target="hq").code is ErrorCode.NOT_ALLOWED_IN_STATE
    assert act(f, "hq", "give_floor", target="sec").code is ErrorCode.NOT_ALLOWED_IN_STATE
    assert act(f, "hq", "give_floor", target="ops").code is ErrorCode.NOT_ALLOWED_IN_STATE
    assert len(f.log) == len(ALL)  # refusals log nothing


def test_max_speakers_takes_the_floor_from_the_longest_holder() -> None:
    f = room(*ALL, max_speakers=2)
    act(f, "hq", "give_floor", 1.0, target="hn")
    act(f, "hq", "give_floor", 2.0, target="hp")
    assert f.floor_holders() == ("hn", "hp")
    assert f.audio_allowed("hn") and f.audio_allowed("hp")
    r = act(f, "hq", "give_floor", 3.0, target="dn")
    assert [(e.type, e.target) for e in r.events] == [("floor_taken", "hn"), ("floor_given", "dn")]
    assert f.floor_holders() == ("hp", "dn")
    with pytest.raises(ValueError):
        FloorControl(max_speakers=0)


def test_take_floor_back() -> None:
    f = room(*ALL, max_speakers=2)
    assert act(f, "hq", "take_floor").code is ErrorCode.NOT_ALLOWED_IN_STATE  # nobody has it
    act(f, "hq", "give_floor", target="hn")
    act(f, "hq", "give_floor", target="xa1")
    assert act(f, "hq", "take_floor", target="hp").code is ErrorCode.NOT_ALLOWED_IN_STATE
    assert act(f, "hq", "take_floor", target="hq").code is ErrorCode.NOT_ALLOWED_IN_STATE
    assert act(f, "hp", "take_floor", target="hn").code is ErrorCode.FORBIDDEN
    r = act(f, "xa1", "take_floor")  # a holder may hand it back itself
    assert r.ok and r.events[0].target == "xa1" and r.events[0].details == {"reason": "released"}
    act(f, "hq", "give_floor", target="xa1")
    r = act(f, "ops", "take_floor")  # no target: from every holder
    assert sorted(e.target for e in r.events) == ["hn", "xa1"]  # type: ignore[type-var]
    assert all(e.details == {"reason": "taken"} for e in r.events)
    assert f.floor_holders() == () and not f.audio_allowed("hn")
    assert f.audio_allowed("hq")


def test_mute_overrides_floor_and_giving_the_floor_lifts_it() -> None:
    f = room(*ALL)
    act(f, "hq", "give_floor", target="hn")
    r = act(f, "ops", "mute", target="hn")
    assert types(r) == ["participant_muted"] and r.affected == {"hn"}
    assert f.floor_holders() == ("hn",) and not f.audio_allowed("hn")
    assert act(f, "ops", "mute", target="hn").events == ()
    # Giving the floor again to its holder just lifts the mute.
    assert types(act(f, "hq", "give_floor", target="hn")) == ["participant_unmuted"]
    assert f.audio_allowed("hn")
    act(f, "hq", "mute", target="hp")
    assert types(act(f, "hq", "give_floor", target="hp")) == [
        "participant_unmuted", "floor_taken", "floor_given"]
    assert f.audio_allowed("hp")
    assert act(f, "hq", "unmute", target="hp").events == ()


def test_mute_permissions_and_targets() -> None:
    f = room(*ALL)
    assert act(f, "xa1", "mute", target="xa2").code is ErrorCode.FORBIDDEN  # communes cannot
    assert act(f, "hn", "mute_all").code is ErrorCode.FORBIDDEN
    assert act(f, "ops", "mute", target="hq").code is ErrorCode.NOT_ALLOWED_IN_STATE
    assert act(f, "ops", "mute", target="sec").code is ErrorCode.NOT_ALLOWED_IN_STATE
    assert act(f, "ops", "mute", target="ghost").code is ErrorCode.UNKNOWN_PARTICIPANT
    act(f, "hq", "mute", target="xa1")
    r = act(f, "hq", "unmute", target="xa1")
    assert types(r) == ["participant_unmuted"] and r.events[0].details == {"reason": "moderator"}


def test_mute_all_is_one_event_and_spares_the_chair() -> None:
    f = room(*ALL)
    act(f, "hq", "give_floor", target="hn")
    act(f, "hq", "mute", target="xa1")
    r = act(f, "ops", "mute_all")
    assert types(r) == ["muted_all"]
    assert r.events[0].details == {"count": 4}  # hn hp dn xa2; xa1 already, hq never
    assert r.affected == {"hn", "hp", "dn", "xa2"}
    assert f.audio_allowed("hq") and not f.audio_allowed("hn")
    assert sorted(f.snapshot()["muted"]) == ["dn", "hn", "hp", "xa1", "xa2"]
    assert act(f, "ops", "mute_all").events == ()


def test_spotlight() -> None:
    f = room(*ALL)
    r = act(f, "hq", "spotlight", target="dn")
    assert types(r) == ["spotlight_changed"] and f.spotlight == "dn" and r.events[0].target == "dn"
    assert act(f, "hq", "spotlight", target="dn").events == ()
    assert act(f, "hq", "spotlight", target="obs").code is ErrorCode.NOT_ALLOWED_IN_STATE
    assert act(f, "hq", "spotlight", target="ghost").code is ErrorCode.UNKNOWN_PARTICIPANT
    assert act(f, "dn", "spotlight", target="dn").code is ErrorCode.FORBIDDEN
    r = act(f, "ops", "spotlight")  # no target: clear
    assert r.ok and f.spotlight is None and r.events[0].target is None
    act(f, "hq", "spotlight", target="hq")
    assert f.spotlight == "hq"


def test_lock_refuses_strangers_but_not_moderators_or_returning_bridges() -> None:
    f = room("hq", "hn")
    assert act(f, "hn", "lock").code is ErrorCode.FORBIDDEN
    assert types(act(f, "hq", "lock")) == ["room_locked"] and f.locked
    assert act(f, "hq", "lock").events == ()
    assert act(f, "xa1", "join").code is ErrorCode.ROOM_LOCKED
    assert act(f, "ops", "join").ok  # moderators always get in
    act(f, "hn", "leave", reason="disconnected")
    assert act(f, "hn", "join").ok  # was admitted before: a reconnect, not a new join
    assert types(act(f, "ops", "unlock")) == ["room_unlocked"] and not f.locked
    assert act(f, "xa1", "join").ok


def test_leave_drops_hand_floor_and_spotlight_before_the_left_event() -> None:
    f = room(*ALL)
    act(f, "hq", "give_floor", target="hn")
    act(f, "hq", "spotlight", target="hn")
    act(f, "hp", "raise_hand")
    r = act(f, "hn", "leave", 9.0, reason="disconnected")
    assert types(r) == ["floor_taken", "spotlight_changed", "participant_left"]
    assert all(e.details["reason"] == "disconnected" for e in r.events)
    assert f.floor_holders() == () and f.spotlight is None and f.state_of("hn") is None
    r = act(f, "hp", "leave")
    assert types(r) == ["hand_lowered", "participant_left"]
    assert r.events[-1].details == {"reason": "left"}
    assert f.snapshot()["hands"] == []
    assert act(f, "hp", "leave").code is ErrorCode.NOT_JOINED
    assert act(f, "dn", "leave", reason="bored").code is ErrorCode.BAD_ARGS
    assert act(f, "hq", "leave", target="dn").code is ErrorCode.FORBIDDEN


def test_remove_bans_until_readmitted() -> None:
    f = room(*ALL)
    act(f, "xa1", "raise_hand")
    assert act(f, "xa2", "remove", target="xa1").code is ErrorCode.FORBIDDEN
    assert act(f, "ops", "remove", target="hq").code is ErrorCode.NOT_ALLOWED_IN_STATE
    assert act(f, "ops", "remove", target="ops").code is ErrorCode.NOT_ALLOWED_IN_STATE
    r = act(f, "ops", "remove", target="xa1")
    assert types(r) == ["hand_lowered", "participant_left"]
    assert r.events[-1].actor == "ops" and r.events[-1].details == {"reason": "removed"}
    assert act(f, "xa1", "join").code is ErrorCode.REMOVED
    assert act(f, "hq", "readmit", target="xa2").code is ErrorCode.NOT_ALLOWED_IN_STATE
    assert act(f, "hq", "readmit").code is ErrorCode.BAD_ARGS
    act(f, "hq", "lock")
    assert types(act(f, "hq", "readmit", target="xa1")) == ["participant_readmitted"]
    assert act(f, "xa1", "join").ok  # readmitted: even the lock lets it back


def test_rejoin_keeps_state_but_new_rights_start_afresh() -> None:
    f = room(*ALL)
    act(f, "hq", "give_floor", target="hn")
    r = act(f, "hn", "join", name="Ha Noi")
    assert r.ok and r.events == () and r.data == {"rejoined": True}
    assert f.floor_holders() == ("hn",)
    r = f.handle("hn", "province", "join", {"grants": {"publish": False}}, 5.0)
    assert types(r) == ["floor_taken", "participant_left", "participant_joined"]
    assert r.events[1].details == {"reason": "replaced"}
    assert not f.can_publish("hn") and f.floor_holders() == ()
    assert f.handle("hn", "province", "raise_hand", None, 6.0).code is ErrorCode.FORBIDDEN


def test_token_grants_narrow_but_never_widen() -> None:
    f = FloorControl()
    assert f.handle("c", "chair", "join", {"grants": {"moderate": False}}, 0.0).ok
    assert f.handle("x", "commune", "join", {"grants": {"moderate": True}}, 0.0).ok
    assert f.handle("c", "chair", "lock", None, 1.0).code is ErrorCode.FORBIDDEN
    assert f.handle("x", "commune", "lock", None, 1.0).code is ErrorCode.FORBIDDEN
    assert f.handle("y", "commune", "join", {"grants": "all"}, 0.0).code is ErrorCode.BAD_ARGS
    assert f.handle("y", "commune", "join", {"name": 5}, 0.0).code is ErrorCode.BAD_ARGS


def test_dispatch_errors() -> None:
    f = room("hq", "hn")
    assert act(f, "hq", "dance").code is ErrorCode.UNKNOWN_ACTION
    assert f.handle("hq", "emperor", "lock", None, 1.0).code is ErrorCode.FORBIDDEN
    assert f.handle("hn", "chair", "lock", None, 1.0).code is ErrorCode.FORBIDDEN  # role mismatch
    assert act(f, "xa1", "raise_hand").code is ErrorCode.NOT_JOINED
    # An absent moderator (the HTTP API) acts with its role's grants.
    assert f.handle("api", "operator", "give_floor", {"target": "hn"}, 2.0).ok
    assert f.handle("api", "observer", "lock", None, 2.0).code is ErrorCode.FORBIDDEN
    assert f.log.since(len(f.log) - 1)[0].actor == "api"
    assert set(RULES) | {"join"} >= {"raise_hand", "mute_all", "roll_call", "readmit"}


def test_roll_call_expected_against_connected_with_quality() -> None:
    invited = [Invitee("hn", "Hà Nội", "HN", "province"), Invitee("xa1", "Xã 1", "HN"),
               Invitee("hp", "Hải Phòng", "HP", "province"), Invitee("xa2", "Xã 2", "HP")]
    f = FloorControl(invited=invited)
    for pid in ("hq", "hn", "xa2", "dn"):
        act(f, pid, "join", 1.0, province={"dn": "DN"}.get(pid))
    assert f.set_quality("hn", {"rtt_ms": 40, "loss": 0.01}).ok
    assert f.set_quality("ghost", {}).code is ErrorCode.UNKNOWN_PARTICIPANT
    assert act(f, "xa2", "roll_call").code is ErrorCode.FORBIDDEN
    d = act(f, "ops", "roll_call", 7.0).data  # ops is not even joined: the HTTP API case
    assert d is not None
    assert (d["expected"], d["connected"], d["missing"], d["uninvited"]) == (4, 2, 2, 1)
    assert d["by_province"] == {"HN": {"expected": 2, "connected": 1},
                                "HP": {"expected": 2, "connected": 1}}
    rows = {r["id"]: r for r in d["bridges"]}
    assert set(rows) == {"hn", "xa1", "hp", "xa2", "dn"}  # the chair is not a bridge here
    assert rows["hn"]["quality"] == {"rtt_ms": 40, "loss": 0.01} and rows["hn"]["connected"]
    assert rows["hn"]["name"] == "Hà Nội" and rows["hn"]["joined_at"] == 1.0
    assert rows["xa1"] == {"id": "xa1", "name": "Xã 1", "province": "HN", "role": "commune",
                           "invited": True, "connected": False, "joined_at": None,
                           "quality": None, "floor": False, "hand": False, "muted": False}
    assert rows["dn"]["invited"] is False and rows["dn"]["province"] == "DN"
    assert len(f.log) == 4  # a roll call changes nothing


def test_roll_call_filters_and_pages() -> None:
    invited = [Invitee(f"x{i:04d}", province="P1" if i % 2 else "P2") for i in range(3321)]
    f = FloorControl(invited=invited)
    for i in range(0, 3321, 3):
        f.handle(f"x{i:04d}", "commune", "join", None, 1.0)
    call = lambda **a: f.handle("ops", "operator", "roll_call", a, 2.0)  # noqa: E731
    d = call(status="missing", province="P1", offset=10, limit=50).data
    assert d is not None and len(d["bridges"]) == 50 and d["offset"] == 10
    assert all(r["province"] == "P1" and not r["connected"] for r in d["bridges"])
    assert d["total"] == sum(1 for i in range(3321) if i % 2 and i % 3)
    assert d["expected"] == 3321 and d["connected"] == 1107
    assert len(json.dumps(d)) < 64 * 1024  # one page fits a signaling message
    assert call(status="connected", limit=5000).data["total"] == 1107  # type: ignore[index]
    assert call(status="bogus").code is ErrorCode.BAD_ARGS
    assert call(limit=-1).code is ErrorCode.BAD_ARGS
    assert call(offset=True).code is ErrorCode.BAD_ARGS


def test_snapshot_for_a_late_joiner() -> None:
    f = room(*ALL)
    act(f, "hq", "give_floor", target="hn")
    act(f, "xa1", "raise_hand", 3.0)
    act(f, "hq", "mute", target="xa2")
    act(f, "hq", "mute", target="dn")
    act(f, "hq", "spotlight", target="hp")
    s = f.snapshot("dn")
    assert s["seq"] == len(f.log) and s["chairs"] == ["hq"] and s["floor"] == ["hn"]
    assert s["hands"] == [{"id": "xa1", "at": 3.0}] and s["spotlight"] == "hp"
    assert s["muted"] == ["dn"]  # a bridge sees only its own mute...
    assert s["you"] == {"id": "dn", "state": "idle", "hand_position": None, "floor": False,
                        "muted": True, "audio_allowed": False}
    assert sorted(f.snapshot("ops")["muted"]) == ["dn", "xa2"]  # ...a moderator all
    assert f.snapshot()["locked"] is False and "you" not in f.snapshot()


def test_event_log_is_ordered_queryable_and_json() -> None:
    f = room("hq", "hn", "hp")
    act(f, "hn", "raise_hand", 5.0)
    act(f, "hq", "give_floor", 6.0, target="hn")
    events = f.log.since()
    assert [e.seq for e in events] == list(range(1, len(f.log) + 1))
    assert [e.type for e in f.log.since(3)] == ["hand_raised", "hand_lowered", "floor_given"]
    assert [e.seq for e in f.log.since(0, types=["floor_given"])] == [6]
    data = json.loads(json.dumps(f.log.to_json()))
    assert data[-1] == {"seq": 6, "type": "floor_given", "time": 6.0, "actor": "hq",
                        "target": "hn", "details": {}}
    assert f.log.to_json(5) == [data[-1]]


# ---- any sequence of actions keeps the invariants --------------------------------------------

ACTORS = ["hq", "ops", "sec", "hn", "hp", "xa1", "xa2"]
ACTIONS = [*sorted(RULES), "join"]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(ACTORS), st.sampled_from(ACTIONS),
                          st.one_of(st.none(), st.sampled_from(ACTORS))), max_size=60),
       st.integers(1, 3))
def test_invariants_hold_after_any_sequence(steps: list[tuple[str, str, str | None]],
                                            max_speakers: int) -> None:
    f = FloorControl(max_speakers=max_speakers)
    for now, (who, action, target) in enumerate(steps):
        before = len(f.log)
        r = f.handle(who, ROLES[who], action, {"target": target} if target else None, now)
        assert r.ok or (r.events == () and len(f.log) == before)
        assert [e.seq for e in r.events] == list(range(before + 1, len(f.log) + 1))
        present = set(f.snapshot()["chairs"]) | {p for p in ACTORS if f.state_of(p)}
        holders = set(f.floor_holders())
        assert len(holders) <= max_speakers and holders <= present
        assert not holders & {h["id"] for h in f.snapshot()["hands"]}
        assert {h["id"] for h in f.snapshot()["hands"]} <= present
        assert f.spotlight is None or f.spotlight in present
        for p in ACTORS:
            s = f.state_of(p)
            heard = s is not None and (ROLES[p] == "chair" or (p in holders and not s["muted"]))
            assert f.audio_allowed(p) == heard
    json.dumps(f.log.to_json())

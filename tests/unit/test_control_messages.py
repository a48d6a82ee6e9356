"""Conference-control messages (docs/signaling.md, "Conference control"): parsing, builders,
and how SessionCore hands them to the shell. Pure: no sockets, no clocks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from signaling import messages as m
from signaling.auth import issue_token, verify_token
from signaling.errors import BadMessage, ProtocolError
from signaling.session import Close, Request, Send
from tests.unit.test_session import SECRET, WALL, frame, joined


def parse(obj: dict[str, Any]) -> m.Message:
    return m.parse(json.dumps(obj))


def code_of(obj: dict[str, Any]) -> tuple[str, Any]:
    with pytest.raises(ProtocolError) as info:
        parse(obj)
    return info.value.code, info.value.re


@pytest.mark.parametrize(
    ("wire", "action"),
    [("raise_hand", "raise_hand"), ("lower_hand", "lower_hand"), ("take_floor", "take_floor"),
     ("mute_all", "mute_all"), ("lock_room", "lock"), ("unlock_room", "unlock"),
     ("roll_call", "roll_call")],
)  # fmt: skip
def test_requests_without_a_required_target(wire: str, action: str) -> None:
    msg = parse({"type": wire, "id": 7})
    assert isinstance(msg, m.Control) and (msg.id, msg.type, msg.action) == (7, wire, action)
    with_target = parse({"type": wire, "participant_id": "xa-1"})
    assert isinstance(with_target, m.Control) and with_target.args["target"] == "xa-1"


@pytest.mark.parametrize(
    ("wire", "action"),
    [("give_floor", "give_floor"), ("mute_participant", "mute"),
     ("unmute_participant", "unmute"), ("remove_participant", "remove"),
     ("readmit_participant", "readmit")],
)  # fmt: skip
def test_requests_that_need_a_participant(wire: str, action: str) -> None:
    msg = parse({"type": wire, "id": "a", "participant_id": "xa-1"})
    assert msg == m.Control("a", wire, action, {"target": "xa-1"})
    assert code_of({"type": wire, "id": 1}) == ("bad_message", 1)
    assert code_of({"type": wire, "id": 1, "participant_id": 5}) == ("bad_message", 1)


def test_spotlight_takes_an_id_or_null_but_not_nothing() -> None:
    assert parse({"type": "spotlight", "participant_id": "hn"}) == m.Control(
        None, "spotlight", "spotlight", {"target": "hn"})
    assert parse({"type": "spotlight", "participant_id": None}) == m.Control(
        None, "spotlight", "spotlight", {})
    assert code_of({"type": "spotlight", "id": 2}) == ("bad_message", 2)


def test_roll_call_arguments_are_checked_and_defaulted() -> None:
    msg = parse({"type": "roll_call", "province": "HN", "status": "missing", "limit": 50})
    assert isinstance(msg, m.Control)
    assert msg.args == {"province": "HN", "status": "missing", "offset": 0, "limit": 50}
    assert parse({"type": "roll_call"}).args == {  # type: ignore[union-attr]
        "status": "all", "offset": 0, "limit": 200}
    for bad in ({"status": "gone"}, {"offset": -1}, {"limit": 501}, {"limit": True},
                {"province": 3}, {"offset": 1.5}):  # fmt: skip
        assert code_of({"type": "roll_call", "id": 3, **bad}) == ("bad_message", 3)


def test_quality_and_set_last_n() -> None:
    assert parse({"type": "quality", "bitrate_kbps": 800, "loss": 0.5, "rtt_ms": 40}) == \
        m.Quality(None, 800.0, 0.5, 40.0, None)
    assert parse({"type": "quality", "bitrate_kbps": 0, "loss": 0, "rtt_ms": 0,
                  "jitter_ms": 3}) == m.Quality(None, 0.0, 0.0, 0.0, 3.0)  # fmt: skip
    for bad in ({"loss": 1.5}, {"loss": -0.1}, {"loss": True}, {"rtt_ms": "40"},
                {"bitrate_kbps": None}, {"rtt_ms": float("nan")}, {"jitter_ms": -1}):  # fmt: skip
        obj = {"type": "quality", "id": 4, "bitrate_kbps": 1, "loss": 0, "rtt_ms": 1, **bad}
        with pytest.raises(BadMessage):
            m.parse(json.dumps(obj))
    assert parse({"type": "set_last_n", "n": 3}) == m.SetLastN(None, 3)
    assert code_of({"type": "set_last_n", "id": 5, "n": -1}) == ("bad_message", 5)
    assert code_of({"type": "set_last_n", "id": 5, "n": 1001}) == ("bad_message", 5)
    assert parse({"type": "floor_snapshot", "id": 6}) == m.FloorSnapshot(6)


def test_builders_follow_the_doc() -> None:
    assert m.floor_event("hand_raised", 3, 1.5, "xa-1", "xa-1", {"position": 2}) == {
        "type": "hand_raised", "seq": 3, "time": 1.5, "actor": "xa-1", "participant_id": "xa-1",
        "position": 2}  # fmt: skip
    state = {"id": "xa-1", "state": "floor", "hand_position": None, "floor": True,
             "muted": False, "audio_allowed": True}  # fmt: skip
    assert m.floor_state(state) == {"type": "floor_state", **{k: v for k, v in state.items()
                                                               if k != "id"}}
    assert m.dominant_speaker("hn") == {"type": "dominant_speaker", "participant_id": "hn"}
    assert m.last_n(9, 2) == {"type": "last_n", "re": 9, "n": 2}
    assert m.roll_call(1, {"expected": 3})["re"] == 1
    assert m.floor_snapshot(None, {"seq": 4}) == {"type": "floor_snapshot", "seq": 4}
    assert m.participant_left("a", "removed", seq=4, time=1.0, actor="hq") == {
        "type": "participant_left", "participant_id": "a", "reason": "removed", "seq": 4,
        "time": 1.0, "actor": "hq"}  # fmt: skip
    assert m.left(3) == {"type": "left", "re": 3} and m.left() == {"type": "left"}


def test_session_hands_control_requests_to_the_shell_and_leave_replies_with_re() -> None:
    core, _ = joined("commune")
    for obj in ({"type": "give_floor", "id": 2, "participant_id": "x"},
                {"type": "quality", "bitrate_kbps": 1, "loss": 0, "rtt_ms": 1},
                {"type": "set_last_n", "n": 1}, {"type": "floor_snapshot"}):  # fmt: skip
        actions = core.receive(json.dumps(obj))
        assert [type(a) for a in actions] == [Request], obj
    actions = core.receive(frame(type="leave", id=9))
    assert [type(a) for a in actions] == [Request, Send, Close]
    assert actions[1].message == {"type": "left", "re": 9}  # type: ignore[union-attr]


def test_tokens_may_carry_an_id_that_connections_are_counted_by() -> None:
    token = issue_token(SECRET, "r", "xa-1", "commune", now=WALL, jti="t-1")
    assert verify_token(SECRET, token, now=WALL).jti == "t-1"
    assert verify_token(SECRET, issue_token(SECRET, "r", "xa-1", "commune", now=WALL),
                        now=WALL).jti is None  # fmt: skip
    with pytest.raises(ValueError):
        issue_token(SECRET, "r", "xa-1", "commune", jti="")

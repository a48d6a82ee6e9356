"""SessionCore fed frames directly (no sockets, manual clocks).

The RoomManager with its real Router is tested in tests/integration/test_manager.py, and the
asyncio shell (signaling.app.Connection) over real websockets in tests/integration/test_shell.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from sfu.router import SdpError, SfuError, UnknownTrackError
from signaling import messages as m
from signaling.auth import issue_token
from signaling.config import SignalingConfig
from signaling.errors import Forbidden, RoomFull
from signaling.session import Close, JoinRequest, Request, Send, SessionCore, State

SECRET = "session-test-secret-" + "0" * 32
WALL = 1_800_000_000.0


class ManualClock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make(**over: Any) -> tuple[SessionCore, ManualClock]:
    clock = ManualClock()
    config = SignalingConfig(secret=SECRET, web_root=None, **over)
    return SessionCore(config, clock=clock, wall_clock=lambda: WALL), clock


def frame(**msg: Any) -> str:
    return json.dumps(msg)


def token(role: str = "commune", identity: str = "xa-1", room: str = "r", **kw: Any) -> str:
    return issue_token(SECRET, room, identity, role, now=WALL, **kw)


def joined(role: str = "commune", identity: str = "xa-1") -> tuple[SessionCore, ManualClock]:
    core, clock = make()
    actions = core.receive(frame(type="join", id=1, protocol=1, token=token(role, identity)))
    assert [type(a) for a in actions] == [JoinRequest]
    core.join_accepted()
    assert core.state is State.JOINED
    return core, clock


def errors(actions: list[Any]) -> list[tuple[str, Any]]:
    return [
        (a.message["code"], a.message.get("re"))
        for a in actions
        if isinstance(a, Send) and a.message["type"] == "error"
    ]


def closes(actions: list[Any]) -> list[int]:
    return [a.code for a in actions if isinstance(a, Close)]


# --- awaiting join ---------------------------------------------------------------------------


def test_anything_before_join_is_not_joined_and_stays_open() -> None:
    core, _ = make()
    for msg in (
        {"type": "ping", "id": 1},
        {"type": "publish", "id": 2, "sdp": "v=0"},
        {"type": "leave", "id": 3},
    ):
        actions = core.receive(json.dumps(msg))
        assert errors(actions) == [("not_joined", msg["id"])] and closes(actions) == []
    assert core.state is State.AWAITING_JOIN


def test_join_with_a_good_token_asks_the_shell_to_join() -> None:
    core, _ = make()
    [action] = core.receive(
        frame(
            type="join",
            id=1,
            protocol=1,
            token=token("chair", "hq"),
            room="r",
            auto_subscribe=False,
        )
    )
    assert isinstance(action, JoinRequest)
    assert (action.grant.identity, action.grant.role, action.message.id) == ("hq", "chair", 1)
    assert core.state is State.JOINING and core.auto_subscribe is False
    assert core.participant_id == "hq"
    core.join_accepted()
    assert core.state is State.JOINED


@pytest.mark.parametrize(
    ("fields", "code", "close"),
    [
        ({}, "token_missing", 4001),
        ({"token": ""}, "token_missing", 4001),
        ({"token": "junk"}, "token_invalid", 4001),
        (
            {"token": issue_token("other-" + "1" * 40, "r", "a", "chair", now=WALL)},
            "token_invalid",
            4001,
        ),
        (
            {"token": issue_token(SECRET, "r", "a", "chair", ttl_s=10, now=WALL - 60)},
            "token_expired",
            4001,
        ),
        ({"token": token(), "room": "elsewhere"}, "wrong_room", 4001),
        ({"token": token(), "protocol": 2}, "unsupported_protocol", 4002),
    ],
)
def test_refused_joins_reply_and_close(fields: dict[str, Any], code: str, close: int) -> None:
    core, _ = make()
    actions = core.receive(frame(type="join", id=9, **{"protocol": 1, **fields}))
    assert errors(actions) == [(code, 9)]
    assert closes(actions) == [close]
    assert isinstance(actions[0], Send) and isinstance(actions[-1], Close)
    assert core.state is State.CLOSED
    assert core.receive(frame(type="ping")) == []  # closed: nothing further


def test_join_timeout_after_ten_seconds() -> None:
    core, clock = make()
    assert core.deadline() == 10.0
    clock.t = 9.99
    assert core.tick() == []
    clock.t = 10.0
    actions = core.tick()
    assert errors(actions) == [("join_timeout", None)] and closes(actions) == [4001]
    assert core.deadline() is None


def test_join_failure_in_the_room_returns_to_awaiting_join_unless_it_closes() -> None:
    core, _ = make()
    core.receive(frame(type="join", id=1, protocol=1, token=token()))
    actions = core.fail(RuntimeError("db exploded: password=hunter2"), 1, context="join")
    assert errors(actions) == [("internal", 1)] and closes(actions) == []
    assert "hunter2" not in json.dumps([a.message for a in actions if isinstance(a, Send)])
    assert core.state is State.AWAITING_JOIN and core.grant is None
    core.receive(frame(type="join", id=2, protocol=1, token=token()))
    actions = core.fail(RoomFull(), 2)
    assert errors(actions) == [("room_full", 2)] and closes(actions) == [4003]
    assert core.state is State.CLOSED


# --- joined ------------------------------------------------------------------------------------


def test_ping_pong_and_second_join() -> None:
    core, _ = joined()
    assert core.receive(frame(type="ping", id="p")) == [Send({"type": "pong", "re": "p"})]
    actions = core.receive(frame(type="join", id=2, protocol=1, token=token()))
    assert errors(actions) == [("already_joined", 2)] and closes(actions) == []


def test_requests_go_to_the_shell_in_order() -> None:
    core, _ = joined()
    for msg in (
        {"type": "publish", "id": 1, "sdp": "v=0"},
        {"type": "subscribe", "id": 2, "tracks": ["chair/camera"]},
        {"type": "unsubscribe", "id": 3, "tracks": ["chair/camera"]},
        {"type": "answer", "pc": "subscriber", "sdp": "v=0"},
        {"type": "trickle", "pc": "publisher", "candidate": None},
        {"type": "mute", "id": 4, "track": "xa-1/microphone", "muted": True},
    ):
        [action] = core.receive(json.dumps(msg))
        assert isinstance(action, Request) and action.message == m.parse(json.dumps(msg))


def test_leave_asks_to_leave_then_replies_left_and_closes_1000() -> None:
    core, _ = joined()
    actions = core.receive(frame(type="leave"))
    assert isinstance(actions[0], Request) and isinstance(actions[0].message, m.Leave)
    assert actions[1:] == [Send({"type": "left"}), Close(1000, "left")]
    assert core.state is State.CLOSED


@pytest.mark.parametrize("role", ["observer", "secretary", "operator"])
def test_roles_without_publish_are_forbidden_to_publish(role: str) -> None:
    core, _ = joined(role)
    actions = core.receive(frame(type="publish", id=5, sdp="v=0"))
    assert errors(actions) == [("forbidden", 5)] and closes(actions) == []
    actions = core.receive(frame(type="trickle", id=6, pc="publisher", candidate=None))
    assert errors(actions) == [("forbidden", 6)]
    # the subscriber side is theirs
    [action] = core.receive(frame(type="trickle", pc="subscriber", candidate=None))
    assert isinstance(action, Request)


def test_narrowed_grants_forbid_subscribe() -> None:
    core, _ = make()
    core.receive(frame(type="join", protocol=1, token=token(grants={"subscribe": False})))
    core.join_accepted()
    assert errors(core.receive(frame(type="subscribe", id=1, tracks=["a/camera"]))) == [
        ("forbidden", 1)
    ]
    [action] = core.receive(frame(type="unsubscribe", id=2, tracks=["a/camera"]))
    assert isinstance(action, Request)


def test_only_the_owner_mutes_a_track() -> None:
    core, _ = joined(identity="xa-1")
    assert errors(core.receive(frame(type="mute", id=1, track="chair/camera", muted=True))) == [
        ("forbidden", 1)
    ]
    # a prefix of another identity is not ownership
    assert errors(core.receive(frame(type="mute", id=2, track="xa-10/camera", muted=True))) == [
        ("forbidden", 2)
    ]
    [action] = core.receive(frame(type="mute", id=3, track="xa-1/camera", muted=False))
    assert isinstance(action, Request)


def test_keepalive_closes_4010_after_three_silent_periods() -> None:
    core, clock = joined()
    assert core.deadline() == 45.0
    clock.t = 30.0
    core.receive(frame(type="ping"))
    assert core.deadline() == 75.0
    clock.t = 74.9
    assert core.tick() == []
    clock.t = 75.0
    assert core.tick() == [Close(4010, "keepalive_timeout")]
    assert core.state is State.CLOSED and core.deadline() is None


# --- malformed frames and limits -------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{bad", "bad_json"),
        ("[]", "bad_json"),
        (b"\x00\x01", "bad_message"),
        ('{"type": "dance", "id": 3}', "unknown_type"),
        ('{"type": "mute", "id": 3}', "bad_message"),
    ],
)
def test_malformed_frames_get_errors_and_stay_open(raw: str | bytes, code: str) -> None:
    core, _ = joined()
    actions = core.receive(raw)
    assert [c for c, _ in errors(actions)] == [code] and closes(actions) == []
    assert core.state is State.JOINED


def test_too_large_closes_1009_even_before_join() -> None:
    core, _ = make()
    actions = core.receive("x" * 65537)
    assert errors(actions) == [("too_large", None)] and closes(actions) == [1009]


def test_flooding_is_limited_then_closed_4008() -> None:
    core, _ = joined()
    # the join used one message of the burst of 50
    replies = [core.receive(frame(type="ping", id=i)) for i in range(49 + 200)]
    assert all(r == [Send({"type": "pong", "re": i})] for i, r in enumerate(replies[:49]))
    assert all(errors(r) == [("rate_limited", i + 49)] for i, r in enumerate(replies[49:]))
    assert not any(closes(r) for r in replies)
    actions = core.receive(frame(type="ping", id="last"))
    assert errors(actions) == [("rate_limited", "last")] and closes(actions) == [4008]


# --- turning request failures into replies -------------------------------------------------


def test_fail_maps_sfu_codes_and_hides_everything_else() -> None:
    core, _ = joined()
    [reply] = core.fail(SdpError("aiortc said: secret internals"), 7)
    assert isinstance(reply, Send)
    assert reply.message == {
        "type": "error",
        "code": "bad_sdp",
        "message": "SDP could not be parsed or negotiated",
        "re": 7,
    }
    assert errors(core.fail(UnknownTrackError("x"), 8)) == [("unknown_track", 8)]
    assert errors(core.fail(SfuError("generic"), 9)) == [("internal", 9)]
    [reply] = core.fail(NotImplementedError("Router stub"), 10)
    assert isinstance(reply, Send)
    assert reply.message["code"] == "internal" and "stub" not in reply.message["message"]
    assert errors(core.fail(Forbidden(re=3), 11)) == [("forbidden", 3)]
    assert core.state is State.JOINED

"""SessionCore fed frames directly (no sockets, manual clocks); RoomManager with a fake Router;
the asyncio shell over a fake websocket."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from rooms.manager import JoinSnapshot, RoomManager
from rooms.memory import MemoryRoomStore
from sfu.config import SfuConfig
from sfu.router import SdpError, SfuError, UnknownTrackError
from signaling import messages as m
from signaling.auth import issue_token
from signaling.config import SignalingConfig
from signaling.errors import Forbidden, RoomFull, RoomLocked
from signaling.session import Close, JoinRequest, Request, Send, SessionCore, State
from tests.conftest import FakePeer, FakeRouter, FakeSocket, next_of

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


# --- RoomManager with a fake Router and fake peers -------------------------------------------


def manager(**kw: Any) -> tuple[RoomManager, list[FakeRouter]]:
    routers: list[FakeRouter] = []

    def factory(room_id: str, config: SfuConfig, send_offer: Any) -> FakeRouter:
        routers.append(FakeRouter(room_id, config, send_offer))
        return routers[-1]

    return RoomManager(MemoryRoomStore(), SfuConfig(), router_factory=factory, **kw), routers  # type: ignore[arg-type]


async def admit(mgr: RoomManager, peer: FakePeer) -> JoinSnapshot:
    return await mgr.join(peer, lambda snap: peer.send({"type": "joined"}))


async def test_router_per_room_closed_when_empty_and_events_in_order() -> None:
    mgr, routers = manager()
    a, b = FakePeer("a"), FakePeer("b")
    await admit(mgr, a)
    snap = await admit(mgr, b)
    assert len(routers) == 1 and [p.id for p in snap.participants] == ["a"]
    assert a.types() == ["joined", "participant_joined"] and b.types() == ["joined"]
    _, tracks = await mgr.publish(a, "v=0", {})
    await mgr.announce_published(a, tracks)
    # everyone hears of it; the auto-subscriber (not the publisher) is subscribed, gets an offer
    assert a.types()[-1] == "track_published" and b.types()[-2:] == ["track_published", "offer"]
    assert routers[0].calls == [("subscribe", "b", ("a/camera",))]
    await mgr.leave(a, "left")
    assert b.inbox[-2:] == [m.track_unpublished("a/camera"), m.participant_left("a", "left")]
    await mgr.leave(b, "disconnected")
    assert routers[0].closed and mgr.room_ids() == [] and await mgr.store.list_rooms() == []


async def test_joiner_auto_subscribes_to_existing_tracks_unless_it_opted_out() -> None:
    mgr, routers = manager()
    a = FakePeer("a")
    await admit(mgr, a)
    await mgr.publish(a, "v=0", {})
    late, manual = FakePeer("late"), FakePeer("manual", auto=False)
    snap = await admit(mgr, late)
    assert [t.id for t in snap.tracks] == ["a/camera"]
    await mgr.auto_subscribe_joined(late)
    await admit(mgr, manual)
    await mgr.auto_subscribe_joined(manual)
    assert routers[0].calls == [("subscribe", "late", ("a/camera",))]


async def test_same_identity_replaces_and_old_leave_is_a_noop() -> None:
    mgr, routers = manager()
    watcher, old, new = FakePeer("w"), FakePeer("x"), FakePeer("x")
    await admit(mgr, watcher)
    await admit(mgr, old)
    await admit(mgr, new)
    assert old.inbox[-1]["code"] == "replaced" and old.closed_with == 4009
    assert watcher.types()[-3:] == ["participant_joined", "participant_left", "participant_joined"]
    assert watcher.inbox[-2]["reason"] == "replaced"
    await mgr.leave(old, "disconnected")  # the old socket going away later changes nothing
    assert mgr.participant_count() == 2 and not routers[0].closed


async def test_room_full_and_locked() -> None:
    mgr, _ = manager(max_participants=1)
    await admit(mgr, FakePeer("a"))
    with pytest.raises(RoomFull):
        await admit(mgr, FakePeer("b"))
    await admit(mgr, FakePeer("a"))  # a replacement is not one more
    await mgr.set_room_attributes("r", {"locked": True, "max_participants": 10})
    with pytest.raises(RoomLocked):
        await admit(mgr, FakePeer("c"))
    await admit(mgr, FakePeer("op", grants=frozenset({"subscribe", "moderate"})))


async def test_offer_for_an_absent_participant_is_dropped() -> None:
    mgr, routers = manager()
    a = FakePeer("a")
    await admit(mgr, a)
    await routers[0].send_offer("ghost", "sdp", {})
    await routers[0].send_offer("a", "sdp", {"0": "b/camera"})
    assert a.inbox[-1] == m.subscriber_offer("sdp", {"0": "b/camera"})


# --- the asyncio shell (signaling.app.Connection) over a fake websocket -----------------------


def hub(**over: Any) -> Any:
    from signaling.app import Hub, Metrics

    config = SignalingConfig(secret=SECRET, web_root=None, close_grace_s=0.1, **over)
    mgr = RoomManager(MemoryRoomStore(), SfuConfig(), router_factory=FakeRouter)  # type: ignore[arg-type]
    return Hub(config=config, manager=mgr, metrics=Metrics())


async def test_shell_join_publish_ping_leave() -> None:
    from signaling.app import Connection

    h = hub()
    sock = FakeSocket()
    run = asyncio.create_task(Connection(sock, h).run())  # type: ignore[arg-type]
    sock.feed(type="join", id=1, protocol=1, token=issue_token(SECRET, "r", "a", "chair"))
    assert (await next_of(sock.sent, "joined"))["participant"]["id"] == "a"
    sock.feed(type="publish", id=2, sdp="v=0")
    answer = await next_of(sock.sent, "answer")
    assert answer["re"] == 2 and [t["id"] for t in answer["tracks"]] == ["a/camera"]
    assert (await next_of(sock.sent, "track_published"))["track"]["id"] == "a/camera"
    sock.feed(type="unsubscribe", id=3, tracks=[])  # FakeRouter has no unsubscribe: a bug
    error = await next_of(sock.sent, "error")
    assert (error["code"], error["re"], error["message"]) == (
        "internal",
        3,
        "internal server error",
    )
    sock.feed(type="leave")
    await next_of(sock.sent, "left")
    async with asyncio.timeout(3):
        await run
    assert sock.close_code == 1000 and h.manager.participant_count() == 0 and h.sessions == 0


async def test_a_client_that_reads_nothing_is_dropped_without_holding_up_others() -> None:
    from signaling.app import Connection

    h = hub(send_queue_max=8)
    other = FakePeer("other")
    await admit(h.manager, other)
    sock = FakeSocket(stuck=True)
    run = asyncio.create_task(Connection(sock, h).run())  # type: ignore[arg-type]
    sock.feed(type="join", id=1, protocol=1, token=issue_token(SECRET, "r", "slow", "commune"))
    assert (await next_of(other.events, "participant_joined"))["participant"]["id"] == "slow"
    for i in range(20):  # events pile up in the stuck client's queue: broadcasting never waits
        h.manager.broadcast("r", {"type": "track_muted", "track_id": f"x/{i}", "muted": True})
    left = await next_of(other.events, "participant_left")
    assert left == m.participant_left("slow", "disconnected")
    async with asyncio.timeout(3):
        await run  # the stuck socket is abandoned after the grace periods
    assert h.manager.participant_count() == 1 and h.sessions == 0

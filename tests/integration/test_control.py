"""Conference control through a real `hoinghi serve`, with real peers (BridgeSession).

Floor, hands, mutes, spotlight, lock, removal, roll call and Last-N, each checked where it
matters: in what the server sends the participants, and for media, in the packets and decoded
frames that do (or do not) reach another bridge. The server's read-only media view
(`GET /api/rooms/{room}/media`) shows what it plans and forwards. One server for the module;
a fresh room per test. Waits are on messages and conditions, never fixed sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiortc import AudioStreamTrack

from clients.media import PatternVideoTrack, ToneAudioTrack, TrackReceiver
from clients.session import BridgeSession, SignalingError
from tests.conftest import ServerProcess, running_server
from tests.integration.test_router_control import Talker

pytestmark = pytest.mark.integration

ICE = ["127.0.0.1"]
Message = dict[str, Any]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("control")) as s:
        yield s


def _room() -> str:
    return f"ctl-{uuid.uuid4().hex[:8]}"


@contextlib.asynccontextmanager
async def joined(
    srv: ServerProcess, room: str, identity: str, role: str, *, auto: bool = False, **kw: Any
) -> AsyncIterator[BridgeSession]:
    s = BridgeSession(srv.url, srv.token(room, identity, role, **kw), ice_hosts=ICE,
                      auto_subscribe=auto)  # fmt: skip
    await s.connect()
    try:
        yield s
    finally:
        await s.close()


def _http(srv: ServerProcess, method: str, path: str, token: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(srv.url + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def http(srv: ServerProcess, method: str, path: str, token: str, body: Any = None) -> Any:
    return await asyncio.to_thread(_http, srv, method, path, token, body)


async def media_view(srv: ServerProcess, room: str, who: str) -> Message:
    token = srv.token(room, "ops-view", "operator")
    status, view = await http(srv, "GET", f"/api/rooms/{room}/media?participant={who}", token)
    assert status == 200, view
    return view


async def until(predicate: Callable[[], Awaitable[bool]], timeout: float = 15) -> bool:
    """Poll an async condition on a real-time system (packets in flight), bounded."""
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.05)
    return True


def event(kind: str, pid: str | None = None, **fields: Any) -> Callable[[Message], bool]:
    return lambda m: (m.get("type") == kind and (pid is None or m.get("participant_id") == pid)
                      and all(m.get(k) == v for k, v in fields.items()))  # fmt: skip


async def doing(request: Awaitable[Any], session: BridgeSession,
                predicate: Callable[[Message], bool]) -> Message:
    """Carry out `request`; the first message after it that `session` gets matching `predicate`
    (listening starts before the request, so an event cannot slip past)."""
    waiter = asyncio.ensure_future(session.wait_for(predicate, past=False))
    await asyncio.sleep(0)  # let it register
    try:
        await request
        return await waiter
    finally:
        waiter.cancel()


async def refused(coro: Awaitable[Any]) -> str:
    with pytest.raises(SignalingError) as info:
        await coro
    return info.value.code


async def sent(session: BridgeSession) -> int:
    """RTP packets the session's publisher has sent (its own outbound-rtp count)."""
    assert session.publisher is not None
    total = 0
    for sender in session.publisher.getSenders():
        for s in (await sender.getStats()).values():
            if s.type == "outbound-rtp":
                total += s.packetsSent
    return total


async def receiver(session: BridgeSession, track_id: str) -> TrackReceiver:
    track = await session.wait_track(track_id, timeout=20)
    return TrackReceiver(track, session.receiver_for(track_id)).start()


async def packets(rx: TrackReceiver) -> int:
    return int((await rx.stats())["packets"])


# --- hands and permissions (no media) -----------------------------------------------------------


async def test_hands_queue_in_order_visible_to_the_chair_and_roles_are_enforced(
    srv: ServerProcess,
) -> None:
    room = _room()
    async with (
        joined(srv, room, "chair", "chair") as chair,
        joined(srv, room, "xa-1", "commune") as x1,
        joined(srv, room, "xa-2", "commune") as x2,
        joined(srv, room, "sec", "secretary") as sec,
    ):
        you = x1.joined["floor"]["you"]  # type: ignore[index]
        assert (you["state"], you["audio_allowed"]) == ("idle", False)
        assert chair.joined["floor"]["you"]["state"] == "always"  # type: ignore[index]
        assert (await x2.request({"type": "raise_hand"}))["type"] == "ok"
        await x1.request({"type": "raise_hand"})
        first = await chair.wait_for(event("hand_raised", "xa-2"))
        second = await chair.wait_for(event("hand_raised", "xa-1"))
        assert (first["position"], second["position"]) == (1, 2)
        assert first["seq"] < second["seq"] and first["actor"] == "xa-2"
        snap = await chair.request({"type": "floor_snapshot"})
        assert [h["id"] for h in snap["hands"]] == ["xa-2", "xa-1"]
        assert await x1.wait_for(event("floor_state", hand_position=2)) == {
            "type": "floor_state", "state": "hand_raised", "hand_position": 2,
            "floor": False, "muted": False, "audio_allowed": False,
        }  # fmt: skip

        # xa-2 lowers its hand: xa-1 moves up and is told so
        await x2.request({"type": "lower_hand"})
        assert (await chair.wait_for(event("hand_lowered", "xa-2")))["reason"] == "self"
        await x1.wait_for(event("floor_state", state="hand_raised", hand_position=1))
        await chair.request({"type": "lower_hand", "participant_id": "xa-1"})
        lowered = await x1.wait_for(event("hand_lowered", "xa-1"))
        assert (lowered["reason"], lowered["actor"]) == ("moderator", "chair")
        await x1.wait_for(event("floor_state", state="idle"))

        # what each role may not do: the server says so and changes nothing
        assert await refused(x1.request({"type": "mute_participant", "participant_id": "xa-2"})) \
            == "forbidden"
        assert await refused(x1.request({"type": "give_floor", "participant_id": "xa-1"})) \
            == "forbidden"
        assert await refused(x1.request({"type": "lower_hand", "participant_id": "xa-2"})) \
            == "forbidden"
        assert await refused(x1.request({"type": "roll_call"})) == "forbidden"
        assert await refused(x1.request({"type": "lock_room"})) == "forbidden"
        assert await refused(sec.request({"type": "raise_hand"})) == "forbidden"
        assert await refused(sec.publish(ToneAudioTrack())) == "forbidden"
        assert await refused(chair.request({"type": "give_floor", "participant_id": "ghost"})) \
            == "unknown_participant"
        assert await refused(chair.request({"type": "give_floor", "participant_id": "sec"})) \
            == "not_allowed_in_state"  # no voice to give
        assert await refused(chair.request({"type": "mute_participant",
                                            "participant_id": "chair"})) == "not_allowed_in_state"
        assert await refused(chair.request({"type": "take_floor"})) == "not_allowed_in_state"
        assert await refused(chair.request({"type": "give_floor"})) == "bad_message"
        assert await refused(chair.request({"type": "roll_call", "status": "x"})) == "bad_message"
        snap = await chair.request({"type": "floor_snapshot"})
        assert (snap["hands"], snap["floor"], snap["muted"]) == ([], [], [])


# --- floor and mutes gate a bridge's audio at the server ----------------------------------------


async def test_floor_and_mutes_gate_a_bridge_audio_at_the_server(srv: ServerProcess) -> None:
    room = _room()
    async with (
        joined(srv, room, "chair", "chair") as chair,
        joined(srv, room, "xa-7", "commune") as bridge,
        joined(srv, room, "hn", "province", auto=True) as listener,
    ):
        await chair.publish(ToneAudioTrack(330))
        await bridge.publish(ToneAudioTrack())  # its client sends all along
        mic = await receiver(listener, "xa-7/microphone")
        chair_mic = await receiver(listener, "chair/microphone")

        async def stays_silent() -> None:
            """The bridge keeps sending; nothing of it reaches the listener any more. (What was
            in flight when the gate closed lands during the first 10 packets' time.)"""
            sending = await sent(bridge)
            await until(lambda: _more(sent(bridge), sending + 10))
            before = await packets(mic)
            await until(lambda: _more(sent(bridge), sending + 60))
            assert await packets(mic) == before

        async def heard() -> None:
            before = await packets(mic)
            await until(lambda: _more(packets(mic), before + 25))

        async def act(kind: str, then: str, state: Message) -> Message:
            """The chair acts on the bridge: the listener sees `then`; the bridge's own
            floor_state (returned) matches `state`."""
            told = asyncio.ensure_future(bridge.wait_for(event("floor_state", **state),
                                                         past=False))
            try:
                request = chair.request({"type": kind, "participant_id": "xa-7"})
                await doing(request, listener, event(then, "xa-7"))
                return await told
            finally:
                told.cancel()

        await until(lambda: _more(packets(chair_mic), 25))  # the chair is always heard
        await stays_silent()  # no floor yet: nothing of it was ever forwarded
        assert await packets(mic) == 0

        state = await act("give_floor", "floor_given", {"state": "floor"})
        assert state["audio_allowed"] is True
        await heard()
        await act("take_floor", "floor_taken", {"state": "idle", "audio_allowed": False})
        await stays_silent()

        await act("give_floor", "floor_given", {"state": "floor", "audio_allowed": True})
        await heard()
        # mute overrides the floor
        await act("mute_participant", "participant_muted", {"floor": True, "muted": True,
                                                             "audio_allowed": False})
        await stays_silent()
        await act("unmute_participant", "participant_unmuted", {"audio_allowed": True})
        await heard()

        muted = await doing(chair.request({"type": "mute_all"}), listener, event("muted_all"))
        assert muted["count"] == 2 and muted["actor"] == "chair"  # the bridges, not the chair
        await bridge.wait_for(event("floor_state", muted=True, audio_allowed=False), past=True)
        await stays_silent()
        chair_now = await packets(chair_mic)
        await until(lambda: _more(packets(chair_mic), chair_now + 25))  # the chair still is
        # giving the floor again lifts the mute: the moderator's latest intent wins
        await act("give_floor", "participant_unmuted", {"muted": False, "audio_allowed": True})
        await heard()


async def _more(value: Awaitable[int], than: int) -> bool:
    return await value >= than


# --- Last-N, spotlight and the dominant speaker ------------------------------------------------


async def test_last_n_sends_a_commune_the_chair_the_floor_and_n_others(srv: ServerProcess) -> None:
    room = _room()
    chair_token = srv.token(room, "chair", "chair")
    status, body = await http(srv, "POST", "/api/rooms", chair_token, {"room": room, "last_n": 1})
    assert (status, body["last_n"]) == (201, 1)
    async with contextlib.AsyncExitStack() as stack:
        chair = await stack.enter_async_context(joined(srv, room, "chair", "chair"))
        pubs = {p: await stack.enter_async_context(joined(srv, room, p, "commune"))
                for p in ("p1", "p2", "p3")}  # fmt: skip
        await chair.publish(None, PatternVideoTrack(fps=15))
        await pubs["p1"].publish(None, PatternVideoTrack(fps=15, start=1000))
        await pubs["p2"].publish(AudioStreamTrack(), PatternVideoTrack(fps=15, start=2000))
        await pubs["p3"].publish(Talker(), PatternVideoTrack(fps=15, start=3000))
        await chair.request({"type": "give_floor", "participant_id": "p1"})
        # p3 talks (not heard: no floor, but its audio level still ranks it): it becomes the
        # dominant speaker, so it is the one other bridge a Last-N of 1 shows.
        await chair.wait_for(event("dominant_speaker", "p3"), timeout=20)

        viewer = await stack.enter_async_context(joined(srv, room, "xa-9", "commune", auto=True))
        assert viewer.joined["last_n"] == 1  # type: ignore[index]
        rx = {p: await receiver(viewer, f"{p}/camera") for p in ("chair", "p1", "p3")}
        shown = ["chair/camera", "p1/camera", "p3/camera"]
        for p in ("chair", "p1", "p3"):
            assert await asyncio.wait_for(rx[p].wait_frames(5), 20), (p, vars(rx[p].video))
        view = await media_view(srv, room, "xa-9")
        assert view["plan"]["xa-9"] == ["chair", "p1", "p3"]
        assert view["receiving_video"]["xa-9"] == shown
        assert view["forwarding"]["p2/camera"] == 0  # nobody watches it: no work for it at all
        # An auto-subscriber in a conference is subscribed to its plan only (and the audio the
        # floor lets it hear): no section at all for p2's camera, nor for silent p2's and p3's
        # microphones.
        assert sorted(viewer.mids.values()) == shown

        # spotlight p2: everyone sees it, on top of Last-N
        await chair.request({"type": "spotlight", "participant_id": "p2"})
        await viewer.wait_for(event("spotlight_changed", "p2"))
        rx["p2"] = await receiver(viewer, "p2/camera")
        assert await asyncio.wait_for(rx["p2"].wait_frames(5), 20), vars(rx["p2"].video)
        view = await media_view(srv, room, "xa-9")
        assert view["receiving_video"]["xa-9"] == sorted([*shown, "p2/camera"])
        await doing(chair.request({"type": "spotlight", "participant_id": None}), viewer,
                    event("spotlight_changed", participant_id=None))
        view = await media_view(srv, room, "xa-9")
        assert view["receiving_video"]["xa-9"] == shown
        # and a viewer may ask for fewer (a bridge cannot ask for more than the room's N)
        assert (await viewer.request({"type": "set_last_n", "n": 5}))["n"] == 1
        assert (await viewer.request({"type": "set_last_n", "n": 0}))["n"] == 0
        view = await media_view(srv, room, "xa-9")
        assert view["receiving_video"]["xa-9"] == ["chair/camera", "p1/camera"]
        for r in rx.values():
            await r.stop()


# --- lock, remove, readmit -----------------------------------------------------------------------


async def test_lock_refuses_newcomers_and_remove_kicks_and_bans(srv: ServerProcess) -> None:
    room = _room()
    async with joined(srv, room, "chair", "chair") as chair:
        async with joined(srv, room, "xa-1", "commune") as x1:
            await chair.request({"type": "lock_room"})
            await x1.wait_for(event("room_locked"))
        await chair.wait_for(event("participant_left", "xa-1"))
        assert await refused(joined(srv, room, "xa-2", "commune").__aenter__()) == "room_locked"
        async with joined(srv, room, "xa-1", "commune") as back:  # it was in: it may come back
            assert back.joined["floor"]["locked"] is True  # type: ignore[index]
        await chair.request({"type": "unlock_room"})

        async with joined(srv, room, "xa-2", "commune") as x2:
            await chair.request({"type": "remove_participant", "participant_id": "xa-2"})
            ended = await asyncio.wait_for(x2.wait_closed(), 10)
            assert ended is not None and ended.code == "removed"
            assert x2._ws is not None and x2._ws.close_code == 4004
        left = await chair.wait_for(event("participant_left", "xa-2", reason="removed"))
        assert left["actor"] == "chair"
        assert await refused(joined(srv, room, "xa-2", "commune").__aenter__()) == "removed"
        await chair.request({"type": "readmit_participant", "participant_id": "xa-2"})
        await chair.wait_for(event("participant_readmitted", "xa-2"))
        async with joined(srv, room, "xa-2", "commune") as again:
            assert again.participant_id == "xa-2"


# --- roll call -----------------------------------------------------------------------------------


async def test_roll_call_lists_invited_against_connected_with_quality(srv: ServerProcess) -> None:
    room = _room()
    invited = [{"id": "xa-1", "name": "Xã Một", "province": "HN"},
               {"id": "xa-2", "name": "Xã Hai", "province": "HN"},
               {"id": "xa-3", "name": "Xã Ba", "province": "HP"}]  # fmt: skip
    chair_token = srv.token(room, "chair", "chair")
    body = {"room": room, "invited": invited}
    assert (await http(srv, "POST", "/api/rooms", srv.token(room, "x", "commune"), body))[0] == 403
    status, created = await http(srv, "POST", "/api/rooms", chair_token, body)
    assert (status, created["invited"]) == (201, 3)
    assert (await http(srv, "POST", "/api/rooms", chair_token, body))[0] == 409
    async with (
        joined(srv, room, "chair", "chair") as chair,
        joined(srv, room, "xa-1", "commune", auto=True) as x1,
        joined(srv, room, "guest", "commune") as guest,
    ):
        joined_event = await chair.wait_for(event("participant_joined"))
        assert joined_event["participant"]["id"] == "xa-1" and joined_event["invited"] is True
        await chair.publish(ToneAudioTrack())
        reported = {"bitrate_kbps": 812.5, "loss": 0.01, "rtt_ms": 42}
        assert (await x1.request({"type": "quality", **reported}))["type"] == "ok"
        assert await refused(guest.request({"type": "quality", "loss": 2})) == "bad_message"

        async def row() -> Message:
            call = await chair.request({"type": "roll_call", "status": "connected"})
            return next(b for b in call["bridges"] if b["id"] == "xa-1")

        async def measured() -> bool:  # receiver reports from xa-1 reached the server
            quality = (await row())["quality"]
            return quality["server"] is not None and quality["server"]["rtt_ms"] is not None

        await until(measured, 20)
        call = await chair.request({"type": "roll_call"})
        assert (call["expected"], call["connected"], call["missing"]) == (3, 1, 2)
        assert call["uninvited"] == 1 and call["total"] == 4
        assert call["by_province"] == {"HN": {"expected": 2, "connected": 1},
                                       "HP": {"expected": 1, "connected": 0}}  # fmt: skip
        rows = {b["id"]: b for b in call["bridges"]}
        assert rows["xa-2"]["connected"] is False and rows["xa-2"]["name"] == "Xã Hai"
        assert rows["guest"]["invited"] is False and rows["guest"]["connected"] is True
        quality = rows["xa-1"]["quality"]
        assert {k: quality["client"][k] for k in reported} == reported
        server = quality["server"]
        assert server["tracks"] == 1 and 0 <= server["loss"] <= 1 and server["rtt_ms"] >= 0
        missing = await chair.request({"type": "roll_call", "status": "missing"})
        assert [b["id"] for b in missing["bridges"]] == ["xa-2", "xa-3"]
        hp = await chair.request({"type": "roll_call", "province": "HP", "limit": 1})
        assert [b["id"] for b in hp["bridges"]] == ["xa-3"]

        # the conference's event log, for recordings' timelines
        status, log = await http(srv, "GET", f"/api/rooms/{room}/events", chair_token)
        assert status == 200
        assert [(e["type"], e["target"]) for e in log["events"]][:3] == [
            ("participant_joined", "chair"), ("participant_joined", "xa-1"),
            ("participant_joined", "guest")]  # fmt: skip


# --- admission limits -----------------------------------------------------------------------------


async def test_connections_per_token_and_participants_per_conference(srv: ServerProcess) -> None:
    room = _room()
    shared = [srv.token(room, f"xa-{i}", "commune", jti="leaked-1") for i in range(3)]
    first = BridgeSession(srv.url, shared[0], ice_hosts=ICE)
    second = BridgeSession(srv.url, shared[1], ice_hosts=ICE)
    third = BridgeSession(srv.url, shared[2], ice_hosts=ICE)
    try:
        await first.connect()
        await second.connect()
        assert await refused(third.connect()) == "too_many_connections"
        assert third._ws is not None and third._ws.close_code == 4005
        await first.close()

        async def admitted() -> bool:  # once the server has seen the first socket go
            nonlocal third
            third = BridgeSession(srv.url, shared[2], ice_hosts=ICE)
            try:
                await third.connect()
            except SignalingError as exc:
                assert exc.code == "too_many_connections"
                return False
            return True

        await until(admitted, 10)
    finally:
        for s in (first, second, third):
            await s.close()

    small = _room()
    token = srv.token(small, "chair", "chair")
    body = {"room": small, "max_participants": 2}
    assert (await http(srv, "POST", "/api/rooms", token, body))[0] == 201
    async with joined(srv, small, "chair", "chair"), joined(srv, small, "xa-1", "commune"):
        assert await refused(joined(srv, small, "xa-2", "commune").__aenter__()) == "room_full"


def test_serve_flags_reach_the_config() -> None:
    import hoinghi_cli

    args = hoinghi_cli._parser().parse_args(
        ["serve", "--last-n", "0", "--rate-burst", "9", "--max-connections-per-token", "3"]
    )
    overrides = hoinghi_cli._limit_overrides(args)
    assert overrides["last_n"] == 0 and overrides["max_connections_per_token"] == 3
    assert overrides["rate"].burst == 9 and overrides["rate"].per_s == 20
    zero = hoinghi_cli._parser().parse_args(["serve", "--rate-burst", "0"])
    with pytest.raises(ValueError):
        hoinghi_cli._limit_overrides(zero)



def test_park_idle_after_reaches_the_sfu_config() -> None:
    import hoinghi_cli

    def config(*flags: str) -> Any:
        return hoinghi_cli._sfu_config(hoinghi_cli._parser().parse_args(["serve", *flags]))

    assert config().park_idle_after_s == 2.0
    assert config("--park-idle-after", "0").park_idle_after_s == 0  # never
    with pytest.raises(ValueError):
        config("--park-idle-after", "-1")
    assert config().frame_hold_ms == 2.0
    assert config("--frame-hold-ms", "0").frame_hold_ms == 0  # every batch as read
    for bad in ("-1", "1000"):
        with pytest.raises(ValueError):
            config("--frame-hold-ms", bad)


# --- the featured roster (docs/signaling.md, Roster) ---------------------------------------------


async def test_a_commune_is_told_of_the_chair_the_count_and_the_floor_holder(
    srv: ServerProcess,
) -> None:
    room = _room()
    chair_token = srv.token(room, "chair", "chair")
    status, body = await http(srv, "POST", "/api/rooms", chair_token, {"room": room, "last_n": 0})
    assert (status, body["roster"]) == (201, "featured")
    async with contextlib.AsyncExitStack() as stack:
        chair = await stack.enter_async_context(joined(srv, room, "chair", "chair"))
        a = await stack.enter_async_context(joined(srv, room, "xa-1", "commune"))
        assert (a.roster, set(a.participants), a.participant_count) == ("featured", {"chair"}, 2)
        b = await stack.enter_async_context(joined(srv, room, "xa-2", "commune", name="Xã Hai"))
        await b.publish(None, PatternVideoTrack(fps=15))
        await chair.wait_for(lambda m: m["type"] == "track_published"
                             and m["track"]["participant_id"] == "xa-2", timeout=10)
        # a hears of b's join as a count (the `presence` timer), never by name...
        await a.wait_for(lambda m: m["type"] == "presence" and m["participant_count"] == 3,
                         timeout=10)
        assert a.participant_count == 3 and "xa-2" not in a.participants
        assert chair.roster == "full" and "xa-2" in chair.participants
        # ...until the chair gives b the floor: introduced, with its track, then the event.
        await chair.request({"type": "give_floor", "participant_id": "xa-2"})
        given = await a.wait_for(event("floor_given", "xa-2"), timeout=10)
        kinds = [m["type"] for m in a.messages]
        intro = kinds.index("participant_joined")
        assert intro < kinds.index("floor_given") and "seq" not in a.messages[intro]
        assert a.participants["xa-2"]["name"] == "Xã Hai" and "xa-2/camera" in a.tracks
        presences = [m["seq"] for m in a.messages if m["type"] == "presence"]
        assert presences and max(presences) == given["seq"] - 1  # no gap before floor_given

"""One conference across two workers: `hoinghi serve --workers 2 --span-after 1`.

The room's home worker keeps one subscriber connection; every further one is made on the
other worker (an edge), fed through the pipe (sfu/span.py, sfu/edge.py). Real processes,
real aiortc bridges decoding the chair's picture; keyframes for late joiners on the edge come
through the pipe's PLI. Killing the edge sends its subscribers back to rejoin (1013) while
the home's own ones keep receiving. The internal routes refuse what does not carry the
cluster's credential.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from clients.media import PatternVideoTrack, ToneAudioTrack, TrackReceiver
from clients.session import BridgeSession
from signaling.span_routes import internal_token
from tests.conftest import ServerProcess, running_server
from tests.integration.test_control import http
from tests.integration.test_workers import _get, _health, _until

pytestmark = pytest.mark.integration

ICE = ["127.0.0.1"]


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("span"), "--workers", "2",
                        "--span-after", "1") as s:
        yield s


def _room() -> str:
    return f"s-{uuid.uuid4().hex[:8]}"


async def _decodes(session: BridgeSession, frames: int = 10) -> None:
    track = await session.wait_track("chair/camera", timeout=30)
    rx = TrackReceiver(track, session.receiver_for("chair/camera")).start()
    try:
        assert await asyncio.wait_for(rx.wait_frames(frames), 30), vars(rx.video)
        assert rx.video.invalid == 0
    finally:
        await rx.stop()


async def room_metric(server: ServerProcess, name: str, room: str) -> dict[str, float]:
    """{worker label ("" on a worker's own /metrics): value} of one per-room router metric."""
    text = (await _get(server.url + "/metrics")).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{") and f'room="{room}"' in line:
            worker = line.split('worker="', 1)[1].split('"', 1)[0] if 'worker="' in line else ""
            out[worker] = float(line.rsplit(" ", 1)[1])
    return out


async def _joined(front: ServerProcess, room: str, who: str, role: str) -> BridgeSession:
    s = BridgeSession(front.url, front.token(room, who, role), ice_hosts=ICE)
    await s.connect()
    return s


async def test_one_conference_spans_both_workers(front: ServerProcess) -> None:
    room = _room()
    chair = await _joined(front, room, "chair", "chair")
    sessions = [chair]
    try:
        await chair.publish(ToneAudioTrack(), PatternVideoTrack())
        for i in range(3):  # one by one: the first stays home, the next two go to the edge
            commune = await _joined(front, room, f"c{i}", "commune")
            sessions.append(commune)
            # Late joiners need a keyframe: an edge's PLI reaches the chair through the pipe.
            await _decodes(commune)
        home = await room_metric(front, "hoinghi_router_span_subscribers", room)
        assert list(home.values()) == [2.0]  # two subscribers served by the other worker
        (home_worker,) = home
        edges = await room_metric(front, "hoinghi_router_span_edges", room)
        assert edges == {home_worker: 1.0}
        forwarded = await room_metric(front, "hoinghi_router_packets_forwarded", room)
        assert set(forwarded) == {"0", "1"} and min(forwarded.values()) > 0
        # The edge received each packet once (one producer per track), not once per subscriber.
        producers = await room_metric(front, "hoinghi_router_producers", room)
        assert producers == {"0": 2.0, "1": 2.0}
        stray = await room_metric(front, "hoinghi_router_pipe_stray", room)
        assert list(stray.values()) == [0.0]
    finally:
        for s in sessions:
            await s.close()


async def test_edge_killed_sends_its_subscribers_back_and_home_ones_stay(
    front: ServerProcess,
) -> None:
    room = _room()
    chair = await _joined(front, room, "chair", "chair")
    home_sub = await _joined(front, room, "c-home", "commune")
    sessions = [chair, home_sub]
    try:
        await chair.publish(ToneAudioTrack(), PatternVideoTrack())
        await _decodes(home_sub)
        edge_sub = await _joined(front, room, "c-edge", "commune")
        sessions.append(edge_sub)
        await _decodes(edge_sub)
        home = await room_metric(front, "hoinghi_router_span_subscribers", room)
        assert list(home.values()) == [1.0]  # edge_sub is the one on the other worker
        (home_worker,) = home
        health = await _health(front)
        (edge,) = [w for w in health["workers"] if str(w["index"]) != home_worker]
        os.kill(edge["pid"], signal.SIGKILL)
        # The edge's subscriber is told to rejoin, as any client of a lost worker is.
        err = await asyncio.wait_for(edge_sub.wait_closed(), 30)
        assert err is not None and err.code == "unavailable", err
        # The home's own subscriber never noticed: it still decodes new pictures.
        await _decodes(home_sub, frames=5)
        assert not home_sub.closed and not chair.closed
        lost = await room_metric(front, "hoinghi_router_span_links_lost", room)
        assert lost == {home_worker: 1.0}

        async def edge_back() -> bool:
            h = await _health(front)
            return h["status"] == "ok"

        await _until(edge_back)
        # Joining again is placed afresh (the restarted edge, or home) and decodes.
        again = await _joined(front, room, "c-edge", "commune")
        sessions.append(again)
        await _decodes(again)
    finally:
        for s in sessions:
            await s.close()


async def test_publisher_reconnect_reaches_edge_subscribers_as_one_stream(
    front: ServerProcess,
) -> None:
    """A new publisher connection behind the same track ids: the pipe's generation mark
    makes the edge re-sync its subscribers from the new source's first keyframe on."""
    room = _room()
    chair = await _joined(front, room, "chair", "chair")
    home_sub = await _joined(front, room, "c-home", "commune")
    edge_sub = await _joined(front, room, "c-edge", "commune")
    sessions = [chair, home_sub, edge_sub]
    try:
        await chair.publish(ToneAudioTrack(), PatternVideoTrack())
        track = await edge_sub.wait_track("chair/camera", timeout=30)
        rx = TrackReceiver(track, edge_sub.receiver_for("chair/camera")).start()
        assert await asyncio.wait_for(rx.wait_frames(10), 30), vars(rx.video)
        assert list((await room_metric(front, "hoinghi_router_span_subscribers",
                                        room)).values()) == [1.0]
        before = rx.video.valid
        # The chair's network blips: a new session replaces it and publishes again.
        again = await _joined(front, room, "chair", "chair")
        sessions.append(again)
        await again.publish(ToneAudioTrack(), PatternVideoTrack(start=5000))
        # As on one worker (test_router_media): at most two frames damaged at the switch.
        ok = await asyncio.wait_for(rx.wait_frames(before + 20, max_invalid=2), 30)
        assert ok, vars(rx.video)
        assert rx.video.last is not None and rx.video.last >= 5000  # the new source's frames
        assert rx.video.regressions == 0
        await rx.stop()
    finally:
        for s in sessions:
            await s.close()


async def _worker_urls(front: ServerProcess) -> list[str]:
    """Workers listen on loopback ports the front learned (/healthz names them)."""
    health = await _health(front)
    return [w["url"] for w in health["workers"]]


async def test_internal_routes_refuse_without_the_cluster_credential(
    front: ServerProcess,
) -> None:
    url = (await _worker_urls(front))[0]
    ws_url = url.replace("http://", "ws://") + "/internal/span/r1"
    # No token, a participant token, a token for another room: refused before the upgrade.
    for token in (None, front.token("r1", "x", "chair"), internal_token(front.secret, "span:r2")):
        headers = {"authorization": f"Bearer {token}"} if token else {}
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url, additional_headers=headers):
                pass
        assert refused.value.response.status_code == 403
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        bad = await http.post(url + "/internal/cluster", json={"workers": {}},
                              headers={"authorization": f"Bearer {front.token('r', 'x', 'chair')}"})
        assert bad.status_code == 401
        token = internal_token(front.secret, "cluster")
        junk = await http.post(url + "/internal/cluster", content=b"{nope",
                               headers={"authorization": f"Bearer {token}"})
        assert junk.status_code == 400 and junk.json()["error"] == "bad_request"
        # Only loopback workers may be announced (a worker never links elsewhere).
        far = await http.post(url + "/internal/cluster",
                              json={"workers": {"0": "http://10.0.0.1:80"}},
                              headers={"authorization": f"Bearer {token}"})
        assert far.status_code == 400
        # The front never passes /internal on.
        proxied = await http.post(front.url + "/internal/cluster", json={"workers": {}},
                                  headers={"authorization": f"Bearer {token}"})
        assert proxied.status_code in (404, 405)


async def test_span_link_survives_bad_messages_and_stray_datagrams(
    front: ServerProcess,
) -> None:
    url = (await _worker_urls(front))[1]
    ws_url = url.replace("http://", "ws://") + "/internal/span/r-bad"
    token = internal_token(front.secret, "span:r-bad")
    async with connect(ws_url, additional_headers={"authorization": f"Bearer {token}"}) as ws:
        async def call(msg: Any) -> dict[str, Any]:
            await ws.send(msg if isinstance(msg, str) else json.dumps(msg))
            return json.loads(await asyncio.wait_for(ws.recv(), 10))

        assert (await call("{not json"))["error"] == "bad_json"
        assert (await call([1, 2]))["error"] == "bad_json"
        assert (await call({"op": "explode", "id": 1, "pid": "x"}))["error"] == "bad_request"
        assert (await call({"op": "subs", "id": 2}))["error"] == "bad_request"  # no pid
        reply = await call({"op": "subs", "id": 3, "pid": "p", "add": ["nobody/camera"],
                            "remove": []})
        assert reply["error"] == "unknown_track"
        assert (await call({"op": "answer", "id": 4, "pid": "p", "sdp": "v=0"}))["error"] \
            == "bad_sdp"
        hello = await call({"op": "hello", "id": 5, "pipe_port": 9})
        assert hello["id"] == 5 and isinstance(hello["pipe_port"], int)
        # Datagrams on the pipe that are not from the home, or are not frames: dropped.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for junk in (b"", b"\x07", b"\xff\x00\x00\x01hello", os.urandom(1200)):
                s.sendto(junk, ("127.0.0.1", hello["pipe_port"]))
        assert (await call({"op": "track", "id": 6, "no": 1, "generation": 0,
                            "track": {"id": "a/camera"}, "clock_rate": 90000,
                            "level_id": 0}))["error"] == "bad_request"
        mislabelled = {"id": "a/camera", "participant_id": "b", "kind": "video",
                       "source": "camera", "codec": "VP8"}  # a's camera, said to be b's
        assert (await call({"op": "track", "id": 8, "no": 1, "generation": 0,
                            "track": mislabelled, "clock_rate": 90000,
                            "level_id": 0}))["error"] == "bad_request"
        for slots in ("x", [["audio"]], [[1, 2]], [["data", "x"]]):
            assert (await call({"op": "spares", "id": 9, "slots": slots}))["error"] \
                == "bad_request"
        # Still serving after all that.
        assert (await call({"op": "reset", "id": 7, "pid": "p"})) == {"op": "result", "id": 7}
    assert (await _health(front))["status"] == "ok"


async def test_edge_subscribers_open_the_floor_sections_and_a_turn_is_a_remap(
    front: ServerProcess,
) -> None:
    # A conference: every bridge's first offer opens the floor's audio and video sections
    # empty, on the edge too (the home tells it: `spares`), so the first floor turn reaches
    # the edge's bridges as a remap.
    room = _room()
    status, _ = await http(front, "POST", "/api/rooms", front.token(room, "chair", "chair"),
                           {"room": room, "last_n": 0})
    assert status == 201
    chair = await _joined(front, room, "chair", "chair")
    speaker = await _joined(front, room, "c0", "commune")  # the home's one subscriber
    sessions = [chair, speaker]
    try:
        await chair.publish(ToneAudioTrack(), PatternVideoTrack())
        await speaker.publish(ToneAudioTrack(), PatternVideoTrack(start=30000))
        await _decodes(speaker)
        for i in (1, 2):
            sessions.append(await _joined(front, room, f"c{i}", "commune"))
            await _decodes(sessions[-1])
        home = await room_metric(front, "hoinghi_router_span_subscribers", room)
        assert list(home.values()) == [2.0]  # c1 and c2 are the edge's
        edge = sessions[2:]
        for s in edge:
            offers = [m["sdp"] for m in s.messages if m.get("type") == "offer"]
            assert len(offers) == 1 and offers[0].count("\nm=") == 4  # chair's 2 + 2 spares
        await chair.request({"type": "give_floor", "participant_id": "c0"})
        for s in edge:
            track = await s.wait_track("c0/camera", timeout=30)
            rx = TrackReceiver(track, s.receiver_for("c0/camera")).start()
            try:
                assert await asyncio.wait_for(rx.wait_frames(5), 30), vars(rx.video)
                assert rx.video.invalid == 0 and (rx.video.last or 0) >= 30000
            finally:
                await rx.stop()
            assert [m["type"] for m in s.messages if m.get("type") in ("offer", "remap")] == [
                "offer", "remap"]
    finally:
        for s in sessions:
            await s.close()

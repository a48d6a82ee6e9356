"""`hoinghi serve --workers 2`: a real front process and two real worker processes.

Rooms spread across the workers and carry media there (aiortc bridges decode each other);
the front answers pre-join traffic exactly as one process would; a worker killed outright
closes only its own rooms' sockets (`unavailable`, 1013), is restarted, and takes joins again;
the HTTP API and /metrics reach the right worker.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from clients.media import PatternVideoTrack, ToneAudioTrack, TrackReceiver
from clients.session import BridgeSession
from tests.conftest import Connect, ServerProcess, running_server

pytestmark = pytest.mark.integration

ICE = ["127.0.0.1"]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("front"), "--workers", "2") as s:
        yield s


def _room() -> str:
    return f"w-{uuid.uuid4().hex[:8]}"


async def _get(url: str, **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        return await http.get(url, **kw)


async def _health(server: ServerProcess) -> dict[str, Any]:
    return (await _get(server.url + "/healthz")).json()


async def _metric(server: ServerProcess, name: str) -> dict[str, float]:
    """{worker label: summed value} for one metric name in the front's /metrics."""
    text = (await _get(server.url + "/metrics")).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            worker = line.split('worker="', 1)[1].split('"', 1)[0] if 'worker="' in line else ""
            out[worker] = out.get(worker, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


async def _until(check: Any, timeout: float = 30.0) -> Any:
    """Poll an async condition (a server state we cannot subscribe to) until it holds."""
    async with asyncio.timeout(timeout):
        while not (result := await check()):
            await asyncio.sleep(0.1)
        return result


async def test_rooms_spread_across_workers_and_media_flows_in_each(front: ServerProcess) -> None:
    before = await _health(front)
    rooms = [_room(), _room()]
    sessions: list[BridgeSession] = []
    try:
        for room in rooms:
            chair = BridgeSession(front.url, front.token(room, "chair", "chair"), ice_hosts=ICE)
            commune = BridgeSession(front.url, front.token(room, "c1", "commune"), ice_hosts=ICE)
            sessions += [chair, commune]
            await chair.connect()
            await commune.connect()
            await chair.publish(ToneAudioTrack(), PatternVideoTrack())
        for commune in sessions[1::2]:
            track = await commune.wait_track("chair/camera", timeout=30)
            rx = TrackReceiver(track, commune.receiver_for("chair/camera")).start()
            assert await asyncio.wait_for(rx.wait_frames(15), 30), vars(rx.video)
            assert rx.video.invalid == 0
            await rx.stop()
        health = await _health(front)
        assert health["status"] == "ok"
        # One room per worker: placement spreads new rooms by load.
        added = [w["rooms"] - b["rooms"]
                 for w, b in zip(health["workers"], before["workers"], strict=True)]
        assert added == [1, 1]
        assert [w["sessions"] for w in health["workers"]] == [2, 2]
        # Each worker's own router forwarded the packets (media went to the worker directly).
        forwarded = await _metric(front, "hoinghi_router_packets_forwarded")
        assert set(forwarded) == {"0", "1"} and min(forwarded.values()) > 0
        assert (await _metric(front, "hoinghi_front_worker_up")) == {"0": 1.0, "1": 1.0}
    finally:
        for s in sessions:
            await s.close()


async def test_front_answers_before_join_as_one_process_would(
    front: ServerProcess, connect_ws: Connect
) -> None:
    ws = await connect_ws(front)
    await ws.send("{not json")
    assert (await ws.recv())["code"] == "bad_json"
    reply = await ws.request({"type": "ping"})
    assert reply["code"] == "not_joined"  # still open: a protocol error does not close
    reply = await ws.join("not-a-token")
    assert reply["code"] == "token_invalid"
    code, _ = await ws.closed()
    assert code == 4001
    # A join for another room than the token's is refused by the front too.
    ws = await connect_ws(front)
    reply = await ws.join(front.token(_room(), "x", "commune"), room="other")
    assert reply["code"] == "wrong_room"


async def test_worker_killed_closes_its_rooms_only_and_comes_back(
    front: ServerProcess, connect_ws: Connect
) -> None:
    room_a, room_b = _room(), _room()
    a = await connect_ws(front)
    assert (await a.join(front.token(room_a, "a1", "commune")))["type"] == "joined"
    b = await connect_ws(front)
    assert (await b.join(front.token(room_b, "b1", "commune")))["type"] == "joined"
    health = await _health(front)
    # Placement by load: the second room went to the other worker.
    assert [w["sessions"] for w in health["workers"]] == [1, 1]
    victim = health["workers"][0]
    restarts = victim["restarts"]
    os.kill(victim["pid"], signal.SIGKILL)

    # Exactly one of the two sockets was on the victim: it is told to come back later.
    async def closed_one() -> tuple[Any, int | None, list[dict[str, Any]]]:
        done, pending = await asyncio.wait(
            [asyncio.create_task(c.closed(timeout=30)) for c in (a, b)],
            return_when=asyncio.FIRST_COMPLETED)
        for task in pending:  # the other socket's reader, so it can be used again
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return next(iter(done)).result()

    code, got = await closed_one()
    assert code == 1013 and got and got[-1]["code"] == "unavailable"
    survivor = b if a.ws.close_code is not None else a
    gone_room = room_a if survivor is b else room_b
    await survivor.ping()  # the other worker's room did not notice

    async def restarted() -> bool:
        h = await _health(front)
        w = h["workers"][victim["index"]]
        return h["status"] == "ok" and w["restarts"] == restarts + 1 and w["pid"] != victim["pid"]

    await _until(restarted)
    again = await connect_ws(front)
    assert (await again.join(front.token(gone_room, "a2", "commune")))["type"] == "joined"
    await survivor.ping()


async def test_http_api_reaches_the_rooms_worker(front: ServerProcess) -> None:
    room = _room()
    auth = {"Authorization": f"Bearer {front.token(room, 'chair', 'chair')}"}
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        created = await http.post(front.url + "/api/rooms", headers=auth,
                                  json={"room": room, "title": "Giao ban"})
        assert created.status_code == 201, created.text
        assert created.json()["room"] == room
        again = await http.post(front.url + "/api/rooms", headers=auth, json={"room": room})
        assert again.status_code == 409  # the same worker saw it: the room exists there
        events = await http.get(f"{front.url}/api/rooms/{room}/events", headers=auth)
        assert events.status_code == 200 and events.json()["room"] == room
        # No token: the worker's own 401, through the front.
        bare = await http.get(f"{front.url}/api/rooms/{room}/events")
        assert bare.status_code == 401 and bare.json()["error"] == "token_missing"
        big = await http.post(front.url + "/api/rooms", headers=auth,
                              content=b" " * (3 * 1024 * 1024))
        assert big.status_code == 413
        info = (await http.get(front.url + "/api/info")).json()
    assert info["workers"] == 2


async def test_leave_and_disconnect_reach_the_worker(
    front: ServerProcess, connect_ws: Connect
) -> None:
    room = _room()
    watcher, leaver, dropper = [await connect_ws(front) for _ in range(3)]
    for ws, who in ((watcher, "w"), (leaver, "l"), (dropper, "d")):
        assert (await ws.join(front.token(room, who, "commune")))["type"] == "joined"
    assert (await leaver.request({"type": "leave"}))["type"] == "left"
    code, _ = await leaver.closed()
    assert code == 1000  # the worker's close, passed on as sent
    left = await watcher.wait_for(lambda m: m["type"] == "participant_left")
    assert (left["participant_id"], left["reason"]) == ("l", "left")
    await dropper.ws.close()
    left = await watcher.wait_for(lambda m: m["type"] == "participant_left")
    assert (left["participant_id"], left["reason"]) == ("d", "disconnected")


async def test_bridges_come_back_by_themselves_after_their_worker_dies(
    front: ServerProcess,
) -> None:
    """24/7: `hoinghi bridge` processes (the chair publishing, a commune watching) reconnect
    on `unavailable`; the restarted worker carries their room and forwards media again."""
    room = _room()
    cmd = [sys.executable, "-m", "hoinghi_cli", "bridge", "--url", front.url,
           "--ice-host", "127.0.0.1"]
    procs = [await asyncio.create_subprocess_exec(
        *cmd, "--token", front.token(room, who, role), cwd=REPO,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        for who, role in (("chair", "chair"), ("c1", "commune"))]
    try:
        async def forwarding() -> dict[str, Any] | None:
            h = await _health(front)
            busy = [w for w in h["workers"] if w["sessions"] == 2]
            if h["status"] != "ok" or not busy:
                return None
            sent = await _metric(front, "hoinghi_router_packets_forwarded")
            return busy[0] if sent.get(str(busy[0]["index"]), 0) > 0 else None

        victim = await _until(forwarding, timeout=60)
        os.kill(victim["pid"], signal.SIGKILL)

        async def back() -> dict[str, Any] | None:
            now = await forwarding()
            # A new process (its counters start at 0, so forwarding > 0 is new media).
            return now if now is not None and now["pid"] != victim["pid"] else None

        again = await _until(back, timeout=60)
        assert again["restarts"] >= victim["restarts"] + 1 or again["index"] != victim["index"]
        assert all(p.returncode is None for p in procs)  # the bridges never gave up
    finally:
        for p in procs:
            if p.returncode is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                await asyncio.wait_for(p.wait(), 20)
            except TimeoutError:
                p.kill()
                await p.wait()

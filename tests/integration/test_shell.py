"""The asyncio shell (signaling.app.Connection) over real websockets, against the real app
(`create_app`) served by uvicorn in the test's own event loop, so the test can set limits the
CLI does not expose (a small `send_queue_max`, short close grace) and read the server's own
counters (`Hub.sessions`, the RoomManager). Publishing uses real aiortc offers; the Router
behind the app is the real one. No connection needs to complete ICE.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn
from aiortc.sdp import SessionDescription
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from sfu.adapters import aiortc_tap as tap
from sfu.config import SfuConfig
from signaling.app import Hub, create_app
from signaling.auth import issue_token
from signaling.config import SignalingConfig
from signaling.messages import MAX_MESSAGE_BYTES
from tests.conftest import TIMEOUT_S, Connect, PublisherOffer, WsClient

pytestmark = pytest.mark.integration

SECRET = "shell-test-secret-" + "0" * 32


class _Server(uvicorn.Server):
    """uvicorn's server, telling the test when it listens; the test runner keeps its signals."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self.listening.set()

    def capture_signals(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


@dataclass
class AppServer:
    host: str
    port: int
    app: Any

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"

    @property
    def hub(self) -> Hub:
        hub = self.app.state.hub
        assert isinstance(hub, Hub)
        return hub

    def token(self, room: str, identity: str, role: str, **kw: Any) -> str:
        return issue_token(SECRET, room, identity, role, **kw)


StartServer = Callable[..., Awaitable[AppServer]]


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    """`await start_server(**SignalingConfig fields)` → the app listening on 127.0.0.1.

    `sndbuf` sets the kernel send buffer of the listening socket, which accepted connections
    inherit: small, it makes a client that reads nothing stall the server's writes quickly.
    """
    tap.set_ice_hosts(["127.0.0.1"])
    running: list[tuple[_Server, asyncio.Task[None], socket.socket]] = []

    async def start(sndbuf: int | None = None, **over: Any) -> AppServer:
        config = SignalingConfig(
            secret=SECRET, sfu=SfuConfig(ice_hosts=("127.0.0.1",)), web_root=None, **over
        )
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if sndbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        sock.setblocking(False)
        app = create_app(config)
        server = _Server(
            uvicorn.Config(
                app,
                ws_max_size=4 * MAX_MESSAGE_BYTES,  # as `hoinghi serve` runs it
                log_level="warning",
                timeout_graceful_shutdown=5,
            )
        )
        task = asyncio.create_task(server.serve(sockets=[sock]))
        running.append((server, task, sock))
        listening = asyncio.create_task(server.listening.wait())
        await asyncio.wait(
            {task, listening}, timeout=TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
        )
        listening.cancel()
        assert server.listening.is_set(), "the server did not start"
        host, port = sock.getsockname()[:2]
        return AppServer(host, port, app)

    yield start
    for server, task, sock in running:
        server.should_exit = True
        try:
            async with asyncio.timeout(15):
                await task
        finally:
            sock.close()


async def eventually(predicate: Callable[[], bool], timeout: float = TIMEOUT_S) -> None:
    """Wait (bounded) for server state the client cannot see a message about."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def joined(
    connect_ws: Connect,
    server: AppServer,
    room: str,
    identity: str,
    role: str = "commune",
) -> tuple[WsClient, dict[str, Any]]:
    client = await connect_ws(server)
    reply = await client.join(server.token(room, identity, role))
    assert reply["type"] == "joined", reply
    return client, reply


def track_ids(tracks: list[dict[str, Any]]) -> list[str]:
    return [t["id"] for t in tracks]


def sdp_media(sdp: str) -> list[tuple[str, str, str | None]]:
    return [(d.kind, d.direction, d.rtp.muxId) for d in SessionDescription.parse(sdp).media]


@pytest.fixture
def room() -> str:
    return f"room-{uuid.uuid4().hex[:10]}"


# --- join, publish, ping, leave ----------------------------------------------------------------


async def test_join_publish_ping_leave(
    start_server: StartServer,
    connect_ws: Connect,
    publisher_offer: PublisherOffer,
    room: str,
) -> None:
    server = await start_server(close_grace_s=0.5)
    hub = server.hub
    client = await connect_ws(server)
    reply = await client.join(server.token(room, "a", "chair"))
    assert reply["type"] == "joined" and reply["participant"]["id"] == "a"
    assert reply["participants"] == [] and reply["tracks"] == []
    assert hub.sessions == 1 and hub.manager.participant_count() == 1

    answer = await client.request(
        {
            "type": "publish",
            "sdp": await publisher_offer(),
            "tracks": [{"mid": "0", "source": "microphone"}, {"mid": "1", "source": "camera"}],
        }
    )
    assert (answer["type"], answer["pc"]) == ("answer", "publisher")
    assert track_ids(answer["tracks"]) == ["a/microphone", "a/camera"]
    assert sdp_media(answer["sdp"]) == [("audio", "recvonly", "0"), ("video", "recvonly", "1")]
    for track in answer["tracks"]:
        published = await client.wait_type("track_published")
        assert published["track"] == track
    assert [t.id for t in hub.manager.tracks(room)] == ["a/microphone", "a/camera"]

    # An empty unsubscribe is valid: docs/signaling.md §4 replies `ok` and changes nothing.
    reply = await client.request({"type": "unsubscribe", "tracks": []})
    assert reply == {"type": "ok", "re": "r3"}  # join was r1, publish r2
    await client.ping()
    assert client.skipped == []  # nothing unasked for: no error, no offer to the publisher

    await client.send({"type": "leave"})
    code, got = await client.closed()
    assert (code, got) == (1000, [{"type": "left"}])
    assert hub.manager.participant_count() == 0 and hub.manager.room_ids() == []
    await eventually(lambda: hub.sessions == 0)


# --- a replaced session keeps its tracks ---------------------------------------------------------


async def test_a_replaced_session_keeps_its_tracks_published(
    start_server: StartServer,
    connect_ws: Connect,
    publisher_offer: PublisherOffer,
    room: str,
) -> None:
    server = await start_server(close_grace_s=0.5)
    watcher, _ = await joined(connect_ws, server, room, "chair", "chair")
    old, _ = await joined(connect_ws, server, room, "xa-002")
    assert (await watcher.wait_type("participant_joined"))["participant"]["id"] == "xa-002"
    answer = await old.request({"type": "publish", "sdp": await publisher_offer()})
    assert track_ids(answer["tracks"]) == ["xa-002/microphone", "xa-002/camera"]
    for tid in ("xa-002/microphone", "xa-002/camera"):
        assert (await watcher.wait_type("track_published"))["track"]["id"] == tid
    offer = await watcher.wait_type("offer")  # the watcher auto-subscribes
    assert offer["pc"] == "subscriber"
    assert sorted(offer["mids"].values()) == ["xa-002/camera", "xa-002/microphone"]

    new, reply = await joined(connect_ws, server, room, "xa-002")
    assert [p["id"] for p in reply["participants"]] == ["chair"]
    assert track_ids(reply["tracks"]) == ["xa-002/microphone", "xa-002/camera"]
    code, got = await old.closed()
    assert code == 4009 and got[-1]["type"] == "error" and got[-1]["code"] == "replaced"
    # participant_left (replaced), then participant_joined, and no track_unpublished
    watcher.skipped.clear()
    left = await watcher.wait_type("participant_left")
    assert left == {"type": "participant_left", "participant_id": "xa-002", "reason": "replaced"}
    again = await watcher.wait_type("participant_joined")
    assert again["participant"]["id"] == "xa-002"
    assert watcher.skipped == []

    # publishing again on a new connection re-binds the same ids: nothing new is announced
    answer = await new.request({"type": "publish", "sdp": await publisher_offer()})
    assert track_ids(answer["tracks"]) == ["xa-002/microphone", "xa-002/camera"]
    await watcher.ping()
    await new.ping()
    assert watcher.skipped == [] and new.skipped == []
    assert [t.id for t in server.hub.manager.tracks(room)] == [
        "xa-002/microphone",
        "xa-002/camera",
    ]
    assert server.hub.manager.participant_count() == 2
    await eventually(lambda: server.hub.sessions == 2)


# --- a client that reads nothing ---------------------------------------------------------------


@contextlib.asynccontextmanager
async def stuck_client(server: AppServer) -> AsyncIterator[ClientConnection]:
    """A raw websocket that never reads: a small kernel receive buffer and a one-frame queue,
    so what the server sends it backs up into the server quickly."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (server.host, server.port))
    ws = await connect(
        server.ws_url, sock=sock, max_queue=1, compression=None, open_timeout=TIMEOUT_S
    )
    try:
        yield ws
    finally:
        with contextlib.suppress(Exception):
            await ws.close()
        sock.close()


async def test_a_client_that_reads_nothing_is_dropped_without_holding_up_others(
    start_server: StartServer, connect_ws: Connect, room: str, caplog: pytest.LogCaptureFixture
) -> None:
    # 32 queued messages: well above the bursts a reading client sees here (10 events at once)
    server = await start_server(send_queue_max=32, close_grace_s=0.2, sndbuf=4096)
    hub = server.hub
    other, _ = await joined(connect_ws, server, room, "other", "chair")
    async with stuck_client(server) as stuck:
        token = server.token(room, "slow", "commune")
        await stuck.send(json.dumps({"type": "join", "id": 1, "protocol": 1, "token": token}))
        assert (await other.wait_type("participant_joined"))["participant"]["id"] == "slow"

        # Visitors come and go, 10 at a time; every event goes to `slow` too and piles up behind
        # its socket. Broadcasting never waits for it: `other` hears of every visitor, in order.
        broadcast: list[dict[str, Any]] = []  # what `slow` was sent while it was in the room
        dropped: list[dict[str, Any]] = []
        for batch in range(100):
            ids = [f"visitor-{batch}-{i}-" + "v" * 40 for i in range(10)]
            clients = []
            for vid in ids:
                token = server.token(room, vid, "commune", name="n" * 128, province="p" * 128)
                client = await connect_ws(server)
                assert (await client.join(token))["type"] == "joined"
                clients.append(client)
            for client in clients:
                await client.send({"type": "leave"})
            closes = await asyncio.gather(*(client.closed() for client in clients))
            assert [code for code, _ in closes] == [1000] * len(clients)
            heard: list[tuple[str, str]] = []
            while len(heard) < 2 * len(ids):
                event = await other.recv()
                if event.get("participant_id") == "slow":
                    dropped.append(event)
                    continue
                if not dropped:
                    broadcast.append(event)
                who = event.get("participant_id") or event["participant"]["id"]
                heard.append((event["type"], who))
                assert event.get("reason", "left") == "left", event
            assert heard == [("participant_joined", v) for v in ids] + [
                ("participant_left", v) for v in ids
            ]
            if dropped:
                break
        assert [(e["type"], e["participant_id"], e["reason"]) for e in dropped] == [
            ("participant_left", "slow", "disconnected")
        ], "the stuck client was never dropped"
        # Only the client that reads nothing overflowed.
        overflows = [r.getMessage() for r in caplog.records if "overflow" in r.getMessage()]
        assert overflows == [f"send queue overflow, closing (room={room} participant=slow)"]

        # Its session is abandoned after the grace periods; the others are still served.
        assert hub.manager.participant_count() == 1
        await eventually(lambda: hub.sessions == 1)
        await other.ping()
        await joined(connect_ws, server, room, "newcomer")
        assert (await other.wait_type("participant_joined"))["participant"]["id"] == "newcomer"

        # What had reached its socket is all it ever gets, in order, then the connection ends.
        got: list[dict[str, Any]] = []
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(TIMEOUT_S):
                while True:
                    got.append(json.loads(await stuck.recv()))
        assert got[0]["type"] == "joined" and got[0]["re"] == 1
        assert 0 < len(got) - 1 < len(broadcast)
        assert got[1:] == broadcast[: len(got) - 1]

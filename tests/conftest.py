"""Shared fixtures: a real `hoinghi serve` subprocess, and websocket clients that talk JSON.

The server binds 127.0.0.1 on port 0 and prints `hoinghi listening on http://HOST:PORT`; the
fixture reads that line. Everything waits on messages with timeouts, never on sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import re
import secrets
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from signaling.auth import issue_token

REPO = Path(__file__).resolve().parents[1]
LISTENING = re.compile(r"hoinghi listening on (http://\S+)")
START_TIMEOUT_S = 30.0
TIMEOUT_S = 5.0


@dataclass
class ServerProcess:
    url: str
    secret: str
    proc: subprocess.Popen[str]
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1) + "/ws"

    def token(self, room: str, identity: str, role: str, **kw: Any) -> str:
        return issue_token(self.secret, room, identity, role, **kw)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _drain(stream: Any, lines: queue.Queue[str]) -> None:
    # Keeps reading after the listening line, so the server can never block on a full pipe.
    for line in stream:
        lines.put(line)
    lines.put("")


def start_server(log_dir: Path, *extra: str) -> ServerProcess:
    secret = "test-" + secrets.token_hex(24)
    env = {**os.environ, "HOINGHI_SECRET": secret, "PYTHONUNBUFFERED": "1"}
    stderr_path = log_dir / "server.log"
    with stderr_path.open("w") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hoinghi_cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--ice-host",
                "127.0.0.1",
                *extra,
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_drain, args=(proc.stdout, lines), daemon=True).start()
    server = ServerProcess(url="", secret=secret, proc=proc, stderr_path=stderr_path)
    try:
        while True:
            line = lines.get(timeout=START_TIMEOUT_S)
            if not line:
                raise RuntimeError(f"server exited at start:\n{server.log_tail()}")
            if match := LISTENING.search(line):
                server.url = match.group(1)
                return server
    except BaseException:
        stop_server(server)
        raise


def stop_server(server: ServerProcess) -> None:
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(timeout=10)


@contextlib.contextmanager
def running_server(log_dir: Path, *extra: str) -> Iterator[ServerProcess]:
    server = start_server(log_dir, *extra)
    try:
        yield server
    finally:
        alive = server.alive()
        stop_server(server)
    # Whatever the test did, the server must have survived it.
    assert alive, f"server died during the test:\n{server.log_tail()}"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    with running_server(tmp_path) as s:
        yield s


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("server")) as s:
        yield s


# --- websocket clients ------------------------------------------------------------------------


@dataclass
class WsClient:
    """A websocket speaking the protocol's JSON, with waits that always time out."""

    ws: ClientConnection
    skipped: list[dict[str, Any]] = field(default_factory=list)
    _next_id: int = 0

    async def send(self, message: dict[str, Any] | str | bytes) -> None:
        await self.ws.send(message if isinstance(message, str | bytes) else json.dumps(message))

    async def recv(self, timeout: float = TIMEOUT_S) -> dict[str, Any]:
        async with _deadline(timeout):
            data = await self.ws.recv()
        assert isinstance(data, str), "the server sent a binary frame"
        message = json.loads(data)
        assert isinstance(message, dict)
        return message

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = TIMEOUT_S
    ) -> dict[str, Any]:
        """The next message matching `predicate`; the others are kept in `skipped`."""
        async with _deadline(timeout):
            while True:
                message = await self.recv(timeout=timeout)
                if predicate(message):
                    return message
                self.skipped.append(message)

    async def wait_type(
        self, kind: str, timeout: float = TIMEOUT_S, **fields: Any
    ) -> dict[str, Any]:
        return await self.wait_for(
            lambda m: m.get("type") == kind and all(m.get(k) == v for k, v in fields.items()),
            timeout,
        )

    async def request(self, message: dict[str, Any], timeout: float = TIMEOUT_S) -> dict[str, Any]:
        """Send with a fresh id; the reply (or error) that carries it."""
        self._next_id += 1
        rid = f"r{self._next_id}"
        await self.send({**message, "id": rid})
        return await self.wait_for(lambda m: m.get("re") == rid, timeout)

    async def ping(self, timeout: float = TIMEOUT_S) -> None:
        reply = await self.request({"type": "ping"}, timeout)
        assert reply["type"] == "pong", reply

    async def closed(self, timeout: float = TIMEOUT_S) -> tuple[int | None, list[dict[str, Any]]]:
        """Wait for the server to close; returns (close code, messages received before)."""
        got: list[dict[str, Any]] = []
        async with _deadline(timeout):
            try:
                while True:
                    data = await self.ws.recv()
                    if isinstance(data, str):
                        got.append(json.loads(data))
            except ConnectionClosed as exc:
                return (exc.rcvd.code if exc.rcvd else None), got

    async def join(
        self, token: str | None, timeout: float = TIMEOUT_S, **extra: Any
    ) -> dict[str, Any]:
        message: dict[str, Any] = {"type": "join", "protocol": 1, **extra}
        if token is not None:
            message["token"] = token
        return await self.request(message, timeout)


@contextlib.asynccontextmanager
async def _deadline(timeout: float) -> AsyncIterator[None]:
    async with asyncio.timeout(timeout):
        yield


class Listening(Protocol):
    """A running server a client can reach: the subprocess above, or one in the test's loop."""

    @property
    def ws_url(self) -> str: ...


Connect = Callable[..., Awaitable[WsClient]]


@pytest.fixture
async def connect_ws() -> AsyncIterator[Connect]:
    """`await connect_ws(server)` → an open WsClient; all are closed at the end of the test."""
    opened: list[ClientConnection] = []

    async def _open(server: Listening, **kw: Any) -> WsClient:
        ws = await connect(server.ws_url, open_timeout=TIMEOUT_S, **kw)
        opened.append(ws)
        return WsClient(ws)

    yield _open
    for ws in opened:
        with contextlib.suppress(Exception):
            await ws.close()


# --- real media offers ----------------------------------------------------------------------------

PublisherOffer = Callable[[], Awaitable[str]]


@pytest.fixture
async def publisher_offer() -> AsyncIterator[PublisherOffer]:
    """`await publisher_offer()` → the SDP of a real aiortc offer, as a client's publisher pc
    makes it: microphone (mid 0) and camera (mid 1), both sendonly, ICE host 127.0.0.1. The
    connections need not complete ICE; all are closed at the end of the test."""
    from aiortc import RTCConfiguration, RTCPeerConnection

    from clients.media import PatternVideoTrack, ToneAudioTrack
    from sfu.adapters.aiortc_tap import set_ice_hosts

    set_ice_hosts(["127.0.0.1"])
    pcs: list[RTCPeerConnection] = []

    async def offer() -> str:
        # iceServers explicit: aiortc would otherwise add a public STUN server
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pcs.append(pc)
        pc.addTransceiver(ToneAudioTrack(), direction="sendonly")
        pc.addTransceiver(PatternVideoTrack(), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp

    yield offer
    for pc in pcs:
        await pc.close()

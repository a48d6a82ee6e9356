"""hoinghi as a benchmark target: the server as a child process, and a minimal protocol client.

The client speaks docs/signaling.md directly (websocket + JSON) rather than through
clients/session.py: the benchmark needs to hook each subscriber connection between the server's
offer and our answer, and must keep working while that client library evolves.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import secrets
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription
from websockets.asyncio.client import ClientConnection, connect

from bench.httpc import request_text
from bench.peer import require_loopback
from bench.procs import Child, spawn
from bench.procstat import ProcCpu, proc_cpu, tree_cpu
from signaling.auth import issue_token

_LISTENING = re.compile(r"hoinghi listening on (http://\S+)")
_WORKER_LABEL = re.compile(r'[{,]worker="([^"]*)"')


def hoinghi_command() -> list[str]:
    # The console script installed next to this interpreter; its pid is the server's Python.
    script = Path(sys.executable).with_name("hoinghi")
    if script.exists():
        return [str(script)]
    found = shutil.which("hoinghi")
    if found is None:  # not installed (the device machine runs from the tree): the module
        return [sys.executable, "-m", "hoinghi_cli"]
    return [found]


class HoinghiServer:
    system = "hoinghi"

    def __init__(self, workdir: Path, config: str = "default", workers: int = 1,
                 span_after: int | None = None, serve_args: tuple[str, ...] = ()) -> None:
        self.workdir = workdir
        self.serve_args = serve_args  # more `hoinghi serve` flags
        self.config = config
        # > 1: `serve --workers W`, a front process and W worker processes under it.
        self.workers = workers
        self.span_after = span_after  # with workers: `serve --span-after N` (None: default)
        self.child: Child | None = None
        self.url = ""
        self.counters: dict[str, float] = {}  # COUNTERS as of the last forwarded_packets()
        # Forwarded packets per `worker` label ("" without one), as of forwarded_packets().
        self.forwarded_by_worker: dict[str, float] = {}
        self.secret = secrets.token_hex(24)
        self.room = f"bench-{secrets.token_hex(4)}"

    @property
    def pid(self) -> int:
        assert self.child is not None
        return self.child.pid

    def cpu(self) -> ProcCpu:
        """The server's CPU so far: with workers, the front's and every worker's together."""
        return tree_cpu(self.pid) if self.workers > 1 else proc_cpu(self.pid)

    async def start(self, timeout: float = 30.0) -> int:
        log = self.workdir / "hoinghi-server.log"
        env = dict(os.environ, HOINGHI_SECRET=self.secret, PYTHONUNBUFFERED="1")
        extra = ["--workers", str(self.workers)] if self.workers > 1 else []
        if self.workers > 1 and self.span_after is not None:
            extra += ["--span-after", str(self.span_after)]
        self.child = await spawn(
            "hoinghi-server",
            [*hoinghi_command(), "serve", "--host", "127.0.0.1", "--port", "0",
             "--ice-host", "127.0.0.1", "--log-level", "warning", *extra, *self.serve_args],
            log, env=env, worker=False, server=True,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            m = _LISTENING.search(self.child.log_tail(20000))
            if m:
                self.url = m.group(1).rstrip("/")
                return self.child.pid
            if self.child.proc.returncode is not None or loop.time() > deadline:
                raise RuntimeError(f"hoinghi serve did not start:\n{self.child.log_tail()}")
            await asyncio.sleep(0.1)

    def spec(self, room: str | None = None) -> dict[str, object]:
        """Client spec for the default room, or for `room` (same server, same secret)."""
        return {"system": "hoinghi", "url": self.url, "room": room or self.room,
                "secret": self.secret}

    async def forwarded_packets(self) -> int:
        """The router's own forwarded-packet counter, from /metrics (Prometheus text)."""
        text = await request_text("GET", self.url + "/metrics", timeout=10)
        total = 0.0
        counters = dict.fromkeys(COUNTERS, 0.0)
        by_worker: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("hoinghi_router_packets_forwarded"):
                value = float(line.rsplit(" ", 1)[1])
                total += value
                m = _WORKER_LABEL.search(line)
                key = m.group(1) if m else ""
                by_worker[key] = by_worker.get(key, 0.0) + value
            name = line.split("{", 1)[0]
            if name in counters:
                counters[name] += float(line.rsplit(" ", 1)[1])
        self.counters = counters
        self.forwarded_by_worker = by_worker
        return int(total)

    async def stop(self) -> None:
        if self.child is not None:
            # SIGTERM first (inside Child.stop) lets the server close its peers cleanly.
            await self.child.stop(grace=5)


# Read along with the forwarded count, for the ingress figures of the JSON line.
COUNTERS = ("hoinghi_router_ingress_datagrams", "hoinghi_router_ingress_wakeups",
            "hoinghi_router_ingress_rtp_batches", "hoinghi_router_ingress_rtp_packets",
            "hoinghi_router_fanout_gso_packets", "hoinghi_router_fanout_uring_sends",
            "hoinghi_router_fanout_uring_enters", "hoinghi_router_retransmitted")


class _Signaling:
    """One participant's websocket: request/reply by id; offers queued for whoever answers.

    Queued, not handed to a callback: the server may send its first offer right behind
    `joined`, before the joining coroutine has even resumed.
    """

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.offers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.tasks: list[asyncio.Task[None]] = [asyncio.create_task(self._read())]

    async def _read(self) -> None:
        async for raw in self.ws:
            msg = json.loads(raw)
            fut = self._pending.pop(msg.get("re"), None) if "re" in msg else None
            if fut is not None and not fut.done():
                fut.set_result(msg)
            elif msg.get("type") == "offer":
                self.offers.put_nowait(msg)

    async def request(self, msg: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
        rid = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        await self.ws.send(json.dumps({**msg, "id": rid}))
        reply = await asyncio.wait_for(fut, timeout)
        if reply.get("type") == "error":
            raise RuntimeError(
                f"hoinghi {msg['type']}: {reply.get('code')}: {reply.get('message')}"
            )
        return reply

    def keepalive(self, every: float) -> None:
        async def ping() -> None:
            while True:
                await asyncio.sleep(every)
                with contextlib.suppress(Exception):
                    await self.request({"type": "ping"}, timeout=every)

        self.tasks.append(asyncio.create_task(ping()))

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        with contextlib.suppress(Exception):
            await self.ws.close()


class HoinghiClient:
    """The benchmark's side of a hoinghi room, for one process (one websocket per peer)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.url = str(spec["url"])
        self.room = str(spec["room"])
        self.secret = str(spec["secret"])
        self._count = itertools.count()
        self._tag = secrets.token_hex(3)
        self._sockets: list[_Signaling] = []

    async def _join(self, identity: str, role: str, auto_subscribe: bool) -> _Signaling:
        ws_url = self.url.replace("http://", "ws://", 1) + "/ws"
        # As browsers: no websocket-level pings, only the protocol's (`keepalive`).
        ws = await connect(ws_url, open_timeout=20, proxy=None, max_size=2**22,
                           ping_interval=None)
        sig = _Signaling(ws)
        self._sockets.append(sig)
        token = issue_token(self.secret, self.room, identity, role, ttl_s=6 * 3600)
        joined = await sig.request({"type": "join", "protocol": 1, "token": token,
                                    "room": self.room, "auto_subscribe": auto_subscribe})
        # Every keepalive_s, as the protocol asks and both clients do (clients/session.py,
        # clients/web/js/signaling.js); the benchmarks pinged twice as often before.
        sig.keepalive(float(joined.get("keepalive_s", 15)))
        return sig

    async def join(self, identity: str, role: str) -> None:
        """Join without media: a bridge that only holds its signaling session."""
        await self._join(f"{identity}-{self._tag}", role, auto_subscribe=False)

    async def publish(self, pc: RTCPeerConnection, identity: str = "bench-pub",
                      role: str = "chair") -> dict[str, Any]:
        sig = await self._join(f"{identity}-{self._tag}", role, auto_subscribe=False)
        await pc.setLocalDescription(await pc.createOffer())
        tracks = [
            {"mid": t.mid, "source": "microphone" if t.kind == "audio" else "camera"}
            for t in pc.getTransceivers()
        ]
        reply = await sig.request({"type": "publish", "sdp": pc.localDescription.sdp,
                                   "tracks": tracks})
        require_loopback(reply["sdp"], "hoinghi answer")
        await pc.setRemoteDescription(RTCSessionDescription(reply["sdp"], "answer"))
        return {"tracks": [t.get("id") for t in reply.get("tracks", [])]}

    async def subscribe(
        self, pc: RTCPeerConnection, on_offer: Callable[[RTCPeerConnection, str], None]
    ) -> None:
        """auto_subscribe: the server offers as tracks appear; we answer every offer."""
        first = asyncio.get_running_loop().create_future()
        sig = await self._join(f"bench-sub-{self._tag}-{next(self._count)}", "observer",
                               auto_subscribe=True)

        async def answer_all() -> None:
            # In order: the server sends the next offer only after our answer to this one.
            while True:
                msg = await sig.offers.get()
                if msg.get("pc") != "subscriber":
                    continue
                try:
                    require_loopback(msg["sdp"], "hoinghi offer")
                    await pc.setRemoteDescription(RTCSessionDescription(msg["sdp"], "offer"))
                    on_offer(pc, msg["sdp"])
                    await pc.setLocalDescription(await pc.createAnswer())
                    await sig.ws.send(json.dumps({"type": "answer", "pc": "subscriber",
                                                  "sdp": pc.localDescription.sdp}))
                except Exception as exc:
                    if not first.done():
                        first.set_exception(exc)
                    raise
                if not first.done():
                    first.set_result(None)

        sig.tasks.append(asyncio.create_task(answer_all()))
        await asyncio.wait_for(first, 30)

    async def close(self) -> None:
        await asyncio.gather(*(s.close() for s in self._sockets), return_exceptions=True)

"""The ASGI application: HTTP routes, /metrics, and the websocket shell around SessionCore.

Each websocket gets three tasks: a reader (frames → SessionCore → actions, requests carried out
one at a time so a client's messages take effect in order), a writer (drains a bounded queue, so
broadcasts only ever append), and a watchdog (join and keepalive timers). Long-lived objects
(RoomManager, metrics) are built in `lifespan`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from rooms.manager import JoinSnapshot, RoomManager
from rooms.memory import MemoryRoomStore
from rooms.model import Participant
from sfu import fastpath
from sfu.router import Router
from sfu.span import spanning_factory
from signaling import api, span_routes
from signaling import messages as m
from signaling.auth import Grant
from signaling.config import SignalingConfig
from signaling.errors import CLOSE_POLICY, TooManyConnections
from signaling.fragments import Fragments, dumps, joined_text
from signaling.metrics import Metrics
from signaling.session import Close, JoinRequest, Request, Send, SessionCore

logger = logging.getLogger(__name__)

SERVER = "hoinghi/0.1"


# One-entry cache: a broadcast hands the same message object to every peer in one synchronous
# loop, so a room of thousands serializes each event once. Holding the object keeps its identity
# from being reused; messages are never mutated once sent.
_last_encoded: tuple[object, str] | None = None


def _encode(message: dict[str, Any]) -> str:
    global _last_encoded
    if _last_encoded is not None and _last_encoded[0] is message:
        return _last_encoded[1]
    text = dumps(message)
    _last_encoded = (message, text)
    return text


@dataclass
class Hub:
    """What every connection shares; built in lifespan."""

    config: SignalingConfig
    manager: RoomManager
    metrics: Metrics
    cluster: span_routes.Cluster | None = None  # `serve --workers N`: this worker's peers
    fragments: Fragments = field(default_factory=Fragments)  # `joined`'s records, encoded once
    sessions: int = 0
    # live connections per token key (its jti, else a hash of the token)
    token_uses: dict[str, int] = field(default_factory=dict)

    def take_token(self, key: str) -> bool:
        uses = self.token_uses.get(key, 0)
        if uses >= self.config.max_connections_per_token:
            return False
        self.token_uses[key] = uses + 1
        return True

    def release_token(self, key: str) -> None:
        uses = self.token_uses.get(key, 0) - 1
        if uses > 0:
            self.token_uses[key] = uses
        else:
            self.token_uses.pop(key, None)


class Connection:
    """One websocket session: drives a SessionCore, and is the manager's `Peer` for it."""

    def __init__(self, websocket: WebSocket, hub: Hub) -> None:
        self.ws = websocket
        self.hub = hub
        self.core = SessionCore(hub.config)
        self._out: deque[str] = deque()
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._close: tuple[int, str] | None = None
        self._participant: Participant | None = None
        self._joined = False
        self._left = False
        # Counted in hub.token_uses while set: from the join until the socket is really gone,
        # so a replaced session still counts while it closes and a leaked token cannot churn
        # through joins (each one a broadcast to the whole conference).
        self._token_key: str | None = None
        self._background: set[asyncio.Task[None]] = set()

    # --- rooms.manager.Peer ----------------------------------------------------------------------

    @property
    def participant(self) -> Participant:
        if self._participant is None:
            raise RuntimeError("not joined")
        return self._participant

    @property
    def auto_subscribe(self) -> bool:
        return self.core.auto_subscribe

    def send(self, message: dict[str, Any]) -> None:
        self._send_text(_encode(message))
        if message.get("type") == "error" and self._close is None:
            self.hub.metrics.errors.labels(code=str(message.get("code"))).inc()

    def _send_text(self, text: str) -> None:
        if self._close is not None:
            return
        if len(self._out) >= self.hub.config.send_queue_max:
            self._overflow()
            return
        self._out.append(text)
        self._wake.set()

    def close(self, code: int, reason: str) -> None:
        if self._close is not None:
            return
        self._close = (code, reason)
        self.core.closed()
        self._wake.set()
        self._closing.set()

    def _release_token(self) -> None:
        if self._token_key is not None:
            self.hub.release_token(self._token_key)
            self._token_key = None

    # --- lifecycle -------------------------------------------------------------------------------

    async def run(self) -> None:
        self.hub.sessions += 1
        reader = asyncio.create_task(self._read_loop())
        writer = asyncio.create_task(self._write_loop())
        watchdog = asyncio.create_task(self._watchdog())
        closing = asyncio.create_task(self._closing.wait())
        tasks = (reader, writer, watchdog, closing)
        try:
            await asyncio.wait((reader, writer, closing), return_when=asyncio.FIRST_COMPLETED)
            # Ending. If we are closing, let the writer flush and send the close frame; then
            # let the reader finish its request and see the disconnect. A client that reads
            # nothing is cut off after the grace periods instead of holding the task forever.
            grace = self.hub.config.close_grace_s
            if self._close is not None:
                await asyncio.wait((writer,), timeout=grace)
            if not reader.done():
                await asyncio.wait((reader,), timeout=grace)
        finally:
            if reader.done() and not reader.cancelled() and reader.exception() is not None:
                logger.error("reader failed (%s)", self._who(), exc_info=reader.exception())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.core.closed()
            self._release_token()
            await self._leave("disconnected")
            self.hub.sessions -= 1

    async def _read_loop(self) -> None:
        while self._close is None:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                self.core.closed()
                return
            text = message.get("text")
            frame: str | bytes = text if text is not None else (message.get("bytes") or b"")
            self.hub.metrics.received.inc()
            for action in self.core.receive(frame):
                await self._perform(action)

    async def _write_loop(self) -> None:
        try:
            while True:
                while self._out:
                    await self.ws.send_text(self._out.popleft())
                    self.hub.metrics.sent.inc()
                if self._close is not None:
                    code, reason = self._close
                    await self.ws.close(code, reason)
                    return
                self._wake.clear()
                await self._wake.wait()
        except (OSError, RuntimeError) as exc:  # ClientDisconnected is an OSError
            # The socket is gone; nothing else can be delivered. The reader sees the disconnect.
            logger.debug("send failed (%s): %r", self._who(), exc)
            self.core.closed()

    async def _watchdog(self) -> None:
        clock = time.monotonic
        while (deadline := self.core.deadline()) is not None:
            delay = deadline - clock()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            for action in self.core.tick():
                await self._perform(action)

    def _overflow(self) -> None:
        logger.warning("send queue overflow, closing (%s)", self._who())
        self.hub.metrics.errors.labels(code="slow_client").inc()
        self._out.clear()
        self.close(CLOSE_POLICY, "too_slow")
        # Leave the room now, not when the (stuck) socket finally goes away: others must stop
        # seeing a participant that cannot hear them.
        task = asyncio.get_running_loop().create_task(self._leave("disconnected"))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _leave(self, reason: str) -> None:
        if not self._joined or self._left:
            return
        self._left = True
        try:
            await self.hub.manager.leave(self, reason)
        except Exception:
            logger.exception("leave failed (%s)", self._who())

    def _who(self) -> str:
        p = self._participant
        return f"room={p.room_id} participant={p.id}" if p else "not joined"

    # --- actions ---------------------------------------------------------------------------------

    async def _perform(self, action: Send | Close | JoinRequest | Request) -> None:
        if isinstance(action, Send):
            self.send(action.message)
        elif isinstance(action, Close):
            self.close(action.code, action.reason)
        elif isinstance(action, JoinRequest):
            await self._join(action)
        else:
            await self._request(action.message)

    async def _fail(self, exc: BaseException, re: m.Re, context: str) -> None:
        for action in self.core.fail(exc, re, context=context):
            await self._perform(action)

    async def _join(self, action: JoinRequest) -> None:
        grant, re = action.grant, action.message.id
        if not self._take_token(grant, action.message.token or ""):
            await self._fail(TooManyConnections(), re, "join")
            return
        self._participant = Participant(
            id=grant.identity,
            room_id=grant.room,
            role=grant.role,
            name=grant.display_name,
            province=grant.province,
            grants=grant.grants.names(),
            joined_at=time.time(),
        )
        me = {**self._participant.to_json(), "grants": grant.grants.to_json()}

        def admitted(snapshot: JoinSnapshot) -> None:
            # Runs when the manager makes us visible: `joined` is queued before any event.
            self._joined = True
            self.core.join_accepted()
            # The room's participants and tracks, each encoded once (signaling/fragments.py).
            self._send_text(joined_text(
                self.hub.fragments, re, grant.room, me, snapshot,
                [s.to_json() for s in self.hub.config.sfu.client_ice_servers],
                self.hub.config.keepalive_s))

        try:
            await self.hub.manager.join(self, admitted)
        except Exception as exc:
            if not self._joined:
                self._participant = None
                self._release_token()  # the client may try again on this socket
            await self._fail(exc, re, "join")
            return
        try:
            await self.hub.manager.auto_subscribe_joined(self)
        except Exception as exc:
            await self._fail(exc, None, "auto-subscribe")

    def _take_token(self, grant: Grant, token: str) -> bool:
        key = grant.jti or hashlib.sha256(token.encode()).hexdigest()
        if not self.hub.take_token(key):
            return False
        self._token_key = key
        return True

    async def _request(self, msg: m.Message) -> None:
        mgr = self.hub.manager
        try:
            if isinstance(msg, m.Control):
                data = await mgr.control(self, msg.action, dict(msg.args))
                self.send(m.roll_call(msg.id, data) if msg.action == "roll_call" and data
                          else m.ok(msg.id))
            elif isinstance(msg, m.FloorSnapshot):
                self.send(m.floor_snapshot(msg.id, mgr.floor_snapshot(self)))
            elif isinstance(msg, m.Quality):
                quality = {"bitrate_kbps": msg.bitrate_kbps, "loss": msg.loss,
                           "rtt_ms": msg.rtt_ms, "jitter_ms": msg.jitter_ms, "at": time.time()}
                mgr.report_quality(self, quality)
                self.send(m.ok(msg.id))
            elif isinstance(msg, m.SetLastN):
                self.send(m.last_n(msg.id, mgr.set_last_n(self, msg.n)))
            elif isinstance(msg, m.Publish):
                answer, new = await mgr.publish(self, msg.sdp, msg.sources)
                mine = [
                    t
                    for t in mgr.tracks(self.participant.room_id)
                    if t.participant_id == self.participant.id
                ] or new
                self.send(m.publisher_answer(msg.id, answer, [t.to_json() for t in mine]))
                await mgr.announce_published(self, new)
            elif isinstance(msg, m.Answer):
                await mgr.subscriber_answer(self, msg.sdp)
                self._ok_if_asked(msg.id)
            elif isinstance(msg, m.Subscribe):
                await mgr.subscribe(self, list(msg.tracks))
                self.send(m.ok(msg.id))
            elif isinstance(msg, m.Unsubscribe):
                await mgr.unsubscribe(self, list(msg.tracks))
                self.send(m.ok(msg.id))
            elif isinstance(msg, m.Trickle):
                await mgr.add_ice_candidate(self, msg.pc, msg.candidate)
                self._ok_if_asked(msg.id)
            elif isinstance(msg, m.Mute):
                track = mgr.set_track_muted(self, msg.track, msg.muted)
                self.send(m.ok(msg.id))
                mgr.broadcast(self.participant.room_id, m.track_muted(track.id, track.muted),
                              about=track.participant_id)
            elif isinstance(msg, m.Leave):
                await self._leave("left")
        except Exception as exc:
            await self._fail(exc, msg.id, type(msg).__name__.lower())

    def _ok_if_asked(self, re: m.Re) -> None:
        # answer/trickle have no reply of their own; one that carries an id gets `ok`.
        if re is not None:
            self.send(m.ok(re))


def create_app(config: SignalingConfig) -> Starlette:
    hub_box: list[Hub] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        cluster = None
        if config.worker_index is not None:
            cluster = span_routes.Cluster(config.secret, config.worker_index, config.span_after)
        manager = RoomManager(
            MemoryRoomStore(),
            config.sfu,
            router_factory=Router if cluster is None else spanning_factory(cluster),
            max_participants=config.max_participants,
            last_n=config.last_n,
            last_n_max=config.last_n_max,
            max_speakers=config.max_speakers,
        )
        hub = Hub(config=config, manager=manager, metrics=Metrics(), cluster=cluster)
        hub.metrics.watch(lambda: hub)
        logger.info("media fan-out: %s; sends: %s", fastpath.reason(), fastpath.send_mode())
        hub_box.append(hub)
        app.state.hub = hub
        try:
            yield
        finally:
            await manager.close()
            hub_box.clear()

    async def healthz(request: HttpRequest) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def info(request: HttpRequest) -> JSONResponse:
        return JSONResponse({"protocol": m.PROTOCOL, "signaling": "/ws", "server": SERVER})

    async def metrics(request: HttpRequest) -> Response:
        body, content_type = hub_box[0].metrics.render()
        return Response(body, media_type=content_type)

    async def ws_endpoint(websocket: WebSocket) -> None:
        try:
            await websocket.accept()
            await Connection(websocket, hub_box[0]).run()
        except OSError:  # the client went away during the handshake
            logger.debug("client gone before the session started")
        except Exception:
            # Never let one connection's failure reach the server (or anyone else).
            logger.exception("connection failed")

    routes: list[BaseRoute] = [
        Route("/healthz", healthz),
        Route("/api/info", info),
        Route("/metrics", metrics),
        WebSocketRoute("/ws", ws_endpoint),
        *api.routes(lambda: hub_box[0]),
        *span_routes.routes(lambda: hub_box[0].cluster if hub_box else None, lambda: config.sfu),
    ]
    if config.web_root is not None and config.web_root.is_dir():
        routes.append(Mount("/", StaticFiles(directory=config.web_root, html=True), name="web"))
    return Starlette(routes=routes, lifespan=lifespan)

"""The front of `hoinghi serve --workers W`: one public port, W worker processes behind it.

Media never passes here: each worker's SDP names its own UDP sockets, so bridges send RTP
straight to the worker that carries their room. The front carries signaling only:

- `/ws`: until a valid `join`, the front runs the protocol's own SessionCore (same errors, same
  rate and size limits, same join timeout as a worker); the join's verified token names the
  room, the room names the worker (signaling/cluster.py: Placement), and from then on frames
  are relayed both ways unchanged. A worker's close code reaches the client as it was sent; a
  worker that dies closes its clients with `unavailable` (1013: try again) and is restarted.
- HTTP API: routed by the room (the token's for POST /api/rooms, the path's otherwise).
- `/metrics`: every worker's metrics with a `worker` label, then the front's own.
- `/healthz`: each worker's state; 503 only when none is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from signaling import messages as m
from signaling.api import ApiError, bearer_token, read_body
from signaling.app import SERVER
from signaling.auth import verify_token
from signaling.cluster import Placement
from signaling.config import SignalingConfig
from signaling.errors import AuthError, SignalingError, Unavailable
from signaling.front_metrics import FrontMetrics
from signaling.session import Close, JoinRequest, Send, SessionCore
from signaling.span_routes import internal_token
from signaling.workers import WorkerPool

logger = logging.getLogger(__name__)

# A worker that does not take a websocket in this long is treated as down for this client.
CONNECT_TIMEOUT_S = 5.0


@dataclass
class Front:
    config: SignalingConfig
    placement: Placement
    pool: WorkerPool
    http: httpx.AsyncClient
    metrics: FrontMetrics

    def any_up(self) -> int | None:
        return next((w.index for w in self.pool.workers if w.url is not None), None)


class _Reroute(Exception):
    """A second join, after a failed one, names a room on another worker."""

    def __init__(self, room: str, frame: str) -> None:
        self.room, self.frame = room, frame


def join_room(text: str, config: SignalingConfig) -> str | None:
    """The room of a `join` frame whose token verifies; None for anything else (a worker
    answers that with the protocol's error)."""
    if '"join"' not in text:
        return None
    try:
        msg = m.parse(text, config.max_message_bytes)
        if not isinstance(msg, m.Join):
            return None
        return verify_token(config.secret, msg.token).room
    except SignalingError:  # AuthError is one
        return None


class Relay:
    """One client websocket: the join through SessionCore, then a plain relay to a worker."""

    def __init__(self, ws: WebSocket, front: Front) -> None:
        self.ws = ws
        self.front = front
        self.core = SessionCore(front.config)

    async def run(self) -> None:
        first = await self._await_join()
        while first is not None:
            room, frame = first
            first = await self._relay(room, frame)

    async def _send(self, message: dict[str, Any]) -> None:
        await self.ws.send_text(json.dumps(message, ensure_ascii=False, separators=(",", ":")))

    async def _await_join(self) -> tuple[str, str] | None:
        """Frames up to the first valid join, answered here exactly as a worker would."""
        while True:
            deadline = self.core.deadline()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                message = await asyncio.wait_for(self.ws.receive(), timeout)
            except TimeoutError:
                actions = self.core.tick()
            else:
                if message["type"] == "websocket.disconnect":
                    return None
                text = message.get("text")
                frame: str | bytes = text if text is not None else (message.get("bytes") or b"")
                actions = self.core.receive(frame)
            for action in actions:
                if isinstance(action, Send):
                    await self._send(action.message)
                elif isinstance(action, Close):
                    await self.ws.close(action.code, action.reason)
                    return None
                elif isinstance(action, JoinRequest):
                    assert isinstance(frame, str)  # a parsed join was text
                    return action.grant.room, frame

    async def _relay(self, room: str, frame: str) -> tuple[str, str] | None:
        """Relay to the room's worker until either side ends; a rerouted join comes back."""
        placement = self.front.placement
        index = placement.place(room)
        url = None if index is None else self.front.pool.url(index)
        if index is None or url is None:
            await self._unavailable(m.peek_id(frame))
            return None
        try:
            upstream = await connect(
                url.replace("http://", "ws://", 1) + "/ws",
                open_timeout=CONNECT_TIMEOUT_S, proxy=None, compression=None,
                max_size=4 * self.front.config.max_message_bytes,
            )
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            logger.warning("worker %d refused a session (%r)", index, exc)
            await self._unavailable(m.peek_id(frame))
            return None
        ticket = placement.session_opened(room)
        self.front.metrics.relayed.inc()
        try:
            try:
                await upstream.send(frame)
            except ConnectionClosed:  # the worker died right then
                await self._unavailable(m.peek_id(frame))
                return None
            return await self._pump(upstream, room, index)
        finally:
            placement.session_closed(room, ticket)
            with contextlib.suppress(Exception):
                await upstream.close()

    async def _pump(self, upstream: ClientConnection, room: str, index: int
                    ) -> tuple[str, str] | None:
        joined = asyncio.Event()
        up = asyncio.create_task(self._client_to_worker(upstream, index, joined))
        down = asyncio.create_task(self._worker_to_client(upstream, joined))
        # A client that reads nothing blocks `down` in its send; the worker then closes it as
        # too slow, and this notices even though `down` cannot.
        ended = asyncio.create_task(upstream.wait_closed())
        grace = self.front.config.close_grace_s
        try:
            await asyncio.wait((up, down, ended), return_when=asyncio.FIRST_COMPLETED)
            if up.done() and isinstance(up.exception(), _Reroute):
                down.cancel()
                exc = up.exception()
                assert isinstance(exc, _Reroute)
                return exc.room, exc.frame
            if up.done():
                # The client is gone (or sent its last frame): let the worker see it go.
                await upstream.close()
                await asyncio.wait((down,), timeout=grace)
            elif down.done():
                # The worker ended the session: its close code was passed on by `down`.
                await asyncio.wait((up,), timeout=grace)
            else:
                await asyncio.wait((down,), timeout=grace)
            return None
        finally:
            for task in (up, down, ended):
                task.cancel()
            results = await asyncio.gather(up, down, ended, return_exceptions=True)
            for result in results:
                if isinstance(result, Exception) and not isinstance(
                    result, (_Reroute, ConnectionClosed, WebSocketDisconnect, OSError)
                ):
                    logger.error("relay failed (room %s)", room, exc_info=result)

    async def _client_to_worker(self, upstream: ClientConnection, index: int,
                                joined: asyncio.Event) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                await upstream.send(message.get("bytes") or b"")
                continue
            if not joined.is_set():
                self._check_rejoin(text, index)
            await upstream.send(text)

    def _check_rejoin(self, text: str, index: int) -> None:
        # After a failed join the protocol lets the client try again on the same socket; a
        # join for a room on another worker must go there. Before `joined` only: cheap then.
        room = join_room(text, self.front.config)
        if room is not None and self.front.placement.place(room) not in (None, index):
            raise _Reroute(room, text)

    async def _worker_to_client(self, upstream: ClientConnection, joined: asyncio.Event) -> None:
        try:
            async for data in upstream:
                if isinstance(data, bytes):
                    await self.ws.send_bytes(data)
                    continue
                if not joined.is_set() and '"joined"' in data:
                    with contextlib.suppress(ValueError):
                        if json.loads(data).get("type") == "joined":
                            joined.set()
                await self.ws.send_text(data)
        except ConnectionClosed:
            pass
        code = upstream.close_code
        if code is None or code == 1006:
            # No close frame: the worker died (or the link to it did).
            await self._unavailable(None)
            return
        if code == 1005:  # "no status" may not be sent in a close frame
            code = 1000
        with contextlib.suppress(RuntimeError, OSError):
            await self.ws.close(code, upstream.close_reason or "")

    async def _unavailable(self, re: m.Re) -> None:
        self.front.metrics.unavailable.inc()
        err = Unavailable(re=re)
        with contextlib.suppress(RuntimeError, OSError):
            await self._send(m.error(err.code, err.message, re))
            await self.ws.close(err.close_code or 1013, err.code)


async def _proxy(front: Front, request: HttpRequest, index: int | None,
                 body: bytes = b"") -> Response:
    url = None if index is None else front.pool.url(index)
    if url is None:
        return ApiError(503, "unavailable", Unavailable.default_message).response()
    headers = {k: v for k, v in request.headers.items()
               if k in ("authorization", "content-type", "accept")}
    target = url + request.url.path + (f"?{request.url.query}" if request.url.query else "")
    try:
        reply = await front.http.request(request.method, target, headers=headers, content=body)
    except httpx.HTTPError as exc:
        logger.warning("worker %s did not answer %s (%r)", index, request.url.path, exc)
        return ApiError(503, "unavailable", Unavailable.default_message).response()
    return Response(reply.content, reply.status_code,
                    media_type=reply.headers.get("content-type"))


def _token_room(front: Front, request: HttpRequest) -> str | None:
    token = bearer_token(request)
    if token is None:
        return None
    try:
        return verify_token(front.config.secret, token).room
    except AuthError:
        return None


class Announcer:
    """Tells every worker which workers are up and where (POST /internal/cluster), after each
    change: a conference's home worker links to others as it spans them (sfu/span.py).
    Announcements go out one at a time, each with the state at its own sending, so a late one
    never undoes a newer one."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.http: httpx.AsyncClient | None = None
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    def changed(self, pool: WorkerPool) -> None:
        if self.http is None:
            return  # still starting: announced once all are up
        task = asyncio.create_task(self._announce(pool, self.http))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _announce(self, pool: WorkerPool, http: httpx.AsyncClient) -> None:
        async with self._lock:
            urls = {str(w.index): w.url for w in pool.workers if w.url is not None}
            token = internal_token(self.secret, "cluster")
            for url in urls.values():
                try:
                    await http.post(f"{url}/internal/cluster", json={"workers": urls},
                                    headers={"authorization": f"Bearer {token}"})
                except httpx.HTTPError as exc:  # it is down again: its restart re-announces
                    logger.warning("cannot announce workers to %s: %s", url, exc)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def create_front_app(config: SignalingConfig, serve_args: Sequence[str], workers: int,
                     *, env: dict[str, str] | None = None) -> Starlette:
    box: list[Front] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        placement = Placement(workers)

        announcer = Announcer(config.secret)

        def up(index: int) -> None:
            placement.worker_up(index)
            announcer.changed(pool)

        def lost(index: int) -> None:
            rooms = placement.worker_lost(index)
            if not pool.closing:
                logger.error("worker %d lost with %d room(s)", index, len(rooms))
                announcer.changed(pool)

        pool = WorkerPool(serve_args, workers, on_up=up, on_lost=lost, env=env)
        await pool.start()
        async with httpx.AsyncClient(timeout=10.0, trust_env=False) as http:
            announcer.http = http
            announcer.changed(pool)
            box.append(Front(config, placement, pool, http, FrontMetrics(placement, pool)))
            try:
                yield
            finally:
                await pool.close()
                await announcer.close()
                box.clear()

    async def healthz(request: HttpRequest) -> JSONResponse:
        front = box[0]
        states = front.metrics.worker_states()
        up = sum(s["up"] for s in states)
        status = "ok" if up == len(states) else ("degraded" if up else "down")
        return JSONResponse({"status": status, "workers": states}, 200 if up else 503)

    async def info(request: HttpRequest) -> JSONResponse:
        return JSONResponse({"protocol": m.PROTOCOL, "signaling": "/ws", "server": SERVER,
                             "workers": workers})

    async def metrics(request: HttpRequest) -> Response:
        body, content_type = await box[0].metrics.render(box[0].http)
        return Response(body, media_type=content_type)

    async def create_room(request: HttpRequest) -> Response:
        front = box[0]
        try:
            body = await read_body(request)
        except ApiError as exc:
            return exc.response()
        room = _token_room(front, request)
        # No valid token: any worker gives the same 401 a single server would.
        index = front.placement.place(room) if room is not None else front.any_up()
        return await _proxy(front, request, index, body)

    async def room_get(request: HttpRequest) -> Response:
        front = box[0]
        index = front.placement.worker_of(request.path_params["room"])
        return await _proxy(front, request, index if index is not None else front.any_up())

    async def ws_endpoint(websocket: WebSocket) -> None:
        try:
            await websocket.accept()
            await Relay(websocket, box[0]).run()
        except (OSError, WebSocketDisconnect):
            logger.debug("client gone")
        except Exception:
            logger.exception("relay failed")

    routes: list[BaseRoute] = [
        Route("/healthz", healthz),
        Route("/api/info", info),
        Route("/metrics", metrics),
        Route("/api/rooms", create_room, methods=["POST"]),
        Route("/api/rooms/{room}/events", room_get),
        Route("/api/rooms/{room}/media", room_get),
        WebSocketRoute("/ws", ws_endpoint),
    ]
    if config.web_root is not None and config.web_root.is_dir():
        routes.append(Mount("/", StaticFiles(directory=config.web_root, html=True), name="web"))
    return Starlette(routes=routes, lifespan=lifespan)

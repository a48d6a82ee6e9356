"""Worker-to-worker routes of `serve --workers N` (never proxied by the front).

- `POST /internal/cluster`: the front tells each worker which workers are up and where, so a
  conference's home can open links to edges (sfu/span.py). Body {"workers": {"0": url, ...}}.
- `WS /internal/span/{room}`: a home's control link to this worker as an edge of `room`
  (sfu/edge.py has the messages). One EdgeRoom per link; it closes with the link.

Both take `Authorization: Bearer <token>`: a 60-second JWT signed with the server secret whose
audience (`hoinghi-internal`) no participant token carries, so neither kind passes for the
other. Workers bind 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from sfu.config import SfuConfig
from sfu.edge import EdgeRoom
from sfu.router import SfuError
from signaling.api import bearer_token
from signaling.errors import CLOSE_POLICY, CLOSE_TOO_LARGE

logger = logging.getLogger(__name__)
AUDIENCE = "hoinghi-internal"
TOKEN_TTL_S = 60
MAX_MESSAGE_CHARS = 1 << 20  # an SDP of a few hundred m-lines fits easily


def internal_token(secret: str, scope: str, now: float | None = None) -> str:
    issued = int(time.time() if now is None else now)
    return jwt.encode({"aud": AUDIENCE, "scope": scope, "iat": issued,
                       "exp": issued + TOKEN_TTL_S}, secret, algorithm="HS256")


def internal_token_ok(secret: str, token: str | None, scope: str) -> bool:
    if not token:
        return False
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], audience=AUDIENCE,
                            options={"require": ["aud", "exp", "scope"]})
    except jwt.PyJWTError:
        return False
    return claims.get("scope") == scope


@dataclass
class Cluster:
    """This worker's view of its peers (sfu.span.Peers)."""

    secret: str
    index: int
    span_after: int
    workers: dict[int, str] = field(default_factory=dict)  # every worker up, self included
    edges: dict[int, EdgeRoom] = field(default_factory=dict)  # by id(): open edge links

    def urls(self) -> dict[int, str]:
        return {i: url for i, url in self.workers.items() if i != self.index}

    def token(self, room_id: str) -> str:
        return internal_token(self.secret, f"span:{room_id}")

    def set_workers(self, body: object) -> None:
        if not isinstance(body, dict) or not isinstance(body.get("workers"), dict):
            raise ValueError("expected {\"workers\": {index: url}}")
        workers: dict[int, str] = {}
        for key, url in body["workers"].items():
            if not isinstance(url, str) or not url.startswith("http://127.0.0.1:"):
                raise ValueError("worker URLs must be http://127.0.0.1:port")
            workers[int(key)] = url.rstrip("/")
        self.workers = workers


def routes(cluster: Callable[[], Cluster | None],
           sfu: Callable[[], SfuConfig]) -> list[BaseRoute]:
    async def set_cluster(request: Request) -> JSONResponse:
        c = cluster()
        if c is None:
            return JSONResponse({"error": "not_found", "message": "not a worker"}, 404)
        if not internal_token_ok(c.secret, bearer_token(request), "cluster"):
            return JSONResponse({"error": "token_invalid", "message": "bad internal token"},
                                401)
        try:
            c.set_workers(json.loads(await request.body()))
        except ValueError as exc:  # JSONDecodeError is one
            return JSONResponse({"error": "bad_request", "message": str(exc)}, 400)
        return JSONResponse({"workers": len(c.workers)})

    async def span(websocket: WebSocket) -> None:
        c = cluster()
        room_id = websocket.path_params["room"]
        token = bearer_token(websocket)  # type: ignore[arg-type]
        if c is None or not internal_token_ok(c.secret, token, f"span:{room_id}"):
            await websocket.close(CLOSE_POLICY)  # before accept: the client sees HTTP 403
            return
        await websocket.accept()
        outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        edge = EdgeRoom(room_id, sfu(), outbox.put_nowait)
        c.edges[id(edge)] = edge
        writer = asyncio.create_task(_write(websocket, outbox))
        try:
            await _serve_link(websocket, edge, outbox)
        except WebSocketDisconnect:
            pass
        except Exception:
            logger.exception("span link for room %s failed", room_id)
        finally:
            del c.edges[id(edge)]
            writer.cancel()
            await edge.close()

    return [Route("/internal/cluster", set_cluster, methods=["POST"]),
            WebSocketRoute("/internal/span/{room}", span)]


async def _serve_link(ws: WebSocket, edge: EdgeRoom,
                      outbox: asyncio.Queue[dict[str, Any]]) -> None:
    while True:
        text = await ws.receive_text()
        if len(text) > MAX_MESSAGE_CHARS:
            await ws.close(CLOSE_TOO_LARGE)
            return
        try:
            msg = json.loads(text)
            if not isinstance(msg, dict):
                raise ValueError("a message is a JSON object")
        except ValueError:
            outbox.put_nowait({"op": "result", "id": None, "error": "bad_json",
                               "message": "not a JSON object"})
            continue
        key = msg.get("id")
        try:
            pending = edge.handle(msg)
        except Exception as exc:  # bad fields (SfuError) or a bug: the link itself goes on
            _reply(outbox, key, exc)
            continue
        if pending is not None:
            pending.add_done_callback(lambda f, key=key: _reply_done(outbox, key, f))


def _reply_done(outbox: asyncio.Queue[dict[str, Any]], key: object,
                fut: asyncio.Future[Any]) -> None:
    if fut.cancelled():
        return
    exc = fut.exception()
    if exc is None:
        if key is None:
            return
        value = fut.result()
        outbox.put_nowait({"op": "result", "id": key, **(value if isinstance(value, dict)
                                                          else {})})
    else:
        _reply(outbox, key, exc)


def _reply(outbox: asyncio.Queue[dict[str, Any]], key: object, exc: BaseException) -> None:
    if key is None:
        logger.warning("span message failed: %s", exc)
        return
    code = exc.code if isinstance(exc, SfuError) else "internal"
    if not isinstance(exc, SfuError):
        logger.error("span operation failed", exc_info=exc)
    outbox.put_nowait({"op": "result", "id": key, "error": code, "message": str(exc)})


async def _write(ws: WebSocket, outbox: asyncio.Queue[dict[str, Any]]) -> None:
    while True:
        await ws.send_text(json.dumps(await outbox.get()))

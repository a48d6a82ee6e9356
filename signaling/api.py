"""HTTP API for conference setup and inspection (docs/signaling.md, "HTTP API").

Every route takes `Authorization: Bearer <token>`: the same JWTs as the websocket, checked for
the conference they name and for a grant (`moderate` to create, `moderate` or `record` for the
event log, `moderate` or `observe_all` for the media view). Errors are
`{"error": code, "message": text}` with the HTTP status of the kind of failure.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from rooms.conference import ConferenceError, parse_conference
from rooms.roster import FEATURED
from signaling.auth import Grant, verify_token
from signaling.errors import AuthError

if TYPE_CHECKING:
    from signaling.app import Hub

# 3,355 invitees with names take about 400 KiB of JSON.
MAX_BODY_BYTES = 2 * 1024 * 1024


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.code, "message": self.message}, self.status)


def _grant(request: Request, hub: Hub, room: str | None, any_of: tuple[str, ...]) -> Grant:
    """The verified token, for `room` (None: checked by the caller) with one of the grants."""
    token = bearer_token(request)
    if token is None:
        raise ApiError(401, "token_missing", "send Authorization: Bearer <token>")
    try:
        grant = verify_token(hub.config.secret, token)
    except AuthError as exc:
        raise ApiError(401, exc.code, exc.message) from None
    if not any(getattr(grant.grants, g) for g in any_of):
        raise ApiError(403, "forbidden", f"needs the {' or '.join(any_of)} grant")
    if room is not None and grant.room != room:
        raise ApiError(403, "wrong_room", "the token is for another room")
    return grant


def bearer_token(request: Request) -> str | None:
    """The token of `Authorization: Bearer <token>`, None when there is none."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


async def read_body(request: Request) -> bytes:
    """The request body, read no further than MAX_BODY_BYTES (413 past it)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise ApiError(413, "too_large", f"body over {MAX_BODY_BYTES} bytes")
    return bytes(body)


async def _json_body(request: Request) -> Any:
    body = await read_body(request)
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise ApiError(400, "bad_json", "the body is not JSON") from None


def routes(hub: Callable[[], Hub]) -> list[BaseRoute]:
    async def create_room(request: Request) -> JSONResponse:
        try:
            h = hub()
            # The token first: nobody unauthenticated gets a 2 MiB body read.
            grant = _grant(request, h, None, ("moderate",))
            try:
                spec = parse_conference(await _json_body(request))
            except ConferenceError as exc:
                raise ApiError(400, "bad_message", str(exc)) from None
            if spec.room != grant.room:
                raise ApiError(403, "wrong_room", "the token is for another room")
            if not await h.manager.create_conference(spec):
                raise ApiError(409, "room_exists", "the room already exists")
        except ApiError as exc:
            return exc.response()
        last_n = h.manager.last_n if spec.last_n is None else spec.last_n
        max_speakers = spec.max_speakers or h.manager.max_speakers
        return JSONResponse({"room": spec.room, "invited": len(spec.invited), "last_n": last_n,
                             "max_speakers": max_speakers,
                             "roster": spec.roster or FEATURED}, 201)

    async def room_events(request: Request) -> JSONResponse:
        room = request.path_params["room"]
        try:
            h = hub()
            _grant(request, h, room, ("moderate", "record"))
            since = request.query_params.get("since", "0")
            if not since.isdigit():
                raise ApiError(400, "bad_message", "'since' must be a non-negative integer")
            events = h.manager.events(room, int(since))
            if events is None:
                raise ApiError(404, "unknown_room", "no such conference on this node")
        except ApiError as exc:
            return exc.response()
        return JSONResponse({"room": room, "events": [e.to_json() for e in events]})

    async def room_media(request: Request) -> JSONResponse:
        room = request.path_params["room"]
        try:
            h = hub()
            _grant(request, h, room, ("moderate", "observe_all"))
            view = h.manager.media_view(room, request.query_params.get("participant"))
            if view is None:
                raise ApiError(404, "unknown_room", "nobody is in this room on this node")
        except ApiError as exc:
            return exc.response()
        return JSONResponse(view)

    return [
        Route("/api/rooms", create_room, methods=["POST"]),
        Route("/api/rooms/{room}/events", room_events),
        Route("/api/rooms/{room}/media", room_media),
    ]

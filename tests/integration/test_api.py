"""The HTTP API (docs/signaling.md, "HTTP API") of a real `hoinghi serve`: who may create a
conference and read its log and media view, and the documented error for everything else."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest

from tests.conftest import ServerProcess

pytestmark = pytest.mark.integration


def call(srv: ServerProcess, method: str, path: str, token: str | None = None,
         body: Any = None, raw: bytes | None = None) -> tuple[int, dict[str, Any]]:
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(srv.url + path, data=data, method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_conference_creation_and_reads_are_permission_checked(module_server: ServerProcess) -> None:
    srv = module_server
    room = f"api-{uuid.uuid4().hex[:8]}"
    chair = srv.token(room, "hq", "chair")
    refusals = [
        (call(srv, "POST", "/api/rooms", None, {"room": room}), 401, "token_missing"),
        (call(srv, "POST", "/api/rooms", "nope", {"room": room}), 401, "token_invalid"),
        (call(srv, "POST", "/api/rooms", srv.token(room, "x", "commune"), {"room": room}),
         403, "forbidden"),
        (call(srv, "POST", "/api/rooms", srv.token("other", "hq", "chair"), {"room": room}),
         403, "wrong_room"),
        (call(srv, "POST", "/api/rooms", chair, raw=b"{nope"), 400, "bad_json"),
        (call(srv, "POST", "/api/rooms", chair, {"room": room, "invited": [{"id": "a b"}]}),
         400, "bad_message"),
        (call(srv, "POST", "/api/rooms", chair, raw=b" " * (2 * 1024 * 1024 + 1024)),
         413, "too_large"),
        (call(srv, "GET", f"/api/rooms/{room}/events", chair), 404, "unknown_room"),
        (call(srv, "GET", f"/api/rooms/{room}/media", chair), 404, "unknown_room"),
    ]  # fmt: skip
    for (status, body), want_status, code in refusals:
        assert (status, body["error"]) == (want_status, code), body
        assert isinstance(body["message"], str)

    status, body = call(srv, "POST", "/api/rooms", chair, {"room": room, "invited": [{"id": "a"}]})
    assert (status, body) == (201, {"room": room, "invited": 1, "last_n": 4, "max_speakers": 1,
                                    "roster": "featured"})
    assert call(srv, "POST", "/api/rooms", chair, {"room": room})[0] == 409
    secretary = srv.token(room, "sec", "secretary")  # records: may read the log
    assert call(srv, "GET", f"/api/rooms/{room}/events", secretary) == (
        200, {"room": room, "events": []})
    commune = srv.token(room, "a", "commune")
    assert call(srv, "GET", f"/api/rooms/{room}/events", commune)[0] == 403
    assert call(srv, "GET", f"/api/rooms/{room}/events?since=x", chair)[0] == 400
    assert call(srv, "GET", f"/api/rooms/{room}/media", secretary)[0] == 403

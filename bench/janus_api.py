"""Janus HTTP API client: sessions, handles, VideoRoom publish/subscribe with aiortc peers.

Janus answers "message" requests with an "ack" and delivers the real reply (and any JSEP) later
as an event with the same transaction, through the session's long poll. One poller per session
routes events to waiting requests; a keepalive task keeps the session from timing out.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable
from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription

from bench.httpc import HttpError, request_json
from bench.peer import require_loopback


class JanusError(RuntimeError):
    pass


class JanusSession:
    def __init__(self, url: str, session_id: int) -> None:
        self.url = url
        self.id = session_id
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._tasks = [asyncio.ensure_future(self._poll()),
                       asyncio.ensure_future(self._keepalive())]
        self._closed = False

    @classmethod
    async def create(cls, url: str) -> JanusSession:
        reply = await request_json("POST", url, {"janus": "create", "transaction": _tx()})
        if reply.get("janus") != "success":
            raise JanusError(f"create session: {reply}")
        return cls(url, int(reply["data"]["id"]))

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await request_json("POST", f"{self.url}/{path}", body)

    async def attach(self, plugin: str = "janus.plugin.videoroom") -> int:
        reply = await self._post(str(self.id), {"janus": "attach", "plugin": plugin,
                                                "transaction": _tx()})
        if reply.get("janus") != "success":
            raise JanusError(f"attach: {reply}")
        return int(reply["data"]["id"])

    async def message(
        self, handle: int, body: dict[str, Any], jsep: dict[str, Any] | None = None,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        """A plugin request; returns the plugin's reply event (with "jsep" if any)."""
        tx = _tx()
        req: dict[str, Any] = {"janus": "message", "transaction": tx, "body": body}
        if jsep is not None:
            req["jsep"] = jsep
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[tx] = fut
        try:
            reply = await self._post(f"{self.id}/{handle}", req)
            kind = reply.get("janus")
            if kind == "success":  # synchronous request (create, list...)
                event = reply
            elif kind == "ack":
                event = await asyncio.wait_for(fut, timeout)
            else:
                raise JanusError(f"{body.get('request')}: {reply}")
        finally:
            self._waiting.pop(tx, None)
        data = event.get("plugindata", {}).get("data", {})
        if "error" in data:
            raise JanusError(f"{body.get('request')}: {data['error']} ({data.get('error_code')})")
        return event

    async def trickle_completed(self, handle: int) -> None:
        # Without it Janus keeps waiting for more candidates from us (the SDP has them all).
        await self._post(f"{self.id}/{handle}", {"janus": "trickle", "transaction": _tx(),
                                                 "candidate": {"completed": True}})

    async def _poll(self) -> None:
        while not self._closed:
            try:
                events = await request_json("GET", f"{self.url}/{self.id}?maxev=10", timeout=45)
            except (OSError, HttpError, TimeoutError):
                if self._closed:
                    return
                await asyncio.sleep(0.2)
                continue
            for ev in events if isinstance(events, list) else [events]:
                fut = self._waiting.get(str(ev.get("transaction")))
                if fut is not None and not fut.done() and ev.get("janus") == "event":
                    fut.set_result(ev)

    async def _keepalive(self) -> None:
        while not self._closed:
            await asyncio.sleep(20)
            with contextlib.suppress(OSError, HttpError, TimeoutError):
                await request_json("POST", f"{self.url}/{self.id}",
                                   {"janus": "keepalive", "transaction": _tx()})

    async def close(self) -> None:
        self._closed = True
        for t in self._tasks:
            t.cancel()
        with contextlib.suppress(Exception):
            await request_json("POST", f"{self.url}/{self.id}",
                               {"janus": "destroy", "transaction": _tx()}, timeout=5)


def _tx() -> str:
    return secrets.token_hex(8)


class JanusClient:
    """The benchmark's side of one Janus VideoRoom, for one process (one session)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.url = str(spec["url"])
        self.room = int(spec["room"])
        self.feed = spec.get("feed")
        self._session: JanusSession | None = None

    async def _sess(self) -> JanusSession:
        if self._session is None:
            self._session = await JanusSession.create(self.url)
        return self._session

    async def publish(self, pc: RTCPeerConnection) -> dict[str, Any]:
        s = await self._sess()
        handle = await s.attach()
        joined = await s.message(handle, {"request": "join", "ptype": "publisher",
                                          "room": self.room, "display": "bench-publisher"})
        feed = joined["plugindata"]["data"]["id"]
        await pc.setLocalDescription(await pc.createOffer())
        event = await s.message(
            handle, {"request": "publish", "audio": True, "video": True},
            jsep={"type": "offer", "sdp": pc.localDescription.sdp},
        )
        await s.trickle_completed(handle)
        answer = event.get("jsep")
        if not answer:
            raise JanusError(f"publish: no answer in {event}")
        require_loopback(answer["sdp"], "janus answer")
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
        return {"feed": feed}

    async def subscribe(
        self, pc: RTCPeerConnection, on_offer: Callable[[RTCPeerConnection, str], None]
    ) -> None:
        """Janus offers, we answer. on_offer(pc, sdp) runs between the two (to hook receivers)."""
        if self.feed is None:
            raise JanusError("subscriber spec lacks the publisher's feed id")
        s = await self._sess()
        handle = await s.attach()
        event = await s.message(handle, {"request": "join", "ptype": "subscriber",
                                         "room": self.room, "streams": [{"feed": self.feed}]})
        offer = event.get("jsep")
        if not offer:
            raise JanusError(f"subscribe: no offer in {event}")
        require_loopback(offer["sdp"], "janus offer")
        await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], offer["type"]))
        on_offer(pc, offer["sdp"])
        await pc.setLocalDescription(await pc.createAnswer())
        await s.message(handle, {"request": "start"},
                        jsep={"type": "answer", "sdp": pc.localDescription.sdp})
        await s.trickle_completed(handle)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


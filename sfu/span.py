"""A conference bigger than one worker: the home's side (the edges' side is sfu/edge.py).

With `serve --workers N` a room lives on one worker, its *home*: signaling, floor control and
the publishers' connections stay there. Once the home carries `span_after` of the room's
subscribers, each new subscriber's connection is made on another worker (an *edge*,
sfu/core/pipe.py: place_subscriber), mediasoup's pipeToRouter: every track is piped once to
each edge that serves some subscribers, and the edge does their fan-out, so a national
conference is spread over every core instead of saturating one.

SpanningRouter is a Router that sends the subscriber operations of such participants to their
edge over an EdgeLink (websocket, JSON; signaling/span_routes.py on the other end) and
answers edge feedback (PLI, NACK) from the home's Producers. An edge that goes away takes
its subscriber connections with it: those sessions are told to rejoin
(`on_subscribers_lost`), and are placed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
import weakref
import zlib
from collections.abc import Callable
from typing import Any, Protocol

from websockets.asyncio.client import ClientConnection, connect

from sfu.config import SfuConfig
from sfu.core.pipe import MAX_TRACKS, RTCP, PipeError, parse_frame, place_subscriber
from sfu.core.rtcp import Fir, Nack, Pli, RtcpError, parse_rtcp
from sfu.pipe import Datagrams, PipeSocket, TrackPipe
from sfu.producer import Producer
from sfu.router import Router, SendOffer, SfuError, TrackInfo

log = logging.getLogger(__name__)
CALL_TIMEOUT_S = 15.0
MAX_MESSAGE = 1 << 20


class Peers(Protocol):
    """What the home knows of the other workers (signaling/span_routes.py: Cluster)."""

    span_after: int

    def urls(self) -> dict[int, str]:
        """Worker index -> base URL, for the other workers up now."""
        ...

    def token(self, room_id: str) -> str:
        """A short-lived credential for /internal/span/{room_id} on a peer."""
        ...


class RemoteError(SfuError):
    """An edge refused an operation: its code is passed on as the Router's own would be."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class EdgeLink:
    """The home's end of one room's link to one edge: control websocket + pipe address."""

    def __init__(self, index: int, ws: ClientConnection, pipe_addr: tuple[str, int]) -> None:
        self.index = index
        self.ws = ws
        self.pipe_addr = pipe_addr
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._tasks: list[asyncio.Task[None]] = []
        self.closed = asyncio.Event()

    @classmethod
    async def open(cls, index: int, url: str, room_id: str, token: str,
                   pipe_port: int) -> EdgeLink:
        ws_url = url.replace("http://", "ws://", 1) + f"/internal/span/{room_id}"
        ws = await connect(ws_url, additional_headers={"authorization": f"Bearer {token}"},
                           max_size=MAX_MESSAGE, open_timeout=CALL_TIMEOUT_S)
        try:
            await ws.send(json.dumps({"op": "hello", "id": 0, "pipe_port": pipe_port}))
            reply = json.loads(await asyncio.wait_for(ws.recv(), CALL_TIMEOUT_S))
            port = int(reply["pipe_port"])
        except BaseException:
            await ws.close()
            raise
        return cls(index, ws, ("127.0.0.1", port))

    def start(self, on_offer: SendOffer) -> None:
        self._tasks = [asyncio.create_task(self._read(on_offer)),
                       asyncio.create_task(self._write())]

    def send(self, msg: dict[str, Any]) -> None:
        """Queue a message (never blocks): control messages keep their order."""
        if not self.closed.is_set():
            self._queue.put_nowait(json.dumps(msg))

    async def call(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Send and wait for its `result`; an edge error is raised as RemoteError."""
        if self.closed.is_set():
            raise RemoteError("unavailable", "the worker serving this connection is gone")
        key = next(self._ids)
        fut = self._pending[key] = asyncio.get_running_loop().create_future()
        self.send({**msg, "id": key})
        try:
            reply = await asyncio.wait_for(fut, CALL_TIMEOUT_S)
        finally:
            self._pending.pop(key, None)
        if "error" in reply:
            raise RemoteError(str(reply["error"]), str(reply.get("message", "")))
        return reply

    async def _write(self) -> None:
        with contextlib.suppress(Exception):
            while True:
                await self.ws.send(await self._queue.get())

    async def _read(self, on_offer: SendOffer) -> None:
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                if msg.get("op") == "offer":
                    await on_offer(msg["pid"], msg["sdp"], msg["mids"])
                elif msg.get("op") == "result":
                    fut = self._pending.get(msg.get("id"))
                    if fut is not None and not fut.done():
                        fut.set_result(msg)
        except Exception:
            log.exception("edge link %d failed", self.index)
        finally:
            self._shut()

    def _shut(self) -> None:
        self.closed.set()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_result({"error": "unavailable", "message": "edge worker gone"})
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()

    async def close(self) -> None:
        self._shut()
        with contextlib.suppress(Exception):
            await self.ws.close()


# The conferences homed in this process, for placement: an edge's load is what all of them put
# there. Weak: a closed room leaves by itself.
_homes: weakref.WeakSet[SpanningRouter] = weakref.WeakSet()


class SpanningRouter(Router):
    def __init__(self, room_id: str, config: SfuConfig, send_offer: SendOffer,
                 peers: Peers) -> None:
        super().__init__(room_id, config, send_offer)
        self.peers = peers
        self.links: dict[int, EdgeLink] = {}
        self.remote: dict[str, int] = {}  # subscriber -> edge worker serving its connection
        _homes.add(self)
        self.mirror: dict[str, set[str]] = {}  # remote subscriber -> tracks it is sent
        self._track_no: dict[str, int] = {}
        self._by_no: dict[int, Producer] = {}
        self._pipe: PipeSocket | None = None
        self._connecting: dict[int, asyncio.Lock] = {}
        self._watchers: set[asyncio.Task[None]] = set()
        self.links_lost = 0
        self.pipe_retransmitted = 0  # packets re-sent to edges on their NACKs

    # ------------------------------------------------------------------ placement
    async def _place(self, pid: str) -> EdgeLink | None:
        urls = self.peers.urls()
        load = {i: 0 for i in urls}
        for home in list(_homes):  # every conference homed in this process, not only this one
            for i in home.remote.values():
                if i in load:
                    load[i] += 1
        choice = place_subscriber(len(self.subscribers), self.peers.span_after, load,
                                  zlib.crc32(self.room_id.encode()))
        if choice is None:
            return None
        try:
            link = await self._link(choice, urls[choice])
        except Exception as exc:  # the edge is down or restarting: serve it here instead
            log.warning("room %s: no link to worker %d (%s); subscriber %s stays home",
                        self.room_id, choice, exc, pid)
            return None
        allowed = self._video_from.get(pid)
        if allowed is not None:
            link.send({"op": "video_from", "pid": pid, "publishers": sorted(allowed)})
        self.remote[pid] = choice
        return link

    async def _link(self, index: int, url: str) -> EdgeLink:
        async with self._connecting.setdefault(index, asyncio.Lock()):
            link = self.links.get(index)
            if link is not None and not link.closed.is_set():
                return link
            if self._pipe is None:
                self._pipe = PipeSocket(self._on_feedback)
            link = await EdgeLink.open(index, url, self.room_id,
                                       self.peers.token(self.room_id), self._pipe.port)
            self.links[index] = link
            link.start(self._send_offer)
            if self.spare_slots:  # before any subscriber's first offer there
                link.send({"op": "spares", "slots": [list(s) for s in self.spare_slots]})
            for audio_off in self._audio_blocked:
                link.send({"op": "audio", "pid": audio_off, "allowed": False})
            await asyncio.gather(*(self._pipe_track(link, p)
                                   for p in list(self.producers.values())))
            watcher = asyncio.create_task(self._watch_link(link))
            self._watchers.add(watcher)
            watcher.add_done_callback(self._watchers.discard)
            return link

    async def _watch_link(self, link: EdgeLink) -> None:
        await link.closed.wait()
        if self.links.get(link.index) is link:
            del self.links[link.index]
        for producer in self.producers.values():
            producer.pipes = [p for p in producer.pipes if p.addr != link.pipe_addr]
        lost = [pid for pid, i in self.remote.items() if i == link.index]
        for pid in lost:
            del self.remote[pid]
            self.mirror.pop(pid, None)
        if self._closed:
            return
        self.links_lost += 1
        log.warning("room %s: worker %d gone with %d subscriber connections",
                    self.room_id, link.index, len(lost))
        if lost and self.on_subscribers_lost is not None:
            self.on_subscribers_lost(lost)

    async def _pipe_track(self, link: EdgeLink, producer: Producer) -> None:
        assert self._pipe is not None
        no = self._track_no.get(producer.track.id)
        if no is None:
            no = self._track_no[producer.track.id] = len(self._track_no) % MAX_TRACKS + 1
        self._by_no[no] = producer
        src = producer.source
        try:
            await link.call({"op": "track", "no": no, "generation": producer.generation,
                             "track": producer.track.to_json(),
                             "clock_rate": producer.clock_rate,
                             "level_id": src.level_id if src is not None else 0})
        except (RemoteError, TimeoutError) as exc:  # the link's watcher handles a lost edge
            log.warning("room %s: track %s not piped to worker %d (%s)", self.room_id,
                        producer.track.id, link.index, exc)
            return
        # Only now: a datagram of a track the edge does not know yet would be dropped there.
        # Once per edge, though a publish and a new link may both have got here meanwhile.
        if all(pipe.addr != link.pipe_addr for pipe in producer.pipes):
            producer.pipes.append(TrackPipe(self._pipe, link.pipe_addr, no,
                                            producer.generation))

    def _on_feedback(self, batch: Datagrams) -> None:
        """PLI / NACK from edges' Producers: answered as the home would answer its own."""
        addrs = {link.pipe_addr: link for link in self.links.values()}
        now = time.time()
        for data, addr in batch:
            link = addrs.get(addr)
            try:
                kind, _gen, no, payload = parse_frame(data)
                items = parse_rtcp(bytes(payload)) if kind == RTCP else []
            except (PipeError, RtcpError):
                continue
            producer = self._by_no.get(no)
            if link is None or producer is None:
                continue
            for item in items:
                if isinstance(item, (Pli, Fir)):
                    producer.request_keyframe(now)
                elif isinstance(item, Nack):
                    pipe = next((p for p in producer.pipes if p.addr == addr), None)
                    for seq in item.lost:
                        packet = producer.ring.get(seq)
                        if pipe is not None and packet is not None:
                            pipe.rtp(packet)
                            self.pipe_retransmitted += 1

    def _edge(self, pid: str) -> EdgeLink | None:
        index = self.remote.get(pid)
        return None if index is None else self.links.get(index)

    def _remote_call_target(self, pid: str) -> EdgeLink:
        link = self._edge(pid)
        if link is None:
            raise RemoteError("unavailable", "the worker serving this connection is gone")
        return link

    # ------------------------------------------------------------------ Router, spanned
    async def publish(self, participant_id: str, sdp: str,
                      sources: dict[str, str]) -> tuple[str, list[TrackInfo]]:
        answer, new = await super().publish(participant_id, sdp, sources)
        await asyncio.gather(*(self._pipe_track(link, self.producers[info.id])
                               for info in new for link in list(self.links.values())))
        return answer, new

    async def update_subscriptions(self, participant_id: str, add: list[str],
                                   remove: list[str]) -> None:
        pid = participant_id
        if pid not in self.remote and (pid in self.subscribers or not add):
            return await super().update_subscriptions(pid, add, remove)
        unknown = [t for t in add if t not in self.producers]
        if unknown:
            return await super().update_subscriptions(pid, add, remove)  # raises
        link = self._edge(pid) if pid in self.remote else await self._place(pid)
        if link is None:
            if pid in self.remote:
                raise RemoteError("unavailable", "the worker serving this connection is gone")
            return await super().update_subscriptions(pid, add, remove)
        await link.call({"op": "subs", "pid": pid, "add": add, "remove": remove})
        have = self.mirror.setdefault(pid, set())
        have.difference_update(remove)
        have.update(t for t in add if not t.startswith(pid + "/"))

    async def subscriber_answer(self, participant_id: str, sdp: str) -> None:
        if participant_id not in self.remote:
            return await super().subscriber_answer(participant_id, sdp)
        link = self._remote_call_target(participant_id)
        await link.call({"op": "answer", "pid": participant_id, "sdp": sdp})

    async def add_ice_candidate(self, participant_id: str, pc: str,
                                candidate: dict | None) -> None:
        if pc != "subscriber" or participant_id not in self.remote:
            return await super().add_ice_candidate(participant_id, pc, candidate)
        link = self._remote_call_target(participant_id)
        await link.call({"op": "candidate", "pid": participant_id, "candidate": candidate})

    def set_audio_allowed(self, participant_id: str, allowed: bool) -> None:
        super().set_audio_allowed(participant_id, allowed)
        for link in self.links.values():
            link.send({"op": "audio", "pid": participant_id, "allowed": allowed})

    def set_video_from(self, subscriber_id: str, publishers: frozenset[str] | None) -> None:
        super().set_video_from(subscriber_id, publishers)
        link = self._edge(subscriber_id)
        if link is not None:
            link.send({"op": "video_from", "pid": subscriber_id,
                       "publishers": None if publishers is None else sorted(publishers)})

    def subscribed(self, subscriber_id: str) -> set[str]:
        if subscriber_id in self.remote:
            return set(self.mirror.get(subscriber_id, ()))
        return super().subscribed(subscriber_id)

    def receiving_video(self, subscriber_id: str) -> list[str]:
        """For a remote subscriber: what the home told its edge to send (the plan)."""
        if subscriber_id not in self.remote:
            return super().receiving_video(subscriber_id)
        allowed = self._video_from.get(subscriber_id)
        return [t for t in self.mirror.get(subscriber_id, ())
                if (p := self.producers.get(t)) is not None and p.video
                and (allowed is None or p.track.participant_id in allowed)]

    async def reset_subscriber(self, participant_id: str) -> None:
        link = self._edge(participant_id)
        self.remote.pop(participant_id, None)
        self.mirror.pop(participant_id, None)
        if link is not None:
            with contextlib.suppress(RemoteError):
                await link.call({"op": "reset", "pid": participant_id})
        await super().reset_subscriber(participant_id)

    async def remove_participant(self, participant_id: str) -> list[str]:
        gone = await super().remove_participant(participant_id)
        self.remote.pop(participant_id, None)
        self.mirror.pop(participant_id, None)
        for have in self.mirror.values():
            have.difference_update(gone)
        for track_id in gone:
            no = self._track_no.get(track_id)
            if no is not None:
                self._by_no.pop(no, None)
        for link in self.links.values():
            link.send({"op": "remove", "pid": participant_id})
        return gone

    def stats(self) -> dict[str, object]:
        return {**super().stats(), "span_edges": len(self.links),
                "span_subscribers": len(self.remote), "span_links_lost": self.links_lost,
                "pipe_retransmitted": self.pipe_retransmitted,
                "pipe_send_errors": self._pipe.send_errors if self._pipe else 0}

    async def close(self) -> None:
        _homes.discard(self)
        await super().close()
        for link in list(self.links.values()):
            await link.close()
        self.links.clear()
        if self._pipe is not None:
            self._pipe.close()


def spanning_factory(peers: Peers) -> Callable[[str, SfuConfig, SendOffer], Router]:
    """The RoomManager's router factory on a worker of `serve --workers N`."""
    return lambda room_id, config, send_offer: SpanningRouter(room_id, config, send_offer,
                                                              peers)

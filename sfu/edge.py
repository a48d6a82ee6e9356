"""EdgeRoom: a conference's share of subscribers on an *edge* worker (sfu/span.py is the home).

The home sends control messages over a websocket (signaling/span_routes.py relays them here)
and each track's packets over the pipe; this side runs an ordinary Router whose Producers are
fed by the pipe instead of publisher connections, so fan-out, NACK, PLI, Last-N pauses and
slot reuse behave exactly as on the home. Offers for its subscribers go back to the home,
which sends them on to the clients. The home decides everything (who sees what, audio gates);
an edge only executes.

Messages (JSON objects, `op` names the action; `id`, when present, asks for a `result`):
  hello {pipe_port}                   -> {pipe_port} (the edge's pipe socket)
  track {no, generation, track, clock_rate, level_id}
  remove {pid}                        a participant left: its tracks and its subscriber go
  spares {slots: [[kind, codec]...]}  slots a subscriber's first offer opens empty (Router)
  audio {pid, allowed}                floor control's audio gate
  video_from {pid, publishers|null}   Last-N
  subs {pid, add, remove}             (id) change what a subscriber is sent; an offer follows
  answer {pid, sdp}                   (id)
  candidate {pid, candidate}          (id)
  reset {pid}                         (id) close its subscriber connection only
and to the home: offer {pid, sdp, mids}, result {id[, error, message]}.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sfu.config import SfuConfig
from sfu.core.pipe import RTP, SR, PipeError, parse_frame, parse_sr
from sfu.core.rtp import RtpHeader, parse_into
from sfu.pipe import Datagrams, PipePath, PipeSocket
from sfu.producer import Producer, Source
from sfu.router import Router, SfuError, TrackInfo

log = logging.getLogger(__name__)
Send = Callable[[dict[str, Any]], None]


class EdgeError(SfuError):
    code = "bad_request"


class EdgeRoom:
    def __init__(self, room_id: str, config: SfuConfig, send: Send) -> None:
        self.room_id = room_id
        self._send = send
        self.router = Router(room_id, config, self._send_offer)
        self.pipe = PipeSocket(self._on_batch)
        self.home: tuple[str, int] | None = None
        self.tracks: dict[int, Producer] = {}  # pipe track number -> producer
        self._generation: dict[int, int] = {}
        self._rng = random.Random()
        self._chains: dict[str, asyncio.Future[Any]] = {}
        self._h = RtpHeader()
        self.stray = 0  # datagrams not from the home, or for no known track, or malformed

    async def _send_offer(self, pid: str, sdp: str | None, mids: dict[str, str]) -> None:
        self._send({"op": "offer", "pid": pid, "sdp": sdp, "mids": mids})

    # ------------------------------------------------------------------ control
    def handle(self, msg: dict[str, Any]) -> Awaitable[dict[str, Any] | None] | None:
        """Apply one message. Room-wide ones apply at once, in order; a participant's
        connection work is returned as an awaitable, chained after that participant's
        previous one (ordered per participant, concurrent across participants)."""
        op = msg.get("op")
        if op == "hello":
            self.home = ("127.0.0.1", _int(msg, "pipe_port"))
            return _done({"pipe_port": self.pipe.port})
        if op == "track":
            self._add_track(msg)
            return _done({})  # the home pipes the track's packets once this is answered
        if op == "spares":
            self.router.spare_slots = _spares(msg.get("slots"))
            return None
        if op == "audio":
            self.router.set_audio_allowed(_str(msg, "pid"), bool(msg.get("allowed")))
            return None
        if op == "video_from":
            pubs = msg.get("publishers")
            self.router.set_video_from(_str(msg, "pid"), None if pubs is None
                                       else frozenset(_strs(pubs)))
            return None
        pid = _str(msg, "pid")
        work = self._work(op, pid, msg)
        previous = self._chains.get(pid)
        task = asyncio.ensure_future(_after(previous, work))
        self._chains[pid] = task
        task.add_done_callback(lambda t: self._chains.get(pid) is t and self._chains.pop(pid))
        return task

    def _work(self, op: object, pid: str, msg: dict[str, Any]) -> Callable[[], Awaitable[Any]]:
        r = self.router
        if op == "remove":
            return lambda: self._remove(pid)
        if op == "subs":
            add, remove = _strs(msg.get("add", [])), _strs(msg.get("remove", []))
            return lambda: r.update_subscriptions(pid, add, remove)
        if op == "answer":
            sdp = _str(msg, "sdp")
            return lambda: r.subscriber_answer(pid, sdp)
        if op == "candidate":
            cand = msg.get("candidate")
            if cand is not None and not isinstance(cand, dict):
                raise EdgeError("candidate must be an object or null")
            return lambda: r.add_ice_candidate(pid, "subscriber", cand)
        if op == "reset":
            return lambda: r.reset_subscriber(pid)
        raise EdgeError(f"unknown op {op!r}")

    async def _remove(self, pid: str) -> None:
        await self.router.remove_participant(pid)
        for no, p in list(self.tracks.items()):
            if p.track.participant_id == pid:
                del self.tracks[no]
                self._generation.pop(no, None)

    def _add_track(self, msg: dict[str, Any]) -> None:
        no = _int(msg, "no")
        raw = msg.get("track")
        if not isinstance(raw, dict):
            raise EdgeError("track must be an object")
        try:
            info = TrackInfo(**{k: raw[k] for k in ("id", "participant_id", "kind", "source",
                                                    "codec")})
        except (KeyError, TypeError) as exc:
            raise EdgeError("bad track") from exc
        if info.id != f"{info.participant_id}/{info.source}":  # Router.producers_of finds it so
            raise EdgeError("bad track id")
        if self.home is None:
            raise EdgeError("track before hello")
        producer = self.router.producers.get(info.id)
        if producer is None:
            producer = Producer(info, _int(msg, "clock_rate"), self.router.config, self._rng)
            self.router.add_producer(producer)
        self.tracks[no] = producer
        self._generation[no] = _int(msg, "generation")
        self._bind(producer, no, _int(msg, "level_id"))

    def _bind(self, producer: Producer, no: int, level_id: int) -> None:
        assert self.home is not None
        src = Source(0, 0, level_id)  # learns the SSRC from the first packet
        src.path = PipePath(self.pipe, self.home, no)  # type: ignore[assignment]
        producer.bind_source(src)

    # ------------------------------------------------------------------ media (hot)
    def _on_batch(self, batch: Datagrams) -> None:
        producers = self.router.producers.values()
        many = len(batch) > 1
        if many:
            for p in producers:
                p.batching = True
        now = time.time()
        try:
            for data, addr in batch:
                if addr != self.home:
                    self.stray += 1
                    continue
                self._on_frame(data, now)
        finally:
            if many:
                for p in producers:
                    p.batching = False
                    p.flush()
        self.router.after_media(now)

    def _on_frame(self, data: bytes, now: float) -> None:
        try:
            kind, generation, no, payload = parse_frame(data)
        except PipeError:
            self.stray += 1
            return
        producer = self.tracks.get(no)
        if producer is None:
            self.stray += 1
            return
        if generation != self._generation[no]:
            # A new publisher connection at the home: re-sync like the home did.
            self._generation[no] = generation
            src = producer.source
            self._bind(producer, no, src.level_id if src is not None else 0)
        if kind == SR:
            producer.set_sender_report(*parse_sr(payload), now)
            return
        if kind != RTP:
            self.stray += 1
            return
        packet = bytes(payload)
        h = self._h
        if not parse_into(h, packet):
            self.stray += 1
            return
        src = producer.source
        if src is not None and not src.ssrc:
            src.ssrc = h.ssrc
        producer.on_rtp(packet, h, now)

    def stats(self) -> dict[str, object]:
        return {**self.router.stats(), "pipe_stray": self.stray,
                "pipe_send_errors": self.pipe.send_errors}

    async def close(self) -> None:
        self.pipe.close()
        for task in list(self._chains.values()):
            task.cancel()
        await self.router.close()


async def _after(previous: asyncio.Future[Any] | None,
                 work: Callable[[], Awaitable[Any]]) -> Any:
    if previous is not None:
        await asyncio.gather(previous, return_exceptions=True)
    return await work()


def _done(value: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
    fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    fut.set_result(value)
    return fut


def _int(msg: dict[str, Any], key: str) -> int:
    value = msg.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 0xFFFFFFFF:
        raise EdgeError(f"{key} must be a non-negative integer")
    return value


def _str(msg: dict[str, Any], key: str) -> str:
    value = msg.get(key)
    if not isinstance(value, str) or not value:
        raise EdgeError(f"{key} must be a string")
    return value


def _strs(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise EdgeError("expected a list of strings")
    return list(value)


def _spares(value: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list) or not all(
            len(_strs(v)) == 2 and v[0] in ("audio", "video") for v in value):
        raise EdgeError("spares: expected [[kind, codec], ...]")
    return tuple((v[0], v[1]) for v in value)

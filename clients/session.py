"""A Python client for the hoinghi signaling protocol v1 (docs/signaling.md).

`BridgeSession` joins a room over the websocket, publishes on its own `publisher` peer connection
and answers the server's `subscriber` offers. `TrackReceiver` (defined with the media checks it
runs, re-exported here) consumes one received track and checks what it decodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import urllib.parse
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.rtcconfiguration import RTCBundlePolicy
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from sfu.adapters.aiortc_tap import set_ice_hosts

from .media import TrackReceiver
from .wire import (
    CLOSE_CODES,
    FATAL_CODES,
    PROTOCOL,
    SignalingError,
    filter_candidates,
    get_json,
    is_loopback,
)

__all__ = ["BridgeSession", "SignalingError", "TrackReceiver", "filter_candidates"]

log = logging.getLogger("hoinghi.client")
Message = dict[str, Any]

class BridgeSession:
    """One participant session: the signaling websocket, a publisher and a subscriber pc.

    `async with BridgeSession(url, token, ice_hosts=["127.0.0.1"]) as s:` joins on entry and
    leaves on exit. Server errors come back as SignalingError (`.code`), never as a crash.
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        room: str | None = None,
        ice_hosts: Sequence[str] = (),
        ice_servers: Sequence[RTCIceServer] | None = None,
        auto_subscribe: bool = True,
        timeout: float = 10.0,
    ) -> None:
        self.url, self.token, self.room = url.rstrip("/"), token, room
        self.auto_subscribe, self.timeout = auto_subscribe, timeout
        if ice_hosts:
            set_ice_hosts(list(ice_hosts))
        self._loopback = bool(ice_hosts) and all(is_loopback(h) for h in ice_hosts)
        # None: use the servers `joined` hands out.
        self._ice_servers = None if ice_servers is None else list(ice_servers)

        self.joined: Message | None = None
        self.participant_id: str | None = None
        # The others this session is told of: everyone, or in a conference's featured roster
        # (`roster` "featured") the chairs, floor, spotlight and the videos it may be shown.
        self.participants: dict[str, Message] = {}
        self.roster = "full"
        self._count = 0  # a featured roster's participant count, from `presence`
        self.tracks: dict[str, Message] = {}  # every track it is told of, by track id
        self.published: list[Message] = []  # ours, from the publish answer
        self.mids: dict[str, str] = {}  # subscriber mid -> track id (latest offer)
        self.received: dict[str, MediaStreamTrack] = {}  # track id -> remote track, active only
        self.messages: deque[Message] = deque(maxlen=2000)  # recent server messages
        self.error: SignalingError | None = None  # what ended the session, if anything
        self.offer_errors: list[Exception] = []
        self.publisher: RTCPeerConnection | None = None
        self.subscriber: RTCPeerConnection | None = None

        self._ws: ClientConnection | None = None
        self._ids = itertools.count(1)
        self._pending: dict[Any, asyncio.Future[Message]] = {}
        self._waiters: list[tuple[Callable[[Message], bool], asyncio.Future[Message]]] = []
        self._listeners: list[Callable[[Message], None]] = []
        self._track_listeners: list[Callable[[str, MediaStreamTrack], None]] = []
        self._changed = asyncio.Condition()
        self._offers: asyncio.Queue[Message] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._bg: set[asyncio.Task[None]] = set()
        self._closed = asyncio.Event()
        self._closing = False

    @property
    def participant_count(self) -> int:
        """Everyone in the room, this session included (a featured roster lists only some)."""
        return self._count if self.roster == "featured" else len(self.participants) + 1

    async def __aenter__(self) -> BridgeSession:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> Message:
        """GET /api/info, open the websocket, join. Returns the `joined` message."""
        info = await asyncio.to_thread(get_json, f"{self.url}/api/info", self.timeout)
        if info.get("protocol") != PROTOCOL:
            raise SignalingError("unsupported_protocol", f"server speaks {info.get('protocol')}")
        if not isinstance(info.get("signaling"), str):
            raise SignalingError("bad_info", "/api/info names no signaling path")
        parts = urllib.parse.urlsplit(self.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        ws_url = urllib.parse.urlunsplit((scheme, parts.netloc, str(info["signaling"]), "", ""))
        # No websocket-level pings: the protocol's ping/pong (`_ping_loop`) is the keepalive,
        # on both sides; a second one would cost the server a frame per bridge every 20 s.
        self._ws = await connect(ws_url, open_timeout=self.timeout, proxy=None, max_size=2**22,
                                 ping_interval=None)
        self._tasks += [
            asyncio.create_task(self._read_loop(), name="hoinghi-read"),
            asyncio.create_task(self._offer_loop(), name="hoinghi-offers"),
        ]
        join: Message = {"type": "join", "protocol": PROTOCOL, "token": self.token,
                         "auto_subscribe": self.auto_subscribe}  # fmt: skip
        if self.room is not None:
            join["room"] = self.room
        try:
            joined = self.joined = await self.request(join)
        except BaseException:
            await self.close(leave=False)
            raise
        self.participant_id = joined["participant"]["id"]
        self.participants = {p["id"]: p for p in joined.get("participants", [])}
        self.roster = str(joined.get("roster", "full"))
        self._count = int(joined.get("participant_count", len(self.participants) + 1))
        self.tracks = {t["id"]: t for t in joined.get("tracks", [])}
        if self._ice_servers is None:
            self._ice_servers = [
                RTCIceServer(s["urls"], s.get("username"), s.get("credential"))
                for s in joined.get("ice_servers", [])
            ]
        keepalive = float(joined.get("keepalive_s", 15))
        self._tasks.append(asyncio.create_task(self._ping_loop(keepalive), name="hoinghi-ping"))
        return joined

    async def close(self, leave: bool = True) -> None:
        """Leave (if still connected); close both peer connections, the socket, and the tracks
        publish() sent."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        if leave and self.joined is not None and not self.closed:
            with contextlib.suppress(Exception):
                await self.send({"type": "leave"})
                # The server replies `left` and closes the socket; give it a moment.
                await asyncio.wait_for(self._closed.wait(), 2.0)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        for pc in (self.publisher, self.subscriber):
            if pc is not None:
                with contextlib.suppress(Exception):
                    await pc.close()
        # aiortc leaves a closed sender's track running (a MediaPlayer keeps decoding): stop ours.
        for t in self.publisher.getTransceivers() if self.publisher else []:
            if t.sender.track is not None:
                t.sender.track.stop()
        self._finish(None)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self) -> SignalingError | None:
        """Wait until the session ends; returns what ended it (None for our own close)."""
        await self._closed.wait()
        return self.error

    async def send(self, msg: Message) -> None:
        if self._ws is None or self.closed:
            raise self.error or SignalingError("closed", "session is closed")
        try:
            await self._ws.send(json.dumps(msg))
        except ConnectionClosed as exc:
            raise self.error or SignalingError("closed", str(exc)) from exc

    async def request(self, msg: Message, timeout: float | None = None) -> Message:
        """Send msg with a fresh id; return the reply that carries it as `re`.

        Raises SignalingError for an `error` reply or when the session ends first.
        """
        msg = dict(msg, id=next(self._ids))
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[msg["id"]] = fut
        try:
            await self.send(msg)
            return await asyncio.wait_for(fut, timeout or self.timeout)
        finally:
            self._pending.pop(msg["id"], None)

    async def subscribe(self, track_ids: Sequence[str]) -> None:
        await self.request({"type": "subscribe", "tracks": list(track_ids)})

    async def unsubscribe(self, track_ids: Sequence[str]) -> None:
        await self.request({"type": "unsubscribe", "tracks": list(track_ids)})

    async def mute(self, track_id: str, muted: bool) -> None:
        await self.request({"type": "mute", "track": track_id, "muted": muted})

    async def publish(
        self,
        audio_track: MediaStreamTrack | None = None,
        video_track: MediaStreamTrack | None = None,
        video_codec: str = "VP8",
        *,
        audio_source: str = "microphone",
        video_source: str = "camera",
    ) -> list[Message]:
        """Offer our tracks on the `publisher` pc (sendonly); returns the server's track list."""
        if self.publisher is not None:
            raise RuntimeError("already published")
        caps = RTCRtpSender.getCapabilities("video").codecs
        chosen = [c for c in caps if c.mimeType.lower() == f"video/{video_codec}".lower()]
        if not chosen:
            raise ValueError(f"unsupported video codec {video_codec!r}")
        pc = self.publisher = self._new_pc()
        sources = []
        if audio_track is not None:
            sources.append((pc.addTransceiver(audio_track, direction="sendonly"), audio_source))
        if video_track is not None:
            video = pc.addTransceiver(video_track, direction="sendonly")
            # Only the chosen codec (and RTX) in the offer, so the server cannot pick another.
            video.setCodecPreferences(chosen + [c for c in caps if c.mimeType == "video/rtx"])
            sources.append((video, video_source))
        try:
            await pc.setLocalDescription(await pc.createOffer())  # returns once gathered
            reply = await self.request({
                "type": "publish",
                "sdp": pc.localDescription.sdp,
                "tracks": [{"mid": t.mid, "source": source} for t, source in sources],
            })  # fmt: skip
            answer = RTCSessionDescription(sdp=self._filter(reply["sdp"]), type="answer")
            await pc.setRemoteDescription(answer)
        except BaseException:
            self.publisher = None  # refused (e.g. `forbidden`): a later publish may try again
            await pc.close()
            raise
        self.published = list(reply.get("tracks", []))
        return self.published

    def on_message(self, callback: Callable[[Message], None]) -> None:
        """Call `callback(msg)` for every server message (events, errors, replies)."""
        self._listeners.append(callback)

    def on_track(self, callback: Callable[[str, MediaStreamTrack], None]) -> None:
        """Call `callback(track_id, track)` when a subscriber slot starts carrying a track."""
        self._track_listeners.append(callback)

    def receiver_for(self, track_id: str) -> RTCRtpReceiver | None:
        """The subscriber pc's RTP receiver now carrying track_id (for getStats)."""
        for t in self.subscriber.getTransceivers() if self.subscriber else []:
            if t.mid is not None and self.mids.get(t.mid) == track_id:
                return t.receiver
        return None

    async def wait_for(
        self,
        predicate: Callable[[Message], bool],
        timeout: float | None = None,
        *,
        past: bool = True,
    ) -> Message:
        """The first server message matching predicate (among those already received if past)."""
        for msg in self.messages if past else ():
            if predicate(msg):
                return msg
        if self.closed:
            raise self.error or SignalingError("closed", "session is closed")
        waiter = (predicate, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        try:
            return await asyncio.wait_for(waiter[1], timeout or self.timeout)
        finally:
            self._waiters.remove(waiter)

    async def wait_track(self, track_id: str, timeout: float | None = None) -> MediaStreamTrack:
        """The remote track for track_id, once a subscriber offer has brought it."""
        async with self._changed:
            await asyncio.wait_for(
                self._changed.wait_for(lambda: track_id in self.received or self.closed),
                timeout or self.timeout,
            )
        if track_id not in self.received:
            raise self.error or SignalingError("closed", "session closed while waiting")
        return self.received[track_id]

    def _new_pc(self) -> RTCPeerConnection:
        # iceServers ALWAYS explicit: left unset, aiortc adds a public Google STUN server.
        config = RTCConfiguration(
            iceServers=list(self._ice_servers or []), bundlePolicy=RTCBundlePolicy.MAX_BUNDLE
        )
        return RTCPeerConnection(config)

    def _filter(self, sdp: str) -> str:
        return filter_candidates(sdp, is_loopback) if self._loopback else sdp

    async def _read_loop(self) -> None:
        assert self._ws is not None
        try:
            async for raw in self._ws:
                try:
                    msg = json.loads(raw)
                except ValueError:
                    log.warning("server sent a frame that is not JSON; ignored")
                    continue
                if isinstance(msg, dict):
                    await self._dispatch(msg)
        except ConnectionClosed:
            pass
        except Exception as exc:  # a bug here must end the session visibly, not hang it
            log.exception("signaling reader failed")
            self.error = self.error or SignalingError("client_error", repr(exc))
        finally:
            code = self._ws.close_code
            if self.error is None and not self._closing and code not in (None, 1000):
                reason = f"socket closed: {code} {self._ws.close_reason}"
                self.error = SignalingError(CLOSE_CODES.get(code, "closed"), reason)
            self._finish(self.error or SignalingError("closed", "connection closed"))

    def _finish(self, exc: SignalingError | None) -> None:
        for fut in [*self._pending.values(), *(f for _, f in self._waiters)]:
            if not fut.done():
                fut.set_exception(exc or SignalingError("closed", "session closed"))
        if not self.closed:
            self._closed.set()
            task = asyncio.get_running_loop().create_task(self._notify())
            self._bg.add(task)  # a reference, so the loop cannot drop it unfinished
            task.add_done_callback(self._bg.discard)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _dispatch(self, msg: Message) -> None:
        kind = msg.get("type")
        self.messages.append(msg)
        re = msg.get("re")
        fut = self._pending.get(re) if isinstance(re, (str, int)) else None
        if kind == "error":
            err = SignalingError(str(msg.get("code")), str(msg.get("message", "")), msg.get("re"))
            if err.code in FATAL_CODES:
                self.error = err  # the server closes the socket next
            if fut is not None and not fut.done():
                fut.set_exception(err)
            else:
                log.warning("server error: %s", err)
        elif fut is not None and not fut.done():
            fut.set_result(msg)
        if kind in ("offer", "remap"):  # in order: a remap may follow an offer we answer
            self._offers.put_nowait(msg)
        elif kind == "participant_joined":
            self.participants[msg["participant"]["id"]] = msg["participant"]
        elif kind == "participant_left" and msg.get("reason") != "replaced":
            # (`replaced`: the same bridge reconnected; its participant_joined follows)
            self.participants.pop(str(msg.get("participant_id")), None)
        elif kind == "presence":
            self._count = int(msg.get("participant_count", self._count))
        elif kind == "track_published":
            self.tracks[msg["track"]["id"]] = msg["track"]
        elif kind == "track_unpublished":
            self.tracks.pop(msg.get("track_id"), None)
        elif kind == "track_muted" and msg.get("track_id") in self.tracks:
            self.tracks[msg["track_id"]]["muted"] = msg.get("muted")
        for predicate, waiting in self._waiters:
            if not waiting.done() and predicate(msg):
                waiting.set_result(msg)
        for listener in self._listeners:
            try:
                listener(msg)
            except Exception:
                log.exception("message listener failed")

    async def _offer_loop(self) -> None:
        # One at a time, in order: the server sends the next offer only after our answer.
        while True:
            msg = await self._offers.get()
            try:
                if msg["type"] == "remap":
                    await self._remap(msg)
                else:
                    await self._answer(msg)
            except (ConnectionClosed, SignalingError):
                return
            except Exception as exc:  # surface it, keep serving later offers
                log.exception("could not answer the subscriber offer")
                self.offer_errors.append(exc)

    async def _answer(self, msg: Message) -> None:
        pc = self.subscriber = self.subscriber or self._new_pc()
        offer = RTCSessionDescription(sdp=self._filter(msg["sdp"]), type="offer")
        await pc.setRemoteDescription(offer)
        await pc.setLocalDescription(await pc.createAnswer())
        before = self._map_sections(pc, msg)
        await self.send({"type": "answer", "pc": "subscriber", "sdp": pc.localDescription.sdp})
        await self._tracks_changed(before)

    async def _remap(self, msg: Message) -> None:
        """The sections now carry other tracks (a floor turn): no SDP, nothing to answer."""
        if self.subscriber is not None:
            await self._tracks_changed(self._map_sections(self.subscriber, msg))

    def _map_sections(self, pc: RTCPeerConnection, msg: Message) -> dict[str, MediaStreamTrack]:
        """`received` from the message's mids; returns the previous one."""
        self.mids = {str(k): str(v) for k, v in (msg.get("mids") or {}).items()}
        before, self.received = self.received, {}
        for t in pc.getTransceivers():
            track = t.receiver.track
            # A section whose track went away carries nothing: it is not in the mids (and
            # once an offer says so, it is inactive).
            active = t.currentDirection in ("recvonly", "sendrecv")
            if t.mid in self.mids and track is not None and active:
                self.received[self.mids[t.mid]] = track
        return before

    async def _tracks_changed(self, before: dict[str, MediaStreamTrack]) -> None:
        for tid, track in self.received.items():
            if before.get(tid) is not track:
                for listener in self._track_listeners:
                    try:
                        listener(tid, track)
                    except Exception:
                        log.exception("track listener failed")
        await self._notify()

    async def _ping_loop(self, keepalive: float) -> None:
        while True:
            await asyncio.sleep(keepalive)  # pacing, not synchronization
            try:
                await self.request({"type": "ping"}, timeout=2 * keepalive)
            except TimeoutError:
                # A silent server: drop the socket so the session ends and a bridge reconnects.
                log.warning("no pong within %.0f s; closing", 2 * keepalive)
                self.error = SignalingError("keepalive", "server stopped answering pings")
                if self._ws is not None:
                    await self._ws.close()
                return
            except SignalingError:
                return

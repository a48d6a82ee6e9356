"""One simulated bridge: joins with its own token, publishes if told to, receives, measures.

The protocol is spoken by `clients.session.BridgeSession` (the project's client for
docs/signaling.md); this module only adds the load-test instruments:

- light bridges count the subscriber connection's decrypted RTP at the DTLS transport's entry
  point (`bench.peer.hook_rtp`, as bench/subscribers.py does) and never decode;
- decoding bridges also pass every packet on to aiortc and check each picture's painted frame
  number (`clients.media.FrameChecker`), for the time to the first *real* picture;
- publishers send `clients.media`'s synthetic tracks;
- every bridge probes signaling round-trip time with `ping` (a receive-only bridge has no media
  RTT: the server's sender reports carry no LSR/DLSR for it to echo — see bench/LOADTEST.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections import deque
from typing import Any

import av
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from bench.load_plan import BridgeSpec, Options
from bench.load_rtp import ReceiveStats
from bench.peer import hook_rtp
from clients.media import FrameChecker, PatternVideoTrack, ToneAudioTrack
from clients.session import BridgeSession, SignalingError
from signaling.auth import issue_token

Message = dict[str, Any]


class _MeteredSession(BridgeSession):
    """BridgeSession whose subscriber connection feeds a ReceiveStats.

    The counter must be installed after the server's offer is applied (the transports exist) and
    before our answer goes out (no media can have arrived): wrapping the new connection's
    setRemoteDescription is the one place that sits between the two.
    """

    def __init__(self, *args: Any, stats: ReceiveStats, decode: bool, **kw: Any) -> None:
        super().__init__(*args, **kw)
        # The session keeps recent messages for wait_for(); thousands of participant_joined
        # events per bridge, times hundreds of bridges per process, would be hundreds of MB.
        self.messages = deque(maxlen=32)
        self._stats, self._decode = stats, decode

    def _new_pc(self) -> RTCPeerConnection:
        pc = super()._new_pc()
        original = pc.setRemoteDescription

        async def set_remote(desc: RTCSessionDescription) -> None:
            await original(desc)
            if desc.type == "offer":  # only the subscriber connection receives offers
                self._stats.learn(desc.sdp)
                hook_rtp(pc, self._stats.handler(self._decode))

        pc.setRemoteDescription = set_remote  # type: ignore[method-assign]
        return pc


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


class LoadBridge:
    STAGES = ("waiting", "signaling", "publishing", "ice", "media", "up", "failed", "closed")

    def __init__(self, spec: BridgeSpec, opts: Options, ice_hosts: list[str]) -> None:
        self.spec, self.opts, self.ice_hosts = spec, opts, ice_hosts
        self.stats = ReceiveStats()
        self.session: _MeteredSession | None = None
        self.stage = "waiting"
        self.failure: str | None = None
        self.dropped: str | None = None  # the session ended during the hold (code)
        self.t_start: float | None = None  # monotonic, when it began to join
        self.started_at: float | None = None  # wall clock, the same instant
        self.joined_s: float | None = None  # seconds from t_start
        self.published_s: float | None = None
        self.connected_s: float | None = None
        self.first_picture: float | None = None  # monotonic, first valid decoded picture
        self.pictures = FrameChecker()
        self.rtt_ms: list[float] = []
        self.floor_seen: list[list[Any]] = []  # [target, wall time, seq] per floor_given
        self.floor_taken_seen = 0
        self.quality_sent = 0
        self._tasks: list[asyncio.Task[None]] = []

    # --- state for the progress line -----------------------------------------------------------

    @property
    def joined(self) -> bool:
        return self.joined_s is not None

    @property
    def connected(self) -> bool:
        return self.connected_s is not None

    @property
    def receiving(self) -> bool:
        return self.stats.first_packet is not None

    @property
    def failed(self) -> bool:
        return self.failure is not None or self.dropped is not None

    # --- lifecycle -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Join, publish, wait for media; failures end up in .failure, never raised."""
        self.t_start, self.started_at = time.monotonic(), time.time()
        try:
            await asyncio.wait_for(self._join(), self.opts.join_timeout)
            self.stage = "up"
            if self.opts.quality_every > 0:
                self._tasks.append(asyncio.create_task(self._quality_loop()))
        except TimeoutError:
            self.failure = f"timeout ({self.stage})"
        except SignalingError as exc:
            self.failure = f"{self.stage}: {exc.code}"
        except Exception as exc:  # a bridge's failure is a result, not a crash of the worker
            self.failure = f"{self.stage}: {type(exc).__name__}: {exc}"[:200]
        if self.failure is not None:
            self.stage = "failed"

    async def _join(self) -> None:
        s, o = self.spec, self.opts
        token = issue_token(o.secret, o.room, s.identity, s.role, province=s.province,
                            ttl_s=o.ttl_s)
        session = self.session = _MeteredSession(
            o.url, token, room=o.room, ice_hosts=self.ice_hosts,
            timeout=o.join_timeout, stats=self.stats, decode=s.decode,
        )  # fmt: skip
        session.on_message(self._on_message)
        if s.decode:
            session.on_track(self._on_track)
        self.stage = "signaling"
        await session.connect()
        self.joined_s = self._since()
        self._tasks.append(asyncio.create_task(self._ping_loop()))
        if s.publish:
            self.stage = "publishing"
            await session.publish(ToneAudioTrack(), PatternVideoTrack(o.width, o.height, o.fps))
            self.published_s = self._since()
        self.stage = "ice"
        while not self._connection_up():
            await asyncio.sleep(0.05)  # polling: aiortc offers no awaitable state change
        self.connected_s = self._since()
        if s.expect_media:
            self.stage = "media"
            while not self.receiving:
                if session.closed:
                    raise session.error or SignalingError("closed", "session ended")
                await asyncio.sleep(0.05)

    def _connection_up(self) -> bool:
        assert self.session is not None
        if self.session.closed:
            raise self.session.error or SignalingError("closed", "session ended")
        pcs = [self.session.subscriber] if self.spec.expect_media else []
        if self.spec.publish:
            pcs.append(self.session.publisher)
        if not pcs:
            return True
        for pc in pcs:
            if pc is None or pc.connectionState != "connected":
                if pc is not None and pc.connectionState in ("failed", "closed"):
                    raise RuntimeError(f"peer connection {pc.connectionState}")
                return False
        return True

    def _since(self) -> float:
        assert self.t_start is not None
        return round(time.monotonic() - self.t_start, 4)

    async def _ping_loop(self) -> None:
        while self.session is not None and not self.session.closed:
            await asyncio.sleep(self.opts.ping_every)  # pacing
            t = time.perf_counter()
            try:
                await self.session.request({"type": "ping"}, timeout=10)
            except (SignalingError, TimeoutError):
                continue
            self.rtt_ms.append(1000 * (time.perf_counter() - t))
            if len(self.rtt_ms) > 5000:
                del self.rtt_ms[:2500]  # bounded for hours-long holds: keep the recent half

    async def _quality_loop(self) -> None:
        """Report our link like the web client does (every 5 s): the server's roll call shows
        it, and thousands of bridges reporting are part of the load a conference puts on it."""
        last = (time.monotonic(), self.stats.bytes)
        while self.session is not None and not self.session.closed:
            await asyncio.sleep(self.opts.quality_every)  # pacing
            now, nbytes = time.monotonic(), self.stats.bytes
            kbps = (nbytes - last[1]) * 8 / max(1e-3, now - last[0]) / 1000
            last = (now, nbytes)
            rx = self.stats.summary()
            report: Message = {"type": "quality", "bitrate_kbps": round(kbps, 1),
                               "loss": min(1.0, (rx["loss_pct"] or 0) / 100),
                               "rtt_ms": round(self.rtt_ms[-1], 2) if self.rtt_ms else 0}
            if rx["jitter_ms"] is not None:
                report["jitter_ms"] = rx["jitter_ms"]
            try:
                await self.session.request(report, timeout=10)
                self.quality_sent += 1
            except SignalingError as exc:
                if exc.code in ("unknown_type", "bad_message"):
                    return  # a server without `quality`: stop, as the web client does
            except TimeoutError:
                continue

    def _on_message(self, msg: Message) -> None:
        kind = msg.get("type")
        if kind == "floor_given":
            self.floor_seen.append([msg.get("participant_id"), time.time(), msg.get("seq")])
        elif kind == "floor_taken":
            self.floor_taken_seen += 1

    def _on_track(self, track_id: str, track: MediaStreamTrack) -> None:
        # Every received track must be read, or aiortc queues its decoded frames without bound.
        self._tasks.append(asyncio.create_task(self._consume(track)))

    async def _consume(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                valid = isinstance(frame, av.VideoFrame) and self.pictures.add(frame)
                if valid and self.first_picture is None:
                    self.first_picture = time.monotonic()
        except MediaStreamError:
            pass

    def check_alive(self) -> None:
        """Note a session that ended on its own after it was up (kicked, server gone...)."""
        s = self.session
        if self.stage == "up" and s is not None and s.closed and self.dropped is None:
            self.dropped = s.error.code if s.error else "closed"

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        if self.session is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.session.close(), 10)
        self.stage = "closed"

    # --- the result ----------------------------------------------------------------------------

    async def media_rtt_ms(self) -> float | None:
        """RTCP round trip of our published streams, from the server's receiver reports
        (LSR/DLSR): only a publisher has one."""
        pc = self.session.publisher if self.session else None
        if pc is None:
            return None
        with contextlib.suppress(Exception):
            for s in (await pc.getStats()).values():
                if s.type == "remote-inbound-rtp" and getattr(s, "roundTripTime", None):
                    return round(1000 * s.roundTripTime, 2)
        return None

    def record(self, now: float) -> dict[str, Any]:
        """This bridge's line of the report (`now`: time.monotonic())."""
        self.check_alive()
        sp = self.spec
        ok = self.failure is None and self.stage == "up" and self.dropped is None
        t0 = self.t_start

        def rel(t: float | None) -> float | None:
            return None if t is None or t0 is None else round(t - t0, 4)

        rtt = self.rtt_ms
        out: dict[str, Any] = {
            **sp.to_json(),
            "ok": ok,
            "failure": self.failure if self.failure else (
                None if self.dropped is None else f"dropped: {self.dropped}"),
            "stage": self.stage,
            "started_at": self.started_at,
            "joined_s": self.joined_s,
            "published_s": self.published_s,
            "connected_s": self.connected_s,
            "first_packet_s": rel(self.stats.first_packet),
            # First complete VP8 keyframe: the earliest any receiver could show a picture.
            "ttff_keyframe_s": rel(self.stats.first_keyframe),
            # First decoded picture whose painted number and bar were right (decoders only).
            "ttff_picture_s": rel(self.first_picture),
            "pictures_valid": self.pictures.valid if sp.decode else None,
            "pictures_invalid": self.pictures.invalid if sp.decode else None,
            **self.stats.summary(),
            "kbps": None,
            "rtt_ms": round(statistics.median(rtt), 2) if rtt else None,
            "rtt_p95_ms": round(_pct(rtt, 0.95) or 0, 2) if rtt else None,
            "rtt_samples": len(rtt),
            "floor_seen": self.floor_seen,
            "floor_taken_seen": self.floor_taken_seen,
            "quality_sent": self.quality_sent,
        }
        kbps = self.stats.kbps(now)
        if kbps is not None:
            out["kbps"] = round(kbps, 1)
        return out

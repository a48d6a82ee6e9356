"""Real aiortc peers wired straight to a Router (no signaling), for media-path tests.

The server side runs in this process, so tap.install() is active here too; client connections
are never claimed and so behave exactly like stock aiortc.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.rtcconfiguration import RTCBundlePolicy

from clients.media import PatternVideoTrack, ToneAudioTrack, TrackReceiver
from sfu.adapters import aiortc_tap as tap
from sfu.config import SfuConfig
from sfu.router import Router, TrackInfo


def new_pc() -> RTCPeerConnection:
    # max-bundle, as real clients do: aiortc's default gives extra m-lines unstarted transports
    return RTCPeerConnection(
        RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
    )


@dataclass
class Harness:
    router: Router
    offers: dict[str, asyncio.Queue] = field(default_factory=dict)
    pcs: list[RTCPeerConnection] = field(default_factory=list)
    receivers: list[TrackReceiver] = field(default_factory=list)

    def queue(self, pid: str) -> asyncio.Queue:
        return self.offers.setdefault(pid, asyncio.Queue())

    async def publish(
        self,
        pid: str,
        *,
        start: int = 0,
        video_codec: str | None = None,
        loss: float = 0.0,
        audio: MediaStreamTrack | None = None,
        wrap: Callable[[MediaStreamTrack], MediaStreamTrack] = lambda track: track,
    ) -> tuple[RTCPeerConnection, list[TrackInfo], PatternVideoTrack]:
        pc = new_pc()
        self.pcs.append(pc)
        video = PatternVideoTrack(start=start)
        pc.addTransceiver(wrap(audio or ToneAudioTrack()), direction="sendonly")
        vt = pc.addTransceiver(wrap(video), direction="sendonly")
        if video_codec:
            from aiortc import RTCRtpSender

            caps = RTCRtpSender.getCapabilities("video").codecs
            vt.setCodecPreferences(
                [c for c in caps if c.mimeType.lower() in (f"video/{video_codec.lower()}",
                                                            "video/rtx")]
            )
        await pc.setLocalDescription(await pc.createOffer())
        answer, tracks = await self.router.publish(pid, pc.localDescription.sdp, {})
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        if loss:
            inject_loss(pc, send=loss, seed=7)
        return pc, tracks, video

    async def subscribe(
        self, pid: str, track_ids: list[str], *, loss: float = 0.0
    ) -> tuple[RTCPeerConnection, dict[str, TrackReceiver]]:
        pc = new_pc()
        self.pcs.append(pc)
        got: dict[str, TrackReceiver] = {}
        mids: dict[str, str] = {}

        @pc.on("track")
        def on_track(track) -> None:  # type: ignore[no-untyped-def]
            tr = next(t for t in pc.getTransceivers() if t.receiver.track is track)
            r = TrackReceiver(track, tr.receiver).start()
            self.receivers.append(r)
            got[mids[tr.mid]] = r

        await self.router.subscribe(pid, track_ids)
        sdp, offered = await asyncio.wait_for(self.queue(pid).get(), 10)
        mids.update(offered)
        await pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await self.router.subscriber_answer(pid, pc.localDescription.sdp)
        if loss:
            inject_loss(pc, receive=loss, seed=11)
        return pc, got

    async def close(self) -> None:
        for r in self.receivers:
            await r.stop()
        await self.router.close()
        for pc in self.pcs:
            with contextlib.suppress(Exception):
                await pc.close()


@contextlib.asynccontextmanager
async def harness(router_factory=Router, room: str = "test-room", **config):  # type: ignore[no-untyped-def]
    tap.set_ice_hosts(["127.0.0.1"])
    h: Harness

    async def send_offer(pid: str, sdp: str, mids: dict[str, str]) -> None:
        await h.queue(pid).put((sdp, mids))

    h = Harness(router_factory(room, SfuConfig(ice_hosts=("127.0.0.1",), **config), send_offer))
    try:
        yield h
    finally:
        await h.close()


async def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    """Poll a condition on a real-time system (packets in flight), bounded by `timeout`."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while loop.time() < end:
        if predicate():
            return True
        await asyncio.sleep(interval)
    return bool(predicate())


def inject_loss(pc: RTCPeerConnection, send: float = 0.0, receive: float = 0.0,
                seed: int = 1) -> dict[str, int]:
    """Drop a fraction of the RTP a (client, stock aiortc) connection sends or receives, as a
    lossy path would; RTCP is never dropped. A test's own hook into aiortc's DTLS transport
    (the names are checked by tests/contract)."""
    dtls = tap.dtls_of(pc)
    if dtls is None:
        raise ValueError("connection has no transport yet")
    rng = random.Random(seed)
    counters = {"dropped_in": 0, "dropped_out": 0}
    if receive > 0:
        orig_in = dtls._handle_rtp_data

        async def lossy_in(data: bytes, arrival_time_ms: int) -> None:
            if rng.random() < receive:
                counters["dropped_in"] += 1
                return
            await orig_in(data, arrival_time_ms)

        dtls._handle_rtp_data = lossy_in  # type: ignore[method-assign]
    if send > 0:
        orig_out = dtls._send_rtp

        async def lossy_out(data: bytes) -> None:
            is_rtcp = len(data) > 1 and 192 <= data[1] <= 223
            if not is_rtcp and rng.random() < send:
                counters["dropped_out"] += 1
                return
            await orig_out(data)

        dtls._send_rtp = lossy_out  # type: ignore[method-assign]
    return counters

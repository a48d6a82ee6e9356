"""Subscriber process: `--count` aiortc peers receiving from the target.

Light subscribers count packets per SSRC (loss from sequence numbers), never decode, and send
receiver reports as a real receiver would (bench/peer.py); `--full` of them (the first ones) go
through aiortc's whole receive path, decode, check every picture's painted frame number and bar
position, and log when each decoded frame's packets arrived.

Run by the orchestrator: `python -m bench.subscribers --spec JSON --count N --full K`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Any

from aiortc import MediaStreamTrack, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError

from bench.lossy import Dropper
from bench.peer import (
    RtpCounter,
    hook_rtp,
    kernel_receive_times,
    loopback_pc,
    nack_sender,
    rtx_payload_types,
    send_receiver_reports,
    video_payload_types,
    wait_connected,
)
from bench.targets import Client, make_client
from bench.worker import emit, run_worker, serve_commands
from clients.media import bar_matches, read_frame_number

# A frame number may advance by more than 1 (a frame lost before a keyframe), never go back.
_MAX_STEP = 300
_BAD_KINDS = ("number", "bar", "order", "start")
_DUMP = os.environ.get("HOINGHI_BENCH_DUMP_BAD")  # a folder: save the first bad pictures there


class Subscriber:
    def __init__(self, index: int, full: bool, fps: float = 30, loss: float = 0.0) -> None:
        self.index = index
        self.ts_per_frame = 90_000 / fps
        self.full = full
        self.pc: RTCPeerConnection = loopback_pc()
        self.counter = RtpCounter()
        if loss:  # bench/lossy.py: dropped on arrival; a light one NACKs (aiortc does for us)
            self.counter.dropper = Dropper(loss, seed=index)
            if not full:
                self.counter.nackers = {}
                self.counter.send_nack = nack_sender(self.pc)
        # (frame number, kernel arrival, app arrival) of its last packet
        self.decoded: list[tuple[int, float | None, float]] = []
        self.frames_checked = 0
        self.frames_bad = 0
        self.bad_complete = 0  # bad pictures whose every RTP packet arrived
        # Why pictures failed; "start": unreadable before the first good one (a subscriber that
        # joins mid-stream may decode inter frames before its first keyframe).
        self.bad: dict[str, int] = dict.fromkeys(_BAD_KINDS, 0)
        self.frames_no_arrival = 0
        self._last_n: int | None = None
        self._last_ts = 0
        # Frame numbers of bad pictures, inferred from their RTP timestamp and the last good
        # picture's (the number itself is what failed to read).
        self.bad_numbers: list[int] = []
        self._tasks: list[asyncio.Task[None]] = []

    def on_offer(self, pc: RTCPeerConnection, sdp: str) -> None:
        if self.full:
            self.counter.arrivals = self.counter.arrivals or {}
            self.counter.frames = {}
        if self.full or self.counter.nackers is not None:
            self.counter.video_pts = video_payload_types(sdp)
            self.counter.rtx_pts = rtx_payload_types(sdp)
        hook_rtp(pc, self.counter.handler(decode=self.full))

    async def connect(self, client: Client) -> None:
        if self.full:
            @self.pc.on("track")
            def on_track(track: MediaStreamTrack) -> None:
                receiver = next(t.receiver for t in self.pc.getTransceivers()
                                if t.receiver.track is track)
                self._tasks.append(asyncio.ensure_future(self._consume(track, receiver)))

        await client.subscribe(self.pc, self.on_offer)
        if not self.full:  # a decoding one's aiortc receivers report themselves
            self._tasks.append(asyncio.ensure_future(send_receiver_reports(self.pc,
                                                                           self.counter)))

    async def _consume(self, track: MediaStreamTrack, receiver: Any) -> None:
        # aiortc hands decoded frames pts = RTP timestamp − the first frame's timestamp; the
        # mapper's origin gives the RTP timestamp back (to find when that frame's packets came).
        mapper = receiver._RTCRtpReceiver__timestamp_mapper
        try:
            while True:
                frame = await track.recv()
                if track.kind != "video":
                    continue  # audio is decoded (realistic load) but not checked here
                origin = mapper._origin or 0
                rtp_ts = None if frame.pts is None else (frame.pts + origin) & 0xFFFFFFFF
                self._check(frame, rtp_ts)
        except MediaStreamError:
            pass

    def _check(self, frame: Any, rtp_ts: int | None) -> None:
        n = read_frame_number(frame)
        why = None
        if n is None:
            why = "number"
        elif not bar_matches(frame, n):
            why = "bar"
        elif self._last_n is not None and not 0 < ((n - self._last_n) & 0xFFFF) < _MAX_STEP:
            why = "order"
        if why is not None and self._last_n is None:
            self.bad["start"] += 1
            return
        if why is not None:
            if rtp_ts is not None and self._last_n is not None:
                step = round(((rtp_ts - self._last_ts) & 0xFFFFFFFF) / self.ts_per_frame)
                self.bad_numbers.append((self._last_n + step) & 0xFFFF)
            if rtp_ts is not None and self.counter.frame_complete(rtp_ts):
                self.bad_complete += 1  # every packet came: the damage is not the transit's
            if _DUMP and self.frames_bad < 5:
                frame.to_image().save(f"{_DUMP}/bad-{self.index}-{self.frames_bad}-{why}.png")
            self.frames_bad += 1
            self.bad[why] += 1
            return
        self.frames_checked += 1
        self._last_n = n
        self._last_ts = rtp_ts or 0
        arrivals = self.counter.arrivals or {}
        arrival = arrivals.get(rtp_ts) if rtp_ts is not None else None
        if arrival is None:
            self.frames_no_arrival += 1
        else:
            self.decoded.append((n, *arrival))  # type: ignore[arg-type]

    def media_flowing(self) -> bool:
        # Audio and video both arriving (a server may add them in separate offers).
        return sum(1 for c in self.counter.ssrcs.values() if c.received > 0) >= 2

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        await self.pc.close()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", required=True, help="target spec (JSON)")
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--full", type=int, default=0, help="how many of them decode")
    ap.add_argument("--first-index", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=60)
    ap.add_argument("--loss", type=float, default=0.0, help="%% of RTP packets dropped on arrival")
    args = ap.parse_args()

    client = make_client(json.loads(args.spec))
    subs = [Subscriber(args.first_index + i, i < args.full, loss=args.loss)
            for i in range(args.count)]
    t0 = time.monotonic()
    # Small batches: certificate generation and DTLS handshakes are CPU-heavy on 2 cores.
    for i in range(0, len(subs), 5):
        await asyncio.gather(*(s.connect(client) for s in subs[i:i + 5]))
    await asyncio.gather(*(wait_connected(s.pc, args.timeout) for s in subs))
    kernel_ts = sum(kernel_receive_times(s.pc, s.counter.kernel_times) for s in subs if s.full)
    deadline = time.monotonic() + args.timeout
    while not all(s.media_flowing() for s in subs):
        if time.monotonic() > deadline:
            idle = [s.index for s in subs if not s.media_flowing()]
            raise TimeoutError(f"no audio+video after {args.timeout}s at subscribers {idle}")
        await asyncio.sleep(0.05)
    emit({"ready": True, "pid": os.getpid(), "connect_s": round(time.monotonic() - t0, 2),
          "kernel_timestamp_sockets": kernel_ts})

    def snap() -> dict[str, Any]:
        return {"t": time.time(), "cpu_s": time.process_time(),
                "subs": [s.counter.snapshot() for s in subs]}

    def stop() -> dict[str, Any]:
        out = snap()
        full = [s for s in subs if s.full]
        out["decoded"] = [s.decoded for s in full]
        out["frames_checked"] = sum(s.frames_checked for s in full)
        out["frames_bad"] = sum(s.frames_bad for s in full)
        out["frames_bad_complete"] = sum(s.bad_complete for s in full)
        out["frames_no_arrival"] = sum(s.frames_no_arrival for s in full)
        out["bad_numbers"] = [s.bad_numbers for s in full]
        out["frames_bad_why"] = {k: sum(s.bad[k] for s in full) for k in _BAD_KINDS}
        return out

    try:
        await serve_commands({"snap": snap, "stop": stop})
    finally:
        await asyncio.gather(*(s.close() for s in subs), return_exceptions=True)
        await client.close()


if __name__ == "__main__":
    run_worker(main)

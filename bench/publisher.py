"""Publisher process: one aiortc peer sending VP8 (painted frame numbers) + Opus to the target.

Latency anchor: for every frame number n it records when the frame was produced and when the
last RTP packet of that frame was handed to the socket. aiortc's sender loop is strictly
sequential (recv frame → encode → send its packets → recv next), so the frame whose packets are
being sent is always the one the track returned last.

Run by the orchestrator: `python -m bench.publisher --spec JSON ...` (see bench/procs.py).
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiortc.codecs.vpx as vpx
import av
from aiortc import MediaStreamTrack, RTCPeerConnection
from aiortc.codecs.vpx import vp8_depayload

from bench.peer import dtls_transports, loopback_pc, wait_connected
from bench.targets import make_client
from bench.worker import emit, run_worker, serve_commands
from clients.media import PatternVideoTrack, ToneAudioTrack, bar_matches, read_frame_number

_SSRC = struct.Struct("!I")


def pin_vp8_bitrate(bps: int) -> None:
    """Make the encoder hold `bps` whatever REMB the SFU sends.

    Both SFUs would otherwise steer the publisher differently (Janus caps via REMB, hoinghi may
    not), and the two systems would be measured under different packet rates.
    """
    vpx.DEFAULT_BITRATE = vpx.MIN_BITRATE = vpx.MAX_BITRATE = bps


class SourceCheck:
    """Decodes the publisher's own VP8 output and checks each picture, like a subscriber would.

    Under CPU starvation libvpx's realtime mode (aiortc uses cpu-used=-6: adaptive speed) can
    emit pictures whose painted number does not survive. Those are the source's fault; knowing
    them, the run can tell them apart from damage done between publisher and subscriber.
    """

    def __init__(self) -> None:
        self.decoder = av.CodecContext.create("libvpx", "r")
        self.parts: list[bytes] = []
        self.bad: list[int] = []
        self.checked = 0

    def add(self, data: bytes, n: int | None) -> None:
        b0 = data[0]
        off = 12 + 4 * (b0 & 0x0F)
        if b0 & 0x10:  # header extension: 4-byte header + length in 32-bit words
            off += 4 + 4 * int.from_bytes(data[off + 2:off + 4], "big")
        end = len(data) - (data[-1] if b0 & 0x20 else 0)
        self.parts.append(vp8_depayload(data[off:end]))
        if not data[1] & 0x80:  # not the frame's last packet yet
            return
        packet = av.Packet(b"".join(self.parts))
        self.parts = []
        for frame in self.decoder.decode(packet):
            self.checked += 1
            if n is None or read_frame_number(frame) != n or not bar_matches(frame, n):
                self.bad.append(-1 if n is None else n)


class FrameLogTrack(MediaStreamTrack):
    """Wraps the pattern track; logs produced/sent wall times per painted frame number."""

    kind = "video"

    def __init__(self, inner: MediaStreamTrack) -> None:
        super().__init__()
        self.inner = inner
        self.last_n: int | None = None
        self.frames: dict[int, list[float | None]] = {}  # n -> [produced, last packet sent]
        self.unreadable = 0

    async def recv(self) -> av.VideoFrame:
        frame = await self.inner.recv()
        n = read_frame_number(frame)  # read back, not assumed: checks the pattern source too
        self.last_n = n
        if n is None:
            self.unreadable += 1
        else:
            self.frames[n] = [time.time(), None]
        return frame

    def stop(self) -> None:
        self.inner.stop()
        super().stop()


def hook_sends(pc: RTCPeerConnection, video: FrameLogTrack, video_ssrc: int,
               counts: dict[int, int], check: SourceCheck | None) -> None:
    last_seq = [-1]  # highest video sequence number sent so far
    for transport in dtls_transports(pc):
        original: Callable[[bytes], Awaitable[None]] = transport._send_rtp

        async def send(data: bytes, original: Callable[[bytes], Awaitable[None]] = original
                       ) -> None:
            # Taken before the send: a forwarder fast enough delivers the packet before the
            # publisher's send returns, and latency must not come out negative.
            sent_at = time.time()
            await original(data)
            if 192 <= data[1] <= 208:  # RTCP (aiortc's own test): not media
                return
            ssrc = _SSRC.unpack_from(data, 8)[0]
            counts[ssrc] = counts.get(ssrc, 0) + 1
            counts[-1] = counts.get(-1, 0) + len(data)  # key -1: bytes, all media
            if ssrc != video_ssrc:
                return
            seq = int.from_bytes(data[2:4], "big")
            if last_seq[0] >= 0 and not 0 < (seq - last_seq[0]) & 0xFFFF < 0x8000:
                return  # a retransmission (without RTX) of an older packet: not a new frame
            last_seq[0] = seq
            if data[1] & 0x80 and video.last_n is not None:
                entry = video.frames.get(video.last_n)
                if entry is not None:
                    entry[1] = sent_at
            if check is not None:
                check.add(data, video.last_n)

        transport._send_rtp = send


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", required=True, help="target spec (JSON)")
    ap.add_argument("--bitrate", type=int, default=1_000_000)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--fps", type=float, default=30)
    ap.add_argument("--no-source-check", action="store_true",
                    help="do not decode our own output (saves ~1 ms CPU per frame)")
    args = ap.parse_args()

    pin_vp8_bitrate(args.bitrate)
    pc = loopback_pc()
    video = FrameLogTrack(PatternVideoTrack(args.width, args.height, args.fps))
    audio = ToneAudioTrack()
    pc.addTransceiver(audio, direction="sendonly")
    video_sender = pc.addTransceiver(video, direction="sendonly").sender
    client = make_client(json.loads(args.spec))
    info = await client.publish(pc)
    counts: dict[int, int] = {}
    check = None if args.no_source_check else SourceCheck()
    hook_sends(pc, video, video_sender._ssrc, counts, check)
    await wait_connected(pc, 30)
    emit({"ready": True, "pid": os.getpid(), **info})

    def snap() -> dict[str, Any]:
        return {"t": time.time(),
                "packets": sum(v for k, v in counts.items() if k >= 0),
                "bytes": counts.get(-1, 0),
                "video_packets": counts.get(video_sender._ssrc, 0),
                "frames": len(video.frames), "cpu_s": time.process_time()}

    def stop() -> dict[str, Any]:
        out = snap()
        out["frame_log"] = [[n, p, s] for n, (p, s) in video.frames.items()]
        out["unreadable_frames"] = video.unreadable
        out["source_checked"] = check.checked if check else None
        out["source_bad"] = check.bad if check else None
        return out

    try:
        await serve_commands({"snap": snap, "stop": stop})
    finally:
        await client.close()


if __name__ == "__main__":
    run_worker(main)

"""Idle bridges for `hoinghi bench idle`: joined, connected, sending and receiving no media.

A commune without the floor is such a bridge most of a national conference: its signaling
session pings, and (with `--connection publisher`) its publisher connection holds ICE consent
and RTCP for a camera and a microphone that send nothing (what a paused client does). What the
server spends on them is the fixed cost per idle connection.

Line protocol (bench/worker.py): prints {"ready": ...} once every bridge is joined (and
connected); then answers `snap` and `stop`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import Any

from aiortc import MediaStreamTrack, RTCPeerConnection

from bench.hoinghi_target import HoinghiClient
from bench.peer import loopback_pc, wait_connected
from bench.worker import emit, run_worker, serve_commands


class SilentTrack(MediaStreamTrack):
    """A track whose next frame never comes: the sender sends RTCP but no RTP."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    async def recv(self) -> Any:
        await asyncio.Event().wait()  # until the connection closes (the sender is cancelled)


async def connect(client: HoinghiClient, index: int, mode: str) -> RTCPeerConnection | None:
    identity = f"idle-{os.getpid()}-{index}"
    if mode == "none":
        await client.join(identity, "commune")
        return None
    pc = loopback_pc()
    pc.addTrack(SilentTrack("audio"))
    pc.addTrack(SilentTrack("video"))
    await client.publish(pc, identity, "commune")
    return pc


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", required=True, help="target spec (JSON)")
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--connection", choices=("publisher", "none"), default="publisher")
    ap.add_argument("--timeout", type=float, default=60)
    args = ap.parse_args()

    client = HoinghiClient(json.loads(args.spec))
    pcs: list[RTCPeerConnection] = []
    t0 = time.monotonic()
    try:
        # Small batches: certificate generation and DTLS handshakes are CPU-heavy on 2 cores.
        for i in range(0, args.count, 5):
            got = await asyncio.gather(*(connect(client, k, args.connection)
                                         for k in range(i, min(i + 5, args.count))))
            pcs += [pc for pc in got if pc is not None]
        await asyncio.gather(*(wait_connected(pc, args.timeout) for pc in pcs))
        emit({"ready": True, "pid": os.getpid(), "connect_s": round(time.monotonic() - t0, 2)})

        def snap() -> dict[str, Any]:
            return {"t": time.time(), "cpu_s": time.process_time()}

        await serve_commands({"snap": snap, "stop": snap})
    finally:
        await asyncio.gather(*(pc.close() for pc in pcs), return_exceptions=True)
        await client.close()


if __name__ == "__main__":
    run_worker(main)

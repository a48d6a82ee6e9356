"""Frame hold (SfuConfig.frame_hold_ms): a video frame's first packets wait for its last one
(RTP marker bit), at most that long, so the frame leaves in one round of the fan-out.

Real parts: the ingress shell (PublisherConnection) and a Producer sending to consumers over
real loopback sockets with real SRTP (tests/unit/test_fastpath.py's peers); the hold's timer
is the event loop's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator

import pytest
from aiortc import RTCPeerConnection

from sfu import fastpath
from sfu.config import SfuConfig
from sfu.producer import Producer, Source
from sfu.router import TrackInfo
from sfu.transports.webrtc import MediaCounters, PublisherConnection
from tests.unit.test_fastpath import VP8_DELTA, VP8_KEY, Peer, close_all, make_peer, rtp


@contextlib.asynccontextmanager
async def publisher(hold_s: float) -> AsyncIterator[tuple[PublisherConnection, Producer,
                                                          list[Peer]]]:
    """The ingress shell of one publisher whose camera two consumers watch (both joined at a
    keyframe, which they have received)."""
    track = TrackInfo("pub/camera", "pub", "video", "camera", "VP8")
    producer = Producer(track, 90000, SfuConfig(), random.Random(1))
    src = Source(96, 0, 0)
    src.ssrc = 0xAAAA
    producer.bind_source(src)
    conn = PublisherConnection("pub", RTCPeerConnection(), MediaCounters(), frame_hold_s=hold_s)
    conn.by_ssrc[0xAAAA] = (producer, False)
    conn.producers.append(producer)
    peers = [await make_peer(i, producer=producer) for i in range(2)]
    try:
        for p in peers:
            producer.add_consumer(p.consumer, 1.0)
        conn.on_rtp_batch([rtp(100, 9000, VP8_KEY, 0x80)[0]], 0)  # a keyframe: both join
        for p in peers:
            p.receive()
        yield conn, producer, peers
    finally:
        conn.retire()
        await conn.pc.close()
        close_all(peers)


def seqs(peer: Peer, n: int) -> list[int]:
    return [int.from_bytes(peer.receive()[2:4], "big") for _ in range(n)]


async def test_a_frame_waits_for_its_last_packet_and_leaves_in_one_round(
        native: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastpath, "AVAILABLE", native)
    async with publisher(5.0) as (conn, producer, peers):  # the hold never expires here
        conn.on_rtp_batch([rtp(101, 12000, VP8_DELTA)[0]], 0)  # first of a frame: held
        conn.on_rtp_batch([rtp(102, 12000, VP8_DELTA)[0]], 0)
        assert all(p.nothing_waiting() for p in peers) and producer.frames_held == 2
        assert conn._hold is not None
        conn.on_rtp_batch([rtp(103, 12000, VP8_DELTA, 0x80)[0]], 0)  # its last: all three go
        assert conn._hold is None and producer.forwarded == 2 + 3 * 2
        for p in peers:
            first = seqs(p, 3)
            assert first == [(first[0] + k) & 0xFFFF for k in range(3)]
            assert p.nothing_waiting()


async def test_a_frame_whose_last_packet_never_comes_leaves_when_the_hold_expires() -> None:
    async with publisher(0.05) as (conn, producer, peers):
        conn.on_rtp_batch([rtp(101, 12000, VP8_DELTA)[0]], 0)  # its marker packet is lost
        assert peers[0].nothing_waiting()
        # Blocking receives in threads: only the event loop's timer can release the packet.
        got = await asyncio.gather(*(asyncio.to_thread(p.receive) for p in peers))
        assert all(g[12:] for g in got) and conn._hold is None
        assert producer.frames_held == 1 and producer.forwarded == 2 + 2
        # The next frame starts a new hold.
        conn.on_rtp_batch([rtp(102, 15000, VP8_DELTA)[0]], 0)
        assert conn._hold is not None


async def test_without_a_hold_a_batch_goes_out_as_read() -> None:
    async with publisher(0.0) as (conn, producer, peers):
        conn.on_rtp_batch([rtp(101, 12000, VP8_DELTA)[0]], 0)
        assert [len(seqs(p, 1)) for p in peers] == [1, 1]
        assert conn._hold is None and producer.frames_held == 0

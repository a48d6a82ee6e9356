"""Parked connections (sfu/adapters/parking.py), with real aiortc peers.

A publisher whose tracks stop sending (a commune's paused camera and microphone) leaves the
event loop's selector for the shared poller; its sender reports are still read there, and its
first packet when it speaks again unparks it without losing a picture. A subscriber's connection
is parked from the start; its NACKs are read after the publisher's media batches.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiortc import MediaStreamTrack

from sfu.adapters import parking
from sfu.fastpath import ingress as fast_ingress
from tests.integration.rtc import harness, wait_until

pytestmark = pytest.mark.integration


class GatedTrack(MediaStreamTrack):
    """Passes a source's frames on while `gate` is set; while it is clear, sends nothing."""

    def __init__(self, source: MediaStreamTrack, gate: asyncio.Event) -> None:
        super().__init__()
        self.kind = source.kind
        self._source, self._gate = source, gate

    async def recv(self) -> Any:
        await self._gate.wait()
        return await self._source.recv()


def selector_fds() -> set[int]:
    return set(asyncio.get_running_loop()._selector.get_map())  # type: ignore[attr-defined]


BOTH_READS = [
    pytest.param(True, marks=pytest.mark.skipif(not fast_ingress.NATIVE, reason="not built")),
    False]


@pytest.mark.parametrize("native", BOTH_READS)
async def test_an_idle_publisher_is_parked_and_speaking_again_unparks_it(
        monkeypatch, native: bool) -> None:
    # Both reads: C (its SRs reduced to their clocks, sfu/fastpath/ingress.c) and Python.
    monkeypatch.setattr(fast_ingress, "NATIVE", native)
    gate = asyncio.Event()
    gate.set()
    async with harness(park_idle_after_s=0.5) as h:
        _, tracks, _ = await h.publish("commune", wrap=lambda t: GatedTrack(t, gate))
        ids = [t.id for t in tracks]
        _, got = await h.subscribe("chair", ids)
        video = got["commune/camera"]
        assert await asyncio.wait_for(video.wait_frames(10), 20)
        pub = h.router.publishers["commune"]
        assert pub.ingress is not None and not pub.ingress.parked
        fd = pub.ingress._sock.fileno()
        assert fd in selector_fds()

        gate.clear()  # the commune's camera and microphone pause
        assert await wait_until(lambda: pub.ingress.parked, 15)
        assert h.router.stats()["ingress_parked"] == 2  # with the subscriber's
        assert fd not in selector_fds()  # no wake-up of the loop for this socket any more
        assert len(parking.poller()) >= 1
        # Its sender reports still arrive, read by the poller (the first may come only now:
        # aiortc sends them 0.5-1.5 s apart).
        producer = h.router.producers["commune/camera"]
        parked_at = time.time()
        assert await wait_until(lambda: producer.last_sr is not None
                                and producer.last_sr[2] > parked_at, 10)
        assert (pub.ingress.reports > 0) is native

        frames = video.video.frames
        gate.set()  # the floor is given: it speaks again
        assert await wait_until(lambda: not pub.ingress.parked, 10)
        assert fd in selector_fds()
        assert await asyncio.wait_for(video.wait_frames(frames + 20), 20)
        assert video.video.invalid == 0 and video.video.regressions == 0
        assert h.router.stats()["ingress_parks"] == 2  # the publisher's, the subscriber's


async def test_parking_off_keeps_an_idle_publisher_on_the_loop() -> None:
    gate = asyncio.Event()
    gate.set()
    async with harness(park_idle_after_s=0) as h:
        _, tracks, _ = await h.publish("commune", wrap=lambda t: GatedTrack(t, gate))
        _, got = await h.subscribe("chair", [t.id for t in tracks])
        assert await asyncio.wait_for(got["commune/camera"].wait_frames(5), 20)
        gate.clear()
        cleared = time.time()
        producer = h.router.producers["commune/camera"]
        # A sender report a second after the last packet: with parking on (after 0.5 s) the
        # wake-up that read it would have parked the connection.
        assert await wait_until(lambda: producer.last_sr is not None
                                and producer.last_sr[2] > cleared + 1.0, 15)
        assert h.router.stats()["ingress_parks"] == 0
        assert h.router.publishers["commune"].ingress._sock.fileno() in selector_fds()
        assert h.router.subscribers["chair"].ingress._sock.fileno() in selector_fds()


@pytest.mark.parametrize("native", BOTH_READS)
async def test_a_subscriber_is_parked_and_its_nacks_are_read_after_media(
        monkeypatch, native: bool) -> None:
    # The poller's own timer effectively never fires here: whatever the subscriber's RTCP
    # achieves, it achieves through the reads after the publisher's batches. Both reads: C
    # (sfu/fastpath/ingress.c, receiver reports reduced to blocks) and Python.
    monkeypatch.setattr(parking, "POLL_S", 3600.0)
    monkeypatch.setattr(fast_ingress, "NATIVE", native)
    async with harness(park_idle_after_s=2.0) as h:
        _, tracks, _ = await h.publish("chair")
        _, got = await h.subscribe("commune", [t.id for t in tracks], loss=0.05)
        video = got["chair/camera"]
        assert await asyncio.wait_for(video.wait_frames(30), 30)
        sub = h.router.subscribers["commune"]
        assert sub.ingress is not None and sub.ingress.parked
        assert sub.ingress._sock.fileno() not in selector_fds()
        # Its NACKs (5 % of the packets lost on the way in) were read and answered ...
        assert await wait_until(lambda: h.router.stats()["retransmitted"] > 0, 20)
        # ... and its receiver reports too (fraction lost and RTT come from them).
        consumer = next(iter(sub.by_ssrc.values()))
        assert await wait_until(lambda: consumer.rtt_s is not None, 10)
        stats = h.router.stats()
        assert stats["ingress_parked_reads"] > 0 and stats["ingress_parks"] == 1
        # The C read took the receiver reports without Python parsing them; the Python one
        # parsed every RTCP packet itself.
        assert (stats["ingress_reports"] > 0) is native
        assert parking.poller().wakeups == 0  # nothing was left for the timer
        assert sub.ingress.wakeups == 0 and sub.ingress.datagrams > 0  # never woke the loop
        frames = video.video.frames
        assert await asyncio.wait_for(video.wait_frames(frames + 30), 30)
        assert video.video.invalid == 0

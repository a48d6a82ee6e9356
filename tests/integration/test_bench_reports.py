"""The benchmark's light subscribers send receiver reports the server reads (bench/peer.py).

A light subscriber never reaches aiortc's receivers, so without its own reports the benchmark
would spare the server the RTCP every real subscriber sends. Here a counting subscriber whose
incoming RTP loses 10 % must show that loss to the server's consumer through those reports.
"""

from __future__ import annotations

import asyncio

import pytest

from bench.peer import RtpCounter, hook_rtp, send_receiver_reports
from tests.integration.rtc import harness, inject_loss, wait_until

pytestmark = pytest.mark.integration


async def test_light_subscriber_reports_reach_the_server() -> None:
    async with harness() as h:
        _, tracks, _ = await h.publish("chair")
        pc, _ = await h.subscribe("commune", [t.id for t in tracks])
        counter = RtpCounter()
        hook_rtp(pc, counter.handler(decode=False))  # aiortc's receivers see nothing more
        inject_loss(pc, receive=0.1, seed=3)  # dropped before the counter sees them
        task = asyncio.ensure_future(send_receiver_reports(pc, counter))
        try:
            sub = h.router.subscribers["commune"]
            assert await wait_until(lambda: len(counter.ssrcs) == 2, 10)
            video = next(c for c in sub.by_ssrc.values() if c.producer.video)
            # Only our reports carry loss: the stock receivers, starved, report none.
            assert await wait_until(lambda: video.fraction_lost > 0, 15)
            assert set(sub.by_ssrc) <= set(counter.ssrcs)
        finally:
            task.cancel()

"""The room's 20 ms tick visits only producers with timer work (NACKs to send, a deferred
keyframe request), not every track: a national conference has thousands of idle ones, and
visiting each every 20 ms would cost a core. The Router and Producers are the real ones, their
producers added as a pipe's are (no connection needed); the clock is passed in."""

from __future__ import annotations

import random

from sfu.config import SfuConfig
from sfu.core.nack import NackGenerator
from sfu.producer import Producer, Source
from sfu.router import Router, TrackInfo
from tests.unit.test_fastpath import VP8_DELTA, rtp


async def _no_offer(*_args: object) -> None:
    return None


def _video(router: Router, who: str) -> Producer:
    producer = Producer(TrackInfo(f"{who}/camera", who, "video", "camera", "VP8"), 90000,
                        router.config, random.Random(1))
    src = Source(96, 0, 0)
    src.ssrc = 0xAAAA
    producer.bind_source(src)
    router.add_producer(producer)
    return producer


def _feed(producer: Producer, seq: int, now: float) -> None:
    data, h = rtp(seq, seq * 3000, VP8_DELTA)
    producer.on_rtp(data, h, now)


def test_nack_generator_says_when_a_packet_gave_it_work() -> None:
    g = NackGenerator()
    assert [g.on_packet(s, 0.0) for s in (10, 11, 12)] == [False, False, False]
    assert not g.busy
    assert g.on_packet(15, 1.0) is True and g.busy  # 13 and 14 missing
    assert g.on_packet(16, 2.0) is False and g.busy  # in order, the gap still open
    assert g.on_packet(13, 3.0) is False and g.on_packet(14, 3.0) is False
    assert not g.busy  # both came (reordered): nothing to NACK any more
    assert g.on_packet(40000, 4.0) is False and g.on_packet(40001, 4.0) is True  # restart
    assert g.busy and g.keyframe_needed


async def test_only_producers_with_timer_work_are_ticked() -> None:
    router = Router("room", SfuConfig(), _no_offer)
    try:
        steady, lossy, waiting = (_video(router, who) for who in ("a", "b", "c"))
        for seq in range(100, 105):
            _feed(steady, seq, 1.0)
            _feed(lossy, seq, 1.0)
        assert router.stats()["producers_ticking"] == 0  # nothing lost, nothing asked
        _feed(lossy, 106, 1.0)  # 105 is missing
        waiting.request_keyframe(1.0)  # sent at once
        waiting.request_keyframe(1.1)  # inside the interval: deferred to the tick
        assert router._ticking == {lossy, waiting} and router.stats()["producers_ticking"] == 2
        assert not steady.timer_work

        router._tick(1.05)  # 105 is past its reorder grace: NACKed; the PLI is not due yet
        assert lossy.nack is not None and lossy.nack.nacked == 1
        assert waiting.keyframes.sent == 1 and router._ticking == {lossy, waiting}
        _feed(lossy, 105, 1.08)  # the retransmission
        router._tick(2.05)  # the deferred PLI is due now
        assert waiting.keyframes.sent == 2
        assert router._ticking == set() and not lossy.timer_work and not waiting.timer_work

        _feed(lossy, 110, 3.0)  # another gap, then its publisher leaves
        assert lossy in router._ticking
        await router.remove_participant("b")
        assert router._ticking == set()
    finally:
        await router.close()

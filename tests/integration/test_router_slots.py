"""Subscriber slot reuse (sfu/slots.py) with real aiortc peers: an unsubscribed track's m-line
is kept and the next track of its kind takes it over, so the SDP does not grow; and a change
that only moves tracks through slots the last offer opened is a `remap`, with no SDP at all."""

from __future__ import annotations

import asyncio
import re

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from clients.media import FrameChecker, TrackReceiver
from sfu.core.rtcp import build_nack, build_pli
from tests.integration.rtc import Harness, harness, new_pc, wait_until

pytestmark = pytest.mark.integration


class Viewer:
    """One subscriber pc that answers every offer and reads each active slot as its track."""

    def __init__(self, h: Harness, pid: str) -> None:
        self.h, self.pid = h, pid
        self.pc: RTCPeerConnection = new_pc()
        h.pcs.append(self.pc)
        self.mids: dict[str, str] = {}
        self.sections = 0
        self.rx: dict[str, TrackReceiver] = {}  # track id -> receiver reading it now
        self.got: list[str] = []  # "offer" / "remap", in order

    async def answer(self) -> None:
        sdp, mids = await asyncio.wait_for(self.h.queue(self.pid).get(), 10)
        self.got.append("offer" if sdp is not None else "remap")
        if sdp is not None:
            self.sections = len(re.findall(r"^m=", sdp, re.M))
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
            await self.pc.setLocalDescription(await self.pc.createAnswer())
            await self.h.router.subscriber_answer(self.pid, self.pc.localDescription.sdp)
        self.mids = dict(mids)
        # A reused slot keeps its receiver track (aiortc fires no new `track` event): read it
        # afresh under its new track id.
        for tr in self.pc.getTransceivers():
            tid = self.mids.get(tr.mid)
            if tid is None or tid in self.rx:
                continue
            for old, r in list(self.rx.items()):
                if r.track is tr.receiver.track:
                    await r.stop()
                    del self.rx[old]
            r = TrackReceiver(tr.receiver.track, tr.receiver).start()
            self.h.receivers.append(r)
            self.rx[tid] = r

    async def change(self, add: list[str], remove: list[str]) -> None:
        await self.h.router.update_subscriptions(self.pid, add, remove)
        await self.answer()


async def test_a_freed_slot_carries_another_publishers_camera_and_feedback_follows() -> None:
    async with harness() as h:
        for pid, start in (("a", 0), ("b", 5000)):
            await h.publish(pid, start=start)
        v = Viewer(h, "viewer")
        await v.change(["a/camera"], [])
        assert await asyncio.wait_for(v.rx["a/camera"].wait_frames(10), 20)
        sub = h.router.subscribers["viewer"]
        c = sub.consumers["a/camera"]
        mid = next(iter(v.mids))

        await v.change([], ["a/camera"])  # the section stays, carrying nothing: a remap
        assert v.sections == 1 and v.mids == {} and len(sub.free) == 1
        assert c not in h.router.producers["a/camera"].consumers
        await v.change(["b/camera"], [])
        assert v.sections == 1 and v.mids == {mid: "b/camera"}
        assert v.got == ["offer", "remap", "remap"]
        assert (h.router.stats()["subscriber_offers"], h.router.stats()["subscriber_remaps"]) == (
            1, 2)
        assert sub.consumers["b/camera"] is c and c.producer is h.router.producers["b/camera"]
        rx = v.rx["b/camera"]
        assert await asyncio.wait_for(rx.wait_frames(15), 20), vars(rx.video)
        assert rx.video.invalid == 0 and rx.video.last is not None and rx.video.last >= 5000
        stats = await rx.stats()
        assert stats["packets_lost"] < 20  # the output stream continued: no big seq gap

        # The subscriber's PLI and NACK for the slot reach its current producer only.
        calls: list[tuple[str, str]] = []
        for tid, p in h.router.producers.items():
            p.request_keyframe = lambda now, t=tid: calls.append(("pli", t))  # type: ignore
            p.retransmit = lambda cons, lost, t=tid: calls.append(("nack", t)) or 0  # type: ignore
        assert sub.by_ssrc[c.ssrc] is c
        sub.on_rtcp(build_pli(1, c.ssrc))
        sub.on_rtcp(build_nack(1, c.ssrc, [1, 2]))
        assert calls == [("pli", "b/camera"), ("nack", "b/camera")]


async def test_section_count_stays_bounded_over_five_floor_turns() -> None:
    async with harness() as h:
        pids = [f"p{i}" for i in range(4)]
        for i, pid in enumerate(pids):
            await h.publish(pid, start=1000 * i)
        v = Viewer(h, "viewer")
        await v.change(["p0/microphone", "p0/camera"], [])
        assert v.sections == 2
        turns = ["p1", "p2", "p3", "p0", "p1"]
        prev = "p0"
        for pid in turns:
            await v.change([f"{pid}/microphone", f"{pid}/camera"],
                           [f"{prev}/microphone", f"{prev}/camera"])
            assert v.sections == 2 and sorted(v.mids.values()) == [f"{pid}/camera",
                                                                   f"{pid}/microphone"]
            assert len(h.router.subscribers["viewer"].pc.getTransceivers()) == 2
            prev = pid
        assert v.got == ["offer"] + ["remap"] * 5  # floor turns cost no SDP
        rx = v.rx["p1/camera"]
        # The reused receiver may still hand out a frame or two of the previous publisher that
        # were in flight (aiortc's queue): judge the stream once p1's own pictures arrive.
        def settled() -> bool:
            v = rx.video
            if v.last is not None and 1000 <= v.last < 2000 and not v.regressions:
                return True
            if v.regressions or v.last is not None:  # an earlier publisher's frame: start over
                rx.video = FrameChecker()
            return False

        assert await wait_until(settled, 20), vars(rx.video)
        rx.video = FrameChecker()
        assert await asyncio.wait_for(rx.wait_frames(15), 20), vars(rx.video)
        assert rx.video.invalid == 0 and rx.video.last is not None and rx.video.last >= 1000
        mic = v.rx["p1/microphone"]
        assert await asyncio.wait_for(_frames(mic, 20), 10)
        assert h.router.receiving_video("viewer") == ["p1/camera"]


async def _frames(rx: TrackReceiver, n: int) -> bool:
    while rx.frames < n:
        await asyncio.sleep(0.05)
    return True


async def test_an_offer_only_where_the_sdp_must_change() -> None:
    """A new section, or a free one that an offer closed since, needs an offer; a slot freed
    since the last offer is reused by a remap."""
    async with harness() as h:
        for pid in ("a", "b", "c"):
            await h.publish(pid)
        v = Viewer(h, "viewer")
        await v.change(["a/camera"], [])  # a new section
        await v.change(["b/microphone"], ["a/camera"])  # another new one; the camera's closes
        assert v.got == ["offer", "offer"] and v.mids == {"1": "b/microphone"}
        sub = h.router.subscribers["viewer"]
        assert [tr.direction for tr in sub.pc.getTransceivers()] == ["inactive", "sendonly"]
        await v.change(["c/camera"], [])  # reopens the camera's section: the subscriber must know
        assert v.got[-1] == "offer" and v.mids == {"0": "c/camera", "1": "b/microphone"}
        await v.change(["a/microphone"], ["b/microphone"])  # open since the last offer: a remap
        assert v.got[-1] == "remap" and v.mids == {"0": "c/camera", "1": "a/microphone"}
        assert await asyncio.wait_for(_frames(v.rx["a/microphone"], 20), 10)
        assert v.sections == 2 and len(sub.pc.getTransceivers()) == 2


async def test_spare_slots_make_the_first_floor_turn_a_remap() -> None:
    """A conference's bridges open a floor audio and video section at their first offer, empty
    (sfu/slots.py `spare`): the first floor turn moves the holder's tracks into them by a
    remap, and they carry its media like any slot."""
    async with harness() as h:
        for pid, start in (("chair", 0), ("p1", 5000), ("p2", 9000)):
            await h.publish(pid, start=start)
        h.router.spare_slots = (("audio", "opus"), ("video", "VP8"))
        v = Viewer(h, "viewer")
        await v.change(["chair/microphone", "chair/camera"], [])
        assert v.sections == 4 and sorted(v.mids.values()) == ["chair/camera", "chair/microphone"]
        spare = {tr.mid for tr in v.pc.getTransceivers()} - set(v.mids)
        assert len(spare) == 2
        await v.change(["p1/microphone", "p1/camera"], [])  # the first floor turn
        assert v.got == ["offer", "remap"] and v.sections == 4
        assert {m for m, t in v.mids.items() if t.startswith("p1/")} == spare
        rx = v.rx["p1/camera"]
        assert await asyncio.wait_for(rx.wait_frames(10), 20), vars(rx.video)
        assert rx.video.invalid == 0 and rx.video.last is not None and rx.video.last >= 5000
        assert await asyncio.wait_for(_frames(v.rx["p1/microphone"], 20), 10)
        # Only a connection's first offer opens spares: a later new section comes alone.
        await v.change(["p2/camera"], [])
        assert v.got[-1] == "offer" and v.sections == 5
        # A room without spares opens none.
        w = Viewer(h, "other")
        h.router.spare_slots = ()
        await w.change(["chair/camera"], [])
        assert w.sections == 1

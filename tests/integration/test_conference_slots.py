"""Plan-driven auto-subscription in a conference, through a real `hoinghi serve`: a bridge that
auto-subscribes gets the sections its Last-N plan and the floor give it, not one per track in
the room, and a floor turn reuses those sections (sfu/slots.py) instead of adding new ones."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterator

import pytest

from clients.media import PatternVideoTrack, ToneAudioTrack
from clients.session import BridgeSession
from tests.conftest import ServerProcess, running_server
from tests.integration.test_control import event, http, joined, receiver, until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("slots")) as s:
        yield s


def _count(s: BridgeSession, kind: str) -> int:
    return sum(1 for m in s.messages if m.get("type") == kind)


def _sections(s: BridgeSession) -> int:
    offers = [m for m in s.messages if m.get("type") == "offer"]
    return len(re.findall(r"^m=", offers[-1]["sdp"], re.M)) if offers else 0


async def test_auto_subscriber_gets_its_plan_and_a_floor_turn_reuses_its_sections(
    srv: ServerProcess,
) -> None:
    room = "slots-1"
    chair_token = srv.token(room, "chair", "chair")
    status, _ = await http(srv, "POST", "/api/rooms", chair_token, {"room": room, "last_n": 1})
    assert status == 201
    bridges = ["b1", "b2", "b3"]  # the floor, one shown by Last-N 1, one nobody is shown
    async with contextlib.AsyncExitStack() as stack:
        chair = await stack.enter_async_context(joined(srv, room, "chair", "chair"))
        pubs = {b: await stack.enter_async_context(joined(srv, room, b, "commune"))
                for b in bridges}  # fmt: skip
        await chair.publish(ToneAudioTrack(330), PatternVideoTrack(fps=10))
        for i, b in enumerate(bridges, 1):
            await pubs[b].publish(ToneAudioTrack(), PatternVideoTrack(fps=10, start=10000 * i))
        await doing_floor(chair, "b1")
        viewer = await stack.enter_async_context(joined(srv, room, "xa-9", "commune", auto=True))

        def tracks() -> set[str]:
            return set(viewer.mids.values())

        async def planned(*must: str) -> bool:
            got = tracks()
            return all(t in got for t in must) and len(got) == 5

        await until(lambda: planned("chair/microphone", "chair/camera", "b1/microphone",
                                    "b1/camera"), 20)
        assert sum(t.endswith("/microphone") for t in tracks()) == 2
        assert _sections(viewer) == 5
        assert len(viewer.subscriber.getTransceivers()) == 5  # type: ignore[union-attr]
        video_mids = {mid for mid, t in viewer.mids.items() if t.endswith("/camera")}
        other = next(t for t in tracks() if t not in ("chair/camera", "b1/camera")
                     and t.endswith("/camera"))
        rx = await receiver(viewer, "b1/camera")
        assert await asyncio.wait_for(rx.wait_frames(5), 20), vars(rx.video)
        await rx.stop()

        # The floor goes to a bridge nobody was shown: its audio and video take freed sections,
        # by a `remap` (no SDP: the sections stay open), not an offer.
        target = next(b for b in bridges[1:] if f"{b}/camera" != other)
        offers = _count(viewer, "offer")
        await doing_floor(chair, target)
        await until(lambda: planned("chair/microphone", "chair/camera",
                                    f"{target}/microphone", f"{target}/camera"), 20)
        assert "b1/microphone" not in tracks()
        assert _count(viewer, "offer") == offers and _count(viewer, "remap") >= 1
        assert _sections(viewer) == 5
        assert len(viewer.subscriber.getTransceivers()) == 5  # type: ignore[union-attr]
        mid = next(m for m, t in viewer.mids.items() if t == f"{target}/camera")
        assert mid in video_mids  # a camera section reused, not a new one
        rx = await receiver(viewer, f"{target}/camera")
        first = 10000 * int(target[1:])

        async def shows_target() -> bool:  # after what the section carried before, queued
            return rx.video.last is not None and rx.video.last >= first + 5

        await until(shows_target, 20)
        assert rx.video.invalid == 0 and rx.video.regressions == 0, vars(rx.video)
        await rx.stop()


async def doing_floor(chair: BridgeSession, pid: str) -> None:
    waiter = asyncio.ensure_future(chair.wait_for(event("floor_given", pid), past=False))
    await asyncio.sleep(0)
    try:
        await chair.request({"type": "give_floor", "participant_id": pid})
        await asyncio.wait_for(waiter, 10)
    finally:
        waiter.cancel()

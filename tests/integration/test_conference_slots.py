"""Plan-driven auto-subscription in a conference, through a real `hoinghi serve`: a bridge that
auto-subscribes gets the sections its Last-N plan and the floor give it, not one per track in
the room, and a floor turn reuses those sections (sfu/slots.py) instead of adding new ones."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable, Iterator

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
        # Its five tracks, and the floor's two spare sections every bridge opens with.
        assert _sections(viewer) == 7
        assert len(viewer.subscriber.getTransceivers()) == 7  # type: ignore[union-attr]
        opened = {tr.mid for tr in viewer.subscriber.getTransceivers()}  # type: ignore[union-attr]
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
        assert _sections(viewer) == 7
        assert len(viewer.subscriber.getTransceivers()) == 7  # type: ignore[union-attr]
        mid = next(m for m, t in viewer.mids.items() if t == f"{target}/camera")
        assert mid in opened  # a section the first offer opened, not a new one
        rx = await receiver(viewer, f"{target}/camera")
        first = 10000 * int(target[1:])

        async def shows_target() -> bool:  # after what the section carried before, queued
            return rx.video.last is not None and rx.video.last >= first + 5

        await until(shows_target, 20)
        assert rx.video.invalid == 0 and rx.video.regressions == 0, vars(rx.video)
        await rx.stop()


async def test_the_first_floor_turn_is_a_remap_on_every_bridge(srv: ServerProcess) -> None:
    # Bridges that joined before anyone had the floor: their first offer opened the floor's
    # audio and video sections empty, so the first turn fills them without an offer.
    room = "slots-2"
    status, _ = await http(srv, "POST", "/api/rooms", srv.token(room, "chair", "chair"),
                           {"room": room, "last_n": 0})
    assert status == 201
    async with contextlib.AsyncExitStack() as stack:
        chair = await stack.enter_async_context(joined(srv, room, "chair", "chair"))
        speaker = await stack.enter_async_context(joined(srv, room, "b1", "commune"))
        await chair.publish(ToneAudioTrack(330), PatternVideoTrack(fps=10))
        await speaker.publish(ToneAudioTrack(), PatternVideoTrack(fps=10, start=20000))
        viewers = [await stack.enter_async_context(joined(srv, room, f"v{i}", "commune",
                                                          auto=True)) for i in range(2)]
        def sent(v: BridgeSession, *tracks: str) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                return all(t in v.mids.values() for t in tracks)
            return check

        for v in viewers:
            await until(sent(v, "chair/microphone", "chair/camera"), 20)
            assert _sections(v) == 4 and _count(v, "offer") == 1
        spares = [{tr.mid for tr in v.subscriber.getTransceivers()}  # type: ignore[union-attr]
                  - set(v.mids) for v in viewers]
        await doing_floor(chair, "b1")
        for v, spare in zip(viewers, spares, strict=True):
            await until(sent(v, "b1/microphone", "b1/camera"), 20)
            assert _count(v, "offer") == 1 and _count(v, "remap") == 1
            assert {m for m, t in v.mids.items() if t.startswith("b1/")} == spare
            rx = await receiver(v, "b1/camera")
            assert await asyncio.wait_for(rx.wait_frames(5), 20), vars(rx.video)
            assert rx.video.invalid == 0 and rx.video.last is not None
            assert rx.video.last >= 20000
            await rx.stop()


async def doing_floor(chair: BridgeSession, pid: str) -> None:
    waiter = asyncio.ensure_future(chair.wait_for(event("floor_given", pid), past=False))
    await asyncio.sleep(0)
    try:
        await chair.request({"type": "give_floor", "participant_id": pid})
        await asyncio.wait_for(waiter, 10)
    finally:
        waiter.cancel()

"""Conference control in the media plane, with real aiortc peers: server-side audio gating,
Last-N video selection and the active speaker from RFC 6464 audio levels."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from aiortc import AudioStreamTrack

from clients.media import ToneAudioTrack
from tests.integration.rtc import harness, wait_until


class Talker(ToneAudioTrack):
    """Speech-like: 400 ms bursts of tone with 200 ms pauses over a room's faint noise (a
    steady tone is, rightly, indistinguishable from background noise to a dominant-speaker
    detector, and a real microphone is never digitally silent)."""

    _rng = np.random.default_rng(3)

    def make_frame(self, k: int):  # type: ignore[no-untyped-def]
        frame = super().make_frame(k)
        if k % 30 >= 20:
            noise = self._rng.integers(-40, 41, frame.samples, dtype=np.int16)  # about -58 dBov
            frame.planes[0].update(noise.tobytes())
        return frame

pytestmark = pytest.mark.integration


async def test_blocked_audio_stops_reaching_others_and_resumes() -> None:
    async with harness() as h:
        _, tracks, _ = await h.publish("commune-1")
        ids = [t.id for t in tracks]
        _, got = await h.subscribe("chair", ids)
        mic = got["commune-1/microphone"]
        assert await wait_until(lambda: mic.frames > 20, 15)
        producer = h.router.producers["commune-1/microphone"]
        h.router.set_audio_allowed("commune-1", False)
        sent = producer.forwarded
        received = (await mic.stats())["packets"]
        # The publisher keeps sending (its client does not know), the server forwards nothing.
        packets_in = producer.packets
        assert await wait_until(lambda: producer.packets > packets_in + 50, 10)
        assert producer.forwarded == sent
        assert (await mic.stats())["packets"] <= received + 2  # at most what was in flight
        h.router.set_audio_allowed("commune-1", True)
        assert await wait_until(lambda: producer.forwarded > sent + 20, 10)
        # Video was never gated.
        assert got["commune-1/camera"].video.valid > 0


async def test_last_n_sends_only_the_selected_video_and_resumes_with_a_picture() -> None:
    async with harness() as h:
        ids: list[str] = []
        for pid in ("chair", "p1", "p2"):
            _, tracks, _ = await h.publish(pid)
            ids += [t.id for t in tracks]
        h.router.set_video_from("viewer", frozenset({"chair"}))  # before it even connects
        _, got = await h.subscribe("viewer", ids)
        assert await asyncio.wait_for(got["chair/camera"].wait_frames(15), 20)
        assert h.router.receiving_video("viewer") == ["chair/camera"]
        assert got["p1/camera"].video.frames == 0 and got["p2/camera"].video.frames == 0
        # Work for unwatched video is not done at all: no consumer of p1's camera is grouped.
        assert not h.router.producers["p1/camera"].fast
        # Audio is not subject to Last-N.
        assert await wait_until(lambda: got["p1/microphone"].frames > 10, 10)
        # p1 takes the floor: the viewer gets its video, starting at a keyframe.
        h.router.set_video_from("viewer", frozenset({"chair", "p1"}))
        assert await asyncio.wait_for(got["p1/camera"].wait_frames(10), 20)
        assert got["p1/camera"].video.invalid == 0
        h.router.set_video_from("viewer", frozenset({"chair"}))
        assert sorted(h.router.receiving_video("viewer")) == ["chair/camera"]
        frames = got["chair/camera"].video.valid
        assert await asyncio.wait_for(got["chair/camera"].wait_frames(frames + 10), 20)


async def test_dominant_speaker_is_the_one_talking_not_the_silent_ones() -> None:
    async with harness() as h:
        changes: list[str] = []
        h.router.on_dominant_speaker = changes.append
        for pid in ("silent-1", "silent-2"):
            await h.publish(pid, audio=AudioStreamTrack())  # aiortc's silence
        await h.publish("talker", audio=Talker())
        assert await wait_until(lambda: h.router.speaker.dominant == "talker", 15)
        assert changes and changes[-1] == "talker"
        assert h.router.speaker.ranking()[0] == "talker"

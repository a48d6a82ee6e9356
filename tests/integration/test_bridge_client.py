"""The Python bridge client against a real `hoinghi serve` on loopback.

A chair publishes the synthetic camera and tone from this process (BridgeSession); a commune runs
as `hoinghi bridge` in a subprocess and must decode the chair's pictures, right and in order.
Uses the `server` fixture (tests/conftest.py): `.url`, `.token(room, identity, role)`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender

from clients.media import PatternVideoTrack, ToneAudioTrack, TrackReceiver
from clients.session import BridgeSession, SignalingError
from sfu.adapters.aiortc_tap import set_ice_hosts

pytestmark = pytest.mark.integration

ICE = ["127.0.0.1"]
REPO = Path(__file__).resolve().parents[2]


def _room() -> str:
    return f"it-{uuid.uuid4().hex[:8]}"  # a fresh room per test: no state leaks between tests


def _session(server: Any, room: str, identity: str, role: str) -> BridgeSession:
    return BridgeSession(server.url, server.token(room, identity, role), ice_hosts=ICE)


def _bridge_cmd() -> list[str]:
    # `hoinghi bridge`, run the way conftest runs `hoinghi serve` (no installed script needed).
    if importlib.util.find_spec("hoinghi_cli") is not None:
        return [sys.executable, "-m", "hoinghi_cli", "bridge"]
    return [sys.executable, "-m", "clients.bridge"]


async def _run_bridge(*args: str, timeout: float = 60) -> tuple[int, dict[str, Any], str]:
    proc = await asyncio.create_subprocess_exec(
        *_bridge_cmd(), *args, cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    summary = json.loads(lines[-1]) if lines else {}
    return proc.returncode or 0, summary, err.decode()[-3000:]


@pytest.mark.parametrize("codec", ["VP8", "H264"])
async def test_commune_bridge_decodes_chair_camera(server: Any, codec: str) -> None:
    room = _room()
    async with _session(server, room, "chair", "chair") as chair:
        published = await chair.publish(ToneAudioTrack(), PatternVideoTrack(), video_codec=codec)
        assert {t["id"] for t in published} == {"chair/microphone", "chair/camera"}
        rc, summary, err = await _run_bridge(
            "--url", server.url, "--token", server.token(room, "commune-1", "commune"),
            "--ice-host", "127.0.0.1", "--video-codec", codec,
            "--expect-frames", "30", "--from", "chair", "--timeout", "30",
        )  # fmt: skip
    assert rc == 0, f"bridge failed: {summary}\n{err}"
    assert summary["ok"] is True and summary["from"] == "chair"
    assert summary["frames"] >= 30 and summary["invalid_frames"] == 0
    assert summary["packets"] > 30 and summary["loss"] < 0.05
    assert summary["bitrate_kbps"] > 0
    assert 0 < summary["time_to_first_frame_s"] < 30
    assert summary["audio_frames"] > 0
    assert summary["audio_freq_hz"] == pytest.approx(440, abs=5)


async def test_chair_receives_bridge_and_bridge_leaves_on_sigterm(server: Any) -> None:
    room = _room()
    async with _session(server, room, "chair", "chair") as chair:
        proc = await asyncio.create_subprocess_exec(
            *_bridge_cmd(), "--url", server.url, "--ice-host", "127.0.0.1",
            "--token", server.token(room, "commune-2", "commune"),
            cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            track = await chair.wait_track("commune-2/camera", timeout=30)
            rx = TrackReceiver(track, chair.receiver_for("commune-2/camera")).start()
            assert await asyncio.wait_for(rx.wait_frames(30), 30), vars(rx.video)
            await rx.stop()
            proc.send_signal(signal.SIGTERM)
            _, err = await asyncio.wait_for(proc.communicate(), 30)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode == 0, err.decode()[-3000:]
        left = await chair.wait_for(
            lambda m: m["type"] == "participant_left" and m["participant_id"] == "commune-2"
        )
        assert left["reason"] == "left"  # a clean leave, not a dropped connection


async def test_mids_map_each_track_to_its_publisher(server: Any) -> None:
    room = _room()
    async with (
        _session(server, room, "chair", "chair") as chair,
        _session(server, room, "p-a", "province") as a,
        _session(server, room, "p-b", "province") as b,
    ):
        # Numbering far apart: a frame from the wrong publisher cannot pass as the right one.
        await a.publish(None, PatternVideoTrack(start=1000))
        await b.publish(None, PatternVideoTrack(start=40000))
        receivers = {}
        for tid in ("p-a/camera", "p-b/camera"):
            track = await chair.wait_track(tid, timeout=30)
            receivers[tid] = TrackReceiver(track, chair.receiver_for(tid)).start()
        for rx in receivers.values():
            assert await asyncio.wait_for(rx.wait_frames(10), 30), vars(rx.video)
            await rx.stop()
        assert 1000 <= receivers["p-a/camera"].video.first < 40000
        assert receivers["p-b/camera"].video.first >= 40000
        assert chair.tracks.keys() >= {"p-a/camera", "p-b/camera"}
        assert "p-a/camera" not in a.received  # nobody is sent their own track


async def test_join_events_and_errors(server: Any) -> None:
    room = _room()
    bad = BridgeSession(server.url, "not-a-token", ice_hosts=ICE)
    with pytest.raises(SignalingError) as info:
        await bad.connect()
    assert info.value.code.startswith("token_")
    assert bad.closed

    async with _session(server, room, "chair", "chair") as chair:
        assert chair.participant_id == "chair"
        assert chair.joined is not None and chair.joined["ice_servers"] == []
        # The protocol's ping/pong is the only keepalive (docs/signaling.md): no websocket one.
        assert chair._ws is not None and chair._ws.ping_interval is None
        observer = _session(server, room, "obs", "observer")
        await observer.connect()
        joined = await chair.wait_for(lambda m: m["type"] == "participant_joined")
        assert joined["participant"]["id"] == "obs" and "obs" in chair.participants

        with pytest.raises(SignalingError) as info:
            await observer.publish(None, PatternVideoTrack())
        assert info.value.code == "forbidden"
        with pytest.raises(SignalingError) as info:
            await chair.subscribe(["nobody/camera"])
        assert info.value.code == "unknown_track"
        assert not chair.closed  # errors that keep the connection open keep the session

        # The same identity joining again replaces the first session (a bridge reconnecting).
        again = _session(server, room, "obs", "observer")
        await again.connect()
        ended = await asyncio.wait_for(observer.wait_closed(), 10)
        assert ended is not None and ended.code == "replaced"
        await again.close()
        await observer.close()
        left = {"type": "participant_left", "participant_id": "obs", "reason": "left"}
        await chair.wait_for(lambda m: left.items() <= m.items())


async def test_bridge_exit_codes(server: Any) -> None:
    rc, summary, _ = await _run_bridge(
        "--url", server.url, "--token", "not-a-token", "--ice-host", "127.0.0.1",
        "--expect-frames", "1", "--from", "chair", "--timeout", "10",
    )  # fmt: skip
    assert rc == 3 and summary["ok"] is False and summary["error"].startswith("token_")
    room = _room()
    rc, summary, _ = await _run_bridge(
        "--url", server.url, "--token", server.token(room, "c", "commune"), "--no-publish",
        "--ice-host", "127.0.0.1", "--expect-frames", "1", "--from", "absent", "--timeout", "3",
    )  # fmt: skip
    assert rc == 1 and summary["ok"] is False
    assert summary["error"] == "timeout" and summary["frames"] == 0


async def test_pattern_survives_a_live_aiortc_link() -> None:
    """Ten seconds of the test pattern over a real aiortc-to-aiortc link, no server.

    Guards the painter against the live encoder: with code blocks off the 16-px macroblock grid,
    VP8 (realtime, denoiser on) kept part of a changed block from the previous frame in ~1 % of
    frames once the bitrate had ramped up; an offline encode/decode loop never showed it.
    """
    set_ice_hosts(ICE)
    sender = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    receiver = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        video = sender.addTransceiver(PatternVideoTrack(), direction="sendonly")
        caps = RTCRtpSender.getCapabilities("video").codecs
        video.setCodecPreferences([c for c in caps if c.mimeType == "video/VP8"])
        tracks: asyncio.Queue[Any] = asyncio.Queue()
        receiver.on("track", tracks.put_nowait)
        await sender.setLocalDescription(await sender.createOffer())
        await receiver.setRemoteDescription(sender.localDescription)
        await receiver.setLocalDescription(await receiver.createAnswer())
        await sender.setRemoteDescription(receiver.localDescription)
        rx = TrackReceiver(await asyncio.wait_for(tracks.get(), 10)).start()
        assert await asyncio.wait_for(rx.wait_frames(300), 40), vars(rx.video)
        await rx.stop()
    finally:
        await sender.close()
        await receiver.close()

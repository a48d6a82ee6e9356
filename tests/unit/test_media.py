"""clients/media.py: the painted frame number and the tone survive aiortc's real codecs, and a
wrong or garbled picture never reads as a valid one."""

from __future__ import annotations

import fractions
from collections.abc import Callable

import av
import numpy as np
import pytest
from aiortc.codecs import (
    H264Decoder,
    H264Encoder,
    OpusDecoder,
    OpusEncoder,
    Vp8Decoder,
    Vp8Encoder,
    h264_depayload,
    vp8_depayload,
)
from aiortc.codecs.base import Decoder, Encoder
from aiortc.jitterbuffer import JitterFrame

from clients.media import (
    FrameChecker,
    PatternVideoTrack,
    ToneAudioTrack,
    _Layout,
    _luma,
    audio_frame_to_mono,
    check_picture,
    dominant_frequency,
    media_file_tracks,
    paint_frame_number,
    read_frame_number,
)

TICKS = 3000  # 90 kHz clock / 30 fps


def _frame(n: int, track: PatternVideoTrack | None = None) -> av.VideoFrame:
    frame = (track or PatternVideoTrack()).make_frame(n)
    frame.pts, frame.time_base = n * TICKS, fractions.Fraction(1, 90_000)
    return frame


def _round_trip(
    encoder: Encoder, decoder: Decoder, depayload: Callable[[bytes], bytes], count: int
) -> list[tuple[int, av.VideoFrame]]:
    """Encode frames 0..count-1 as aiortc would send them, depayload, decode: (n, picture)."""
    track = PatternVideoTrack()
    out = []
    for n in range(count):
        payloads, timestamp = encoder.encode(_frame(n, track))
        data = b"".join(depayload(p) for p in payloads)
        if data:
            for decoded in decoder.decode(JitterFrame(data, timestamp)):
                out.append((round(decoded.pts / TICKS), decoded))
    return out


@pytest.mark.parametrize(
    ("name", "encoder_cls", "decoder_cls", "depayload", "bitrate"),
    [
        ("vp8", Vp8Encoder, Vp8Decoder, vp8_depayload, 300_000),
        ("vp8", Vp8Encoder, Vp8Decoder, vp8_depayload, 1_000_000),
        # aiortc's H264 encoder clamps its target to >= 500 kbit/s.
        ("h264", H264Encoder, H264Decoder, h264_depayload, 500_000),
        ("h264", H264Encoder, H264Decoder, h264_depayload, 1_000_000),
    ],
)
def test_frame_number_survives_codec(
    name: str,
    encoder_cls: type[Encoder],
    decoder_cls: type[Decoder],
    depayload: Callable[[bytes], bytes],
    bitrate: int,
) -> None:
    encoder = encoder_cls()
    encoder.target_bitrate = bitrate  # type: ignore[attr-defined]
    decoded = _round_trip(encoder, decoder_cls(), depayload, 90)
    assert len(decoded) >= 85, f"{name}: decoder produced {len(decoded)} of 90 frames"
    checker = FrameChecker()
    for n, picture in decoded:
        assert read_frame_number(picture) == n
        assert check_picture(picture, n)
        assert checker.add(picture)
    assert checker.invalid == checker.regressions == 0


def test_frame_number_survives_vp8_bitrate_ramp() -> None:
    """What aiortc's sender does as REMB climbs: it rebuilds the encoder (a fresh keyframe) at
    every change over 10 %."""
    encoder, decoder, track = Vp8Encoder(), Vp8Decoder(), PatternVideoTrack()
    checker = FrameChecker()
    for n in range(200):
        encoder.target_bitrate = min(1_500_000, 300_000 + 100_000 * (n // 20))
        payloads, timestamp = encoder.encode(_frame(n, track))
        data = b"".join(vp8_depayload(p) for p in payloads)
        for picture in decoder.decode(JitterFrame(data, timestamp)):
            assert checker.add(picture), f"frame {n}: {read_frame_number(picture)}"
    assert checker.valid >= 195 and checker.invalid == 0


def test_frame_number_wraps_at_16_bits() -> None:
    assert read_frame_number(_frame(65535)) == 65535
    assert read_frame_number(_frame(65536)) == 0
    assert check_picture(_frame(65536), 0)


def test_every_single_bit_error_is_rejected() -> None:
    frame = _frame(12345)
    luma = frame.to_ndarray()[:240]
    lay = _Layout(320, 240)
    for bit in range(24):
        row, col = divmod(bit, 8)
        corrupt = frame.to_ndarray().copy()
        block = lay.block(row, col + 1)
        corrupt[block] = 251 - luma[block]  # 16 <-> 235: flip the bit
        picture = av.VideoFrame.from_ndarray(corrupt, format="yuv420p")
        assert read_frame_number(picture) is None, f"bit {bit} flipped still reads"


@pytest.mark.parametrize("fill", ["black", "white", "gray", "noise", "shifted", "smeared"])
def test_garbled_pictures_read_as_none(fill: str) -> None:
    good = _frame(777).to_ndarray()
    rng = np.random.default_rng(7)
    bad = {
        "black": np.full_like(good, 16),
        "white": np.full_like(good, 235),
        "gray": np.full_like(good, 128),
        "noise": rng.integers(0, 256, good.shape, dtype=np.uint8),
        "shifted": np.roll(good, 32, axis=1),  # whole picture moved by one block
        # a half-decoded frame: the code band blurred towards gray
        "smeared": np.where(np.arange(good.shape[0])[:, None] < 120, (good + 128) // 2, good),
    }[fill].astype(np.uint8)
    picture = av.VideoFrame.from_ndarray(bad, format="yuv420p")
    assert read_frame_number(picture) is None
    assert not check_picture(picture, 777)


def test_wrong_picture_is_not_correct() -> None:
    assert not check_picture(_frame(100), 101)
    # Right number, but the bar of another frame: the picture is not frame 100.
    mixed = _frame(130).to_ndarray()
    paint_frame_number(mixed[:240], 100)
    picture = av.VideoFrame.from_ndarray(mixed, format="yuv420p")
    assert read_frame_number(picture) == 100
    assert not check_picture(picture, 100)


def test_frame_checker_counts_regressions_and_jumps() -> None:
    track = PatternVideoTrack()
    checker = FrameChecker()
    results = [checker.add(_frame(n, track)) for n in (5, 6, 9, 8, 9, 10)]
    assert results == [True, True, True, False, False, True]
    assert (checker.valid, checker.regressions, checker.jumps, checker.skipped) == (4, 2, 1, 2)
    garbled = av.VideoFrame.from_ndarray(np.full((360, 320), 128, np.uint8), format="yuv420p")
    assert not checker.add(garbled)
    assert checker.invalid == 1 and checker.first == 5 and checker.last == 10


async def test_pattern_track_is_paced_and_numbered() -> None:
    track = PatternVideoTrack(fps=30, start=65534)
    frames = [await track.recv() for _ in range(3)]
    assert [read_frame_number(f) for f in frames] == [65534, 65535, 0]
    assert [f.pts for f in frames] == [0, 3000, 6000]
    assert all((f.width, f.height) == (320, 240) for f in frames)
    track.stop()


@pytest.mark.parametrize("freq", [440.0, 1000.0])
def test_tone_survives_opus(freq: float) -> None:
    tone = ToneAudioTrack(freq)
    encoder, decoder = OpusEncoder(), OpusDecoder()
    received = []
    for k in range(50):  # one second
        payloads, timestamp = encoder.encode(tone.make_frame(k))
        for payload in payloads:
            for frame in decoder.decode(JitterFrame(payload, timestamp)):
                assert frame.layout.name == "stereo" and not frame.format.is_planar
                received.append(audio_frame_to_mono(frame))
    assert len(received) >= 45
    samples = np.concatenate(received[5:])  # past the codec's start-up
    assert dominant_frequency(samples, 48_000) == pytest.approx(freq, abs=2.0)


def test_dominant_frequency_layouts() -> None:
    t = np.arange(9600) / 48_000
    mono = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    assert dominant_frequency(mono, 48_000) == pytest.approx(440, abs=1)
    planar = np.vstack([mono, mono])  # (channels, n)
    assert dominant_frequency(planar, 48_000) == pytest.approx(440, abs=1)
    packed = np.repeat(mono, 2).reshape(1, -1)  # L R L R ... as a packed frame gives it
    assert dominant_frequency(packed, 48_000, channels=2) == pytest.approx(440, abs=1)
    assert dominant_frequency(np.zeros(960), 48_000) == 0.0


async def test_media_file_tracks_play_a_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "clip.mkv")
    track, tone = PatternVideoTrack(), ToneAudioTrack()
    with av.open(path, "w") as container:
        video = container.add_stream("libvpx", rate=30)
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        video.bit_rate = 1_000_000
        video.options = {"deadline": "realtime", "cpu-used": "8"}  # libvpx's default is slow
        audio = container.add_stream("libopus", rate=48_000)
        for n in range(15):
            container.mux(video.encode(track.make_frame(n)))
            for k in (2 * n, 2 * n + 1):
                container.mux(audio.encode(tone.make_frame(k)))
        container.mux(video.encode())
        container.mux(audio.encode())
    audio_track, video_track = media_file_tracks(path)
    assert audio_track is not None and video_track is not None
    try:
        first = await video_track.recv()
        assert read_frame_number(first) == 0
        assert _luma(first).shape == (240, 320)
        sound = await audio_track.recv()
        assert sound.sample_rate == 48_000
    finally:
        audio_track.stop()
        video_track.stop()

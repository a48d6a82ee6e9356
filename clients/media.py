"""Synthetic test media that a receiver can verify, frame by frame.

The video carries its own frame number (16 bits + an 8-bit check code, painted as large luma
blocks that survive VP8/H264 at a few hundred kbit/s) and a bright bar whose position follows from
the frame number, so a receiver can tell "right picture, in order" from "some picture". The audio
is a sine tone whose frequency a receiver can measure after Opus. `TrackReceiver` runs these
checks on a received track.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
from aiortc import AudioStreamTrack, MediaStreamTrack, RTCRtpReceiver, VideoStreamTrack
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamError

VIDEO_CLOCK = 90_000
AUDIO_RATE = 48_000
AUDIO_SAMPLES = 960  # 20 ms at 48 kHz, what Opus packs into one RTP packet

# Video-range luma levels: encoders keep these apart even at high quantizers.
_BLACK, _GRAY, _WHITE = 16, 128, 235
# 3 rows of 1 marker + 8 bits = 24 bits. Blocks are whole 16x16 macroblocks (32x32 at 320 wide)
# on the macroblock grid: a block that straddles macroblocks can change only partly per
# macroblock, and VP8's denoiser/skip logic then sometimes keeps the old pixels (seen on loopback).
_ROWS, _COLS = 3, 9
_MB = 16
_BAR_WIDTH = 16
_BAR_STEP = 4  # pixels per frame


def _crc8(data: bytes) -> int:
    """CRC-8 (poly 0x07, init 0xFF): any 1-2 bit error in the frame number changes it."""
    crc = 0xFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _code_word(n: int) -> int:
    n &= 0xFFFF
    return n | (_crc8(n.to_bytes(2, "big")) << 16)


class _Layout:
    """Where the code blocks and the bar live, derived from the frame size alone (so a receiver
    needs nothing but the decoded frame). Everything sits on the 16-px macroblock grid."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.bw = self.bh = _MB * max(1, width // (_MB * 10))  # 32 px at 320 wide
        self.x0 = (width - _COLS * self.bw) // 2 // _MB * _MB
        self.y0 = max(_MB, self.bh // 2 // _MB * _MB)
        self.code_bottom = self.y0 + _ROWS * self.bh
        self.bar_top = self.code_bottom + _MB  # bar and texture live below the code

    def block(self, row: int, col: int) -> tuple[slice, slice]:
        y = self.y0 + row * self.bh
        x = self.x0 + col * self.bw
        return slice(y, y + self.bh), slice(x, x + self.bw)

    def block_core(self, row: int, col: int) -> tuple[slice, slice]:
        # Only the centre half is read: block edges ring and blur after compression.
        y = self.y0 + row * self.bh
        x = self.x0 + col * self.bw
        return (
            slice(y + self.bh // 4, y + self.bh - self.bh // 4),
            slice(x + self.bw // 4, x + self.bw - self.bw // 4),
        )

    def bar_x(self, n: int) -> int:
        return ((n & 0xFFFF) * _BAR_STEP) % self.width


def paint_frame_number(luma: np.ndarray, n: int) -> None:
    """Paint frame number n (and its check code and markers) into a luma plane, in place."""
    lay = _Layout(luma.shape[1], luma.shape[0])
    luma[: lay.bar_top, :] = _GRAY
    word = _code_word(n)
    for row in range(_ROWS):
        # Markers white, black, white: an all-white/all-black or shifted picture fails.
        luma[lay.block(row, 0)] = _WHITE if row % 2 == 0 else _BLACK
        for i in range(_COLS - 1):
            bit = (word >> (row * (_COLS - 1) + i)) & 1
            luma[lay.block(row, i + 1)] = _WHITE if bit else _BLACK


def _luma(frame: av.VideoFrame) -> np.ndarray:
    if frame.format.name in ("yuv420p", "yuvj420p", "nv12", "yuv422p", "yuv444p"):
        plane = frame.planes[0]
        buf = np.frombuffer(plane, np.uint8).reshape(frame.height, plane.line_size)
        return buf[:, : frame.width]
    return frame.to_ndarray(format="gray")


def read_frame_number(frame: av.VideoFrame) -> int | None:
    """The frame number painted by PatternVideoTrack, or None if the picture is not one of ours.

    None when a block is ambiguous (neither clearly dark nor clearly bright: a garbled decode),
    when a marker is wrong, or when the check code does not match.
    """
    if frame.width < _COLS * _MB or frame.height < 96:
        return None
    luma = _luma(frame)
    lay = _Layout(frame.width, frame.height)
    bits: list[int] = []
    for row in range(_ROWS):
        for col in range(_COLS):
            mean = float(luma[lay.block_core(row, col)].mean())
            if mean > 170:
                bit = 1
            elif mean < 80:
                bit = 0
            else:
                return None
            if col == 0:
                if bit != (1 if row % 2 == 0 else 0):
                    return None
            else:
                bits.append(bit)
    word = sum(b << i for i, b in enumerate(bits))
    n = word & 0xFFFF
    return n if _code_word(n) == word else None


def bar_matches(frame: av.VideoFrame, n: int) -> bool:
    """True when the bright bar sits where frame n puts it (and nowhere else)."""
    luma = _luma(frame)
    lay = _Layout(frame.width, frame.height)
    profile = luma[lay.bar_top :, :].mean(axis=0)
    x = lay.bar_x(n)
    cols = np.arange(frame.width)
    inner = (cols - x) % frame.width
    inside = (inner >= 3) & (inner < _BAR_WIDTH - 3)
    # Circular distance to the bar's centre; a margin around it absorbs ringing.
    centre = (x + _BAR_WIDTH / 2) % frame.width
    dist = np.abs(((cols - centre) + frame.width / 2) % frame.width - frame.width / 2)
    outside = dist > _BAR_WIDTH / 2 + 6
    return bool(profile[inside].min() > 180 and profile[outside].max() < 170)


def check_picture(frame: av.VideoFrame, n: int) -> bool:
    """True when frame is PatternVideoTrack's frame n: right number, bar in the right place."""
    return read_frame_number(frame) == (n & 0xFFFF) and bar_matches(frame, n)


@dataclass
class FrameChecker:
    """Checks a received sequence of PatternVideoTrack frames and counts what it sees."""

    frames: int = 0  # decoded frames seen
    valid: int = 0  # right picture, frame number increasing
    invalid: int = 0  # garbled picture, wrong check code, or bar in the wrong place
    regressions: int = 0  # a right picture whose number repeats or goes back
    jumps: int = 0  # forward gaps in the numbering (frames lost or dropped upstream)
    skipped: int = 0  # numbers missing in those gaps
    first: int | None = None
    last: int | None = None

    def add(self, frame: av.VideoFrame) -> bool:
        """Account for one decoded frame; True when it is a valid next frame."""
        self.frames += 1
        n = read_frame_number(frame)
        if n is None or not bar_matches(frame, n):
            self.invalid += 1
            return False
        if self.last is None:
            self.first = n
        else:
            step = (n - self.last) & 0xFFFF  # numbers wrap at 16 bits
            if step == 0 or step >= 0x8000:
                self.regressions += 1
                return False
            if step > 1:
                self.jumps += 1
                self.skipped += step - 1
        self.last = n
        self.valid += 1
        return True


async def _pace(track: PatternVideoTrack | ToneAudioTrack, due_s: float) -> None:
    """Sleep until `due_s` after the track's first frame: from a fixed origin, so pacing never
    drifts even when a frame is late."""
    now = time.monotonic()
    if track._t0 is None:
        track._t0 = now
    elif (wait := track._t0 + due_s - now) > 0:
        await asyncio.sleep(wait)


class PatternVideoTrack(VideoStreamTrack):
    """A moving bar over changing texture, with the frame number painted in; paced in real time.

    The texture (a cycling bank of noise images) makes every frame differ so the encoder produces
    packet rates like a real camera rather than a near-static slide.
    """

    def __init__(
        self,
        width: int = 320,
        height: int = 240,
        fps: float = 30,
        *,
        start: int = 0,
        noise: int = 48,
    ) -> None:
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        self.frame_number = start  # number of the next frame
        self._layout = _Layout(width, height)
        rng = np.random.default_rng(1)
        rows = height - self._layout.bar_top
        self._bank = [
            np.clip(_GRAY + rng.integers(-noise, noise + 1, size=(rows, width)), 0, 255).astype(
                np.uint8
            )
            for _ in range(8)
        ]
        self._chroma = np.full((height // 2, width), 128, np.uint8)  # neutral U and V
        self._t0: float | None = None
        self._k = 0

    def make_frame(self, n: int) -> av.VideoFrame:
        """Frame n of the pattern, without pacing (for tests and encoders)."""
        lay = self._layout
        luma = np.full((self.height, self.width), _GRAY, np.uint8)
        paint_frame_number(luma, n)
        luma[lay.bar_top :, :] = self._bank[n % len(self._bank)]
        cols = (lay.bar_x(n) + np.arange(_BAR_WIDTH)) % self.width
        luma[lay.bar_top :, cols] = _WHITE
        frame = av.VideoFrame.from_ndarray(np.vstack([luma, self._chroma]), format="yuv420p")
        return frame

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        # Own pacing (VideoStreamTrack's is fixed at 30 fps).
        await _pace(self, self._k / self.fps)
        frame = self.make_frame(self.frame_number)
        frame.pts = round(self._k * VIDEO_CLOCK / self.fps)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self._k += 1
        self.frame_number = (self.frame_number + 1) & 0xFFFF
        return frame


class ToneAudioTrack(AudioStreamTrack):
    """A sine tone, s16 mono 48 kHz in 20 ms frames, paced in real time, phase-continuous."""

    def __init__(self, freq: float = 440.0, amplitude: float = 0.3) -> None:
        super().__init__()
        self.freq = freq
        self.amplitude = amplitude
        self._t0: float | None = None
        self._k = 0

    def make_frame(self, k: int) -> av.AudioFrame:
        n = np.arange(k * AUDIO_SAMPLES, (k + 1) * AUDIO_SAMPLES)
        wave = self.amplitude * 32767 * np.sin(2 * math.pi * self.freq * n / AUDIO_RATE)
        frame = av.AudioFrame.from_ndarray(
            wave.astype(np.int16).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = AUDIO_RATE
        frame.pts = k * AUDIO_SAMPLES
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        return frame

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        await _pace(self, self._k * AUDIO_SAMPLES / AUDIO_RATE)
        frame = self.make_frame(self._k)
        self._k += 1
        return frame


def audio_frame_to_mono(frame: av.AudioFrame) -> np.ndarray:
    """Samples of an audio frame as a 1-D float array, channels averaged.

    aiortc's Opus decoder yields packed (interleaved) s16 stereo, shape (1, 2*n); our tone is
    planar-or-packed mono, shape (1, n). Planar multi-channel frames come as (channels, n).
    """
    data = frame.to_ndarray().astype(np.float64)
    channels = len(frame.layout.channels)
    if frame.format.is_planar:
        return data.reshape(channels, -1).mean(axis=0)
    return data.reshape(-1, channels).mean(axis=1)


def dominant_frequency(samples: np.ndarray, rate: int, channels: int = 1) -> float:
    """Frequency (Hz) of the strongest component of samples.

    samples: 1-D mono, (channels, n) planar, or interleaved with `channels` > 1 (a (1, 2n) array
    from a packed stereo frame with channels=2). 0.0 for silence or too few samples.
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim == 2 and x.shape[0] > 1 and channels == 1:
        x = x.mean(axis=0)  # planar
    x = x.reshape(-1)
    if channels > 1:
        x = x[: len(x) - len(x) % channels].reshape(-1, channels).mean(axis=1)
    if len(x) < 64 or not np.any(x):
        return 0.0
    x = (x - x.mean()) * np.hanning(len(x))
    size = 1 << max(14, math.ceil(math.log2(len(x))))  # zero-pad: finer bins than 1/len
    spectrum = np.abs(np.fft.rfft(x, size))
    spectrum[0] = 0.0
    k = int(np.argmax(spectrum))
    if 0 < k < len(spectrum) - 1:
        # Parabolic interpolation on log magnitude: sub-bin accuracy.
        a, b, c = np.log(spectrum[k - 1 : k + 2] + 1e-12)
        denom = a - 2 * b + c
        k = k + (0.5 * (a - c) / denom if denom else 0.0)
    return float(k * rate / size)


def media_file_tracks(
    path: str, *, loop: bool = False
) -> tuple[MediaStreamTrack | None, MediaStreamTrack | None]:
    """(audio, video) tracks decoded from a media file; either may be None if the file lacks it.

    loop=True repeats the file (only for seekable files). The tracks keep the player alive.
    """
    player = MediaPlayer(path, loop=loop)
    return player.audio, player.video


class TrackReceiver:
    """Consumes one remote track, checks what it decodes, and reads its packet counters.

    Reading matters even when nobody looks: aiortc decodes every received track and queues the
    frames without bound until someone calls recv().
    """

    def __init__(
        self,
        track: MediaStreamTrack,
        receiver: RTCRtpReceiver | None = None,
        *,
        t0: float | None = None,
        verify: bool = True,
        audio_window_s: float = 1.0,
    ) -> None:
        self.track, self.receiver, self.kind = track, receiver, track.kind
        self.t0 = time.monotonic() if t0 is None else t0  # origin of time_to_first_frame
        self.verify = verify  # False for pictures that are not PatternVideoTrack's
        self.video = FrameChecker()
        self.frames = 0
        self.first_frame_at: float | None = None
        self.audio_rate = 48_000
        self._audio: deque[np.ndarray] = deque(maxlen=max(1, round(audio_window_s / 0.02)))
        self._bytes0: tuple[float, int] | None = None
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self.ended = False

    def start(self) -> TrackReceiver:
        self._task = asyncio.create_task(self._run(), name=f"recv-{self.kind}")
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def time_to_first_frame(self) -> float | None:
        return None if self.first_frame_at is None else self.first_frame_at - self.t0

    def audio_frequency(self) -> float:
        """Dominant frequency of the last audio_window_s of audio received (0.0 if none)."""
        if not self._audio:
            return 0.0
        return dominant_frequency(np.concatenate(list(self._audio)), self.audio_rate)

    async def wait_frames(self, n: int, *, max_invalid: int = 0) -> bool:
        """True once n valid frames arrived; False as soon as invalid + regressed frames exceed
        max_invalid, or when the track ends."""
        v = self.video

        def done() -> bool:
            return v.valid >= n or v.invalid + v.regressions > max_invalid or self.ended

        async with self._changed:
            await self._changed.wait_for(done)
        return v.valid >= n and v.invalid + v.regressions <= max_invalid

    async def wait_received(self, n: int) -> bool:
        """True once n frames of any kind arrived; False if the track ends first."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.frames >= n or self.ended)
        return self.frames >= n

    async def stats(self) -> dict[str, Any]:
        """inbound-rtp counters; bitrate is the whole subscriber transport's since the first
        frame (aiortc's inbound-rtp carries no byte counts)."""
        out: dict[str, Any] = {"packets": 0, "packets_lost": 0, "loss": 0.0, "jitter_ms": 0.0}
        out["bitrate_kbps"] = 0.0
        clock = 90_000 if self.kind == "video" else 48_000
        report = await self.receiver.getStats() if self.receiver else {}
        for s in report.values():
            if s.type == "inbound-rtp":
                out["packets"], out["packets_lost"] = s.packetsReceived, max(0, s.packetsLost)
                out["jitter_ms"] = round(1000 * s.jitter / clock, 2)
            elif s.type == "transport" and self._bytes0 is not None:
                elapsed = time.monotonic() - self._bytes0[0]
                kbps = (s.bytesReceived - self._bytes0[1]) * 8 / elapsed / 1000 if elapsed else 0
                out["bitrate_kbps"] = round(kbps, 1)
        total = out["packets"] + out["packets_lost"]
        out["loss"] = round(out["packets_lost"] / total, 4) if total else 0.0
        return out

    async def _snapshot(self) -> None:
        for s in (await self.receiver.getStats()).values() if self.receiver else ():
            if s.type == "transport":
                self._bytes0 = (time.monotonic(), s.bytesReceived)

    async def _run(self) -> None:
        try:
            while True:
                frame = await self.track.recv()
                self.frames += 1
                if self.first_frame_at is None:
                    self.first_frame_at = time.monotonic()
                    await self._snapshot()
                if isinstance(frame, av.VideoFrame):
                    if self.verify:
                        self.video.add(frame)
                    else:  # not our pattern: every decoded frame counts
                        self.video.frames += 1
                        self.video.valid += 1
                elif isinstance(frame, av.AudioFrame) and self.frames > 3:
                    # (the first frames are the decoder starting up: not the tone yet)
                    self.audio_rate = frame.sample_rate
                    self._audio.append(audio_frame_to_mono(frame))
                async with self._changed:
                    self._changed.notify_all()
        except MediaStreamError:
            pass
        finally:
            self.ended = True
            async with self._changed:
                self._changed.notify_all()

"""Keyframe throttle (manual clock) and keyframe detection on real VP8/H264 RTP payloads."""

from __future__ import annotations

import fractions
import struct
from collections.abc import Callable

import av
import numpy as np
import pytest
from aiortc.codecs import get_encoder
from aiortc.codecs.h264 import h264_depayload
from aiortc.codecs.vpx import vp8_depayload
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from hypothesis import given
from hypothesis import strategies as st

from sfu.core.keyframes import (
    KeyframeThrottle,
    is_h264_keyframe,
    is_keyframe,
    is_vp8_keyframe,
)

# --- throttle ---------------------------------------------------------------------------------


def test_first_request_goes_out() -> None:
    t = KeyframeThrottle(1.0)
    assert t.request(100.0) is True
    assert (t.requested, t.sent, t.suppressed, t.pending) == (1, 1, 0, False)


def test_requests_inside_window_are_remembered_and_sent_once_when_it_ends() -> None:
    t = KeyframeThrottle(1.0)
    assert t.request(0.0)
    assert t.request(0.2) is False
    assert t.request(0.5) is False
    assert t.pending
    assert t.due(0.99) is False
    assert t.due(1.0) is True
    assert t.due(1.01) is False  # one PLI for both suppressed requests
    assert t.due(5.0) is False
    assert (t.requested, t.sent, t.suppressed, t.pending) == (3, 2, 2, False)


def test_deferred_send_restarts_the_window() -> None:
    t = KeyframeThrottle(1.0)
    t.request(0.0)
    t.request(0.5)
    assert t.due(1.2)
    assert t.request(1.5) is False  # 0.3 s after the deferred PLI
    assert t.due(2.2) is True


def test_keyframe_satisfies_pending_request() -> None:
    t = KeyframeThrottle(1.0)
    t.request(0.0)
    t.request(0.3)
    t.on_keyframe(0.4)
    assert t.pending is False
    assert t.due(1.0) is False
    assert t.sent == 1


def test_request_after_window_goes_out_at_once() -> None:
    t = KeyframeThrottle(2.0)
    assert t.request(10.0)
    assert t.request(11.9) is False
    assert t.request(12.0) is True  # the window has passed: no need to wait for due()
    assert t.pending is False
    assert t.due(20.0) is False
    assert (t.sent, t.suppressed) == (2, 1)


def test_due_without_request_is_false() -> None:
    t = KeyframeThrottle()
    assert t.due(0.0) is False
    assert t.due(100.0) is False


# --- detection on real encoder output --------------------------------------------------------

FRAMES = 12
FORCED = {5, 9}


def encode(mime: str) -> list[tuple[list[bytes], bytes]]:
    """Encode a moving test pattern; per frame, the RTP payloads and the depayloaded frame."""
    enc = get_encoder(RTCRtpCodecParameters(mimeType=mime, clockRate=90000, payloadType=96))
    depay = vp8_depayload if mime == "video/VP8" else h264_depayload
    out = []
    for i in range(FRAMES):
        img = np.zeros((144, 176, 3), dtype=np.uint8)
        img[:, :, 0] = (np.arange(176) * 3 + i * 9) % 256
        img[:, :, 1] = (np.arange(144)[:, None] * 2 + i * 5) % 256
        img[40:60, (i * 7) % 150 : (i * 7) % 150 + 20, 2] = 255
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = i * 3000
        frame.time_base = fractions.Fraction(1, 90000)
        payloads, _ = enc.encode(frame, force_keyframe=i in FORCED)
        out.append((payloads, b"".join(depay(p) for p in payloads)))
    return out


def decoder_says_key(codec: str, frames: list[bytes]) -> list[bool]:
    """An independent oracle: what libvpx/libavcodec report when decoding each frame."""
    ctx = av.CodecContext.create(codec, "r")
    flags = []
    for data in frames:
        decoded = ctx.decode(av.Packet(data))
        assert len(decoded) == 1
        flags.append(bool(decoded[0].key_frame))
    return flags


@pytest.fixture(scope="module")
def vp8_frames() -> list[tuple[list[bytes], bytes]]:
    return encode("video/VP8")


@pytest.fixture(scope="module")
def h264_frames() -> list[tuple[list[bytes], bytes]]:
    return encode("video/H264")


def test_vp8_real_frames(vp8_frames: list[tuple[list[bytes], bytes]]) -> None:
    truth = decoder_says_key("vp8", [f for _, f in vp8_frames])
    assert truth == [i == 0 or i in FORCED for i in range(FRAMES)]  # the oracle is sane
    for key, (payloads, _) in zip(truth, vp8_frames, strict=True):
        assert len(payloads) >= 1
        # Only the first packet of a key frame is flagged: it starts partition 0.
        assert [is_vp8_keyframe(p) for p in payloads] == [key] + [False] * (len(payloads) - 1)
        assert is_keyframe("VP8", payloads[0]) is key


def test_h264_real_frames(h264_frames: list[tuple[list[bytes], bytes]]) -> None:
    truth = decoder_says_key("h264", [f for _, f in h264_frames])
    assert truth == [i == 0 or i in FORCED for i in range(FRAMES)]
    saw_fu_a_start = False
    for key, (payloads, _) in zip(truth, h264_frames, strict=True):
        flags = [is_h264_keyframe(p) for p in payloads]
        assert flags[0] is key  # SPS first (in a STAP-A), or a non-IDR slice
        if not key:
            assert not any(flags)
        saw_fu_a_start |= any(p[0] & 0x1F == 28 and f for p, f in zip(payloads, flags, strict=True))
        assert is_keyframe("video/H264", payloads[0]) is key
    assert saw_fu_a_start  # the IDR itself was fragmented and its first fragment detected


def test_h264_keyframe_detected_without_the_parameter_set_packet(
    h264_frames: list[tuple[list[bytes], bytes]],
) -> None:
    payloads, _ = h264_frames[0]
    assert payloads[0][0] & 0x1F == 24  # STAP-A with SPS/PPS
    # Lose the STAP-A: the IDR's first FU-A fragment still says "key frame".
    assert any(is_h264_keyframe(p) for p in payloads[1:])


# --- detection on crafted payloads -----------------------------------------------------------

# VP8 payload headers: size/H/version/P octet, two size octets (+ start code on key frames).
VP8_KEY_HDR = b"\x50\x02\x00\x9d\x01\x2a"  # P=0
VP8_DELTA_HDR = b"\x31\x02\x00"  # P=1
VP8_KEY = b"\x10" + VP8_KEY_HDR
VP8_DELTA = b"\x10" + VP8_DELTA_HDR


@pytest.mark.parametrize(
    ("descriptor", "expect"),
    [
        (b"\x10", True),  # no extensions, S=1, PID=0
        (b"\x00", False),  # S=0: continuation
        (b"\x11", False),  # PID=1: not partition 0
        (b"\x90\x00", True),  # X with no fields
        (b"\x90\x80\x05", True),  # I, 7-bit PictureID
        (b"\x90\x80\x85\x05", True),  # I, 15-bit PictureID (M=1)
        (b"\x90\x40\x07", True),  # L: TL0PICIDX
        (b"\x90\x20\x40", True),  # T: TID octet
        (b"\x90\x10\x1f", True),  # K: KEYIDX in the same octet
        (b"\x90\xf0\x85\x05\x07\x40", True),  # all of them
        (b"\xb0\xf0\x85\x05\x07\x40", True),  # N (non-reference) bit is irrelevant
    ],
)
def test_vp8_descriptor_variants(descriptor: bytes, expect: bool) -> None:
    assert is_vp8_keyframe(descriptor + VP8_KEY_HDR) is expect
    assert is_vp8_keyframe(descriptor + VP8_DELTA_HDR) is False


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x90", b"\x90\x80", b"\x90\x80\x85", b"\x90\xf0\x85\x05\x07\x40", b"\x10"],
)
def test_vp8_truncated_is_not_key(payload: bytes) -> None:
    assert is_vp8_keyframe(payload) is False


def nal(kind: int, body: bytes = b"\x88\x84") -> bytes:
    return bytes([0x60 | kind]) + body


def stap_a(*nals: bytes) -> bytes:
    return b"\x78" + b"".join(struct.pack("!H", len(n)) + n for n in nals)


@pytest.mark.parametrize(
    ("payload", "expect"),
    [
        (nal(5), True),  # IDR slice
        (nal(7), True),  # SPS
        (nal(8), False),  # PPS alone
        (nal(1), False),  # non-IDR slice
        (nal(6), False),  # SEI
        (stap_a(nal(7), nal(8)), True),
        (stap_a(nal(6), nal(5)), True),
        (stap_a(nal(6), nal(1)), False),
        (stap_a(nal(6)) + b"\x00\x09\x65", False),  # second size runs past the end
        (stap_a(nal(6)) + b"\x00\x00\x65", False),  # zero size
        (b"\x78\x00", False),
        (b"\x7c\x85\x00", True),  # FU-A start, IDR
        (b"\x7c\x05\x00", False),  # FU-A middle
        (b"\x7c\x45\x00", False),  # FU-A end
        (b"\x7c\x81\x00", False),  # FU-A start, non-IDR
        (b"\x7c", False),  # FU-A truncated
        (b"\x7d\x85\x00\x00", False),  # FU-B: not used by WebRTC
        (b"", False),
    ],
)
def test_h264_crafted(payload: bytes, expect: bool) -> None:
    assert is_h264_keyframe(payload) is expect


@pytest.mark.parametrize("codec", ["VP8", "vp8", "video/VP8", "Video/Vp8"])
def test_dispatch_spellings(codec: str) -> None:
    assert is_keyframe(codec, VP8_KEY) is True
    assert is_keyframe(codec, VP8_DELTA) is False


def test_dispatch_unknown_codec_and_memoryview() -> None:
    assert is_keyframe("opus", VP8_KEY) is False
    assert is_keyframe("VP9", VP8_KEY) is False
    assert is_keyframe("H264", memoryview(b"\xff" + nal(5))[1:]) is True


DETECTORS: list[Callable[[bytes], bool]] = [is_vp8_keyframe, is_h264_keyframe]


@given(st.binary(max_size=64))
def test_random_payloads_never_raise(payload: bytes) -> None:
    for detect in DETECTORS:
        assert detect(payload) in (True, False)

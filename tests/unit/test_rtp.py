"""sfu/core/rtp.py: header view, extensions, RTX unwrap — checked against aiortc's RtpPacket."""

from __future__ import annotations

from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.core.rtp import (
    URI_ABS_SEND_TIME,
    URI_AUDIO_LEVEL,
    URI_MID,
    RtpHeader,
    abs_send_time,
    build_extensions,
    find_extension,
    parse_into,
    unwrap_rtx,
)


def _xmap() -> HeaderExtensionsMap:
    m = HeaderExtensionsMap()
    m.configure(RTCRtpParameters(headerExtensions=[
        RTCRtpHeaderExtensionParameters(id=1, uri=URI_MID),
        RTCRtpHeaderExtensionParameters(id=3, uri=URI_ABS_SEND_TIME),
        RTCRtpHeaderExtensionParameters(id=10, uri=URI_AUDIO_LEVEL),
    ]))
    return m


def test_parse_matches_aiortc_with_extensions_and_padding() -> None:
    p = RtpPacket(payload_type=111, marker=1, sequence_number=65535, timestamp=0xFFFFFFF0,
                  ssrc=0xDEADBEEF, payload=b"opus-frame")
    p.padding_size = 4
    p.extensions.mid = "0"
    p.extensions.audio_level = (True, 42)
    data = p.serialize(_xmap())
    h = RtpHeader()
    assert parse_into(h, data)
    assert (h.seq, h.ts, h.ssrc, h.payload_type, h.marker) == (65535, 0xFFFFFFF0, 0xDEADBEEF,
                                                                111, True)
    assert data[h.payload_off:h.payload_end] == b"opus-frame"
    off = find_extension(data, h, 10)
    assert off > 0 and data[off] == 0x80 | 42
    assert data[find_extension(data, h, 1)] == ord("0")
    assert find_extension(data, h, 3) == -1


def test_built_extensions_parse_back_in_aiortc() -> None:
    ext = build_extensions(1, b"7", 3, abs_send_time(1000.25), 10, 0x80 | 30)
    data = bytes([0x90, 96, 0, 5, 0, 0, 0, 9, 0, 0, 0, 1]) + ext + b"payload"
    p = RtpPacket.parse(data, _xmap())
    assert p.extensions.mid == "7"
    assert p.extensions.audio_level == (True, 30)
    assert p.extensions.abs_send_time == int((1000.25 + 2208988800) * (1 << 18)) & 0xFFFFFF
    assert p.payload == b"payload"
    assert build_extensions(0, b"", 0, b"", 0, -1) == b""


def test_rtx_unwrap_restores_the_original_packet() -> None:
    original = RtpPacket(payload_type=96, sequence_number=1234, timestamp=90000, ssrc=1,
                         payload=b"vp8-data")
    rtx = RtpPacket(payload_type=97, sequence_number=7, timestamp=90000, ssrc=2,
                    payload=(1234).to_bytes(2, "big") + b"vp8-data").serialize()
    h = RtpHeader()
    assert parse_into(h, rtx)
    back = unwrap_rtx(rtx, h, media_ssrc=1, media_pt=96)
    assert back == original.serialize()


def test_malformed_packets_are_refused() -> None:
    h = RtpHeader()
    assert not parse_into(h, b"")
    assert not parse_into(h, b"\x80\x60\x00")
    assert not parse_into(h, b"\x40" + b"\x00" * 11)  # version 1
    assert not parse_into(h, b"\x8f" + b"\x00" * 11)  # 15 CSRCs announced, none there
    assert not parse_into(h, b"\x90" + b"\x00" * 11 + b"\xbe\xde\x00\x09")  # ext past end
    assert not parse_into(h, b"\xa0" + b"\x00" * 11 + b"\x00")  # zero padding length
    assert not parse_into(h, b"\xa0" + b"\x00" * 11 + b"\x40")  # padding longer than packet


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=64))
def test_parse_never_raises_and_offsets_stay_in_bounds(data: bytes) -> None:
    h = RtpHeader()
    if parse_into(h, data):
        assert 12 <= h.payload_off <= h.payload_end <= len(data)
        for ext_id in range(1, 15):
            off = find_extension(data, h, ext_id)
            assert off == -1 or h.ext_off <= off < h.ext_off + h.ext_len

"""The decoding subscribers' frame accounting: did every packet of a damaged picture arrive
(then the damage is not the transit's)? Real RTP bytes through the counter's own hook."""

from __future__ import annotations

import struct

from bench.peer import RtpCounter, rtx_original_seq

VIDEO, RTX = 96, 97


def rtp(seq: int, ts: int, marker: bool = False, pt: int = VIDEO, payload: bytes = b"\0" * 20,
        ext: bytes = b"") -> bytes:
    b0 = 0x90 if ext else 0x80
    head = struct.pack("!BBHII", b0, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts, 0x1234)
    if ext:
        head += struct.pack("!HH", 0xBEDE, len(ext) // 4) + ext
    return head + payload


def rtx(seq: int, osn: int, ts: int, marker: bool = False) -> bytes:
    return rtp(seq, ts, marker, RTX, struct.pack("!H", osn) + b"\0" * 20, ext=b"\x10\x01\0\0")


async def feed(packets: list[bytes]) -> RtpCounter:
    counter = RtpCounter()
    counter.arrivals, counter.frames = {}, {}
    counter.video_pts, counter.rtx_pts = {VIDEO}, {RTX}
    on_rtp = counter.handler(decode=False)(None)  # type: ignore[arg-type]
    for p in packets:
        await on_rtp(p, 0)
    return counter


def test_rtx_original_seq_skips_csrcs_and_extension() -> None:
    assert rtx_original_seq(rtx(500, 0xBEEF, 1)) == 0xBEEF
    assert rtx_original_seq(rtp(1, 1, payload=b"\x12\x34")) == 0x1234
    assert rtx_original_seq(rtp(1, 1, payload=b"\x12")) is None  # no room for the OSN
    assert rtx_original_seq(b"\x80" * 8) is None


async def test_complete_lost_recovered_and_unknown_frames() -> None:
    c = await feed([
        rtp(10, 1000), rtp(11, 1000), rtp(12, 1000, True),  # first on record: unknown start
        rtp(13, 4000), rtp(14, 4000), rtp(15, 4000, True),  # complete
        rtp(16, 7000), rtp(18, 7000, True),  # 17 lost...
        rtp(20, 10000), rtp(21, 10000, True),  # ...and here the frame's first packet (19)
        rtp(22, 13000), rtp(23, 13000),  # no marker: its last packet never came
    ])
    assert c.frame_complete(1000) is None
    assert c.frame_complete(4000) is True
    assert c.frame_complete(7000) is False
    assert c.frame_complete(10000) is False
    assert c.frame_complete(13000) is False
    assert c.frame_complete(99999) is False  # not one packet of it
    assert c.ssrcs[0x1234].expected - c.ssrcs[0x1234].received == 2  # 17, 19


async def test_a_retransmission_completes_the_frame_across_a_seq_wrap() -> None:
    c = await feed([
        rtp(0xFFFC, 90, True),
        rtp(0xFFFD, 3090), rtp(0xFFFF, 3090), rtp(0, 3090), rtp(1, 3090, True),  # FFFE lost
    ])
    assert c.frame_complete(3090) is False
    on_rtp = c.handler(decode=False)(None)  # type: ignore[arg-type]
    await on_rtp(rtx(700, 0xFFFE, 3090), 0)
    assert c.frame_complete(3090) is True

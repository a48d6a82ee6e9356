"""RTP header view: parse and rewrite headers in place, no per-packet objects (RFC 3550, 8285).

Everything here is pure and called per packet, so it works on plain ints and offsets rather than
building packet objects.
"""

from __future__ import annotations

import struct

HEADER = struct.Struct("!BBHII")  # b0, b1 (M|PT), seq, ts, ssrc
EXT_HEADER = struct.Struct("!HH")  # profile, length in 32-bit words
ONE_BYTE_PROFILE = 0xBEDE
TWO_BYTE_PROFILE_MASK = 0xFFF0
TWO_BYTE_PROFILE = 0x1000

URI_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
URI_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
URI_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"

NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900 to 1970


class RtpHeader:
    """Offsets of one parsed packet. Reused by the caller: `parse_into` fills it."""

    __slots__ = (
        "b0",
        "b1",
        "ext_len",
        "ext_off",
        "ext_profile",
        "payload_end",
        "payload_off",
        "seq",
        "ssrc",
        "ts",
    )

    def __init__(self) -> None:
        self.b0 = self.b1 = self.seq = self.ts = self.ssrc = 0
        self.ext_off = self.ext_len = self.ext_profile = 0
        self.payload_off = self.payload_end = 0

    @property
    def payload_type(self) -> int:
        return self.b1 & 0x7F

    @property
    def marker(self) -> bool:
        return bool(self.b1 & 0x80)


def parse_into(h: RtpHeader, data: bytes) -> bool:
    """Fill `h` from `data`; False when the packet is malformed (it is then dropped)."""
    n = len(data)
    if n < 12:
        return False
    b0, b1, seq, ts, ssrc = HEADER.unpack_from(data)
    if b0 >> 6 != 2:
        return False
    pos = 12 + 4 * (b0 & 0x0F)
    ext_off = ext_len = profile = 0
    if b0 & 0x10:
        if pos + 4 > n:
            return False
        profile, words = EXT_HEADER.unpack_from(data, pos)
        ext_off = pos + 4
        ext_len = words * 4
        pos = ext_off + ext_len
    end = n
    if b0 & 0x20:
        pad = data[-1]
        if pad == 0:
            return False
        end = n - pad
    if pos > end:
        return False
    h.b0, h.b1, h.seq, h.ts, h.ssrc = b0, b1, seq, ts, ssrc
    h.ext_off, h.ext_len, h.ext_profile = ext_off, ext_len, profile
    h.payload_off, h.payload_end = pos, end
    return True


def find_extension(data: bytes, h: RtpHeader, ext_id: int) -> int:
    """Offset of extension `ext_id`'s value, or -1. Handles one- and two-byte forms."""
    if not ext_id or not h.ext_len:
        return -1
    pos, end = h.ext_off, h.ext_off + h.ext_len
    if h.ext_profile == ONE_BYTE_PROFILE:
        while pos < end:
            x = data[pos]
            if x == 0:  # padding
                pos += 1
                continue
            xid = x >> 4
            if xid == 15:  # reserved: stop parsing (RFC 8285 4.2)
                return -1
            if xid == ext_id:
                return pos + 1 if pos + 1 < end else -1
            pos += 2 + (x & 0x0F)
    elif h.ext_profile & TWO_BYTE_PROFILE_MASK == TWO_BYTE_PROFILE:
        while pos + 1 < end:
            xid = data[pos]
            if xid == 0:
                pos += 1
                continue
            if xid == ext_id:
                return pos + 2 if pos + 2 < end else -1
            pos += 2 + data[pos + 1]
    return -1


def abs_send_time(now: float) -> bytes:
    """24-bit 6.18 fixed-point seconds, as the abs-send-time extension carries."""
    v = int((now + NTP_EPOCH_OFFSET) * (1 << 18)) & 0xFFFFFF
    return v.to_bytes(3, "big")


def build_extensions(
    mid_id: int, mid: bytes, abs_id: int, abs_value: bytes, level_id: int, level: int
) -> bytes:
    """One-byte-header extension block (with its 4-byte header) for one outgoing packet.

    Ids of 0 mean "not negotiated with this subscriber" and are left out; level < 0 means the
    publisher sent none.
    """
    els = bytearray()
    if mid_id and mid:
        els.append((mid_id << 4) | (len(mid) - 1))
        els += mid
    if abs_id and abs_value:
        els.append((abs_id << 4) | 2)
        els += abs_value
    if level_id and level >= 0:
        els.append(level_id << 4)
        els.append(level)
    if not els:
        return b""
    els += b"\x00" * (-len(els) % 4)
    return EXT_HEADER.pack(ONE_BYTE_PROFILE, len(els) // 4) + bytes(els)


def unwrap_rtx(data: bytes, h: RtpHeader, media_ssrc: int, media_pt: int) -> bytes | None:
    """Turn an RTX packet (RFC 4588) back into the original: seq from the OSN, original ssrc/pt.

    Extensions are dropped (the forwarding path rebuilds its own). None if malformed.
    """
    if h.payload_end - h.payload_off < 2:
        return None
    osn = (data[h.payload_off] << 8) | data[h.payload_off + 1]
    b0 = 0x80 | (h.b0 & 0x20)
    head = HEADER.pack(b0 & ~0x20 & 0xFF, (h.b1 & 0x80) | media_pt, osn, h.ts, media_ssrc)
    return head + data[h.payload_off + 2 : h.payload_end]

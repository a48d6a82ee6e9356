"""RTCP parse and build: RFC 3550 (SR/RR/SDES/BYE), RFC 4585 (PLI, generic NACK),
RFC 5104 (FIR) and draft-alvestrand-rmcat-remb (REMB).

Pure functions over already-decrypted bytes. `parse_rtcp` raises only `RtcpError`, so a shell can
wrap it in one `except` and drop the datagram. Unknown or unsupported packets (APP, transport-cc,
TMMBR, ...) come back as `OtherRtcp` so a compound packet is never rejected for carrying them.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "NTP_EPOCH_OFFSET",
    "Bye",
    "Fir",
    "Nack",
    "OtherRtcp",
    "Pli",
    "ReceiverReport",
    "Remb",
    "ReportBlock",
    "RtcpError",
    "RtcpItem",
    "Sdes",
    "SdesChunk",
    "SenderReport",
    "build_bye",
    "build_fir",
    "build_nack",
    "build_pli",
    "build_remb",
    "build_rr",
    "build_sdes",
    "build_sr",
    "ntp_from_unix",
    "ntp_middle",
    "parse_rtcp",
]

PT_SR = 200
PT_RR = 201
PT_SDES = 202
PT_BYE = 203
PT_APP = 204
PT_RTPFB = 205
PT_PSFB = 206

FMT_NACK = 1  # RTPFB generic NACK
FMT_TWCC = 15  # RTPFB transport-wide CC: deliberately *not* parsed as NACK
FMT_PLI = 1  # PSFB
FMT_FIR = 4  # PSFB
FMT_AFB = 15  # PSFB application layer feedback (REMB lives here)

SDES_CNAME = 1

NTP_EPOCH_OFFSET = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01

_HDR = struct.Struct("!BBH")
_U32 = struct.Struct("!I")
_U32X2 = struct.Struct("!II")
_SENDER_INFO = struct.Struct("!IQIII")  # ssrc, ntp, rtp_ts, packets, octets
_BLOCK = struct.Struct("!IIIIII")  # ssrc, fraction|lost, highest, jitter, lsr, dlsr
_FCI_NACK = struct.Struct("!HH")
_FCI_FIR = struct.Struct("!IB3x")
_REMB_HEAD = struct.Struct("!4sBBH")

_LOST_MAX = 0x7FFFFF
_LOST_MIN = -0x800000


class RtcpError(ValueError):
    """Malformed RTCP: the remote's fault; drop the datagram."""


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """RFC 3550 §6.4.1 reception report block; `packets_lost` is the signed 24-bit value."""

    ssrc: int
    fraction_lost: int
    packets_lost: int
    highest_seq: int
    jitter: int
    lsr: int
    dlsr: int


@dataclass(frozen=True, slots=True)
class SenderReport:
    ssrc: int
    ntp: int
    rtp_ts: int
    packets: int
    octets: int
    reports: tuple[ReportBlock, ...] = ()


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    ssrc: int
    reports: tuple[ReportBlock, ...] = ()


@dataclass(frozen=True, slots=True)
class SdesChunk:
    ssrc: int
    items: tuple[tuple[int, bytes], ...]  # (item type, value)

    @property
    def cname(self) -> str | None:
        for kind, value in self.items:
            if kind == SDES_CNAME:
                return value.decode("utf-8", "replace")
        return None


@dataclass(frozen=True, slots=True)
class Sdes:
    chunks: tuple[SdesChunk, ...]


@dataclass(frozen=True, slots=True)
class Bye:
    ssrcs: tuple[int, ...]
    reason: bytes = b""


@dataclass(frozen=True, slots=True)
class Pli:
    sender_ssrc: int
    media_ssrc: int


@dataclass(frozen=True, slots=True)
class Fir:
    sender_ssrc: int
    entries: tuple[tuple[int, int], ...]  # (media ssrc, command sequence number)


@dataclass(frozen=True, slots=True)
class Nack:
    sender_ssrc: int
    media_ssrc: int
    lost: tuple[int, ...]  # expanded PID+BLP, in packet order, duplicates removed


@dataclass(frozen=True, slots=True)
class Remb:
    sender_ssrc: int
    bitrate: int  # bits per second
    ssrcs: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class OtherRtcp:
    """Anything not modelled above (APP, transport-cc, TMMBR, XR, ...): skipped, not an error."""

    pt: int
    fmt: int


RtcpItem = SenderReport | ReceiverReport | Sdes | Bye | Pli | Fir | Nack | Remb | OtherRtcp


# ---------------------------------------------------------------------------------------------
# parsing


def parse_rtcp(data: bytes | memoryview) -> list[RtcpItem]:
    """Parse a compound RTCP packet. Raises `RtcpError` (only) on malformed input."""
    if isinstance(data, memoryview):
        # One copy: keeps every slice below a plain bytes (hashable values, simple typing).
        data = data.tobytes()
    return [_parse_one(data, pt, count, start, end) for pt, count, start, end in _walk(data)]


def sender_infos(data: bytes) -> list[tuple[int, ...]]:
    """(SSRC, NTP, RTP time) of each SR: all a publisher's RTCP is read for (SDES unparsed).
    Raises `RtcpError` on a malformed compound or SR; other packets' bodies go unchecked."""
    return [_sender_info(data, count, start, end)[:3]
            for pt, count, start, end in _walk(data) if pt == PT_SR]


def _sender_info(data: bytes, count: int, pos: int, end: int) -> tuple[int, int, int, int, int]:
    if end - pos < 24 + 24 * count:
        raise RtcpError("SR shorter than its sender info and report blocks")
    return _SENDER_INFO.unpack_from(data, pos)  # type: ignore[return-value]


def _walk(data: bytes) -> list[tuple[int, int, int, int]]:
    """(packet type, count field, body start, body end) of each packet of a compound."""
    end_all = len(data)
    if end_all == 0:
        raise RtcpError("empty RTCP packet")
    items: list[tuple[int, int, int, int]] = []
    pos = 0
    while pos < end_all:
        if end_all - pos < 4:
            raise RtcpError("truncated RTCP header")
        b0, pt, length = _HDR.unpack_from(data, pos)
        if b0 >> 6 != 2:
            raise RtcpError("RTCP version is not 2")
        start = pos + 4
        end = start + length * 4
        if end > end_all:
            raise RtcpError("RTCP length runs past the end of the datagram")
        body_end = end
        if b0 & 0x20:
            # The last octet counts the padding, itself included (RFC 3550 §6.4.1).
            if end == start:
                raise RtcpError("RTCP padding bit set on an empty packet")
            pad = data[end - 1]
            if pad == 0 or pad > end - start:
                raise RtcpError("RTCP padding length is invalid")
            body_end = end - pad
        items.append((pt, b0 & 0x1F, start, body_end))
        pos = end
    return items


def _parse_one(data: bytes, pt: int, count: int, pos: int, end: int) -> RtcpItem:
    size = end - pos
    if pt == PT_RTPFB:
        if size < 8:
            raise RtcpError("RTPFB shorter than its two SSRCs")
        if count == FMT_NACK:
            return _parse_nack(data, pos, end)
        return OtherRtcp(pt, count)
    if pt == PT_PSFB:
        if size < 8:
            raise RtcpError("PSFB shorter than its two SSRCs")
        if count == FMT_PLI:
            sender, media = _U32X2.unpack_from(data, pos)
            return Pli(sender, media)
        if count == FMT_FIR:
            return _parse_fir(data, pos, end)
        if count == FMT_AFB and size >= 12 and data[pos + 8 : pos + 12] == b"REMB":
            return _parse_remb(data, pos, end)
        return OtherRtcp(pt, count)
    if pt == PT_SR:
        ssrc, ntp, rtp_ts, packets, octets = _sender_info(data, count, pos, end)
        # Bytes after the blocks are profile-specific extensions (RFC 3550 §6.4.1): ignored.
        blocks = _parse_blocks(data, pos + 24, count)
        return SenderReport(ssrc, ntp, rtp_ts, packets, octets, blocks)
    if pt == PT_RR:
        if size < 4 + 24 * count:
            raise RtcpError("RR shorter than its report blocks")
        ssrc = _U32.unpack_from(data, pos)[0]
        return ReceiverReport(ssrc, _parse_blocks(data, pos + 4, count))
    if pt == PT_SDES:
        return _parse_sdes(data, count, pos, end)
    if pt == PT_BYE:
        return _parse_bye(data, count, pos, end)
    return OtherRtcp(pt, count)


def _parse_blocks(data: bytes, pos: int, count: int) -> tuple[ReportBlock, ...]:
    blocks = []
    for _ in range(count):
        ssrc, fl, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(data, pos)
        lost = fl & 0xFFFFFF
        if lost & 0x800000:
            lost -= 0x1000000
        blocks.append(ReportBlock(ssrc, fl >> 24, lost, highest, jitter, lsr, dlsr))
        pos += 24
    return tuple(blocks)


def _parse_nack(data: bytes, pos: int, end: int) -> Nack:
    if (end - pos) % 4:
        raise RtcpError("NACK FCI is not a whole number of words")
    sender, media = _U32X2.unpack_from(data, pos)
    lost: list[int] = []
    for fci in range(pos + 8, end, 4):
        pid, blp = _FCI_NACK.unpack_from(data, fci)
        lost.append(pid)
        bit = 1
        while blp:
            if blp & 1:
                lost.append((pid + bit) & 0xFFFF)
            blp >>= 1
            bit += 1
    if end - pos > 12:
        # Several FCI entries may overlap; answering one seq twice only wastes bandwidth.
        lost = list(dict.fromkeys(lost))
    return Nack(sender, media, tuple(lost))


def _parse_fir(data: bytes, pos: int, end: int) -> Fir:
    if (end - pos - 8) % 8:
        raise RtcpError("FIR FCI is not a whole number of 8-byte entries")
    sender = _U32.unpack_from(data, pos)[0]
    entries = tuple(_FCI_FIR.unpack_from(data, p) for p in range(pos + 8, end, 8))
    return Fir(sender, entries)


def _parse_remb(data: bytes, pos: int, end: int) -> Remb:
    if end - pos < 16:
        raise RtcpError("REMB FCI truncated")
    sender = _U32.unpack_from(data, pos)[0]
    _, num, b1, low = _REMB_HEAD.unpack_from(data, pos + 8)
    if end - pos < 16 + 4 * num:
        raise RtcpError("REMB SSRC list truncated")
    bitrate = (((b1 & 0x03) << 16) | low) << (b1 >> 2)
    ssrcs = struct.unpack_from(f"!{num}I", data, pos + 16)
    return Remb(sender, bitrate, ssrcs)


def _parse_sdes(data: bytes, count: int, pos: int, end: int) -> Sdes:
    chunks = []
    for _ in range(count):
        if end - pos < 4:
            raise RtcpError("SDES chunk truncated")
        chunk_start = pos
        ssrc = _U32.unpack_from(data, pos)[0]
        pos += 4
        items = []
        while True:
            if pos >= end:
                raise RtcpError("SDES chunk has no terminating null item")
            kind = data[pos]
            if kind == 0:
                pos += 1
                break
            if pos + 2 > end or pos + 2 + data[pos + 1] > end:
                raise RtcpError("SDES item truncated")
            n = data[pos + 1]
            items.append((kind, data[pos + 2 : pos + 2 + n]))
            pos += 2 + n
        # Null octets pad each chunk to a 32-bit boundary. Missing ones at the very end are
        # harmless: no reason to drop the compound packet (and the NACK or PLI it carries).
        pos = min(end, chunk_start + ((pos - chunk_start + 3) & ~3))
        chunks.append(SdesChunk(ssrc, tuple(items)))
    return Sdes(tuple(chunks))


def _parse_bye(data: bytes, count: int, pos: int, end: int) -> Bye:
    if end - pos < 4 * count:
        raise RtcpError("BYE shorter than its SSRC list")
    ssrcs = struct.unpack_from(f"!{count}I", data, pos)
    pos += 4 * count
    reason = b""
    if pos < end:
        n = data[pos]
        if pos + 1 + n > end:
            raise RtcpError("BYE reason truncated")
        reason = data[pos + 1 : pos + 1 + n]
    return Bye(ssrcs, reason)


# ---------------------------------------------------------------------------------------------
# building


def _packet(pt: int, count: int, body: bytes) -> bytes:
    if count > 31:
        raise ValueError("at most 31 items fit in one RTCP packet")
    assert len(body) % 4 == 0, "builders only produce whole words"
    return _HDR.pack(0x80 | count, pt, len(body) // 4) + body


def _pack_blocks(reports: Iterable[ReportBlock]) -> tuple[int, bytes]:
    parts = []
    for r in reports:
        lost = max(_LOST_MIN, min(r.packets_lost, _LOST_MAX)) & 0xFFFFFF
        parts.append(
            _BLOCK.pack(
                r.ssrc,
                ((r.fraction_lost & 0xFF) << 24) | lost,
                r.highest_seq & 0xFFFFFFFF,
                r.jitter & 0xFFFFFFFF,
                r.lsr & 0xFFFFFFFF,
                r.dlsr & 0xFFFFFFFF,
            )
        )
    return len(parts), b"".join(parts)


def build_pli(sender_ssrc: int, media_ssrc: int) -> bytes:
    return _packet(PT_PSFB, FMT_PLI, _U32X2.pack(sender_ssrc, media_ssrc))


def build_fir(sender_ssrc: int, media_ssrc: int, seqnr: int) -> bytes:
    # RFC 5104 §4.3.1.2: the header's media SSRC is 0; the target SSRC goes in the FCI.
    body = _U32X2.pack(sender_ssrc, 0) + _FCI_FIR.pack(media_ssrc, seqnr & 0xFF)
    return _packet(PT_PSFB, FMT_FIR, body)


def _circular_order(seqs: Iterable[int]) -> list[int]:
    """Sort 16-bit seqs so that the largest circular gap falls between the last and the first:
    [65534, 65535, 0, 1] rather than [0, 1, 65534, 65535]."""
    s = sorted({q & 0xFFFF for q in seqs})
    if len(s) < 2:
        return s
    best_gap = s[0] + 0x10000 - s[-1]
    start = 0
    for i in range(1, len(s)):
        gap = s[i] - s[i - 1]
        if gap > best_gap:
            best_gap = gap
            start = i
    return s[start:] + s[:start]


def build_nack(sender_ssrc: int, media_ssrc: int, lost: Iterable[int]) -> bytes:
    """Generic NACK (RFC 4585 §6.2.1) with as many PID+BLP entries as `lost` needs."""
    seqs = _circular_order(lost)
    if not seqs:
        raise ValueError("a NACK needs at least one lost sequence number")
    fci = []
    pid = seqs[0]
    blp = 0
    for q in seqs[1:]:
        d = (q - pid) & 0xFFFF
        if d <= 16:
            blp |= 1 << (d - 1)
        else:
            fci.append(_FCI_NACK.pack(pid, blp))
            pid = q
            blp = 0
    fci.append(_FCI_NACK.pack(pid, blp))
    return _packet(PT_RTPFB, FMT_NACK, _U32X2.pack(sender_ssrc, media_ssrc) + b"".join(fci))


def build_sr(
    ssrc: int,
    ntp: int,
    rtp_ts: int,
    packets: int,
    octets: int,
    reports: Iterable[ReportBlock] = (),
) -> bytes:
    count, blocks = _pack_blocks(reports)
    info = _SENDER_INFO.pack(
        ssrc,
        ntp & 0xFFFFFFFFFFFFFFFF,
        rtp_ts & 0xFFFFFFFF,
        packets & 0xFFFFFFFF,
        octets & 0xFFFFFFFF,
    )
    return _packet(PT_SR, count, info + blocks)


def build_rr(ssrc: int, reports: Iterable[ReportBlock] = ()) -> bytes:
    count, blocks = _pack_blocks(reports)
    return _packet(PT_RR, count, _U32.pack(ssrc) + blocks)


def build_remb(sender_ssrc: int, bitrate: int, ssrcs: Iterable[int]) -> bytes:
    """REMB; the bitrate is rounded *down* to what 18-bit mantissa + 6-bit exponent can carry,
    so the sender never reads a higher limit than the one meant."""
    ssrc_list = tuple(ssrcs)
    if bitrate < 0:
        raise ValueError("bitrate must be >= 0")
    if len(ssrc_list) > 255:
        raise ValueError("at most 255 SSRCs in one REMB")
    exp = max(0, bitrate.bit_length() - 18)
    if exp > 63:
        raise ValueError("bitrate too large for REMB")
    mantissa = bitrate >> exp
    body = (
        _U32X2.pack(sender_ssrc, 0)
        + _REMB_HEAD.pack(b"REMB", len(ssrc_list), (exp << 2) | (mantissa >> 16), mantissa & 0xFFFF)
        + b"".join(_U32.pack(s) for s in ssrc_list)
    )
    return _packet(PT_PSFB, FMT_AFB, body)


def build_sdes(ssrc: int, cname: str) -> bytes:
    value = cname.encode("utf-8")
    if len(value) > 255:
        raise ValueError("CNAME longer than 255 bytes")
    chunk = _U32.pack(ssrc) + bytes((SDES_CNAME, len(value))) + value + b"\x00"
    chunk += b"\x00" * (-len(chunk) % 4)
    return _packet(PT_SDES, 1, chunk)


def build_bye(ssrcs: Iterable[int]) -> bytes:
    ssrc_list = tuple(ssrcs)
    return _packet(PT_BYE, len(ssrc_list), b"".join(_U32.pack(s) for s in ssrc_list))


# ---------------------------------------------------------------------------------------------
# NTP time


def ntp_from_unix(t: float) -> int:
    """64-bit NTP timestamp (RFC 5905) for a Unix time in seconds; wraps like NTP era 0→1."""
    seconds = int(t // 1)
    # Split before scaling: t * 2**32 as one float would lose ~0.5 µs of precision.
    frac = int((t - seconds) * 0x100000000)
    return (((seconds + NTP_EPOCH_OFFSET) << 32) + frac) & 0xFFFFFFFFFFFFFFFF


def ntp_middle(ntp: int) -> int:
    """The middle 32 bits of a 64-bit NTP timestamp: the LSR field of a report block."""
    return (ntp >> 16) & 0xFFFFFFFF

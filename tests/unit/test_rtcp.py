"""RTCP parse/build: exact bytes, round trips, malformed input, and aiortc as the contract."""

from __future__ import annotations

import datetime
import struct

import pytest
from aiortc import clock as aio_clock
from aiortc import rtp as aio
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.core.rtcp import (
    NTP_EPOCH_OFFSET,
    Bye,
    Fir,
    Nack,
    OtherRtcp,
    Pli,
    ReceiverReport,
    Remb,
    ReportBlock,
    RtcpError,
    Sdes,
    SdesChunk,
    SenderReport,
    build_bye,
    build_fir,
    build_nack,
    build_pli,
    build_remb,
    build_rr,
    build_sdes,
    build_sr,
    ntp_from_unix,
    ntp_middle,
    parse_rtcp,
    sender_infos,
)

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, 0xFFFFFFFFFFFFFFFF)
lost24 = st.integers(-0x800000, 0x7FFFFF)
blocks = st.builds(ReportBlock, u32, u8, lost24, u32, u32, u32, u32)


def one(data: bytes) -> object:
    items = parse_rtcp(data)
    assert len(items) == 1
    return items[0]


# --- exact bytes ------------------------------------------------------------------------------


def test_pli_bytes() -> None:
    assert build_pli(0x01020304, 0x0A0B0C0D).hex() == "81ce0002" "01020304" "0a0b0c0d"


def test_fir_bytes_put_target_in_fci_and_zero_media_ssrc() -> None:
    data = build_fir(1, 0xDEADBEEF, 0x107)
    assert data.hex() == "84ce0004" "00000001" "00000000" "deadbeef" "07000000"
    assert one(data) == Fir(1, ((0xDEADBEEF, 7),))


def test_nack_bytes_single_entry() -> None:
    data = build_nack(1, 2, [100, 101, 116])
    # PID 100, BLP bit 0 (101) and bit 15 (116)
    assert data.hex() == "81cd0003" "00000001" "00000002" "0064" "8001"


def test_nack_packs_across_wraparound_into_one_entry() -> None:
    data = build_nack(1, 2, [1, 0, 65535, 65534])
    assert data[12:16] == struct.pack("!HH", 65534, 0b111)
    assert len(data) == 16
    assert one(data) == Nack(1, 2, (65534, 65535, 0, 1))


def test_nack_splits_into_entries() -> None:
    lost = [10, 26, 27, 60, 61, 62]  # 10..26 fits one entry; 27 starts a new one; 60 another
    data = build_nack(7, 8, lost)
    entries = [struct.unpack_from("!HH", data, p) for p in range(12, len(data), 4)]
    assert entries == [(10, 1 << 15), (27, 0), (60, 0b11)]
    assert one(data) == Nack(7, 8, tuple(lost))


def test_nack_dedupes_and_rejects_empty() -> None:
    assert one(build_nack(1, 2, [5, 5, 5 + 65536])) == Nack(1, 2, (5,))
    with pytest.raises(ValueError):
        build_nack(1, 2, [])


def test_parse_nack_removes_overlapping_entries() -> None:
    body = struct.pack("!IIHHHH", 1, 2, 10, 0b1, 11, 0b1)  # 10,11 and 11,12
    assert one(struct.pack("!BBH", 0x81, 205, 4) + body) == Nack(1, 2, (10, 11, 12))


def test_transport_cc_is_not_a_nack() -> None:
    # A real-looking TWCC feedback: base seq 5, status count 2, ref time, fb count, one chunk.
    body = struct.pack("!IIHHIHH", 1, 2, 5, 2, 0x000100, 0x2002, 0x0101)
    data = struct.pack("!BBH", 0x80 | 15, 205, len(body) // 4) + body
    assert parse_rtcp(data) == [OtherRtcp(205, 15)]
    # ...which aiortc mistakes for a generic NACK: the reason we parse RTCP ourselves.
    assert isinstance(aio.RtcpPacket.parse(data)[0], aio.RtcpRtpfbPacket)


def test_unknown_types_are_other() -> None:
    app = struct.pack("!BBH", 0x81, 204, 2) + b"\0\0\0\1name"
    psfb_afb = struct.pack("!BBH", 0x8F, 206, 3) + struct.pack("!II", 1, 2) + b"XXXX"
    afb_short = struct.pack("!BBH", 0x8F, 206, 2) + struct.pack("!II", 1, 2)
    xr = struct.pack("!BBH", 0x80, 207, 1) + b"\0\0\0\1"
    tmmbr = struct.pack("!BBH", 0x83, 205, 2) + struct.pack("!II", 1, 2)
    assert parse_rtcp(app + psfb_afb + afb_short + xr + tmmbr) == [
        OtherRtcp(204, 1),
        OtherRtcp(206, 15),
        OtherRtcp(206, 15),
        OtherRtcp(207, 0),
        OtherRtcp(205, 3),
    ]


def test_compound_in_order() -> None:
    rb = ReportBlock(9, 12, -3, 70000, 55, 1234, 5678)
    data = (
        build_sr(1, 0x1122334455667788, 9000, 10, 1000, [rb])
        + build_sdes(1, "alice@hoinghi")
        + build_remb(1, 300_000, [9])
        + build_pli(1, 9)
        + build_bye([1])
    )
    items = parse_rtcp(data)
    assert items == [
        SenderReport(1, 0x1122334455667788, 9000, 10, 1000, (rb,)),
        items[1],
        Remb(1, 300_000, (9,)),
        Pli(1, 9),
        Bye((1,)),
    ]
    assert isinstance(items[1], Sdes)
    assert items[1].chunks[0].ssrc == 1
    assert items[1].chunks[0].cname == "alice@hoinghi"


def test_memoryview_input() -> None:
    data = bytearray(b"\xff" * 3 + build_rr(5, []))
    assert parse_rtcp(memoryview(data)[3:]) == [ReceiverReport(5, ())]


def test_sr_profile_extension_is_ignored() -> None:
    data = bytearray(build_sr(1, 2, 3, 4, 5) + b"EXT!")
    data[3] += 1
    assert one(bytes(data)) == SenderReport(1, 2, 3, 4, 5, ())


def test_padding() -> None:
    body = struct.pack("!II", 1, 2) + b"\0\0\0\x04"
    assert parse_rtcp(struct.pack("!BBH", 0xA1, 206, 3) + body) == [Pli(1, 2)]


def test_bye_reason_and_sdes_multi_chunk() -> None:
    bye = struct.pack("!BBH", 0x82, 203, 4) + struct.pack("!II", 1, 2) + b"\x03bye\0\0\0\0"
    assert one(bye) == Bye((1, 2), b"bye")
    chunks = (
        struct.pack("!I", 1) + b"\x01\x01a\x00"  # 4 + 4: exactly aligned after one null
        + struct.pack("!I", 2) + b"\x01\x02bb\x02\x01n\x00"  # 4 + 8
    )  # fmt: skip
    sdes = one(struct.pack("!BBH", 0x82, 202, len(chunks) // 4) + chunks)
    assert isinstance(sdes, Sdes)
    assert [(c.ssrc, c.items) for c in sdes.chunks] == [
        (1, ((1, b"a"),)),
        (2, ((1, b"bb"), (2, b"n"))),
    ]
    assert sdes.chunks[1].cname == "bb"


def test_sdes_without_cname_and_with_short_final_padding() -> None:
    # A chunk with only a NAME item, then a word of RTCP padding.
    body = struct.pack("!I", 9) + b"\x02\x01n\x00" + b"\0\0\0\x04"
    sdes = one(struct.pack("!BBH", 0xA1, 202, 3) + body)
    assert isinstance(sdes, Sdes)
    assert [(c.ssrc, c.items, c.cname) for c in sdes.chunks] == [(9, ((2, b"n"),), None)]
    # The terminator, then 3 bytes of RTCP padding where the chunk's own null padding belongs:
    # harmless, accepted.
    body = struct.pack("!I", 9) + b"\x00\x00\x00\x03"
    assert one(struct.pack("!BBH", 0xA1, 202, 2) + body) == Sdes((SdesChunk(9, ()),))


# --- malformed input --------------------------------------------------------------------------

MALFORMED = {
    "empty": b"",
    "short header": b"\x80\xc9\x00",
    "version 1": b"\x40\xc9\x00\x01\0\0\0\1",
    "length past end": b"\x80\xc9\x00\x02\0\0\0\1",
    "trailing garbage": build_rr(1) + b"\x80",
    "pad zero": b"\xa0\xc9\x00\x01\0\0\0\0",
    "pad too long": b"\xa0\xc9\x00\x01\0\0\0\x09",
    "pad on empty": b"\xa0\xc9\x00\x00",
    "rr count too big": b"\x81\xc9\x00\x01\0\0\0\1",
    "sr too short": b"\x80\xc8\x00\x01\0\0\0\1",
    "sr blocks missing": b"\x81\xc8\x00\x06" + b"\0" * 24,
    "pli short": b"\x81\xce\x00\x01\0\0\0\1",
    "nack short": b"\x81\xcd\x00\x01\0\0\0\1",
    "nack unaligned": b"\xa1\xcd\x00\x03" + b"\0" * 8 + b"\0\0\0\x02",
    "fir unaligned": b"\x84\xce\x00\x03" + b"\0" * 12,
    "remb truncated": b"\x8f\xce\x00\x03" + b"\0" * 8 + b"REMB",
    "remb ssrcs truncated": b"\x8f\xce\x00\x04" + b"\0" * 8 + b"REMB\x02\0\0\0",
    "sdes no chunk": b"\x81\xca\x00\x00",
    "sdes no terminator": b"\x81\xca\x00\x02\0\0\0\1\x01\x02ab",
    "sdes item past end": b"\x81\xca\x00\x02\0\0\0\1\x01\x09ab",
    "bye short": b"\x82\xcb\x00\x01\0\0\0\1",
    "bye reason past end": b"\x81\xcb\x00\x02\0\0\0\1\x09abc",
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_raises_rtcp_error(data: bytes) -> None:
    with pytest.raises(RtcpError):
        parse_rtcp(data)


# Errors in the compound's framing or in an SR: what `sender_infos` checks too.
FRAMING = ("version 1", "length past end", "trailing garbage", "pad zero", "pad too long",
           "pad on empty", "sr too short", "sr blocks missing")


@pytest.mark.parametrize("name", FRAMING)
def test_sender_infos_refuse_what_the_full_parse_refuses(name: str) -> None:
    with pytest.raises(RtcpError):
        sender_infos(MALFORMED[name])


@given(st.lists(st.tuples(u32, u64, u32, st.lists(blocks, max_size=3)), max_size=4),
       st.booleans())
def test_sender_infos_are_the_full_parse_of_the_srs(srs: list, sdes: bool) -> None:
    data = b"".join(build_sr(ssrc, ntp, ts, 7, 8, rbs) + (build_sdes(ssrc, "c") if sdes else b"")
                    for ssrc, ntp, ts, rbs in srs) + build_pli(1, 2)
    full = [(i.ssrc, i.ntp, i.rtp_ts) for i in parse_rtcp(data) if isinstance(i, SenderReport)]
    assert sender_infos(data) == full == [(ssrc, ntp, ts) for ssrc, ntp, ts, _ in srs]


def test_rtcp_error_is_value_error() -> None:
    assert issubclass(RtcpError, ValueError)


def test_builders_reject_what_cannot_be_encoded() -> None:
    with pytest.raises(ValueError):
        build_bye(range(32))
    with pytest.raises(ValueError):
        build_rr(1, [ReportBlock(1, 0, 0, 0, 0, 0, 0)] * 32)
    with pytest.raises(ValueError):
        build_remb(1, -1, [])
    with pytest.raises(ValueError):
        build_remb(1, 1 << 90, [])
    with pytest.raises(ValueError):
        build_remb(1, 1000, range(256))
    with pytest.raises(ValueError):
        build_sdes(1, "x" * 256)


# --- round trips ------------------------------------------------------------------------------


@given(u32, u64, u32, u32, u32, st.lists(blocks, max_size=31))
def test_sr_round_trip(ssrc: int, ntp: int, ts: int, p: int, o: int, rbs: list) -> None:
    assert one(build_sr(ssrc, ntp, ts, p, o, rbs)) == SenderReport(ssrc, ntp, ts, p, o, tuple(rbs))


@given(u32, st.lists(blocks, max_size=31))
def test_rr_round_trip(ssrc: int, rbs: list[ReportBlock]) -> None:
    assert one(build_rr(ssrc, rbs)) == ReceiverReport(ssrc, tuple(rbs))


def test_report_block_loss_is_clamped_to_24_bits() -> None:
    rr = one(build_rr(1, [ReportBlock(2, 0, 10**9, 0, 0, 0, 0)]))
    assert isinstance(rr, ReceiverReport)
    assert rr.reports[0].packets_lost == 0x7FFFFF
    rr = one(build_rr(1, [ReportBlock(2, 0, -(10**9), 0, 0, 0, 0)]))
    assert isinstance(rr, ReceiverReport)
    assert rr.reports[0].packets_lost == -0x800000


@given(u32, u32)
def test_pli_round_trip(a: int, b: int) -> None:
    assert one(build_pli(a, b)) == Pli(a, b)


@given(u32, u32, u8)
def test_fir_round_trip(a: int, b: int, n: int) -> None:
    assert one(build_fir(a, b, n)) == Fir(a, ((b, n),))


@given(u32, st.integers(0, (1 << 18) - 1), st.lists(u32, max_size=255))
def test_remb_round_trip_exact(sender: int, bitrate: int, ssrcs: list[int]) -> None:
    assert one(build_remb(sender, bitrate, ssrcs)) == Remb(sender, bitrate, tuple(ssrcs))


@given(st.integers(0, ((1 << 18) - 1) << 63))
def test_remb_rounds_down_within_18_bits(bitrate: int) -> None:
    got = one(build_remb(1, bitrate, []))
    assert isinstance(got, Remb)
    assert got.bitrate <= bitrate
    assert bitrate - got.bitrate < max(1, bitrate >> 17)


@given(u32, st.text(max_size=60))
def test_sdes_round_trip(ssrc: int, cname: str) -> None:
    sdes = one(build_sdes(ssrc, cname))
    assert isinstance(sdes, Sdes)
    assert [(c.ssrc, c.cname) for c in sdes.chunks] == [(ssrc, cname)]


@given(st.lists(u32, max_size=31))
def test_bye_round_trip(ssrcs: list[int]) -> None:
    assert one(build_bye(ssrcs)) == Bye(tuple(ssrcs))


@given(u16, st.lists(st.integers(0, 0x7FFF), min_size=1, max_size=300))
def test_nack_round_trip_any_window(base: int, offsets: list[int]) -> None:
    """Any set of seqs spanning less than half the space comes back complete and in
    wraparound order, starting at the oldest."""
    lost = [(base + o) & 0xFFFF for o in offsets]
    got = one(build_nack(1, 2, reversed(lost)))
    assert isinstance(got, Nack)
    expect = [(base + o) & 0xFFFF for o in sorted(set(offsets))]
    assert list(got.lost) == expect


# --- aiortc as the contract -------------------------------------------------------------------


def aio_block(r: ReportBlock) -> aio.RtcpReceiverInfo:
    return aio.RtcpReceiverInfo(
        ssrc=r.ssrc,
        fraction_lost=r.fraction_lost,
        packets_lost=r.packets_lost,
        highest_sequence=r.highest_seq,
        jitter=r.jitter,
        lsr=r.lsr,
        dlsr=r.dlsr,
    )


@given(u32, u64, u32, u32, u32, st.lists(blocks, max_size=31))
@settings(max_examples=50)
def test_sr_matches_aiortc(ssrc: int, ntp: int, ts: int, p: int, o: int, rbs: list) -> None:
    ours = build_sr(ssrc, ntp, ts, p, o, rbs)
    theirs = bytes(
        aio.RtcpSrPacket(
            ssrc=ssrc,
            sender_info=aio.RtcpSenderInfo(ntp, ts, p, o),
            reports=[aio_block(r) for r in rbs],
        )
    )
    assert ours == theirs
    [sr] = aio.RtcpPacket.parse(ours)
    assert isinstance(sr, aio.RtcpSrPacket)
    assert (sr.ssrc, sr.sender_info.ntp_timestamp, sr.sender_info.rtp_timestamp) == (ssrc, ntp, ts)
    assert sr.reports == [aio_block(r) for r in rbs]


@given(u32, st.lists(blocks, max_size=31))
@settings(max_examples=50)
def test_rr_matches_aiortc(ssrc: int, rbs: list[ReportBlock]) -> None:
    theirs = bytes(aio.RtcpRrPacket(ssrc=ssrc, reports=[aio_block(r) for r in rbs]))
    assert build_rr(ssrc, rbs) == theirs
    assert one(theirs) == ReceiverReport(ssrc, tuple(rbs))


@given(u32, u32)
@settings(max_examples=30)
def test_pli_matches_aiortc(a: int, b: int) -> None:
    theirs = bytes(aio.RtcpPsfbPacket(fmt=1, ssrc=a, media_ssrc=b))
    assert build_pli(a, b) == theirs
    [pkt] = aio.RtcpPacket.parse(build_pli(a, b))
    assert (pkt.fmt, pkt.ssrc, pkt.media_ssrc, pkt.fci) == (1, a, b, b"")


@given(u32, u32, u8)
@settings(max_examples=30)
def test_fir_matches_aiortc(a: int, b: int, n: int) -> None:
    theirs = bytes(aio.RtcpPsfbPacket(fmt=4, ssrc=a, media_ssrc=0, fci=struct.pack("!IB3x", b, n)))
    assert one(theirs) == Fir(a, ((b, n),))
    [pkt] = aio.RtcpPacket.parse(build_fir(a, b, n))
    assert (pkt.fmt, pkt.ssrc, pkt.media_ssrc) == (4, a, 0)
    assert struct.unpack("!IB3x", pkt.fci) == (b, n)


@given(u32, st.integers(0, 10**10), st.lists(u32, max_size=20))
@settings(max_examples=50)
def test_remb_matches_aiortc(sender: int, bitrate: int, ssrcs: list[int]) -> None:
    theirs = bytes(
        aio.RtcpPsfbPacket(
            fmt=15, ssrc=sender, media_ssrc=0, fci=aio.pack_remb_fci(bitrate, ssrcs)
        )
    )
    ours = build_remb(sender, bitrate, ssrcs)
    assert ours == theirs
    [pkt] = aio.RtcpPacket.parse(ours)
    got = one(theirs)
    assert isinstance(got, Remb)
    assert aio.unpack_remb_fci(pkt.fci) == (got.bitrate, ssrcs)


@given(u32, u32, st.sets(u16, min_size=1, max_size=200))
@settings(max_examples=50)
def test_nack_matches_aiortc(a: int, b: int, lost: set[int]) -> None:
    # aiortc serializes a sorted, non-wrapping list correctly: parse what it writes.
    theirs = bytes(aio.RtcpRtpfbPacket(fmt=1, ssrc=a, media_ssrc=b, lost=sorted(lost)))
    got = one(theirs)
    assert isinstance(got, Nack)
    assert (got.sender_ssrc, got.media_ssrc, set(got.lost)) == (a, b, lost)
    # aiortc reads ours (it forgets to wrap PID + n at 65535; the mask undoes that).
    [pkt] = aio.RtcpPacket.parse(build_nack(a, b, lost))
    assert (pkt.fmt, pkt.ssrc, pkt.media_ssrc) == (1, a, b)
    assert {q & 0xFFFF for q in pkt.lost} == lost


@given(u32, st.text(max_size=60))
@settings(max_examples=30)
def test_sdes_matches_aiortc(ssrc: int, cname: str) -> None:
    value = cname.encode()
    [pkt] = aio.RtcpPacket.parse(build_sdes(ssrc, cname))
    assert [(c.ssrc, c.items) for c in pkt.chunks] == [(ssrc, [(1, value)])]
    theirs = bytes(aio.RtcpSdesPacket(chunks=[aio.RtcpSourceInfo(ssrc=ssrc, items=[(1, value)])]))
    sdes = one(theirs)
    assert isinstance(sdes, Sdes)
    assert [(c.ssrc, c.cname) for c in sdes.chunks] == [(ssrc, cname)]


@given(st.lists(u32, max_size=31))
@settings(max_examples=30)
def test_bye_matches_aiortc(ssrcs: list[int]) -> None:
    theirs = bytes(aio.RtcpByePacket(sources=ssrcs))
    assert build_bye(ssrcs) == theirs
    assert one(theirs) == Bye(tuple(ssrcs))


# --- NTP --------------------------------------------------------------------------------------


ERA_1_UNIX = (1 << 32) - NTP_EPOCH_OFFSET  # 2036-02-07: the 32-bit NTP seconds wrap


def test_ntp_wraps_into_era_1() -> None:
    assert ntp_from_unix(ERA_1_UNIX - 0.5) == 0xFFFFFFFF80000000
    assert ntp_from_unix(ERA_1_UNIX + 2.25) == (2 << 32) | 0x40000000


def test_ntp_known_values() -> None:
    assert ntp_from_unix(0.0) == NTP_EPOCH_OFFSET << 32
    assert ntp_from_unix(1.5) == ((NTP_EPOCH_OFFSET + 1) << 32) | 0x80000000
    assert ntp_middle(0x1122334455667788) == 0x33445566


@given(st.integers(0, ERA_1_UNIX * 10**6 - 1))  # aiortc does not wrap into NTP era 1
def test_ntp_matches_aiortc_to_the_microsecond(us: int) -> None:
    t = us / 1e6
    dt = datetime.datetime.fromtimestamp(0, datetime.UTC) + datetime.timedelta(microseconds=us)
    # Same instant; a float Unix time below 2**31 s is off by at most half an ulp (2**-23 s,
    # 512 NTP units), plus truncation on each side.
    assert abs(ntp_from_unix(t) - aio_clock.datetime_to_ntp(dt)) <= 514

"""The C read (sfu/fastpath/ingress.c): its RTCP classifier against sfu/core/rtcp.py's parser,
and whole reads of real SRTP/SRTCP (protected by pylibsrtp's libsrtp) from a loopback socket.

The classifier may send anything to Python, but what it keeps for itself must be exactly what
`parse_rtcp` accepts and the SFU only reads reports from: otherwise malformed RTCP would go
uncounted, or a NACK or PLI would go unanswered.
"""

from __future__ import annotations

import os
import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pylibsrtp import Policy, Session

from sfu.core.rtcp import (
    Bye,
    OtherRtcp,
    ReceiverReport,
    Remb,
    ReportBlock,
    RtcpError,
    Sdes,
    SenderReport,
    build_nack,
    build_pli,
    build_remb,
    build_rr,
    build_sdes,
    build_sr,
    parse_rtcp,
)
from sfu.fastpath import ingress as fast
from tests.fuzz.test_rtcp_fuzz import FUZZ, SEEDS

pytestmark = pytest.mark.skipif(not fast.NATIVE, reason="C helper not built")

B1 = ReportBlock(0x11, 3, -2, 70_000, 12, 0xAABBCCDD, 0x10000)
B2 = ReportBlock(0x22, 255, 5, 1, 0xFFFFFFFF, 0, 7)
RR = build_rr(0x5151, [B1, B2])
SDES = build_sdes(0x5151, "commune-0001@hoinghi")
REMB = build_remb(0x5151, 1_500_000, [0x11, 0x22])
NTP = 0xE1A2B3C4D5E6F708
SR = build_sr(0x5151, NTP, 9000, 10, 1000)


def blocks_of(*blocks: ReportBlock) -> list[tuple[int, int, int, int, int]]:
    return [(b.ssrc, b.fraction_lost, b.jitter, b.lsr, b.dlsr) for b in blocks]


def test_reports_and_what_the_sfu_ignores_stay_in_c() -> None:
    assert fast.scan_rtcp(RR) == ([], blocks_of(B1, B2))
    assert fast.scan_rtcp(RR + SDES + REMB) == ([], blocks_of(B1, B2))  # what browsers send
    assert fast.scan_rtcp(SDES) == ([], [])
    padded = bytes([RR[0] | 0x20]) + RR[1:3] + bytes([RR[3] + 1]) + RR[4:] + b"\0\0\0\x04"
    assert parse_rtcp(padded) == parse_rtcp(RR)
    assert fast.scan_rtcp(padded) == ([], blocks_of(B1, B2))
    # A publisher's SR (its clock, for lip sync) with SDES, and one with report blocks.
    assert fast.scan_rtcp(SR + SDES) == ([(0x5151, NTP, 9000)], [])
    assert fast.scan_rtcp(build_sr(7, NTP, 1, 2, 3, [B2]) + RR) == (
        [(7, NTP, 1)], blocks_of(B2, B1, B2))


@pytest.mark.parametrize("compound", [
    RR + build_nack(1, 0x11, [5, 6]),  # to answer from the ring
    build_pli(1, 0x11) + RR,  # to forward as a keyframe request
    RR[:-4],  # truncated: parse_rtcp raises, the caller counts it
    b"",
    bytes([0x40]) + RR[1:],  # version 1
    SR[:-4] + bytes([SR[3] - 1]),  # an SR shorter than its sender info
])
def test_anything_to_answer_or_malformed_goes_to_python(compound: bytes) -> None:
    assert fast.scan_rtcp(compound) is None


@FUZZ
@given(st.one_of(
    st.binary(max_size=200),
    st.tuples(st.sampled_from([*SEEDS, RR + SDES + REMB, SR + SDES]), st.integers(0, 400),
              st.integers(0, 255)).map(lambda t: _mutate(*t)),
))
def test_what_c_keeps_is_what_parse_rtcp_accepts(data: bytes) -> None:
    kept = fast.scan_rtcp(data)
    if kept is None:
        return  # Python's to parse (or to count as malformed)
    try:
        items = parse_rtcp(data)
    except RtcpError:
        pytest.fail(f"C kept a compound that parse_rtcp rejects: {data.hex()}")
    assert all(isinstance(i, (SenderReport, ReceiverReport, Sdes, Bye, Remb, OtherRtcp))
               for i in items)
    assert not any(isinstance(i, OtherRtcp) and i.pt in (200, 205, 206) for i in items)
    reports = [i for i in items if isinstance(i, (SenderReport, ReceiverReport))]
    assert kept == ([(i.ssrc, i.ntp, i.rtp_ts) for i in reports if isinstance(i, SenderReport)],
                    blocks_of(*(b for i in reports for b in i.reports)))


def _mutate(seed: bytes, at: int, value: int) -> bytes:
    if not seed:
        return bytes([value])
    at %= len(seed) + 1
    return seed[:at] + bytes([value]) + seed[at + 1 :]


# ------------------------------------------------------------------------- whole reads

KEY = bytes(range(30))  # AES_CM_128_HMAC_SHA1_80: 16 key + 14 salt


@pytest.fixture
def pair():
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.bind(("127.0.0.1", 0))
    yield rx, tx
    rx.close()
    tx.close()


def sessions() -> tuple[Session, Session]:
    return (Session(Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_OUTBOUND)),
            Session(Policy(key=KEY, ssrc_type=Policy.SSRC_ANY_INBOUND)))


def rtp(seq: int, payload: bytes = b"\x90" * 200) -> bytes:
    return struct.pack("!BBHII", 0x80, 96, seq, 9000 * seq, 0xABCD) + payload


def test_a_read_unprotects_in_order_and_reduces_reports(pair) -> None:
    rx, tx = pair
    sender, receiver = sessions()
    dest = rx.getsockname()
    nack = RR + build_nack(1, 0x11, [7])
    sent = [
        sender.protect(rtp(1)),
        sender.protect_rtcp(RR + SDES + REMB),  # reports only: C takes it
        sender.protect_rtcp(SR + SDES),  # a publisher's clock: C takes it too
        b"\x00\x01\x00\x00" + b"\x21\x12\xa4\x42" + os.urandom(12),  # STUN-shaped: not SRTP
        sender.protect_rtcp(nack),  # feedback: decrypted, for Python
        sender.protect(rtp(2))[:-1] + b"\x00",  # a forged tag
        b"",  # an empty datagram
        b"\x80\x60" + os.urandom(3000),  # SRTP-shaped, longer than pylibsrtp's own buffer
        sender.protect(rtp(3)),
    ]
    for data in sent:
        tx.sendto(data, dest)
    got, recs = fast.read(rx.fileno(), fast.context_of(receiver), 32)
    assert got == len(sent)
    rows = [recs[i : i + fast.FIELDS] for i in range(0, len(recs), fast.FIELDS)]
    kinds = [r[0] for r in rows]
    assert kinds == [fast.REC_RTP, fast.REC_BLOCK, fast.REC_BLOCK, fast.REC_SENDER, fast.REC_RAW,
                     fast.REC_RTCP, fast.REC_SRTP_ERROR, fast.REC_RAW, fast.REC_SRTP_ERROR,
                     fast.REC_RTP]
    assert rows.pop(3)[3:7] == [0x5151, NTP >> 32, NTP & 0xFFFFFFFF, 9000]

    def data(row: list[int]) -> bytes:
        return bytes(fast.OUT[row[1] : row[1] + row[2]])

    assert data(rows[0]) == rtp(1) and data(rows[8]) == rtp(3)
    assert [tuple(r[3:8]) for r in rows[1:3]] == blocks_of(B1, B2)
    assert data(rows[3]) == sent[3]
    assert fast.raw_address(*rows[3][3:7], rows[3][1] + rows[3][2]) == tx.getsockname()
    assert data(rows[4]) == nack
    assert data(rows[6]) == b"" and fast.raw_address(*rows[6][3:7], rows[6][1]) == tx.getsockname()
    assert fast.read(rx.fileno(), fast.context_of(receiver), 32) == (0, [])  # drained


def test_a_read_takes_at_most_what_it_is_asked_for(pair) -> None:
    rx, tx = pair
    sender, receiver = sessions()
    for seq in range(10):
        tx.sendto(sender.protect(rtp(seq)), rx.getsockname())
    ctx = fast.context_of(receiver)
    got, recs = fast.read(rx.fileno(), ctx, 4)
    assert got == 4 and recs[:: fast.FIELDS] == [fast.REC_RTP] * 4
    got, recs = fast.read(rx.fileno(), ctx, 32)
    assert got == 6
    assert [bytes(fast.OUT[recs[i + 1] : recs[i + 1] + recs[i + 2]])
            for i in range(0, len(recs), fast.FIELDS)] == [rtp(seq) for seq in range(4, 10)]
    # Replayed: libsrtp's replay window, as in the Python read.
    tx.sendto(sender.protect(rtp(20)), rx.getsockname())
    data = sender.protect(rtp(21))
    tx.sendto(data, rx.getsockname())
    tx.sendto(data, rx.getsockname())
    _, recs = fast.read(rx.fileno(), ctx, 32)
    assert recs[:: fast.FIELDS] == [fast.REC_RTP, fast.REC_RTP, fast.REC_SRTP_ERROR]

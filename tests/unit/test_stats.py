"""ReceiveStats: RFC 3550 A.1 sequence tracking, A.8 jitter, report blocks; aiortc as a check."""

from __future__ import annotations

import random
import types

import pytest
from aiortc import rtcrtpreceiver
from aiortc.rtp import RtpPacket
from hypothesis import given
from hypothesis import strategies as st

from sfu.core.rtcp import ReceiverReport, build_rr, parse_rtcp
from sfu.core.stats import ReceiveStats


def test_empty() -> None:
    s = ReceiveStats(90000)
    assert (s.packets, s.lost, s.loss_fraction, s.jitter_ms) == (0, 0, 0.0, 0.0)
    rb = s.report_block(1, 0.0, None, None)
    assert (rb.fraction_lost, rb.packets_lost, rb.highest_seq, rb.jitter) == (0, 0, 0, 0)


def test_in_order_no_loss() -> None:
    s = ReceiveStats(90000)
    for i in range(100):
        s.add(1000 + i, 3000 * i, i / 30)
    assert (s.packets, s.lost, s.loss_fraction) == (100, 0, 0.0)
    rb = s.report_block(0xABC, 4.0, None, None)
    assert (rb.ssrc, rb.fraction_lost, rb.packets_lost, rb.highest_seq) == (0xABC, 0, 0, 1099)
    assert rb.jitter == 0  # perfectly paced
    assert s.jitter_ms == pytest.approx(0.0, abs=1e-9)


def test_loss_fraction_is_per_interval_and_lost_is_cumulative() -> None:
    s = ReceiveStats(48000)
    for seq in [0, 1, 2, 5, 6, 7, 8, 9, 10, 11]:  # 3 and 4 lost out of 12
        s.add(seq, seq * 960, seq * 0.02)
    rb = s.report_block(1, 1.0, None, None)
    assert (rb.fraction_lost, rb.packets_lost) == (2 * 256 // 12, 2)
    assert s.lost == 2
    assert s.loss_fraction == pytest.approx(2 / 12)
    for seq in range(12, 20):  # a clean interval
        s.add(seq, seq * 960, seq * 0.02)
    rb = s.report_block(1, 2.0, None, None)
    assert (rb.fraction_lost, rb.packets_lost, rb.highest_seq) == (0, 2, 19)


def test_late_packet_reduces_loss() -> None:
    s = ReceiveStats(90000)
    for seq in [10, 11, 13, 14]:
        s.add(seq, 0, 0.0)
    assert s.lost == 1
    s.add(12, 0, 0.1)
    assert (s.lost, s.packets) == (0, 5)
    assert s.report_block(1, 1.0, None, None).highest_seq == 14  # late packet: no new max


def test_wraparound_extends_highest_seq() -> None:
    s = ReceiveStats(90000)
    for i in range(20):
        s.add((65530 + i) & 0xFFFF, i * 3000, i / 30)
    rb = s.report_block(1, 1.0, None, None)
    assert rb.highest_seq == 65536 + 13
    assert (s.packets, s.lost) == (20, 0)


def test_duplicates_count_as_received_like_rfc() -> None:
    s = ReceiveStats(90000)
    for seq in [1, 2, 2, 3, 3, 3]:
        s.add(seq, 0, 0.0)
    rb = s.report_block(1, 1.0, None, None)
    assert rb.packets_lost == -3  # RFC 3550: duplicates can make the count negative
    assert rb.fraction_lost == 0
    assert s.lost == 0  # ...but the dashboard number never goes below zero


def test_lost_clamps_to_24_bits() -> None:
    s = ReceiveStats(90000)
    seq = 0
    for _ in range(2900):  # each step loses 2998 packets: 8.7 M in all
        s.add(seq & 0xFFFF, 0, 0.0)
        seq += 2999
    assert s.lost > 0x7FFFFF
    assert s.report_block(1, 1.0, None, None).packets_lost == 0x7FFFFF


def test_one_wild_seq_is_ignored_two_consecutive_restart() -> None:
    s = ReceiveStats(90000)
    for seq in range(100, 110):
        s.add(seq, 0, 0.0)
    s.add(40000, 0, 0.0)  # a lone far jump: stray packet, not counted
    assert (s.packets, s.lost) == (10, 0)
    s.add(110, 0, 0.0)
    s.add(50000, 0, 0.0)
    s.add(50001, 0, 0.0)  # two in sequence: the sender restarted
    assert s.packets == 1  # counting starts over at the new base
    s.add(50002, 0, 0.0)
    assert (s.packets, s.lost, s.report_block(1, 0, None, None).highest_seq) == (2, 0, 50002)


def test_lsr_and_dlsr() -> None:
    s = ReceiveStats(90000)
    s.add(1, 0, 0.0)
    rb = s.report_block(1, 101.5, 0x1122334455667788, 100.0)
    assert rb.lsr == 0x33445566
    assert rb.dlsr == 98304  # 1.5 s in 1/65536 s
    assert s.report_block(1, 99.0, 0x1122334455667788, 100.0).dlsr == 0  # clock skew
    rb = s.report_block(1, 101.5, None, 100.0)
    assert (rb.lsr, rb.dlsr) == (0, 0)


def rfc_jitter(packets: list[tuple[int, float]], rate: int) -> float:
    """RFC 3550 A.8 with absolute transit times, for in-order packets with distinct ts."""
    j = 0.0
    prev = None
    for ts, arrival in packets:
        transit = arrival * rate - ts
        if prev is not None:
            j += (abs(transit - prev) - j) / 16
        prev = transit
    return j


def test_jitter_follows_rfc_formula() -> None:
    rng = random.Random(1)
    s = ReceiveStats(48000)
    packets = [(i * 960, i * 0.02 + rng.uniform(0, 0.03)) for i in range(300)]
    for i, (ts, arrival) in enumerate(packets):
        s.add(i, ts, arrival)
    expect = rfc_jitter(packets, 48000)
    assert expect > 100  # a few ms of jitter at 48 kHz: the test measures something
    assert s.report_block(1, 7.0, None, None).jitter == int(expect)
    assert s.jitter_ms == pytest.approx(expect / 48, rel=1e-9)


def test_jitter_converges_on_alternating_delay() -> None:
    s = ReceiveStats(90000)
    for i in range(400):
        s.add(i, i * 3000, i / 30 + (0.010 if i % 2 else 0.0))
    assert s.jitter_ms == pytest.approx(10.0, rel=1e-6)


def test_jitter_ignores_same_frame_and_late_packets() -> None:
    s = ReceiveStats(90000)
    s.add(1, 3000, 0.0)
    s.add(2, 3000, 0.005)  # same frame, sent in a burst: no jitter sample
    s.add(4, 6000, 1 / 30)
    s.add(3, 6000, 0.5)  # late retransmission: no jitter sample
    assert s.jitter == 0


def test_timestamp_wrap_does_not_spike_jitter() -> None:
    s = ReceiveStats(90000)
    base = 0xFFFFFFFF - 5 * 3000
    for i in range(20):
        s.add(i, (base + i * 3000) & 0xFFFFFFFF, i / 30)
    assert s.jitter == 0


def test_report_block_round_trips_through_rr() -> None:
    s = ReceiveStats(90000)
    for seq in [5, 6, 9]:
        s.add(seq, seq * 3000, seq / 30 + (0.004 if seq == 9 else 0))
    rb = s.report_block(77, 3.0, 1 << 40, 2.0)
    assert parse_rtcp(build_rr(1, [rb])) == [ReceiverReport(1, (rb,))]


# --- cross-check with aiortc's StreamStatistics ----------------------------------------------

events = st.lists(
    st.tuples(
        st.integers(1, 3),  # seq step (2, 3: losses)
        st.floats(0.0, 0.05),  # extra network delay, s
        st.booleans(),  # swap with the previous packet (reordering)
    ),
    min_size=2,
    max_size=150,
)


@given(st.integers(0, 0xFFFF), events)
def test_agrees_with_aiortc(start: int, evs: list[tuple[int, float, bool]]) -> None:
    """Same packets into both: the same loss, fraction, extended highest seq and (within integer
    rounding) jitter. aiortc reads the wall clock, so it gets ours through a stand-in module."""
    packets = []
    seq, ts = start, 1000
    for step, delay, _ in evs:
        packets.append((seq & 0xFFFF, ts, ts / 90000 + delay))
        seq += step
        ts += 3000 * step
    for i, (_, _, swap) in enumerate(evs):
        if swap and i >= 2:  # never move the first packet: both take it as the base
            packets[i - 1], packets[i] = packets[i], packets[i - 1]

    clock = {"now": 0.0}
    original = rtcrtpreceiver.time
    rtcrtpreceiver.time = types.SimpleNamespace(time=lambda: clock["now"])  # type: ignore[assignment]
    try:
        theirs = rtcrtpreceiver.StreamStatistics(90000)
        ours = ReceiveStats(90000)
        for seq, ts, arrival in packets:
            clock["now"] = arrival
            theirs.add(RtpPacket(sequence_number=seq, timestamp=ts))
            ours.add(seq, ts, arrival)
    finally:
        rtcrtpreceiver.time = original
    rb = ours.report_block(1, 10.0, None, None)
    assert rb.packets_lost == theirs.packets_lost
    assert rb.fraction_lost == theirs.fraction_lost
    assert rb.highest_seq == (theirs.cycles + theirs.max_seq) & 0xFFFFFFFF
    assert ours.packets == theirs.packets_received
    assert abs(rb.jitter - theirs.jitter) <= 2

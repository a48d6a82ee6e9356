"""The benchmark's light subscribers report loss as RFC 3550 receivers do (bench/peer.py)."""

from __future__ import annotations

from bench.peer import SsrcCounter
from sfu.core.rtcp import ReceiverReport, build_rr, parse_rtcp


def test_report_blocks_count_loss_since_the_last_report_and_in_all() -> None:
    c = SsrcCounter(65530)
    for seq in (65530, 65531, 65533, 65534, 65535, 0, 1):  # 65532 lost, wraps past 0
        c.add(seq, 100)
    first = c.report_block(7)
    assert (first.ssrc, first.packets_lost, first.highest_seq) == (7, 1, 65536 + 1)
    assert first.fraction_lost == (1 << 8) // 8  # 1 of 8 expected
    for seq in range(2, 12):  # ten more, none lost
        c.add(seq, 100)
    second = c.report_block(7)
    assert second.fraction_lost == 0 and second.packets_lost == 1
    assert second.highest_seq == 65536 + 11
    c.add(11, 100)  # a duplicate: nothing expected since, no loss reported
    third = c.report_block(7)
    assert third.fraction_lost == 0 and third.packets_lost == 0


def test_a_report_block_survives_the_rtcp_codec() -> None:
    c = SsrcCounter(10)
    for seq in (10, 12):
        c.add(seq, 100)
    [rr] = parse_rtcp(build_rr(1234, [c.report_block(99)]))
    assert isinstance(rr, ReceiverReport) and rr.ssrc == 1234
    [block] = rr.reports
    assert (block.ssrc, block.fraction_lost, block.packets_lost, block.highest_seq) == (
        99, (1 << 8) // 3, 1, 12)

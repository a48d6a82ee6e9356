"""NackGenerator with a manual clock (plain float milliseconds)."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from sfu.core.nack import NackGenerator


def feed(gen: NackGenerator, seqs: list[int], now: float = 0.0) -> None:
    for s in seqs:
        gen.on_packet(s & 0xFFFF, now)


def test_in_order_stream_has_nothing_to_nack() -> None:
    gen = NackGenerator()
    feed(gen, list(range(65000, 66000)))  # crosses the wrap
    assert gen.missing == []
    assert gen.due(5000.0) == []
    assert (gen.nacked, gen.given_up, gen.keyframe_needed) == (0, 0, False)


def test_gap_is_nacked_after_grace_then_retried_at_rtt() -> None:
    gen = NackGenerator(reorder_grace_ms=10, retry_interval_ms=100)
    feed(gen, [1, 2, 5], now=0.0)
    assert gen.missing == [3, 4]
    assert gen.due(9.0) == []  # still inside the reorder grace
    assert gen.due(10.0) == [3, 4]
    assert gen.due(20.0) == []  # not before one retry interval
    assert gen.due(109.0) == []
    assert gen.due(110.0) == [3, 4]
    gen.on_packet(3, 150.0)  # the retransmission arrives
    assert gen.missing == [4]
    assert gen.due(210.0) == [4]
    assert (gen.nacked, gen.recovered, gen.reordered) == (5, 1, 0)


def test_reordered_packet_within_grace_is_never_nacked() -> None:
    gen = NackGenerator(reorder_grace_ms=10)
    gen.on_packet(1, 0.0)
    gen.on_packet(3, 0.0)
    gen.on_packet(2, 4.0)
    assert gen.due(50.0) == []
    assert (gen.reordered, gen.recovered, gen.nacked) == (1, 0, 0)


def test_wraparound_gap() -> None:
    gen = NackGenerator(reorder_grace_ms=0)
    feed(gen, [65533, 65534, 2])
    assert gen.due(0.0) == [65535, 0, 1]
    gen.on_packet(0, 1.0)
    assert gen.missing == [65535, 1]


def test_duplicates_and_stale_packets_change_nothing() -> None:
    gen = NackGenerator(reorder_grace_ms=0)
    feed(gen, [10, 11, 11, 13, 13, 10, 5])
    assert gen.missing == [12]
    assert gen.due(0.0) == [12]
    assert (gen.recovered, gen.reordered) == (0, 0)


def test_first_packet_is_the_origin() -> None:
    gen = NackGenerator(reorder_grace_ms=0)
    feed(gen, [100, 98, 101])  # 98 came before our first packet: never tracked
    assert gen.missing == []
    assert gen.due(0.0) == []


def test_gives_up_after_max_retries_and_asks_for_keyframe() -> None:
    gen = NackGenerator(reorder_grace_ms=0, retry_interval_ms=10, max_retries=3, max_age_ms=1e9)
    feed(gen, [1, 3])
    sent = 0
    for ms in range(200):
        sent += gen.due(float(ms)).count(2)
    assert sent == 3
    assert gen.missing == []
    assert (gen.nacked, gen.given_up, gen.keyframe_needed) == (3, 1, True)
    gen.clear_keyframe_needed()
    assert gen.keyframe_needed is False


def test_last_retry_gets_one_interval_to_arrive() -> None:
    gen = NackGenerator(reorder_grace_ms=0, retry_interval_ms=10, max_retries=1, max_age_ms=1e9)
    feed(gen, [1, 3])
    assert gen.due(0.0) == [2]
    assert gen.due(9.0) == []
    assert gen.missing == [2]  # the answer to the only NACK may still come
    gen.on_packet(2, 9.5)
    assert (gen.recovered, gen.given_up, gen.keyframe_needed) == (1, 0, False)


def test_too_old_losses_are_dropped_even_with_retries_left() -> None:
    gen = NackGenerator(reorder_grace_ms=5, retry_interval_ms=100, max_retries=100, max_age_ms=1000)
    feed(gen, [1, 3], now=0.0)
    feed(gen, [4, 6], now=500.0)
    nacks = [gen.due(float(t)) for t in range(0, 1101, 100)]
    assert nacks[0] == []  # t=0: inside grace
    assert nacks[1] == [2]  # t=100
    assert nacks[6] == [2, 5]  # t=600
    assert nacks[10] == [2, 5]  # t=1000: age exactly max_age is still allowed
    assert nacks[11] == [5]  # t=1100: 2 is 1100 ms old
    assert gen.missing == [5]
    assert (gen.given_up, gen.keyframe_needed) == (1, True)


def test_gap_larger_than_cap_means_keyframe_not_nacks() -> None:
    gen = NackGenerator(reorder_grace_ms=0, max_missing=50)
    feed(gen, [1, 3])
    feed(gen, [3 + 52])  # 51 missing: over the cap
    assert gen.missing == []
    assert gen.due(0.0) == []
    assert (gen.given_up, gen.keyframe_needed) == (52, True)
    gen.clear_keyframe_needed()
    feed(gen, [56, 58])  # tracking goes on after the jump
    assert gen.missing == [57]


def test_gap_at_cap_is_still_tracked() -> None:
    gen = NackGenerator(reorder_grace_ms=0, max_missing=50)
    feed(gen, [1, 52])
    assert len(gen.missing) == 50
    assert gen.keyframe_needed is False


def test_cap_drops_oldest_when_gaps_accumulate() -> None:
    gen = NackGenerator(reorder_grace_ms=0, max_missing=10)
    feed(gen, [0, 7, 14])  # 1..6 and 8..13: 12 missing, two over
    assert gen.missing == [3, 4, 5, 6, 8, 9, 10, 11, 12, 13]
    assert (gen.given_up, gen.keyframe_needed) == (2, True)


def test_set_rtt_sets_retry_interval_with_a_floor() -> None:
    gen = NackGenerator(reorder_grace_ms=0, retry_interval_ms=100, min_retry_interval_ms=10)
    gen.set_rtt(30.0)
    assert gen.retry_interval_ms == 30.0
    feed(gen, [1, 3])
    assert gen.due(0.0) == [2]
    assert gen.due(29.0) == []
    assert gen.due(30.0) == [2]
    gen.set_rtt(1.0)
    assert gen.retry_interval_ms == 10.0


def test_restarted_seq_space_reanchors_after_two_packets() -> None:
    gen = NackGenerator(reorder_grace_ms=0)
    feed(gen, [40000, 40002])
    feed(gen, [10000])  # one stray packet 30000 behind: ignored
    assert gen.missing == [40001]
    assert gen.keyframe_needed is False
    feed(gen, [10001])  # ...but two in a row: the sender restarted
    assert gen.missing == []
    assert gen.keyframe_needed is True
    feed(gen, [10003])
    assert gen.missing == [10002]


@given(
    base=st.integers(0, 0xFFFF),
    kept=st.lists(st.booleans(), min_size=2, max_size=400),
    swaps=st.lists(st.integers(0, 399), max_size=40),
)
def test_missing_is_exactly_what_did_not_arrive(
    base: int, kept: list[bool], swaps: list[int]
) -> None:
    """Model check: with generous limits, the missing set after any delivery order with
    local reordering is every seq above the first delivered, up to the highest, not delivered."""
    offsets = [i for i, k in enumerate(kept) if k]
    for i in swaps:  # adjacent swaps: reordering by a few packets
        if i + 1 < len(offsets):
            offsets[i], offsets[i + 1] = offsets[i + 1], offsets[i]
    gen = NackGenerator(max_missing=1000)
    for o in offsets:
        gen.on_packet((base + o) & 0xFFFF, 0.0)
    if not offsets:
        assert gen.missing == []
        return
    first = offsets[0]
    top = max(offsets)
    expect = [(base + o) & 0xFFFF for o in range(first + 1, top) if o not in set(offsets)]
    assert gen.missing == expect
    assert gen.due(10.0) == expect
    assert gen.due(10.0) == []  # each seq at most once per retry interval


def test_random_loss_everything_is_accounted_for() -> None:
    """Every seq found missing ends up recovered, reordered, given up, or still missing."""
    rng = random.Random(7)
    gen = NackGenerator(reorder_grace_ms=5, retry_interval_ms=40, max_retries=5, max_age_ms=400)
    now = 0.0
    found = 0
    pending: list[tuple[float, int]] = []  # (arrival time, seq) for retransmissions
    for seq in range(5000):
        now += 2.0
        before = len(gen.missing)
        if rng.random() > 0.05:
            gen.on_packet(seq & 0xFFFF, now)
        found += max(0, len(gen.missing) - before)
        for t, s in [p for p in pending if p[0] <= now]:
            pending.remove((t, s))
            gen.on_packet(s, now)
        for s in gen.due(now):
            if rng.random() < 0.7:
                pending.append((now + 30.0, s))
    assert gen.nacked > 0
    assert gen.recovered > 0
    assert gen.given_up > 0
    assert found == gen.recovered + gen.reordered + gen.given_up + len(gen.missing)

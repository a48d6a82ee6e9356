"""Munger: output seq/ts continuity across source switches, wraparound included."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sfu.core.munger import Munger

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


def hot_loop(m: Munger, seq: int, ts: int) -> tuple[int, int]:
    """Exactly what the forwarding loop does with the two attributes."""
    return (seq + m.seq_off) & 0xFFFF, (ts + m.ts_off) & 0xFFFFFFFF


def test_offsets_are_plain_ints() -> None:
    m = Munger(random.Random(1))
    assert type(m.seq_off) is int
    assert type(m.ts_off) is int
    m.switch(None, None, None, 10, 20, 0.0, 90000)
    m.switch(10, 20, 0.0, 500, 600, 1.0, 90000)
    assert type(m.seq_off) is int
    assert type(m.ts_off) is int
    assert 0 <= m.seq_off <= 0xFFFF
    assert 0 <= m.ts_off <= 0xFFFFFFFF


def test_first_source_starts_at_random_output_values() -> None:
    starts = set()
    for seed in range(20):
        m = Munger(random.Random(seed))
        m.switch(None, None, None, 1000, 5000, 0.0, 90000)
        starts.add(hot_loop(m, 1000, 5000))
    assert len(starts) == 20  # not anchored to the input values, and seed-dependent
    m = Munger(random.Random(3))
    m.switch(None, None, None, 1000, 5000, 0.0, 90000)
    again = Munger(random.Random(3))
    again.switch(None, None, None, 1000, 5000, 0.0, 90000)
    assert hot_loop(m, 1000, 5000) == hot_loop(again, 1000, 5000)  # reproducible via rng


def test_reconnect_keeps_stream_continuous() -> None:
    m = Munger(random.Random(0))
    m.switch(None, None, None, 100, 1_000_000, 0.0, 90000)
    out = [hot_loop(m, 100 + i, 1_000_000 + 3000 * i) for i in range(10)]
    last_seq, last_ts = out[-1]
    # Publisher reconnects 2.5 s later with a fresh random seq/ts space.
    m.switch(109, 1_000_000 + 3000 * 9, 10.0, 40_000, 7, 12.5, 90000)
    assert hot_loop(m, 40_000, 7) == ((last_seq + 1) & 0xFFFF, (last_ts + 225_000) & 0xFFFFFFFF)
    assert hot_loop(m, 40_001, 3007) == ((last_seq + 2) & 0xFFFF, (last_ts + 228_000) & 0xFFFFFFFF)
    assert m.in_seq((last_seq + 2) & 0xFFFF) == 40_001


def test_ts_step_is_at_least_one_sample() -> None:
    m = Munger(random.Random(0))
    m.switch(None, None, None, 0, 0, 0.0, 48000)
    last = m.out_ts(960)
    m.switch(0, 960, 5.0, 0, 0, 5.0, 48000)  # same instant
    assert m.out_ts(0) == (last + 1) & 0xFFFFFFFF
    last = m.out_ts(0)
    m.switch(0, 0, 9.0, 77, 77, 8.0, 48000)  # clock went backwards: still forward
    assert m.out_ts(77) == (last + 1) & 0xFFFFFFFF


def test_very_long_pause_never_reads_as_going_backwards() -> None:
    m = Munger(random.Random(0))
    last = m.out_ts(0)
    m.switch(0, 0, 0.0, 0, 0, 10 * 3600.0, 90000)  # ten hours: more than 2**31 ticks
    assert (m.out_ts(0) - last) & 0xFFFFFFFF == 0x7FFFFFFF


def test_partial_previous_source_is_an_error() -> None:
    m = Munger(random.Random(0))
    with pytest.raises(ValueError):
        m.switch(1, None, 0.0, 0, 0, 1.0, 90000)
    with pytest.raises(ValueError):
        m.switch(1, 2, None, 0, 0, 1.0, 90000)


def test_seq_mapping_is_a_bijection_for_every_seq() -> None:
    """Exhaustive over the 16-bit space, at offsets that straddle the wrap."""
    m = Munger(random.Random(0))
    for off in (0, 1, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF):
        m.seq_off = off
        outs = [m.out_seq(s) for s in range(0x10000)]
        assert sorted(outs) == list(range(0x10000))
        assert all(m.in_seq(o) == s for s, o in enumerate(outs))
        assert all(hot_loop(m, s, 0)[0] == o for s, o in enumerate(outs))


@given(
    seq_off=u16,
    ts_off=u32,
    prev_seq=u16,
    prev_ts=u32,
    first_seq=u16,
    first_ts=u32,
    gap_s=st.floats(0.0, 3600.0),
    clock_rate=st.sampled_from([8000, 48000, 90000]),
    later=st.integers(0, 3000),
)
@example(0xFFFF, 0xFFFFFFFF, 0xFFFF, 0xFFFFFFFF, 0, 0, 0.0, 90000, 1)
@example(0, 0, 0xFFFF, 0xFFFFFFFF, 0xFFFF, 0xFFFFFFFF, 1 / 30, 90000, 2)
@example(1, 1, 0xFFFE, 0xFFFFFFFE, 0xFFFF, 0xFFFFFFFF, 0.0, 48000, 0)
@example(0x8000, 0x80000000, 0x7FFF, 0x7FFFFFFF, 0x8000, 0x80000000, 0.02, 48000, 5)
def test_switch_continuity_everywhere(
    seq_off: int,
    ts_off: int,
    prev_seq: int,
    prev_ts: int,
    first_seq: int,
    first_ts: int,
    gap_s: float,
    clock_rate: int,
    later: int,
) -> None:
    m = Munger(random.Random(0))
    m.seq_off, m.ts_off = seq_off, ts_off
    last_out_seq, last_out_ts = hot_loop(m, prev_seq, prev_ts)
    m.switch(prev_seq, prev_ts, 100.0, first_seq, first_ts, 100.0 + gap_s, clock_rate)
    step = max(1, round(gap_s * clock_rate))
    out_seq, out_ts = hot_loop(m, first_seq, first_ts)
    assert out_seq == (last_out_seq + 1) & 0xFFFF
    assert out_ts == (last_out_ts + step) & 0xFFFFFFFF
    # Later packets of the new source keep their spacing, across any wrap.
    s, t = hot_loop(m, (first_seq + later) & 0xFFFF, (first_ts + later * 960) & 0xFFFFFFFF)
    assert s == (last_out_seq + 1 + later) & 0xFFFF
    assert t == (last_out_ts + step + later * 960) & 0xFFFFFFFF
    assert m.in_seq(s) == (first_seq + later) & 0xFFFF
    assert (m.out_seq(first_seq), m.out_ts(first_ts)) == (out_seq, out_ts)


@given(st.lists(st.tuples(u16, u32, st.floats(0.0, 2.0)), min_size=1, max_size=20))
def test_chain_of_switches_stays_continuous(sources: list[tuple[int, int, float]]) -> None:
    """Many switches (a Last-N slot cycling through speakers): output seq never skips or
    repeats, and output ts strictly advances (mod 2**32) at each boundary."""
    m = Munger(random.Random(5))
    now = 0.0
    prev: tuple[int, int, float] | None = None
    outputs: list[tuple[int, int]] = []
    for first_seq, first_ts, pause in sources:
        now += pause
        if prev is None:
            m.switch(None, None, None, first_seq, first_ts, now, 90000)
        else:
            m.switch(prev[0], prev[1], prev[2], first_seq, first_ts, now, 90000)
        for k in range(3):  # three packets, one frame apart, from this source
            seq, ts = (first_seq + k) & 0xFFFF, (first_ts + 3000 * k) & 0xFFFFFFFF
            outputs.append(hot_loop(m, seq, ts))
        prev = ((first_seq + 2) & 0xFFFF, (first_ts + 6000) & 0xFFFFFFFF, now)
    for (s0, t0), (s1, t1) in itertools.pairwise(outputs):
        assert s1 == (s0 + 1) & 0xFFFF
        assert 0 < (t1 - t0) & 0xFFFFFFFF < 0x80000000

"""bench/lossy.py: the loss a `bench forward --loss` subscriber makes, and its NACKs, on a
manual clock."""

from __future__ import annotations

import pytest

from bench.lossy import Dropper, Nacker


def test_dropper_drops_about_its_share_and_the_same_ones_for_a_seed() -> None:
    a, b = Dropper(5, seed=7), Dropper(5, seed=7)
    drops_a = [a.drop() for _ in range(20_000)]
    assert drops_a == [b.drop() for _ in range(20_000)]
    assert a.dropped == sum(drops_a)
    assert 800 < a.dropped < 1200  # 5 % of 20,000 = 1,000
    assert not any(Dropper(0, seed=1).drop() for _ in range(1000))


@pytest.mark.parametrize("pct", [-1, 100, 150])
def test_dropper_refuses_a_share_outside_0_to_100(pct: float) -> None:
    with pytest.raises(ValueError):
        Dropper(pct, seed=1)


def test_a_gap_is_asked_for_at_once_then_again_every_retry_until_given_up() -> None:
    n = Nacker()
    n.on_media(100, 0.0)
    n.on_media(103, 1.0)  # 101 and 102 lost
    assert n.due(1.0) == [101, 102]
    assert n.due(1.0 + Nacker.RETRY_S / 2) == []  # not before the retry interval
    t = 1.0
    for _ in range(Nacker.TRIES - 1):
        t += Nacker.RETRY_S
        assert n.due(t) == [101, 102]
    assert n.asked == 2 * Nacker.TRIES
    assert n.due(t + Nacker.RETRY_S) == []  # asked TRIES times: given up
    assert (n.given_up, n.missing, n.recovered) == (2, 0, 0)


def test_rtx_and_late_packets_fill_the_gap() -> None:
    n = Nacker()
    n.on_media(10, 0.0)
    n.on_media(14, 0.0)  # 11, 12, 13
    assert n.due(0.0) == [11, 12, 13]
    assert n.on_rtx(12) and not n.on_rtx(12)  # a second copy is not ours any more
    assert not n.on_rtx(99)
    n.on_media(11, 0.01)  # reordered, came by itself
    assert n.due(0.0 + Nacker.RETRY_S) == [13]
    assert (n.recovered, n.late, n.missing) == (1, 1, 1)


def test_sequence_numbers_wrap() -> None:
    n = Nacker()
    n.on_media(65534, 0.0)
    n.on_media(1, 0.0)  # 65535 and 0 lost across the wrap
    assert sorted(n.due(0.0)) == [0, 65535]
    n.on_media(65533, 0.0)  # old, never missing: nothing changes
    n.on_media(1, 0.0)  # a duplicate
    assert n.missing == 2 and n.highest == 1


def test_a_gap_too_long_to_repair_is_not_asked_for() -> None:
    n = Nacker()
    n.on_media(0, 0.0)
    n.on_media(2, 0.0)  # 1 missing
    n.on_media(3 + Nacker.MAX_MISSING + 1, 0.0)  # a stall: not worth asking for
    assert n.due(0.0) == [] and n.given_up == 1 and n.highest == 3 + Nacker.MAX_MISSING + 1

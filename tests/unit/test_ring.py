"""RetransmitRing: the packet for a seq, or None once its slot was reused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sfu.core.ring import RetransmitRing


@pytest.mark.parametrize("size", [0, -4, 3, 1000, 1 << 17])
def test_size_must_be_power_of_two_up_to_65536(size: int) -> None:
    with pytest.raises(ValueError):
        RetransmitRing(size)


def test_put_get() -> None:
    ring = RetransmitRing(8)
    assert ring.size == 8
    assert ring.get(3) is None
    ring.put(3, b"three")
    assert ring.get(3) == b"three"
    assert ring.get(11) is None  # same slot, other seq


def test_overwritten_slot_answers_none_not_the_wrong_packet() -> None:
    ring = RetransmitRing(4)
    for seq in range(10):
        ring.put(seq, bytes([seq]))
    assert [ring.get(s) for s in range(10)] == [None] * 6 + [b"\x06", b"\x07", b"\x08", b"\x09"]


def test_wraparound() -> None:
    ring = RetransmitRing(16)
    for i in range(8):
        ring.put((65532 + i) & 0xFFFF, b"p%d" % i)
    assert ring.get(65535) == b"p3"
    assert ring.get(0) == b"p4"
    assert ring.get(3) == b"p7"
    assert ring.get(65531) is None


def test_full_cycle_ring() -> None:
    ring = RetransmitRing(1 << 16)
    ring.put(0xFFFF, b"last")
    ring.put(0, b"first")
    assert (ring.get(0xFFFF), ring.get(0)) == (b"last", b"first")


def test_clear() -> None:
    ring = RetransmitRing(4)
    ring.put(1, b"x")
    ring.clear()
    assert ring.get(1) is None
    ring.put(1, b"y")
    assert ring.get(1) == b"y"


@given(
    st.sampled_from([1, 2, 8, 64]),
    st.lists(st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=4)), max_size=200),
    st.lists(st.integers(0, 0xFFFF), max_size=50),
)
def test_matches_a_dict_model(size: int, puts: list[tuple[int, bytes]], probes: list[int]) -> None:
    ring = RetransmitRing(size)
    model: dict[int, tuple[int, bytes]] = {}  # slot -> (seq, data) of the last put there
    for seq, data in puts:
        ring.put(seq, data)
        model[seq % size] = (seq, data)
    for seq in probes + [s for s, _ in puts]:
        slot = model.get(seq % size)
        expect = slot[1] if slot is not None and slot[0] == seq else None
        assert ring.get(seq) == expect

"""Throw random and mutated bytes at `parse_rtcp`: it returns items or raises `RtcpError`,
nothing else (no IndexError, struct.error, UnicodeError...)."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sfu.core.rtcp import (
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
    SenderReport,
    build_bye,
    build_fir,
    build_nack,
    build_pli,
    build_remb,
    build_rr,
    build_sdes,
    build_sr,
    parse_rtcp,
)

ITEM_TYPES = (SenderReport, ReceiverReport, Sdes, Bye, Pli, Fir, Nack, Remb, OtherRtcp)
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_RB = ReportBlock(0x11, 3, -2, 70_000, 12, 0xAABBCCDD, 0x10000)
SEEDS: list[bytes] = [
    build_sr(1, 0x1122334455667788, 9000, 10, 1000, [_RB, _RB]),
    build_rr(2, [_RB]),
    build_sdes(3, "participant-3@hoinghi"),
    build_bye([4, 5]),
    build_pli(6, 7),
    build_fir(6, 7, 9),
    build_nack(6, 7, [65530, 65531, 0, 3, 40]),
    build_remb(6, 2_500_000, [7, 8]),
    # transport-cc feedback, APP, padded PLI, BYE with reason
    struct.pack("!BBHIIHHIHH", 0x8F, 205, 5, 1, 2, 5, 2, 0x100, 0x2002, 0x0101),
    struct.pack("!BBHI", 0x81, 204, 2, 9) + b"name",
    struct.pack("!BBHII", 0xA1, 206, 3, 1, 2) + b"\0\0\0\x04",
    struct.pack("!BBHI", 0x81, 203, 2, 9) + b"\x02by\0",
]
SEEDS.append(b"".join(SEEDS))


RR = build_rr(0x5151, [_RB])
RR_ITEMS = parse_rtcp(RR)


def check(data: bytes) -> None:
    try:
        items = parse_rtcp(data)
    except RtcpError:
        return
    assert items
    assert all(isinstance(i, ITEM_TYPES) for i in items)
    # Each packet is read within its own length: bytes after it change nothing about it
    # (catches a parser that silently reads a short field, or into the next packet).
    assert parse_rtcp(data + RR) == items + RR_ITEMS
    assert parse_rtcp(RR + data) == RR_ITEMS + items


@FUZZ
@given(st.binary(max_size=256))
def test_random_bytes(data: bytes) -> None:
    check(data)


@FUZZ
@given(
    st.integers(0, 0xFF),
    st.integers(0, 0xFF),
    st.integers(0, 80),
    st.binary(max_size=300),
)
def test_plausible_headers(b0: int, pt: int, length: int, body: bytes) -> None:
    # Version 2 and a real RTCP type most of the time, so parsing gets past the header.
    b0 = 0x80 | (b0 & 0x3F)
    pt = 192 + pt % 16
    check(struct.pack("!BBH", b0, pt, length) + body)


# Positions: anywhere, but often among the first words, where counts and lengths live.
where = st.one_of(st.integers(0, 20), st.integers(0, 10_000))
mutation = st.one_of(
    st.tuples(st.just("flip"), where, st.integers(1, 255)),
    st.tuples(st.just("set"), where, st.integers(0, 255)),
    st.tuples(st.just("cut"), where, st.just(0)),
    st.tuples(st.just("insert"), where, st.integers(0, 255)),
    st.tuples(st.just("delete"), where, st.just(0)),
)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEEDS), st.lists(mutation, min_size=1, max_size=4))
def test_mutated_valid_packets(seed: bytes, mutations: list[tuple[str, int, int]]) -> None:
    data = bytearray(seed)
    for op, where, value in mutations:
        i = where % (len(data) + 1)
        if op == "flip" and i < len(data):
            data[i] ^= value
        elif op == "set" and i < len(data):
            data[i] = value
        elif op == "cut":
            del data[i:]
        elif op == "insert":
            data.insert(i, value)
        elif op == "delete" and i < len(data):
            del data[i]
    check(bytes(data))


def test_seeds_are_valid() -> None:
    for seed in SEEDS:
        assert parse_rtcp(seed)


@FUZZ
@given(st.lists(st.sampled_from(SEEDS[:-1]), min_size=1, max_size=5))
def test_compound_is_the_concatenation(parts: list[bytes]) -> None:
    """Each packet is parsed within its own length: joining packets joins the results."""
    assert parse_rtcp(b"".join(parts)) == [i for p in parts for i in parse_rtcp(p)]

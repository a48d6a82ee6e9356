"""The pipe's frames and the placement of a spanning conference's subscribers (pure)."""

from __future__ import annotations

import pytest

from sfu.core.pipe import (
    RTCP,
    RTP,
    SR,
    PipeError,
    frame_header,
    parse_frame,
    parse_sr,
    place_subscriber,
    sr_frame,
)


def test_rtp_frame_round_trips_with_generation_and_track_number() -> None:
    packet = bytes(range(40))
    kind, gen, no, payload = parse_frame(frame_header(RTP, 7, 513) + packet)
    assert (kind, gen, no, bytes(payload)) == (RTP, 7, 513, packet)


def test_generation_wraps_at_one_byte() -> None:
    assert parse_frame(frame_header(RTCP, 256 + 3, 1))[1] == 3


def test_sender_report_frame_carries_ntp_and_rtp_time() -> None:
    kind, gen, no, payload = parse_frame(sr_frame(2, 9, (1 << 63) + 5, 0x1_0000_0001))
    assert (kind, gen, no) == (SR, 2, 9)
    assert parse_sr(payload) == ((1 << 63) + 5, 1)  # RTP time is 32 bits


@pytest.mark.parametrize("data", [b"", b"\x00\x00\x00", b"\x03\x00\x00\x01rtp",
                                  b"\xff\x00\x00\x01", frame_header(SR, 0, 1) + b"short"])
def test_malformed_frames_are_refused(data: bytes) -> None:
    with pytest.raises(PipeError):
        parse_frame(data)


def test_a_conference_stays_on_its_home_until_span_after() -> None:
    assert place_subscriber(0, 400, {1: 0, 2: 0}) is None
    assert place_subscriber(399, 400, {1: 0}) is None
    assert place_subscriber(400, 400, {1: 0}) == 1


def test_past_span_after_the_least_loaded_edge_takes_it_lowest_index_on_ties() -> None:
    assert place_subscriber(400, 400, {3: 0, 1: 0, 2: 0}) == 1
    assert place_subscriber(400, 400, {1: 5, 2: 4, 3: 4}) == 2


def test_no_edge_or_spanning_off_keeps_it_home() -> None:
    assert place_subscriber(10_000, 400, {}) is None
    assert place_subscriber(10_000, 0, {1: 0}) is None


def test_ties_start_at_the_conferences_own_first_edge_cyclically() -> None:
    edges = {1: 0, 2: 0, 3: 0}
    assert [place_subscriber(400, 400, edges, first) for first in range(4)] == [1, 2, 3, 1]
    # Load decides first; the rotation only among the least loaded.
    assert place_subscriber(400, 400, {1: 0, 2: 1, 3: 0}, first=1) == 3
    assert place_subscriber(400, 400, {1: 2, 2: 2, 3: 1}, first=7) == 3


def test_conferences_spilling_together_spread_over_the_edges() -> None:
    # Three conferences homed on worker 0, all past span_after, each placing in turn with the
    # process-wide load: every edge ends up with the same number, whatever the first edges.
    load = {1: 0, 2: 0, 3: 0}
    for _ in range(4):
        for first in (5, 5, 9):  # two conferences share a first edge
            choice = place_subscriber(400, 400, load, first)
            assert choice is not None
            load[choice] += 1
    assert sorted(load.values()) == [4, 4, 4]

"""bench/micro_fanout.py runs the production fan-out (it rotted once unnoticed: new consumers
now wait for a keyframe, and the benchmark forwarded to nobody). Small sizes, real sockets."""

from __future__ import annotations

import pytest

from bench.micro_fanout import FRAME, bench
from sfu import fastpath


async def test_every_case_forwards_to_every_consumer() -> None:
    before, gso_before = fastpath.gso_counters(), fastpath.gso_enabled()
    ring_before = fastpath.uring_counters()["fanout_uring_sends"]
    ring_ok = fastpath.uring_available()
    # bench() raises when a round forwarded fewer packets than packets x consumers.
    lines = await bench(3, rounds=1, sends=240)
    cases = {line["case"]: line for line in lines}
    expected = {"python-fanout"}
    if fastpath.COMPILED:
        expected |= {"c-fanout", "c-fanout-connected", f"c-fanout-frame{FRAME}",
                     f"c-fanout-frame{FRAME}-connected", f"c-fanout-frame{FRAME}-nogso"}
    if fastpath.COMPILED and ring_ok:  # the io_uring's A/B: the same sends as syscalls
        expected |= {"c-fanout-connected-syscalls", f"c-fanout-frame{FRAME}-connected-syscalls"}
        assert cases["c-fanout-connected"]["sends"] == "io_uring"
        assert cases["c-fanout-connected-syscalls"]["sends"] == "syscalls"
        # The ring cases' sends went through it: at least one round's worth, warm-up aside.
        ring_sent = fastpath.uring_counters()["fanout_uring_sends"] - ring_before
        assert ring_sent >= cases["c-fanout-connected"]["forwarded_per_round"]
    assert set(cases) == expected
    assert fastpath.set_uring(fastpath.URING_DEFAULT) == (ring_ok and fastpath.URING_DEFAULT)
    for line in lines:
        assert line["forwarded_per_round"] == line["packets"] * 3
        assert line["packets"] % FRAME == 0 and line["us_per_pkt"] > 0
    assert fastpath.gso_enabled() == gso_before  # the A/B switched it back
    if gso_before:  # the GSO frame case went out as GSO messages (its warm-up too)
        sent = fastpath.gso_counters()["fanout_gso_packets"] - before["fanout_gso_packets"]
        assert sent >= cases[f"c-fanout-frame{FRAME}"]["forwarded_per_round"]


def test_set_gso_switches_and_reports() -> None:
    if not fastpath.COMPILED:
        assert fastpath.set_gso(True) is False and not fastpath.gso_enabled()
        pytest.skip(fastpath.reason())
    try:
        assert fastpath.set_gso(False) is False and not fastpath.gso_enabled()
        on = fastpath.set_gso(True)  # False only where the headers lacked UDP_SEGMENT
        assert on == fastpath.gso_enabled()
    finally:
        fastpath.set_gso(fastpath.GSO_DEFAULT)


async def test_members_bench_joins_and_leaves_in_place() -> None:
    from bench.micro_members import bench as members

    # bench() raises when the group was rebuilt or lost members along the way.
    line = await members(6, extra=3)
    assert line["n"] == 6 and line["join_us"] > 0 and line["leave_us"] > 0
    assert line["rebuild_us"] > 0


async def test_conference_bench_counts_what_a_publication_costs() -> None:
    from bench.micro_conference import bench as conference

    line = await conference(8, publications=2, roster="full")
    # The chair, 8 bridges with a camera and a microphone each, then 2 more that join and
    # publish.
    assert line["bridges"] == 8 and line["tracks"] == 20 and line["roster"] == "full"
    assert line["join_ms"] > 0 and line["announce_ms"] > 0
    assert line["joined_kb"] > 1  # 9 participants and 16 tracks, about 100 bytes each
    assert line["syncs_per_publication"] == 0  # shown to nobody, heard by nobody: no sync
    # Everyone is told of a late bridge's join and 2 tracks: 3 messages to 9 or 10 others.
    assert line["messages_per_join"] >= 27 and line["surge_messages"] == sum(range(1, 9))
    featured = await conference(8, publications=2)
    # Bridges are told of the chair only: only the chair's console hears of each join and its
    # 2 tracks, and the publisher of its own 2 tracks.
    assert featured["roster"] == "featured" and featured["joined_kb"] < 1
    assert featured["messages_per_join"] == 5 and featured["surge_messages"] == 8


async def test_floor_bench_measures_offers_then_remaps() -> None:
    from bench.micro_floor import bench as floor

    join, *lines = await floor(3, turns=3)
    assert join["phase"] == "join" and [x["turn"] for x in lines] == [0, 1, 2]
    # The joins: one offer per subscriber (the chair, 2 speakers, 3 bridges; speakers and
    # chair subscribe to one another as they join), opening the floor's two sections empty.
    assert join["offers"] >= 6 and join["server_ms_per_bridge"] > 0
    # So every turn, the first too, moves tracks through open sections: remaps. The first:
    # to the 2 other speakers and the 3 bridges, and an offer to the chair, which had been
    # sent nothing (last_n 0) and so had no connection yet. Later ones: to all 7 subscribers
    # (the new holder stops receiving the old one), no offer.
    assert (lines[0]["offers"], lines[0]["remaps"]) == (1, 5)
    for turn in lines[1:]:
        assert (turn["offers"], turn["remaps"]) == (0, 7), turn
    assert all(x["server_ms_per_bridge"] > 0 for x in lines)

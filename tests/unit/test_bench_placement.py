"""`hoinghi bench forward --server-cpus`: the server under test on CPUs of its own, the load on
the others, checked on real child processes (their threads included) via sched_getaffinity."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import procs
from bench.cli import _cpus, build_parser
from bench.plot import forward_title

# Prints the CPUs of the main thread and of a thread it starts (threads inherit affinity).
REPORT = """
import json, os, sys, threading
seen = {}
t = threading.Thread(target=lambda: seen.update(thread=sorted(os.sched_getaffinity(0))))
t.start(); t.join()
print(json.dumps({"main": sorted(os.sched_getaffinity(0)), **seen}), flush=True)
sys.stdin.read()
"""

needs_two = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")


@pytest.fixture
def restore_affinity() -> Iterator[None]:
    before = os.sched_getaffinity(0)
    try:
        yield
    finally:
        procs.set_placement(None)
        os.sched_setaffinity(0, before)


def test_cpu_lists_parse_as_taskset_writes_them() -> None:
    assert _cpus("0") == {0}
    assert _cpus("0,2") == {0, 2}
    assert _cpus("1-3,6") == {1, 2, 3, 6}
    for bad in ("", "x", "-1", "2-a"):
        with pytest.raises(argparse.ArgumentTypeError):
            _cpus(bad)
    args = build_parser().parse_args(["forward", "--server-cpus", "0-1"])
    assert args.server_cpus == {0, 1}
    assert build_parser().parse_args(["forward"]).server_cpus is None
    assert build_parser().parse_args(["scale", "--pin"]).pin is True


@needs_two
def test_placement_must_leave_cpus_for_the_load(restore_affinity: None) -> None:
    allowed = os.sched_getaffinity(0)
    with pytest.raises(ValueError, match="proper subset"):
        procs.set_placement(set(allowed))  # nothing left for the load
    with pytest.raises(ValueError, match="proper subset"):
        procs.set_placement({max(allowed) + 1})
    assert procs.placement() is None
    assert procs.set_placement(None) is None
    assert os.sched_getaffinity(0) == allowed  # a refused placement changes nothing


@needs_two
def test_placements_follow_each_other_from_the_original_cpus(restore_affinity: None) -> None:
    allowed = sorted(os.sched_getaffinity(0))
    lo, hi = allowed[0], allowed[-1]
    assert procs.first_cpus(1) == {lo}
    procs.set_placement({lo})
    assert os.sched_getaffinity(0) == set(allowed) - {lo}
    # The next placement (bench scale --pin, one per worker count) starts from all the CPUs
    # again, not from what the previous one left this process.
    assert procs.first_cpus(1) == {lo}
    assert procs.set_placement({hi}) == {"server": [hi], "load": sorted(set(allowed) - {hi})}
    procs.set_placement(None)
    assert sorted(os.sched_getaffinity(0)) == allowed


async def _child_cpus(tmp_path: Path, name: str, server: bool) -> dict[str, list[int]]:
    child = await procs.spawn(name, [sys.executable, "-c", REPORT], tmp_path / f"{name}.log",
                              server=server)
    try:
        return await child.read_json(30)
    finally:
        await child.stop()


@needs_two
def test_server_and_load_children_land_on_their_cpus(tmp_path: Path,
                                                      restore_affinity: None) -> None:
    allowed = os.sched_getaffinity(0)
    server_cpu = min(allowed)
    load = sorted(allowed - {server_cpu})
    assert procs.set_placement({server_cpu}) == {"server": [server_cpu], "load": load}
    assert sorted(os.sched_getaffinity(0)) == load  # the benchmark itself is load

    async def both() -> tuple[dict[str, list[int]], dict[str, list[int]]]:
        return (await _child_cpus(tmp_path, "server", True),
                await _child_cpus(tmp_path, "load", False))

    server, worker = asyncio.run(both())
    assert server == {"main": [server_cpu], "thread": [server_cpu]}
    assert worker == {"main": load, "thread": load}


def test_without_placement_children_keep_the_parents_cpus(tmp_path: Path,
                                                          restore_affinity: None) -> None:
    procs.set_placement(None)
    cpus = sorted(os.sched_getaffinity(0))
    server = asyncio.run(_child_cpus(tmp_path, "server", True))
    assert server == {"main": cpus, "thread": cpus}
    assert json.loads(json.dumps(procs.placement())) is None


def test_the_forward_plot_says_where_the_server_ran() -> None:
    run = {"kind": "run", "cores": 16, "foreign_cpu_cores": 0.5}
    pinned = forward_title([{**run, "placement": {"server": [0], "load": list(range(1, 16))}}])
    assert "16 cores; server on CPUs [0], load on [1, 2," in pinned
    assert "0.50 cores" in pinned
    assert "server on" not in forward_title([{**run, "placement": None}])

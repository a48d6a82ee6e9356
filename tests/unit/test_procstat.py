"""bench.procstat's process-tree CPU, on real processes.

The test process starts a child, which starts a grandchild that burns CPU; each reports over a
pipe when it is done, and both wait on their stdin, so nothing depends on timing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from bench import procstat
from bench.procstat import proc_cpu, proc_wakeups, tree_cpu, tree_cpus, tree_pids

BURN_S = 0.3

# The grandchild: burn BURN_S of CPU, say so, then wait for stdin to close.
GRANDCHILD = f"""
import sys, time
while time.process_time() < {BURN_S}:
    pass
print("burned", flush=True)
sys.stdin.read()
"""

# The child: start the grandchild, relay its pid once it has burned, wait for stdin to close
# (then close the grandchild's stdin too and reap it).
CHILD = f"""
import subprocess, sys
g = subprocess.Popen([sys.executable, "-c", {GRANDCHILD!r}],
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
assert g.stdout.readline().strip() == "burned"
print(g.pid, flush=True)
sys.stdin.read()
g.stdin.close()
g.wait()
"""


@pytest.fixture
def family() -> Iterator[tuple[subprocess.Popen[str], int]]:
    child = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.strip().isdigit(), line
        yield child, int(line)
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(timeout=30)


MODES = [pytest.param(False, id="scan-proc")]
if procstat._HAS_CHILDREN_FILE:
    MODES.append(pytest.param(True, id="children-file"))


@pytest.mark.parametrize("use_children_file", MODES)
def test_tree_pids(family: tuple[subprocess.Popen[str], int], use_children_file: bool) -> None:
    child, grandchild = family
    mine = tree_pids(os.getpid(), use_children_file=use_children_file)
    assert mine[0] == os.getpid()
    # Parents come before their children.
    assert mine.index(child.pid) < mine.index(grandchild)
    assert tree_pids(child.pid, use_children_file=use_children_file) == [child.pid, grandchild]
    assert tree_pids(grandchild, use_children_file=use_children_file) == [grandchild]


def test_tree_cpu_includes_descendants(family: tuple[subprocess.Popen[str], int]) -> None:
    child, grandchild = family
    burned = proc_cpu(grandchild).total_s
    assert burned >= BURN_S - 0.02  # clock-tick granularity
    per_pid = tree_cpus(child.pid)
    assert set(per_pid) == {child.pid, grandchild}
    total = tree_cpu(child.pid).total_s
    assert total >= proc_cpu(child.pid).total_s + burned - 0.02
    # From the test process down: its own CPU plus the grandchild's burn, at least.
    own = proc_cpu(os.getpid()).total_s
    assert tree_cpu(os.getpid()).total_s >= own + burned - 0.02


def test_vanished_processes(family: tuple[subprocess.Popen[str], int]) -> None:
    child, grandchild = family
    assert child.stdin is not None
    child.stdin.close()  # the child closes the grandchild's stdin and reaps it, then exits
    child.wait(timeout=30)
    assert tree_pids(child.pid) == []
    assert tree_cpu(child.pid).total_s == 0
    assert grandchild not in tree_pids(os.getpid())


def wait_asleep(pid: int, timeout: float = 10.0) -> None:
    """Until the process is blocked (state S in /proc/PID/stat), bounded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rpartition(")")[2].split()[0] == "S":
                return
        time.sleep(0.001)
    raise TimeoutError(f"process {pid} never blocked")


def test_wakeups_count_each_time_a_sleeping_process_is_woken() -> None:
    """A child that blocks on its stdin five times: each line we send wakes it once."""
    child = subprocess.Popen([sys.executable, "-c",
                              "import sys\nfor _ in range(5):\n    sys.stdin.readline()\n"
                              "    print('ok', flush=True)\nsys.stdin.read()"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "ok"
        # A line written before the child blocks again would find it awake: wait for the sleep.
        wait_asleep(child.pid)
        before = proc_wakeups(child.pid)
        for _ in range(4):
            child.stdin.write("go\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "ok"
            wait_asleep(child.pid)
        assert proc_wakeups(child.pid) - before >= 4
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=30)

"""CPU accounting from /proc: what the benchmark divides by forwarded packets."""

from __future__ import annotations

import os
from dataclasses import dataclass

_TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcCpu:
    user_s: float
    system_s: float

    @property
    def total_s(self) -> float:
        return self.user_s + self.system_s


def proc_cpu(pid: int) -> ProcCpu:
    """utime+stime of a process, all its threads included (Janus is multi-threaded)."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name (field 2) may hold spaces or parentheses: split after the last ')'.
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return ProcCpu(int(fields[11]) / _TICK, int(fields[12]) / _TICK)


def proc_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def proc_wakeups(pid: int) -> int:
    """Voluntary context switches of all the process's threads: each is a sleep that a
    wake-up ended (an event loop that waited for a datagram or a timer)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        total += int(line.split()[1])
        except OSError:  # the thread ended meanwhile
            continue
    return total


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat.

    Used to report how much CPU *other* processes took during a window: this machine is
    shared, and a busy neighbour inflates every figure.
    """
    with open("/proc/stat") as f:
        values = [int(x) for x in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return (total - idle) / _TICK, total / _TICK


# /proc/<pid>/task/<tid>/children needs CONFIG_PROC_CHILDREN, which some kernels (this VM's)
# lack; without it the process tree comes from every process's parent pid instead.
_HAS_CHILDREN_FILE = os.path.exists(f"/proc/self/task/{os.getpid()}/children")


def _children_from_files(pid: int) -> list[int]:
    """Direct children of pid, per thread (a child belongs to the thread that forked it)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:  # gone
        return []
    out: list[int] = []
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(x) for x in f.read().split())
        except OSError:  # the thread (or the whole process) ended meanwhile
            continue
    return out


def _parents() -> dict[int, list[int]]:
    """ppid -> children, for every process now alive (one pass over /proc)."""
    tree: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        ppid = proc_ppid(int(name))
        if ppid is not None:  # else it ended between listdir and open
            tree.setdefault(ppid, []).append(int(name))
    return tree


def tree_pids(pid: int, *, use_children_file: bool | None = None) -> list[int]:
    """pid and all its descendants alive now, parents before children; [] if pid is gone.

    Processes may end while the tree is walked: they are simply left out.
    """
    if not os.path.exists(f"/proc/{pid}"):
        return []
    use_files = _HAS_CHILDREN_FILE if use_children_file is None else use_children_file
    parents = None if use_files else _parents()
    out: list[int] = []
    todo = [pid]
    seen: set[int] = set()
    while todo:
        p = todo.pop(0)
        if p in seen:  # pid reuse between reads could otherwise loop
            continue
        seen.add(p)
        out.append(p)
        todo.extend(_children_from_files(p) if parents is None else parents.get(p, []))
    return out


def tree_cpus(pid: int) -> dict[int, ProcCpu]:
    """utime+stime of pid and of each live descendant, by pid (vanished ones left out)."""
    out: dict[int, ProcCpu] = {}
    for p in tree_pids(pid):
        try:
            out[p] = proc_cpu(p)
        except (OSError, IndexError, ValueError):
            continue
    return out


def tree_cpu(pid: int) -> ProcCpu:
    """utime+stime summed over pid and its live descendants (a front and its workers).

    Descendants that already exited are not counted: their CPU moves to their parent's
    cutime/cstime only once reaped, so a window must not span a worker's death.
    """
    cpus = tree_cpus(pid).values()
    return ProcCpu(sum(c.user_s for c in cpus), sum(c.system_s for c in cpus))


def proc_ppid(pid: int) -> int | None:
    """The parent's pid, or None once the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])  # field 4
    except (OSError, IndexError, ValueError):
        return None

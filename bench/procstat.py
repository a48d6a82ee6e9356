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

"""PNG plots: the forward sweep (per subscriber count and system) and the worker sweep."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any


def save(fig: Any, path: Path) -> Path:
    """Lay out, write as PNG (creating the folder) and free the figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _foreign_cores(runs: list[dict[str, Any]]) -> float:
    """Mean CPU other processes took during the windows: shown on every plot."""
    return sum(r.get("foreign_cpu_cores", 0) for r in runs) / max(1, len(runs))


def plot_forward(results: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on the benchmark machines
    import matplotlib.pyplot as plt

    runs = [r for r in results if r.get("kind") == "run"]
    series: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        name = r["system"] if r["config"] == "default" and r["system"] == "hoinghi" else (
            f"{r['system']} ({r['config']})")
        series.setdefault(name, []).append(r)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    panels = (("cpu_us_per_pkt", "server CPU µs per forwarded packet"),
              ("server_cpu_cores", "server CPU (cores)"),
              ("latency_p99_ms", "added latency p99 through the server (ms)"))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (key, title) in zip(axes, panels, strict=True):
        for i, (name, rs) in enumerate(sorted(series.items())):
            pts = [(r["subscribers"], r[key]) for r in rs if r.get(key) is not None]
            if not pts:
                continue
            color = colors[i % len(colors)]
            # Every run as a dot (the spread is the noise), the median per size as the line.
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=color, alpha=0.35, s=18)
            sizes = sorted({p[0] for p in pts})
            medians = [statistics.median(v for s, v in pts if s == size) for size in sizes]
            ax.plot(sizes, medians, "o-", color=color, label=name)
        ax.set_title(title)
        ax.set_xlabel("subscribers")
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
    axes[0].legend()
    fig.suptitle(forward_title(runs))
    return save(fig, path)


def forward_title(runs: list[dict[str, Any]]) -> str:
    """The forward plot's title: the machine, where the server ran, the foreign load."""
    machine = runs[0] if runs else {}
    where = machine.get("placement")
    pinned = f"; server on CPUs {where['server']}, load on {where['load']}" if where else ""
    return (f"1 publisher (VP8 + Opus) → N subscribers on loopback; "
            f"{machine.get('cores', '?')} cores{pinned}, other processes used "
            f"{_foreign_cores(runs):.2f} cores on average during the windows")


def plot_scale(results: list[dict[str, Any]], path: Path, mode: str) -> Path:
    """Worker sweep: forwarded packets/s, server CPU and µs per packet against workers.

    The dashed "ideal" lines scale the smallest worker count's medians with the offered load
    (rooms): linear when rooms grow with workers, flat for a fixed load.
    """
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on the benchmark machines
    import matplotlib.pyplot as plt

    runs = [r for r in results if r.get("kind") == "run"]
    ws = sorted({r["workers"] for r in runs})
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    panels = (("fwd_pps", "forwarded packets/s (all rooms)", True),
              ("server_cpu_cores", "server CPU, front + workers (cores)", True),
              ("cpu_us_per_pkt", "server CPU µs per forwarded packet", False))
    for ax, (key, title, grows) in zip(axes, panels, strict=True):
        pts = [(r["workers"], r[key]) for r in runs if r.get(key) is not None]
        if not pts:
            continue
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], color="C0", alpha=0.35, s=18)
        xs = [w for w in ws if any(p[0] == w for p in pts)]
        med = [statistics.median(v for w_, v in pts if w_ == w) for w in xs]
        ax.plot(xs, med, "o-", color="C0", label="measured (median)")
        rooms = {r["workers"]: r["rooms"] for r in runs}
        ideal = [med[0] * (rooms[w] / rooms[xs[0]] if grows else 1.0) for w in xs]
        ax.plot(xs, ideal, "--", color="gray", label="ideal")
        if key == "server_cpu_cores":
            busiest = [statistics.median(r["max_proc_cpu_cores"] for r in runs
                                         if r["workers"] == w) for w in xs]
            ax.plot(xs, busiest, "s:", color="C1", label="busiest process")
        ax.set_title(title)
        ax.set_xlabel("workers")
        ax.set_xticks(ws)
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
        ax.legend()
    first = runs[0] if runs else {}
    foreign = _foreign_cores(runs)
    load = ("rooms ∝ workers" if mode == "proportional"
            else f"{first.get('rooms', '?')} rooms for every worker count")
    fig.suptitle(f"hoinghi serve --workers W: {load}, 1 publisher → "
                 f"{first.get('subscribers_per_room', '?')} subscribers per room; "
                 f"{first.get('cores', '?')} cores, other processes used {foreign:.2f} cores")
    return save(fig, path)

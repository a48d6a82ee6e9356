"""PNG plot of a sweep: CPU per forwarded packet and server CPU vs subscribers, per system."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any


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
    machine = runs[0] if runs else {}
    foreign = sum(r.get("foreign_cpu_cores", 0) for r in runs) / max(1, len(runs))
    fig.suptitle(f"1 publisher (VP8 + Opus) → N subscribers on loopback; "
                 f"{machine.get('cores', '?')} cores, other processes used {foreign:.2f} "
                 f"cores on average during the windows")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

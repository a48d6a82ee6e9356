"""`hoinghi bench idle`: what an idle bridge costs the server (the fixed cost per connection).

Most bridges of a national conference are idle most of the time: a commune without the floor
holds its signaling session and a publisher connection whose camera and microphone are paused.
At 3,356 bridges their fixed cost is cores, whatever the forwarding loop costs.

One run: `hoinghi serve`, then B idle bridges (bench/idle_peers.py, `--per-proc` per process),
all joined (and connected) before a warm-up and a window; server CPU and wake-ups (voluntary
context switches) over the window. A sweep over B fits a line: the slope is the cost of one
more idle bridge (CPU µs per second, wake-ups per second), the intercept the idle server.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.forward import fit_line
from bench.hoinghi_target import HoinghiServer
from bench.httpc import request_json
from bench.procs import Child, spawn, stop_all
from bench.procstat import machine_cpu, proc_cpu, proc_rss_mb, proc_wakeups, tree_cpu
from signaling.auth import issue_token

NATIONAL_BRIDGES = 3356  # 1 HQ + 34 provinces + 3,321 communes


@dataclass(frozen=True)
class IdleOptions:
    seconds: float = 20.0
    warmup: float = 4.0
    per_proc: int = 50
    connection: str = "publisher"  # publisher: signaling + a paused publisher; none: signaling
    # adhoc: a room made by its first join (everyone told of everyone); featured / full: a
    # conference created through the API with that roster (docs/signaling.md, Roster)
    roster: str = "adhoc"
    park_idle_after_s: float | None = None  # `serve --park-idle-after` (None: its default)
    connect_timeout: float = 120.0


def _snapshot(server: HoinghiServer, children: list[Child]) -> dict[str, Any]:
    busy, total = machine_cpu()
    return {"t": time.monotonic(), "server_cpu_s": proc_cpu(server.pid).total_s,
            "server_wakeups": proc_wakeups(server.pid), "machine_busy_s": busy,
            "machine_total_s": total,
            "bench_cpu_s": sum(tree_cpu(c.pid).total_s for c in children)}


async def run_idle(bridges: int, opts: IdleOptions, workdir: Path) -> dict[str, Any]:
    """One measurement. Raises on any failure; never leaves a process behind."""
    workdir.mkdir(parents=True, exist_ok=True)
    park = opts.park_idle_after_s
    server = HoinghiServer(workdir, serve_args=() if park is None else (
        "--park-idle-after", f"{park:g}"))
    children: list[Child] = []
    try:
        await server.start()
        roster = "adhoc"
        if opts.roster != "adhoc":
            chair = issue_token(server.secret, server.room, "bench-chair", "chair", ttl_s=3600)
            created = await request_json("POST", server.url + "/api/rooms",
                                         {"room": server.room, "roster": opts.roster},
                                         headers={"Authorization": f"Bearer {chair}"})
            roster = created["roster"]  # as the server made it
        spec = json.dumps(server.spec())
        t0, cpu0 = time.monotonic(), proc_cpu(server.pid).total_s
        for i, first in enumerate(range(0, bridges, opts.per_proc)):
            count = min(opts.per_proc, bridges - first)
            children.append(await spawn(
                f"idle{i}", [sys.executable, "-m", "bench.idle_peers", "--spec", spec,
                             "--count", str(count), "--connection", opts.connection,
                             "--timeout", str(opts.connect_timeout)],
                workdir / f"idle{i}.log"))
        await asyncio.gather(*(c.read_json(opts.connect_timeout + 30) for c in children))
        connect_s = time.monotonic() - t0
        join_cpu_s = proc_cpu(server.pid).total_s - cpu0  # the joins (all bridges at once)
        await asyncio.sleep(opts.warmup)
        s0 = _snapshot(server, children)
        await asyncio.sleep(opts.seconds)
        s1 = _snapshot(server, children)
        (workdir / "raw.json").write_text(json.dumps({"s0": s0, "s1": s1}))
        return summarize(bridges, opts, s0, s1, {"roster": roster,
            "server_rss_mb": round(proc_rss_mb(server.pid), 1),
            "connect_s": round(connect_s, 2), "join_server_cpu_s": round(join_cpu_s, 3),
            "join_server_ms_per_bridge": round(join_cpu_s * 1e3 / bridges, 2) if bridges
            else None})
    finally:
        await stop_all(children)
        await server.stop()


def summarize(bridges: int, opts: IdleOptions, s0: dict[str, Any], s1: dict[str, Any],
              extra: dict[str, Any]) -> dict[str, Any]:
    dt = s1["t"] - s0["t"]

    def rate(key: str) -> float:
        return (s1[key] - s0[key]) / dt

    server = rate("server_cpu_s")
    bench = rate("bench_cpu_s")
    machine = rate("machine_busy_s")
    return {
        "kind": "run", "bench": "idle", "connection": opts.connection, "roster": opts.roster,
        "bridges": bridges,
        "park_idle_after_s": opts.park_idle_after_s,
        "window_s": round(dt, 2),
        "server_cpu_cores": round(server, 4),
        "server_us_per_bridge_s": round(server * 1e6 / bridges, 1) if bridges else None,
        "server_wakeups_per_s": round(rate("server_wakeups"), 1),
        "bench_cpu_cores": round(bench, 3),
        "foreign_cpu_cores": round(max(0.0, machine - server - bench), 3),
        "cores": os.cpu_count(), "loadavg1": round(os.getloadavg()[0], 2), **extra,
    }


def idle_summary(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per connection mode and parking setting: the cost of one more idle bridge (least
    squares over the sweep)."""
    out = []
    done = [r for r in results if r.get("kind") == "run"]
    for mode, park, roster in sorted({_series(r) for r in done}, key=str):
        runs = [r for r in done if _series(r) == (mode, park, roster)]
        if len({r["bridges"] for r in runs}) < 2:
            continue
        cpu, cpu0 = fit_line([(r["bridges"], r["server_cpu_cores"]) for r in runs])
        wake, wake0 = fit_line([(r["bridges"], r["server_wakeups_per_s"]) for r in runs])
        out.append({
            "kind": "idle_fit", "connection": mode, "park_idle_after_s": park,
            "roster": runs[0].get("roster", "adhoc"),
            "points": len(runs),
            "us_per_bridge_s": round(cpu * 1e6, 1),  # CPU µs per second per idle bridge
            "idle_server_cores": round(cpu0, 4),
            "wakeups_per_bridge_s": round(wake, 3), "idle_server_wakeups_per_s": round(wake0, 1),
            "bridges_per_core": round(1 / cpu) if cpu > 0 else None,
            "national_cores": round(cpu * NATIONAL_BRIDGES, 2),
        })
    return out


def _series(run: dict[str, Any]) -> tuple[str, float | None, str]:
    return run["connection"], run.get("park_idle_after_s"), run.get("roster", "adhoc")


def plot_idle(results: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on the benchmark machines
    import matplotlib.pyplot as plt

    from bench.plot import save

    runs = [r for r in results if r.get("kind") == "run"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    panels = (("server_cpu_cores", "server CPU (cores)"),
              ("server_wakeups_per_s", "server wake-ups per second"))
    for ax, (key, title) in zip(axes, panels, strict=True):
        for i, series in enumerate(sorted({_series(r) for r in runs}, key=str)):
            mode, park, roster = series
            pts = [(r["bridges"], r[key]) for r in runs if _series(r) == series]
            xs = sorted({b for b, _ in pts})
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=f"C{i}", alpha=0.35)
            ax.plot(xs, [statistics.median(v for b, v in pts if b == x) for x in xs], "o-",
                    color=f"C{i}", label=f"connection: {mode}, {roster}" + (
                        "" if park is None else f", park after {park:g} s"))
        ax.set_title(title)
        ax.set_xlabel("idle bridges")
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
        ax.legend()
    cores = runs[0].get("cores", "?") if runs else "?"
    fig.suptitle(f"hoinghi serve with idle bridges (joined, no media); {cores} cores")
    return save(fig, path)

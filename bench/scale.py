"""Worker scaling: one `hoinghi serve --workers W`, many rooms, each 1 publisher → S subscribers.

Sequence: start the server (front + W workers) → the rooms' publishers one after another (each
connected before the next: a room goes to the least-loaded worker at its first join, so
sequential first joins spread the rooms evenly) → every room's subscriber processes at once
(all connected, media flowing) → warm-up → snapshot → window → snapshot → stop everything.
Server CPU is utime+stime of the front and every worker (the whole process tree) across the
window, also reported per process; forwarded packets are what all subscribers received.
Everything is torn down in a `finally`, whatever happens.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.forward import (
    Latency,
    classify_bad,
    delivery,
    measure_window,
    packet_denominator,
    server_count,
    spawn_subscribers,
)
from bench.hoinghi_target import HoinghiServer
from bench.procs import Child, spawn, stop_all
from bench.procstat import machine_cpu, proc_cpu, proc_ppid, proc_rss_mb, tree_cpus


@dataclass(frozen=True)
class ScaleOptions:
    seconds: float = 15.0
    warmup: float = 4.0
    full: int = 1  # decoding subscribers in each checked room (frame checks, latency)
    # Rooms that get decoding subscribers (the first ones; None: one per worker, since rooms
    # are spread in order). The others only count packets: the benchmark's own CPU stays small.
    full_rooms: int | None = None
    per_proc: int = 25  # light subscribers per process
    bitrate: int = 1_000_000
    connect_timeout: float = 90.0
    # `serve --span-after N`: one conference's subscribers on its home worker before the
    # rest go to the other workers over pipes (sfu/span.py). None: the server's default.
    span_after: int | None = None


@dataclass
class _Room:
    name: str
    decoding: bool
    pub: int  # index into the children list (and so into each snapshot's replies)
    subs: list[int] = field(default_factory=list)


async def _snapshot(server: HoinghiServer, children: list[Child], first: bool
                    ) -> dict[str, Any]:
    # As bench forward: the server's counter query costs server CPU, so it is read outside
    # the CPU window (before the first CPU reading, after the last one).
    counted = await server_count(server) if first else None
    by_worker = dict(server.forwarded_by_worker)
    replies = await asyncio.gather(*(c.ask("snap", 20) for c in children))
    cpus = tree_cpus(server.pid)
    if not first:
        counted = await server_count(server)
        by_worker = dict(server.forwarded_by_worker)
    if server.child is not None and server.child.proc.returncode is not None:
        raise RuntimeError(f"hoinghi serve exited:\n{server.child.log_tail()}")
    return {
        "server_count": counted,
        "by_worker": by_worker,
        "t": time.time(),
        "cpus": {pid: [c.user_s, c.system_s] for pid, c in cpus.items()},
        "machine": machine_cpu(),
        "children_cpu": sum(proc_cpu(c.pid).total_s for c in children),
        "replies": replies,
    }


def _server_procs(root: int, workers: int, s0: dict[str, Any], s1: dict[str, Any],
                  dt: float) -> list[dict[str, Any]]:
    """CPU cores of each server process over the window: the front first, then by pid."""
    procs = []
    for pid in sorted(set(s0["cpus"]) & set(s1["cpus"]), key=lambda p: (p != root, p)):
        (u0, y0), (u1, y1) = s0["cpus"][pid], s1["cpus"][pid]
        if pid == root:
            role = "front" if workers > 1 else "server"
        else:  # the front's own children are its workers; anything deeper is a helper
            role = "worker" if proc_ppid(pid) == root else "other"
        procs.append({"pid": pid, "role": role, "cpu_cores": round((u1 - u0 + y1 - y0) / dt, 3),
                      "cpu_s": u1 - u0 + y1 - y0, "sys_s": y1 - y0})
    return procs


def _rnd(x: float | None, nd: int = 2) -> float | None:
    return None if x is None else round(x, nd)


def summarize_scale(workers: int, rooms: list[_Room], subscribers_per_room: int, root: int,
                    s0: dict[str, Any], s1: dict[str, Any], finals: list[dict[str, Any]],
                    extra: dict[str, Any]) -> dict[str, Any]:
    dt = s1["t"] - s0["t"]
    r0, r1 = s0["replies"], s1["replies"]
    fwd_pps = pub_pps = offered = 0.0
    received = expected = 0
    lat = Latency()
    bad = {"transit": 0, "source": 0, "source_total": 0}
    sub_finals_all: list[dict[str, Any]] = []
    for room in rooms:
        pps, got, exp = delivery([r0[i] for i in room.subs], [r1[i] for i in room.subs])
        fwd_pps += pps
        received += got
        expected += exp
        p0, p1 = r0[room.pub], r1[room.pub]
        room_pub_pps = (p1["packets"] - p0["packets"]) / (p1["t"] - p0["t"])
        pub_pps += room_pub_pps
        offered += room_pub_pps * subscribers_per_room
        sub_finals = [finals[i] for i in room.subs]
        sub_finals_all += sub_finals
        if room.decoding:
            lat.add(finals[room.pub], sub_finals, s0["t"], s1["t"])
            for k, v in classify_bad(finals[room.pub], sub_finals).items():
                bad[k] += v
    procs = _server_procs(root, workers, s0, s1, dt)
    server_cpu = sum(p.pop("cpu_s") for p in procs)
    server_sys = sum(p.pop("sys_s") for p in procs)
    server_fwd_pps, agree, denom_pps = packet_denominator(s0, s1, fwd_pps)
    bench_cpu = s1["children_cpu"] - s0["children_cpu"]
    busy = s1["machine"][0] - s0["machine"][0]
    # The front's /metrics labels each worker's series: packets/s per worker show the split.
    b0, b1 = s0["by_worker"], s1["by_worker"]
    worker_fwd = {k: round((b1[k] - b0.get(k, 0.0)) / dt, 1) for k in sorted(b1) if k}
    worker_cores = [p["cpu_cores"] for p in procs if p["role"] == "worker"]
    return {
        "kind": "run",
        "bench": "scale",
        "system": "hoinghi",
        "workers": workers,
        "rooms": len(rooms),
        "subscribers_per_room": subscribers_per_room,
        "subscribers": subscribers_per_room * len(rooms),
        "window_s": round(dt, 2),
        "fwd_pps": round(fwd_pps, 1),
        "server_fwd_pps": _rnd(server_fwd_pps, 1),  # the server's own count, cross-check
        "pkt_count_from": "server" if agree else "subscribers",
        "pub_pps": round(pub_pps, 1),
        "cpu_us_per_pkt": round(server_cpu / (denom_pps * dt) * 1e6, 2) if denom_pps else None,
        "server_cpu_cores": round(server_cpu / dt, 3),
        "server_sys_share": round(server_sys / server_cpu, 2) if server_cpu else None,
        "front_cpu_cores": procs[0]["cpu_cores"] if workers > 1 and procs else None,
        "worker_cpu_cores": worker_cores,
        "max_proc_cpu_cores": max((p["cpu_cores"] for p in procs), default=None),
        "server_procs": procs,
        "worker_fwd_pps": worker_fwd or None,
        "loss_pct": round(100 * max(0, expected - received) / expected, 3) if expected else None,
        "delivered_pct": round(100 * fwd_pps / offered, 2) if offered else None,
        **lat.fields(),
        "decoding_rooms": sum(r.decoding for r in rooms),
        "frames_checked": sum(f.get("frames_checked", 0) for f in sub_finals_all),
        "frames_bad": bad["transit"],
        "frames_bad_at_source": bad["source"],
        "source_frames_bad": bad["source_total"],
        "bench_cpu_cores": round(bench_cpu / dt, 3),
        # CPU used by processes that are not part of this run: a shared machine's noise.
        "foreign_cpu_cores": round(max(0.0, busy - server_cpu - bench_cpu) / dt, 3),
        "cores": os.cpu_count(),
        "loadavg1": round(os.getloadavg()[0], 2),
        **extra,
    }


async def run_scale(workers: int, rooms: int, subscribers_per_room: int, opts: ScaleOptions,
                    workdir: Path) -> dict[str, Any]:
    """One measurement. Raises on any failure; never leaves a process behind."""
    workdir.mkdir(parents=True, exist_ok=True)
    server = HoinghiServer(workdir, workers=workers, span_after=opts.span_after)
    children: list[Child] = []
    py = sys.executable
    full_rooms = workers if opts.full_rooms is None else opts.full_rooms
    try:
        t_start = time.monotonic()
        await server.start(timeout=30 + 15 * workers)  # W processes import aiortc at once
        plan: list[_Room] = []
        for r in range(rooms):
            room = _Room(f"{server.room}-r{r}", decoding=r < full_rooms and opts.full > 0,
                         pub=len(children))
            # Without decoding subscribers nobody needs the source's own pictures checked.
            check = [] if room.decoding else ["--no-source-check"]
            pub = await spawn(f"publisher{r}",
                              [py, "-m", "bench.publisher", "--spec",
                               json.dumps(server.spec(room.name)), "--bitrate", str(opts.bitrate),
                               *check], workdir / f"room{r}" / "publisher.log")
            children.append(pub)
            await pub.read_json(opts.connect_timeout)
            plan.append(room)
        t_conn = time.monotonic()
        subs: list[Child] = []
        for r, room in enumerate(plan):
            first_child = len(children)
            subs += await spawn_subscribers(
                children, server.spec(room.name), subscribers_per_room,
                opts.full if room.decoding else 0, opts.per_proc, opts.connect_timeout,
                workdir / f"room{r}", name=f"room{r}-subscribers")
            room.subs = list(range(first_child, len(children)))
        await asyncio.gather(*(s.read_json(opts.connect_timeout + 30) for s in subs))
        connect_s = time.monotonic() - t_conn
        s0, s1, finals = await measure_window(
            lambda first: _snapshot(server, children, first), children, opts.warmup,
            opts.seconds, workdir)
        rss = sum(proc_rss_mb(int(p)) for p in s1["cpus"])
        extra = {"server_rss_mb": round(rss, 1), "connect_s": round(connect_s, 2),
                 "run_s": round(time.monotonic() - t_start, 1)}
        return summarize_scale(workers, plan, subscribers_per_room, server.pid, s0, s1,
                               finals, extra)
    finally:
        await stop_all(children)
        await server.stop()


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def scale_summary(results: list[dict[str, Any]], mode: str) -> dict[str, Any]:
    """Medians over repeats per worker count, against the smallest worker count (normally 1).

    proportional (rooms ∝ workers): scaling_efficiency = (fwd_pps_W / fwd_pps_ref) /
    (W / W_ref), 1.0 meaning W workers forward W times as much. fixed (same rooms for every
    W): the total stays, and what matters is how the busiest process's CPU falls.
    """
    runs = [r for r in results if r.get("kind") == "run"]
    by_w: dict[int, list[dict[str, Any]]] = {}
    for r in runs:
        by_w.setdefault(r["workers"], []).append(r)
    rows: list[dict[str, Any]] = []
    for w in sorted(by_w):
        rs = by_w[w]
        row: dict[str, Any] = {"workers": w, "rooms": rs[0]["rooms"], "runs": len(rs)}
        for key in ("fwd_pps", "server_cpu_cores", "cpu_us_per_pkt", "max_proc_cpu_cores",
                    "front_cpu_cores", "latency_p99_ms", "foreign_cpu_cores"):
            med = _median([r[key] for r in rs if r.get(key) is not None])
            row[key] = None if med is None else round(med, 3)
        row["loss_pct_max"] = max((r["loss_pct"] for r in rs if r.get("loss_pct") is not None),
                                  default=None)
        rows.append(row)
    ref = rows[0] if rows else None
    for row in rows:
        assert ref is not None
        us, us_ref = row["cpu_us_per_pkt"], ref["cpu_us_per_pkt"]
        row["us_per_pkt_ratio"] = round(us / us_ref, 3) if us and us_ref else None
        if mode == "proportional" and row["fwd_pps"] and ref["fwd_pps"]:
            row["scaling_efficiency"] = round(
                (row["fwd_pps"] / ref["fwd_pps"]) / (row["workers"] / ref["workers"]), 3)
        else:
            row["scaling_efficiency"] = None
    return {"kind": "summary", "bench": "scale", "mode": mode,
            "ref_workers": ref["workers"] if ref else None,
            "failed_runs": sum(1 for r in results if r.get("kind") == "error"), "rows": rows}

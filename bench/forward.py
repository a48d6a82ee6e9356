"""One forwarding measurement: a server, one publisher, N subscribers, a steady-state window.

Sequence: start the server (→ pid) → publisher process (connected) → subscriber processes (all
connected, audio and video flowing) → warm-up → snapshot → window → snapshot → stop everything.
Server CPU is utime+stime from /proc/<pid>/stat across the window; forwarded packets are what the
subscribers received in it (the same denominator for every system). Everything is torn down in a
`finally`, whatever happens.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procs import Child, placement, spawn, stop_all
from bench.procstat import ProcCpu, machine_cpu, proc_cpu, proc_rss_mb, proc_wakeups
from bench.targets import Server, make_server


@dataclass(frozen=True)
class ForwardOptions:
    seconds: float = 20.0
    warmup: float = 4.0
    full: int = 2  # decoding subscribers (they check frame numbers and measure latency)
    per_proc: int = 25  # light subscribers per process
    bitrate: int = 1_000_000
    connect_timeout: float = 90.0
    loss: float = 0.0  # % of RTP packets every subscriber drops on arrival (bench/lossy.py)


def plan_processes(n: int, full: int, per_proc: int) -> list[tuple[int, int]]:
    """(count, decoding) per subscriber process. Decoders get a process of their own so their
    arrival timestamps are not delayed behind a busy light-subscriber event loop."""
    full = min(full, n)
    groups: list[tuple[int, int]] = [(full, full)] if full else []
    light = n - full
    procs = math.ceil(light / per_proc) if light else 0
    for i in range(procs):
        groups.append((light // procs + (1 if i < light % procs else 0), 0))
    return groups


async def server_count(server: Server) -> tuple[float, int | None]:
    try:
        return time.time(), await server.forwarded_packets()
    except Exception:  # a cross-check only: its absence must not fail the run
        return time.time(), None


def router_delta(s0: dict[str, Any], s1: dict[str, Any], name: str) -> float | None:
    """A hoinghi router counter's growth over the window; None where the server has none
    (Janus)."""
    key = f"hoinghi_router_{name}"
    c0, c1 = s0.get("counters") or {}, s1.get("counters") or {}
    return c1[key] - c0[key] if key in c0 and key in c1 else None


def _ingress(s0: dict[str, Any], s1: dict[str, Any]) -> dict[str, Any]:
    """hoinghi only: datagrams its direct ingress read per event-loop wake-up, and RTP packets
    per batch handed to the fan-out, over the window (batching is what sendmmsg pays on)."""
    def d(name: str) -> float:
        return router_delta(s0, s1, name) or 0.0
    wakeups, batches = d("ingress_wakeups"), d("ingress_rtp_batches")
    if not wakeups:
        return {}
    dt = s1["t"] - s0["t"]
    enters = d("fanout_uring_enters")
    return {"ingress_datagrams_per_wakeup": round(d("ingress_datagrams") / wakeups, 2),
            "ingress_rtp_per_batch": (round(d("ingress_rtp_packets") / batches, 2)
                                      if batches else None),
            # Packets per second that left in UDP GSO messages (sfu/fastpath/fanout.c).
            "fanout_gso_pps": round(d("fanout_gso_packets") / dt, 1) if dt > 0 else None,
            # Sends (datagrams or GSO messages) per io_uring_enter() (sfu/fastpath/uring.c);
            # None: the sends were plain syscalls (HOINGHI_URING=0, or the kernel refused it).
            "fanout_sends_per_uring_enter": (round(d("fanout_uring_sends") / enters, 1)
                                             if enters else None)}


def server_cpu(server: Server) -> ProcCpu:
    """hoinghi with workers counts its front and workers together; otherwise the one pid."""
    cpu = getattr(server, "cpu", None)
    return cpu() if cpu is not None else proc_cpu(server.pid)


async def _snapshot(server: Server, children: list[Child], first: bool) -> dict[str, Any]:
    # The server-side counter query costs the server CPU: done outside the CPU window (before
    # the first CPU reading, after the last one).
    counted = await server_count(server) if first else None
    replies = await asyncio.gather(*(c.ask("snap", 20) for c in children))
    cpu = server_cpu(server)
    if not first:
        counted = await server_count(server)
    return {
        "server_count": counted,
        "counters": dict(getattr(server, "counters", {})),
        "t": time.time(),
        "server_user": cpu.user_s,
        "server_sys": cpu.system_s,
        "server_wakeups": proc_wakeups(server.pid),
        "machine": machine_cpu(),
        "children_cpu": sum(proc_cpu(c.pid).total_s for c in children),
        "replies": replies,
    }


def classify_bad(pub_final: dict[str, Any], sub_finals: list[dict[str, Any]]
                 ) -> dict[str, int]:
    source_bad = set(pub_final.get("source_bad") or [])
    transit = source = 0
    for fin in sub_finals:
        numbers = [n for per_sub in fin.get("bad_numbers", []) for n in per_sub]
        at_source = sum(1 for n in numbers if n in source_bad)
        source += at_source
        # Bad frames whose number could not be inferred count against the transit: no excuse.
        transit += fin.get("frames_bad", 0) - at_source
    return {"transit": transit, "source": source, "source_total": len(source_bad)}


def fit_line(pts: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares (slope, intercept) of y on x; needs two distinct x."""
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    slope = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)
    return slope, my - slope * mx


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def _rnd(x: float | None, nd: int = 2) -> float | None:
    return None if x is None else round(x, nd)


def subscribers_delta(subs0: list[dict[str, Any]], subs1: list[dict[str, Any]], key: str
                      ) -> int:
    """A subscriber counter's growth over the window, all subscribers of all processes."""
    return sum(y[key] - x[key] for a, b in zip(subs0, subs1, strict=True)
               for x, y in zip(a["subs"], b["subs"], strict=True))


def delivery(subs0: list[dict[str, Any]], subs1: list[dict[str, Any]]
             ) -> tuple[float, int, int]:
    """(packets/s, received, expected) over subscriber processes' two snapshots."""
    fwd_pps = 0.0
    received = 0
    for a, b in zip(subs0, subs1, strict=True):
        got = subscribers_delta([a], [b], "received")
        fwd_pps += got / (b["t"] - a["t"])  # each process's own window
        received += got
    return fwd_pps, received, subscribers_delta(subs0, subs1, "expected")


def repair(s0: dict[str, Any], s1: dict[str, Any]) -> dict[str, Any]:
    """`--loss`: what the subscribers dropped and asked for again, and what came back, over the
    window; the server's retransmissions (hoinghi's counter, None for Janus)."""
    dt = s1["t"] - s0["t"]
    def d(key: str) -> int:
        return subscribers_delta(s0["replies"][1:], s1["replies"][1:], key)
    recovered, given_up = d("nack_recovered"), d("nack_given_up")
    expected = d("nacked_expected")
    rtx = router_delta(s0, s1, "retransmitted")
    return {
        "dropped_pps": round(d("dropped") / dt, 1),
        "nack_pps": round(d("nacks") / dt, 1),  # NACK packets, light subscribers
        "nack_asked_pps": round(d("nack_asked") / dt, 1),
        "rtx_pps": round(rtx / dt, 1) if rtx is not None else None,
        # Of the video packets the light subscribers asked for, the share that came back, by
        # RTX or itself (those still being asked for at the window's end left out).
        "nack_repaired_pct": (round(100 * recovered / (recovered + given_up), 2)
                              if recovered + given_up else None),
        # What NACK left lost: the light subscribers' video packets never repaired.
        "video_unrepaired_pct": round(100 * given_up / expected, 3) if expected else None,
    }


def packet_denominator(s0: dict[str, Any], s1: dict[str, Any], fwd_pps: float
                       ) -> tuple[float | None, bool, float]:
    """(server's own packets/s, whether it agrees, the packets/s to divide CPU by)."""
    (c0t, c0), (c1t, c1) = s0["server_count"], s1["server_count"]
    server_fwd_pps = (c1 - c0) / (c1t - c0t) if c0 is not None and c1 is not None else None
    # The CPU denominator. Subscribers' counts are independent of the system under test, but a
    # receiver process that lags (a loaded machine) shifts packets across the window's edges:
    # ±5 % at N = 50 on 2 busy cores. The server's own counter is read right next to its CPU
    # reading, so it is used when it agrees with the subscribers' count within 10 %; a server
    # that over-counts would disagree and fall back to the subscribers' figure.
    agree = (server_fwd_pps is not None and fwd_pps > 0
             and abs(server_fwd_pps - fwd_pps) <= 0.1 * fwd_pps)
    return server_fwd_pps, agree, (server_fwd_pps if agree and server_fwd_pps else fwd_pps)


class Latency:
    """Added latency samples: frames whose last packet left a publisher inside the window."""

    def __init__(self) -> None:
        self.lat: list[float] = []  # kernel receive at the subscriber − publisher's send
        self.app: list[float] = []  # same, but when the subscriber's Python got to the packet
        self.e2e: list[float] = []  # from the frame's production (includes encoding)
        self.kernel_samples = 0

    def add(self, pub_final: dict[str, Any], sub_finals: list[dict[str, Any]],
            t0: float, t1: float) -> None:
        """One room: its publisher's frame log against its decoding subscribers' arrivals."""
        sent = {int(n_): (p, s) for n_, p, s in pub_final["frame_log"] if s is not None}
        for fin in sub_finals:
            for decoded in fin.get("decoded", []):
                for fn, kernel, app in decoded:
                    ps = sent.get(fn)
                    if ps and t0 <= ps[1] <= t1:
                        arrival = app if kernel is None else kernel
                        self.kernel_samples += kernel is not None
                        self.lat.append((arrival - ps[1]) * 1000)
                        self.app.append((app - ps[1]) * 1000)
                        self.e2e.append((arrival - ps[0]) * 1000)

    def fields(self) -> dict[str, Any]:
        lat = self.lat
        return {
            "latency_p50_ms": _rnd(_percentile(lat, 0.5)),
            "latency_p99_ms": _rnd(_percentile(lat, 0.99)),
            "latency_mean_ms": _rnd(statistics.fmean(lat)) if lat else None,
            "app_latency_p50_ms": _rnd(_percentile(self.app, 0.5)),
            "app_latency_p99_ms": _rnd(_percentile(self.app, 0.99)),
            "e2e_p50_ms": _rnd(_percentile(self.e2e, 0.5)),
            "latency_samples": len(lat),
            # Share of samples timed by the kernel (SO_TIMESTAMPNS); the rest by the receiver's
            # Python, which adds its own scheduling delay.
            "latency_kernel_share": round(self.kernel_samples / len(lat), 3) if lat else None,
        }


def summarize(system: str, config: str, n: int, opts: ForwardOptions, s0: dict[str, Any],
              s1: dict[str, Any], pub_final: dict[str, Any], sub_finals: list[dict[str, Any]],
              extra: dict[str, Any]) -> dict[str, Any]:
    dt = s1["t"] - s0["t"]
    pub0, pub1 = s0["replies"][0], s1["replies"][0]
    fwd_pps, received, expected = delivery(s0["replies"][1:], s1["replies"][1:])
    server_cpu = (s1["server_user"] - s0["server_user"]) + (s1["server_sys"] - s0["server_sys"])
    busy = s1["machine"][0] - s0["machine"][0]
    ours = server_cpu + (s1["children_cpu"] - s0["children_cpu"])
    lat = Latency()
    lat.add(pub_final, sub_finals, s0["t"], s1["t"])
    bad = classify_bad(pub_final, sub_finals)
    pub_pps = (pub1["packets"] - pub0["packets"]) / (pub1["t"] - pub0["t"])
    server_fwd_pps, agree, denom_pps = packet_denominator(s0, s1, fwd_pps)
    return {
        "kind": "run",
        "system": system,
        "config": config,
        "subscribers": n,
        "window_s": round(dt, 2),
        "fwd_pps": round(fwd_pps, 1),
        "server_fwd_pps": _rnd(server_fwd_pps, 1),  # the server's own count, cross-check
        "pub_pps": round(pub_pps, 1),
        "pub_kbps": round((pub1.get("bytes", 0) - pub0.get("bytes", 0)) * 8 / 1000 / dt, 1)
        if "bytes" in pub1 else None,
        "cpu_us_per_pkt": round(server_cpu / (denom_pps * dt) * 1e6, 2) if denom_pps else None,
        "pkt_count_from": "server" if agree else "subscribers",
        "server_cpu_cores": round(server_cpu / dt, 3),
        "server_sys_share": round((s1["server_sys"] - s0["server_sys"]) / server_cpu, 2)
        if server_cpu else None,
        # The server process's sleeps that a datagram or timer ended (its main process only).
        "server_wakeups_per_s": round((s1["server_wakeups"] - s0["server_wakeups"]) / dt, 1),
        "loss_pct": round(100 * max(0, expected - received) / expected, 3) if expected else None,
        "delivered_pct": round(100 * fwd_pps / (pub_pps * n), 2) if pub_pps and n else None,
        **lat.fields(),
        "frames_checked": sum(f.get("frames_checked", 0) for f in sub_finals),
        # Bad pictures at decoding subscribers that the publisher's own output did not have:
        # damage in transit (the SFU's, or the receivers'). The source's own (an encoder
        # starved of CPU) are counted apart.
        "frames_bad": bad["transit"],
        "frames_bad_at_source": bad["source"],
        "source_frames_bad": bad["source_total"],
        "frames_bad_why": {k: sum(f.get("frames_bad_why", {}).get(k, 0) for f in sub_finals)
                           for k in ("number", "bar", "order", "start")},
        # Of all bad pictures (transit or source), those whose every RTP packet reached the
        # decoding subscriber: damaged in its own receive path (jitter buffer, decoder) or at
        # the source, not in transit.
        "frames_bad_complete": sum(f.get("frames_bad_complete", 0) for f in sub_finals),
        "pub_unreadable_frames": pub_final.get("unreadable_frames", 0),
        "bench_cpu_cores": round((s1["children_cpu"] - s0["children_cpu"]) / dt, 3),
        # CPU used by processes that are not part of this run: a shared machine's noise.
        "foreign_cpu_cores": round(max(0.0, busy - ours) / dt, 3),
        "cores": os.cpu_count(),
        "loadavg1": round(os.getloadavg()[0], 2),
        **_ingress(s0, s1),
        "loss_injected_pct": opts.loss,
        **(repair(s0, s1) if opts.loss else {}),
        **extra,
    }


async def spawn_subscribers(children: list[Child], spec: dict[str, Any], n: int, full: int,
                            per_proc: int, timeout: float, logdir: Path,
                            name: str = "subscribers", loss: float = 0.0) -> list[Child]:
    """N subscribers of one room in processes (plan_processes); each is added to `children`
    as soon as it exists, so the caller's `finally` stops it whatever happens next."""
    subs: list[Child] = []
    first = 0
    for i, (count, decoding) in enumerate(plan_processes(n, full, per_proc)):
        subs.append(await spawn(
            f"{name}{i}",
            [sys.executable, "-m", "bench.subscribers", "--spec", json.dumps(spec),
             "--count", str(count), "--full", str(decoding), "--first-index", str(first),
             "--timeout", str(timeout), "--loss", str(loss)],
            logdir / f"subscribers{i}.log"))
        children.append(subs[-1])
        first += count
    return subs


async def measure_window(snapshot: Callable[[bool], Awaitable[dict[str, Any]]],
                         children: list[Child], warmup: float, seconds: float, workdir: Path
                         ) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """Warm-up, snapshot, window, snapshot, then every child's final report; all of it is
    kept raw next to the logs (to re-derive or debug a figure later)."""
    await asyncio.sleep(warmup)
    s0 = await snapshot(True)
    await asyncio.sleep(seconds)
    s1 = await snapshot(False)
    finals = list(await asyncio.gather(*(c.ask("stop", 60) for c in children)))
    (workdir / "raw.json").write_text(json.dumps({"s0": s0, "s1": s1, "finals": finals}))
    return s0, s1, finals


async def run_forward(system: str, config: str, n: int, opts: ForwardOptions,
                      workdir: Path) -> dict[str, Any]:
    """One measurement. Raises on any failure; never leaves a process behind."""
    workdir.mkdir(parents=True, exist_ok=True)
    server = make_server(system, workdir, config)
    children: list[Child] = []
    try:
        t_start = time.monotonic()
        await server.start()
        spec = server.spec()
        pub = await spawn("publisher", [sys.executable, "-m", "bench.publisher", "--spec",
                                        json.dumps(spec), "--bitrate", str(opts.bitrate)],
                          workdir / "publisher.log")
        children.append(pub)
        ready = await pub.read_json(opts.connect_timeout)
        if "feed" in ready:  # Janus: subscribers name the publisher's feed
            spec = {**spec, "feed": ready["feed"]}
        t_conn = time.monotonic()
        subs = await spawn_subscribers(children, spec, n, opts.full, opts.per_proc,
                                       opts.connect_timeout, workdir, loss=opts.loss)
        await asyncio.gather(*(s.read_json(opts.connect_timeout + 30) for s in subs))
        connect_s = time.monotonic() - t_conn
        s0, s1, finals = await measure_window(
            lambda first: _snapshot(server, children, first), children, opts.warmup,
            opts.seconds, workdir)
        extra: dict[str, Any] = {"server_rss_mb": round(proc_rss_mb(server.pid), 1),
                                 "placement": placement()}
        extra["connect_s"] = round(connect_s, 2)
        extra["run_s"] = round(time.monotonic() - t_start, 1)
        return summarize(system, config, n, opts, s0, s1, finals[0], list(finals[1:]), extra)
    finally:
        await stop_all(children)
        await server.stop()

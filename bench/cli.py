"""`hoinghi bench …`: forwarding benchmark (against Janus too), worker scaling, micro-benchmarks.

    hoinghi bench forward --subscribers 10 --seconds 20
    hoinghi bench forward --sweep 1,10,25,50 --peer janus --janus-config default,event_loops2
    hoinghi bench scale --workers 1,2,4 --rooms-per-worker 2 --subscribers 10 --seconds 15
    hoinghi bench scale --workers 1,2,4 --fixed-rooms 4 --subscribers 10
    hoinghi bench scale --workers 1,2 --fixed-rooms 1 --subscribers 100 --span-after 50
    hoinghi bench idle --bridges 0,100,200 --connection publisher,none --park-idle-after 0,2
    hoinghi bench micro

stdout carries JSON lines only (one per measurement, plus one "ratio" line per size when a peer
is compared); progress and a human table go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"  # gitignored


def _sizes(text: str) -> list[int]:
    sizes = [int(x) for x in text.split(",") if x.strip()]
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("sizes must be positive integers, comma-separated")
    return sizes


def _counts(text: str) -> list[int]:
    counts = [int(x) for x in text.split(",") if x.strip()]
    if not counts or min(counts) < 0:
        raise argparse.ArgumentTypeError("counts must be integers >= 0, comma-separated")
    return counts


def _floats(text: str) -> list[float]:
    values = [float(x) for x in text.split(",") if x.strip()]
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError("values must be numbers >= 0, comma-separated")
    return values


def _cpus(text: str) -> set[int]:
    """"0", "0,2", "0-3": CPU numbers as taskset takes them."""
    cpus: set[int] = set()
    try:
        for part in _names(text):
            lo, _, hi = part.partition("-")
            cpus.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a CPU list: {text!r}") from None
    if not cpus or min(cpus) < 0:
        raise argparse.ArgumentTypeError(f"not a CPU list: {text!r}")
    return cpus


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="hoinghi bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    fw = sub.add_parser("forward", help="1 publisher → N subscribers through the SFU, on loopback")
    fw.add_argument("--subscribers", type=int, default=10, help="N (ignored with --sweep)")
    fw.add_argument("--seconds", type=float, default=20, help="steady-state window length")
    fw.add_argument("--sweep", type=_sizes, help="several sizes, e.g. 1,10,25,50 (writes a plot)")
    fw.add_argument("--system", choices=("hoinghi", "janus"), default="hoinghi",
                    help="the system under test (janus: validate the harness on Janus alone)")
    fw.add_argument("--peer", choices=("janus",), help="also run the same load against Janus")
    fw.add_argument("--janus-config", type=_names, default=["default"],
                    help="Janus configurations, comma-separated: default,event_loops2")
    fw.add_argument("--full", type=int, default=2, help="subscribers that decode and check")
    fw.add_argument("--warmup", type=float, default=4, help="seconds before the window")
    fw.add_argument("--per-proc", type=int, default=25, help="light subscribers per process")
    fw.add_argument("--bitrate", type=int, default=1_000_000, help="publisher VP8 bit/s")
    fw.add_argument("--repeat", type=int, default=1, help="runs per size and system")
    fw.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder")
    fw.add_argument("--loss", type=float, default=0.0,
                    help="%% of RTP packets each subscriber drops on arrival; light ones NACK "
                         "the video (bench/lossy.py)")
    fw.add_argument("--server-cpus", type=_cpus,
                    help="pin the server (hoinghi or Janus, all threads) to these CPUs, e.g. 0, "
                         "and the publisher, subscribers and this process to the others")
    sc = sub.add_parser("scale", help="`serve --workers W`: many rooms, CPU and packets per W")
    sc.add_argument("--workers", type=_sizes, default=[1, 2, 4],
                    help="worker counts, comma-separated (1: the single process, no front)")
    load = sc.add_mutually_exclusive_group()
    load.add_argument("--rooms-per-worker", type=int, default=2,
                      help="R: W×R rooms at W workers (load proportional to workers)")
    load.add_argument("--fixed-rooms", type=int,
                      help="N rooms for every W (the same load, spread over more workers)")
    sc.add_argument("--subscribers", type=int, default=10, help="subscribers per room")
    sc.add_argument("--seconds", type=float, default=15, help="steady-state window length")
    sc.add_argument("--warmup", type=float, default=4, help="seconds before the window")
    sc.add_argument("--repeat", type=int, default=1, help="runs per worker count")
    sc.add_argument("--pin", action="store_true",
                    help="W workers (and the front) on the first W CPUs, the load on the rest")
    sc.add_argument("--full", type=int, default=1,
                    help="decoding subscribers per checked room (frame checks, latency)")
    sc.add_argument("--full-rooms", type=int,
                    help="rooms with decoding subscribers (default: one per worker; fixed "
                         "rooms: as many as the largest W, so the bench's load stays the same)")
    sc.add_argument("--per-proc", type=int, default=25, help="light subscribers per process")
    sc.add_argument("--span-after", type=int,
                    help="serve --span-after N: a room's subscribers on its home worker before "
                         "the rest go to other workers (one conference over several cores)")
    sc.add_argument("--bitrate", type=int, default=1_000_000, help="publisher VP8 bit/s")
    sc.add_argument("--out", type=Path, default=RESULTS_DIR, help="results and logs folder")
    sc.add_argument("--jsonl", type=Path, help="JSON lines file (default OUT/scale-STAMP.jsonl)")
    sc.add_argument("--plot", type=Path,
                    help="PNG (default OUT/scale-STAMP.png when several worker counts)")
    idle = sub.add_parser("idle", help="server CPU and wake-ups per idle bridge (no media)")
    idle.add_argument("--bridges", type=_counts, default=[0, 50, 100],
                      help="idle bridge counts to sweep, e.g. 0,100,200")
    idle.add_argument("--connection", type=_names, default=["publisher"],
                      help="publisher (signaling + a paused camera/mic connection), none "
                           "(signaling only), or both: publisher,none")
    idle.add_argument("--park-idle-after", type=_floats, default=[None],
                      help="serve --park-idle-after values to compare, e.g. 0,2 (default: "
                           "the server's)")
    idle.add_argument("--roster", type=_names, default=["adhoc"],
                      help="adhoc (a room made by its first join), featured or full (a "
                           "conference created with that roster), or several: featured,adhoc")
    idle.add_argument("--seconds", type=float, default=20, help="window length")
    idle.add_argument("--warmup", type=float, default=4, help="seconds before the window")
    idle.add_argument("--per-proc", type=int, default=50, help="idle bridges per process")
    idle.add_argument("--repeat", type=int, default=1, help="runs per size and connection")
    idle.add_argument("--out", type=Path, default=RESULTS_DIR, help="results and logs folder")
    mi = sub.add_parser("micro", help="hot-path micro-benchmarks vs the machine's limits")
    mi.add_argument("--quick", action="store_true", help="fewer iterations (smoke test)")
    mi.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder")
    return ap


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


async def _unwinding(runner: Any, args: argparse.Namespace) -> int:
    # SIGTERM (a CI timeout, `kill`) unwinds like ctrl-c: every run's `finally` stops its
    # processes. (Children also get SIGTERM from the kernel if we die without unwinding.)
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return int(await runner(args))


def _stamped(out: Path) -> tuple[Path, str]:
    """The results folder (created) and this invocation's time stamp for its file names."""
    out.mkdir(parents=True, exist_ok=True)
    return out, time.strftime("%Y%m%d-%H%M%S")


async def _forward(args: argparse.Namespace) -> int:
    from bench.forward import ForwardOptions, run_forward
    from bench.procs import placement, set_placement

    sizes = args.sweep or [args.subscribers]
    systems: list[tuple[str, str]] = [(args.system, "default")]
    if args.system == "janus":
        systems = [("janus", c) for c in args.janus_config]
    elif args.peer == "janus":
        systems += [("janus", c) for c in args.janus_config]
    if any(s == "janus" for s, _ in systems):
        from bench.janus import janus_available

        if not janus_available():
            _log("janus is not installed: apt-get install -y janus")
            return 2
    if not 0 <= args.loss < 100:
        _log(f"--loss must be a percentage in [0, 100): {args.loss}")
        return 2
    opts = ForwardOptions(seconds=args.seconds, warmup=args.warmup, full=args.full,
                          per_proc=args.per_proc, bitrate=args.bitrate, loss=args.loss)
    try:
        set_placement(args.server_cpus)
    except ValueError as exc:
        _log(str(exc))
        return 2
    out, stamp = _stamped(args.out)
    jsonl = out / f"forward-{stamp}.jsonl"
    results: list[dict[str, Any]] = []
    failures = 0
    for n in sizes:
        for rep in range(args.repeat):
            # Systems interleaved per size and repetition: slow drifts of a shared machine's
            # load then hit every system alike.
            for system, config in systems:
                tag = f"{system}-{config}-n{n}-r{rep}"
                _log(f"[bench] {tag}: running ({args.seconds:g} s window)")
                try:
                    res = await run_forward(system, config, n, opts, out / "logs" / stamp / tag)
                except Exception as exc:
                    failures += 1
                    res = {"kind": "error", "system": system, "config": config,
                           "subscribers": n, "error": f"{type(exc).__name__}: {exc}"[:4000]}
                    _log(f"[bench] {tag}: FAILED: {res['error']}")
                res["repeat"] = rep
                _emit(res, jsonl)
                results.append(res)
        if len(systems) > 1 and systems[0][0] == "hoinghi":
            _emit({**_ratio(n, results), "placement": placement()}, jsonl)
    if args.sweep:
        from bench.plot import plot_forward

        for line in _marginals(results):
            _emit({**line, "placement": placement()}, jsonl)
        png = plot_forward(results, out / f"forward-{stamp}.png")
        _log(f"[bench] plot: {png}")
    _log(f"[bench] results: {jsonl}")
    _table(results)
    return 1 if failures else 0


async def _scale(args: argparse.Namespace) -> int:
    from bench.procs import first_cpus, set_placement
    from bench.scale import ScaleOptions, run_scale, scale_summary

    fixed: int | None = args.fixed_rooms
    mode = "proportional" if fixed is None else "fixed"
    full_rooms = args.full_rooms
    if full_rooms is None and fixed is not None:
        full_rooms = min(fixed, max(args.workers))
    opts = ScaleOptions(seconds=args.seconds, warmup=args.warmup, full=args.full,
                        full_rooms=full_rooms, per_proc=args.per_proc, bitrate=args.bitrate,
                        span_after=args.span_after)
    if args.pin and max(args.workers) >= len(os.sched_getaffinity(0)):
        _log("--pin: every worker count must leave a CPU for the load")
        return 2
    out, stamp = _stamped(args.out)
    jsonl: Path = args.jsonl or out / f"scale-{stamp}.jsonl"
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    for rep in range(args.repeat):
        # Worker counts interleaved per repetition: a shared machine's drift hits them alike.
        for w in args.workers:
            rooms = fixed if fixed is not None else w * args.rooms_per_worker
            tag = f"scale-w{w}-rooms{rooms}-s{args.subscribers}-r{rep}"
            _log(f"[bench] {tag}: running ({args.seconds:g} s window)")
            try:
                where = set_placement(first_cpus(w)) if args.pin else None
                res = await run_scale(w, rooms, args.subscribers, opts,
                                      out / "logs" / stamp / tag)
                res["placement"] = where
            except Exception as exc:
                res = {"kind": "error", "bench": "scale", "workers": w, "rooms": rooms,
                       "subscribers_per_room": args.subscribers,
                       "error": f"{type(exc).__name__}: {exc}"[:4000]}
                _log(f"[bench] {tag}: FAILED: {res['error']}")
            res["repeat"] = rep
            _emit(res, jsonl)
            results.append(res)
    summary = scale_summary(results, mode)
    _emit(summary, jsonl)
    png = args.plot or (out / f"scale-{stamp}.png" if len(args.workers) > 1 else None)
    if png is not None and any(r.get("kind") == "run" for r in results):
        from bench.plot import plot_scale

        _log(f"[bench] plot: {plot_scale(results, png, mode)}")
    _log(f"[bench] results: {jsonl}")
    _scale_table(summary)
    return 1 if summary["failed_runs"] else 0


async def _idle(args: argparse.Namespace) -> int:
    from bench.idle import IdleOptions, idle_summary, plot_idle, run_idle

    bad = [c for c in args.connection if c not in ("publisher", "none")]
    if bad:
        _log(f"unknown --connection {bad}: publisher or none")
        return 2
    bad = [r for r in args.roster if r not in ("adhoc", "featured", "full")]
    if bad:
        _log(f"unknown --roster {bad}: adhoc, featured or full")
        return 2
    out, stamp = _stamped(args.out)
    jsonl = out / f"idle-{stamp}.jsonl"
    results: list[dict[str, Any]] = []
    failures = 0
    for rep in range(args.repeat):
        for bridges in args.bridges:
            for mode, park, roster in itertools.product(args.connection, args.park_idle_after,
                                                        args.roster):
                tag = f"idle-{mode}-{roster}-b{bridges}-p{park}-r{rep}"
                _log(f"[bench] {tag}: running ({args.seconds:g} s window)")
                opts = IdleOptions(seconds=args.seconds, warmup=args.warmup,
                                   per_proc=args.per_proc, connection=mode,
                                   park_idle_after_s=park, roster=roster)
                try:
                    res = await run_idle(bridges, opts, out / "logs" / stamp / tag)
                except Exception as exc:
                    failures += 1
                    res = {"kind": "error", "bench": "idle", "connection": mode,
                           "bridges": bridges, "error": f"{type(exc).__name__}: {exc}"[:4000]}
                    _log(f"[bench] {tag}: FAILED: {res['error']}")
                res["repeat"] = rep
                _emit(res, jsonl)
                results.append(res)
    for line in idle_summary(results):
        _emit(line, jsonl)
    if len(set(args.bridges)) > 1 and any(r.get("kind") == "run" for r in results):
        _log(f"[bench] plot: {plot_idle(results, out / f'idle-{stamp}.png')}")
    _log(f"[bench] results: {jsonl}")
    return 1 if failures else 0


def _scale_table(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    # Short headers: stderr is often not a terminal, and rich then assumes 80 columns.
    cols = {"workers": "W", "rooms": "rooms", "fwd_pps": "fwd pkt/s",
            "server_cpu_cores": "server cores", "max_proc_cpu_cores": "busiest proc",
            "cpu_us_per_pkt": "µs/pkt", "us_per_pkt_ratio": "µs ratio",
            "scaling_efficiency": "efficiency", "loss_pct_max": "loss %",
            "foreign_cpu_cores": "foreign"}
    table = Table(*cols.values(), title=f"hoinghi bench scale ({summary['mode']} load)")
    for row in summary["rows"]:
        table.add_row(*(str(row.get(c)) for c in cols))
    console = Console(stderr=True)
    if not console.is_terminal:
        console.width = 120  # a log file: no reason to squeeze the columns
    console.print(table)


def _ratio(n: int, results: list[dict[str, Any]]) -> dict[str, Any]:
    """hoinghi / Janus CPU per forwarded packet at size n (medians over repeats)."""
    def med(system: str, config: str) -> float | None:
        vals = [r["cpu_us_per_pkt"] for r in results
                if r.get("kind") == "run" and r["subscribers"] == n
                and r["system"] == system and r["config"] == config
                and r.get("cpu_us_per_pkt")]
        return round(statistics.median(vals), 2) if vals else None

    line: dict[str, Any] = {"kind": "ratio", "subscribers": n,
                            "hoinghi_us_per_pkt": med("hoinghi", "default")}
    for r in results:
        if r.get("system") == "janus" and r["subscribers"] == n:
            cfg = r["config"]
            janus = med("janus", cfg)
            line[f"janus_{cfg}_us_per_pkt"] = janus
            hoinghi = line["hoinghi_us_per_pkt"]
            line[f"ratio_vs_janus_{cfg}"] = (round(hoinghi / janus, 2)
                                             if hoinghi and janus else None)
    return line


def _marginals(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per system: least-squares fit of server CPU against forwarded packets/s over the sweep.

    The slope is the CPU of one *more* forwarded packet, free of the fixed costs (ingress,
    timers, signaling) that dominate µs-per-packet at small N.
    """
    out = []
    keys = sorted({(r["system"], r["config"]) for r in results if r.get("kind") == "run"})
    for system, config in keys:
        runs = [r for r in results
                if r.get("kind") == "run" and r["system"] == system and r["config"] == config]
        if len({r["subscribers"] for r in runs}) < 2:
            continue  # one size only (repeats differ in pps by noise): no slope to speak of
        pts = [(r["fwd_pps"], r["server_cpu_cores"]) for r in runs]
        from bench.forward import fit_line

        slope, fixed = fit_line(pts)
        out.append({"kind": "marginal", "system": system, "config": config,
                    "us_per_extra_pkt": round(slope * 1e6, 2),
                    "fixed_cpu_cores": round(fixed, 4), "points": len(pts)})
    return out


def _emit(obj: dict[str, Any], jsonl: Path) -> None:
    line = json.dumps(obj)
    print(line, flush=True)
    with open(jsonl, "a") as f:
        f.write(line + "\n")


def _table(results: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    cols = ("system", "config", "subscribers", "fwd_pps", "cpu_us_per_pkt", "server_cpu_cores",
            "loss_pct", "latency_p50_ms", "latency_p99_ms", "frames_checked", "foreign_cpu_cores")
    table = Table(*cols, title="hoinghi bench forward")
    for r in results:
        if r.get("kind") == "run":
            table.add_row(*(str(r.get(c)) for c in cols))
        else:
            table.add_row(r["system"], r["config"], str(r["subscribers"]), "error")
    Console(stderr=True).print(table)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    runners = {"forward": _forward, "scale": _scale, "idle": _idle}
    if args.command in runners:
        try:
            return asyncio.run(_unwinding(runners[args.command], args))
        except KeyboardInterrupt:
            return 130  # children were stopped by the runs' finally blocks / atexit sweep
        except asyncio.CancelledError:
            return 143  # SIGTERM
    if args.command == "micro":
        from bench.micro import run_micro

        return run_micro(args.out, quick=args.quick)
    return 2

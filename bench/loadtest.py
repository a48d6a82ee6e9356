"""`hoinghi loadtest`: many simulated bridges against a running deployment, for ops.

    hoinghi loadtest --url http://127.0.0.1:8080 --room load-1 --bridges 200 --publishers 1 \\
        --ramp 10/s --duration 60 --json out.json --plot out.png
    hoinghi loadtest --url http://127.0.0.1:8080 --room load-2 --shape national --bridges 3356 \\
        --floor-turns 5 --turn-s 20 --worker-index 0 --worker-count 4 --start-at EPOCH \\
        --json m0.json        # the same on 4 machines, --worker-index 0..3
    hoinghi loadtest merge m0.json m1.json m2.json m3.json --json all.json --plot all.png

The secret comes from --secret or HOINGHI_SECRET (the tool signs its own tokens). Live
progress goes to stderr, the final table to stdout. Exit status: 0 when join success reached
--min-success, 1 when not, 2 for bad arguments, 130 when interrupted (partial results are
still reported). Every worker runs in its own process group with a parent-death signal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench import load_report
from bench.load_plan import BridgeSpec, Options, default_workers, local_share, machine_slice, plan
from bench.procs import Child, ChildError, spawn, stop_all
from signaling.auth import issue_token

REPO = Path(__file__).resolve().parents[1]


def _ramp(text: str) -> float:
    value = text.strip().removesuffix("/s")
    try:
        rate = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError("--ramp is joins per second, e.g. 10/s") from None
    if rate <= 0:
        raise argparse.ArgumentTypeError("--ramp must be positive")
    return rate


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="hoinghi loadtest", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="the deployment's base URL, e.g. http://127.0.0.1:8080")
    ap.add_argument("--secret", default=os.environ.get("HOINGHI_SECRET"),
                    help="token signing secret (default: $HOINGHI_SECRET)")
    ap.add_argument("--room", required=True)
    ap.add_argument("--bridges", type=int, required=True, help="N, all machines together")
    ap.add_argument("--publishers", type=int, default=1,
                    help="K bridges that publish (national: the chair counts as one)")
    ap.add_argument("--ramp", type=_ramp, default=10.0, help="joins per second, e.g. 10/s")
    ap.add_argument("--duration", type=float, default=30.0, help="hold after the ramp, s")
    ap.add_argument("--shape", choices=("flat", "national"), default="flat")
    ap.add_argument("--floor-turns", type=int, default=0,
                    help="national: the chair gives the floor to K bridges in turn")
    ap.add_argument("--turn-s", type=float, default=10.0, help="seconds per floor turn")
    ap.add_argument("--decode", type=int, default=2,
                    help="bridges that decode and check pictures (the rest only count packets)")
    ap.add_argument("--workers", type=int, default=default_workers(),
                    help="local worker processes (default: cores − 1)")
    ap.add_argument("--worker-index", type=int, default=0, help="this machine's slice, 0-based")
    ap.add_argument("--worker-count", type=int, default=1, help="machines running this test")
    ap.add_argument("--start-at", type=float,
                    help="wall-clock start (unix seconds), the same on every machine")
    ap.add_argument("--join-timeout", type=float, default=30.0,
                    help="seconds from a bridge's start to media flowing before it fails")
    ap.add_argument("--min-success", type=float, default=99.0, help="required join success %%")
    ap.add_argument("--fps", type=float, default=15.0, help="publishers' frame rate")
    ap.add_argument("--size", default="320x240", help="publishers' picture size")
    ap.add_argument("--bitrate", type=int,
                    help="publishers' VP8 bit/s, pinned (default: aiortc's, steered by REMB)")
    ap.add_argument("--ice-host", action="append", default=[], metavar="ADDR",
                    help="our ICE host candidates (default: 127.0.0.1 for a loopback URL, "
                         "else every interface)")
    ap.add_argument("--quality-every", type=float, default=5.0,
                    help="seconds between each bridge's `quality` report, as the web client "
                         "(0: none)")
    ap.add_argument("--json", type=Path, help="write every bridge's record here")
    ap.add_argument("--plot", type=Path, help="PNG: TTFF CDF and joins over time")
    ap.add_argument("--log-dir", type=Path,
                    help="workers' logs (default: a temporary folder, removed after a run that "
                         "passed)")
    return ap


def merge_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="hoinghi loadtest merge",
                                 description="merge --json results of several machines")
    ap.add_argument("files", type=Path, nargs="+")
    ap.add_argument("--json", type=Path, help="write the merged result here")
    ap.add_argument("--plot", type=Path)
    ap.add_argument("--min-success", type=float, default=99.0)
    return ap


def _err(msg: str) -> None:
    print(f"[loadtest] {msg}", file=sys.stderr, flush=True)


def options_from(args: argparse.Namespace) -> Options:
    w, _, h = args.size.partition("x")
    return Options(
        url=args.url.rstrip("/"), secret=args.secret, room=args.room, bridges=args.bridges,
        publishers=args.publishers, ramp=args.ramp, duration=args.duration, shape=args.shape,
        decode=args.decode, floor_turns=args.floor_turns, turn_s=args.turn_s,
        worker_index=args.worker_index, worker_count=args.worker_count,
        join_timeout=args.join_timeout, width=int(w), height=int(h), fps=args.fps,
        ice_hosts=list(args.ice_host), bitrate=args.bitrate, quality_every=args.quality_every,
    )  # fmt: skip


class Live:
    """What the workers reported last, and the live display built from it."""

    def __init__(self, planned: int, workers: int) -> None:
        self.planned = planned
        self.progress: dict[int, dict[str, Any]] = {}
        self.records: list[dict[str, Any]] = []
        self.turns: list[dict[str, Any]] = []
        self.done: dict[int, dict[str, Any]] = {}
        self.errors: dict[int, str] = {}
        self.workers = workers
        self._rates: dict[int, tuple[float, float]] = {}  # worker -> (packets/s, bits/s)

    def update(self, w: int, progress: dict[str, Any]) -> None:
        """A worker's progress line; rates from its own clock (lines come about once a second,
        so rates computed on the coordinator's clock would alias)."""
        last = self.progress.get(w)
        if last is not None and progress["t"] > last["t"]:
            dt = progress["t"] - last["t"]
            self._rates[w] = ((progress["packets"] - last["packets"]) / dt,
                              (progress["bytes"] - last["bytes"]) * 8 / dt)
        self.progress[w] = progress

    def total(self, key: str) -> int:
        return sum(p.get(key, 0) for p in self.progress.values())

    @property
    def pps(self) -> float:
        return sum(r[0] for r in self._rates.values())

    @property
    def mbps(self) -> float:
        return sum(r[1] for r in self._rates.values()) / 1e6

    def line(self) -> str:
        t = max((p.get("t", 0) for p in self.progress.values()), default=0)
        return (f"t={t:5.1f}s  started {self.total('started')}/{self.planned}  joined "
                f"{self.total('joined')}  connected {self.total('connected')}  receiving "
                f"{self.total('receiving')}  failed {self.total('failed')}  "
                f"{self.pps:,.0f} pkt/s  {self.mbps:,.1f} Mbit/s"
                + (f"  workers lost {len(self.errors)}" if self.errors else ""))

    def render(self) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.text import Text

        joined = self.total("joined")
        return Group(Text(self.line()),
                     ProgressBar(total=max(1, self.planned), completed=joined, width=60))


async def _read_worker(child: Child, w: int, live: Live) -> None:
    try:
        while True:
            msg = await child.read_json(timeout=3600)
            if "progress" in msg:
                live.update(w, msg["progress"])
            elif "bridge" in msg:
                live.records.append(msg["bridge"])
            elif "floor" in msg:
                live.turns.extend(msg["floor"])
            elif "done" in msg:
                live.done[w] = msg["done"]
                return
    except ChildError as exc:
        live.errors[w] = str(exc).splitlines()[0][:300]
        _err(f"worker {w} failed: {exc}"[:3000])


def udp_counters() -> dict[str, int]:
    """The kernel's UDP counters for this machine (Linux /proc/net/snmp; empty elsewhere).

    RcvbufErrors are datagrams dropped because a socket's receive buffer was full: a load
    generator that cannot keep up loses packets *here*, and the bridges' loss then says nothing
    about the server.
    """
    try:
        lines = [ln.split() for ln in Path("/proc/net/snmp").read_text().splitlines()
                 if ln.startswith("Udp:")]
        return {k: int(v) for k, v in zip(lines[0][1:], lines[1][1:], strict=True)}
    except (OSError, IndexError, ValueError):
        return {}


def _machine(before: dict[str, int], after: dict[str, int], t_start: float) -> dict[str, Any]:
    def delta(key: str) -> int | None:
        return after[key] - before[key] if key in before and key in after else None

    return {"host": socket.gethostname(), "cores": os.cpu_count(),
            "loadavg1": round(os.getloadavg()[0], 2), "t0": t_start,
            "udp_rcvbuf_errors": delta("RcvbufErrors"), "udp_in_errors": delta("InErrors"),
            "udp_sndbuf_errors": delta("SndbufErrors")}


def _missing(specs: list[BridgeSpec], opts: Options, live: Live) -> list[dict[str, Any]]:
    """Records for bridges no worker reported (a worker crashed): failed, same schema."""
    from bench.load_bridge import LoadBridge

    seen = {r["index"] for r in live.records}
    out = []
    for s in specs:
        if s.index not in seen:
            b = LoadBridge(s, opts, [])
            b.failure = "no result (worker failed)"
            rec = b.record(time.monotonic())
            rec.update(media_rtt_ms=None, worker=None, machine=opts.worker_index)
            out.append(rec)
    return out


def ensure_conference(opts: Options) -> str:
    """`--shape national`: the room as a conference created through the API, as a real
    national one is (its bridges then get the featured roster, docs/signaling.md). Every
    machine tries: "created" on one, "exists" on the others (and for a room ops made)."""
    token = issue_token(opts.secret, opts.room, "lt-chair", "chair", ttl_s=600)
    req = urllib.request.Request(
        opts.url.rstrip("/") + "/api/rooms", json.dumps({"room": opts.room}).encode(),
        {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST")
    # A loopback target is reached directly, whatever proxy the environment names.
    loopback = urlsplit(opts.url).hostname in ("127.0.0.1", "localhost", "::1")
    handlers = [urllib.request.ProxyHandler({})] if loopback else []
    try:
        with urllib.request.build_opener(*handlers).open(req, timeout=10):
            return "created"
    except urllib.error.HTTPError as exc:
        if exc.code == 409:
            return "exists"
        raise


async def run(opts: Options, args: argparse.Namespace) -> tuple[dict[str, Any], bool]:
    """Run this machine's slice; returns (result document, interrupted)."""
    from rich.console import Console
    from rich.live import Live as RichLive

    specs = machine_slice(opts, plan(opts))
    workers = max(1, min(args.workers, len(specs)))
    log_dir: Path = args.log_dir or Path(tempfile.mkdtemp(prefix="hoinghi-loadtest-"))
    loop = asyncio.get_running_loop()
    interrupt = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # first signal: stop early, still report
        loop.add_signal_handler(sig, interrupt.set)
    live = Live(len(specs), workers)
    children: list[Child] = []
    interrupted = False
    t_start = 0.0
    console = Console(stderr=True)
    udp_before = udp_counters()
    conference = (await asyncio.to_thread(ensure_conference, opts)
                  if opts.shape == "national" else None)
    try:
        # The secret travels in the environment (readable only by our user), never in argv
        # (which `ps` shows to everyone on the machine).
        env = dict(os.environ, PYTHONUNBUFFERED="1", HOINGHI_SECRET=opts.secret)
        public = json.dumps(opts.public())
        for w in range(workers):
            children.append(await spawn(
                f"loadworker{w}",
                [sys.executable, "-m", "bench.loadworker", "--opts", public,
                 "--worker", str(w), "--workers", str(workers)],
                log_dir / f"worker{w}.log", env=env, cwd=str(REPO),
            ))  # fmt: skip
        await asyncio.gather(*(c.read_json(60) for c in children))  # {"ready": ...}
        t_start = args.start_at or time.time() + 0.5
        if t_start < time.time() - 1:
            _err("--start-at is in the past: bridges scheduled before now join at once")
        for c in children:
            await c.send(f"start {t_start!r}")
        _err(f"{len(specs)} bridges on {workers} worker(s), starting "
             f"{max(0.0, t_start - time.time()):.1f} s from now; logs in {log_dir}")
        readers = [asyncio.create_task(_read_worker(c, w, live)) for w, c in enumerate(children)]
        end = t_start + opts.ramp_s + opts.duration
        deadline = end + 60  # workers report within seconds of the end
        # A terminal gets a redrawn display; logs and CI get a plain line every 5 s.
        display = (RichLive(live.render(), console=console, refresh_per_second=4)
                   if console.is_terminal else None)
        last_plain = 0.0
        interrupted_task = asyncio.create_task(interrupt.wait())
        with display or contextlib.nullcontext():
            while not all(r.done() for r in readers):
                waits = [*readers] if interrupted else [*readers, interrupted_task]
                await asyncio.wait(waits, timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
                if display is not None:
                    display.update(live.render())
                elif time.monotonic() - last_plain > 5.0:
                    last_plain = time.monotonic()
                    _err(live.line())
                if interrupt.is_set() and not interrupted:
                    interrupted = True
                    _err("interrupted: collecting partial results (again to abort)")
                    for sig in (signal.SIGINT, signal.SIGTERM):
                        loop.remove_signal_handler(sig)
                    for c in children:
                        with contextlib.suppress(Exception):
                            await c.send("stop")
                    deadline = min(deadline, time.time() + 20)
                if time.time() > deadline:
                    _err("workers did not report in time; stopping them")
                    break
        if display is None:
            _err(live.line())
        for r in [*readers, interrupted_task]:
            r.cancel()
    finally:
        await stop_all(children, grace=3 if interrupted else 15)
    records = live.records + _missing(specs, opts, live)
    machine = {**_machine(udp_before, udp_counters(), t_start), "conference": conference}
    doc = load_report.document(opts.public(), t_start, [opts.worker_index], len(specs),
                               records, live.turns, list(live.done.values()), interrupted,
                               args.min_success, [machine])
    doc["log_dir"] = str(log_dir)
    if args.log_dir is None and doc["summary"]["passed"] and not live.errors and not interrupted:
        # A temporary folder is kept only when something went wrong and its logs may tell why.
        shutil.rmtree(log_dir, ignore_errors=True)
        doc["log_dir"] = None
    return doc, interrupted


def _finish(doc: dict[str, Any], json_path: Path | None, plot_path: Path | None) -> int:
    from rich.console import Console

    # Not a terminal (a file, CI): wide enough that the table's rows do not wrap.
    Console(width=None if sys.stdout.isatty() else 140).print(load_report.table(doc))
    if json_path is not None:
        load_report.write_json(doc, json_path)
        _err(f"results: {json_path}")
    if plot_path is not None:
        _err(f"plot: {load_report.plot(doc, plot_path)}")
    return 0 if doc["summary"]["passed"] else 1


def _merge(argv: list[str]) -> int:
    args = merge_parser().parse_args(argv)
    try:
        doc, warnings = load_report.merge([load_report.load(p) for p in args.files],
                                          args.min_success)
    except (OSError, ValueError) as exc:
        _err(str(exc))
        return 2
    for w in warnings:
        _err(w)
    return _finish(doc, args.json, args.plot)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["merge"]:
        return _merge(argv[1:])
    ap = build_parser()
    args = ap.parse_args(argv)
    problems = []
    if not args.secret:
        problems.append("no secret: pass --secret or set HOINGHI_SECRET")
    if args.bridges < 1 or args.publishers < 0 or args.duration <= 0 or args.workers < 1:
        problems.append("--bridges and --workers must be ≥ 1, --duration > 0")
    if not 0 <= args.worker_index < args.worker_count:
        problems.append("--worker-index must be from 0 to --worker-count − 1")
    if args.shape == "flat" and args.floor_turns:
        problems.append("--floor-turns needs --shape national (a chair gives the floor)")
    if "x" not in args.size:
        problems.append("--size is WIDTHxHEIGHT")
    if problems:
        for p in problems:
            _err(p)
        return 2
    opts = options_from(args)
    if opts.turns_that_fit() < opts.floor_turns:
        _err(f"only {opts.turns_that_fit()} of {opts.floor_turns} floor turns of "
             f"{opts.turn_s:g} s fit in --duration {opts.duration:g}")
    if opts.worker_count > 1 and args.start_at is None:
        _err("several machines without --start-at: each starts when launched, so the joint "
             "ramp is only as even as their launches")
    if len(local_share(machine_slice(opts, plan(opts)), 1, 0)) == 0:
        _err("this slice has no bridges")
        return 2
    try:
        doc, interrupted = asyncio.run(run(opts, args))
    except KeyboardInterrupt:  # a second ctrl-c: abort (procs.py's sweep kills the workers)
        return 130
    except ChildError as exc:  # a worker could not even start
        _err(str(exc))
        return 1
    code = _finish(doc, args.json, args.plot)
    return 130 if interrupted else code

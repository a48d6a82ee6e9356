"""Load-test worker process: runs its share of the simulated bridges, reports JSON lines.

Started by `hoinghi loadtest` (bench/loadtest.py) through bench/procs.py, so it has its own
process group and dies with its parent. Protocol (one JSON object per stdout line):

    → {"ready": true, "pid": P, "bridges": n}
    stdin ← "start EPOCH"           (wall-clock start; bridge k joins at EPOCH + k / ramp)
    → {"progress": {...}}           about once a second
    → {"bridge": {...}} × n, then {"floor": [...]} (the chair's worker), then {"done": {...}}
    stdin ← "stop"                  ends the hold early (results are still reported)

End of stdin ends the worker at once: it is never left behind.
Run alone for debugging: `HOINGHI_SECRET=… python -m bench.loadworker --opts JSON`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import time
from typing import Any
from urllib.parse import urlsplit

from bench.load_bridge import LoadBridge
from bench.load_plan import Options, floor_targets, local_share, machine_slice, plan
from bench.worker import emit, run_worker, stdin_lines
from clients.session import SignalingError


def ice_hosts_for(opts: Options) -> list[str]:
    """aioice skips loopback when it gathers: against a loopback URL offer 127.0.0.1 only."""
    if opts.ice_hosts:
        return list(opts.ice_hosts)
    host = urlsplit(opts.url).hostname or ""
    return ["127.0.0.1"] if host in ("127.0.0.1", "localhost", "::1") else []


async def _commands(queue: asyncio.Queue[str]) -> None:
    async for cmd in stdin_lines():
        queue.put_nowait(cmd)
    queue.put_nowait("eof")


async def _sleep_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


class LoopLag:
    """How late this process's event loop wakes up: a saturated worker makes the server look
    worse than it is (late reads become jitter and loss), so the report says so."""

    def __init__(self) -> None:
        self.samples: list[float] = []

    async def run(self, period: float = 0.1) -> None:
        while True:
            t = time.monotonic()
            await asyncio.sleep(period)
            self.samples.append(max(0.0, time.monotonic() - t - period) * 1000)

    def summary(self) -> dict[str, float | None]:
        s = sorted(self.samples)
        if not s:
            return {"loop_lag_p99_ms": None, "loop_lag_max_ms": None}
        return {"loop_lag_p99_ms": round(s[int(0.99 * (len(s) - 1))], 1),
                "loop_lag_max_ms": round(s[-1], 1)}


async def run_floor(chair: LoadBridge, targets: list[str], first: float, turn_s: float,
                    turns: list[dict[str, Any]]) -> None:
    """The chair gives the floor to each target in turn (docs/floor.md `give_floor`), then takes
    it back; each attempt is appended to `turns` (read even if the hold ends early). A server
    without floor messages (`unknown_type`) ends the schedule with a note."""
    for i, target in enumerate([*targets, None]):
        await _sleep_until(first + i * turn_s)
        msg: dict[str, Any] = ({"type": "take_floor"} if target is None
                               else {"type": "give_floor", "participant_id": target})
        turn: dict[str, Any] = {"turn": i, "type": msg["type"], "target": target,
                                "sent_at": time.time(), "reply_ms": None, "error": None}
        turns.append(turn)
        if chair.session is None or chair.stage != "up":
            turn["error"] = "chair_not_up"
            continue
        t = time.perf_counter()
        try:
            await chair.session.request(msg, timeout=10)
            turn["reply_ms"] = round(1000 * (time.perf_counter() - t), 2)
        except SignalingError as exc:
            turn["error"] = exc.code
            if exc.code == "unknown_type":  # this server has no floor control: stop trying
                turn["note"] = "server does not support floor messages; turns skipped"
                break
        except TimeoutError:
            turn["error"] = "timeout"


def _progress(bridges: list[LoadBridge], t0: float) -> dict[str, Any]:
    for b in bridges:
        b.check_alive()
    return {
        "t": round(time.monotonic() - t0, 2),
        "started": sum(b.t_start is not None for b in bridges),
        "joined": sum(b.joined for b in bridges),
        "connected": sum(b.connected for b in bridges),
        "receiving": sum(b.receiving for b in bridges),
        "failed": sum(b.failed for b in bridges),
        "packets": sum(b.stats.packets for b in bridges),
        "bytes": sum(b.stats.bytes for b in bridges),
        "cpu_s": round(time.process_time(), 2),
    }


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--opts", required=True,
                    help="bench.load_plan.Options as JSON, without the secret ($HOINGHI_SECRET)")
    ap.add_argument("--worker", type=int, default=0, help="this process among --workers")
    ap.add_argument("--workers", type=int, default=1, help="local worker processes")
    args = ap.parse_args()

    # The secret comes from the environment: an argument would show in `ps` to everyone.
    opts = Options.from_json({"secret": os.environ.get("HOINGHI_SECRET", ""),
                              **json.loads(args.opts)})
    everyone = plan(opts)
    mine = local_share(machine_slice(opts, everyone), args.workers, args.worker)
    hosts = ice_hosts_for(opts)
    if opts.bitrate and any(s.publish for s in mine):
        from bench.publisher import pin_vp8_bitrate

        pin_vp8_bitrate(opts.bitrate)  # process-wide: every publisher of this worker
    bridges = [LoadBridge(s, opts, hosts) for s in mine]
    commands: asyncio.Queue[str] = asyncio.Queue()
    tasks = [asyncio.create_task(_commands(commands))]
    emit({"ready": True, "pid": os.getpid(), "bridges": len(bridges)})

    while True:
        cmd = await commands.get()
        if cmd == "eof":
            return
        if cmd.startswith("start "):
            break
    # The start is wall-clock (shared by every process and machine); convert it once.
    t0 = time.monotonic() + float(cmd.split()[1]) - time.time()
    hold_start, end = t0 + opts.ramp_s, t0 + opts.ramp_s + opts.duration
    lag = LoopLag()
    tasks.append(asyncio.create_task(lag.run()))

    async def start(b: LoadBridge) -> None:
        await _sleep_until(t0 + b.spec.at)
        await b.run()

    tasks += [asyncio.create_task(start(b)) for b in bridges]
    floor_task: asyncio.Task[None] | None = None
    turns: list[dict[str, Any]] = []
    chair = next((b for b in bridges if b.spec.role == "chair"), None)
    targets = floor_targets(opts, everyone)
    if opts.shape == "national" and chair is not None and targets:
        floor_task = asyncio.create_task(run_floor(chair, targets, hold_start, opts.turn_s,
                                                 turns))

    stopped = False
    while time.monotonic() < end and not stopped:
        try:
            wait = min(1.0, max(0.01, end - time.monotonic()))
            cmd = await asyncio.wait_for(commands.get(), wait)
        except TimeoutError:
            cmd = ""
        if cmd == "eof":
            return
        stopped = cmd == "stop"
        now = time.monotonic()
        if now >= hold_start:
            # Received bitrate is measured over the hold (or from a late bridge's first packet).
            for b in bridges:
                if b.receiving:
                    b.stats.start_window(now)
        emit({"progress": _progress(bridges, t0)})

    now = time.monotonic()
    for b in bridges:
        rec = b.record(now)
        rec["media_rtt_ms"] = await b.media_rtt_ms() if b.spec.publish else None
        rec["worker"] = args.worker
        rec["machine"] = opts.worker_index
        emit({"bridge": rec})
    if floor_task is not None:
        floor_task.cancel()
        emit({"floor": turns})
    done = {"pid": os.getpid(), "worker": args.worker, "bridges": len(bridges),
            "cpu_s": round(time.process_time(), 2),
            "wall_s": round(time.monotonic() - t0, 2), **lag.summary()}
    emit({"done": done})
    for t in tasks:
        t.cancel()
    # Offers still arriving while sessions close are expected now, not errors worth a trace.
    logging.getLogger("hoinghi.client").setLevel(logging.CRITICAL)
    # Leave politely (bounded): the server sees `leave`, not thousands of dead sockets.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(b.close() for b in bridges),
                                              return_exceptions=True), 20)


if __name__ == "__main__":
    run_worker(main)

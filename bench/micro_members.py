"""CPU µs per join and per leave of a producer's consumers, against a whole-group rebuild.

    python -m bench.micro_members [--sizes 100,1000,3356] [--extra 50]

A join (a bridge subscribes, a Last-N pause ends) or a leave changes one `FastGroup` in place
(`add`/`remove`, sfu/fastpath/__init__.py): its cost must not grow with the room. Before, every
membership change rebuilt the whole group, `rebuild` here: ~10 µs per member on a VM, so a
national room's surge of 3,356 joins did ~n²/2 entry builds. Real parts as in
bench/micro_fanout.py: real `Producer` and `Consumer`s, pylibsrtp sessions, one UDP socket per
consumer. Per size: `join_us` and `leave_us` (means over `--extra` consumers joining a group of
that size, then leaving it), `rebuild_us` (median of 5 rebuilds at that size). One JSON line
per size on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import statistics
import sys
import time
from typing import Any

from bench.micro_fanout import _consumers
from sfu import fastpath
from sfu.config import SfuConfig
from sfu.producer import Producer, Source
from sfu.router import TrackInfo


async def bench(n: int, extra: int) -> dict[str, Any]:
    rng = random.Random(n)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    track = TrackInfo(id="p/microphone", participant_id="p", kind="audio",
                      source="microphone", codec="opus")
    producer = Producer(track, 48000, SfuConfig(), rng)
    producer.bind_source(Source(pt=111, rtx_pt=0, level_id=0))
    transports = await _consumers(producer, n + extra, sink.getsockname(), rng)
    try:
        joiners = list(producer.consumers)[n:]
        for c in joiners:  # out again: the group holds n
            producer.remove_consumer(c)
        ((track_key, group),) = producer.fast.items()
        if len(group) != n:
            raise RuntimeError(f"group of {len(group)}, not {n}")
        t0 = time.process_time()
        for c in joiners:
            producer.add_consumer(c, 1.0)
        t1 = time.process_time()
        for c in joiners:
            producer.remove_consumer(c)
        t2 = time.process_time()
        if len(group) != n or producer.fast[track_key] is not group:
            raise RuntimeError("the group was rebuilt or lost members")
        rebuilds = []
        for _ in range(5):
            t = time.process_time()
            fastpath.FastGroup(group.consumers).close()
            rebuilds.append(time.process_time() - t)
        return {"bench": "micro_members", "n": n, "extra": extra,
                "join_us": round((t1 - t0) / extra * 1e6, 2),
                "leave_us": round((t2 - t1) / extra * 1e6, 2),
                "rebuild_us": round(statistics.median(rebuilds) * 1e6, 1),
                "fastpath": fastpath.reason()}
    finally:
        for t in transports:
            t.close()
        sink.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100,1000,3356", help="group sizes, comma-separated")
    ap.add_argument("--extra", type=int, default=50, help="consumers that join and leave")
    args = ap.parse_args(argv)
    for n in (int(x) for x in args.sizes.split(",")):
        print(json.dumps(asyncio.run(bench(n, args.extra))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

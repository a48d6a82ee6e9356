"""CPU µs per forwarded packet of the fan-out: `Producer._fanout` as it is vs the C group send.

    python -m bench.micro_fanout [--sizes 10,50,100] [--rounds 5] [--sends 60000]

Real parts: a real `Producer` and `Consumer`s configured through `SrtpPath` (the ICE pair is the
only stand-in), pylibsrtp sessions (AEAD_AES_128_GCM, what browsers pick first), one asyncio
datagram transport per consumer (one UDP socket per subscriber connection, as aiortc has), a
VP8-like 1200-byte packet with mid + abs-send-time extensions. All consumers send to one
receiving socket that nobody reads: the kernel drops at its full queue, after doing the send
work that a real send does (loopback delivery is charged to the sender).

Cases, per N: `Producer._fanout` itself (the production loop), its groups' sends forced to
- `c-fanout`: the compiled helper (what production runs when it is built), one packet a call
  (audio, or a video packet that arrived alone);
- `c-fanout-frame4`, `-nogso`: the same for a frame's 4 equal-sized packets read in one
  wake-up, queued and flushed as one batch (one sendmmsg per consumer, with and without UDP GSO);
- `c-fanout-connected`, `c-fanout-frame4-connected`: the same with every consumer's socket
  connected to its destination, as subscribers' are (sfu/adapters/direct_ingress.py): the
  sends name no address, the kernel reuses the route cached at connect();
- `python-fanout`: FastGroup's Python path (the fallback, `HOINGHI_FASTPATH=0`).

The C cases send through the process's io_uring where the kernel allows it (sfu/fastpath/
uring.c, `"sends": "io_uring"`); `c-fanout-connected-syscalls` and
`c-fanout-frame4-connected-syscalls` are the same with one syscall per send, for the A/B.

The cases are interleaved round by round and the median is reported, because the machines this
runs on are shared and noisy: compare numbers from one run, not across runs. One JSON line per
case on stdout: µs of process CPU time (time.process_time) per forwarded packet.
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
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from pylibsrtp import Policy, Session

from bench.micro import make_rtp
from sfu import fastpath
from sfu.adapters.aiortc_tap import Negotiated, SrtpPath
from sfu.config import SfuConfig
from sfu.consumer import Consumer
from sfu.core.rtp import (
    URI_ABS_SEND_TIME,
    URI_MID,
    RtpHeader,
    parse_into,
)
from sfu.producer import Producer, Source
from sfu.router import TrackInfo

# Every sequence number once, walked in order across all cases and rounds: libsrtp refuses a
# sender index that goes back further than its window (a wrap is a normal rollover).
RING = 65536
FRAME = 4  # packets per batch in the frame cases (a 320x240 VP8 frame at 1 Mbit/s: ~4)
VP8_KEY = b"\x10\x50\x02\x00\x9d\x01\x2a" + bytes(1100)  # descriptor S=1, then P=0: a keyframe


def _session(rng: random.Random) -> Session:
    policy = Policy(key=rng.randbytes(28), ssrc_type=Policy.SSRC_ANY_OUTBOUND,
                    srtp_profile=Policy.SRTP_PROFILE_AEAD_AES_128_GCM)
    policy.allow_repeat_tx = True  # the ring of inputs repeats seqs on long runs
    return Session(policy)


async def _consumers(producer: Producer, n: int, sink: tuple[str, int],
                     rng: random.Random, connect: bool = False) -> list[Any]:
    loop = asyncio.get_running_loop()
    keep: list[Any] = []
    neg = Negotiated(mid="0", kind="video",
                     codec=RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000,
                                                 payloadType=96),
                     rtx_payload_type=0, extensions={URI_MID: 1, URI_ABS_SEND_TIME: 3},
                     payload_types=frozenset({96}))
    for i in range(n):
        transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
        if connect:  # as DirectIngress connects a subscriber's socket to its peer
            transport._sock.connect(sink)
        pair = SimpleNamespace(protocol=SimpleNamespace(transport=transport), remote_addr=sink)
        dtls = SimpleNamespace(_tx_srtp=_session(rng), transport=SimpleNamespace(
            _connection=SimpleNamespace(_nominated={1: pair})))
        c = Consumer(producer, f"s{i}", rng)
        c.configure(neg, rng.randrange(1, 1 << 32), 0, SrtpPath(dtls))  # type: ignore[arg-type]
        producer.add_consumer(c, 0.0)
        keep.append(transport)
    return keep


def _fanout_with(producer: Producer, native: bool) -> Callable[[bytes, RtpHeader, float], None]:
    """`Producer._fanout` itself, with its groups' send loop forced to C or to Python."""
    groups = {key: fastpath.FastGroup(g.consumers, native=native)
              for key, g in producer.fast.items()}

    def fanout(data: bytes, h: RtpHeader, now: float) -> None:
        producer.fast = groups
        producer._fanout(data, h, now, None, -1)

    return fanout


def _framed(producer: Producer, native: bool, gso: bool
            ) -> Callable[[bytes, RtpHeader, float], None]:
    """A video frame's packets read in one wake-up: `FRAME` equal-sized packets through
    `_fanout` while batching, then `flush` (one sendmmsg per consumer, one GSO message when
    `gso`), as `PublisherConnection.on_rtp_batch` does."""
    single = _fanout_with(producer, native)
    count = [0]

    def fanout(data: bytes, h: RtpHeader, now: float) -> None:
        if count[0] % FRAME == 0:  # a frame starts (the cases take turns round by round)
            fastpath.set_gso(gso)
            producer.batching = True
        single(data, h, now)
        count[0] += 1
        if count[0] % FRAME == 0:
            producer.batching = False
            producer.flush()

    return fanout


def _run(fanout: Callable[[bytes, RtpHeader, float], None], ring: list[tuple[bytes, RtpHeader]],
         packets: int, at: list[int]) -> float:
    start = at[0]
    at[0] = start + packets
    now = 1e9
    t0 = time.process_time()
    for k in range(start, start + packets):
        data, h = ring[k & 0xFFFF]
        fanout(data, h, now + k * 0.005)
    return time.process_time() - t0


async def bench(n: int, rounds: int, sends: int) -> list[dict[str, Any]]:
    rng = random.Random(n)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sink.bind(("127.0.0.1", 0))
    ring: list[tuple[bytes, RtpHeader]] = []
    for i in range(RING):
        data = make_rtp(i, 1200)
        h = RtpHeader()
        assert parse_into(h, data)
        ring.append((data, h))
    transports: list[Any] = []

    async def make_producer(connect: bool) -> Producer:
        track = TrackInfo(id="p/camera", participant_id="p", kind="video", source="camera",
                          codec="VP8")
        producer = Producer(track, 90000, SfuConfig(), rng)
        producer.bind_source(Source(pt=96, rtx_pt=0, level_id=0))
        transports.extend(await _consumers(producer, n, sink.getsockname(), rng, connect))
        # New consumers wait for a keyframe (Producer.resuming): one admits them all, as live.
        key = ring[0][0][:ring[0][1].payload_off] + VP8_KEY
        h = RtpHeader()
        assert parse_into(h, key)
        producer.on_rtp(key, h, 1e9 - 1)
        if len(producer.fast) != 1 or len(next(iter(producer.fast.values()))) != n:
            raise RuntimeError(f"consumers not admitted: groups {producer.fast}")
        return producer

    producer = await make_producer(connect=False)
    ring_ok = fastpath.uring_available()  # the C cases' sends: one io_uring where allowed
    # name -> (fanout, its producer, whether the C path sends through the io_uring)
    cases: dict[str, tuple[Callable[[bytes, RtpHeader, float], None], Producer, bool]] = {
        "python-fanout": (_fanout_with(producer, native=False), producer, False),
    }
    if fastpath.COMPILED:
        connected = await make_producer(connect=True)
        one, framed = _fanout_with(connected, native=True), _framed(connected, True, True)
        cases["c-fanout"] = (_fanout_with(producer, native=True), producer, ring_ok)
        cases["c-fanout-connected"] = (one, connected, ring_ok)
        cases[f"c-fanout-frame{FRAME}"] = (_framed(producer, True, True), producer, ring_ok)
        cases[f"c-fanout-frame{FRAME}-connected"] = (framed, connected, ring_ok)
        cases[f"c-fanout-frame{FRAME}-nogso"] = (_framed(producer, True, False), producer,
                                                 ring_ok)
        if ring_ok:
            cases["c-fanout-connected-syscalls"] = (one, connected, False)
            cases[f"c-fanout-frame{FRAME}-connected-syscalls"] = (framed, connected, False)
    packets = max(200, sends // n) // FRAME * FRAME  # whole frames: nothing left queued
    times: dict[str, list[float]] = {name: [] for name in cases}
    at = [0]
    for fn, _, uring in cases.values():  # warm-up: caches, branch predictors, socket buffers
        fastpath.set_uring(uring)
        _run(fn, ring, max(20, packets // 10), at)
    for _ in range(rounds):
        for name, (fn, p, uring) in cases.items():
            fastpath.set_uring(uring)
            before = p.forwarded
            cpu = _run(fn, ring, packets, at)
            if p.forwarded - before != packets * n:
                raise RuntimeError(f"{name}: {p.forwarded - before} of {packets * n} sent")
            times[name].append(cpu / (packets * n) * 1e6)
    fastpath.set_gso(fastpath.GSO_DEFAULT)
    fastpath.set_uring(fastpath.URING_DEFAULT)
    for t in transports:
        t.close()
    sink.close()
    return [{"bench": "micro_fanout", "case": name, "n": n, "packets": packets,
             "forwarded_per_round": packets * n, "rounds": rounds,
             "us_per_pkt": round(statistics.median(ts), 3),
             "us_per_pkt_runs": [round(t, 3) for t in ts],
             "sends": "io_uring" if cases[name][2] else "syscalls",
             "fastpath": fastpath.reason()} for name, ts in times.items()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10,50,100", help="consumer counts, comma-separated")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--sends", type=int, default=60000,
                    help="forwarded packets per case and round (packets = sends / N)")
    args = ap.parse_args(argv)
    for n in (int(x) for x in args.sizes.split(",")):
        for line in asyncio.run(bench(n, args.rounds, args.sends)):
            print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`hoinghi bench micro`: the forwarding hot path's pieces against this machine's limits.

Every case runs a tight loop in one thread and reports CPU time (time.process_time, so a busy
neighbour inflates it less than wall time) per packet. The limits that matter for an SFU that
forwards one packet to N subscribers:
- a bare UDP sendto on loopback (the kernel's share, unavoidable per subscriber),
- SRTP protect per subscriber: pylibsrtp's Session.protect() (allocates bytes) and a direct cffi
  srtp_protect into a preallocated buffer (what a careful forwarder does),
- the RTP header rewrite (seq/ts/ssrc) into a reused buffer,
- those three together, per output packet,
- hoinghi's own fan-out, `Producer._fanout` on its C and Python paths (bench/micro_fanout.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pylibsrtp import Policy, Session
from pylibsrtp._binding import ffi, lib

from bench.wakeup import wakeup_cases

_HDR = struct.Struct("!BBHII")
_SEQ_TS_SSRC = struct.Struct("!HII")
_PROFILES = {
    "AEAD_AES_256_GCM": (Policy.SRTP_PROFILE_AEAD_AES_256_GCM, 32 + 12),
    "AEAD_AES_128_GCM": (Policy.SRTP_PROFILE_AEAD_AES_128_GCM, 16 + 12),
    "AES128_CM_SHA1_80": (Policy.SRTP_PROFILE_AES128_CM_SHA1_80, 16 + 14),
}


def make_rtp(seq: int, size: int, ssrc: int = 0x11223344, pt: int = 96) -> bytes:
    """An RTP packet like a forwarded VP8 one: 12-byte header, mid + abs-send-time extensions."""
    ext_body = bytes([0x10, ord("1"), 0x32, 1, 2, 3, 0, 0])
    ext = struct.pack("!HH", 0xBEDE, len(ext_body) // 4) + ext_body
    head = _HDR.pack(0x90, pt, seq & 0xFFFF, seq * 3000 & 0xFFFFFFFF, ssrc) + ext
    return head + os.urandom(size - len(head))


def srtp_session(profile: str) -> Session:
    prof, key_len = _PROFILES[profile]
    policy = Policy(key=os.urandom(key_len), ssrc_type=Policy.SSRC_ANY_OUTBOUND,
                    srtp_profile=prof)
    policy.allow_repeat_tx = True  # the loops reuse a ring of packets (same seqs again)
    policy.window_size = 1024
    return Session(policy)


def measure(name: str, loop: Callable[[int], None], n: int, per: int = 1) -> dict[str, Any]:
    """loop(k) handles k iterations of `per` packets each. Warm-up, then one timed run."""
    loop(max(1, n // 20))
    w0, c0 = time.perf_counter(), time.process_time()
    loop(n)
    c1, w1 = time.process_time(), time.perf_counter()
    packets = n * per
    cpu = c1 - c0
    return {"kind": "micro", "case": name, "packets": packets,
            "us_per_pkt": round(cpu / packets * 1e6, 3),
            "wall_us_per_pkt": round((w1 - w0) / packets * 1e6, 3),
            "pkts_per_cpu_s": round(packets / cpu) if cpu else None}


def udp_cases(n: int) -> list[dict[str, Any]]:
    out = []
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    addr = rx.getsockname()
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    data = make_rtp(1, 1200)

    def sendto(k: int, send: Any = tx.sendto, data: bytes = data, addr: Any = addr) -> None:
        for _ in range(k):
            send(data, addr)

    # Nobody reads rx: the kernel drops at the receive queue, after doing most of the work.
    out.append(measure("udp sendto 1200 B, loopback (receiver not read)", sendto, n))
    conn = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    conn.connect(addr)

    def send(k: int, send: Any = conn.send, data: bytes = data) -> None:
        for _ in range(k):
            send(data)

    out.append(measure("udp send 1200 B, connected socket", send, n))
    pid = os.fork()
    if pid == 0:  # a reader on the other core, as a real receiver would be
        rx.settimeout(2)
        try:
            while True:
                rx.recv(2048)
        finally:
            os._exit(0)
    try:
        time.sleep(0.1)
        out.append(measure("udp sendto 1200 B, receiver draining (other process)", sendto, n))
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    for s in (rx, tx, conn):
        s.close()
    return out


def srtp_cases(n: int) -> list[dict[str, Any]]:
    out = []
    for size in (1200, 200):
        # All 65536 sequence numbers, walked in order across calls: libsrtp's sender-side
        # replay check refuses an index that goes backwards (a wrap is a normal rollover).
        ring = [make_rtp(i, size) for i in range(65536)]
        for profile in _PROFILES:
            session = srtp_session(profile)
            at = [0]

            def api(k: int, protect: Any = session.protect, ring: list[bytes] = ring,
                    at: list[int] = at) -> None:
                start = at[0]
                for i in range(start, start + k):
                    protect(ring[i & 0xFFFF])
                at[0] = start + k

            out.append(measure(f"srtp Session.protect() {profile} {size} B", api, n))
            buf = ffi.new("char[]", 1500)
            view = ffi.buffer(buf)
            length = ffi.new("int *")
            ctx = session._srtp[0]

            def direct(k: int, ring: list[bytes] = ring, buf: Any = buf, view: Any = view,
                       length: Any = length, ctx: Any = ctx,
                       protect: Any = lib.srtp_protect, at: list[int] = at) -> None:
                start = at[0]
                at[0] = start + k
                for i in range(start, start + k):
                    p = ring[i & 0xFFFF]
                    size_ = len(p)
                    view[0:size_] = p
                    length[0] = size_
                    protect(ctx, buf, length)

            out.append(measure(f"srtp_protect cffi, preallocated buffer {profile} {size} B",
                               direct, n))
    return out


def rewrite_cases(n: int) -> list[dict[str, Any]]:
    ring = [make_rtp(i, 1200) for i in range(4096)]
    buf = bytearray(1500)
    unpack, pack_into = _SEQ_TS_SSRC.unpack_from, _SEQ_TS_SSRC.pack_into

    def in_place(k: int, ring: list[bytes] = ring, buf: bytearray = buf) -> None:
        for i in range(k):
            p = ring[i & 4095]
            buf[0:len(p)] = p
            seq, ts, _ = unpack(p, 2)
            pack_into(buf, 2, (seq + 1000) & 0xFFFF, (ts + 5000) & 0xFFFFFFFF, 0xDEADBEEF)

    hdr = struct.Struct("!BBHII")

    def concat(k: int, ring: list[bytes] = ring) -> None:
        for i in range(k):
            p = ring[i & 4095]
            b0, b1, seq, ts, _ = hdr.unpack_from(p)
            hdr.pack(b0, b1, (seq + 1000) & 0xFFFF, (ts + 5000) & 0xFFFFFFFF, 0xDEADBEEF) + p[12:]

    def baseline(k: int, ring: list[bytes] = ring) -> None:
        for i in range(k):
            ring[i & 4095]

    return [measure("loop overhead (index a ring)", baseline, n),
            measure("header rewrite, pack_into a reused buffer", in_place, n),
            measure("header rewrite, new 12 B header + payload slice", concat, n)]


def pipeline_case(n: int, subscribers: int = 10) -> dict[str, Any]:
    """rewrite + cffi protect + sendto per output packet: the best pure-Python forward loop."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    addr = rx.getsockname()
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ring = [make_rtp(i, 1200) for i in range(65536)]
    at = [0]
    outs = []
    for k in range(subscribers):
        buf = ffi.new("char[]", 1500)
        session = srtp_session("AEAD_AES_128_GCM")
        # The session object rides along so its libsrtp context stays alive.
        outs.append((session._srtp[0], buf, ffi.buffer(buf), 0xABC00000 + k, session))
    length = ffi.new("int *")
    pack_into, unpack = _SEQ_TS_SSRC.pack_into, _SEQ_TS_SSRC.unpack_from
    protect, sendto = lib.srtp_protect, tx.sendto

    def loop(k: int) -> None:
        start = at[0]
        at[0] = start + k
        for i in range(start, start + k):
            p = ring[i & 0xFFFF]
            size = len(p)
            seq, ts, _ = unpack(p, 2)
            for ctx, buf, view, ssrc, _s in outs:
                view[0:size] = p
                pack_into(view, 2, seq, ts, ssrc)
                length[0] = size
                protect(ctx, buf, length)
                sendto(view[0:length[0]], addr)

    res = measure(f"pipeline: rewrite + cffi protect + sendto, 1 in → {subscribers} out", loop,
                  max(1, n // subscribers), per=subscribers)
    rx.close()
    tx.close()
    return res


def forward_case(n: int) -> list[dict[str, Any]]:
    """hoinghi's own fan-out, `Producer._fanout` to 10 consumers: C one packet a call, C a
    frame's batch with and without GSO, Python (bench/micro_fanout.py, which runs more sizes
    and rounds on its own)."""
    from bench.micro_fanout import bench

    out = []
    for line in asyncio.run(bench(10, rounds=3, sends=n)):
        us = line["us_per_pkt"]
        out.append({"kind": "micro", "case": f"hoinghi Producer._fanout to 10 consumers, "
                    f"{line['case']} (median of {line['rounds']})",
                    "packets": line["forwarded_per_round"], "us_per_pkt": us,
                    "wall_us_per_pkt": None, "pkts_per_cpu_s": round(1e6 / us) if us else None})
    return out


def run_micro(out_dir: Path, quick: bool = False) -> int:
    n = 20_000 if quick else 300_000
    results: list[dict[str, Any]] = []
    for group in (udp_cases, srtp_cases, rewrite_cases, pipeline_case, forward_case):
        got = group(n)
        for r in got if isinstance(got, list) else [got]:
            results.append(r)
            print(json.dumps(r), flush=True)
    for r in wakeup_cases(quick):
        results.append(r)
        print(json.dumps(r), flush=True)
    machine = {"kind": "machine", "cores": os.cpu_count(), "python": sys.version.split()[0],
               "cpu": _cpu_model(), "loadavg1": round(os.getloadavg()[0], 2)}
    print(json.dumps(machine), flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"micro-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [*results, machine]))
    _table(results)
    print(f"[bench] results: {path}", file=sys.stderr)
    return 0


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def _table(results: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("case", "CPU µs/pkt", "wall µs/pkt", "pkt per CPU-s",
                  title="hoinghi bench micro (one thread)")
    for r in results:
        if "skipped" in r:
            table.add_row(r["case"], "skipped: " + r["skipped"], "", "")
        else:
            wall = r["wall_us_per_pkt"]
            table.add_row(r["case"], f"{r['us_per_pkt']:.3f}",
                          "" if wall is None else f"{wall:.3f}", f"{r['pkts_per_cpu_s']:,}")
    Console(stderr=True).print(table)

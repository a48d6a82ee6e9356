"""The machine's floor for the fixed cost per incoming packet: an asyncio UDP receiver that does
nothing with what it gets, fed at a paced rate by another process.

At a publisher's rate (~165 packets/s) every datagram finds the receiver asleep, so what it
costs is the wake-up (scheduler, cold caches, on a VM the virtual interrupt), not Python. No
server that wakes per packet gets below this; hoinghi's fixed cost at N = 1 is read against it.
"""

from __future__ import annotations

import asyncio
import resource
import subprocess
import sys
import time
from typing import Any

_SENDER = """
import socket, sys, time
port, rate = int(sys.argv[1]), float(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
payload = b"x" * 1100
t = time.monotonic()
while True:
    s.sendto(payload, ("127.0.0.1", port))
    t += 1 / rate
    d = t - time.monotonic()
    if d > 0:
        time.sleep(d)
"""


class _Count(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.n = 0

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.n += 1


async def _measure(rate: float, seconds: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(_Count, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    sender = subprocess.Popen([sys.executable, "-c", _SENDER, str(port), str(rate)])
    try:
        while proto.n < rate:  # a second's worth received: the sender is up and paced
            await asyncio.sleep(0.05)
        t0, w0, n0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic(), proto.n
        await asyncio.sleep(seconds)  # the measurement window itself, not a synchronisation
        t1, w1, n1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic(), proto.n
    finally:
        sender.kill()
        sender.wait()
        transport.close()
    sys_s = t1.ru_stime - t0.ru_stime
    cpu = (t1.ru_utime - t0.ru_utime) + sys_s
    got = n1 - n0
    return {"kind": "micro", "case": f"asyncio_udp_wakeup_{int(rate)}pps", "packets": got,
            "us_per_pkt": round(cpu / got * 1e6, 1) if got else None,
            "wall_us_per_pkt": round((w1 - w0) / got * 1e6, 1) if got else None,
            "pkts_per_cpu_s": round(got / cpu) if cpu else None,
            "sys_share": round(sys_s / cpu, 2) if cpu else None}


def wakeup_cases(quick: bool) -> list[dict[str, Any]]:
    seconds = 2.0 if quick else 10.0
    out = [asyncio.run(_measure(rate, seconds)) for rate in (165.0, 1000.0)]
    # The same receiver on uvloop (libuv's loop in C): how much of the floor is asyncio's own
    # Python loop. Optional (`pip install '.[bench]'`): hoinghi itself runs on asyncio.
    try:
        import uvloop
    except ImportError:
        return [*out, {"kind": "micro", "case": "uvloop_udp_wakeup_165pps",
                       "skipped": "uvloop not installed (pip install '.[bench]')"}]
    r = uvloop.run(_measure(165.0, seconds))
    return [*out, {**r, "case": "uvloop_udp_wakeup_165pps"}]

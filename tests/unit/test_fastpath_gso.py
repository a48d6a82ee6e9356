"""UDP GSO in the C fan-out (sfu/fastpath/fanout.c): a subscriber's run of equal-sized packets
leaves as one message the kernel splits, and arrives as the same datagrams as without it.

Same real parts as tests/unit/test_fastpath.py (its helpers): pylibsrtp sessions, consumers on
real datagram transports, receiving sockets on 127.0.0.1 that unprotect and check every byte.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from sfu import fastpath
from tests.unit.test_fastpath import REPO, close_all, make_peer, packet_tail, received_all

pytestmark = pytest.mark.skipif(not fastpath.AVAILABLE, reason=fastpath.reason())

SO_NO_CHECK = getattr(socket, "SO_NO_CHECK", 11)  # Linux: UDP without checksum, no GSO


def sized(sizes: list[int], seq: int = 100) -> list[tuple[bytes, int, int, int, int]]:
    """A batch whose protected packets have these payload sizes (same header layout), with
    sequence numbers from `seq` (SRTP refuses to protect one twice)."""
    return [(packet_tail(k, size), 0x90, 0x80 if k == len(sizes) - 1 else 0, seq + k, 3000)
            for k, size in enumerate(sizes)]


def gso() -> tuple[int, int]:
    counters = fastpath.gso_counters()
    return counters["fanout_gso_messages"], counters["fanout_gso_packets"]


@pytest.mark.usefixtures("sends")
async def test_runs_of_equal_packets_leave_as_gso_and_arrive_one_by_one() -> None:
    peers = [await make_peer(i) for i in range(2)]
    try:
        g = fastpath.FastGroup([p.consumer for p in peers], native=True)
        # Runs: [900 900 900 500] (a shorter one ends a run), [900], [1000 300].
        batch = sized([900, 900, 900, 500, 900, 1000, 300])
        before = gso()
        assert g.send_batch(batch) == 2 * len(batch)
        messages, packets = gso()
        assert (messages - before[0], packets - before[1]) == (2 * 2, 2 * 6)
        received_all(peers, batch)
        assert g.errors == 0
    finally:
        close_all(peers)


@pytest.mark.usefixtures("sends")
async def test_a_path_that_refuses_gso_gets_the_same_datagrams_one_by_one() -> None:
    peers = [await make_peer(i) for i in range(2)]
    try:
        # The kernel refuses GSO on a socket that sends without UDP checksums (EINVAL): the
        # first consumer's path; the second's takes it.
        sock = peers[0].transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
        g = fastpath.FastGroup([p.consumer for p in peers], native=True)
        refused = fastpath.gso_counters()["fanout_gso_refused"]
        for seq in (100, 200):  # the refusal is remembered: the second goes plain at once
            batch = sized([1000, 1000, 1000, 400], seq)
            before = gso()
            assert g.send_batch(batch) == 2 * len(batch)
            messages, packets = gso()
            assert (messages - before[0], packets - before[1]) == (1, 4)  # the second's only
            received_all(peers, batch)
            assert fastpath.gso_counters()["fanout_gso_refused"] == refused + 1
        assert g.errors == 0
    finally:
        close_all(peers)


@pytest.mark.parametrize(("env", "on"), [("0", "0"), ("1", "1")])
def test_hoinghi_gso_switches_it(env: str, on: str) -> None:
    code = ("import sfu.fastpath as f; out = f._ffi.new('uint64_t[3]'); "
            "print(f._lib.fp_gso_stats(out))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "HOINGHI_GSO": env}, cwd=REPO, check=True)
    assert out.stdout.split() == [on]

"""The C fan-out's io_uring (sfu/fastpath/uring.c, fanout_ring.c): many sends per syscall, the
same datagrams on the wire, and plain syscalls where the kernel refuses io_uring.

Every other fan-out test runs on both ways of sending (the `native` and `sends` fixtures in
conftest.py); these check what is particular to the ring. Real sockets and SRTP sessions
(helpers from test_fastpath.py); the refusal is a real seccomp filter, as a container's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from sfu import fastpath
from tests.unit.test_fastpath import REPO, check, close_all, make_peer, packet_tail, received_all
from tests.unit.test_fastpath_gso import sized

pytestmark = pytest.mark.skipif(not (fastpath.AVAILABLE and fastpath.uring_available()),
                                reason="needs the C path and a kernel that allows io_uring")

DEPTH = 64  # FP_RING_DEPTH in uring.c: sends per io_uring_enter()


def ring() -> tuple[int, int]:
    counters = fastpath.uring_counters()
    return counters["fanout_uring_enters"], counters["fanout_uring_sends"]


@pytest.mark.usefixtures("sends")
async def test_one_syscall_per_ring_full_of_consumers(sends: bool) -> None:
    peers = [await make_peer(i) for i in range(150)]
    try:
        g = fastpath.FastGroup([p.consumer for p in peers], native=True)
        tail = packet_tail(5, 160)  # audio-sized
        before = ring()
        assert g.send(tail, 0x90, 0x80, 77, 9000) == 150
        enters, sent = (a - b for a, b in zip(ring(), before, strict=True))
        # 150 sends: 64 + 64 + 22, three syscalls through the ring; none without it.
        assert (enters, sent) == ((3, 150) if sends else (0, 0))
        for p in peers:
            check(p, p.receive(), 0x90, 0x80, 77, 9000, tail)
            assert p.nothing_waiting()
        assert g.errors == 0
    finally:
        close_all(peers)


async def test_batches_fill_the_ring_across_consumers() -> None:
    fastpath.set_uring(True)
    peers = [await make_peer(i) for i in range(40)]
    try:
        g = fastpath.FastGroup([p.consumer for p in peers], native=True)
        # Per consumer, two messages: a GSO run of four and a larger last packet alone.
        batch = sized([1000, 1000, 1000, 1000, 1100], seq=500)
        before = ring()
        assert g.send_batch(batch) == 40 * len(batch)
        enters, sent = (a - b for a, b in zip(ring(), before, strict=True))
        assert sent == 40 * 2 and enters == 2  # 80 messages: 64 + 16
        received_all(peers, batch)
        assert g.errors == 0
    finally:
        close_all(peers)
        fastpath.set_uring(fastpath.URING_DEFAULT)


def test_a_forked_child_makes_its_own_ring() -> None:
    assert fastpath.set_uring(True)
    assert fastpath.uring_counters()["fanout_uring_state"] == 1
    pid = os.fork()
    if pid == 0:  # the child: the parent's ring was dropped at the fork; a new one on demand
        state = fastpath.uring_counters()["fanout_uring_state"]
        made = fastpath.set_uring(True)
        os._exit(0 if (state, made) == (0, True) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert fastpath.uring_counters()["fanout_uring_state"] == 1  # the parent's is untouched
    fastpath.set_uring(fastpath.URING_DEFAULT)


# In a child process: a seccomp filter (as Docker's default profile does) makes io_uring_setup
# fail with EPERM; the fan-out then sends with plain syscalls, and every packet still arrives.
_REFUSED = textwrap.dedent("""
    import asyncio, ctypes, errno, struct
    from sfu import fastpath
    from tests.unit.test_fastpath import check, close_all, make_peer, packet_tail

    libc = ctypes.CDLL(None, use_errno=True)
    NR_IO_URING_SETUP = 425  # x86_64 and aarch64 alike
    insns = [(0x20, 0, 0, 0),  # load seccomp_data.nr
             (0x15, 0, 1, NR_IO_URING_SETUP),  # == io_uring_setup ?
             (0x06, 0, 0, 0x00050000 | errno.EPERM),  # SECCOMP_RET_ERRNO | EPERM
             (0x06, 0, 0, 0x7FFF0000)]  # SECCOMP_RET_ALLOW
    prog = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in insns))
    fprog = struct.pack("HxxxxxxP", len(insns), ctypes.addressof(prog))
    assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
    assert libc.prctl(22, 2, ctypes.c_char_p(fprog), 0, 0) == 0  # PR_SET_SECCOMP, FILTER

    async def main():
        peers = [await make_peer(i) for i in range(3)]
        g = fastpath.FastGroup([p.consumer for p in peers], native=True)
        tail = packet_tail(1)
        assert g.send(tail, 0x90, 0, 5, 6) == 3
        for p in peers:
            check(p, p.receive(), 0x90, 0, 5, 6, tail)
        close_all(peers)
        print(fastpath.set_uring(True), fastpath.uring_available(),
              fastpath.uring_counters()["fanout_uring_state"])
        print(fastpath.send_mode())

    asyncio.run(main())
""")


@pytest.mark.skipif(os.uname().machine not in ("x86_64", "aarch64"), reason="syscall number")
def test_where_io_uring_is_refused_the_sends_are_plain_syscalls() -> None:
    out = subprocess.run([sys.executable, "-c", _REFUSED], capture_output=True, text=True,
                         cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]
    first, mode = out.stdout.splitlines()
    assert first.split() == ["False", "False", "-1"]  # -EPERM, and never tried again
    assert mode == "one syscall per send: io_uring refused here (Operation not permitted)"


@pytest.mark.parametrize(("env", "state"), [("0", 0), ("1", 1)])
def test_hoinghi_uring_switches_it(env: str, state: int) -> None:
    # A send to no one still asks for the ring first: made unless HOINGHI_URING=0.
    code = ("import sfu.fastpath as f; f._lib.fp_send(f._ffi.NULL, 0, b'', 0, 0, 0, 0, 0, "
            "f._PROTECT); print(f.URING_DEFAULT, f.uring_counters()['fanout_uring_state']); "
            "print(f.send_mode())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "HOINGHI_URING": env}, cwd=REPO, check=True)
    first, mode = out.stdout.splitlines()
    assert first.split() == [str(env == "1"), str(state)]
    assert mode == ("io_uring, up to 64 sends per syscall" if env == "1"
                    else "one syscall per send: HOINGHI_URING=0")

"""sfu.adapters.parking's poller with real UDP sockets and a real epoll set.

The readers here are plain objects that read their own socket: the poller only needs to know
whether a socket is readable and whether its reader is still alive.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from sfu.adapters.parking import POLL_S, Poller, drain, poller


class Reader:
    def __init__(self, sock: socket.socket, keep: bool = True) -> None:
        self.sock, self.keep = sock, keep
        self.got: list[bytes] = []
        self.closed = False

    @property
    def active(self) -> bool:
        return not self.closed

    def read_parked(self) -> bool:
        while True:
            try:
                self.got.append(self.sock.recv(2048))
            except BlockingIOError:
                return self.keep


def send_to(sock: socket.socket, data: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tx.sendto(data, sock.getsockname())


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.connect(rx.getsockname())
    yield rx, tx
    rx.close()
    tx.close()


async def test_a_parked_socket_is_read_on_the_next_poll_only(pair) -> None:  # type: ignore[no-untyped-def]
    rx, tx = pair
    p = Poller(asyncio.get_running_loop())
    try:
        reader = Reader(rx)
        p.add(rx.fileno(), reader)
        p.poll()
        assert reader.got == [] and p.wakeups == 0  # nothing to read: nothing called
        tx.send(b"one")
        tx.send(b"two")
        p.poll()
        assert reader.got == [b"one", b"two"] and p.wakeups == 1
        p.remove(rx.fileno(), reader)
        tx.send(b"three")
        p.poll()
        assert reader.got == [b"one", b"two"] and len(p) == 0
    finally:
        p.close()


async def test_the_timer_drains_parked_sockets_while_any_is_parked(pair) -> None:  # type: ignore[no-untyped-def]
    rx, tx = pair
    p = poller()
    assert poller() is p  # one per loop
    reader = Reader(rx)
    p.add(rx.fileno(), reader)
    tx.send(b"hello")
    loop = asyncio.get_running_loop()
    end = loop.time() + 20 * POLL_S
    while not reader.got and loop.time() < end:
        await asyncio.sleep(POLL_S / 4)
    assert reader.got == [b"hello"]
    p.remove(rx.fileno(), reader)
    assert p._timer is None or len(p) == 0


async def test_readers_that_give_up_or_whose_socket_closed_are_forgotten(pair) -> None:  # type: ignore[no-untyped-def]
    rx, tx = pair
    p = Poller(asyncio.get_running_loop())
    try:
        quitting = Reader(rx, keep=False)
        p.add(rx.fileno(), quitting)
        tx.send(b"last")
        p.poll()
        assert quitting.got == [b"last"] and len(p) == 0
        # A socket that closes while parked leaves the epoll set with its file; the sweep
        # drops its reader, and its number may come back for a new socket.
        other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        other.bind(("127.0.0.1", 0))
        other.setblocking(False)
        gone = Reader(other)
        fd = other.fileno()
        p.add(fd, gone)
        other.close()
        gone.closed = True
        for _ in range(10):
            p.poll()
        assert len(p) == 0
        reused = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        reused.bind(("127.0.0.1", 0))
        reused.setblocking(False)
        fresh = Reader(reused)
        p.add(reused.fileno(), fresh)  # same number or not, it is registered afresh
        p.remove(fd, gone)  # a stale remove never drops the new reader
        send_to(reused, b"new")
        p.poll()
        assert fresh.got == [b"new"] and len(p) == 1
        reused.close()
    finally:
        p.close()


async def test_a_failing_reader_is_dropped_and_the_others_still_read(pair) -> None:  # type: ignore[no-untyped-def]
    rx, tx = pair
    p = Poller(asyncio.get_running_loop())
    try:
        broken_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        broken_sock.bind(("127.0.0.1", 0))

        class Broken(Reader):
            def read_parked(self) -> bool:
                raise RuntimeError("bug")

        broken = Broken(broken_sock)
        good = Reader(rx)
        p.add(broken_sock.fileno(), broken)
        p.add(rx.fileno(), good)
        send_to(broken_sock, b"x")
        tx.send(b"ok")
        p.poll()  # loopback delivers before sendto returns: one poll sees both
        assert good.got == [b"ok"] and len(p) == 1
        broken_sock.close()
    finally:
        p.close()


async def test_drain_reads_now_without_the_timer_and_never_reenters(pair) -> None:  # type: ignore[no-untyped-def]
    rx, tx = pair
    p = Poller(asyncio.get_running_loop())
    try:
        nested: list[bool] = []

        class Nesting(Reader):
            def read_parked(self) -> bool:  # a parked publisher's batch leads back to drain
                nested.append(p.drain())
                return super().read_parked()

        reader = Nesting(rx)
        assert p.drain() is False  # nothing parked: not even an epoll_wait
        p.add(rx.fileno(), reader)
        assert p.drain() is False and reader.got == []
        tx.send(b"nack")
        assert p.drain() is True
        assert reader.got == [b"nack"] and nested == [False]
        assert p.reads == 1 and p.wakeups == 0  # read after media, not by the timer
    finally:
        p.close()


async def test_drain_of_a_loop_that_never_parked_creates_nothing() -> None:
    loop = asyncio.get_running_loop()
    drain()
    assert Poller not in loop.__dict__.get("_hoinghi_services", {})


async def test_media_pushes_the_timer_back_and_still_sweeps(pair) -> None:  # type: ignore[no-untyped-def]
    rx, tx = pair
    loop = asyncio.get_running_loop()
    p = poller()  # the loop's own, which the module-level drain() (after media) reaches
    try:
        reader = Reader(rx)
        p.add(rx.fileno(), reader)
        first = p._timer
        assert first is not None
        tx.send(b"rr")
        drain()  # the timer is a full POLL_S away: read now, timer left alone
        assert reader.got == [b"rr"] and p._timer is first
        # The timer is due within POLL_S / 2 (as if media had flowed that long): pushed back.
        first.cancel()
        p._timer = due = loop.call_at(loop.time() + POLL_S / 4, p.poll)
        drain()
        assert due.cancelled() and p._timer is not None and p._timer is not due
        assert p._timer.when() - loop.time() > POLL_S / 2
        assert p.wakeups == 0  # none of it was the timer's
        # A reader whose socket closed is swept out by the pushes too, not only by the timer.
        reader.closed = True
        for _ in range(10):  # _SWEEP_EVERY
            p._timer.cancel()
            p._timer = loop.call_at(loop.time(), p.poll)
            drain()
        assert len(p) == 0
    finally:
        p.close()
        loop.__dict__.get("_hoinghi_services", {}).clear()

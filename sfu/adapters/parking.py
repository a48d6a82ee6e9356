"""Parked sockets: idle connections read ten times a second, not on every datagram.

Most bridges of a national conference are idle most of the time: a commune without the floor
keeps a publisher connection whose camera and microphone send nothing, yet its RTCP sender
reports and ICE consent checks still arrive, each waking the event loop (on a VM a wake-up costs
more than the work it brings: measured with `hoinghi bench idle`). A connection with no RTP for
a while is *parked*: its socket leaves the event loop's selector for one epoll set of our own,
which a single timer drains every POLL_S. Its first RTP packet (the floor was given) waits at
most POLL_S and unparks it (sfu/adapters/aiortc_tap.py: DirectIngress).

Only asyncio and the epoll fd here; what a parked socket's reader does is the caller's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

POLL_S = 0.1  # RTCP reports come once a second, consent checks every ~5 s: ample
_SWEEP_EVERY = 10  # polls between sweeps for parked readers whose socket closed meanwhile


class Parked(Protocol):
    @property
    def active(self) -> bool: ...  # False once the socket is closing: forget it

    def read_parked(self) -> bool: ...  # the socket is readable; False: forget me


class Poller:
    """One per event loop (`poller`): an epoll set of parked sockets, drained every POLL_S."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._epoll = select.epoll()
        self._parked: dict[int, Parked] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._polls = 0
        self.wakeups = 0  # polls that found something to read

    def __len__(self) -> int:
        return len(self._parked)

    def add(self, fd: int, reader: Parked) -> None:
        # A socket that closed while parked left the epoll set with its file, so its number
        # may come back for another socket: the new reader replaces the old entry.
        with contextlib.suppress(FileExistsError):
            self._epoll.register(fd, select.EPOLLIN)
        self._parked[fd] = reader
        if self._timer is None:
            self._timer = self._loop.call_later(POLL_S, self.poll)

    def remove(self, fd: int, reader: Parked) -> None:
        if self._parked.get(fd) is not reader:
            return  # already replaced by a newer socket with the same number
        del self._parked[fd]
        with contextlib.suppress(OSError):  # a closed socket is gone from the set already
            self._epoll.unregister(fd)

    def poll(self) -> None:
        """Read every parked socket that has something (called by the timer; tests call it)."""
        self._timer = None
        self._polls += 1
        try:
            events = self._epoll.poll(0)
        except OSError:  # the epoll fd itself is gone (loop shutdown)
            return
        if events:
            self.wakeups += 1
        for fd, _ in events:
            reader = self._parked.get(fd)
            if reader is None:
                continue
            try:
                keep = reader.read_parked()
            except Exception:  # one connection's bug must not stop the others' reports
                log.exception("parked reader failed")
                keep = False
            if not keep:
                self.remove(fd, reader)
        if self._polls % _SWEEP_EVERY == 0:
            for fd, reader in list(self._parked.items()):
                if not reader.active:
                    self.remove(fd, reader)
        if self._parked and not self._loop.is_closed():
            self._timer = self._loop.call_later(POLL_S, self.poll)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._parked.clear()
        self._epoll.close()


def of_loop(cls: Callable[[asyncio.AbstractEventLoop], T]) -> T:
    """The running loop's one instance of `cls` (created on first use): a process-wide
    service that lives and dies with its event loop (tests run one loop each). Kept on the
    loop itself: the instance refers to its loop, so a weak mapping would never let go."""
    loop = asyncio.get_running_loop()
    instances: dict[Any, Any] = loop.__dict__.setdefault("_hoinghi_services", {})
    found = instances.get(cls)
    if found is None:
        found = instances[cls] = cls(loop)
    return found  # type: ignore[no-any-return]


def poller() -> Poller:
    """The running loop's poller."""
    return of_loop(Poller)

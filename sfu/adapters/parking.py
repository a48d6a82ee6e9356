"""Parked sockets: idle connections read ten times a second, not on every datagram.

Most bridges of a national conference are idle most of the time: a commune without the floor
keeps a publisher connection whose camera and microphone send nothing, yet its RTCP sender
reports and ICE consent checks still arrive, each waking the event loop (on a VM a wake-up costs
more than the work it brings: measured with `hoinghi bench idle`). A connection with no RTP for
a while is *parked*: its socket leaves the event loop's selector for one epoll set of our own,
which a single timer drains every POLL_S. Its first RTP packet (the floor was given) waits at
most POLL_S and unparks it (sfu/adapters/aiortc_tap.py: DirectIngress).

Subscribers' connections are parked from the start: all they ever send is RTCP (receiver
reports, NACK, PLI, REMB) and consent checks, a wake-up each, as many as the forwarding's own
at 50 subscribers. While media flows the set is also drained after every media batch
(`drain`, the loop is awake anyway), so a NACK waits for the next incoming packet, not POLL_S,
and the timer is pushed back meanwhile: no wake-ups of its own while media flows.

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
        self._draining = False
        self.wakeups = 0  # timer polls that found something to read
        self.reads = 0  # parked sockets read, by the timer or after media

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
        """The timer: read every parked socket that has something, and come back (tests call
        it too)."""
        self._timer = None
        if self.drain():
            self.wakeups += 1
        self._count_poll()
        if self._parked and not self._loop.is_closed():
            self._timer = self._loop.call_later(POLL_S, self.poll)

    def after_media(self) -> None:
        """A media batch woke the loop: drain now, and push the timer back so that it costs
        no wake-up of its own while media flows (re-armed at most every POLL_S / 2, as
        sfu/timers.py does for the rooms' timers)."""
        self.drain()
        timer = self._timer
        if timer is not None and timer.when() - self._loop.time() < POLL_S / 2:
            timer.cancel()
            self._count_poll()
            self._timer = self._loop.call_later(POLL_S, self.poll)

    def _count_poll(self) -> None:
        self._polls += 1
        if self._polls % _SWEEP_EVERY == 0:
            for fd, reader in list(self._parked.items()):
                if not reader.active:
                    self.remove(fd, reader)

    def drain(self) -> bool:
        """Read every parked socket that has something now; True if any had. One epoll_wait
        without a wait when none has: cheap enough for every media batch."""
        if self._draining or not self._parked:
            return False  # a parked publisher's packets lead back here: the outer drain reads
        self._draining = True
        try:
            events = self._epoll.poll(0)
            self._read(events)
        except OSError:  # the epoll fd itself is gone (loop shutdown); readers never raise
            return False
        finally:
            self._draining = False
        return bool(events)

    def _read(self, events: list[tuple[int, int]]) -> None:
        self.reads += len(events)
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
    instances = _services(loop)
    found = instances.get(cls)
    if found is None:
        found = instances[cls] = cls(loop)
    return found  # type: ignore[no-any-return]


def _services(loop: asyncio.AbstractEventLoop) -> dict[Any, Any]:
    return loop.__dict__.setdefault("_hoinghi_services", {})  # type: ignore[no-any-return]


def poller() -> Poller:
    """The running loop's poller."""
    return of_loop(Poller)


def drain() -> None:
    """After a media batch: read the loop's parked sockets that have something (NACKs, PLIs
    from subscribers; a parked publisher's first packet)."""
    found = _services(asyncio.get_running_loop()).get(Poller)
    if found is not None:  # none parked ever in this loop: nothing to read
        found.after_media()

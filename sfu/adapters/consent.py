"""Our consent checks for every connection, from one timer per event loop.

The shell around sfu/core/consent.py: every TICK_S it sends the checks the schedule says are
due and closes the connections whose consent expired. What a check looks like on the wire and
how a connection is closed is the peer's business (sfu/adapters/aiortc_tap.py: DirectIngress,
which also hands back the answers it reads).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from sfu.adapters.parking import of_loop
from sfu.core.consent import ConsentSchedule

log = logging.getLogger(__name__)

TICK_S = 0.5  # checks go out within this of their due time


class ConsentPeer(Protocol):
    def send_check(self, transaction: bytes) -> None: ...

    def expire(self) -> None: ...  # no answer for EXPIRY_S: close the connection


class ConsentChecks:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.schedule = ConsentSchedule()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, peer: ConsentPeer) -> None:
        self.schedule.add(peer, time.monotonic())
        if self._timer is None:
            self._timer = self._loop.call_later(TICK_S, self.tick)

    def remove(self, peer: ConsentPeer) -> None:
        self.schedule.remove(peer)

    def answer(self, peer: ConsentPeer, transaction: bytes) -> bool:
        return self.schedule.answer(peer, transaction, time.monotonic())

    def tick(self) -> None:
        self._timer = None
        now = time.monotonic()
        for peer, transaction in self.schedule.due(now):
            try:
                peer.send_check(transaction)  # type: ignore[attr-defined]
            except Exception:  # one connection's failure must not stop the others' checks
                log.exception("consent check not sent")
        for peer in self.schedule.expired(now):
            try:
                peer.expire()  # type: ignore[attr-defined]
            except Exception:
                log.exception("expired connection not closed")
        if len(self.schedule) and not self._loop.is_closed():
            self._timer = self._loop.call_later(TICK_S, self.tick)


def consent_checks() -> ConsentChecks:
    """The running loop's consent checks."""
    return of_loop(ConsentChecks)

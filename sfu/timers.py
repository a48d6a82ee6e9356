"""A room's timers, driven by its media instead of a periodic task.

NACK/PLI checks want ~20 ms granularity, the speaker detector ~200 ms, reports 1 s. A 50 Hz
asyncio task costs a wake-up each time; here `poll(now)` runs whatever is due and is called by
the ingress after every batch (the loop is awake anyway), so while media flows the timers cost
no wake-up of their own. A fallback timer, pushed back by every poll, runs them after
IDLE_TICK_S without media.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

TICK_S = 0.02  # NACK retries and deferred PLIs are checked at least this often with media
IDLE_TICK_S = 0.1  # without media: the timers still run (reports, speaker), less often
SPEAKER_TICK_S = 0.2  # dominant-speaker decisions, as Jitsi's 100-300 ms
REPORT_S = 1.0


class RoomTimers:
    def __init__(self, name: str, tick: Callable[[float], None],
                 speaker: Callable[[float], None], report: Callable[[float], None]) -> None:
        self._name = name
        self._tick, self._speaker, self._report = tick, speaker, report
        self._idle: asyncio.TimerHandle | None = None
        self._next_tick = self._next_speaker = self._next_report = self._idle_due = 0.0
        self._closed = False
        self.polls = 0  # polls that ran the timers
        self.idle_wakeups = 0  # times the fallback fired (no media for IDLE_TICK_S)

    def start(self) -> None:
        """Arm the fallback (idempotent): the timers run from now on, media or not."""
        if self._idle is None and not self._closed:
            self._arm(time.time())

    def close(self) -> None:
        self._closed = True
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None

    def poll(self, now: float) -> None:
        """Run whatever is due (cheap when nothing is); pushes the fallback back."""
        if self._closed:
            return
        if now > self._idle_due - IDLE_TICK_S / 2:  # re-armed at most every IDLE_TICK_S / 2
            self._arm(now)
        if now < self._next_tick:
            return
        self._next_tick = now + TICK_S
        self.polls += 1
        try:
            self._tick(now)
            if now >= self._next_speaker:
                self._next_speaker = now + SPEAKER_TICK_S
                self._speaker(now)
            if now >= self._next_report:
                self._next_report = now + REPORT_S
                self._report(now)
        except Exception:  # a bug here must not stop NACKs and reports for the room
            log.exception("room %s: timer failed", self._name)

    def _arm(self, now: float) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._idle_due = now + IDLE_TICK_S
        self._idle = asyncio.get_running_loop().call_later(IDLE_TICK_S, self._on_idle)

    def _on_idle(self) -> None:
        self._idle = None
        self._idle_due = 0.0  # so that poll re-arms
        self.idle_wakeups += 1
        self.poll(time.time())

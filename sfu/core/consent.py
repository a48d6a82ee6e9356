"""Consent freshness (RFC 7675) for every connected pair of the process, sans I/O.

Each connection must keep proving that its peer still wants our packets: a signed Binding
request every ~5 s (0.8-1.2 × INTERVAL_S, so that thousands of bridges that joined together do
not check together), and no answer for EXPIRY_S means the peer is gone and the connection is
closed. aioice runs one task per connection for this, each its own timer and coroutine; here
one schedule serves all connections and a single timer asks it what is due (the shell:
sfu/adapters/consent.py). The transaction IDs are what ties an answer to its connection.
"""

from __future__ import annotations

import random
from collections.abc import Hashable
from dataclasses import dataclass

INTERVAL_S = 5.0  # aioice's CONSENT_INTERVAL, as Chrome does
EXPIRY_S = 30.0  # RFC 7675 §5.1: consent expires 30 s after the last answer


@dataclass
class _Entry:
    next_check: float
    fresh_until: float


class ConsentSchedule:
    def __init__(self, interval_s: float = INTERVAL_S, expiry_s: float = EXPIRY_S,
                 rng: random.Random | None = None) -> None:
        self.interval_s, self.expiry_s = interval_s, expiry_s
        self._rng = rng or random.Random()
        self._entries: dict[Hashable, _Entry] = {}
        self._pending: dict[bytes, tuple[Hashable, float]] = {}  # transaction -> (key, sent)
        self.sent = self.answered = self.expired_total = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def add(self, key: Hashable, now: float) -> None:
        """A connection that just got consent (ICE completed): its first check is due after
        one (randomised) interval."""
        self._entries[key] = _Entry(self._next(now), now + self.expiry_s)

    def remove(self, key: Hashable) -> None:
        self._entries.pop(key, None)

    def due(self, now: float) -> list[tuple[Hashable, bytes]]:
        """The checks to send now: (connection, new transaction ID) each."""
        out = []
        for key, e in self._entries.items():
            if e.next_check <= now:
                e.next_check = self._next(now)
                transaction = self._rng.randbytes(12)
                self._pending[transaction] = (key, now)
                out.append((key, transaction))
        self.sent += len(out)
        if len(self._pending) > 4 * len(self._entries) + 64:  # answers that never came
            self._pending = {t: v for t, v in self._pending.items()
                             if v[1] > now - self.expiry_s}
        return out

    def answer(self, key: Hashable, transaction: bytes, now: float) -> bool:
        """An authentic success response arrived on `key`'s connection: True if it answers one
        of its checks (it is fresh again), False if the transaction is not one of them."""
        found = self._pending.get(transaction)
        if found is None or found[0] != key:
            return False
        del self._pending[transaction]
        e = self._entries.get(key)
        if e is not None:
            e.fresh_until = now + self.expiry_s
        self.answered += 1
        return True

    def expired(self, now: float) -> list[Hashable]:
        """Connections whose consent ran out; they leave the schedule."""
        gone = [key for key, e in self._entries.items() if e.fresh_until <= now]
        for key in gone:
            del self._entries[key]
        self.expired_total += len(gone)
        return gone

    def _next(self, now: float) -> float:
        return now + self.interval_s * (0.8 + 0.4 * self._rng.random())

"""Per-connection message rate limit: a token bucket plus a count of what went over it.

Sans-I/O: the clock is a callable returning seconds (monotonic in production, a manual clock in
tests); nothing here sleeps.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]


class TokenBucket:
    """`capacity` tokens, refilled at `rate` per second; each message takes one."""

    def __init__(self, capacity: float, rate: float, clock: Clock) -> None:
        if capacity <= 0 or rate <= 0:
            raise ValueError("capacity and rate must be positive")
        self.capacity = float(capacity)
        self.rate = float(rate)
        self._clock = clock
        self._tokens = float(capacity)
        self._last = clock()

    def _refill(self) -> None:
        now = self._clock()
        # A clock that steps back (it should not: monotonic) must not drain the bucket.
        elapsed = max(0.0, now - self._last)
        self._last = now
        self._tokens = min(self.capacity, self._tokens + elapsed * self.rate)

    @property
    def tokens(self) -> float:
        self._refill()
        return self._tokens

    def take(self, n: float = 1.0) -> bool:
        self._refill()
        # The epsilon absorbs float rounding (0.05 s x 20/s may come out as 0.999...).
        if self._tokens >= n - 1e-9:
            self._tokens = max(0.0, self._tokens - n)
            return True
        return False


class Verdict(enum.Enum):
    ALLOW = "allow"
    LIMITED = "limited"  # reply rate_limited, keep the connection
    CLOSE = "close"  # the connection keeps flooding: close it (4008)


@dataclass(frozen=True)
class RateLimits:
    burst: int = 50
    per_s: float = 20.0
    # Messages over the limit tolerated before closing. The count leaks away at `forgive_per_s`,
    # so a client that overshoots now and then is never closed but one that keeps flooding is.
    flood_close_after: int = 200
    forgive_per_s: float = 1.0


class RateLimiter:
    def __init__(self, limits: RateLimits, clock: Clock) -> None:
        self.limits = limits
        self._clock = clock
        self._bucket = TokenBucket(limits.burst, limits.per_s, clock)
        self._over = 0.0
        self._over_at = clock()

    @property
    def over(self) -> float:
        """Messages over the limit, net of what has been forgiven since."""
        now = self._clock()
        self._over = max(
            0.0, self._over - max(0.0, now - self._over_at) * self.limits.forgive_per_s
        )
        self._over_at = now
        return self._over

    def check(self) -> Verdict:
        if self._bucket.take():
            return Verdict.ALLOW
        over = self.over + 1
        self._over = over
        if over > self.limits.flood_close_after:
            return Verdict.CLOSE
        return Verdict.LIMITED

"""signaling.limits with a manual clock: burst, sustained rate, and when flooding closes."""

from __future__ import annotations

import pytest

from signaling.limits import RateLimiter, RateLimits, TokenBucket, Verdict


class ManualClock:
    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


def test_bucket_allows_the_burst_then_refills_at_the_rate() -> None:
    clock = ManualClock()
    bucket = TokenBucket(50, 20, clock)
    assert all(bucket.take() for _ in range(50))
    assert not bucket.take()
    clock.advance(0.05)  # one token at 20/s
    assert bucket.take()
    assert not bucket.take()
    clock.advance(1.0)
    assert sum(bucket.take() for _ in range(100)) == 20


def test_bucket_never_exceeds_capacity_and_ignores_a_clock_stepping_back() -> None:
    clock = ManualClock()
    bucket = TokenBucket(5, 1, clock)
    clock.advance(3600)
    assert bucket.tokens == 5
    bucket.take()
    clock.advance(-50)
    assert bucket.tokens == 4


def test_bucket_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0, 1, ManualClock())
    with pytest.raises(ValueError):
        TokenBucket(1, 0, ManualClock())


def test_limiter_burst_then_limited_then_closed_after_about_200_over() -> None:
    clock = ManualClock()
    limiter = RateLimiter(RateLimits(), clock)
    verdicts = [limiter.check() for _ in range(50 + 200)]
    assert verdicts[:50] == [Verdict.ALLOW] * 50
    assert verdicts[50:] == [Verdict.LIMITED] * 200
    assert limiter.check() is Verdict.CLOSE


def test_sustained_rate_is_never_limited() -> None:
    clock = ManualClock()
    limiter = RateLimiter(RateLimits(), clock)
    for _ in range(2000):  # 100 s at exactly 20/s
        clock.advance(0.05)
        assert limiter.check() is Verdict.ALLOW
    # each refill was spent at once: the burst is still there (less the one in hand)
    assert [limiter.check() for _ in range(51)].count(Verdict.ALLOW) == 49


def test_occasional_overshoot_is_forgiven_but_steady_flooding_is_not() -> None:
    clock = ManualClock()
    limits = RateLimits(burst=10, per_s=10, flood_close_after=20, forgive_per_s=1)
    limiter = RateLimiter(limits, clock)
    for _ in range(50):  # every 30 s, a burst 15 over the limit
        results = [limiter.check() for _ in range(25)]
        assert Verdict.CLOSE not in results
        clock.advance(30)
    # flooding at 3x the rate: over-count grows 20/s, minus 1/s forgiven
    closed_at = None
    for step in range(1000):
        clock.advance(1 / 30)
        if limiter.check() is Verdict.CLOSE:
            closed_at = step
            break
    assert closed_at is not None and closed_at < 60

"""bench.idle's fit over a sweep (pure): the cost of one more idle bridge, per series."""

from __future__ import annotations

import pytest

from bench.forward import fit_line
from bench.idle import NATIONAL_BRIDGES, idle_summary


def test_fit_line_recovers_a_line() -> None:
    assert fit_line([(0, 1.0), (10, 3.0), (20, 5.0)]) == pytest.approx((0.2, 1.0))


def run(bridges: int, cores: float, wakeups: float, park: float | None = None,
        connection: str = "publisher") -> dict[str, object]:
    return {"kind": "run", "connection": connection, "park_idle_after_s": park,
            "bridges": bridges, "server_cpu_cores": cores, "server_wakeups_per_s": wakeups}


def test_idle_summary_fits_each_series_and_skips_failed_runs() -> None:
    results = [
        run(0, 0.002, 10), run(100, 0.052, 210), run(200, 0.102, 410),  # 500 µs/s, 2 wake/s
        run(0, 0.002, 10, 2.0), run(200, 0.042, 50, 2.0),  # parked: 200 µs/s, 0.2 wake/s
        run(100, 0.01, 20, connection="none"),  # one point only: no fit
        {"kind": "error", "connection": "publisher", "bridges": 300},
    ]
    fits = {f["park_idle_after_s"]: f for f in idle_summary(results)}
    assert set(fits) == {None, 2.0}
    plain, parked = fits[None], fits[2.0]
    assert plain["us_per_bridge_s"] == 500.0 and plain["wakeups_per_bridge_s"] == 2.0
    assert plain["points"] == 3 and plain["bridges_per_core"] == 2000
    assert plain["national_cores"] == round(500e-6 * NATIONAL_BRIDGES, 2)
    assert parked["us_per_bridge_s"] == 200.0 and parked["wakeups_per_bridge_s"] == 0.2

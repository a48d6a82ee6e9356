"""`bench forward`'s marginal line: a slope over sizes, never over repeats of one size."""

from __future__ import annotations

from bench.cli import _marginals


def run(n: int, pps: float, cores: float) -> dict[str, object]:
    return {"kind": "run", "system": "hoinghi", "config": "default", "subscribers": n,
            "fwd_pps": pps, "server_cpu_cores": cores}


def test_repeats_of_one_size_give_no_slope() -> None:
    # Three runs at N = 50 whose rates differ by noise: a "slope" would be noise over noise.
    assert _marginals([run(50, 8204.8, 0.109), run(50, 8208.4, 0.090),
                       run(50, 8178.8, 0.088)]) == []


def test_two_sizes_give_the_cpu_of_one_more_packet() -> None:
    (line,) = _marginals([run(10, 1000.0, 0.03), run(50, 5000.0, 0.07),
                          run(50, 5000.0, 0.07), {"kind": "ratio"}])
    assert line["us_per_extra_pkt"] == 10.0  # 0.04 core for 4000 more packets/s
    assert line["fixed_cpu_cores"] == 0.02 and line["points"] == 3

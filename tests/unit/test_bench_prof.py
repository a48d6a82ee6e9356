"""bench/prof: the server profiler used for bench/README.md's breakdowns, run for real in a
child Python (its argv names `serve`, as `hoinghi serve` does), and its summary."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.prof.fold import summarize

REPO = Path(__file__).resolve().parents[2]

CHILD = """
import os, time
def spin():
    x = 0
    for i in range(20000):
        x += i * i
    return x
deadline = time.monotonic() + 30
while not os.path.exists(os.environ["HOINGHI_PROF"] + ".folded") and time.monotonic() < deadline:
    spin()
"""


def test_the_sampler_profiles_a_serve_process_over_its_window(tmp_path: Path) -> None:
    out = tmp_path / "serve"
    env = {**os.environ, "PYTHONPATH": str(REPO / "bench" / "prof"),
           "HOINGHI_PROF": str(out), "HOINGHI_PROF_WINDOW": "0.1,0.6"}
    proc = subprocess.run([sys.executable, "-c", CHILD, "serve"], env=env, timeout=60,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "hoinghi-prof: wrote" in proc.stderr
    total, incl, _own = summarize((out.parent / "serve.folded").read_text().splitlines())
    assert total > 0
    assert incl["<string>:spin"] > total / 2  # the child does little else
    assert not (out.parent / "serve.prof").exists()  # cProfile only with HOINGHI_PROF_CALLS=1


def test_summarize_counts_own_and_inclusive_samples_once_per_stack() -> None:
    total, incl, own = summarize(["a;b;c 3", "a;b 2", "a;b;a 1", ""])
    assert total == 6
    assert own == {"c": 3, "b": 2, "a": 1}
    assert incl["a"] == 6 and incl["b"] == 6 and incl["c"] == 3  # recursion counted once

"""`hoinghi bench forward` and `bench scale` end to end: real server, real aiortc peers.

Smoke sizes only (2 subscribers, a 3 s window): this checks that the benchmark measures
something real, not how fast anything is. The Janus comparison needs Debian's `janus` (the test
setup installs it: `apt-get install -y janus`) and gcc for its loopback shim; it is skipped only
when those are absent.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.janus import janus_available
from bench.scale import ScaleOptions, run_scale
from sfu import fastpath

pytestmark = pytest.mark.integration

HOINGHI = Path(sys.executable).with_name("hoinghi")


def run_bench(tmp_path: Path, *extra: str, timeout: float = 100) -> list[dict[str, Any]]:
    cmd = [str(HOINGHI), "bench", "forward", "--subscribers", "2", "--seconds", "3",
           "--warmup", "2", "--out", str(tmp_path), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout}\n{proc.stderr[-4000:]}"
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    assert lines, proc.stderr[-4000:]
    # Results are also kept on disk, one JSON line each.
    on_disk = list(tmp_path.glob("forward-*.jsonl"))
    assert len(on_disk) == 1 and len(on_disk[0].read_text().splitlines()) == len(lines)
    return lines


def check_run(r: dict[str, Any], system: str) -> None:
    assert r["kind"] == "run" and r["system"] == system and r["subscribers"] == 2
    # ~150 packets/s published (VP8 ~1 Mbit/s + Opus), to 2 subscribers.
    assert r["pub_pps"] > 80, r
    assert r["fwd_pps"] > 1.5 * r["pub_pps"], r
    assert r["server_fwd_pps"] > 0, r
    # The server's own count agrees with what the subscribers received.
    assert r["pkt_count_from"] == "server", r
    assert r["loss_pct"] is not None and r["loss_pct"] < 2, r
    assert r["cpu_us_per_pkt"] is not None and r["cpu_us_per_pkt"] > 0, r
    assert r["server_cpu_cores"] > 0, r
    # The 2 subscribers decode and check painted frame numbers: pictures really arrived, in
    # order, and none was damaged on the way (the encoder's own glitches are counted apart).
    assert r["frames_checked"] > 60, r
    assert r["frames_bad"] <= max(2, r["frames_checked"] // 50), r
    assert r["latency_samples"] > 30, r
    assert 0 < r["latency_p50_ms"] <= r["latency_p99_ms"] < 2000, r


def test_forward_hoinghi(tmp_path: Path) -> None:
    # With two CPUs or more, on one server core (--server-cpus): the same checks hold.
    cpus = sorted(os.sched_getaffinity(0))
    pin = ["--server-cpus", str(cpus[0])] if len(cpus) > 1 else []
    lines = run_bench(tmp_path, *pin)
    assert len(lines) == 1
    check_run(lines[0], "hoinghi")
    expected = {"server": cpus[:1], "load": cpus[1:]} if pin else None
    assert lines[0]["placement"] == expected
    # Without --loss: nothing dropped, no repair fields.
    assert lines[0]["loss_injected_pct"] == 0 and "nack_pps" not in lines[0]
    # The server's sends went through its io_uring, each syscall carrying both subscribers'
    # (and a frame's messages); where the kernel refuses io_uring, plain syscalls: None.
    per_enter = lines[0]["fanout_sends_per_uring_enter"]
    if fastpath.AVAILABLE and fastpath.URING_DEFAULT and fastpath.uring_available():
        assert per_enter is not None and per_enter >= 1.9, lines[0]
    else:
        assert per_enter is None, lines[0]


def test_forward_with_loss_repairs_video_by_nack_and_rtx(tmp_path: Path) -> None:
    # Each subscriber drops 5 % of what arrives; the light one NACKs its video, the decoding
    # one leaves it to aiortc: the server retransmits (RTX) and the pictures stay whole.
    (r,) = run_bench(tmp_path, "--loss", "5", "--full", "1")
    assert r["loss_injected_pct"] == 5 and r["loss_pct"] > 1.5, r  # raw: the drops show
    assert r["dropped_pps"] > 0.02 * r["fwd_pps"], r
    assert r["nack_pps"] > 0 and r["nack_asked_pps"] >= r["nack_pps"], r
    assert r["rtx_pps"] >= r["nack_asked_pps"] * 0.5, r  # the light one's and aiortc's
    assert r["nack_repaired_pct"] is not None and r["nack_repaired_pct"] >= 90, r
    assert r["video_unrepaired_pct"] < 1, r
    assert r["frames_checked"] > 30, r
    assert r["frames_bad"] <= max(2, r["frames_checked"] // 20), r


@pytest.mark.skipif(not janus_available() or shutil.which("gcc") is None,
                    reason="needs Debian's janus (apt-get install -y janus) and gcc")
def test_forward_vs_janus(tmp_path: Path) -> None:
    lines = run_bench(tmp_path, "--peer", "janus")
    runs = [x for x in lines if x["kind"] == "run"]
    assert [r["system"] for r in runs] == ["hoinghi", "janus"]
    for r in runs:
        check_run(r, r["system"])
    (ratio,) = [x for x in lines if x["kind"] == "ratio"]
    expected = runs[0]["cpu_us_per_pkt"] / runs[1]["cpu_us_per_pkt"]
    assert ratio["ratio_vs_janus_default"] == pytest.approx(expected, rel=0.02)
    assert ratio["placement"] is None and all(r["placement"] is None for r in runs)


def test_micro_quick(tmp_path: Path) -> None:
    cmd = [str(HOINGHI), "bench", "micro", "--quick", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    cases = {x["case"]: x for x in lines if x["kind"] == "micro" and "skipped" not in x}
    # The physical limits are all there, each a plausible per-packet cost.
    for needle in ("udp sendto", "srtp Session.protect()", "srtp_protect cffi",
                   "header rewrite", "pipeline", "asyncio_udp_wakeup"):
        hits = [c for name, c in cases.items() if needle in name]
        assert hits, (needle, list(cases))
        assert all(0 < c["us_per_pkt"] < 1000 for c in hits), hits
    assert [x for x in lines if x["kind"] == "machine"]


def serve_has_workers() -> bool:
    """`hoinghi serve --workers` exists (the front/worker processes have landed)."""
    out = subprocess.run([str(HOINGHI), "serve", "--help"], capture_output=True, text=True,
                         timeout=60)
    return "--workers" in out.stdout


def check_scale(r: dict[str, Any], workers: int, rooms: int) -> None:
    assert r["kind"] == "run" and r["workers"] == workers and r["rooms"] == rooms, r
    # Every room's publisher (~160 packets/s) reaches its 2 subscribers, nothing lost.
    assert r["pub_pps"] > 80 * rooms, r
    assert r["fwd_pps"] > 1.5 * r["pub_pps"], r
    assert r["loss_pct"] == 0, r
    assert r["pkt_count_from"] == "server", r
    assert r["server_cpu_cores"] > 0 and r["cpu_us_per_pkt"] > 0, r
    # The per-process split adds up to the server's total.
    procs = r["server_procs"]
    assert sum(p["cpu_cores"] for p in procs) == pytest.approx(r["server_cpu_cores"], abs=0.005)
    # Decoding subscribers checked real pictures, none damaged in transit.
    assert r["frames_checked"] > 30 and r["frames_bad"] <= 2, r
    assert r["latency_samples"] > 10, r
    assert r["bench_cpu_cores"] > 0 and r["cores"] == os.cpu_count(), r


SCALE_OPTS = ScaleOptions(seconds=3, warmup=2, full=1)


async def test_scale_one_worker(tmp_path: Path) -> None:
    r = await run_scale(workers=1, rooms=2, subscribers_per_room=2, opts=SCALE_OPTS,
                        workdir=tmp_path)
    check_scale(r, 1, 2)
    # The single process: no front, no workers.
    assert [p["role"] for p in r["server_procs"]] == ["server"], r
    assert r["front_cpu_cores"] is None and r["worker_cpu_cores"] == [], r
    assert r["decoding_rooms"] == 1, r  # one per worker by default
    assert (tmp_path / "raw.json").exists() and (tmp_path / "room1" / "publisher.log").exists()


async def test_scale_two_workers(tmp_path: Path) -> None:
    if not serve_has_workers():
        pytest.skip("`hoinghi serve --workers` is not there yet")
    r = await run_scale(workers=2, rooms=2, subscribers_per_room=2, opts=SCALE_OPTS,
                        workdir=tmp_path)
    check_scale(r, 2, 2)
    # The front and both workers, each measured; the two rooms went to different workers.
    assert [p["role"] for p in r["server_procs"]] == ["front", "worker", "worker"], r
    assert len(r["worker_cpu_cores"]) == 2 and min(r["worker_cpu_cores"]) > 0, r
    assert r["front_cpu_cores"] is not None, r
    assert set(r["worker_fwd_pps"]) == {"0", "1"}, r
    assert min(r["worker_fwd_pps"].values()) > 0.3 * r["fwd_pps"], r


def test_scale_cli(tmp_path: Path) -> None:
    """The sweep command: run lines, the summary line, the JSON lines file and the plot."""
    jsonl, png = tmp_path / "scale.jsonl", tmp_path / "scale.png"
    cmd = [str(HOINGHI), "bench", "scale", "--workers", "1", "--fixed-rooms", "1",
           "--subscribers", "1", "--seconds", "2", "--warmup", "1", "--out", str(tmp_path),
           "--jsonl", str(jsonl), "--plot", str(png)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=100)
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout}\n{proc.stderr[-4000:]}"
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    assert [x["kind"] for x in lines] == ["run", "summary"], lines
    assert len(jsonl.read_text().splitlines()) == 2
    run, summary = lines
    assert run["fwd_pps"] > 0 and run["rooms"] == 1, run
    assert summary["mode"] == "fixed" and summary["ref_workers"] == 1, summary
    (row,) = summary["rows"]
    assert row["fwd_pps"] == run["fwd_pps"] and row["us_per_pkt_ratio"] == 1.0, row
    assert png.stat().st_size > 10_000


def test_idle_cli(tmp_path: Path) -> None:
    """Idle bridges: per run the server's CPU and wake-ups, a fit per series, and the plot. In
    a conference created with the featured roster (an ad-hoc room is the default)."""
    cmd = [str(HOINGHI), "bench", "idle", "--bridges", "0,3", "--connection",
           "publisher,none", "--roster", "featured", "--seconds", "2", "--warmup", "3",
           "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=200)
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout}\n{proc.stderr[-4000:]}"
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    runs = {(r["connection"], r["bridges"]): r for r in lines if r["kind"] == "run"}
    assert set(runs) == {("publisher", 0), ("none", 0), ("publisher", 3), ("none", 3)}, lines
    for r in runs.values():
        assert r["server_cpu_cores"] >= 0 and r["window_s"] >= 1.9, r
        assert r["roster"] == "featured", r
        assert r["server_wakeups_per_s"] > 0, r  # the room timers at least
    assert runs[("publisher", 3)]["connect_s"] > 0, runs
    # The joins cost the server CPU (signaling, ICE, DTLS); none when nobody joined.
    assert runs[("publisher", 3)]["join_server_ms_per_bridge"] > 0, runs
    assert runs[("none", 0)]["join_server_ms_per_bridge"] is None, runs
    fits = {f["connection"]: f for f in lines if f["kind"] == "idle_fit"}
    assert set(fits) == {"publisher", "none"} and fits["publisher"]["points"] == 2, fits
    assert fits["none"]["roster"] == "featured", fits
    assert len(list(tmp_path.glob("idle-*.jsonl"))) == 1
    (png,) = tmp_path.glob("idle-*.png")
    assert png.stat().st_size > 10_000

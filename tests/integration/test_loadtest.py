"""`hoinghi loadtest` end to end against a real `hoinghi serve` on loopback.

Small sizes (6 bridges, a few seconds): this checks that the tool measures real media through a
real server, in several processes and as several "machines" merged, not how much load the
server takes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerProcess

pytestmark = pytest.mark.integration

HOINGHI = Path(sys.executable).with_name("hoinghi")


def loadtest(server: ServerProcess, *extra: str) -> list[str]:
    return [str(HOINGHI), "loadtest", "--url", server.url, "--secret", server.secret, *extra]


def run(cmd: list[str], timeout: float = 45) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def check_receivers(doc: dict[str, Any]) -> None:
    for b in doc["bridges"]:
        assert b["ok"] and b["failure"] is None and b["joined_s"] is not None, b
        assert b["joined_s"] < 5 and b["connected_s"] < 10, b
        assert b["rtt_ms"] is not None and 0 < b["rtt_ms"] < 1000, b
        if not b["expect_media"]:
            continue
        # Real SRTP packets from the publisher(s), counted at the DTLS layer, nearly no loss.
        assert b["packets"] > 50 and b["ssrcs"] >= 2, b
        assert b["loss_pct"] is not None and b["loss_pct"] < 2, b
        assert b["ttff_keyframe_s"] is not None and 0 < b["ttff_keyframe_s"] < 10, b
        assert b["jitter_ms"] is not None and b["jitter_ms"] < 200, b
        assert b["kbps"] is not None and b["kbps"] > 50, b
        if b["decode"]:
            # Decoded pictures whose painted frame numbers read back right.
            assert b["pictures_valid"] > 10 and b["ttff_picture_s"] is not None, b
            assert b["pictures_invalid"] <= max(2, b["pictures_valid"] // 20), b


def test_flat(server: ServerProcess, tmp_path: Path) -> None:
    out, png = tmp_path / "flat.json", tmp_path / "flat.png"
    proc = run(loadtest(server, "--room", "lt-flat", "--bridges", "6", "--publishers", "1",
                        "--ramp", "5/s", "--duration", "5", "--workers", "2", "--decode", "2",
                        "--json", str(out), "--plot", str(png)))
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr[-4000:]}"
    assert "join success" in proc.stdout and "PASS" in proc.stdout, proc.stdout
    doc = json.loads(out.read_text())
    s = doc["summary"]
    assert s["planned"] == 6 and s["ok"] == 6 and s["joined"] == 6 and s["passed"], s
    assert "secret" not in doc["options"]
    bridges = doc["bridges"]
    assert [b["identity"] for b in bridges] == ["lt-pub-0000"] + [
        f"lt-bridge-{i:04d}" for i in range(1, 6)]
    assert {b["worker"] for b in bridges} == {0, 1}  # both worker processes ran bridges
    assert len(doc["workers"]) == 2
    assert sum(b["decode"] for b in bridges) == 2
    check_receivers(doc)
    # The ramp held: bridge k started about k / 5 s after the start.
    for b in bridges:
        assert abs(b["started_at"] - doc["t0"] - b["at"]) < 1.0, b
    assert s["ttff_s"]["n"] == 5 and s["ttff_s"]["p50"] <= s["ttff_s"]["max"]
    assert s["loss_pct"] < 2 and s["kbps"]["min"] > 50
    assert s["media_rtt_ms"]["n"] == 1  # the publisher's RTCP round trip
    # Bridges report `quality` every 5 s like the web client; the first ones had time for one.
    assert sum(b["quality_sent"] for b in bridges) >= 1
    assert doc["machines"][0]["cores"] >= 1 and "udp_rcvbuf_errors" in doc["machines"][0]
    assert png.stat().st_size > 10_000


def test_national_on_two_machines_merged(server: ServerProcess, tmp_path: Path) -> None:
    """Two slices started together (as two machines would be), then `merge`d."""
    start = f"{time.time() + 4:.3f}"  # both must be up by then (imports take ~2 s)
    common = ["--room", "lt-national", "--shape", "national", "--bridges", "6",
              "--publishers", "2", "--ramp", "10/s", "--duration", "4", "--floor-turns", "2",
              "--turn-s", "1.5", "--decode", "1", "--workers", "1", "--worker-count", "2",
              "--start-at", start]
    # The secret from the environment this time (what the docs recommend: argv is public).
    env = {**os.environ, "HOINGHI_SECRET": server.secret}
    cmd = [str(HOINGHI), "loadtest", "--url", server.url, *common]
    procs = [subprocess.Popen([*cmd, "--worker-index", str(i), "--json",
                               str(tmp_path / f"m{i}.json")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    for p in procs:
        stdout, stderr = p.communicate(timeout=45)
        assert p.returncode == 0, f"{stdout}\n{stderr[-4000:]}"
    parts = [json.loads((tmp_path / f"m{i}.json").read_text()) for i in range(2)]
    assert [len(d["bridges"]) for d in parts] == [3, 3]  # disjoint halves
    # The room is a conference, created by one machine (bridges get the featured roster).
    made = sorted(m["conference"] for d in parts for m in d["machines"])
    assert made == ["created", "exists"], made

    merged_path = tmp_path / "all.json"
    proc = run([str(HOINGHI), "loadtest", "merge", str(tmp_path / "m0.json"),
                str(tmp_path / "m1.json"), "--json", str(merged_path)])
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    doc = json.loads(merged_path.read_text())
    assert doc["slices"] == [0, 1] and doc["summary"]["planned"] == 6
    roles = {b["identity"]: (b["role"], b["province"], b["publish"]) for b in doc["bridges"]}
    assert roles["lt-chair"] == ("chair", None, True)
    assert roles["lt-province-01"] == ("province", "HNI", True)
    assert sorted(i for i in roles if i.startswith("lt-commune-")) == [
        f"lt-commune-{i:04d}" for i in range(1, 5)]
    check_receivers(doc)
    # The chair (machine 0) gave the floor twice, then took it back; every bridge present saw
    # each floor_given, on both machines.
    turns = doc["floor"]
    assert [t["type"] for t in turns] == ["give_floor", "give_floor", "take_floor"], turns
    assert turns[0]["target"] == "lt-province-01"  # the publishing province first
    assert all(t["error"] is None for t in turns), turns
    f = doc["summary"]["floor"]
    assert f["turns_ok"] == 2 and f["seen_pct"] == 100.0, f
    assert f["fanout_ms"]["n"] >= 8 and f["fanout_ms"]["max"] < 2000, f


def test_fails_below_min_success(server: ServerProcess, tmp_path: Path) -> None:
    out = tmp_path / "bad.json"
    proc = run([str(HOINGHI), "loadtest", "--url", server.url, "--secret", "not-the-secret",
                "--room", "lt-bad", "--bridges", "2", "--ramp", "20/s", "--duration", "1",
                "--workers", "1", "--json", str(out), "--log-dir", str(tmp_path / "logs")])
    assert proc.returncode == 1, f"{proc.stdout}\n{proc.stderr[-3000:]}"
    doc = json.loads(out.read_text())
    assert doc["summary"]["ok"] == 0 and not doc["summary"]["passed"]
    assert all(b["failure"] == "signaling: token_invalid" for b in doc["bridges"]), doc["bridges"]
    assert (tmp_path / "logs" / "worker0.log").exists()  # kept: the run failed


# --- the pieces, without a server ---------------------------------------------------------------


def test_plan_slices_are_disjoint_and_national_roles() -> None:
    from bench.load_plan import Options, floor_targets, local_share, machine_slice, plan

    opts = Options(url="http://127.0.0.1:1", secret="s", room="r", bridges=3356, publishers=3,
                   ramp=50, shape="national", floor_turns=4, turn_s=10, duration=60, decode=3)
    everyone = plan(opts)
    roles = [s.role for s in everyone]
    assert roles[0] == "chair" and roles.count("province") == 34
    assert roles.count("commune") == 3356 - 35
    assert [s.index for s in everyone if s.publish] == [0, 1, 2]  # chair + 2 provinces
    assert sum(s.decode for s in everyone) == 3 and not any(s.publish and s.decode
                                                            for s in everyone)
    assert everyone[-1].at == pytest.approx(3355 / 50)
    assert floor_targets(opts, everyone)[:2] == ["lt-province-01", "lt-province-02"]
    seen: list[int] = []
    for i in range(4):
        mine = machine_slice(Options(**{**opts.to_json(), "worker_index": i,
                                        "worker_count": 4}), everyone)
        for w in range(3):
            seen += [s.index for s in local_share(mine, 3, w)]
    assert sorted(seen) == list(range(3356))


def test_vp8_keyframe_detection() -> None:
    from bench.load_rtp import vp8_keyframe_start

    header = bytes([0x80, 96]) + bytes(10)
    # Descriptor X=1 S=1 PID=0, I=1 with a 15-bit picture id, then the payload header P bit.
    key = header + bytes([0x90, 0x80, 0x81, 0x23, 0x10])
    inter = header + bytes([0x90, 0x80, 0x81, 0x23, 0x11])
    middle = header + bytes([0x80, 0x80, 0x81, 0x23, 0x10])  # S=0: not a frame's start
    assert vp8_keyframe_start(key)
    assert not vp8_keyframe_start(inter) and not vp8_keyframe_start(middle)
    # With a one-word header extension before the payload.
    ext = bytes([0x90, 96]) + bytes(10) + bytes([0xBE, 0xDE, 0, 1, 0x10, 0, 0, 0])
    assert vp8_keyframe_start(ext + bytes([0x10, 0x10]))


def test_merge_refuses_overlapping_slices() -> None:
    from bench.load_report import merge

    doc = {"options": {"url": "u", "room": "r", "bridges": 2, "publishers": 1, "shape": "flat",
                       "ramp": 1, "worker_count": 2},
           "slices": [0], "bridges": [], "floor": [], "workers": [], "t0": 0.0,
           "planned": 1, "interrupted": False}
    with pytest.raises(ValueError, match="twice"):
        merge([doc, doc], 99)
    merged, warnings = merge([doc], 99)
    assert warnings and merged["summary"]["planned"] == 2 and not merged["summary"]["passed"]

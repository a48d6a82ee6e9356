"""The load test's results: per-bridge records → summary, rich table, JSON file, merge, plot.

A result document (what `--json FILE` writes) holds every bridge's record, so documents from
several machines (`--worker-index I --worker-count C`) merge into one by concatenation, and the
summary is always recomputed from records, never averaged from summaries.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from bench.plot import save

KIND = "hoinghi-loadtest"
FORMAT = 1
# A worker this busy, or whose loop wakes this late, distorts what it measures (late reads turn
# into jitter, missed deadlines into loss): the report flags it rather than blaming the server.
SATURATED_CPU = 0.8
SATURATED_LAG_MS = 100.0

Doc = dict[str, Any]
Rec = dict[str, Any]


def _q(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def _dist(values: list[float], scale: float = 1.0, nd: int = 2) -> dict[str, Any]:
    vals = [v * scale for v in values if v is not None]
    if not vals:
        return {"n": 0, "p50": None, "p95": None, "max": None, "min": None}
    return {"n": len(vals), "p50": round(statistics.median(vals), nd),
            "p95": round(_q(vals, 0.95) or 0, nd), "max": round(max(vals), nd),
            "min": round(min(vals), nd)}


def _floor(bridges: list[Rec], turns: list[Rec]) -> dict[str, Any]:
    """Floor turns and how fast each `floor_given` reached the bridges that were in the room.

    Latency = a bridge's receive time − the chair's send time, both wall clocks: exact on one
    machine, only as good as NTP across machines.
    """
    given = [t for t in turns if t["type"] == "give_floor"]
    ok = [t for t in given if t.get("error") is None]
    lat: list[float] = []
    pairs = seen = 0
    for t in ok:
        for b in bridges:
            if not b["ok"] or b["role"] == "chair" or b["started_at"] is None:
                continue
            if b["started_at"] + (b["joined_s"] or 0) > t["sent_at"]:
                continue  # joined after this turn: never meant to see it
            pairs += 1
            after = [s[1] for s in b["floor_seen"]
                     if s[0] == t["target"] and s[1] >= t["sent_at"] - 1.0]
            if after:
                seen += 1
                lat.append(max(0.0, min(after) - t["sent_at"]))
    notes = sorted({t["note"] for t in turns if t.get("note")})
    return {
        "turns_planned": len(given), "turns_ok": len(ok),
        "errors": dict(Counter(t["error"] for t in turns if t.get("error"))),
        "reply_ms": _dist([t["reply_ms"] for t in ok if t.get("reply_ms") is not None]),
        "fanout_ms": _dist(lat, 1000, 1),
        "seen_pct": round(100 * seen / pairs, 2) if pairs else None,
        "notes": notes,
    }


def summarize(bridges: list[Rec], planned: int, turns: list[Rec], workers: list[Rec],
              min_success: float, t0: float | None = None,
              machines: list[Rec] | None = None) -> dict[str, Any]:
    ok = [b for b in bridges if b["ok"]]
    media = [b for b in ok if b["expect_media"]]
    expected = sum(b["expected"] for b in bridges)
    lost = sum(b["lost"] for b in bridges)
    success = 100 * len(ok) / planned if planned else 0.0
    failures = Counter(b["failure"] or "not reported" for b in bridges if not b["ok"])
    if planned > len(bridges):
        failures["no result (a machine's slice is missing)"] = planned - len(bridges)
    by_role: dict[str, dict[str, Any]] = {}
    for role in sorted({b["role"] for b in bridges}):
        rs = [b for b in bridges if b["role"] == role]
        rok = [b for b in rs if b["ok"]]
        by_role[role] = {"bridges": len(rs), "ok": len(rok),
                         "ttff_s": _dist([b["ttff_keyframe_s"] for b in rok
                                          if b["ttff_keyframe_s"] is not None], nd=3),
                         "kbps": _dist([b["kbps"] for b in rok if b["kbps"] is not None], nd=1)}
    cpu = [w["cpu_s"] / w["wall_s"] for w in workers if w.get("wall_s")]
    lag = [w["loop_lag_max_ms"] for w in workers if w.get("loop_lag_max_ms") is not None]
    lag99 = [w["loop_lag_p99_ms"] for w in workers if w.get("loop_lag_p99_ms") is not None]
    # How late bridges began joining against their schedule: a late ramp means the generator,
    # not the server, set the pace.
    late = [b["started_at"] - t0 - b["at"] for b in bridges
            if t0 is not None and b["started_at"] is not None]
    saturated = bool(cpu and max(cpu) > SATURATED_CPU) or bool(
        lag99 and max(lag99) > SATURATED_LAG_MS)
    return {
        "planned": planned,
        "present": len(bridges),
        "joined": sum(b["joined_s"] is not None for b in bridges),
        "ok": len(ok),
        "failed": planned - len(ok),
        "success_pct": round(success, 3),
        "min_success_pct": min_success,
        "passed": success >= min_success,
        "failures": dict(failures.most_common(8)),
        "join_ms": _dist([b["joined_s"] for b in bridges if b["joined_s"] is not None], 1000, 1),
        "connect_s": _dist([b["connected_s"] for b in ok if b["connected_s"] is not None],
                           nd=3),
        "ttff_s": _dist([b["ttff_keyframe_s"] for b in media
                         if b["ttff_keyframe_s"] is not None], nd=3),
        "ttff_missing": sum(b["ttff_keyframe_s"] is None for b in media),
        "ttff_picture_s": _dist([b["ttff_picture_s"] for b in ok
                                 if b["ttff_picture_s"] is not None], nd=3),
        "pictures_valid": sum(b["pictures_valid"] or 0 for b in bridges),
        "pictures_invalid": sum(b["pictures_invalid"] or 0 for b in bridges),
        "packets": sum(b["packets"] for b in bridges),
        "loss_pct": round(100 * lost / expected, 4) if expected else None,
        "loss_worst_pct": max((b["loss_pct"] for b in bridges if b["loss_pct"] is not None),
                              default=None),
        "jitter_ms": _dist([b["jitter_ms"] for b in media if b["jitter_ms"] is not None]),
        "video_jitter_ms": _dist([b["video_jitter_ms"] for b in media
                                  if b.get("video_jitter_ms") is not None]),
        "rtt_ms": _dist([b["rtt_ms"] for b in ok if b["rtt_ms"] is not None]),
        "media_rtt_ms": _dist([b["media_rtt_ms"] for b in ok
                               if b.get("media_rtt_ms") is not None]),
        "kbps": _dist([b["kbps"] for b in media if b["kbps"] is not None], nd=1),
        "floor": _floor(bridges, turns) if turns else None,
        "by_role": by_role,
        "workers": len(workers),
        "worker_cpu_max": round(max(cpu), 3) if cpu else None,
        "worker_loop_lag_max_ms": max(lag) if lag else None,
        "start_late_max_s": round(max(late), 3) if late else None,
        "udp_rcvbuf_errors": sum(m.get("udp_rcvbuf_errors") or 0 for m in machines or []),
        "workers_saturated": saturated,
    }


def document(options: dict[str, Any], t0: float, slices: list[int], planned: int,
             bridges: list[Rec], turns: list[Rec], workers: list[Rec], interrupted: bool,
             min_success: float, machines: list[Rec]) -> Doc:
    bridges = sorted(bridges, key=lambda b: b["index"])
    return {"kind": KIND, "format": FORMAT, "options": options, "t0": t0, "slices": slices,
            "interrupted": interrupted, "planned": planned,
            "summary": summarize(bridges, planned, turns, workers, min_success, t0, machines),
            "machines": machines, "floor": turns, "workers": workers, "bridges": bridges}


def write_json(doc: Doc, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")


def load(path: Path) -> Doc:
    doc = json.loads(path.read_text())
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise ValueError(f"{path}: not a `hoinghi loadtest --json` file")
    return doc


def merge(docs: list[Doc], min_success: float) -> tuple[Doc, list[str]]:
    """One document from several machines' (same test, disjoint slices). Returns warnings."""
    warnings: list[str] = []
    base = dict(docs[0]["options"])
    same = ("url", "room", "bridges", "publishers", "shape", "ramp", "worker_count")
    for d in docs[1:]:
        diff = [k for k in same if d["options"].get(k) != base.get(k)]
        if diff:
            raise ValueError(f"these results are not from the same test: {', '.join(diff)} differ")
    slices = sorted(s for d in docs for s in d["slices"])
    if len(set(slices)) != len(slices):
        raise ValueError(f"a machine slice appears twice: {slices}")
    count = int(base.get("worker_count", 1))
    missing = sorted(set(range(count)) - set(slices))
    if missing:
        warnings.append(f"slices {missing} of {count} missing: their bridges count as failed")
    bridges = [b for d in docs for b in d["bridges"]]
    ids = Counter(b["identity"] for b in bridges)
    if any(n > 1 for n in ids.values()):
        raise ValueError("the same bridge identity appears in two results")
    planned = int(base["bridges"])  # all slices together are the whole test
    base["worker_index"] = None
    merged = document(base, min(d["t0"] for d in docs), slices, planned, bridges,
                      [t for d in docs for t in d["floor"]],
                      [w for d in docs for w in d["workers"]],
                      any(d["interrupted"] for d in docs), min_success,
                      [m for d in docs for m in d.get("machines", [])])
    return merged, warnings


def _v(x: Any) -> str:
    return "–" if x is None else f"{x:g}"


def table(doc: Doc) -> Any:
    """The final table: one metric per row, distributions over bridges in p50/p95/max."""
    from rich.table import Table

    s, o = doc["summary"], doc["options"]
    title = (f"hoinghi loadtest: {o['shape']}, {s['planned']} bridges, {o['publishers']} "
             f"publishing, ramp {o['ramp']:g}/s, hold {o['duration']:g} s")
    t = Table(title=title, title_justify="left")
    for name, justify in (("metric", "left"), ("p50", "right"), ("p95", "right"),
                          ("max", "right"), ("n", "right"), ("", "left")):
        t.add_column(name, justify=justify)  # type: ignore[arg-type]

    def dist(label: str, d: dict[str, Any] | None, note: str = "") -> None:
        d = d or {}
        t.add_row(label, _v(d.get("p50")), _v(d.get("p95")), _v(d.get("max")),
                  str(d.get("n", 0)), note)

    verdict = "[green]PASS[/]" if s["passed"] else "[red]FAIL[/]"
    t.add_row("join success %", f"{s['success_pct']:.2f}", "", "", str(s["planned"]),
              f"{s['ok']} up, {s['joined']} joined; need ≥ {s['min_success_pct']:g} % "
              f"{verdict}")
    for reason, n in s["failures"].items():
        t.add_row("  failed", "", "", "", str(n), reason)
    dist("join, signaling ms", s["join_ms"])
    dist("connected (ICE+DTLS) s", s["connect_s"])
    dist("TTFF, first keyframe s", s["ttff_s"],
         f"[yellow]{s['ttff_missing']} bridges got none[/]" if s["ttff_missing"] else "")
    dist("TTFF, decoded picture s", s["ttff_picture_s"],
         f"pictures checked {s['pictures_valid']}, bad {s['pictures_invalid']}")
    t.add_row("loss %", _v(s["loss_pct"]), "", _v(s["loss_worst_pct"]), "",
              f"of {s['packets']:,} packets; max = worst bridge")
    dist("jitter ms, worst stream", s["jitter_ms"],
         f"video streams p50 {_v((s.get('video_jitter_ms') or {}).get('p50'))}")
    dist("RTT ms, signaling ping", s["rtt_ms"], "websocket ping → pong")
    dist("RTT ms, RTCP", s["media_rtt_ms"], "publishers only (server RR LSR/DLSR)")
    k = s["kbps"] or {}
    t.add_row("received kbps", _v(k.get("p50")), "", "", str(k.get("n", 0)),
              f"min {_v(k.get('min'))}, over the hold")
    f = s.get("floor")
    if f:
        dist("floor give, reply ms", f["reply_ms"],
             f"{f['turns_ok']}/{f['turns_planned']} turns given"
             + (f", errors {f['errors']}" if f["errors"] else ""))
        seen = "–" if f["seen_pct"] is None else f"{f['seen_pct']:g} %"
        dist("floor_given fan-out ms", f["fanout_ms"], f"seen by {seen} of bridges present")
        for note in f["notes"]:
            t.add_row("", "", "", "", "", f"[yellow]{note}[/]")
    if o["shape"] == "national":
        for role, r in s["by_role"].items():
            dist(f"  {role}: TTFF s", r["ttff_s"], f"{r['ok']}/{r['bridges']} up, kbps p50 "
                 f"{_v(r['kbps']['p50'])}")
    note = (f"{s['workers']} processes, busiest {_v(s['worker_cpu_max'])} core, loop lag ≤ "
            f"{_v(s['worker_loop_lag_max_ms'])} ms, joins ≤ {_v(s.get('start_late_max_s'))} s "
            "late")
    if s["workers_saturated"]:
        note += "  [red]saturated: add workers or machines[/]"
    t.add_row("load generator", "", "", "", "", note)
    drops = s.get("udp_rcvbuf_errors") or 0
    t.add_row("UDP receive drops", "", "", "", "", (
        f"[red]{drops:,} datagrams dropped by full socket buffers on the load machine(s): "
        "loss above is at least partly the generator's[/]") if drops else
        "none on the load machine(s) (kernel RcvbufErrors)")
    if doc.get("interrupted"):
        t.add_row("", "", "", "", "", "[yellow]interrupted: partial results[/]")
    return t


def plot(doc: Doc, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # headless: ops machines have no display
    import matplotlib.pyplot as plt

    bridges, t0, o = doc["bridges"], doc["t0"], doc["options"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4.5))
    for key, label in (("ttff_keyframe_s", "first complete keyframe"),
                       ("ttff_picture_s", "first decoded, checked picture")):
        vals = sorted(b[key] for b in bridges if b.get(key) is not None)
        if vals:
            ys = [0.0] + [(i + 1) / len(vals) for i in range(len(vals))]
            a1.step([0.0, *vals], ys, where="post", label=f"{label} (n={len(vals)})")
    a1.set_title("time to first frame, from the start of joining (CDF)")
    a1.set_xlabel("seconds")
    a1.set_ylabel("fraction of bridges")
    a1.set_ylim(0, 1.02)
    a1.grid(True, alpha=0.3)
    a1.legend(loc="lower right")

    def cumulative(times: list[float], label: str, **kw: Any) -> None:
        times = sorted(times)
        if times:
            a2.step([0.0, *times], range(len(times) + 1), where="post", label=label, **kw)

    # Bridge k is scheduled at k / ramp after the start (bench/load_plan.py).
    cumulative([b["at"] for b in bridges], f"scheduled ({o['ramp']:g}/s)", color="gray",
               linestyle="--")

    starts = [b for b in bridges if b.get("started_at") is not None]
    cumulative([b["started_at"] - t0 + b["joined_s"] for b in starts
                if b["joined_s"] is not None], "joined")
    cumulative([b["started_at"] - t0 + b["first_packet_s"] for b in starts
                if b["first_packet_s"] is not None], "receiving media")
    fails = [b for b in starts if not b["ok"]]
    if fails:
        a2.scatter([b["started_at"] - t0 for b in fails], [0] * len(fails), marker="x",
                   color="red", label=f"failed ({len(fails)})")
    planned = doc["planned"]
    a2.set_title("joins over time")
    a2.set_xlabel("seconds since start")
    a2.set_ylabel("bridges")
    a2.grid(True, alpha=0.3)
    a2.legend(loc="lower right")
    s = doc["summary"]
    fig.suptitle(f"hoinghi loadtest: {o['shape']}, {planned} bridges, join success "
                 f"{s['success_pct']:.2f} %, loss {s['loss_pct']} %")
    return save(fig, path)

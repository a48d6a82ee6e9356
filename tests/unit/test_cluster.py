"""signaling/cluster.py (placement, restart delays, worker arguments) and the front's metrics
merge: pure code, no processes."""

from __future__ import annotations

import json

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from signaling.cluster import Backoff, Placement, worker_argv
from signaling.front_metrics import merge_worker_metrics


def _placement(n: int, **kw: int) -> Placement:
    p = Placement(n, **kw)
    for i in range(n):
        p.worker_up(i)
    return p


def test_new_rooms_go_to_the_least_loaded_worker_and_stay() -> None:
    p = _placement(3)
    assert p.place("a") == 0
    p.session_opened("a")
    assert p.place("b") == 1  # worker 0 has a session
    p.session_opened("b")
    p.session_opened("b")
    assert p.place("c") == 2
    assert p.place("d") == 2  # no sessions anywhere but 0 and 1: 2 has a room, no session
    assert p.place("a") == 0  # sticky, whatever the load
    assert p.worker_of("zzz") is None and p.worker_of("b") == 1


def test_sessions_balance_before_room_counts() -> None:
    p = _placement(2)
    p.place("big")
    for _ in range(50):
        p.session_opened("big")
    for room in ("s1", "s2", "s3"):
        assert p.place(room) == 1  # one big conference outweighs three empty rooms


def test_a_lost_worker_forgets_its_rooms_and_takes_none_until_up() -> None:
    p = _placement(2)
    p.place("a")
    stale = p.session_opened("a")
    p.place("b")
    assert p.worker_lost(0) == ["a"]
    assert p.workers[0].restarts == 1 and p.workers[0].sessions == 0
    assert p.place("a") == 1  # placed afresh on the live worker
    assert p.place("c") == 1
    p.worker_up(0)
    assert p.place("d") == 0
    fresh = p.session_opened("d")
    # The session that was on the dead worker ends late: it does not uncount the new one.
    p.session_closed("a", stale)
    assert p.workers[0].sessions == 1 and p.workers[1].sessions == 0
    p.session_closed("d", fresh)
    assert p.workers[0].sessions == 0
    assert p.worker_lost(1) and p.worker_lost(0)
    assert p.place("e") is None  # nothing up


def test_eviction_keeps_rooms_with_people_in_them() -> None:
    p = _placement(1, max_rooms=2)
    p.place("live")
    ticket = p.session_opened("live")
    p.place("idle")
    p.place("new")  # over the bound: the idle room goes, not the live one
    assert set(p.rooms()) == {"live", "new"}
    assert p.workers[0].rooms == 2
    p.session_closed("live", ticket)
    p.place("newer")
    assert set(p.rooms()) == {"new", "newer"}


def test_backoff_doubles_to_the_cap_and_resets_after_a_stable_run() -> None:
    b = Backoff(first=0.5, cap=4.0, stable_s=30.0)
    assert [b.delay(1.0) for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert b.delay(31.0) == 0.5
    assert b.delay(0.1) == 1.0


def test_worker_argv_keeps_settings_and_replaces_front_options() -> None:
    args = ["--host", "0.0.0.0", "--port=8443", "--workers", "4", "--ice-host", "10.0.0.5",
            "--max-participants", "4000", "--log-level", "warning"]
    assert worker_argv(args, 3) == [
        "--ice-host", "10.0.0.5", "--max-participants", "4000", "--log-level", "warning",
        "--host", "127.0.0.1", "--port", "0", "--worker-index", "3",
    ]


def _worker_text(participants: float, forwarded: float) -> str:
    reg = CollectorRegistry()
    Gauge("hoinghi_participants", "Joined participants", registry=reg).set(participants)
    c = Counter("hoinghi_messages_sent", "Messages sent", registry=reg)
    c.inc(forwarded)
    g = Gauge("hoinghi_router_packets_forwarded", "Router stat", ["room"], registry=reg)
    g.labels(room="r1").set(forwarded)
    return generate_latest(reg).decode()


def test_worker_metrics_merge_with_a_worker_label() -> None:
    merged = merge_worker_metrics([_worker_text(3, 10), None, _worker_text(5, 20)])
    reg = CollectorRegistry()

    class Fixed:
        def collect(self):  # type: ignore[no-untyped-def]
            return merged

    reg.register(Fixed())  # type: ignore[arg-type]
    text = generate_latest(reg).decode()
    assert 'hoinghi_participants{worker="0"} 3.0' in text
    assert 'hoinghi_participants{worker="2"} 5.0' in text
    assert 'worker="1"' not in text  # a worker that did not answer is left out
    assert 'hoinghi_messages_sent_total{worker="2"} 20.0' in text
    assert 'hoinghi_router_packets_forwarded{room="r1",worker="0"} 10.0' in text
    assert text.count("# TYPE hoinghi_participants gauge") == 1


def test_join_room_reads_only_verified_joins() -> None:
    from signaling.auth import issue_token
    from signaling.config import SignalingConfig
    from signaling.front import join_room

    config = SignalingConfig(secret="s" * 32)
    token = issue_token(config.secret, "hanoi", "c1", "commune")
    assert join_room(json.dumps({"type": "join", "protocol": 1, "token": token}), config) \
        == "hanoi"
    forged = issue_token("another-secret" * 3, "hanoi", "c1", "commune")
    assert join_room(json.dumps({"type": "join", "protocol": 1, "token": forged}), config) \
        is None
    assert join_room(json.dumps({"type": "ping", "note": "join"}), config) is None
    assert join_room('{"type": "join", ', config) is None

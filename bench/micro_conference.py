"""CPU ms per publication and per late join in a national conference, by room size.

    python -m bench.micro_conference [--sizes 100,1000,3356] [--publications 10]
        [--rosters featured,full]

A conference room (rooms/conference.py, Last-N 0, nobody has the floor) with its chair (whose
console is told of everyone) and n auto-subscribing bridges that each publish a camera and a
microphone: what a national room holds once the communes are in. Then `--publications` more
bridges join and publish, one after the other, each shown to nobody and heard by nobody (a
commune in a surge). Each size runs once per `--rosters` (the conference's `roster`, docs/
signaling.md: `featured`, the default, or `full`, every bridge told of everyone).
`surge_messages`: the messages all sessions were sent while the n bridges joined (the event
loop runs between joins, so the 1 s `presence` timer fires as in a server; the fill is faster
than a real surge, so fewer fire). Measured, in process CPU:
`join_ms` (mean of `RoomManager.join` + `auto_subscribe_joined`, what signaling runs for a
joiner, with its `joined` message built and JSON-encoded as signaling does: `joined_kb`, its
size) and `announce_ms` (mean of `announce_published`: the `track_published` broadcasts, the
re-plan, the subscription syncs), `messages_per_join` (what all sessions were sent for one
late join and its publication), with `syncs_per_publication` (GET /api/rooms/{room}/media's
`subscription_syncs`; null where the code has no such count).

Real parts: the RoomManager with its Router and RoomControl. The room's tracks are fed as a
cascade edge's are (`Router.add_producer`, sfu/edge.py), so no SDP is negotiated: the figures
are the room control's alone. The peers are this file's own `Peer`s (the manager's protocol),
which count what they are sent. One JSON line per size on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from typing import Any

from rooms.conference import parse_conference
from rooms.manager import JoinSnapshot, RoomManager
from rooms.memory import MemoryRoomStore
from rooms.model import Participant
from sfu.config import SfuConfig
from sfu.producer import Producer
from sfu.router import TrackInfo
from signaling.fragments import Fragments, joined_text

ROOM = "national"
GRANTS = frozenset({"publish", "subscribe"})
FRAGMENTS = Fragments()  # the signaling hub's, one per process


class Bridge:
    """A rooms.manager.Peer that counts what it is sent."""

    def __init__(self, pid: str, role: str = "commune", grants: frozenset[str] = GRANTS) -> None:
        self.participant = Participant(pid, ROOM, role, pid, grants=grants)
        self.auto_subscribe = True
        self.received = 0
        self.joined_bytes = 0

    def send(self, message: dict[str, Any]) -> None:
        self.received += 1

    def admitted(self, snap: JoinSnapshot) -> None:
        """`joined`, built and encoded as signaling/app.py does it (what a joiner costs there)."""
        text = joined_text(FRAGMENTS, None, ROOM, self.participant.to_json(), snap, [], 15)
        self.joined_bytes = len(text.encode())

    def close(self, code: int, reason: str) -> None:
        pass


def publish_tracks(mgr: RoomManager, pid: str, rng: random.Random) -> list[TrackInfo]:
    """A camera and a microphone of `pid` in the room, fed as a cascade edge's are."""
    router = mgr.routers()[ROOM]
    tracks = [TrackInfo(f"{pid}/camera", pid, "video", "camera", "VP8"),
              TrackInfo(f"{pid}/microphone", pid, "audio", "microphone", "opus")]
    for t in tracks:
        router.add_producer(Producer(t, 90000 if t.kind == "video" else 48000, router.config,
                                     rng))
    return tracks


async def _join(mgr: RoomManager, bridge: Bridge) -> JoinSnapshot:
    snap = await mgr.join(bridge, bridge.admitted)
    await mgr.auto_subscribe_joined(bridge)
    return snap


def _syncs(mgr: RoomManager) -> int | None:
    view = mgr.media_view(ROOM) or {}
    return view.get("subscription_syncs")


async def bench(n: int, publications: int, roster: str = "featured") -> dict[str, Any]:
    rng = random.Random(n)
    mgr = RoomManager(MemoryRoomStore(), SfuConfig(ice_hosts=("127.0.0.1",)))
    try:
        spec = {"room": ROOM, "last_n": 0, "roster": roster}
        if not await mgr.create_conference(parse_conference(spec)):
            raise RuntimeError("conference not created")
        bridges = [Bridge("hq", "chair", GRANTS | {"moderate", "record", "observe_all"})]
        await _join(mgr, bridges[0])
        for i in range(n):
            bridges.append(Bridge(f"c{i}"))
            await _join(mgr, bridges[-1])
            publish_tracks(mgr, f"c{i}", rng)  # in the room, unannounced: only the late ones count
            await asyncio.sleep(0)  # timers (`presence`) run between joins, as in a server
        surge = sum(b.received for b in bridges)
        join_s = announce_s = 0.0
        joined_bytes = 0
        syncs: int | None = 0
        sent = sum(b.received for b in bridges)
        for i in range(publications):
            late = Bridge(f"late{i}")
            bridges.append(late)
            t0 = time.process_time()
            await _join(mgr, late)
            t1 = time.process_time()
            joined_bytes += late.joined_bytes
            tracks = publish_tracks(mgr, late.participant.id, rng)
            before = _syncs(mgr)
            t2 = time.process_time()
            await mgr.announce_published(late, tracks)
            t3 = time.process_time()
            after = _syncs(mgr)
            syncs = None if syncs is None or before is None or after is None else (
                syncs + after - before)
            join_s += t1 - t0
            announce_s += t3 - t2
        tracks_now = len(mgr.routers()[ROOM].producers)
        per_join = (sum(b.received for b in bridges) - sent) / publications
        return {"bench": "micro_conference", "roster": roster, "bridges": n,
                "publications": publications, "surge_messages": surge,
                "messages_per_join": round(per_join, 1),
                "tracks": tracks_now, "join_ms": round(1000 * join_s / publications, 3),
                "joined_kb": round(joined_bytes / publications / 1024, 1),
                "announce_ms": round(1000 * announce_s / publications, 3),
                "syncs_per_publication": None if syncs is None
                else round(syncs / publications, 2)}
    finally:
        await mgr.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100,1000,3356", help="bridges in the room, comma-separated")
    ap.add_argument("--publications", type=int, default=10,
                    help="bridges that join and publish after them, measured")
    ap.add_argument("--rosters", default="featured,full",
                    help="the conference's roster, each size once per value")
    args = ap.parse_args(argv)
    for n in (int(x) for x in args.sizes.split(",")):
        for roster in args.rosters.split(","):
            print(json.dumps(asyncio.run(bench(n, args.publications, roster))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

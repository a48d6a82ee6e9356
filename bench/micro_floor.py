"""Server CPU per bridge for one floor turn in a conference of auto-subscribing bridges.

    python -m bench.micro_floor [--bridges 40,200] [--turns 4]

A conference (Last-N 0) with a chair that publishes, a few bridges that publish and take the
floor in turn (`--turns`), and `--bridges` auto-subscribing bridges, each with a real aiortc
client connection in this process that answers the server's offers. Every floor turn changes
every bridge's subscriptions (the old holder's audio and video out, the new one's in). Measured
per turn, in process CPU with the clients' work kept apart (offers are answered one bridge at
a time after the server is done): `server_ms_per_bridge` (the turn's control, the
subscription syncs, the offers made and the answers applied, divided by all subscribers),
`client_ms_per_bridge` (applying an offer and answering it, for scale), `offers` and `remaps`
(subscribers sent a new SDP offer, or only the `remap` of their sections: docs/signaling.md).
Every bridge's first offer opens the floor's audio and video sections empty (rooms/manager.py
FLOOR_SLOTS), so the first turn is remaps too; the `"phase": "join"` line is what the bridges'
joins, their first offers and the answers cost the server, per bridge. One JSON line for the
joins, then one per turn, on stdout.

Real parts: RoomManager, Router, RoomControl, aiortc on both sides (no ICE or DTLS needs to
complete: what is measured is the signaling). The room's tracks are fed as a cascade edge's
are (`Router.add_producer`), so no publisher connection is negotiated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.rtcconfiguration import RTCBundlePolicy

from bench.micro_conference import ROOM, publish_tracks
from rooms.conference import parse_conference
from rooms.manager import RoomManager
from rooms.memory import MemoryRoomStore
from rooms.model import Participant
from sfu.config import SfuConfig

PUB = frozenset({"publish", "subscribe"})
CHAIR = PUB | {"moderate", "record", "observe_all"}


class Bridge:
    """A rooms.manager.Peer with a real client connection; offers wait for `answer_all`."""

    def __init__(self, pid: str, role: str = "commune", grants: frozenset[str] = PUB) -> None:
        self.participant = Participant(pid, ROOM, role, pid, grants=grants)
        self.auto_subscribe = True
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[],
                                                     bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self.offers: list[str] = []
        self.remaps = 0

    def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "offer":
            self.offers.append(message["sdp"])
        elif message["type"] == "remap":
            self.remaps += 1

    def close(self, code: int, reason: str) -> None:
        pass


async def _settle() -> None:
    """Let the subscription syncs run until each waits for its answer (nothing else runs)."""
    for _ in range(50):
        await asyncio.sleep(0)


async def answer_all(mgr: RoomManager, bridges: list[Bridge]) -> tuple[float, float, int]:
    """Answer every waiting offer, one bridge at a time, until none is left. Returns (server
    CPU s, client CPU s, offers)."""
    server = client = 0.0
    offers = 0
    while any(b.offers for b in bridges):
        for b in bridges:
            while b.offers:
                sdp = b.offers.pop(0)
                offers += 1
                t0 = time.process_time()
                await b.pc.setRemoteDescription(RTCSessionDescription(sdp, "offer"))
                await b.pc.setLocalDescription(await b.pc.createAnswer())
                t1 = time.process_time()
                await mgr.subscriber_answer(b, b.pc.localDescription.sdp)
                await _settle()  # a follow-up offer, if changes waited for this answer
                server += time.process_time() - t1
                client += t1 - t0
    return server, client, offers


async def bench(n: int, turns: int) -> list[dict[str, Any]]:
    rng = random.Random(n)
    mgr = RoomManager(MemoryRoomStore(), SfuConfig(ice_hosts=("127.0.0.1",)))
    bridges: list[Bridge] = []  # everyone, the chair and speakers first
    try:
        if not await mgr.create_conference(parse_conference({"room": ROOM, "last_n": 0})):
            raise RuntimeError("conference not created")
        chair = Bridge("hq", "chair", CHAIR)
        speakers = [Bridge(f"speaker{i}") for i in range(max(2, min(turns, 4)))]
        bridges += [chair, *speakers]
        for b in (chair, *speakers):
            await mgr.join(b, lambda snap: None)
            await mgr.announce_published(b, publish_tracks(mgr, b.participant.id, rng))
        t0 = time.process_time()
        for i in range(n):
            b = Bridge(f"c{i}")
            bridges.append(b)
            await mgr.join(b, lambda snap: None)
            await mgr.auto_subscribe_joined(b)
        everyone = list(bridges)
        await _settle()
        joins = time.process_time() - t0
        server, client, offers = await answer_all(mgr, everyone)
        out = [{"bench": "micro_floor", "phase": "join", "bridges": n, "turn": None,
                "offers": offers, "remaps": sum(b.remaps for b in everyone),
                "server_ms_per_bridge": round(1000 * (joins + server) / n, 3),
                "client_ms_per_bridge": round(1000 * client / max(offers, 1), 3)}]
        for turn in range(turns):
            remaps = sum(b.remaps for b in everyone)
            target = speakers[turn % len(speakers)].participant.id
            t0 = time.process_time()
            await mgr.control(chair, "give_floor", {"target": target})
            await _settle()
            syncs = time.process_time() - t0
            server, client, offers = await answer_all(mgr, everyone)
            subs = len(everyone) - 1
            out.append({"bench": "micro_floor", "phase": "turn", "bridges": n, "turn": turn,
                        "offers": offers,
                        "remaps": sum(b.remaps for b in everyone) - remaps,
                        "server_ms_per_bridge": round(1000 * (syncs + server) / subs, 3),
                        "client_ms_per_bridge": round(1000 * client / max(offers, 1), 3)})
        return out
    finally:
        await mgr.close()
        await asyncio.gather(*(b.pc.close() for b in bridges), return_exceptions=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bridges", default="40,200", help="auto-subscribing bridges, comma-separated")
    ap.add_argument("--turns", type=int, default=4, help="floor turns, measured one by one")
    args = ap.parse_args(argv)
    for n in (int(x) for x in args.bridges.split(",")):
        for line in asyncio.run(bench(n, args.turns)):
            print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

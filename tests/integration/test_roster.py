"""A conference's featured roster (rooms/roster.py, rooms/audience.py) through the real
RoomManager, RoomControl and Router, with real publisher offers: bridges are told of the
chair, the floor and the videos they may be shown, not of each other; moderators of everyone;
`presence` covers the rest of the log without a gap in `seq`. Peers are test_manager's
RecordingPeer; the `joined` each one gets is the manager's JoinSnapshot."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from rooms.conference import parse_conference
from rooms.manager import RoomManager
from rooms.memory import MemoryRoomStore
from rooms.peer import JoinSnapshot
from sfu.config import SfuConfig
from tests.conftest import PublisherOffer
from tests.integration.test_manager import ROOM, RecordingPeer

pytestmark = pytest.mark.integration

PUB = frozenset({"publish", "subscribe"})
MOD = frozenset({"publish", "subscribe", "moderate", "record", "observe_all"})
OPS = frozenset({"subscribe", "moderate", "record", "observe_all"})


class Client:
    """What a client makes of its messages, as both clients do (clients/session.py): who it
    knows, the room's count, and floor.js's gap check on `seq`."""

    def __init__(self, peer: RecordingPeer, snap: JoinSnapshot) -> None:
        self.peer, self.read = peer, 0
        self.known = {p.id for p in snap.participants}
        self.tracks = {t.id for t in snap.tracks}
        self.count = snap.participant_count
        self.roster = snap.roster
        self.seq = snap.floor["seq"] if snap.floor else 0

    def catch_up(self) -> list[dict[str, Any]]:
        new = self.peer.inbox[self.read:]
        self.read = len(self.peer.inbox)
        for msg in new:
            kind, seq = msg["type"], msg.get("seq")
            if isinstance(seq, int) and seq > self.seq:
                assert kind == "presence" or seq == self.seq + 1, f"gap: {self.seq} → {msg}"
                self.seq = seq
            if kind == "presence":
                self.count = msg["participant_count"]
            elif kind == "participant_joined":
                self.known.add(msg["participant"]["id"])
            elif kind == "participant_left":
                self.known.discard(msg["participant_id"])
            elif kind == "track_published":
                self.tracks.add(msg["track"]["id"])
            elif kind == "track_unpublished":
                self.tracks.discard(msg["track_id"])
        return new


@pytest.fixture
async def manager() -> AsyncIterator[RoomManager]:
    mgr = RoomManager(MemoryRoomStore(), SfuConfig(ice_hosts=("127.0.0.1",)), last_n=1)
    yield mgr
    await mgr.close()


async def test_bridges_are_told_of_the_featured_moderators_of_everyone(
    manager: RoomManager, publisher_offer: PublisherOffer
) -> None:
    mgr = manager
    assert await mgr.create_conference(parse_conference({"room": ROOM, "last_n": 1}))
    clients: dict[str, Client] = {}

    async def join(pid: str, grants: frozenset[str] = PUB, role: str = "commune") -> Client:
        peer = RecordingPeer(pid, grants=grants, role=role, auto=False)
        clients[pid] = Client(peer, await mgr.join(peer, lambda snap: None))
        return clients[pid]

    hq = await join("hq", MOD, "chair")
    ops = await join("ops", OPS, "operator")
    x1 = await join("x1")
    assert (x1.roster, x1.known, x1.count) == ("featured", {"hq"}, 3)  # the chair only
    assert (ops.roster, ops.known) == ("full", {"hq"})
    for pid in ("x2", "x3", "x4"):
        await join(pid)
    x4 = clients["x4"]
    assert x4.known == {"hq"} and x4.count == 6
    # The surge reached the operator join by join; x1 got nothing but `presence`s.
    assert {m["type"] for m in x1.catch_up()} <= {"presence"}
    ops.catch_up()
    assert ops.known == {"hq", "x1", "x2", "x3", "x4"}

    async def publish(pid: str) -> None:
        peer = clients[pid].peer
        _, tracks = await mgr.publish(peer, await publisher_offer(), {})
        await mgr.announce_published(peer, tracks)

    for pid in ("hq", "x1", "x2", "x3"):
        await publish(pid)
    # With N = 1 everyone is shown the chair and x1 (x1 itself x2): those are featured, and
    # x4 is introduced to them, tracks included, without hearing of x3.
    x4.catch_up()
    assert x4.known == {"hq", "x1", "x2"}
    assert x4.tracks == {f"{p}/{s}" for p in ("hq", "x1", "x2") for s in ("camera", "microphone")}
    view = mgr.media_view(ROOM)
    assert view is not None and view["roster"] == "featured"
    assert view["featured"] == ["hq", "x1", "x2"] and view["introductions"] == 3

    # x3 is told of its own tracks, as every publisher is.
    x3 = clients["x3"]
    x3.catch_up()
    assert {"x3/camera", "x3/microphone"} <= x3.tracks

    # x3 raises its hand: the chair's console and the operator are told; the bridges, x3
    # itself included (its `floor_state` tells it), only through `presence`, and their
    # snapshot's hands list only the featured.
    for c in (hq, ops, x1, x4):
        c.catch_up()
    await mgr.control(x3.peer, "raise_hand", {})
    assert [m["type"] for m in hq.catch_up()] == [m["type"] for m in ops.catch_up()] == [
        "hand_raised"]
    assert [m["type"] for m in x3.catch_up()] == ["floor_state"]
    assert {m["type"] for m in x4.catch_up()} <= {"presence"}
    assert mgr.floor_snapshot(x4.peer)["hands"] == []
    assert [h["id"] for h in mgr.floor_snapshot(hq.peer)["hands"]] == ["x3"]
    mine = mgr.floor_snapshot(x3.peer)
    assert mine["hands"] == [] and mine["you"]["hand_position"] == 1

    # The floor to x3: x4 is introduced to it before `floor_given` names it.
    await mgr.control(hq.peer, "give_floor", {"target": "x3"})
    new = x4.catch_up()
    kinds = [m["type"] for m in new]
    assert kinds.index("participant_joined") < kinds.index("floor_given")
    intro = new[kinds.index("participant_joined")]
    assert intro["participant"]["id"] == "x3" and "seq" not in intro
    assert {"x3/camera", "x3/microphone"} <= x4.tracks and "x3" in x4.known

    # A bridge that was never featured leaves: its tracks and its leave reach the operator
    # only; the others' count follows through `presence`, without a gap.
    x1.catch_up()
    await mgr.leave(clients["x4"].peer, "left")
    await publish_and_leave(mgr, "x5", publisher_offer)
    quiet = x1.catch_up()
    assert {m["type"] for m in quiet} <= {"presence"}, quiet
    await wait_for_count(x1, 5)  # hq, ops, x1, x2, x3: the presence timer tells it
    told = ops.catch_up()
    left = [m["participant_id"] for m in told
            if m["type"] == "participant_left" and m["reason"] != "replaced"]
    assert left == ["x4", "x5"] and [m["type"] for m in told].count("track_unpublished") == 2
    assert ops.known == {"hq", "x1", "x2", "x3"}
    # A featured bridge leaves: everyone is told, after its tracks.
    await mgr.leave(clients["x3"].peer, "disconnected")
    tail = [m["type"] for m in x1.catch_up() if m["type"] != "presence"]
    assert tail[-3:] == ["track_unpublished", "track_unpublished", "participant_left"]
    assert "x3" not in x1.known and x1.tracks.isdisjoint({"x3/camera", "x3/microphone"})
    # After all that, x1's log position is the conference's: nothing was skipped unseen.
    await wait_for_count(x1, 4)
    assert x1.seq == mgr.floor_snapshot(hq.peer)["seq"]


async def publish_and_leave(mgr: RoomManager, pid: str, publisher_offer: PublisherOffer) -> None:
    """A bridge joins, publishes (shown to nobody: N = 1 is taken) and leaves."""
    peer = RecordingPeer(pid, grants=PUB, auto=False)
    await mgr.join(peer, lambda snap: None)
    _, tracks = await mgr.publish(peer, await publisher_offer(), {})
    await mgr.announce_published(peer, tracks)
    # It reconnects: its tracks stay published, and its `joined` lists them with the featured.
    again = RecordingPeer(pid, grants=PUB, auto=False)
    snap = await mgr.join(again, lambda snap: None)
    assert {t.id for t in snap.tracks} >= {f"{pid}/camera", f"{pid}/microphone", "hq/camera"}
    assert pid not in {p.id for p in snap.participants} and snap.roster == "featured"
    await mgr.leave(again, "left")


async def wait_for_count(client: Client, count: int) -> None:
    """Until a `presence` brings `count` (the Audience's timer: 1 s), 5 s at most."""
    async def told() -> None:
        while True:
            client.catch_up()
            if client.count == count:
                return
            await asyncio.sleep(0.05)

    await asyncio.wait_for(told(), 5)


async def test_a_full_roster_conference_and_adhoc_rooms_tell_everyone(
    manager: RoomManager,
) -> None:
    mgr = manager
    assert await mgr.create_conference(parse_conference({"room": ROOM, "roster": "full"}))
    a, b = RecordingPeer("a", grants=PUB), RecordingPeer("b", grants=PUB)
    await mgr.join(a, lambda snap: None)
    snap = await mgr.join(b, lambda snap: None)
    assert snap.roster == "full" and [p.id for p in snap.participants] == ["a"]
    assert [m["participant"]["id"] for m in a.inbox if m["type"] == "participant_joined"] == ["b"]
    adhoc = RecordingPeer("c", room="adhoc", grants=PUB)
    assert (await mgr.join(adhoc, lambda snap: None)).roster == "full"
    view = mgr.media_view(ROOM)
    assert view is not None and view["roster"] == "full" and view["introductions"] == 0

"""RoomManager + RoomControl (rooms/control.py) with the real Router and real publisher offers:
floor results carried to the peers (events, floor_state), to the Router (audio gates, Last-N)
and to the store (lock). No ICE needs to complete: what is checked is what the server decides
and tells. Peers are tests/integration/test_manager.py's RecordingPeer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from rooms.conference import parse_conference
from rooms.manager import RoomManager
from rooms.memory import MemoryRoomStore
from sfu.config import SfuConfig
from signaling.errors import CLOSE_REMOVED, NotAllowedInState, Removed, RoomLocked
from tests.conftest import PublisherOffer
from tests.integration.test_manager import ROOM, RecordingPeer, admit, the_router

pytestmark = pytest.mark.integration

PUB = frozenset({"publish", "subscribe"})
MOD = frozenset({"publish", "subscribe", "moderate", "record", "observe_all"})


def chair(pid: str = "hq") -> RecordingPeer:
    return RecordingPeer(pid, grants=MOD, role="chair")


@pytest.fixture
async def manager() -> AsyncIterator[RoomManager]:
    mgr = RoomManager(MemoryRoomStore(), SfuConfig(ice_hosts=("127.0.0.1",)), last_n=1)
    yield mgr
    await mgr.close()


def of(peer: RecordingPeer, kind: str) -> list[dict]:  # type: ignore[type-arg]
    return [msg for msg in peer.inbox if msg["type"] == kind]


async def test_floor_drives_audio_gates_and_each_bridge_hears_its_own_state(
    manager: RoomManager, publisher_offer: PublisherOffer
) -> None:
    mgr = manager
    hq, a, b = chair(), RecordingPeer("a"), RecordingPeer("b")
    snap = await admit(mgr, hq)
    assert snap.floor is not None and snap.floor["you"]["state"] == "always"
    assert snap.last_n == 1
    await admit(mgr, a)
    await admit(mgr, b)
    router = the_router(mgr)
    for peer in (hq, a):
        _, tracks = await mgr.publish(peer, await publisher_offer(), {})
        await mgr.announce_published(peer, tracks)
    mic = router.producers["a/microphone"]
    assert router.producers["hq/microphone"].enabled and not mic.enabled  # no floor yet

    await mgr.control(b, "raise_hand", {})
    await mgr.control(a, "raise_hand", {})
    assert [s["hand_position"] for s in of(a, "floor_state")] == [2]
    await mgr.control(b, "lower_hand", {})  # a moves up: it is told
    assert [s["hand_position"] for s in of(a, "floor_state")] == [2, 1]

    await mgr.control(hq, "give_floor", {"target": "a"})
    assert mic.enabled and of(a, "floor_state")[-1]["state"] == "floor"
    assert [e["type"] for e in hq.inbox[-2:]] == ["hand_lowered", "floor_given"]
    await mgr.control(hq, "mute", {"target": "a"})
    assert not mic.enabled and of(a, "floor_state")[-1]["audio_allowed"] is False
    await mgr.control(hq, "unmute", {"target": "a"})
    assert mic.enabled
    seqs = [e["seq"] for e in b.inbox if "seq" in e]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)

    # the floor holder leaves: floor_taken, its tracks, then participant_left
    await mgr.leave(a, "disconnected")
    tail = [e["type"] for e in b.inbox[-4:]]
    assert tail == ["floor_taken", "track_unpublished", "track_unpublished", "participant_left"]
    with pytest.raises(NotAllowedInState):
        await mgr.control(hq, "take_floor", {})  # nobody holds it now


async def test_last_n_plan_follows_floor_spotlight_and_the_dominant_speaker(
    manager: RoomManager, publisher_offer: PublisherOffer
) -> None:
    mgr = manager
    peers = {p: RecordingPeer(p, auto=False) for p in ("p1", "p2", "p3")}
    hq, viewer = chair(), RecordingPeer("v", auto=False)
    for peer in (hq, *peers.values(), viewer):
        await admit(mgr, peer)
    for peer in (hq, *peers.values()):
        _, tracks = await mgr.publish(peer, await publisher_offer(), {})
        await mgr.announce_published(peer, tracks)
    router = the_router(mgr)

    def plan(who: str = "v") -> list[str]:
        view = mgr.media_view(ROOM, who)
        assert view is not None
        return view["plan"][who]

    assert plan() == ["hq", "p1"]  # the chair and N = 1 other, in join order
    assert router._video_from["v"] == frozenset({"hq", "p1"})
    await mgr.control(hq, "give_floor", {"target": "p2"})
    assert plan() == ["hq", "p1", "p2"]
    await mgr.control(hq, "spotlight", {"target": "p3"})
    assert plan() == ["hq", "p1", "p2", "p3"]
    await mgr.control(hq, "spotlight", {})
    router.speaker.add_level("p3", 0, 1.0)  # p3 spoke (and is now first in the ranking)...
    assert router.on_dominant_speaker is not None
    router.on_dominant_speaker("p3")  # ...and the timer says so
    assert viewer.inbox[-1] == {"type": "dominant_speaker", "participant_id": "p3"}
    assert plan() == ["hq", "p2", "p3"]
    assert mgr.set_last_n(viewer, 0) == 0 and plan() == ["hq", "p2"]
    assert mgr.set_last_n(viewer, 9) == 1  # a bridge cannot ask for more than the room's N
    assert mgr.set_last_n(hq, 9) == 9  # the chair's console may
    assert plan("hq") == ["p1", "p2", "p3"]
    late = RecordingPeer("w", auto=False)
    await admit(mgr, late)  # planned alone, as everyone who publishes nothing
    assert plan("w") == ["hq", "p2", "p3"] and router._video_from["w"] == {"hq", "p2", "p3"}
    await mgr.leave(late, "left")  # nobody watched it: nothing else changes
    await mgr.leave(peers["p1"], "left")  # the chair's console watched p1: re-planned
    assert plan("hq") == ["p2", "p3"]


async def test_lock_remove_and_readmit(manager: RoomManager) -> None:
    mgr = manager
    hq, a = chair(), RecordingPeer("a")
    await admit(mgr, hq)
    await admit(mgr, a)
    await mgr.control(hq, "lock", {})
    room = await mgr.store.get_room(ROOM)
    assert room is not None and room.locked  # mirrored in the store
    with pytest.raises(RoomLocked):
        await admit(mgr, RecordingPeer("stranger"))
    await mgr.control(hq, "unlock", {})

    await mgr.control(hq, "remove", {"target": "a"})
    assert a.closed_with == (CLOSE_REMOVED, "removed") and a.inbox[-1]["code"] == "removed"
    left = hq.inbox[-1]
    assert (left["type"], left["reason"], left["actor"]) == ("participant_left", "removed", "hq")
    assert mgr.participant_count() == 1 and await mgr.store.get_participant(ROOM, "a") is None
    await mgr.leave(a, "disconnected")  # its socket going away later changes nothing
    with pytest.raises(Removed):
        await admit(mgr, RecordingPeer("a"))
    await mgr.control(hq, "readmit", {"target": "a"})
    await admit(mgr, RecordingPeer("a"))
    assert mgr.participant_count() == 2


async def test_a_conference_keeps_its_floor_and_log_while_empty() -> None:
    mgr = RoomManager(MemoryRoomStore(), SfuConfig(ice_hosts=("127.0.0.1",)))
    try:
        spec = parse_conference({"room": ROOM, "invited": [{"id": "a"}], "last_n": 2})
        assert await mgr.create_conference(spec)
        assert not await mgr.create_conference(spec)  # once
        hq = chair()
        snap = await admit(mgr, hq)
        assert snap.last_n == 2
        a = RecordingPeer("a")
        await admit(mgr, a)
        assert of(hq, "participant_joined")[-1]["invited"] is True
        await mgr.control(hq, "remove", {"target": "a"})
        await mgr.leave(hq, "left")
        assert mgr.routers() == {}  # media closed...
        assert await mgr.store.get_room(ROOM) is not None  # ...the conference is not
        events = mgr.events(ROOM)
        assert events is not None and [e.type for e in events][-2:] == [
            "participant_left", "participant_left"]  # fmt: skip
        assert mgr.events(ROOM, since=len(events)) == []
        with pytest.raises(Removed):  # the ban holds while nobody is there
            await admit(mgr, RecordingPeer("a"))
    finally:
        await mgr.close()


async def test_a_replacement_with_other_rights_starts_afresh(manager: RoomManager) -> None:
    mgr = manager
    hq, a = chair(), RecordingPeer("a")
    await admit(mgr, hq)
    await admit(mgr, a)
    await mgr.control(a, "raise_hand", {})
    same = RecordingPeer("a")
    await admit(mgr, same)  # same rights: keeps its hand, nothing logged
    assert [e.get("seq") for e in hq.inbox[-2:]] == [None, None]
    snap = mgr.floor_snapshot(same)
    assert [h["id"] for h in snap["hands"]] == ["a"]
    other = RecordingPeer("a", grants=frozenset({"subscribe"}), role="observer")
    await admit(mgr, other)  # different rights: leaves (dropping its hand) and joins again
    assert [e["type"] for e in hq.inbox[-3:]] == ["hand_lowered", "participant_left",
                                                  "participant_joined"]  # fmt: skip
    assert mgr.floor_snapshot(other)["you"]["state"] == "silent"


async def test_a_publication_syncs_only_the_bridges_that_want_it(
    publisher_offer: PublisherOffer,
) -> None:
    """In a conference, a bridge's publication re-syncs the auto-subscribers shown its video or
    hearing its audio, not the whole room (3,000 syncs per commune camera otherwise)."""
    mgr = RoomManager(MemoryRoomStore(), SfuConfig(ice_hosts=("127.0.0.1",)))
    try:
        assert await mgr.create_conference(parse_conference({"room": ROOM, "last_n": 1}))
        hq = chair()
        bridges = {p: RecordingPeer(p) for p in ("a", "b", "c")}
        for peer in (hq, *bridges.values()):
            await admit(mgr, peer)
            await mgr.auto_subscribe_joined(peer)  # as signaling does after `joined`
        router = the_router(mgr)

        def count(what: str) -> int:
            view = mgr.media_view(ROOM)
            assert view is not None
            return view[what]

        def syncs() -> int:
            return count("subscription_syncs")

        async def publish(peer: RecordingPeer) -> tuple[int, int]:
            """(syncs, full Last-N plans) the publication cost."""
            before = syncs(), count("replans")
            _, tracks = await mgr.publish(peer, await publisher_offer(), {})
            await mgr.announce_published(peer, tracks)
            return syncs() - before[0], count("replans") - before[1]

        assert await publish(hq) == (3, 1)  # the chair: heard and shown by everyone
        assert await publish(bridges["a"]) == (3, 1)  # Last-N 1: the first other, for all
        assert await publish(bridges["b"]) == (1, 1)  # shown to a only
        # Shown to nobody (a and b rank before it), not heard: no sync, not even a plan.
        assert await publish(bridges["c"]) == (0, 0)
        chair_tracks = {"hq/camera", "hq/microphone"}
        assert router.subscribed("a") == chair_tracks | {"b/camera"}
        assert router.subscribed("b") == router.subscribed("c") == chair_tracks | {"a/camera"}
        assert router.subscribed("hq") == {"a/camera"}
        late = RecordingPeer("d")  # planned alone against what c's publication left
        await admit(mgr, late)
        await mgr.auto_subscribe_joined(late)
        assert router.subscribed("d") == chair_tracks | {"a/camera"}

        # The floor: c is heard by everyone and shown to everyone.
        before = syncs()
        await mgr.control(hq, "give_floor", {"target": "c"})
        await asyncio.gather(*mgr._rooms[ROOM].control._syncing.values())  # started, not awaited
        assert syncs() - before == 4
        for pid in ("hq", "a", "b", "d"):
            assert {"c/camera", "c/microphone"} <= router.subscribed(pid)
    finally:
        await mgr.close()

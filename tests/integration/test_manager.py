"""RoomManager (rooms/manager.py) with its real media Router (sfu.router.Router, the default
router factory) and real aiortc publisher offers.

The peers are `RecordingPeer`s: this test's own implementation of the manager's `Peer` protocol,
which records what the manager sends and how it closes a session. Nothing here stands in for our
code or a library. No connection needs to complete ICE: the manager's behaviour is all in the
signaling it produces (answers, subscriber offers, events). Every peer connection is closed at
the end of its test, and the manager closes every Router it opened.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiortc.sdp import SessionDescription

from rooms.manager import JoinSnapshot, RoomManager
from rooms.memory import MemoryRoomStore
from rooms.model import Participant
from sfu.config import SfuConfig
from sfu.router import Router
from signaling import messages as m
from signaling.errors import CLOSE_REPLACED, RoomFull, RoomLocked
from tests.conftest import PublisherOffer

pytestmark = pytest.mark.integration

ROOM = "r"
ALL = frozenset({"publish", "subscribe"})


class RecordingPeer:
    """A rooms.manager.Peer that records what it is sent and how it is closed."""

    def __init__(
        self,
        pid: str,
        room: str = ROOM,
        grants: frozenset[str] = ALL,
        auto: bool = True,
        role: str = "commune",
    ) -> None:
        self.participant = Participant(pid, room, role, pid, grants=grants)
        self.auto_subscribe = auto
        self.inbox: list[dict[str, Any]] = []
        self.closed_with: tuple[int, str] | None = None

    def send(self, message: dict[str, Any]) -> None:
        self.inbox.append(message)

    def close(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)

    def types(self) -> list[str]:
        return [msg["type"] for msg in self.inbox]

    def offers(self) -> list[dict[str, Any]]:
        return [msg for msg in self.inbox if msg["type"] == "offer"]


@pytest.fixture
async def manager() -> AsyncIterator[RoomManager]:
    mgr = RoomManager(MemoryRoomStore(), SfuConfig(ice_hosts=("127.0.0.1",)))
    yield mgr
    await mgr.close()  # closes the Routers of rooms a test left open


async def admit(mgr: RoomManager, peer: RecordingPeer) -> JoinSnapshot:
    return await mgr.join(peer, lambda snap: peer.send({"type": "joined"}))


def the_router(mgr: RoomManager, room: str = ROOM) -> Router:
    routers = mgr.routers()
    assert list(routers) == [room]
    assert type(routers[room]) is Router
    return routers[room]


def sdp_media(sdp: str) -> list[tuple[str, str, str | None]]:
    """(kind, direction, mid) of each media section of a real SDP."""
    return [(d.kind, d.direction, d.rtp.muxId) for d in SessionDescription.parse(sdp).media]


def assert_subscriber_offer(message: dict[str, Any], track_ids: list[str]) -> None:
    """A real subscriber offer whose `mids` name exactly `track_ids`, one sendonly section each
    of the track's kind."""
    assert message["type"] == "offer" and message["pc"] == "subscriber"
    mids: dict[str, str] = message["mids"]
    assert sorted(mids.values()) == sorted(track_ids)
    media = {mid: (kind, direction) for kind, direction, mid in sdp_media(message["sdp"])}
    for mid, track_id in mids.items():
        kind = "audio" if track_id.endswith("/microphone") else "video"
        assert media[mid] == (kind, "sendonly"), (mid, track_id, media)


async def test_router_per_room_closed_when_empty_and_events_in_order(
    manager: RoomManager, publisher_offer: PublisherOffer
) -> None:
    mgr = manager
    a, b = RecordingPeer("a"), RecordingPeer("b")
    await admit(mgr, a)
    snap = await admit(mgr, b)
    router = the_router(mgr)
    assert [p.id for p in snap.participants] == ["a"] and snap.tracks == []
    assert a.types() == ["joined", "participant_joined"] and b.types() == ["joined"]
    assert a.inbox[1]["participant"]["id"] == "b"

    answer, tracks = await mgr.publish(a, await publisher_offer(), {})
    assert [(t.id, t.participant_id, t.kind, t.source) for t in tracks] == [
        ("a/microphone", "a", "audio", "microphone"),
        ("a/camera", "a", "video", "camera"),
    ]
    assert sdp_media(answer) == [("audio", "recvonly", "0"), ("video", "recvonly", "1")]
    assert router.tracks() == tracks

    await mgr.announce_published(a, tracks)
    published = [m.track_published(t.to_json()) for t in tracks]
    # everyone hears of it; the auto-subscriber (not the publisher) is subscribed, gets an offer
    assert a.inbox[2:] == published
    assert b.inbox[1:3] == published and b.types() == ["joined", *["track_published"] * 2, "offer"]
    assert_subscriber_offer(b.inbox[-1], ["a/microphone", "a/camera"])
    assert list(router.subscribers) == ["b"]
    assert set(router.subscribers["b"].consumers) == {"a/microphone", "a/camera"}
    a_pub, b_sub = router.publishers["a"].pc, router.subscribers["b"].pc

    seen_by_b = len(b.inbox)
    await mgr.leave(a, "left")
    *unpublished, left = b.inbox[seen_by_b:]
    assert sorted(u["track_id"] for u in unpublished) == ["a/camera", "a/microphone"]
    assert unpublished[0] == m.track_unpublished(unpublished[0]["track_id"])
    # the leave is in the conference's event log: its seq, time and actor come with it
    assert left == m.participant_left("a", "left", seq=3, time=left["time"], actor="a")
    assert router.tracks() == [] and "a" not in router.publishers
    assert a_pub.signalingState == "closed"
    assert len(a.inbox) == 4  # nothing reaches a peer after it left
    assert the_router(mgr) is router  # b is still there

    await mgr.leave(b, "disconnected")
    assert router._closed and b_sub.signalingState == "closed"
    assert router.publishers == {} and router.subscribers == {}
    assert mgr.routers() == {} and mgr.room_ids() == [] and await mgr.store.list_rooms() == []
    assert mgr.participant_count() == 0


async def test_joiner_auto_subscribes_to_existing_tracks_unless_it_opted_out(
    manager: RoomManager, publisher_offer: PublisherOffer
) -> None:
    mgr = manager
    a = RecordingPeer("a")
    await admit(mgr, a)
    _, tracks = await mgr.publish(a, await publisher_offer(), {})
    router = the_router(mgr)
    late, manual = RecordingPeer("late"), RecordingPeer("manual", auto=False)
    snap = await admit(mgr, late)
    assert [t.id for t in snap.tracks] == ["a/microphone", "a/camera"] == [t.id for t in tracks]
    await mgr.auto_subscribe_joined(late)
    assert late.types() == ["joined", "offer"]
    assert_subscriber_offer(late.inbox[-1], ["a/microphone", "a/camera"])

    await admit(mgr, manual)
    await mgr.auto_subscribe_joined(manual)
    assert manual.types() == ["joined"]
    # the publisher is never subscribed to its own tracks
    await mgr.auto_subscribe_joined(a)
    assert a.offers() == []
    assert list(router.subscribers) == ["late"]

    # the one who opted out subscribes by hand, to what it names
    await mgr.subscribe(manual, ["a/camera"])
    assert manual.types() == ["joined", "offer"]
    assert_subscriber_offer(manual.inbox[-1], ["a/camera"])
    assert sorted(router.subscribers) == ["late", "manual"]


async def test_same_identity_replaces_keeps_the_tracks_and_old_leave_is_a_noop(
    manager: RoomManager, publisher_offer: PublisherOffer
) -> None:
    mgr = manager
    watcher, old, new = RecordingPeer("w"), RecordingPeer("x"), RecordingPeer("x")
    await admit(mgr, watcher)
    await admit(mgr, old)
    router = the_router(mgr)
    # both publish, and each is auto-subscribed to the other's tracks
    _, w_tracks = await mgr.publish(watcher, await publisher_offer(), {})
    await mgr.announce_published(watcher, w_tracks)
    _, x_tracks = await mgr.publish(old, await publisher_offer(), {})
    await mgr.announce_published(old, x_tracks)
    assert_subscriber_offer(old.offers()[-1], ["w/microphone", "w/camera"])
    assert_subscriber_offer(watcher.offers()[-1], ["x/microphone", "x/camera"])
    old_sub = router.subscribers["x"].pc
    x_pub = router.publishers["x"]
    watcher_sub = router.subscribers["w"]

    seen_by_watcher = len(watcher.inbox)
    snap = await admit(mgr, new)

    # the old session is told, and closed with 4009
    assert old.inbox[-1] == m.error("replaced", "the same identity joined again")
    assert old.closed_with == (CLOSE_REPLACED, "replaced")
    # the others: participant_left (replaced) then participant_joined, and no track_unpublished
    assert watcher.inbox[seen_by_watcher:] == [
        m.participant_left("x", "replaced"),
        m.participant_joined(new.participant.to_json()),
    ]
    # the tracks stay published, in the new session's snapshot, still fed to the watcher
    assert [t.id for t in router.tracks()] == [
        "w/microphone",
        "w/camera",
        "x/microphone",
        "x/camera",
    ]
    assert [t.id for t in snap.tracks] == [t.id for t in router.tracks()]
    assert [p.id for p in snap.participants] == ["w"]
    assert router.publishers["x"] is x_pub
    assert router.subscribers["w"] is watcher_sub
    assert set(watcher_sub.consumers) == {"x/microphone", "x/camera"}
    # only the old subscriber connection went
    assert "x" not in router.subscribers and old_sub.signalingState == "closed"

    # the new session starts a subscriber connection of its own
    assert new.types() == ["joined"]
    await mgr.auto_subscribe_joined(new)
    assert new.types() == ["joined", "offer"]
    assert_subscriber_offer(new.inbox[-1], ["w/microphone", "w/camera"])
    assert router.subscribers["x"].pc is not old_sub

    # publishing again on a new connection re-binds the same track ids: nothing is new
    seen_by_watcher = len(watcher.inbox)
    answer, again = await mgr.publish(new, await publisher_offer(), {})
    assert again == [] and sdp_media(answer)[0][1] == "recvonly"
    await mgr.announce_published(new, again)
    assert router.publishers["x"] is not x_pub
    assert [t.id for t in router.tracks()][2:] == ["x/microphone", "x/camera"]
    assert watcher.inbox[seen_by_watcher:] == []

    # the old socket going away later changes nothing
    old_inbox = list(old.inbox)
    await mgr.leave(old, "disconnected")
    assert mgr.participant_count() == 2 and the_router(mgr) is router and not router._closed
    assert watcher.inbox[seen_by_watcher:] == [] and old.inbox == old_inbox
    assert len(router.tracks()) == 4


async def test_room_full_and_locked() -> None:
    mgr = RoomManager(MemoryRoomStore(), SfuConfig(ice_hosts=("127.0.0.1",)), max_participants=1)
    try:
        first = RecordingPeer("a")
        await admit(mgr, first)
        router = the_router(mgr)
        with pytest.raises(RoomFull):
            await admit(mgr, RecordingPeer("b"))
        again = RecordingPeer("a")
        await admit(mgr, again)  # a replacement is not one more
        assert first.closed_with == (CLOSE_REPLACED, "replaced") and again.types() == ["joined"]
        await mgr.set_room_attributes(ROOM, {"locked": True, "max_participants": 10})
        with pytest.raises(RoomLocked):
            await admit(mgr, RecordingPeer("c"))
        op = RecordingPeer("op", grants=frozenset({"subscribe", "moderate"}), role="operator")
        await admit(mgr, op)  # a moderator gets into a locked room
        assert mgr.participant_count() == 2 and the_router(mgr) is router
        assert again.types() == ["joined", "room_locked", "participant_joined"]
    finally:
        await mgr.close()
    assert mgr.routers() == {} and router._closed


async def test_a_refused_first_join_opens_no_room() -> None:
    mgr = RoomManager(MemoryRoomStore(), SfuConfig(ice_hosts=("127.0.0.1",)))
    try:
        await mgr.set_room_attributes(ROOM, {"locked": True})
        with pytest.raises(RoomLocked):
            await admit(mgr, RecordingPeer("c"))
        assert mgr.routers() == {} and mgr.participant_count() == 0
    finally:
        await mgr.close()


async def test_offer_for_an_absent_participant_is_dropped(
    manager: RoomManager, publisher_offer: PublisherOffer, caplog: pytest.LogCaptureFixture
) -> None:
    mgr = manager
    a, b = RecordingPeer("a", auto=False), RecordingPeer("b", auto=False)
    await admit(mgr, a)
    await admit(mgr, b)
    _, tracks = await mgr.publish(b, await publisher_offer(), {})
    ids = [t.id for t in tracks]
    router = the_router(mgr)
    before = (list(a.inbox), list(b.inbox))
    caplog.set_level(logging.DEBUG, logger="rooms.manager")
    # The Router makes an offer for someone not (or no longer) in the room: nobody gets it.
    await router.subscribe("ghost", ids)
    assert (a.inbox, b.inbox) == before
    assert any(
        "offer for absent participant" in r.getMessage() and "participant=ghost" in r.getMessage()
        for r in caplog.records
    )
    await mgr.subscribe(a, ids)
    assert a.inbox[len(before[0]) :] == [a.offers()[-1]] and b.inbox == before[1]
    assert_subscriber_offer(a.offers()[-1], ids)

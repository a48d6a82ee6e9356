"""Group membership one consumer at a time: `FastGroup.add`/`remove` and the Producer's
`_join`/`_leave` that use them. A join or a leave used to rebuild the whole group (~10 us per
consumer on a VM), so a national room's surge of joins was quadratic; these tests hold the
incremental path to the same bytes on the wire as a rebuild. Real sockets and SRTP sessions,
both send paths (helpers from test_fastpath.py)."""

from __future__ import annotations

import random
import socket

import pytest

from sfu import fastpath
from sfu.config import SfuConfig
from sfu.producer import Producer, Source
from sfu.router import TrackInfo
from tests.unit.test_fastpath import (
    HDR,
    Peer,
    check,
    close_all,
    make_peer,
    packet_tail,
    rtp,
)


def sent_to(peers: list[Peer], tail: bytes, seq: int) -> None:
    for p in peers:
        check(p, p.receive(), 0x90, 0, seq, 1000 + seq, tail)
        assert p.nothing_waiting()


async def test_members_join_and_leave_one_at_a_time(native: bool) -> None:
    peers = [await make_peer(i) for i in range(12)]
    plain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        g = fastpath.FastGroup([], native=native)
        peers[5].consumer.sendto = plain.sendto  # not an asyncio transport: Python sends it
        for p in peers:  # past the first array's room: it grows under the members
            g.add(p.consumer)
        assert len(g) == 12 and g.native_count == (11 if native else 0)
        tail = packet_tail(1)
        assert g.send(tail, 0x90, 0, 1, 1001) == 12
        sent_to(peers, tail, 1)
        # The middle, the last and the first leave; so does the one Python sent to.
        gone = [peers[6], peers[11], peers[0], peers[5]]
        for p in gone:
            assert g.remove(p.consumer)
        assert not g.remove(peers[6].consumer)  # not a member (any more): nothing changes
        left = [p for p in peers if p not in gone]
        assert len(g) == 8 and g.native_count == (8 if native else 0)
        assert sorted(map(id, g.consumers)) == sorted(id(p.consumer) for p in left)
        batch = [(packet_tail(k, 300), 0x90, 0, 2 + k, 1002 + k) for k in range(3)]
        assert g.send_batch(batch) == 3 * 8
        for p in left:
            for item in batch:
                check(p, p.receive(), 0x90, 0, item[3], item[4], item[0])
            assert p.nothing_waiting()
        for p in gone:
            assert p.nothing_waiting()
        # A rebuild from the members as they are now sends the same: nothing stale was kept.
        assert g.refresh(force=True) is native
        assert g.send(tail, 0x90, 0, 9, 1009) == 8
        sent_to(left, tail, 9)
        # Back in after leaving.
        g.add(peers[0].consumer)
        assert g.send(tail, 0x90, 0, 10, 1010) == 9
        sent_to([*left, peers[0]], tail, 10)
    finally:
        plain.close()
        close_all(peers)


@pytest.mark.skipif(not fastpath.COMPILED, reason=fastpath.reason())
@pytest.mark.usefixtures("sends")
async def test_a_leaver_keeps_its_send_errors_counted() -> None:
    peers = [await make_peer(i) for i in range(3)]
    try:
        bad = peers[1]
        bad.pair.remote_addr = ("255.255.255.255", 9)  # EACCES on every send
        bad.consumer.path._pair = None  # type: ignore[union-attr]
        bad.consumer.refresh_path()
        g = fastpath.FastGroup([p.consumer for p in peers], native=True)
        assert g.send(packet_tail(2), 0x90, 0, 1, 1001) == 2 and g.errors == 1
        assert g.remove(bad.consumer)
        assert g.errors == 1  # the group's total does not forget a member's failures
        assert g.send(packet_tail(2), 0x90, 0, 2, 1002) == 2 and g.errors == 1
    finally:
        close_all(peers)


async def test_the_producer_changes_its_groups_in_place() -> None:
    track = TrackInfo("pub/microphone", "pub", "audio", "microphone", "opus")
    producer = Producer(track, 48000, SfuConfig(), random.Random(2))
    src = Source(96, 0, 0)
    src.ssrc = 0xAAAA
    producer.bind_source(src)
    # One extension layout (same mid): one group, whatever joins and leaves.
    peers = [await make_peer(i, producer=producer, mid="a") for i in range(4)]
    try:
        cs = [p.consumer for p in peers]
        for c in cs[:3]:
            producer.add_consumer(c, 1.0)
        (group,) = producer.fast.values()
        assert len(group) == 3
        seq = 100

        def step(expect: list[Peer]) -> dict[int, int]:
            """One packet in; what each expected peer got: its output seq (by peer index)."""
            nonlocal seq
            seq += 1
            data, h = rtp(seq, seq * 960, b"opus" * 20)
            producer.on_rtp(data, h, 1.0 + seq / 50)
            out = {}
            for i, p in enumerate(peers):
                if p in expect:
                    got = p.receive()
                    assert got.endswith(data[12:]) and HDR.unpack_from(got)[4] == p.consumer.ssrc
                    out[i] = HDR.unpack_from(got)[2]
                assert p.nothing_waiting()
            return out

        step(peers[:3])
        producer.add_consumer(cs[3], 2.0)
        producer.pause(cs[1])
        assert producer.fast[cs[0].ext_key] is group and len(group) == 3  # in place
        step([peers[0], peers[2], peers[3]])
        producer.resume(cs[1], 3.0)  # resuming: joins at the next packet, continuing its seq
        assert len(group) == 3
        step(peers)
        producer.pause(cs[2])
        producer.resume(cs[2], 3.5)
        producer.remove_consumer(cs[2])  # left while resuming: never joins
        last = step([peers[0], peers[1], peers[3]])
        producer.set_enabled(False, 4.0)  # the floor moves away: nothing is sent
        step([])
        step([])
        producer.set_enabled(True, 4.1)  # back: every member continues where it stopped
        assert producer.fast[cs[0].ext_key] is group and len(group) == 3  # no leave/rejoin
        assert step([peers[0], peers[1], peers[3]]) == {i: (s + 1) & 0xFFFF
                                                        for i, s in last.items()}
        for c in (cs[0], cs[1], cs[3]):
            producer.remove_consumer(c)
        assert producer.fast == {} and not group.consumers  # the empty group is dropped
        step([])
        producer.add_consumer(cs[0], 5.0)
        step([peers[0]])
        producer.close()
        assert producer.fast == {} and not producer.consumers
        step([])
    finally:
        close_all(peers)

"""The fan-out's sockets: a subscriber's socket connected to its peer (the C path then names no
address) and a relayed (TURN) pair, which the C path cannot address. Real sockets and SRTP
sessions (helpers from test_fastpath.py)."""

from __future__ import annotations

import os
import socket
from types import SimpleNamespace

import pytest

from sfu import fastpath
from tests.unit.test_fastpath import (
    Peer,
    check,
    close_all,
    make_peer,
    packet_tail,
    receiver,
)


def connect(p: Peer, addr: tuple[str, int]) -> None:
    """Connect the peer's sending socket (DirectIngress does it to subscribers' sockets)."""
    dup = socket.socket(fileno=os.dup(p.transport.get_extra_info("socket").fileno()))
    dup.connect(addr)  # a dup is the same socket: connecting it connects the transport's
    dup.close()


@pytest.mark.skipif(not fastpath.COMPILED, reason=fastpath.reason())
@pytest.mark.usefixtures("sends")
async def test_a_socket_connected_to_its_consumer_is_sent_to_without_an_address() -> None:
    peers = [await make_peer(i) for i in range(3)]
    stranger = receiver()
    try:
        connect(peers[0], peers[0].rx.getsockname())  # to its own consumer: no address named
        connect(peers[1], stranger.getsockname())  # to someone else: the address is named
        g = fastpath.FastGroup([p.consumer for p in peers], native=True)
        assert g.native_count == 3 and g.connected_count == 1
        tail = packet_tail(4)
        assert g.send(tail, 0x90, 0x80, 11, 12) == 3
        # A frame's equal-sized packets: one GSO message on the connected socket too.
        batch = [(packet_tail(k, 600), 0x90, 0x80 if k == 3 else 0, 20 + k, 500)
                 for k in range(4)]
        gso = fastpath.gso_counters()["fanout_gso_messages"]
        assert g.send_batch(batch) == 3 * len(batch)
        for p in peers:
            check(p, p.receive(), 0x90, 0x80, 11, 12, tail)
            for item in batch:
                check(p, p.receive(), *item[1:], item[0])
            assert p.nothing_waiting()
        stranger.setblocking(False)
        with pytest.raises(BlockingIOError):
            stranger.recv(4096)  # a connected socket still sends where the entry says
        if fastpath.gso_enabled():
            assert fastpath.gso_counters()["fanout_gso_messages"] >= gso + 3
        assert g.errors == 0
        # Connected elsewhere later (a moved pair): the next rebuild names the address again.
        connect(peers[0], stranger.getsockname())
        assert g.refresh(force=True) and g.connected_count == 0
        assert g.send(tail, 0x90, 0, 13, 14) == 3
        check(peers[0], peers[0].receive(), 0x90, 0, 13, 14, tail)
    finally:
        stranger.close()
        close_all(peers)


@pytest.mark.skipif(not fastpath.COMPILED, reason=fastpath.reason())
@pytest.mark.usefixtures("sends")
async def test_a_relayed_pair_goes_through_python() -> None:
    # A server configured with a TURN server may nominate a relayed candidate: aioice's
    # TurnTransport has get_extra_info but no socket (nor is_closing). It used to raise here.
    from aioice.turn import TurnTransport

    peers = [await make_peer(i) for i in range(2)]
    try:
        relayed = TurnTransport(SimpleNamespace())  # type: ignore[arg-type]  # never connected
        peers[1].pair.protocol = SimpleNamespace(transport=relayed)
        peers[1].consumer.path._pair = None  # type: ignore[union-attr]
        peers[1].consumer.refresh_path()
        g = fastpath.FastGroup([p.consumer for p in peers], native=True)
        assert g.native_count == 1 and list(g._py) == [peers[1].consumer]
    finally:
        close_all(peers)

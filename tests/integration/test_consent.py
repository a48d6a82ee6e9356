"""ICE consent checks (RFC 7675) done by the SFU's own codec and schedule (sfu/core/stun.py,
sfu/core/consent.py, sfu/adapters/consent.py), with real aiortc peers whose aioice judges every
check and every answer.

aioice sends a consent check every CONSENT_INTERVAL (5 s) and gives the connection up after 6
unanswered ones; the interval is shortened here so that a few dozen checks fit a short test
(ours too, through the schedule's own interval). A wrong answer (signature, address,
transaction) would make the clients' aioice close their connections, and the media would stop.
"""

from __future__ import annotations

import asyncio

import aioice.ice
import pytest

from sfu.adapters import aiortc_tap as tap
from sfu.adapters.consent import consent_checks
from sfu.core import stun
from tests.integration.rtc import harness, wait_until

pytestmark = pytest.mark.integration


async def test_consent_checks_are_answered_and_the_clients_stay_connected(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.2)
    async with harness() as h:
        pub_pc, tracks, _ = await h.publish("chair")
        sub_pc, got = await h.subscribe("viewer", [t.id for t in tracks])
        video = got["chair/camera"]
        assert await asyncio.wait_for(video.wait_frames(5), 20)
        # Both the publisher (controlling: it offered) and the subscriber (controlled: the
        # server offered) send checks; well past six intervals, both are still connected.
        assert await wait_until(lambda: h.router.stats()["ingress_checks_answered"] >= 30, 20)
        assert pub_pc.connectionState == "connected"
        assert sub_pc.connectionState == "connected"
        frames = video.video.frames
        assert await asyncio.wait_for(video.wait_frames(frames + 10), 20)


async def test_checks_it_does_not_answer_still_reach_aioice() -> None:
    async with harness() as h:
        pub_pc, tracks, _ = await h.publish("chair")
        _, got = await h.subscribe("viewer", [t.id for t in tracks])
        assert await asyncio.wait_for(got["chair/camera"].wait_frames(3), 20)
        pub = h.router.publishers["chair"]
        assert pub.ingress is not None
        ice = pub.ingress._ice
        server_addr = pub.ingress._sock.getsockname()
        answers: asyncio.Queue[bytes] = asyncio.Queue()

        class Probe(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: object) -> None:
                answers.put_nowait(data)

        async def answer_to(transaction: bytes) -> bytes:
            # aioice also starts checks of its own towards a new address: skip those.
            while (reply := await asyncio.wait_for(answers.get(), 10))[8:20] != transaction:
                pass
            return reply

        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(Probe, local_addr=("127.0.0.1", 0))
        try:
            # A correctly signed check from an address that is not the nominated peer's:
            # aioice's business (a new candidate pair), never answered by the fast path.
            before = h.router.stats()["ingress_checks_answered"]
            check = stun.binding_request(b"probe-000001", f"{ice.local_username}:"
                                         f"{ice.remote_username}", 1, True, 5,
                                         ice.local_password)
            transport.sendto(check, server_addr)
            reply = await answer_to(b"probe-000001")
            assert reply[0:2] == b"\x01\x01"  # aioice answered it: success
            assert h.router.stats()["ingress_checks_answered"] == before
            # A badly signed one: aioice refuses it (401), the fast path does not answer.
            bad = stun.binding_request(b"probe-000002", f"{ice.local_username}:"
                                       f"{ice.remote_username}", 1, True, 5, "wrong")
            transport.sendto(bad, server_addr)
            reply = await answer_to(b"probe-000002")
            assert reply[0:2] == b"\x01\x11"  # an error response
            assert h.router.stats()["ingress_checks_answered"] == before
        finally:
            transport.close()
        assert pub_pc.connectionState == "connected"


async def test_our_checks_are_answered_and_a_peer_that_vanished_is_let_go() -> None:
    checks = consent_checks()
    checks.schedule.interval_s, checks.schedule.expiry_s = 0.2, 2.0
    async with harness() as h:
        _, tracks, _ = await h.publish("chair")
        sub_pc, got = await h.subscribe("viewer", [t.id for t in tracks])
        assert await asyncio.wait_for(got["chair/camera"].wait_frames(3), 20)
        # Both connections are checked by the schedule, and the clients' aioice answers.
        assert len(checks.schedule) == 2
        assert await wait_until(lambda: checks.schedule.answered >= 10, 10)
        assert checks.schedule.expired_total == 0
        server_pc = h.router.subscribers["viewer"].pc
        assert server_pc.connectionState == "connected"
        producer = h.router.producers["chair/camera"]
        assert len(producer.consumers) == 1
        # The viewer's network goes away: its socket closes under its (unaware) aioice, so
        # nothing answers any more. Within the expiry the server gives the connection up
        # and stops sending to it; the chair's connection is untouched.
        client_pair = tap.dtls_of(sub_pc).transport._connection._nominated[1]
        client_pair.protocol.transport.close()
        assert await wait_until(lambda: server_pc.connectionState in ("failed", "closed"), 15)
        assert checks.schedule.expired_total == 1
        assert await wait_until(lambda: not producer.consumers, 5)
        assert h.router.publishers["chair"].pc.connectionState == "connected"

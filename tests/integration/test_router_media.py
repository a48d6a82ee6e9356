"""The media path with real aiortc peers on loopback, straight into a Router."""

from __future__ import annotations

import asyncio
import threading
import time

import pylibsrtp
import pytest

from sfu import fastpath
from sfu.adapters import aiortc_tap as tap
from sfu.adapters import parking
from sfu.fastpath import ingress as fast_ingress
from tests.integration.rtc import harness, wait_until

pytestmark = pytest.mark.integration


async def test_chair_reaches_three_subscribers_with_correct_frames_and_audio() -> None:
    async with harness() as h:
        _, tracks, _ = await h.publish("chair")
        ids = [t.id for t in tracks]
        assert sorted(ids) == ["chair/camera", "chair/microphone"]
        subs = [await h.subscribe(f"commune-{i}", ids) for i in range(3)]
        for _, got in subs:
            assert await asyncio.wait_for(got["chair/camera"].wait_frames(45), 20)
        for _, got in subs:
            video = got["chair/camera"].video
            assert video.invalid == 0 and video.regressions == 0
            assert await wait_until(lambda g=got: abs(
                g["chair/microphone"].audio_frequency() - 440) < 15, 10)
        # Once all three have joined (each from a keyframe on), every packet goes to all three.
        s0 = h.router.stats()
        assert await asyncio.wait_for(subs[0][1]["chair/camera"].wait_frames(60), 20)
        stats = h.router.stats()
        forwarded = stats["packets_forwarded"] - s0["packets_forwarded"]
        arrived = stats["packets_in"] - s0["packets_in"]
        assert forwarded >= 3 * arrived - 6  # give or take a batch in flight at either end
        assert stats["malformed_rtp"] == 0
        # Every connection's socket is read by the SFU itself (DirectIngress), not aiortc.
        assert stats["ingress_direct"] == 4
        assert stats["ingress_rtp_packets"] >= stats["ingress_rtp_batches"] > 0
        # The subscribers' sockets (not the publisher's) are connected to their peers, so the
        # C fan-out names no address: 3 subscribers x 2 tracks.
        assert stats["ingress_connected"] == 3
        assert stats["fanout_connected"] == (6 if fastpath.AVAILABLE else 0)
        for sub in h.router.subscribers.values():
            sock = sub.ingress._sock  # type: ignore[union-attr]
            assert sock.getpeername() == sub.path.addr  # type: ignore[union-attr]


async def test_late_joiner_gets_a_picture_promptly_through_a_keyframe_request() -> None:
    async with harness() as h:
        _, tracks, _ = await h.publish("chair")
        ids = [t.id for t in tracks]
        _, first = await h.subscribe("early", ids)
        assert await asyncio.wait_for(first["chair/camera"].wait_frames(10), 20)
        # Past the throttle window, so the late joiner's own request goes out at once.
        await asyncio.sleep(1.1)
        plis = h.router.stats()["plis_sent"]
        keyframes = h.router.stats()["keyframes_seen"]
        t0 = time.monotonic()
        _, late = await h.subscribe("late", ids)
        assert await asyncio.wait_for(late["chair/camera"].wait_frames(1), 20)
        # aiortc's VP8 encoder sends keyframes only on request (its GOP is ~100 s): a picture
        # at all proves the PLI path; "promptly" is the issue's ~1 s with headroom for 2 cores.
        assert time.monotonic() - t0 < 3.0
        assert h.router.stats()["plis_sent"] > plis
        assert h.router.stats()["keyframes_seen"] > keyframes


async def test_nack_rtx_recovers_five_percent_loss_towards_one_subscriber() -> None:
    async with harness() as h:
        _, tracks, _ = await h.publish("chair")
        ids = [t.id for t in tracks]
        _, clean = await h.subscribe("clean", ids)
        _, lossy = await h.subscribe("lossy", ids, loss=0.05)
        assert await asyncio.wait_for(lossy["chair/camera"].wait_frames(90, max_invalid=0), 30)
        assert h.router.stats()["retransmitted"] > 0
        video = lossy["chair/camera"].video
        assert video.invalid == 0 and video.regressions == 0
        # Recovered, not skipped: the lossy subscriber decodes (almost) every frame.
        assert video.skipped <= 3, video
        assert clean["chair/camera"].video.valid > 0


async def test_sfu_nacks_losses_from_the_publisher() -> None:
    async with harness() as h:
        _, tracks, _ = await h.publish("chair", loss=0.05)
        ids = [t.id for t in tracks]
        _, got = await h.subscribe("viewer", ids)
        assert await asyncio.wait_for(got["chair/camera"].wait_frames(60), 30)
        stats = h.router.stats()
        assert stats["nacks_sent"] > 0
        assert stats["nack_recovered"] > 0
        assert got["chair/camera"].video.invalid == 0


async def test_publisher_reconnect_keeps_the_subscriber_stream_continuous() -> None:
    async with harness() as h:
        old_pc, tracks, video = await h.publish("chair")
        ids = [t.id for t in tracks]
        _, got = await h.subscribe("viewer", ids)
        receiver = got["chair/camera"]
        assert await asyncio.wait_for(receiver.wait_frames(20), 20)
        before = receiver.video.valid
        # The chair's network blips: a new connection publishes the same sources.
        _, again, _ = await h.publish("chair", start=video.frame_number + 30)
        await old_pc.close()
        assert again == []  # same track ids: nothing new for the room
        # The old connection may be cut mid-frame: aiortc's naive jitter buffer then decodes
        # that frame (and at worst the one depending on it) damaged, where Chrome's packet
        # buffer drops it. Known limit, see the issue note; never more than two.
        ok = await asyncio.wait_for(receiver.wait_frames(before + 30, max_invalid=2), 20)
        assert ok, receiver.video
        assert h.queue("viewer").empty()  # no renegotiation with the subscriber
        assert receiver.video.regressions == 0
        stats = await receiver.stats()
        assert stats["packets_lost"] < 20  # seq continued across the switch, no huge gap


@pytest.mark.parametrize("native", [
    pytest.param(True, marks=pytest.mark.skipif(not fast_ingress.NATIVE, reason="not built")),
    False])
async def test_garbage_rtp_and_rtcp_are_counted_and_others_keep_receiving(
        monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    # Both reads of the SFU's sockets: C (sfu/fastpath/ingress.c) and Python.
    monkeypatch.setattr(fast_ingress, "NATIVE", native)
    async with harness() as h:
        pub_pc, tracks, _ = await h.publish("chair")
        ids = [t.id for t in tracks]
        sub_pc, got = await h.subscribe("viewer", ids)
        assert await asyncio.wait_for(got["chair/camera"].wait_frames(10), 20)
        dtls = tap.dtls_of(pub_pc)
        assert dtls is not None
        garbage = [
            b"\x80\x60\x00\x01",  # truncated header
            b"\x90\x60\x00\x01\x00\x00\x00\x01\x00\x00\x00\x01\xbe\xde\x00\xff",  # ext past end
            b"\xa0\x60\x00\x01\x00\x00\x00\x01\x00\x00\x00\x01\x00",  # padding of zero
            b"\x80\x60" + b"\x00" * 10,  # unknown ssrc 0
            b"\x80\xc9\xff\xff\x00\x00\x00\x01",  # RR claiming 256 KiB
            b"\x81\xcd\x00\x02\x00\x00\x00\x01",  # NACK truncated
        ]
        before = h.router.stats()
        sent = 0
        for packet in garbage:
            try:  # SRTP-protected by the client, so they pass authentication at the server
                await dtls._send_rtp(packet)
                sent += 1
            except pylibsrtp.Error:
                pass  # libsrtp itself refuses to protect some of them
        assert sent >= 3
        # And unauthenticated junk straight at the server's UDP port.
        server_addr = dtls.transport._connection._nominated[1].remote_addr
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
        junks = (b"", b"\x80", b"\x80\x60" + bytes(range(200)), b"\x16\xfe\xfd" + b"x" * 50,
                 b"\x80\x60" + b"\x01" * 3000, b"\x80\xc9" + b"\x01" * 3000)  # > pylibsrtp's buffer
        for junk in junks:
            transport.sendto(junk, server_addr)
        # The same at the subscriber's connection, whose socket is parked: it must stay so.
        # Its socket is connected to the subscriber's address (DirectIngress `connect`), so
        # the kernel drops a stranger's junk; the subscriber's own address gets through.
        sub = h.router.subscribers["viewer"]
        assert sub.ingress is not None and sub.ingress.parked and sub.ingress.connected
        sub_errors, sub_read = sub.ingress.srtp_errors, sub.ingress.datagrams
        pair = tap.dtls_of(sub_pc).transport._connection._nominated[1]
        for junk in junks:  # from a stranger: never read
            transport.sendto(junk, pair.remote_addr)
        for junk in junks:  # from the subscriber's own socket, after the stranger's
            pair.protocol.transport.sendto(junk, pair.remote_addr)
        transport.close()
        assert await wait_until(lambda: sub.ingress.srtp_errors >= sub_errors + 3)
        assert sub.ingress.srtp_errors == sub_errors + 3  # 3 of the junks look like SRTP(CP)
        assert sub.ingress.parked and sub.ingress in parking.poller()._parked.values()
        assert await wait_until(lambda: sub.ingress.datagrams > sub_read + len(junks))  # RTCP
        assert await wait_until(lambda: (
            (s := h.router.stats())["malformed_rtp"] + s["unknown_ssrc"] + s["malformed_rtcp"]
            > before["malformed_rtp"] + before["unknown_ssrc"] + before["malformed_rtcp"]
        ))
        # The unauthenticated junk failed SRTP in the direct ingress, which kept reading.
        assert await wait_until(
            lambda: h.router.stats()["ingress_srtp_errors"] > before["ingress_srtp_errors"])
        frames = got["chair/camera"].video.valid
        assert await asyncio.wait_for(got["chair/camera"].wait_frames(frames + 15), 20)
        assert h.router.stats()["tap_errors"] == 0


async def test_no_decoder_or_encoder_runs_for_forwarding() -> None:
    async with harness() as h:
        _, tracks, _ = await h.publish("chair")
        ids = [t.id for t in tracks]
        # Subscribers that never read their tracks: only the server side could decode then.
        before = {t.name for t in threading.enumerate()}
        _, got = await h.subscribe("viewer", ids)
        assert await asyncio.wait_for(got["chair/camera"].wait_frames(10), 20)
        server_senders = [
            tr.sender
            for sub in h.router.subscribers.values()
            for tr in sub.pc.getTransceivers()
        ]
        server_receivers = [
            tr.receiver
            for pub in h.router.publishers.values()
            for tr in pub.pc.getTransceivers()
        ]
        assert server_senders and server_receivers
        # A claimed sender never starts aiortc's encoder loop; a claimed receiver never starts
        # its decoder thread.
        for sender in server_senders:
            assert sender._on_send is not None and sender._tap_sent
            assert sender._RTCRtpSender__encoder is None
            assert not getattr(sender, "_RTCRtpSender__rtp_task", None)
        for receiver in server_receivers:
            assert receiver._claimed
            assert receiver._RTCRtpReceiver__decoder_thread is None
        new_threads = {t.name for t in threading.enumerate()} - before
        # The client side here decodes (video-decoder/audio-decoder threads of the viewer), so
        # count threads against receivers: exactly the viewer's two, none for the server.
        assert sum(name.endswith("-decoder") for name in new_threads) <= 2


async def test_direct_ingress_and_timers_follow_the_connections() -> None:
    async with harness() as h:
        pub_pc, tracks, _ = await h.publish("chair")
        ids = [t.id for t in tracks]
        sub_pc, got = await h.subscribe("viewer", ids)
        assert await asyncio.wait_for(got["chair/camera"].wait_frames(10), 20)
        assert await wait_until(lambda: h.router.stats()["ingress_direct"] == 2)
        # While media flows the timers run from the ingress: the idle fallback stays quiet.
        s0 = h.router.stats()
        assert await asyncio.wait_for(got["chair/camera"].wait_frames(40), 20)
        s1 = h.router.stats()
        polls = s1["timer_polls"] - s0["timer_polls"]
        assert polls > 5 * (s1["timer_idle_wakeups"] - s0["timer_idle_wakeups"])
        ingress = [c.ingress for c in (*h.router.publishers.values(),
                                       *h.router.subscribers.values())]
        # The viewer leaves: its socket closes and the reader registered on it goes with it.
        await h.router.remove_participant("viewer")
        await sub_pc.close()
        assert await wait_until(lambda: h.router.stats()["ingress_direct"] == 1)
        assert sum(1 for i in ingress if i is not None and not i.active) == 1
        loop = asyncio.get_running_loop()
        live_fds = set(loop._selector.get_map())  # type: ignore[attr-defined]
        for i in ingress:
            assert i is not None
            assert (i._sock.fileno() in live_fds) == i.active  # a closed socket has fd -1
        # The chair stops sending: the timers go on (reports, speaker) on the idle fallback.
        await pub_pc.close()
        idle = h.router.stats()["timer_idle_wakeups"]
        assert await wait_until(lambda: h.router.stats()["timer_idle_wakeups"] >= idle + 3)

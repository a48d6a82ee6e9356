"""What sfu/adapters/aiortc_tap.py relies on inside aiortc, aioice and pylibsrtp.

If an upgrade moves any of these, this file fails first and says which one.
"""

from __future__ import annotations

import inspect
import re
from asyncio.selector_events import BaseSelectorEventLoop

import aioice.ice
import aiortc
import aiortc.rtcpeerconnection as pcm
import pylibsrtp
import pytest
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtcrtptransceiver import RTCRtpTransceiver
from pylibsrtp._binding import lib

from sfu.adapters import aiortc_tap as tap


def test_pinned_versions() -> None:
    assert aiortc.__version__ == tap.PINNED_AIORTC


def test_peer_connection_looks_classes_up_in_its_module() -> None:
    # install() rebinds these names; aiortc must construct through them.
    src = inspect.getsource(pcm)
    assert "RTCDtlsTransport(iceTransport" in src
    assert "RTCRtpReceiver(kind, dtlsTransport)" in src
    assert "RTCRtpSender(sender_track or kind, dtlsTransport)" in src


def test_dtls_transport_hooks_exist_with_expected_signatures() -> None:
    assert list(inspect.signature(RTCDtlsTransport._handle_rtp_data).parameters) == [
        "self", "data", "arrival_time_ms"]
    assert list(inspect.signature(RTCDtlsTransport._handle_rtcp_data).parameters) == [
        "self", "data"]
    src = inspect.getsource(RTCDtlsTransport._recv_next)
    assert "await self._handle_rtp_data(data, arrival_time_ms=arrival_time_ms)" in src
    assert "await self._handle_rtcp_data(data)" in src
    assert "self._tx_srtp = Session(tx_policy)" in inspect.getsource(RTCDtlsTransport._setup_srtp)


def test_receiver_and_sender_entry_points() -> None:
    # The decoder thread starts in receive(); the encoder and RTCP tasks in send().
    assert "decoder_worker" in inspect.getsource(RTCRtpReceiver.receive)
    assert "_run_rtp" in inspect.getsource(RTCRtpSender.send)
    assert "_run_rtcp" in inspect.getsource(RTCRtpSender.send)
    init = inspect.getsource(RTCRtpSender.__init__)
    assert "self._ssrc = " in init and "self._rtx_ssrc = " in init
    assert "self.__encoder" in inspect.getsource(RTCRtpSender)
    t = inspect.getsource(RTCRtpTransceiver.__init__)
    assert "self._codecs" in t and "self._headerExtensions" in t


def test_aioice_and_libsrtp_internals() -> None:
    assert callable(aioice.ice.get_host_addresses)
    assert "self._nominated" in inspect.getsource(aioice.ice.Connection.__init__)
    assert "protocol" in inspect.signature(aioice.ice.CandidatePair.__init__).parameters
    assert hasattr(lib, "srtp_protect")
    assert "self._srtp = " in inspect.getsource(pylibsrtp.Session.__init__)


def test_install_rebinds_and_is_idempotent() -> None:
    tap.install()
    tap.install()
    assert pcm.RTCDtlsTransport is tap.TapDtlsTransport
    assert pcm.RTCRtpReceiver is tap.TapRtpReceiver
    assert pcm.RTCRtpSender is tap.TapRtpSender


def test_receivers_make_their_bandwidth_estimator_on_first_use() -> None:
    # aiortc looks the estimator up in its module when a video receiver is made, and only
    # ever calls its add(): the lazy one stands in for it there.
    import aiortc.rtcrtpreceiver as rm
    from aiortc.rate import RemoteBitrateEstimator

    assert "RemoteBitrateEstimator()" in inspect.getsource(RTCRtpReceiver.__init__)
    uses = re.findall(r"__remote_bitrate_estimator\.(\w+)", inspect.getsource(RTCRtpReceiver))
    assert uses and set(uses) == {"add"}
    tap.install()
    assert rm.RemoteBitrateEstimator is tap.LazyBitrateEstimator
    lazy, real = tap.LazyBitrateEstimator(), RemoteBitrateEstimator()
    assert lazy.real is None  # nothing built until a packet comes
    # Then it estimates exactly as aiortc's: 10 s of 1,200-byte packets every 5 ms, which
    # make it send REMB estimates (abs-send-time: 262.144 units per ms).
    estimates = 0
    for i in range(2000):
        t = 1000 + 5 * i
        args = {"arrival_time_ms": t, "abs_send_time": (t * 262) & 0xFFFFFF,
                "payload_size": 1200, "ssrc": 1234}
        got = lazy.add(**args)
        assert got == real.add(**args)
        estimates += got is not None
    assert estimates >= 10 and isinstance(lazy.real, RemoteBitrateEstimator)


def test_set_ice_hosts_replaces_gathering() -> None:
    tap.set_ice_hosts(["127.0.0.1"])
    try:
        assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False) == ["127.0.0.1"]
    finally:
        tap.set_ice_hosts([])
    assert "127.0.0.1" not in aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)


def test_what_direct_ingress_reads_and_replaces() -> None:
    # DirectIngress takes the datagrams that aiortc's DTLS task would get from aioice's queue:
    # it must see the same demux (RFC 7983 first byte) and the same unprotect calls.
    src = inspect.getsource(RTCDtlsTransport._recv_next)
    assert "first_byte > 127 and first_byte < 192 and self._rx_srtp" in src
    assert "self._rx_srtp.unprotect_rtcp(data)" in src and "self._rx_srtp.unprotect(data)" in src
    assert "self._rx_srtp = Session(rx_policy)" in inspect.getsource(
        RTCDtlsTransport._setup_srtp)
    # aioice hands every datagram to StunProtocol.datagram_received (STUN, else data).
    dr = inspect.getsource(aioice.ice.StunProtocol.datagram_received)
    assert "stun.parse_message(data)" in dr and "self.receiver.data_received" in dr
    assert "self.transport = " in inspect.getsource(aioice.ice.StunProtocol.connection_made)
    assert issubclass(pylibsrtp.Error, Exception)


async def test_selector_transports_can_be_taken_over() -> None:
    # _add_reader() on the transport's fd replaces asyncio's reader with ours (no
    # pause_reading(): datagram transports lack it before Python 3.11.3), and the transport's
    # close() removes ours. Checked on a live datagram transport.
    import asyncio
    import socket

    class Counting(asyncio.DatagramProtocol):
        received = 0

        def datagram_received(self, data: bytes, addr: object) -> None:
            self.received += 1

    loop = asyncio.get_running_loop()
    assert isinstance(loop, BaseSelectorEventLoop)
    transport, protocol = await loop.create_datagram_endpoint(
        Counting, local_addr=("127.0.0.1", 0))
    sock = transport._sock  # type: ignore[attr-defined]
    assert isinstance(sock, socket.socket)
    fd = sock.fileno()
    got = asyncio.Event()
    loop._add_reader(fd, got.set)  # type: ignore[attr-defined]
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.sendto(b"x", sock.getsockname())
    await asyncio.wait_for(got.wait(), 5)
    assert protocol.received == 0  # asyncio's reader is gone: the datagram waits for us
    assert sock.recv(16) == b"x"
    # Parking (sfu/adapters/parking.py) takes our reader off and puts it back.
    assert loop._remove_reader(fd) and fd not in loop._selector.get_map()  # type: ignore[attr-defined]
    loop._add_reader(fd, got.set)  # type: ignore[attr-defined]
    transport.close()  # removes the fd's reader at once (the socket closes a callback later)
    assert fd not in loop._selector.get_map()  # type: ignore[attr-defined]
    tx.close()


def test_setup_srtp_builds_policies_from_its_module() -> None:
    # TapDtlsTransport._setup_srtp swaps the module's `Policy` for the call to cut the
    # sending window: aiortc must build both policies through that name, synchronously.
    import aiortc.rtcdtlstransport as dtls_module

    src = inspect.getsource(RTCDtlsTransport._setup_srtp)
    assert dtls_module.Policy is pylibsrtp.Policy
    assert "tx_policy = Policy(" in src and "tx_policy.window_size = 1024" in src
    assert "rx_policy = Policy(" in src and "rx_policy.window_size = 1024" in src
    assert not inspect.iscoroutinefunction(RTCDtlsTransport._setup_srtp)


def _rtp(seq: int) -> bytes:
    return bytes([0x80, 111]) + seq.to_bytes(2, "big") + bytes(4) + (4242).to_bytes(4, "big") \
        + bytes(40)


async def test_claimed_transport_sends_with_a_small_replay_window() -> None:
    # Two real aiortc peers on loopback; the first one's transport is claimed, as the
    # router's are, the second is stock aiortc (a client).
    import asyncio

    import aiortc.rtcdtlstransport as dtls_module
    from aiortc import RTCConfiguration, RTCPeerConnection

    tap.install()
    tap.set_ice_hosts(["127.0.0.1"])
    server, client = (RTCPeerConnection(RTCConfiguration(iceServers=[])) for _ in range(2))
    try:
        client.addTransceiver("audio", direction="sendonly")
        await client.setLocalDescription(await client.createOffer())
        await server.setRemoteDescription(client.localDescription)
        await server.setLocalDescription(await server.createAnswer())
        tap.claim_transport(server, None, lambda data: None)
        await client.setRemoteDescription(server.localDescription)
        async with asyncio.timeout(20):
            while server.connectionState != "connected" or client.connectionState != "connected":
                await asyncio.sleep(0.02)  # aiortc offers no event for both sides at once
        assert dtls_module.Policy is pylibsrtp.Policy  # the swap did not outlive the call
        ours, theirs = tap.dtls_of(server), tap.dtls_of(client)
        # Sending: a repeat within 128 packets is protected, one 200 behind is refused.
        ours._tx_srtp.protect(_rtp(5000))
        ours._tx_srtp.protect(_rtp(4900))
        try:
            ours._tx_srtp.protect(_rtp(4800))
            raise AssertionError("a packet 200 behind was protected: window still 1,024")
        except pylibsrtp.Error:
            pass
        # Stock aiortc (unclaimed) keeps 1,024 for sending, and so do we for receiving.
        theirs._tx_srtp.protect(_rtp(6000))
        late = theirs._tx_srtp.protect(_rtp(5800))
        assert ours._rx_srtp.unprotect(theirs._tx_srtp.protect(_rtp(6001)))[2:4] == b"\x17\x71"
        assert ours._rx_srtp.unprotect(late)[2:4] == (5800).to_bytes(2, "big")
    finally:
        await server.close()
        await client.close()
        tap.set_ice_hosts([])


async def test_peer_connections_share_the_process_certificate(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # aiortc asks RTCCertificate (looked up in its module) for a certificate per connection,
    # and its DTLS transport uses only the certificate's fingerprints and SSL context.
    from aiortc.rtcdtlstransport import SRTP_PROFILES, certificate_digest

    assert "RTCCertificate.generateCertificate()" in inspect.getsource(pcm.RTCPeerConnection)
    dtls_src = inspect.getsource(RTCDtlsTransport)
    assert "certificate.getFingerprints()" in dtls_src
    assert "certificate._create_ssl_context(" in dtls_src
    tap.install()
    assert pcm.RTCCertificate is tap.SharedCertificate
    now = [1000.0]
    monkeypatch.setattr(tap, "_clock", lambda: now[0])
    monkeypatch.setattr(tap.SharedCertificate, "_current", None)
    pcs = [pcm.RTCPeerConnection() for _ in range(3)]
    try:
        certs = [pc._RTCPeerConnection__certificates[0] for pc in pcs]  # type: ignore[attr-defined]
        cert = certs[0]
        assert all(c is cert for c in certs)  # one key and certificate for all three
        assert [(f.algorithm, f.value) for f in cert.getFingerprints()] == [
            (f.algorithm, certificate_digest(cert._cert, f.algorithm))
            for f in cert.getFingerprints()]
        assert cert._create_ssl_context(SRTP_PROFILES) is cert._create_ssl_context(SRTP_PROFILES)
        # A day later, new connections get a new certificate; the old one's stay as they are.
        now[0] += tap.CERT_ROTATE_S
        later = pcm.RTCPeerConnection()
        pcs.append(later)
        fresh = later._RTCPeerConnection__certificates[0]  # type: ignore[attr-defined]
        assert fresh is not cert and fresh.getFingerprints() != cert.getFingerprints()
    finally:
        for pc in pcs:
            await pc.close()

"""The aiortc adapter: with direct_ingress.py beside it, all that touches aiortc/aioice/pylibsrtp
internals.

Pinned: aiortc==1.16.0, aioice 0.13, pylibsrtp 1.0. tests/contract/test_aiortc_contract.py checks
every name used here, so an upgrade that moves them fails there, loudly, not in production.

What it does, and why:
- aioice drops 127.0.0.1 from host candidates: `set_ice_hosts` replaces its gathering.
- aiortc's receiver always depacketizes and decodes, and its sender always encodes. An SFU must do
  neither, so subclasses of RTCDtlsTransport / RTCRtpReceiver / RTCRtpSender are installed once
  per process (`install`). They behave exactly like aiortc's until the SFU *claims* them; a
  claimed transport hands decrypted RTP/RTCP bytes to our taps, a claimed receiver starts no
  decoder thread, a claimed sender starts no encoder or RTCP task (the router sends SRs).
- Egress bypasses aiortc's coroutine send path: `SrtpPath` protects into one preallocated buffer
  with libsrtp and calls sendto on the nominated ICE pair directly.
- Ingress bypasses aioice's queue and aiortc's DTLS task once SRTP is up: `DirectIngress`
  (sfu/adapters/direct_ingress.py) reads the nominated pair's socket itself (asyncio internals
  too: our reader in place of the transport's on its fd), several datagrams per wake-up; parks
  idle publishers' sockets; and does ICE consent with our codec in place of aioice's
  per-connection task.
- aiortc builds a bandwidth estimator for every video receiver it makes (1,000 rate buckets,
  ~1.6 ms), and a server's receivers, claimed, never see a packet: it is made on first use.
- aiortc makes a key, a certificate, its fingerprints and an OpenSSL context per connection:
  the process shares one DTLS certificate instead (`SharedCertificate`), as Janus and
  mediasoup's workers do, made again once a day.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import aioice.candidate
import aioice.ice
import aiortc.rtcdtlstransport as _dtls_module
import aiortc.rtcpeerconnection as _pc_module
import aiortc.rtcrtpreceiver as _receiver_module
import pylibsrtp
from aiortc import RTCPeerConnection, RTCRtpTransceiver
from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsFingerprint, RTCDtlsTransport
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL
from pylibsrtp._binding import ffi, lib

PINNED_AIORTC = "1.16.0"
log = logging.getLogger(__name__)

RtpTap = Callable[[bytes, int], None]  # (decrypted RTP, arrival ms)
RtcpTap = Callable[[bytes], None]  # decrypted compound RTCP
RtpBatchTap = Callable[[list[bytes], int], None]  # decrypted RTP that arrived together, ms

# ---------------------------------------------------------------------------- ICE addresses

_ice_hosts: tuple[str, ...] = ()
_original_get_host_addresses = aioice.ice.get_host_addresses


def _get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    if _ice_hosts:
        return list(_ice_hosts)
    return _original_get_host_addresses(use_ipv4, use_ipv6)


def set_ice_hosts(hosts: tuple[str, ...] | list[str]) -> None:
    """Addresses ICE offers as host candidates, replacing what aioice gathers.

    aioice drops 127.0.0.1 when it enumerates interfaces, so on loopback nothing would connect.
    Empty restores aioice's own gathering. Process-wide, as aioice's gathering is.
    """
    global _ice_hosts
    _ice_hosts = tuple(hosts)
    aioice.ice.get_host_addresses = _get_host_addresses


# ---------------------------------------------------------------------------- subclasses


TX_WINDOW = 128
"""Packets a sending SRTP stream remembers (aiortc: 1,024, as for receiving). libsrtp shifts
that bitmap on every packet it protects (`bitvector_left_shift`, ~2 % of the server's CPU with
50 subscribers at 1,024); 128 costs a fourth of the words. The one thing a smaller window
refuses: re-sending, without RTX, a packet more than 128 behind the newest (~1 s of video),
which no NACK answer should do anyway (aiortc's own senders keep 128 packets for it)."""


class _TxWindowPolicy(pylibsrtp.Policy):
    """aiortc's policy with the sending window cut to TX_WINDOW (receiving unchanged)."""

    @property  # type: ignore[override]
    def window_size(self) -> int:
        return int(self._policy.window_size)

    @window_size.setter
    def window_size(self, size: int) -> None:
        if self._policy.ssrc.type == pylibsrtp.Policy.SSRC_ANY_OUTBOUND:
            size = min(size, TX_WINDOW)
        self._policy.window_size = size


class TapDtlsTransport(RTCDtlsTransport):
    """Hands decrypted RTP/RTCP to taps when claimed (and sends with a TX_WINDOW-packet SRTP
    replay window then); aiortc's routing otherwise."""

    _rtp_tap: RtpTap | None = None
    _rtcp_tap: RtcpTap | None = None
    tap_errors = 0

    def _setup_srtp(self) -> None:
        if self._rtcp_tap is None:  # not claimed: stock aiortc
            super()._setup_srtp()
            return
        # aiortc builds its policies from its module's `Policy`: ours for this call only (it
        # is synchronous, so no other transport can see the swap).
        _dtls_module.Policy = _TxWindowPolicy
        try:
            super()._setup_srtp()
        finally:
            _dtls_module.Policy = pylibsrtp.Policy

    async def _handle_rtp_data(self, data: bytes, arrival_time_ms: int) -> None:
        tap = self._rtp_tap
        if tap is None:
            await super()._handle_rtp_data(data, arrival_time_ms)
            return
        try:
            tap(data, arrival_time_ms)
        except Exception:  # an exception here would close the whole transport
            _tap_failed("RTP tap failed (packet dropped)")

    async def _handle_rtcp_data(self, data: bytes) -> None:
        tap = self._rtcp_tap
        if tap is None:
            await super()._handle_rtcp_data(data)
            return
        try:
            tap(data)
        except Exception:
            _tap_failed("RTCP tap failed (packet dropped)")


def _tap_failed(what: str) -> None:
    """Count a tap's exception process-wide (router stats `tap_errors`); log the first few."""
    TapDtlsTransport.tap_errors += 1
    if TapDtlsTransport.tap_errors <= 10:
        log.exception(what)


class TapRtpReceiver(RTCRtpReceiver):
    """A claimed receiver never starts aiortc's decoder thread, jitter buffer or RTCP task."""

    _claimed = False

    async def receive(self, parameters):  # type: ignore[no-untyped-def]
        if not self._claimed:
            await super().receive(parameters)

    async def stop(self) -> None:
        if not self._claimed:
            await super().stop()

    def _handle_disconnect(self) -> None:
        if not self._claimed:
            super()._handle_disconnect()


class TapRtpSender(RTCRtpSender):
    """A claimed sender runs no encoder and no RTCP task; `send` only reports readiness."""

    _on_send: Callable[[object], None] | None = None
    _tap_sent = False

    async def send(self, parameters):  # type: ignore[no-untyped-def]
        if self._on_send is None:
            await super().send(parameters)
            return
        if not self._tap_sent:  # aiortc calls send() again on every renegotiation
            self._tap_sent = True
            try:
                self._on_send(parameters)
            except Exception:  # raising here would abort aiortc's connect for other slots
                log.exception("sending slot could not be set up")

    async def stop(self) -> None:
        if self._on_send is None:
            await super().stop()


_installed = False


_RemoteBitrateEstimator = _receiver_module.RemoteBitrateEstimator


class LazyBitrateEstimator:
    """aiortc's RemoteBitrateEstimator (REMB), made at its first packet instead of with the
    receiver. Every video m-line has a receiver, a subscriber's sendonly ones too: building
    the estimator's 1,000 rate buckets was ~1.6 ms of a bridge's join per video section, for
    receivers the SFU claims and that never see a packet. Unclaimed receivers (the headless
    client's, in the same process in tests) estimate as before, from their first packet."""

    __slots__ = ("real",)

    def __init__(self) -> None:
        self.real: object | None = None

    def add(self, *args: object, **kwargs: object) -> object:
        if self.real is None:
            self.real = _RemoteBitrateEstimator()
        return self.real.add(*args, **kwargs)  # type: ignore[attr-defined]


CERT_ROTATE_S = 86_400.0
"""A new shared certificate for connections made after this long (aiortc's last 30 days)."""
_clock: Callable[[], float] = time.monotonic  # (tests make certificates age)


class SharedCertificate(RTCCertificate):
    """The process's one DTLS certificate, which every new peer connection asks for through
    `generateCertificate`. Made once instead of per connection: the EC key and the signed
    certificate, its three fingerprints (for every SDP written) and the OpenSSL context its
    handshakes start from. Each connection still has its own DTLS session and SRTP keys; the
    shared context keeps no session cache, so none is resumed across connections."""

    _current: tuple[float, SharedCertificate] | None = None

    def __init__(self, key: ec.EllipticCurvePrivateKey, cert: object) -> None:
        super().__init__(key, cert)  # type: ignore[arg-type]
        self._fingerprints = super().getFingerprints()
        self._contexts: dict[tuple[bytes, ...], SSL.Context] = {}

    @classmethod
    def generateCertificate(cls) -> SharedCertificate:  # type: ignore[override]
        now = _clock()
        current = SharedCertificate._current
        if current is None or now - current[0] >= CERT_ROTATE_S:
            key = ec.generate_private_key(ec.SECP256R1())
            current = SharedCertificate._current = (
                now, SharedCertificate(key, _dtls_module.generate_certificate(key)))
        return current[1]

    def getFingerprints(self) -> list[RTCDtlsFingerprint]:
        return list(self._fingerprints)

    def _create_ssl_context(self, srtp_profiles: list) -> SSL.Context:  # type: ignore[type-arg]
        key = tuple(p.openssl_profile for p in srtp_profiles)
        ctx = self._contexts.get(key)
        if ctx is None:
            ctx = self._contexts[key] = super()._create_ssl_context(srtp_profiles)
            ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
        return ctx


def install() -> None:
    """Make new peer connections use the tap subclasses (idempotent, process-wide)."""
    global _installed
    if _installed:
        return
    _pc_module.RTCDtlsTransport = TapDtlsTransport  # type: ignore[misc]
    _pc_module.RTCRtpReceiver = TapRtpReceiver  # type: ignore[misc]
    _pc_module.RTCRtpSender = TapRtpSender  # type: ignore[misc]
    _receiver_module.RemoteBitrateEstimator = LazyBitrateEstimator  # type: ignore[misc]
    _pc_module.RTCCertificate = SharedCertificate  # type: ignore[misc]
    _installed = True


# ---------------------------------------------------------------------------- claiming


def dtls_of(pc: RTCPeerConnection) -> RTCDtlsTransport | None:
    for tr in pc.getTransceivers():
        return tr.receiver.transport
    return None


def claim_transport(pc: RTCPeerConnection, rtp_tap: RtpTap | None, rtcp_tap: RtcpTap) -> None:
    """Route the connection's decrypted RTP/RTCP to the taps (BUNDLE: one transport).

    Call right after setLocalDescription: DTLS starts in a task scheduled by it, so no packet
    can arrive before the taps are in place.
    """
    dtls = dtls_of(pc)
    if not isinstance(dtls, TapDtlsTransport):
        raise RuntimeError("aiortc_tap.install() was not called before creating this connection")
    dtls._rtp_tap = rtp_tap
    dtls._rtcp_tap = rtcp_tap


def claim_receiver(transceiver: RTCRtpTransceiver) -> None:
    receiver = transceiver.receiver
    if not isinstance(receiver, TapRtpReceiver):
        raise RuntimeError("aiortc_tap.install() was not called before creating this connection")
    receiver._claimed = True


def claim_sender(transceiver: RTCRtpTransceiver, on_send: Callable[[object], None]) -> None:
    """`on_send(parameters)` runs once, when DTLS is up and the slot can carry packets."""
    sender = transceiver.sender
    if not isinstance(sender, TapRtpSender):
        raise RuntimeError("aiortc_tap.install() was not called before creating this connection")
    sender._on_send = on_send


# ---------------------------------------------------------------------------- negotiated facts


@dataclass(frozen=True)
class Negotiated:
    """What one m-line negotiated, read off aiortc's transceiver."""

    mid: str
    kind: str
    codec: RTCRtpCodecParameters  # the primary codec (first negotiated)
    rtx_payload_type: int  # 0 if RTX was not negotiated for it
    extensions: dict[str, int]  # uri -> id
    payload_types: frozenset[int]  # every media (non-RTX) payload type of the m-line


def negotiated(transceiver: RTCRtpTransceiver) -> Negotiated:
    codecs = list(transceiver._codecs)
    media = [c for c in codecs if c.mimeType.lower().split("/")[1] != "rtx"]
    if not media:
        raise ValueError("no codec negotiated")
    primary = media[0]
    rtx_pt = 0
    for c in codecs:
        if c.mimeType.lower().endswith("/rtx") and c.parameters.get("apt") == primary.payloadType:
            rtx_pt = c.payloadType or 0
    return Negotiated(
        mid=transceiver.mid or "",
        kind=transceiver.kind,
        codec=primary,
        rtx_payload_type=rtx_pt,
        extensions={x.uri: x.id for x in transceiver._headerExtensions},
        payload_types=frozenset(c.payloadType for c in media if c.payloadType is not None),
    )


def sender_ssrcs(transceiver: RTCRtpTransceiver) -> tuple[int, int]:
    """(media ssrc, rtx ssrc) that aiortc put in the SDP for this sending slot."""
    return transceiver.sender._ssrc, transceiver.sender._rtx_ssrc


# ---------------------------------------------------------------------------- egress

# One buffer for the whole process: the event loop is single-threaded and each packet is
# protected and handed to the kernel before the next one is written.
BUF = ffi.new("char[]", 2048)
BUF_VIEW = memoryview(ffi.buffer(BUF))
LENP = ffi.new("int *")
srtp_protect = lib.srtp_protect
MAX_RTP = 1500 - 16  # room for the SRTP auth tag


class SrtpPath:
    """Protect-and-send to one peer over its nominated ICE pair, no coroutine per packet."""

    __slots__ = ("_connection", "_pair", "addr", "ctx", "sendto", "session")

    def __init__(self, dtls: RTCDtlsTransport) -> None:
        self.session = dtls._tx_srtp
        self.ctx = self.session._srtp[0]
        self._connection = dtls.transport._connection
        self._pair = None
        self.sendto: Callable[[object, object], None] = _drop
        self.addr: tuple[str, int] = ("127.0.0.1", 0)
        self.refresh()

    def refresh(self) -> bool:
        """Follow the nominated pair (it changes on ICE restart). False if none."""
        pair = self._connection._nominated.get(1)
        if pair is None:
            self.sendto = _drop
            return False
        if pair is not self._pair:
            self._pair = pair
            self.sendto = pair.protocol.transport.sendto
            self.addr = pair.remote_addr
        return True

    def send_rtp(self, packet: bytes) -> bool:
        """Protect and send one RTP packet (the rare path: retransmissions)."""
        n = len(packet)
        if n > MAX_RTP:
            return False
        BUF_VIEW[:n] = packet
        LENP[0] = n
        if srtp_protect(self.ctx, BUF, LENP) != 0:
            return False
        self.sendto(BUF_VIEW[: LENP[0]], self.addr)
        return True

    def send_rtcp(self, packet: bytes) -> bool:
        try:
            data = self.session.protect_rtcp(packet)
        except Exception:  # pylibsrtp raises its own Error type; nothing to do but drop
            return False
        self.sendto(data, self.addr)
        return True


def _drop(data: object, addr: object) -> None:
    return None

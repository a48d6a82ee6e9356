"""The one module that touches aiortc/aioice/pylibsrtp internals.

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
- Ingress bypasses aioice's queue and aiortc's DTLS task once SRTP is up: `DirectIngress` reads
  the nominated pair's socket itself (asyncio internals too: our reader in place of the
  transport's on its fd), several datagrams per wake-up; parks idle publishers' sockets; and does
  ICE consent with our codec in place of aioice's per-connection task.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from asyncio.selector_events import BaseSelectorEventLoop
from collections.abc import Callable
from dataclasses import dataclass

import aioice.candidate
import aioice.ice
import aiortc.rtcpeerconnection as _pc_module
import pylibsrtp
from aiortc import RTCPeerConnection, RTCRtpTransceiver
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender
from pylibsrtp._binding import ffi, lib

from sfu.adapters import consent, parking
from sfu.core import stun

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


class TapDtlsTransport(RTCDtlsTransport):
    """Hands decrypted RTP/RTCP to taps when claimed; aiortc's routing otherwise."""

    _rtp_tap: RtpTap | None = None
    _rtcp_tap: RtcpTap | None = None
    tap_errors = 0

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


def install() -> None:
    """Make new peer connections use the tap subclasses (idempotent, process-wide)."""
    global _installed
    if _installed:
        return
    _pc_module.RTCDtlsTransport = TapDtlsTransport  # type: ignore[misc]
    _pc_module.RTCRtpReceiver = TapRtpReceiver  # type: ignore[misc]
    _pc_module.RTCRtpSender = TapRtpSender  # type: ignore[misc]
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


# ---------------------------------------------------------------------------- ingress

RECV_SIZE = 65536  # loopback's MTU: what asyncio would hand over, never truncated
_PRFLX_PRIORITY = aioice.candidate.candidate_priority(1, "prflx")  # as aioice's own checks
_closing: set[asyncio.Future[None]] = set()  # connections closed on consent expiry
_taken: weakref.WeakSet[object] = weakref.WeakSet()  # transports a DirectIngress reads


class DirectIngress:
    """Reads a connected peer's nominated ICE socket itself, SRTP and all.

    aiortc's receive path costs, per datagram: an event-loop wake-up, a STUN parse that fails
    by exception, an asyncio.Queue hand-off to the DTLS task and a coroutine chain. Here one
    wake-up drains everything the socket holds (up to MAX_BATCH datagrams): SRTP/SRTCP is
    unprotected and handed over at once, RTP as one batch per wake-up (so the fan-out can send a
    subscriber its packets together); STUN and DTLS go to aioice's protocol exactly as asyncio
    would hand them (consent checks, DTLS alerts keep working).

    Only for selector event loops (asyncio's default): our reader replaces the transport's on
    its fd, so asyncio's own close() removes it with the socket.

    With `park_after_s`, a connection that brought no RTP for that long is parked
    (sfu/adapters/parking.py): read by one shared poller ten times a second instead of waking
    the loop per RTCP report or consent check; its next RTP unparks it.
    """

    MAX_BATCH = 32  # bounds the time one busy publisher holds the loop

    __slots__ = ("_ice", "_last_rtp", "_loop", "_on_rtcp", "_on_rtp_batch", "_park_after",
                 "_peer", "_protocol", "_rx", "_sock", "_transport", "batches", "checks_answered",
                 "datagrams", "parked", "parks", "rtp", "srtp_errors", "wakeups")

    def __init__(self, rx: object, protocol: object, transport: object, sock: object,
                 on_rtp_batch: RtpBatchTap, on_rtcp: RtcpTap, park_after_s: float,
                 ice: aioice.ice.Connection, peer: tuple[str, int]) -> None:
        self._ice, self._peer = ice, peer  # the nominated pair's remote address
        self._rx, self._protocol, self._transport, self._sock = rx, protocol, transport, sock
        self._on_rtp_batch, self._on_rtcp = on_rtp_batch, on_rtcp
        self._loop: BaseSelectorEventLoop = asyncio.get_running_loop()  # type: ignore[assignment]
        self._park_after, self._last_rtp, self.parked = park_after_s, time.monotonic(), False
        self.batches = self.datagrams = self.rtp = self.srtp_errors = self.wakeups = 0
        self.parks = self.checks_answered = 0

    @classmethod
    def attach(cls, dtls: RTCDtlsTransport, on_rtp_batch: RtpBatchTap, on_rtcp: RtcpTap,
               park_after_s: float = 0.0, park_now: bool = False) -> DirectIngress | None:
        """Take over the nominated pair's socket; None (aiortc's path stays) when not possible:
        DTLS not up yet, no nominated pair, a closing transport, a non-selector event loop.
        `park_after_s` > 0: park the socket after that long without RTP (see the class);
        `park_now`: parked at once (a subscriber's, which brings RTCP only)."""
        loop = asyncio.get_running_loop()
        rx = getattr(dtls, "_rx_srtp", None)
        if not isinstance(loop, BaseSelectorEventLoop) or rx is None or dtls.state != "connected":
            return None
        ice = dtls.transport._connection
        pair = ice._nominated.get(1)
        if pair is None or pair.protocol is None:
            return None
        protocol = pair.protocol
        transport = getattr(protocol, "transport", None)
        sock = getattr(transport, "_sock", None)
        if sock is None or transport.is_closing() or transport in _taken:
            return None  # closing, or another ingress took it already
        self = cls(rx, protocol, transport, sock, on_rtp_batch, on_rtcp, park_after_s, ice,
                   pair.remote_addr)
        # Our consent checks replace aioice's task (one coroutine and timer per connection).
        task = ice._query_consent_task
        if task is not None and not task.done():
            task.cancel()
            consent.consent_checks().add(self)
        _taken.add(transport)  # not pause_reading(): datagram transports lack it in 3.11.2
        if park_now:
            self._park()
        else:
            loop._add_reader(sock.fileno(), self._readable)
        return self

    def _readable(self) -> None:
        self.wakeups += 1  # the loop woke for this socket (read_parked is not counted)
        self._read()

    def _read(self) -> None:
        recvfrom = self._sock.recvfrom
        rx = self._rx
        batch: list[bytes] = []
        n = 0
        while n < self.MAX_BATCH:
            try:
                data, addr = recvfrom(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # e.g. ICMP port unreachable: as asyncio would report it
                self._protocol.error_received(exc)
                break
            n += 1
            if len(data) > 1 and 127 < data[0] < 192:  # SRTP/SRTCP (RFC 7983 demux)
                try:
                    if 191 < data[1] < 224:  # RTCP packet types 192-223 (RFC 5761)
                        self._tap_rtcp(rx.unprotect_rtcp(data))
                    else:
                        batch.append(rx.unprotect(data))
                except pylibsrtp.Error:  # replayed, forged or garbled: dropped, counted
                    self.srtp_errors += 1
            elif not (data[0] < 4 and self._answer_check(data, addr)):
                self._protocol.datagram_received(data, addr)  # STUN, DTLS: aioice/aiortc
        self.datagrams += n
        if batch:
            now = time.monotonic()
            self._last_rtp = now
            self.batches += 1
            self.rtp += len(batch)
            try:
                self._on_rtp_batch(batch, int(now * 1000))
            except Exception:  # one bad batch must not unregister the reader
                _tap_failed("RTP batch tap failed (batch dropped)")
            if self.parked:
                self._unpark()
        elif (self._park_after > 0 and not self.parked
              and time.monotonic() - self._last_rtp > self._park_after):
            self._park()

    # ICE consent (sfu/core/stun.py, sfu/adapters/consent.py), the checks of a connected pair
    # only; anything else (nomination, a new address, a role conflict, a bad signature, others'
    # transactions) goes to aioice, which answers or refuses it.
    def _answer_check(self, data: bytes, addr: tuple[str, int]) -> bool:
        ice = self._ice
        msg = stun.parse(data)
        if msg is not None and msg.kind == stun.BINDING_SUCCESS:
            return (addr == self._peer and msg.authentic(ice.remote_password)
                    and consent.consent_checks().answer(self, msg.transaction))
        if (msg is None or msg.use_candidate
                or addr != self._peer or ice._closing
                or msg.username != f"{ice.local_username}:{ice.remote_username}"
                or (msg.controlling if ice.ice_controlling else msg.controlled)
                or not msg.authentic(ice.local_password)):
            return False
        self._transport.sendto(stun.binding_success(msg.transaction, addr, ice.local_password),
                               addr)
        self.checks_answered += 1
        return True

    def send_check(self, transaction: bytes) -> None:
        ice = self._ice
        if self._transport.is_closing() or ice._closing:
            consent.consent_checks().remove(self)
            return
        self._transport.sendto(stun.binding_request(
            transaction, f"{ice.remote_username}:{ice.local_username}", _PRFLX_PRIORITY,
            ice.ice_controlling, ice._tie_breaker, ice.remote_password), self._peer)

    def expire(self) -> None:
        log.info("ICE consent expired for %s: closing the connection", self._peer)
        task = asyncio.ensure_future(self._ice.close())  # aiortc then sees the ICE close
        _closing.add(task)
        task.add_done_callback(_closing.discard)

    # The parked state (sfu/adapters/parking.py). The fd is the transport's, so only while
    # the transport is open may our reader go back on the loop: a closed socket's number may
    # already belong to another one.
    def _park(self) -> None:
        if self._transport.is_closing():
            return
        fd = self._sock.fileno()
        self._loop._remove_reader(fd)
        parking.poller().add(fd, self)
        self.parked = True
        self.parks += 1

    def _unpark(self) -> None:
        self.parked = False
        fd = self._sock.fileno()
        parking.poller().remove(fd, self)
        if fd >= 0 and not self._transport.is_closing():
            self._loop._add_reader(fd, self._readable)

    def read_parked(self) -> bool:
        if self._transport.is_closing():
            self.parked = False
            return False
        self._read()
        return True

    def _tap_rtcp(self, data: bytes) -> None:
        try:
            self._on_rtcp(data)
        except Exception:
            _tap_failed("RTCP tap failed (packet dropped)")

    @property
    def active(self) -> bool:
        return not self._transport.is_closing()

"""DirectIngress: the SFU reads a connected peer's socket itself, SRTP and all.

Part of the aiortc adapter (sfu/adapters/aiortc_tap.py, same pin, same contract tests): it
reaches into aioice's nominated pair, asyncio's selector loop and pylibsrtp's sessions. The
read itself is in C where the helper was built (sfu/fastpath/ingress.c: unprotect in place,
report-only RTCP reduced to senders' clocks and report blocks), in Python otherwise; the
same tests run both.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import weakref
from asyncio.selector_events import BaseSelectorEventLoop
from collections.abc import Callable

import aioice.candidate
import aioice.ice
import pylibsrtp
from aiortc.rtcdtlstransport import RTCDtlsTransport

from sfu.adapters import consent, parking
from sfu.adapters.aiortc_tap import RtcpTap, RtpBatchTap, _tap_failed
from sfu.core import stun
from sfu.fastpath import ingress as fast

log = logging.getLogger(__name__)

# What the C read reduced report-only RTCP to: SRs' (ssrc, NTP, RTP time), report blocks
# [ssrc, fraction lost, jitter, LSR, DLSR].
ReportsTap = Callable[[list[tuple[int, int, int]], list[list[int]]], None]

RECV_SIZE = 65536  # loopback's MTU: what asyncio would hand over, never truncated
_PRFLX_PRIORITY = aioice.candidate.candidate_priority(1, "prflx")  # as aioice's own checks
_closing: set[asyncio.Future[None]] = set()  # connections closed on consent expiry
_taken: weakref.WeakSet[object] = weakref.WeakSet()  # transports a DirectIngress reads
CONNECT: bool = os.environ.get("HOINGHI_CONNECT", "1").strip() != "0"
"""Whether `attach(connect=True)` connects the socket (HOINGHI_CONNECT=0: benchmarks' A/B)."""


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

    With `connect`, the socket is connected to the nominated pair's remote address (a
    subscriber's: the fan-out's busiest sockets). The fan-out then sends without naming the
    address and the kernel reuses the route it cached at connect() instead of a lookup per
    datagram (sfu/fastpath/fanout.c: ~1.5 us of ~8 per datagram on a VM's loopback). What
    that costs: the kernel now drops datagrams from any other address, which only checks of
    pairs that lost the nomination would bring: the pair is fixed from here on anyway (our
    consent answers only its peer, and aiortc does not restart ICE). HOINGHI_CONNECT=0: never
    (benchmarks' A/B).
    """

    MAX_BATCH = 32  # bounds the time one busy publisher holds the loop

    __slots__ = ("_ctx", "_ice", "_last_rtp", "_loop", "_on_reports", "_on_rtcp", "_on_rtp_batch",
                 "_park_after", "_peer", "_protocol", "_rx", "_sock", "_transport", "batches",
                 "checks_answered", "connected", "datagrams", "parked", "parks", "reports", "rtp",
                 "srtp_errors", "wakeups")

    def __init__(self, rx: object, protocol: object, transport: object, sock: object,
                 on_rtp_batch: RtpBatchTap, on_rtcp: RtcpTap, park_after_s: float,
                 ice: aioice.ice.Connection, peer: tuple[str, int],
                 on_reports: ReportsTap | None = None) -> None:
        self._ice, self._peer = ice, peer  # the nominated pair's remote address
        self._rx, self._protocol, self._transport, self._sock = rx, protocol, transport, sock
        self._on_rtp_batch, self._on_rtcp, self._on_reports = on_rtp_batch, on_rtcp, on_reports
        self._ctx = fast.context_of(rx) if fast.NATIVE else 0  # 0: the Python read
        self._loop: BaseSelectorEventLoop = asyncio.get_running_loop()  # type: ignore[assignment]
        self._park_after, self._last_rtp, self.parked = park_after_s, time.monotonic(), False
        self.batches = self.datagrams = self.rtp = self.srtp_errors = self.wakeups = 0
        self.parks = self.checks_answered = 0
        self.connected = False  # the socket is connected to the peer (`connect`)
        self.reports = 0  # SRs and report blocks the C read took out of RTCP (no Python parse)

    @classmethod
    def attach(cls, dtls: RTCDtlsTransport, on_rtp_batch: RtpBatchTap, on_rtcp: RtcpTap,
               park_after_s: float = 0.0, park_now: bool = False,
               on_reports: ReportsTap | None = None, connect: bool = False
               ) -> DirectIngress | None:
        """Take over the nominated pair's socket; None (aiortc's path stays) when not possible:
        DTLS not up yet, no nominated pair, a closing transport, a non-selector event loop.
        `park_after_s` > 0: park the socket after that long without RTP (see the class);
        `park_now`: parked at once (a subscriber's, which brings RTCP only). `on_reports`
        takes the senders' clocks and report blocks of RTCP that the C read reduced to them
        (none: dropped); every other RTCP goes to `on_rtcp`, decrypted. `connect`: connect the
        socket to the peer (see the class; off with HOINGHI_CONNECT=0)."""
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
                   pair.remote_addr, on_reports)
        # Our consent checks replace aioice's task (one coroutine and timer per connection).
        task = ice._query_consent_task
        if task is not None and not task.done():
            task.cancel()
            consent.consent_checks().add(self)
        _taken.add(transport)  # not pause_reading(): datagram transports lack it in 3.11.2
        if connect and CONNECT:
            self._connect()
        if park_now:
            self._park()
        else:
            loop._add_reader(sock.fileno(), self._readable)
        return self

    def _connect(self) -> None:
        try:
            self._sock.connect(self._peer)
        except OSError as exc:  # e.g. an address the socket's family cannot reach: unconnected
            log.info("not connecting the socket to %s: %s", self._peer, exc)
            return
        self.connected = True

    def _readable(self) -> None:
        self.wakeups += 1  # the loop woke for this socket (read_parked is not counted)
        self._read()

    def _read(self) -> None:
        batch, n = self._read_c() if self._ctx else self._read_py()
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

    def _read_py(self) -> tuple[list[bytes], int]:
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
                # Replayed, forged or garbled (ValueError: longer than pylibsrtp's buffer):
                # dropped, counted.
                except (pylibsrtp.Error, ValueError):
                    self.srtp_errors += 1
            else:
                self._other(data, addr)
        return batch, n

    def _read_c(self) -> tuple[list[bytes], int]:
        fd = self._sock.fileno()  # -1 once closed: never a stale number that another reuses
        if fd < 0:
            return [], 0
        n, recs = fast.read(fd, self._ctx, self.MAX_BATCH)
        out = fast.OUT
        batch: list[bytes] = []
        blocks: list[list[int]] = []
        senders: list[tuple[int, int, int]] = []
        for i in range(0, len(recs), fast.FIELDS):
            kind, off, end = recs[i], recs[i + 1], recs[i + 1] + recs[i + 2]
            if kind == fast.REC_RTP:
                batch.append(bytes(out[off:end]))
            elif kind == fast.REC_BLOCK:
                blocks.append(recs[i + 3 : i + 8])
            elif kind == fast.REC_SENDER:
                senders.append((recs[i + 3], (recs[i + 4] << 32) | recs[i + 5], recs[i + 6]))
            elif kind == fast.REC_RTCP:
                self._tap_rtcp(bytes(out[off:end]))
            elif kind == fast.REC_RAW:
                self._other(bytes(out[off:end]), fast.raw_address(*recs[i + 3 : i + 7], end))
            elif kind == fast.REC_SRTP_ERROR:
                self.srtp_errors += 1
            else:  # REC_OS_ERROR, e.g. ICMP port unreachable: as asyncio would report it
                self._protocol.error_received(OSError(recs[i + 3], os.strerror(recs[i + 3])))
        if (blocks or senders) and self._on_reports is not None:
            self.reports += len(blocks) + len(senders)
            try:
                self._on_reports(senders, blocks)
            except Exception:
                _tap_failed("RTCP report tap failed (reports dropped)")
        return batch, n

    def _other(self, data: bytes, addr: tuple) -> None:  # type: ignore[type-arg]
        """Not SRTP: a consent check we answer, else STUN or DTLS for aioice/aiortc."""
        if not (data and data[0] < 4 and self._answer_check(data, addr)):
            self._protocol.datagram_received(data, addr)

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


def ingress_counters(readers: list[DirectIngress]) -> dict[str, int]:
    """Router stats: connections whose socket the SFU reads itself, and what it read."""
    return {
        "ingress_direct": len(readers),
        "ingress_datagrams": sum(i.datagrams for i in readers),
        "ingress_rtp_batches": sum(i.batches for i in readers),
        "ingress_rtp_packets": sum(i.rtp for i in readers),
        "ingress_wakeups": sum(i.wakeups for i in readers),
        "ingress_srtp_errors": sum(i.srtp_errors for i in readers),
        "ingress_reports": sum(i.reports for i in readers),  # SRs, RR blocks read in C
        "ingress_parked": sum(i.parked for i in readers),  # idle publishers, subscribers
        "ingress_parks": sum(i.parks for i in readers),
        "ingress_checks_answered": sum(i.checks_answered for i in readers),  # peers' checks
        "ingress_connected": sum(i.connected for i in readers),  # subscribers' sockets
    }

"""The pipe between workers, the I/O half (frames and placement: sfu/core/pipe.py).

One UDP socket on 127.0.0.1 per conference per worker end, read in batches from the event
loop's reader callback (no datagram-protocol object per packet). The home's Producers write
each input packet once per edge through a TrackPipe; an edge's Producers send their feedback
(PLI, NACK) back through a PipePath, which stands where a publisher's SrtpPath would.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable

from sfu.core.pipe import RTCP, RTP, frame_header, sr_frame

Addr = tuple[str, int]
Datagrams = list[tuple[bytes, Addr]]
_BATCH = 64  # datagrams per reader callback; the rest wait for the next one
_BUFFER = 4 << 20  # a keyframe burst for many tracks must fit while the reader is busy


class PipeSocket:
    """A bound, non-blocking UDP socket whose datagrams go to `on_batch` in batches."""

    def __init__(self, on_batch: Callable[[Datagrams], None]) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, opt, _BUFFER)
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.port: int = sock.getsockname()[1]
        self.sendto = sock.sendto
        self._on_batch = on_batch
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._readable)
        self.closed = False
        self.send_errors = 0

    def send(self, data: bytes, addr: Addr) -> bool:
        try:
            self.sendto(data, addr)
            return True
        except OSError:  # buffer full (BlockingIOError) or the other end's socket is gone
            self.send_errors += 1
            return False

    def _readable(self) -> None:
        batch: Datagrams = []
        recvfrom = self.sock.recvfrom
        for _ in range(_BATCH):
            try:
                batch.append(recvfrom(2048))
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue  # an ICMP error reported on the socket: nothing to read from it
        if batch:
            self._on_batch(batch)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self.sock.fileno())
        self.sock.close()


class TrackPipe:
    """Home side: one track's packets to one edge (a Producer holds one per edge)."""

    __slots__ = ("_prefix", "addr", "generation", "no", "sock")

    def __init__(self, sock: PipeSocket, addr: Addr, no: int, generation: int) -> None:
        self.sock, self.addr, self.no = sock, addr, no
        self.generation = generation
        self._prefix = frame_header(RTP, generation, no)

    def rtp(self, data: bytes) -> None:
        try:
            self.sock.sendto(self._prefix + data, self.addr)
        except OSError:
            self.sock.send_errors += 1

    def sender_report(self, ntp: int, rtp_ts: int) -> None:
        self.sock.send(sr_frame(self.generation, self.no, ntp, rtp_ts), self.addr)

    def rebind(self, generation: int) -> None:
        """A new publisher connection feeds the track: the edge re-syncs on this mark."""
        self.generation = generation
        self._prefix = frame_header(RTP, generation, self.no)


class PipePath:
    """Edge side: where an edge Producer's RTCP to "its publisher" goes (the home)."""

    __slots__ = ("addr", "no", "sock")

    def __init__(self, sock: PipeSocket, addr: Addr, no: int) -> None:
        self.sock, self.addr, self.no = sock, addr, no

    def send_rtcp(self, packet: bytes) -> bool:
        return self.sock.send(frame_header(RTCP, 0, self.no) + packet, self.addr)

    def refresh(self) -> bool:
        return True  # a fixed loopback address: nothing to follow

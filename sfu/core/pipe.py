"""The pipe between two workers of one conference (mediasoup's PipeTransport), sans I/O.

When a conference outgrows one worker, its *home* worker (signaling, floor, the publishers'
connections) sends each published track once to every *edge* worker that serves some of its
subscribers, and the edges fan it out. On the pipe each datagram is a 4-byte frame header and
a payload, unencrypted (loopback only, between our own processes):

    byte 0  kind:  RTP (home → edge: the publisher's decrypted packet as the home received it),
                   SR (home → edge: the publisher's NTP/RTP sender-report pair, for lip sync),
                   RTCP (edge → home: PLI / NACK about a track, as an RTCP compound)
    byte 1  generation: bumped by the home when a new publisher connection feeds the track, so
                   the edge re-syncs its consumers even if the new source kept the old SSRC
    2..3    track number, chosen by the home per room

Placement of subscribers (`place_subscriber`) is also here: pure, tested with plain numbers.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

RTP, SR, RTCP = 0, 1, 2
HEADER = struct.Struct("!BBH")
SR_BODY = struct.Struct("!QI")  # NTP timestamp, RTP timestamp
MAX_TRACKS = 0xFFFF


class PipeError(ValueError):
    """A datagram that is not a pipe frame."""


def frame_header(kind: int, generation: int, track_no: int) -> bytes:
    return HEADER.pack(kind, generation & 0xFF, track_no)


def parse_frame(data: bytes) -> tuple[int, int, int, memoryview]:
    """(kind, generation, track number, payload). Raises PipeError."""
    if len(data) < HEADER.size:
        raise PipeError("short frame")
    kind, generation, no = HEADER.unpack_from(data)
    if kind not in (RTP, SR, RTCP):
        raise PipeError(f"unknown frame kind {kind}")
    payload = memoryview(data)[HEADER.size :]
    if kind == SR and len(payload) != SR_BODY.size:
        raise PipeError("bad sender-report frame")
    return kind, generation, no, payload


def sr_frame(generation: int, track_no: int, ntp: int, rtp_ts: int) -> bytes:
    return frame_header(SR, generation, track_no) + SR_BODY.pack(ntp, rtp_ts & 0xFFFFFFFF)


def parse_sr(payload: memoryview) -> tuple[int, int]:
    ntp, rtp_ts = SR_BODY.unpack(payload)
    return ntp, rtp_ts


def place_subscriber(local: int, span_after: int, edges: Mapping[int, int],
                     first: int = 0) -> int | None:
    """Where a new subscriber of a conference gets its connection.

    `local`: subscribers of this conference on its home worker; `edges`: worker index -> the
    subscribers its home has placed there (all of its conferences), for the workers that are
    up. The home keeps the first `span_after` (no pipe at all for a conference that fits one
    worker); after that each new one goes to the edge with the fewest. Ties go to the first
    edge at or after `first` in index order, cyclically: given a per-conference `first`,
    conferences that spill at once start on different edges instead of all on the lowest.
    None: keep it on the home (also when no other worker is up, or spanning is off with
    span_after <= 0).
    """
    if span_after <= 0 or local < span_after or not edges:
        return None
    order = sorted(edges)
    start = first % len(order)
    rank = {i: (pos - start) % len(order) for pos, i in enumerate(order)}
    return min(order, key=lambda i: (edges[i], rank[i]))

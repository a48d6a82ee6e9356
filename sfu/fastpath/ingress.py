"""A connection's socket read in C (ingress.c), when the helper was built.

`read(fd, ctx, max_datagrams)` drains up to that many datagrams: SRTP and SRTCP unprotected in
place with the connection's libsrtp context, RTCP that only reports reduced to its senders'
clocks (SR) and report blocks, the rest described for Python (sfu/adapters/direct_ingress.py:
DirectIngress, which keeps the pure-Python read as the fallback, selected by the same tests
with `NATIVE`).

The records and the data they point at live in two process-wide buffers (one event loop reads
at a time, and each result is consumed before the next read), so a read allocates nothing but
the bytes objects Python keeps.
"""

from __future__ import annotations

import os
import socket

from pylibsrtp._binding import ffi as _srtp_ffi
from pylibsrtp._binding import lib as _srtp_lib

from sfu.fastpath import AVAILABLE, _ffi, _lib

REC_RTP, REC_RTCP, REC_BLOCK, REC_RAW, REC_SRTP_ERROR, REC_OS_ERROR, REC_SENDER = range(1, 8)
FIELDS = 8  # uint32 per record: kind, off, len, a, b, c, d, e
MAX_RECORDS = 1024
OUT_SIZE = 32 * 2048 + 2 * 65552  # a batch of media packets, or two of the largest datagrams


def _unprotect_is_libsrtp2() -> bool:
    # As for srtp_protect (sfu/fastpath/__init__.py): libsrtp 3 changed the signatures.
    return all([a.cname for a in _srtp_ffi.typeof(getattr(_srtp_lib, name)).args][1:]
               == ["void *", "int *"] for name in ("srtp_unprotect", "srtp_unprotect_rtcp"))


NATIVE: bool = (AVAILABLE and _unprotect_is_libsrtp2()
                and os.environ.get("HOINGHI_FASTREAD", "1").strip() != "0")
"""New DirectIngress readers use `read`; HOINGHI_FASTREAD=0 (benchmarks' A/B) or
HOINGHI_FASTPATH=0 keeps the Python read, and the tests switch it here."""

if _lib is not None and _unprotect_is_libsrtp2():
    assert _lib.fp_rec_size() == 4 * FIELDS
    _OUT = _ffi.new("unsigned char[]", OUT_SIZE)
    OUT = memoryview(_ffi.buffer(_OUT))
    _RECS = _ffi.new("fp_rec[]", MAX_RECORDS)
    _RECS_VIEW = memoryview(_ffi.buffer(_RECS)).cast("I")
    _GOT = _ffi.new("int *")
    _UNPROTECT = int(_srtp_ffi.cast("uintptr_t", _srtp_ffi.addressof(_srtp_lib, "srtp_unprotect")))
    _UNPROTECT_RTCP = int(_srtp_ffi.cast(
        "uintptr_t", _srtp_ffi.addressof(_srtp_lib, "srtp_unprotect_rtcp")))
    _fp_read = _lib.fp_read
else:
    _OUT = _RECS = _GOT = _fp_read = None
    OUT = _RECS_VIEW = memoryview(b"")
    _UNPROTECT = _UNPROTECT_RTCP = 0


def context_of(session: object) -> int:
    """The libsrtp context (srtp_t) of a pylibsrtp Session, as `read` takes it."""
    return int(_srtp_ffi.cast("uintptr_t", session._srtp[0]))  # type: ignore[attr-defined]


def read(fd: int, ctx: int, max_datagrams: int) -> tuple[int, list[int]]:
    """(datagrams read, records as a flat list of FIELDS ints each). Data of RTP, RTCP and RAW
    records is at OUT[off:off + len], valid until the next read."""
    n = _fp_read(fd, ctx, _UNPROTECT, _UNPROTECT_RTCP, _OUT, OUT_SIZE, _RECS, MAX_RECORDS,
                 max_datagrams, _GOT)
    return _GOT[0], _RECS_VIEW[: n * FIELDS].tolist()


def raw_address(family: int, port: int, flowinfo: int, scope_id: int,
                at: int) -> tuple[str, int] | tuple[str, int, int, int]:
    """A RAW record's sender as asyncio's recvfrom gives it (IPv6: a 4-tuple)."""
    if family == socket.AF_INET6:
        return socket.inet_ntop(family, OUT[at : at + 16]), port, flowinfo, scope_id
    return socket.inet_ntop(socket.AF_INET, OUT[at : at + 4]), port


def scan_rtcp(data: bytes) -> tuple[list[tuple[int, int, int]], list[tuple[int, ...]]] | None:
    """ingress.c's RTCP classifier alone (tests): the SRs' (ssrc, NTP, RTP time) and the report
    blocks (ssrc, fraction lost, jitter, LSR, DLSR) of a compound the C read takes whole, None
    when Python must see it."""
    recs = _ffi.new("fp_rec[]", 64)
    n = _lib.fp_rtcp_scan(data, len(data), recs, 64)
    if n < 0:
        return None
    rows = [recs[i] for i in range(n)]
    return ([(r.a, (r.b << 32) | r.c, r.d) for r in rows if r.kind == REC_SENDER],
            [(r.a, r.b, r.c, r.d, r.e) for r in rows if r.kind == REC_BLOCK])

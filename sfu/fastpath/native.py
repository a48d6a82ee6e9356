"""What the C module (`sfu.fastpath._fanout`, built by cffi at install) offers the process: whether
it is there and usable, its limits, and its process-wide switches and counters (UDP GSO, the
io_uring its sends go through). `sfu.fastpath` re-exports all of it; FastGroup and the ingress
use the handles below.
"""

from __future__ import annotations

import os
import struct

from pylibsrtp._binding import ffi as _srtp_ffi
from pylibsrtp._binding import lib as _srtp_lib

try:
    from sfu.fastpath import _fanout  # type: ignore[attr-defined]
except ImportError:  # not built: no compiler at install, or a non-POSIX platform
    _fanout = None


def _protect_is_libsrtp2() -> bool:
    # libsrtp 3 changed srtp_protect to (ctx, in, in_len, out, out_len*, mki): calling that
    # through the libsrtp 2 pointer type would corrupt memory, so check before ever doing it.
    t = _srtp_ffi.typeof(_srtp_lib.srtp_protect)
    return [a.cname for a in t.args][1:] == ["void *", "int *"]


COMPILED: bool = _fanout is not None
"""The C module was built and imports."""
DISABLED: bool = os.environ.get("HOINGHI_FASTPATH", "1").strip() == "0"
"""HOINGHI_FASTPATH=0: groups use the Python path unless asked for C explicitly."""
AVAILABLE: bool = COMPILED and _protect_is_libsrtp2() and not DISABLED
"""New groups use the C path by default."""

GSO_DEFAULT: bool = os.environ.get("HOINGHI_GSO", "1").strip() != "0"
"""UDP GSO for runs of equal-sized packets (fanout.c) unless HOINGHI_GSO=0."""
URING_DEFAULT: bool = os.environ.get("HOINGHI_URING", "1").strip() != "0"
"""The C path's sends through one io_uring (uring.c), where the kernel allows it, unless
HOINGHI_URING=0."""

if COMPILED and _protect_is_libsrtp2():
    _ffi, _lib = _fanout.ffi, _fanout.lib
    _fp_send = _lib.fp_send
    _fp_send_batch = _lib.fp_send_batch
    # UDP GSO for a subscriber's runs of equal-sized packets (fanout.c); HOINGHI_GSO=0: off.
    _lib.fp_set_gso(int(GSO_DEFAULT))
    _GSO_OUT = _ffi.new("uint64_t[3]")
    _lib.fp_set_uring(int(URING_DEFAULT))
    _URING_OUT = _ffi.new("int64_t[4]")
    _PROTECT: int = int(_srtp_ffi.cast("uintptr_t", _srtp_ffi.addressof(_srtp_lib, "srtp_protect")))
    MAX_PACKET: int = _lib.fp_max_packet()
    MAX_BATCH: int = _lib.fp_max_batch()
    # The batch's packet descriptors, packed by struct into one C array (fp_pkt in fanout.c).
    _PKTS = _ffi.new("fp_pkt[]", MAX_BATCH)
    _PKTS_VIEW = _ffi.buffer(_PKTS)
    _ENTRY_SIZE: int = _ffi.sizeof("fp_entry")
else:
    _ffi = _lib = _fp_send = _fp_send_batch = None
    _PROTECT = 0
    MAX_PACKET = 2048 - 144  # same bound as fanout.c: the buffer less libsrtp's max trailer
    MAX_BATCH = 32
    _PKTS = _PKTS_VIEW = _GSO_OUT = _URING_OUT = None
    _ENTRY_SIZE = 0
_pack_pkt = struct.Struct("=IIBBHI").pack_into  # fp_pkt: off, len, b0, mark, seq, ts

def set_gso(on: bool) -> bool:
    """Process-wide GSO switch (benchmarks' A/B); returns whether GSO is on now (never where
    the C path is not built or the kernel headers lacked UDP_SEGMENT)."""
    if _lib is None:
        return False
    _lib.fp_set_gso(int(on))
    return gso_enabled()


def gso_enabled() -> bool:
    """Whether the C path sends runs as GSO messages now."""
    return _lib is not None and bool(_lib.fp_gso_stats(_GSO_OUT))


def gso_counters() -> dict[str, int]:
    """Process-wide: GSO messages the C path sent, the packets they carried, and the paths
    that refused GSO (sent plain from then on). Zeros when GSO is off or the C path is not
    built."""
    if _lib is None:
        return dict.fromkeys(_GSO_KEYS, 0)
    _lib.fp_gso_stats(_GSO_OUT)
    return {key: int(_GSO_OUT[i]) for i, key in enumerate(_GSO_KEYS)}


_GSO_KEYS = ("fanout_gso_messages", "fanout_gso_packets", "fanout_gso_refused")


def set_uring(on: bool) -> bool:
    """Process-wide io_uring switch (benchmarks' A/B, tests); returns whether the C path's
    sends go through the ring now: the ring is made here if it was not yet, and never where
    the C path is not built or the kernel refuses io_uring (`uring_counters()` says why)."""
    if _lib is None:
        return False
    _lib.fp_set_uring(int(on))
    return bool(on and _lib.fp_uring_up())


def uring_available() -> bool:
    """Whether this process's kernel lets the C path send through an io_uring (the ring is
    made if it was not yet; the switch is left as it is)."""
    return _lib is not None and bool(_lib.fp_uring_available())


def uring_counters() -> dict[str, int]:
    """Process-wide: the ring's state (1 up, 0 not made yet, -errno where the kernel refused
    it: sends are plain syscalls then), io_uring_enter() calls, the sends they carried, and
    sends lost to a failed io_uring_enter() (the ring is given up then). Zeros when the C path
    is not built."""
    if _lib is None:
        return dict.fromkeys(_URING_KEYS, 0)
    _lib.fp_uring_stats(_URING_OUT)
    return {key: int(_URING_OUT[i]) for i, key in enumerate(_URING_KEYS)}


_URING_KEYS = ("fanout_uring_state", "fanout_uring_enters", "fanout_uring_sends",
               "fanout_uring_lost")


def reason() -> str:
    """Why the C path is or is not the default, for logs and /stats."""
    if not COMPILED:
        return "C helper not built (no compiler at install?): pure-Python fan-out"
    if not _protect_is_libsrtp2():
        return "pylibsrtp's srtp_protect is not libsrtp 2's: pure-Python fan-out"
    if DISABLED:
        return "HOINGHI_FASTPATH=0: pure-Python fan-out"
    return "C fan-out helper"


def send_mode() -> str:
    """How the C path hands datagrams to the kernel in this process, for the server's log."""
    if _lib is None:
        return "one syscall per send (Python path)"
    if not uring_available():
        err = -uring_counters()["fanout_uring_state"]
        return f"one syscall per send: io_uring refused here ({os.strerror(err)})"
    if not URING_DEFAULT:
        return "one syscall per send: HOINGHI_URING=0"
    return "io_uring, up to 64 sends per syscall"

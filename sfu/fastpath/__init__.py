"""The per-subscriber half of the fan-out, in C when it was built, in Python otherwise.

`Producer._fanout` does, per forwarded packet and per group of consumers sharing a
header-extension layout: build the tail (extension block + payload) once, then for every consumer
write its 12-byte header, SRTP-protect, sendto. `FastGroup.send` is that inner loop:

- C path (`sfu.fastpath._fanout`, built by cffi at install, see setup.py): one call per packet
  and group, or per batch (`send_batch`: each consumer's packets in one sendmmsg, runs of
  equal-sized ones as one UDP GSO message where the kernel and path take it). It calls
  pylibsrtp's own `srtp_protect` through a function pointer (pylibsrtp links libsrtp
  statically; the contexts aiortc made live there) and sends with MSG_DONTWAIT on a dup of
  each connection's UDP socket, naming no address where the socket is connected to the
  consumer's (the kernel then reuses the route cached at connect()). The sends are queued on
  one io_uring per process and submitted 64 at a time (uring.c, fanout_ring.c: one syscall
  instead of one per consumer), where the kernel allows io_uring and HOINGHI_URING is not 0;
  else each is a syscall. A full socket buffer or any send error drops that one packet and is
  counted (`errors`), never raised. The module's loading and process-wide switches: native.py.
- Python path: the loop `Producer._fanout` has always run, kept as the fallback and selected by
  the same tests. Used when the module was not built, when `HOINGHI_FASTPATH=0`, and inside a C
  group for the odd consumer the C path cannot address (no socket yet, a scoped IPv6 address).

The entries are a snapshot of each consumer (ctx, socket, address, pt, ssrc, offsets). Whoever
changes those calls `update_offsets()` (seq/ts offsets after a re-sync) or `refresh()` (the
ICE pair moved) or builds a new group (membership changed).

Why a dup of the socket and not its fd: when a subscriber's connection closes, asyncio closes
the socket and the kernel may hand the same fd number to the next socket opened, a websocket
say; a stale fd would then write SRTP into it. The dup keeps the old socket alive until the last
group holding it is dropped; it is shared per transport, so one extra fd per connection.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pylibsrtp._binding import ffi as _srtp_ffi

from sfu.adapters.aiortc_tap import BUF, BUF_VIEW, LENP, srtp_protect
from sfu.core.rtp import HEADER
from sfu.fastpath.native import (  # noqa: F401  (re-exported: the package's interface)
    _ENTRY_SIZE,
    _PKTS,
    _PKTS_VIEW,
    _PROTECT,
    AVAILABLE,
    COMPILED,
    DISABLED,
    GSO_DEFAULT,
    MAX_BATCH,
    MAX_PACKET,
    URING_DEFAULT,
    _ffi,
    _fp_send,
    _fp_send_batch,
    _lib,
    _pack_pkt,
    _protect_is_libsrtp2,
    gso_counters,
    gso_enabled,
    reason,
    send_mode,
    set_gso,
    set_uring,
    uring_available,
    uring_counters,
)

if TYPE_CHECKING:
    from sfu.consumer import Consumer

_pack_into = HEADER.pack_into

Batch = list[tuple[bytes, int, int, int, int]]
"""Packets for one group, in order: (tail, b0, mark, seq, ts) each, as `send` takes them."""


# ------------------------------------------------------------------------------ sockets


class _SocketFd:
    """A dup of one transport's socket, shared by every group sending on it; closed with the
    last group that holds it (see the module docstring for why a dup)."""

    __slots__ = ("__weakref__", "family", "fd", "transport")

    def __init__(self, transport: Any, sock: Any) -> None:
        self.transport = transport  # keeps id(transport), the cache key, unique while we live
        self.family: int = sock.family
        self.fd: int = os.dup(sock.fileno())

    def __del__(self) -> None:
        # OSError: closed already; the others: module globals gone at interpreter exit.
        with contextlib.suppress(OSError, AttributeError, TypeError):
            os.close(self.fd)


_socket_fds: weakref.WeakValueDictionary[int, _SocketFd] = weakref.WeakValueDictionary()


def _socket_fd(transport: Any) -> _SocketFd | None:
    # Anything but a live asyncio-style datagram transport (aiortc's `_drop` before ICE has a
    # pair, a closing transport, aioice's TurnTransport of a relayed pair: no socket of its
    # own, no is_closing) goes through Python, which keeps asyncio's semantics for it.
    get_extra_info = getattr(transport, "get_extra_info", None)
    if get_extra_info is None:
        return None
    sock = get_extra_info("socket")
    if sock is None or transport.is_closing():
        return None
    cached = _socket_fds.get(id(transport))
    if cached is not None and cached.transport is transport:
        return cached
    if sock.type != socket.SOCK_DGRAM:
        return None
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.fileno() < 0:
        return None
    entry = _SocketFd(transport, sock)
    _socket_fds[id(transport)] = entry
    return entry


@functools.lru_cache(maxsize=4096)  # each subscriber's address recurs in every producer's group
def _raw_address(addr: tuple[Any, ...], family: int) -> tuple[bytes, int, int] | None:
    """(ip bytes, port, scope id) for the socket's family, or None: the Python path sends it."""
    host, port = addr[0], addr[1]
    if not isinstance(host, str) or "%" in host:  # scoped names need if_nametoindex: rare
        return None
    try:
        return socket.inet_pton(family, host), int(port), int(addr[3]) if len(addr) > 3 else 0
    except (OSError, ValueError):  # e.g. an IPv4 peer on an IPv6 socket: leave it to Python
        return None


def _row(c: Consumer) -> tuple[Consumer, _SocketFd, tuple[bytes, int, int]] | None:
    """What the C path needs of a consumer, or None: the Python path sends to it."""
    sfd = _socket_fd(getattr(c.sendto, "__self__", None))
    raw = _raw_address(c.addr, sfd.family) if sfd is not None else None
    if sfd is None or raw is None or c.ctx is None:
        return None
    return c, sfd, raw


def _take_last(items: list[Any], i: int, where: dict[Any, int] | None) -> None:
    """Remove items[i] in O(1): the last item moves into its place (`where` follows it)."""
    last = items.pop()
    if i < len(items):
        items[i] = last
        if where is not None:
            where[last] = i


def _init(c: Consumer, sfd: _SocketFd, raw: tuple[bytes, int, int]) -> dict[str, Any]:
    """A consumer's fp_entry as a cffi initializer (fp_prepare then makes its sockaddr)."""
    ip, port, scope = raw
    return {"ctx": int(_srtp_ffi.cast("uintptr_t", c.ctx)), "fd": sfd.fd, "ssrc": c.ssrc,
            "pt": c.pt, "seq_off": c.seq_off & 0xFFFF, "ts_off": c.ts_off & 0xFFFFFFFF,
            "ip": ip, "ip_len": len(ip), "port": port, "scope_id": scope}


# ------------------------------------------------------------------------------ groups


def _looks(c: Consumer) -> tuple[Any, ...]:
    # Everything an entry is built from. SrtpPath keeps one bound sendto per ICE pair, so a
    # changed pair shows up as a different object here.
    return (c.sendto, c.addr, c.ctx, c.ssrc, c.pt, c.seq_off, c.ts_off)


class FastGroup:
    """Consumers of one producer that share an extension layout, ready for one-call sends.

    `send(tail, b0, mark, seq, ts)` writes header(b0, mark|pt, seq+seq_off, ts+ts_off, ssrc) +
    tail for every consumer, protects and sends; returns how many packets were sent. `tail` must
    be bytes (it is passed to C without a copy). `failed` collects consumers whose Python send
    raised (the caller drops them, as `_fanout` always has); the C path never raises.
    """

    __slots__ = (
        "_cap",
        "_entries",
        "_errors_base",
        "_n",
        "_native",
        "_npos",
        "_py",
        "_seen",
        "_socks",
        "_where",
        "consumers",
        "failed",
        "native",
        "py_errors",
        "send",
    )

    def __init__(self, consumers: Iterable[Consumer], native: bool | None = None) -> None:
        """native: True forces C (error if not built), False Python, None the default."""
        if native is None:
            native = AVAILABLE
        elif native and _lib is None:
            raise RuntimeError(reason())
        self.consumers: list[Consumer] = list(consumers)
        self._where = {c: i for i, c in enumerate(self.consumers)}  # index in consumers
        self.native = native
        self.failed: list[Consumer] = []
        self.py_errors = 0
        self._errors_base = 0
        self._entries: Any = None
        self._n = 0
        self._cap = 0  # entries the array has room for
        self._native: list[Consumer] = []  # consumers behind self._entries, same order
        self._npos: dict[Consumer, int] = {}  # index in _native (and _entries, _socks)
        self._py: dict[Consumer, None] = {}  # sent by the Python loop
        self._socks: list[_SocketFd] = []  # keeps the dup'd fds open while entries use them
        self._seen: list[tuple[Any, ...]] = []  # what each consumer looked like at the snapshot
        self.send = self._send_c if native else self._send_py
        self.refresh(force=True)

    def __len__(self) -> int:
        return len(self.consumers)

    # -------------------------------------------------------------- snapshot upkeep
    def refresh(self, force: bool = False) -> bool:
        """Re-read every consumer (socket, address, ctx, ids, offsets) after `refresh_path`;
        returns whether anything was rebuilt. Cheap when nothing moved (one comparison per
        consumer, no allocation), so it can run on every report tick."""
        if not self.native:
            self._py = dict.fromkeys(self.consumers)
            return False
        seen = [_looks(c) for c in self.consumers]
        if not force and seen == self._seen and not any(
                s.transport.is_closing() for s in self._socks):
            return False
        self._seen = seen
        self._errors_base += self._c_errors()
        py: dict[Consumer, None] = {}
        rows: list[tuple[Consumer, _SocketFd, tuple[bytes, int, int]]] = []
        for c in self.consumers:
            row = _row(c)
            if row is None:
                py[c] = None
            else:
                rows.append(row)
        # One initializer list: cffi fills the array in C, ~2x faster than field-by-field.
        # Room to grow by half again before `add` must reallocate.
        n = len(rows)
        entries = _ffi.new("fp_entry[]", [_init(*row) for row in rows] + [{}] * (n // 2 + 4))
        _lib.fp_prepare(entries, n)  # sockaddrs, in C, for the whole array at once
        # Swap in one go: a half-built array is never visible to send().
        self._entries, self._n, self._cap, self._py = entries, n, len(entries), py
        self._native = [c for c, _, _ in rows]
        self._npos = {c: i for i, c in enumerate(self._native)}
        self._socks = [sfd for _, sfd, _ in rows]
        return True

    # Membership changes one consumer at a time, in O(1) (position maps, the last member takes
    # a leaver's place): a national room's 3,356th join must not rebuild the 3,355 entries
    # before it (a rebuild costs ~8 us per consumer on a VM: joins in a surge were quadratic).
    def add(self, c: Consumer) -> None:
        """One more consumer, sent to from the next `send` on."""
        self._where[c] = len(self.consumers)
        self.consumers.append(c)
        if not self.native:
            self._py[c] = None
            return
        self._seen.append(_looks(c))
        row = _row(c)
        if row is None:
            self._py[c] = None
            return
        if self._n == self._cap:  # full: a new array twice the size, entries copied as they are
            cap = max(8, 2 * self._cap)
            grown = _ffi.new("fp_entry[]", cap)
            if self._n:
                _ffi.memmove(grown, self._entries, self._n * _ENTRY_SIZE)
            self._entries, self._cap = grown, cap
        at = self._entries + self._n
        _ffi.memmove(at, _ffi.new("fp_entry *", _init(*row)), _ENTRY_SIZE)
        _lib.fp_prepare(at, 1)
        self._npos[c] = self._n
        self._n += 1
        self._native.append(c)
        self._socks.append(row[1])

    def remove(self, c: Consumer) -> bool:
        """Stop sending to `c`; False if it was not in the group. The last member takes its
        place in each list (the order of consumers within a group means nothing)."""
        j = self._where.pop(c, None)
        if j is None:
            return False
        _take_last(self.consumers, j, self._where)
        if self.native:
            _take_last(self._seen, j, None)
        if self._py.pop(c, 0) is None:  # (its value is None when present)
            return True
        i, last = self._npos.pop(c), self._n - 1
        entries = self._entries
        self._errors_base += entries[i].errors
        if i != last:
            _ffi.memmove(entries + i, entries + last, _ENTRY_SIZE)
        _take_last(self._native, i, self._npos)
        _take_last(self._socks, i, None)
        self._n = last
        return True

    def update_offsets(self) -> None:
        """Copy each consumer's seq/ts offsets again (after `sync_to_source`): O(n), no syscalls.
        The Python path reads them live, so this is a no-op there."""
        entries = self._entries
        for i, c in enumerate(self._native):
            e = entries[i]
            e.seq_off = c.seq_off & 0xFFFF
            e.ts_off = c.ts_off & 0xFFFFFFFF

    def close(self) -> None:
        """Drop the entries and this group's hold on the socket dups (also done by GC)."""
        self._entries, self._n, self._cap, self._native, self._socks = None, 0, 0, [], []
        self._py, self._seen, self._npos = {}, [], {}

    # -------------------------------------------------------------- counters
    def _c_errors(self) -> int:
        entries = self._entries
        return sum(entries[i].errors for i in range(self._n)) if entries is not None else 0

    @property
    def errors(self) -> int:
        """Packets not sent: SRTP failures, full socket buffers, send errors, oversize."""
        return self._errors_base + self._c_errors() + self.py_errors

    def errors_by_consumer(self) -> dict[Consumer, tuple[int, int]]:
        """C path: consumer -> (errors since the last refresh, last errno or -srtp status)."""
        entries = self._entries
        return {c: (entries[i].errors, entries[i].last_errno)
                for i, c in enumerate(self._native)}

    @property
    def native_count(self) -> int:
        """How many consumers the C path serves (the rest go through Python)."""
        return self._n

    @property
    def connected_count(self) -> int:
        """How many of those the C path sends to without naming the address: their socket is
        connected to it (subscribers', sfu/adapters/direct_ingress.py), as of the last
        rebuild."""
        entries = self._entries
        return sum(entries[i].connected for i in range(self._n)) if entries is not None else 0

    # -------------------------------------------------------------- sending
    def _send_c(self, tail: bytes, b0: int, mark: int, seq: int, ts: int) -> int:
        sent = _fp_send(self._entries, self._n, tail, len(tail), b0, mark, seq, ts, _PROTECT)
        if self._py:
            sent += self._loop(self._py, tail, b0, mark, seq, ts)
        return sent

    def send_batch(self, batch: Batch) -> int:
        """Send several packets; on the C path each consumer gets all of them in one
        sendmmsg (one receiver wake-up per batch). Returns how many packets were sent."""
        if not self.native or len(batch) == 1:
            return sum(self.send(*item) for item in batch)
        sent = 0
        for i in range(0, len(batch), MAX_BATCH):
            part = batch[i : i + MAX_BATCH]
            off = 0
            view = _PKTS_VIEW
            for j, (tail, b0, mark, seq, ts) in enumerate(part):
                n = len(tail)
                _pack_pkt(view, 16 * j, off, n, b0, mark, seq & 0xFFFF, ts & 0xFFFFFFFF)
                off += n
            blob = b"".join(item[0] for item in part)
            sent += _fp_send_batch(self._entries, self._n, _PKTS, len(part), blob, _PROTECT)
            if self._py:
                for item in part:
                    sent += self._loop(self._py, *item)
        return sent

    def _send_py(self, tail: bytes, b0: int, mark: int, seq: int, ts: int) -> int:
        return self._loop(self._py, tail, b0, mark, seq, ts)

    def _loop(self, consumers: Iterable[Consumer], tail: bytes, b0: int, mark: int, seq: int,
              ts: int) -> int:
        # Producer._fanout's inner loop, unchanged: one process-wide buffer (the event loop is
        # single-threaded and each packet is handed to the kernel before the next is written).
        n = 12 + len(tail)
        if n > MAX_PACKET:
            self.py_errors += len(consumers)  # type: ignore[arg-type]
            return 0
        buf, view, lenp, protect, pack_into = BUF, BUF_VIEW, LENP, srtp_protect, _pack_into
        sent = 0
        for c in consumers:
            pack_into(view, 0, b0, mark | c.pt, (seq + c.seq_off) & 0xFFFF,
                      (ts + c.ts_off) & 0xFFFFFFFF, c.ssrc)
            view[12:n] = tail
            lenp[0] = n
            if protect(c.ctx, buf, lenp) == 0:
                try:
                    c.sendto(view[: lenp[0]], c.addr)
                    sent += 1
                except Exception:  # its transport closed under us: the caller drops it
                    self.failed.append(c)
            else:
                self.py_errors += 1
        return sent

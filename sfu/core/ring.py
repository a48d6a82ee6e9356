"""Recent packets of one stream by sequence number, to answer NACKs."""

from __future__ import annotations

__all__ = ["RetransmitRing"]


class RetransmitRing:
    """Fixed-size ring indexed by `seq & (size - 1)`; each slot remembers its seq, so a slot
    since overwritten by a newer packet answers None rather than the wrong packet.

    Two list stores per `put`, no allocation. `size` is a power of two, at most 65536 (one
    16-bit seq cycle), so a slot is always overwritten before its seq number comes round again
    (unless the packets that would overwrite it were themselves all lost).
    """

    __slots__ = ("_data", "_mask", "_seqs")

    def __init__(self, size: int) -> None:
        if size <= 0 or size & (size - 1) or size > 0x10000:
            raise ValueError("size must be a power of two between 1 and 65536")
        self._mask = size - 1
        self._seqs = [-1] * size
        self._data: list[bytes | None] = [None] * size

    @property
    def size(self) -> int:
        return self._mask + 1

    def put(self, seq: int, data: bytes) -> None:
        i = seq & self._mask
        self._seqs[i] = seq
        self._data[i] = data

    def get(self, seq: int) -> bytes | None:
        i = seq & self._mask
        if self._seqs[i] == seq:
            return self._data[i]
        return None

    def clear(self) -> None:
        """Forget everything (the source changed: its seqs mean something else now)."""
        size = self._mask + 1
        self._seqs = [-1] * size
        self._data = [None] * size

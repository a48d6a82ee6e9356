"""Sequence-number and timestamp continuity for one outgoing stream (one subscriber SSRC).

The hot loop reads two plain ints per packet and does the arithmetic itself:

    out_seq = (seq + m.seq_off) & 0xFFFF
    out_ts = (ts + m.ts_off) & 0xFFFFFFFF

`switch` moves the offsets when the source behind the stream changes (publisher reconnect,
Last-N slot switch), so the subscriber sees one continuous stream: the next output seq follows
the last one, and the output timestamp advances by the wall time that passed.
"""

from __future__ import annotations

import random

__all__ = ["Munger"]

_SEQ_MASK = 0xFFFF
_TS_MASK = 0xFFFFFFFF
# Receivers compare timestamps modulo 2**32 by sign: a jump of 2**31 or more reads as going
# backwards. Long pauses (hours at 90 kHz) are clamped just below that.
_TS_MAX_STEP = 0x7FFFFFFF


class Munger:
    """Offsets from the current source's seq/ts space to the outgoing stream's."""

    __slots__ = ("_rng", "seq_off", "ts_off")

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        # Random start (RFC 3550 §5.1); `switch(None, ...)` re-randomises for the first source.
        self.seq_off = rng.getrandbits(16)
        self.ts_off = rng.getrandbits(32)

    def switch(
        self,
        prev_last_seq: int | None,
        prev_last_ts: int | None,
        prev_last_time: float | None,
        first_seq: int,
        first_ts: int,
        now: float,
        clock_rate: int,
    ) -> None:
        """Re-anchor on a new source whose first packet has `first_seq`/`first_ts` at `now`.

        `prev_last_*` are the last *input* seq/ts of the previous source (mapped with the
        current offsets) and the time it was received; all None for the first source, which
        then starts at random output values.
        """
        if prev_last_seq is None:
            self.seq_off = (self._rng.getrandbits(16) - first_seq) & _SEQ_MASK
            self.ts_off = (self._rng.getrandbits(32) - first_ts) & _TS_MASK
            return
        if prev_last_ts is None or prev_last_time is None:
            raise ValueError("prev_last_seq, prev_last_ts and prev_last_time go together")
        last_out_seq = (prev_last_seq + self.seq_off) & _SEQ_MASK
        last_out_ts = (prev_last_ts + self.ts_off) & _TS_MASK
        step = round((now - prev_last_time) * clock_rate)
        step = min(max(1, step), _TS_MAX_STEP)
        self.seq_off = (last_out_seq + 1 - first_seq) & _SEQ_MASK
        self.ts_off = (last_out_ts + step - first_ts) & _TS_MASK

    def out_seq(self, seq: int) -> int:
        """Output seq for an input seq (the hot loop inlines this)."""
        return (seq + self.seq_off) & _SEQ_MASK

    def out_ts(self, ts: int) -> int:
        """Output timestamp for an input timestamp (also for rewriting SR rtp_ts)."""
        return (ts + self.ts_off) & _TS_MASK

    def in_seq(self, out_seq: int) -> int:
        """Input seq of the current source for a (NACKed) output seq."""
        return (out_seq - self.seq_off) & _SEQ_MASK

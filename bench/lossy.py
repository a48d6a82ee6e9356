"""Packet loss for `hoinghi bench forward --loss`: what a lossy last mile costs the server.

A subscriber process drops a share of the RTP packets it receives (after SRTP, as if the
network had lost them: the server's work is the same) and its light subscribers ask for the
video ones again the way a browser does, with generic NACKs (RFC 4585); the server answers from
its ring with RTX (RFC 4588). Decoding subscribers leave NACKs to aiortc's own receiver.
Audio is never asked for (neither browsers nor aiortc NACK Opus): its losses stay.

Sans-I/O: the caller passes the time in and sends the NACKs.
"""

from __future__ import annotations

import random


class Dropper:
    """Drops each packet with probability `pct` / 100, from a seeded generator (a run with
    the same seed drops the same positions)."""

    def __init__(self, pct: float, seed: int) -> None:
        if not 0 <= pct < 100:
            raise ValueError(f"loss must be in [0, 100): {pct}")
        self.p = pct / 100
        self._random = random.Random(seed).random
        self.dropped = 0

    def drop(self) -> bool:
        if self.p and self._random() < self.p:
            self.dropped += 1
            return True
        return False


class Nacker:
    """One video stream's receiver side of NACK, as libwebrtc's NackRequester does it: the
    sequence numbers a gap skipped are asked for at once, again every RETRY_S while still
    missing, at most TRIES times; one that then arrives (by RTX, or late) is no longer asked
    for. Sequence numbers wrap at 2^16."""

    RETRY_S = 0.03  # libwebrtc: the RTT, at least 5 ms; loopback's RTT is ~1 ms, kept coarse
    TRIES = 5
    MAX_MISSING = 1000  # a longer gap (a stall, a new source) is not worth asking for

    def __init__(self) -> None:
        self.highest: int | None = None
        self._missing: dict[int, tuple[float, int]] = {}  # seq -> (next ask, asks so far)
        self.asked = 0  # sequence numbers put in NACKs, retries included
        self.recovered = 0  # missing ones that came back by RTX
        self.late = 0  # missing ones that came in themselves (reordered)
        self.given_up = 0  # asked TRIES times and never came

    @property
    def missing(self) -> int:
        return len(self._missing)

    def on_media(self, seq: int, now: float) -> None:
        """A packet of the stream itself arrived."""
        if self.highest is None:
            self.highest = seq
            return
        ahead = (seq - self.highest) & 0xFFFF
        if ahead == 0:
            return  # a duplicate
        if ahead < 0x8000:
            if ahead - 1 > self.MAX_MISSING:
                self.given_up += len(self._missing)
                self._missing.clear()
            else:
                for i in range(1, ahead):
                    self._missing[(self.highest + i) & 0xFFFF] = (now, 0)
            self.highest = seq
        elif self._missing.pop(seq, None) is not None:
            self.late += 1

    def on_rtx(self, original_seq: int) -> bool:
        """An RTX packet carrying `original_seq` arrived; True if it was one of ours."""
        if self._missing.pop(original_seq, None) is None:
            return False
        self.recovered += 1
        return True

    def due(self, now: float) -> list[int]:
        """The sequence numbers to put in a NACK now (each asked for again RETRY_S later)."""
        out: list[int] = []
        missing = self._missing
        for seq, (at, tries) in list(missing.items()):
            if at > now:
                continue
            if tries >= self.TRIES:
                del missing[seq]
                self.given_up += 1
                continue
            missing[seq] = (now + self.RETRY_S, tries + 1)
            out.append(seq)
        self.asked += len(out)
        return out

"""Loss detection on one incoming media stream: which sequence numbers to NACK, and when.

The SFU NACKs publishers itself (it is the receiver of their streams). Per packet, `on_packet`
costs a few int operations when nothing is missing; state is only allocated when a gap appears.
Time is passed in (milliseconds, any monotonic origin).
"""

from __future__ import annotations

__all__ = ["NackGenerator"]

# A packet this far *behind* the highest seq is not a late packet but a restarted stream
# (RFC 3550 A.1 uses the same MAX_DROPOUT); two in a row re-anchor the generator.
_RESTART_BEHIND = 3000

_FIRST = 0  # when the seq was found missing (ms)
_SENT = 1  # when it was last NACKed (ms)
_TRIES = 2  # how many NACKs went out for it


class NackGenerator:
    """Tracks missing seqs of one stream; `due(now)` says which to NACK now.

    A seq found missing is NACKed once `reorder_grace_ms` has passed without it arriving,
    then again every `retry_interval_ms` (≈ RTT, see `set_rtt`), at most `max_retries` times,
    and never after `max_age_ms`. Giving up on a seq, or a gap too large to track, sets
    `keyframe_needed`: the decoder downstream cannot recover without one.
    """

    __slots__ = (
        "_bad_seq",
        "_max_ext",
        "_missing",
        "given_up",
        "keyframe_needed",
        "max_age_ms",
        "max_missing",
        "max_retries",
        "min_retry_interval_ms",
        "nacked",
        "recovered",
        "reorder_grace_ms",
        "reordered",
        "retry_interval_ms",
    )

    def __init__(
        self,
        *,
        reorder_grace_ms: float = 10.0,
        retry_interval_ms: float = 100.0,
        max_retries: int = 10,
        max_age_ms: float = 1000.0,
        max_missing: int = 500,
        min_retry_interval_ms: float = 10.0,
    ) -> None:
        self.reorder_grace_ms = reorder_grace_ms
        self.retry_interval_ms = retry_interval_ms
        self.min_retry_interval_ms = min_retry_interval_ms
        self.max_retries = max_retries
        self.max_age_ms = max_age_ms
        self.max_missing = max_missing
        # Extended (unwrapped) highest seq seen; None until the first packet.
        self._max_ext: int | None = None
        self._bad_seq = -1
        # extended seq -> [first_missing_ms, last_sent_ms, tries]; insertion order == seq order,
        # because seqs only ever enter above the previous highest.
        self._missing: dict[int, list[float]] = {}
        self.keyframe_needed = False
        self.nacked = 0  # NACK entries handed out by due(), retries included
        self.recovered = 0  # missing seqs that arrived after being NACKed
        self.reordered = 0  # missing seqs that arrived before any NACK (plain reordering)
        self.given_up = 0  # missing seqs dropped: too old, too many tries, or over the cap

    def set_rtt(self, rtt_ms: float) -> None:
        """Retry no faster than the round trip (a retransmission cannot arrive sooner)."""
        self.retry_interval_ms = max(self.min_retry_interval_ms, rtt_ms)

    def clear_keyframe_needed(self) -> None:
        self.keyframe_needed = False

    @property
    def missing(self) -> list[int]:
        """The 16-bit seqs currently considered missing, oldest first."""
        return [e & 0xFFFF for e in self._missing]

    @property
    def busy(self) -> bool:
        """Whether `due` or the keyframe flag has anything for the owner's timer."""
        return bool(self._missing) or self.keyframe_needed

    def on_packet(self, seq: int, now_ms: float) -> bool:
        """Record the arrival of `seq` (16-bit) at `now_ms`. True when this packet made the
        generator `busy` (a gap, a restart): the owner's timer has work from now on."""
        top = self._max_ext
        if top is None:
            self._max_ext = seq
            return False
        delta = ((seq - top + 0x8000) & 0xFFFF) - 0x8000
        if delta == 1:  # the common case: next in order
            self._max_ext = top + 1
            return False
        if delta > 1:
            self._gap(top, delta, now_ms)
            return True
        if self._missing:
            entry = self._missing.pop(top + delta, None)
            if entry is not None:
                if entry[_TRIES]:
                    self.recovered += 1
                else:
                    self.reordered += 1
                return False
        if delta < -_RESTART_BEHIND:
            if seq == self._bad_seq:
                # Two consecutive packets far behind: the sender restarted its seq space.
                self._drop_all()
                self._max_ext = seq
                return True
            self._bad_seq = (seq + 1) & 0xFFFF
        # Otherwise a duplicate or a packet we already gave up on: nothing to do.
        return False

    def _gap(self, top: int, delta: int, now_ms: float) -> None:
        self._max_ext = top + delta
        gap = delta - 1
        if gap > self.max_missing:
            # Too many to chase one by one: the caller asks for a keyframe instead.
            self.given_up += gap
            self._drop_all()
            return
        missing = self._missing
        for ext in range(top + 1, top + delta):
            missing[ext] = [now_ms, 0.0, 0]
        excess = len(missing) - self.max_missing
        if excess > 0:
            for ext in list(missing)[:excess]:  # oldest first
                del missing[ext]
            self.given_up += excess
            self.keyframe_needed = True

    def _drop_all(self) -> None:
        self.given_up += len(self._missing)
        self._missing.clear()
        self.keyframe_needed = True

    def due(self, now_ms: float) -> list[int]:
        """16-bit seqs to NACK now (oldest first); counts them as sent at `now_ms`."""
        missing = self._missing
        if not missing:
            return []
        out: list[int] = []
        expired: list[int] = []
        grace = self.reorder_grace_ms
        retry = self.retry_interval_ms
        for ext, entry in missing.items():
            if now_ms - entry[_FIRST] > self.max_age_ms:
                expired.append(ext)
                continue
            tries = entry[_TRIES]
            if tries == 0:
                if now_ms - entry[_FIRST] < grace:
                    # Entries are in seq order, and seqs found missing later were found at
                    # the same time or later: none after this one is past its grace either,
                    # and none of them has been sent yet.
                    break
            elif now_ms - entry[_SENT] < retry:
                continue
            elif tries >= self.max_retries:
                expired.append(ext)
                continue
            entry[_SENT] = now_ms
            entry[_TRIES] = tries + 1
            out.append(ext & 0xFFFF)
        if expired:
            for ext in expired:
                del missing[ext]
            self.given_up += len(expired)
            self.keyframe_needed = True
        self.nacked += len(out)
        return out

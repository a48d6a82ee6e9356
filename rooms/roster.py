"""Who is told of whom in a room: the roster each session is sent (docs/signaling.md, Roster).

Pure (no I/O, no clock of its own). In a conference of thousands of bridges, telling every
bridge of every other one is O(bridges²) messages during a surge (3,356 joins: 5.6 million
`participant_joined`, and a 938 KB `joined` for the last bridge in). A bridge's view shows the
chair, who holds the floor, the spotlight and the videos it is sent; so, as Jitsi does with
its visitors, a conference's bridges are told only of its *featured* participants: chairs,
floor holders, the spotlight, the dominant speaker, and anyone some subscriber's Last-N plan
shows, from the moment they first are one until they leave. Sessions that moderate or observe
(`moderate`, `observe_all`: the chair's console, the ops board) are told of everyone, as is
everyone in an ad-hoc room or a conference created with `"roster": "full"`.

The joins and leaves a featured-roster session is not told of are still entries of the
conference log, whose `seq` clients follow to notice missed events: a `presence` message
(`seq` of the last entry it covers, the room's participant count) stands in for them, sent
before the next logged event those sessions get, and otherwise by the shell's timer (at most
once per interval) when entries are uncovered or the count it told changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FULL = "full"
FEATURED = "featured"
ROSTERS = (FEATURED, FULL)


@dataclass
class Roster:
    featured_only: bool  # a conference whose bridges get the featured roster
    present: set[str] = field(default_factory=set)
    featured: set[str] = field(default_factory=set)
    told_all: set[str] = field(default_factory=set)  # sessions told of everyone
    _told_seq: int = 0  # the last log entry the featured-roster sessions have (or had covered)
    _pending_seq: int = 0  # the last log entry they were not sent
    _told_count: int | None = None  # the participant count they were last told

    def kind_for(self, sees_all: bool) -> str:
        """The roster a session gets: `sees_all` is its moderate or observe_all grant."""
        return FULL if sees_all or not self.featured_only else FEATURED

    def add(self, pid: str, sees_all: bool) -> None:
        """A session in the room (a replacement keeps its identity's featured state)."""
        self.present.add(pid)
        if self.kind_for(sees_all) == FULL:
            self.told_all.add(pid)
        else:
            self.told_all.discard(pid)

    def remove(self, pid: str) -> None:
        self.present.discard(pid)
        self.featured.discard(pid)
        self.told_all.discard(pid)

    def feature(self, pid: str) -> bool:
        """`pid` matters to everyone now. True when the featured-roster sessions are to be
        told of it (an introduction: it was in the room and they had not been)."""
        if not self.featured_only or pid not in self.present or pid in self.featured:
            return False
        self.featured.add(pid)
        return True

    def public(self, about: str | None) -> bool:
        """Whether a message about `about` (None: about the room) goes to every session."""
        return about is None or not self.featured_only or about in self.featured

    # --- presence: log entries the featured-roster sessions are not sent ------------------

    def skipped(self, seq: int) -> None:
        """A log entry sent to the told-all sessions only."""
        self._pending_seq = max(self._pending_seq, seq)

    def before_public(self, seq: int | None, count: int) -> int | None:
        """A message goes to everyone; for a log entry (`seq`) after uncovered ones, returns
        the `seq` of the `presence` (with `count`) to send the featured-roster sessions first."""
        if seq is None:
            return None
        cover = self.flush(count) if self._pending_seq > self._told_seq else None
        self._told_seq = max(self._told_seq, seq)
        return cover

    def flush(self, count: int) -> int | None:
        """The `seq` of a due `presence` (uncovered entries, or a count they were not told),
        or None. Its `seq` may be one they have: then it only brings the count."""
        if self._pending_seq <= self._told_seq and count == self._told_count:
            return None
        self._told_seq = max(self._told_seq, self._pending_seq)
        self._told_count = count
        return self._told_seq

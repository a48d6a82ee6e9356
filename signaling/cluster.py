"""Worker processes, the pure part: which worker carries a room, when a dead worker restarts,
and the command line a worker runs with. No I/O; the shells are signaling/workers.py (processes)
and signaling/front.py (the relay).

A room lives wholly on one worker (its router, its floor, its recordings), so placement is per
room, decided at the room's first sight (its first join, or its creation over the HTTP API) and
sticky until that worker dies. A new room goes to the worker with the fewest live sessions, then
the fewest rooms: mediasoup leaves this choice to the application; LiveKit picks the node with
the lowest load. Hashing would be stateless, but would put two large conferences on one core as
often as chance says.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

# Rooms remembered. Only rooms named by a verified token get an entry, so this bounds memory
# against a flood of legitimately issued but abandoned rooms; an evicted room with nobody in
# it is placed afresh on its next join.
MAX_ROOMS = 100_000


@dataclass
class WorkerLoad:
    up: bool = False
    sessions: int = 0
    rooms: int = 0
    restarts: int = 0
    # Bumped when the worker is lost: sessions opened before that no longer count against it.
    generation: int = 0


class Placement:
    """room → worker index. Callers report sessions opening and closing through the front."""

    def __init__(self, workers: int, *, max_rooms: int = MAX_ROOMS) -> None:
        if workers < 1:
            raise ValueError("at least one worker")
        self.workers = [WorkerLoad() for _ in range(workers)]
        self._rooms: OrderedDict[str, int] = OrderedDict()
        self._sessions: dict[str, int] = {}  # live sessions per room, rooms with any only
        self._max_rooms = max_rooms

    def worker_of(self, room: str) -> int | None:
        """Where the room is, without placing it."""
        return self._rooms.get(room)

    def place(self, room: str) -> int | None:
        """The room's worker, placing it on the least-loaded live worker if it has none.
        None when no worker is up."""
        index = self._rooms.get(room)
        if index is not None:
            self._rooms.move_to_end(room)
            return index
        live = [i for i, w in enumerate(self.workers) if w.up]
        if not live:
            return None
        index = min(live, key=lambda i: (self.workers[i].sessions, self.workers[i].rooms, i))
        self._rooms[room] = index
        self.workers[index].rooms += 1
        self._evict()
        return index

    def session_opened(self, room: str) -> tuple[int, int]:
        """Count a session in the placed room; returns its ticket for `session_closed`."""
        index = self._rooms[room]
        load = self.workers[index]
        load.sessions += 1
        self._sessions[room] = self._sessions.get(room, 0) + 1
        return index, load.generation

    def session_closed(self, room: str, ticket: tuple[int, int]) -> None:
        """A session ends. Its worker may have died (and restarted) since it opened: then it
        was already uncounted with everything else on that worker."""
        worker, generation = ticket
        load = self.workers[worker]
        if generation != load.generation:
            return
        load.sessions -= 1
        if self._rooms.get(room) == worker:
            left = self._sessions.get(room, 0) - 1
            if left > 0:
                self._sessions[room] = left
            else:
                self._sessions.pop(room, None)

    def worker_up(self, index: int) -> None:
        self.workers[index].up = True

    def worker_lost(self, index: int) -> list[str]:
        """The worker's process is gone, with every room on it: forget them (they are placed
        afresh when their bridges come back) and return their names."""
        load = self.workers[index]
        if load.up:
            load.restarts += 1
        load.up = False
        load.generation += 1
        lost = [room for room, i in self._rooms.items() if i == index]
        for room in lost:
            del self._rooms[room]
            self._sessions.pop(room, None)
        load.rooms = 0
        load.sessions = 0
        return lost

    def rooms(self) -> dict[str, int]:
        return dict(self._rooms)

    def _evict(self) -> None:
        # Oldest-touched first, only rooms nobody is in: a live conference is never moved.
        if len(self._rooms) <= self._max_rooms:
            return
        for room in list(self._rooms):
            if len(self._rooms) <= self._max_rooms:
                break
            if room not in self._sessions:
                self.workers[self._rooms.pop(room)].rooms -= 1


class Backoff:
    """Restart delays for a worker that keeps dying: doubling from `first` up to `cap`, back to
    `first` once a run lasted `stable_s`. A crash loop must not eat the machine, and one crash
    an hour must restart at once."""

    def __init__(self, first: float = 0.2, cap: float = 10.0, stable_s: float = 30.0) -> None:
        self.first, self.cap, self.stable_s = first, cap, stable_s
        self._next = first

    def delay(self, ran_s: float) -> float:
        """How long to wait before the next start, given how long the last run lasted."""
        if ran_s >= self.stable_s:
            self._next = self.first
        delay = self._next
        self._next = min(self.cap, self._next * 2)
        return delay


# `serve` options the front decides for its workers; everything else is passed through.
_FRONT_ONLY = {"--workers": True, "--host": True, "--port": True}


def worker_argv(serve_args: Sequence[str], index: int) -> list[str]:
    """A worker's `hoinghi serve` arguments from the front's: the same settings, but loopback,
    a port of its own, no --workers, and its index (shown in its logs and metrics)."""
    out: list[str] = []
    skip = False
    for arg in serve_args:
        if skip:
            skip = False
            continue
        name, eq, _ = arg.partition("=")
        if name in _FRONT_ONLY:
            skip = not eq  # `--port 80` takes the next argument, `--port=80` does not
            continue
        out.append(arg)
    return [*out, "--host", "127.0.0.1", "--port", "0", "--worker-index", str(index)]

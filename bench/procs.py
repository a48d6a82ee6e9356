"""Child processes that never outlive the benchmark.

Every child gets its own process group (so a stop reaches anything it forked), a parent-death
signal (so even a SIGKILLed benchmark leaves no orphans), and is registered for an atexit sweep.
Worker children (publisher, subscribers) speak a line protocol: commands on stdin, one JSON
object per line on stdout; they exit when stdin closes.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from signaling.workers import die_with_parent

_live_groups: set[int] = set()
_placement: dict[str, frozenset[int]] = {}  # role -> CPUs (set_placement); empty: the OS's
_ALLOWED = frozenset(os.sched_getaffinity(0))  # this process's CPUs, before any placement


def set_placement(server_cpus: set[int] | None) -> dict[str, list[int]] | None:
    """Pin the server under test to `server_cpus` and everything else (this process, the
    publisher, the subscribers) to the other CPUs, as on a machine where the SFU has cores of
    its own; None: no pinning (the default, and this process gets its CPUs back). Children
    inherit it from spawn, all their threads included. Returns the placement, as the JSON
    lines report it."""
    if not server_cpus:
        _placement.clear()
        os.sched_setaffinity(0, _ALLOWED)
        return None
    load = _ALLOWED - server_cpus
    if not server_cpus <= _ALLOWED or not load:
        raise ValueError(f"server CPUs {sorted(server_cpus)}: must be a proper subset of "
                         f"this process's CPUs {sorted(_ALLOWED)}")
    _placement.clear()
    _placement.update(server=frozenset(server_cpus), load=load)
    os.sched_setaffinity(0, load)
    return placement()


def first_cpus(n: int) -> set[int]:
    """The first n of this process's CPUs (as before any placement): `bench scale --pin`
    gives W workers W cores this way."""
    return set(sorted(_ALLOWED)[:n])


def placement() -> dict[str, list[int]] | None:
    """{"server": [...], "load": [...]} while pinning, else None."""
    return {k: sorted(v) for k, v in _placement.items()} or None


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


@atexit.register
def _sweep() -> None:
    for pgid in list(_live_groups):
        _kill_group(pgid, signal.SIGKILL)
    _live_groups.clear()


class ChildError(RuntimeError):
    pass


class Child:
    def __init__(self, name: str, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.name = name
        self.proc = proc
        self.log = log

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    async def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((command + "\n").encode())
        await self.proc.stdin.drain()

    async def read_json(self, timeout: float) -> dict[str, Any]:
        """The next JSON object the child prints; raises with the child's log on exit/timeout."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChildError(f"{self.name}: no answer in {timeout}s\n{self.log_tail()}")
            try:
                line = await asyncio.wait_for(self.proc.stdout.readline(), left)
            except TimeoutError:
                continue
            if not line:
                await self.proc.wait()
                raise ChildError(
                    f"{self.name} exited ({self.proc.returncode})\n{self.log_tail()}"
                )
            text = line.decode(errors="replace").strip()
            if text.startswith("{"):
                msg = json.loads(text)
                if "error" in msg:
                    raise ChildError(f"{self.name}: {msg['error']}\n{self.log_tail()}")
                return msg

    async def ask(self, command: str, timeout: float = 30) -> dict[str, Any]:
        await self.send(command)
        return await self.read_json(timeout)

    async def stop(self, grace: float = 5.0) -> None:
        """Close stdin (workers exit on EOF), then SIGTERM, then SIGKILL the whole group."""
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None:
                _kill_group(self.proc.pid, sig)
            try:
                await asyncio.wait_for(self.proc.wait(), grace)
                break
            except TimeoutError:
                continue
        # The leader is gone; anything else left in its group goes too.
        _kill_group(self.proc.pid, signal.SIGKILL)
        _live_groups.discard(self.proc.pid)


async def spawn(
    name: str,
    cmd: list[str],
    log: Path,
    *,
    env: dict[str, str] | None = None,
    worker: bool = True,
    cwd: str | None = None,
    server: bool = False,
) -> Child:
    """Start cmd in a new process group. worker=True: stdin/stdout are the control pipes.
    server=True: the system under test (its CPUs under set_placement)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    cpus = _placement.get("server" if server else "load")

    def prepare() -> None:  # in the child, before exec: every thread it starts inherits it
        die_with_parent()
        if cpus:
            os.sched_setaffinity(0, cpus)

    with open(log, "ab") as logf:
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdin=asyncio.subprocess.PIPE if worker else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if worker else logf,
            stderr=logf,
            env=env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=prepare,
            limit=1 << 24,  # final reports (per-frame logs) are single long lines
        )
    _live_groups.add(proc.pid)
    return Child(name, proc, log)


async def stop_all(children: list[Child], grace: float = 5.0) -> None:
    await asyncio.gather(*(c.stop(grace) for c in children), return_exceptions=True)

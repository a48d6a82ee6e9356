"""Worker processes, the shell: start W `hoinghi serve` workers, learn their ports, restart the
ones that die. Decisions (placement, restart delays, arguments) are in signaling/cluster.py.

Workers are children of the front with a parent-death signal: a front killed outright (SIGKILL,
OOM) takes its workers with it instead of leaving media ports bound by orphans.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import re
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from signaling.cluster import Backoff, worker_argv

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_LISTENING = re.compile(rb"hoinghi listening on (http://\S+)")


def die_with_parent() -> None:
    """preexec_fn: SIGTERM this child when its parent dies (Linux prctl)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def serve_command() -> list[str]:
    """`hoinghi` as this interpreter runs it (the installed script may not be on PATH)."""
    return [sys.executable, "-m", "hoinghi_cli"]


@dataclass
class Worker:
    index: int
    url: str | None = None  # None while it is starting or down
    proc: asyncio.subprocess.Process | None = None
    backoff: Backoff = field(default_factory=Backoff)

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid


class WorkerPool:
    """Runs and supervises the workers. `on_up(i)` / `on_lost(i)` tell the front."""

    def __init__(
        self,
        serve_args: Sequence[str],
        count: int,
        *,
        on_up: Callable[[int], None],
        on_lost: Callable[[int], None],
        env: dict[str, str] | None = None,
    ) -> None:
        self.workers = [Worker(i) for i in range(count)]
        self._args = list(serve_args)
        self._env = env
        self._on_up, self._on_lost = on_up, on_lost
        self._tasks: list[asyncio.Task[None]] = []
        self._first_up = [asyncio.Event() for _ in range(count)]
        self.closing = False

    async def start(self, timeout: float = 60.0) -> None:
        """Start every worker; returns once all are listening (raises on timeout)."""
        self._tasks = [asyncio.create_task(self._supervise(w)) for w in self.workers]
        waits = [e.wait() for e in self._first_up]
        try:
            await asyncio.wait_for(asyncio.gather(*waits), timeout)
        except TimeoutError:
            await self.close()
            raise RuntimeError(f"workers did not start in {timeout:.0f} s") from None

    def url(self, index: int) -> str | None:
        return self.workers[index].url

    async def close(self, grace: float = 5.0) -> None:
        self.closing = True
        procs = [w.proc for w in self.workers if w.proc is not None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()  # the worker closes its peers cleanly on SIGTERM
        if procs:
            _, pending = await asyncio.wait([asyncio.create_task(p.wait()) for p in procs],
                                            timeout=grace)
            for proc in procs:
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            for task in pending:
                await task
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _supervise(self, worker: Worker) -> None:
        while not self.closing:
            began = time.monotonic()
            try:
                await self._run_once(worker)
            except Exception:
                logger.exception("worker %d could not be run", worker.index)
            if self.closing:
                return
            delay = worker.backoff.delay(time.monotonic() - began)
            logger.warning("worker %d exited; restarting in %.1f s", worker.index, delay)
            await asyncio.sleep(delay)

    async def _run_once(self, worker: Worker) -> None:
        argv = [*serve_command(), "serve", *worker_argv(self._args, worker.index)]
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, env=self._env, preexec_fn=die_with_parent
        )
        worker.proc = proc
        assert proc.stdout is not None
        try:
            async for line in proc.stdout:
                found = _LISTENING.search(line)
                if found and worker.url is None:
                    worker.url = found.group(1).decode().rstrip("/")
                    logger.info("worker %d (pid %d) at %s", worker.index, proc.pid, worker.url)
                    self._on_up(worker.index)
                    self._first_up[worker.index].set()
                elif not found:
                    sys.stdout.buffer.write(line)  # a worker's own stdout, passed on
            await proc.wait()
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
            was_up = worker.url is not None
            worker.url, worker.proc = None, None
            if was_up:
                self._on_lost(worker.index)
            if not self.closing:
                logger.error("worker %d (pid %d) ended with status %s",
                             worker.index, proc.pid, proc.returncode)

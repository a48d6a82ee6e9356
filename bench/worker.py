"""The worker side of bench/procs.py's line protocol (publisher and subscriber processes).

Commands arrive one per line on stdin; every answer is one JSON line on stdout. End of stdin
(the orchestrator exited or closed it) ends the worker: it can never be left behind.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

Handler = Callable[[], Awaitable[dict[str, Any]] | dict[str, Any]]


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def stdin_lines() -> AsyncIterator[str]:
    """Command lines from stdin, stripped, until end of stdin (without blocking the loop)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        yield line.decode().strip()


async def serve_commands(handlers: dict[str, Handler]) -> None:
    """Answer commands until `stop` (answered, then return) or end of stdin (return)."""
    async for cmd in stdin_lines():
        handler = handlers.get(cmd)
        if handler is None:
            emit({"error": f"unknown command {cmd!r}"})
            continue
        result = handler()
        if asyncio.iscoroutine(result):
            result = await result
        emit(result)  # type: ignore[arg-type]
        if cmd == "stop":
            return


def run_worker(main: Callable[[], Awaitable[None]]) -> None:
    """Run a worker's main; any failure becomes an {"error": ...} line, then a hard exit.

    os._exit: aiortc's decoder threads and half-closed peers can hold a normal interpreter exit
    for seconds; the orchestrator has already received everything it needs.
    """
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    code = 0
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        code = 130
    except BaseException as exc:  # report everything, the orchestrator shows it
        traceback.print_exc(file=sys.stderr)
        emit({"error": f"{type(exc).__name__}: {exc}"})
        code = 1
    sys.stderr.flush()
    os._exit(code)

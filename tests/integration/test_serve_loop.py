"""`hoinghi serve`'s uvicorn server (hoinghi_cli._listening_server) in the test's own loop:
its housekeeping tick runs once a second instead of uvicorn's ten times (a wake-up each), and
a signal still ends it at once, not at the next tick."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import AsyncIterator, Callable

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import hoinghi_cli


async def _ok(_request: object) -> PlainTextResponse:
    return PlainTextResponse("ok")


@pytest.fixture
def listening_server() -> uvicorn.Server:
    app = Starlette(routes=[Route("/", _ok)])
    return hoinghi_cli._listening_server(uvicorn.Config(app, host="127.0.0.1", port=0,
                                                        log_level="warning"))


@contextlib.asynccontextmanager
async def _serving(server: uvicorn.Server) -> AsyncIterator[asyncio.Task[None]]:
    """The server serving on a loopback socket of its own, started; stopped afterwards."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(20):
            while not server.started:
                assert not task.done(), "the server stopped before it started"
                await asyncio.sleep(0.01)  # polling a flag uvicorn offers no event for
        yield task
    finally:
        task.cancel()
        sock.close()


def _count_ticks(server: uvicorn.Server, also: Callable[[int], None] | None = None) -> list[int]:
    """Record the counter of every tick from now on (`also` runs before uvicorn's own)."""
    seen: list[int] = []
    real_tick = server.on_tick

    async def on_tick(counter: int) -> bool:
        seen.append(counter)
        if also is not None:
            also(counter)
        return await real_tick(counter)

    server.on_tick = on_tick  # type: ignore[method-assign]
    return seen


async def test_exit_signal_ends_the_tick_wait_at_once(
    listening_server: uvicorn.Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A tick an hour long: only the signal's wake-up can end the wait within the timeout.
    monkeypatch.setattr(hoinghi_cli, "MAIN_LOOP_S", 3600.0)
    server = listening_server
    async with _serving(server) as task:
        ticks = _count_ticks(server)
        server.handle_exit(signal.SIGINT, None)
        server._captured_signals.clear()  # uvicorn re-raises captured signals on the way out
        async with asyncio.timeout(20):
            await task
        assert len(ticks) == 1, "the wait did not end with one more tick seeing should_exit"


async def test_date_header_is_renewed_by_each_tick(
    listening_server: uvicorn.Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # uvicorn renews its Date header on every tenth of its own ticks; each of ours counts as
    # ten, so every tick must renew it.
    monkeypatch.setattr(hoinghi_cli, "MAIN_LOOP_S", 0.0)
    server = listening_server
    async with _serving(server) as task:
        renewed: list[bool] = []

        def clear(_counter: int) -> None:
            if server.server_state.default_headers:
                renewed.append(True)  # the previous tick's renewal
            server.server_state.default_headers = []
            if len(renewed) >= 3:
                server.should_exit = True

        seen = _count_ticks(server, clear)
        async with asyncio.timeout(20):
            await task
        assert len(renewed) == 3 and all(c % 10 == 0 for c in seen)


def test_serve_leaves_keepalive_to_the_protocol() -> None:
    # docs/signaling.md's ping/pong finds dead peers; websocket-level pings would only add a
    # timer, a frame and a pong per bridge every 20 s.
    args = hoinghi_cli._parser().parse_args(["serve", "--port", "0"])
    config = hoinghi_cli._uvicorn_config(Starlette(), args, 65536)
    assert config.ws_ping_interval is None
    assert config.ws_max_size == 4 * 65536 and config.host == "127.0.0.1"

"""`hoinghi serve`'s uvicorn server (hoinghi_cli._listening_server) in the test's own loop:
its housekeeping tick runs once a second instead of uvicorn's ten times (a wake-up each), and
a signal still ends it at once, not at the next tick."""

from __future__ import annotations

import asyncio
import signal
import socket

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


async def _started(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    async with asyncio.timeout(20):
        while not server.started:
            assert not task.done(), "the server stopped before it started"
            await asyncio.sleep(0.01)  # polling a flag uvicorn offers no event for


async def test_exit_signal_ends_the_tick_wait_at_once(
    listening_server: uvicorn.Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A tick an hour long: only the signal's wake-up can end the wait within the timeout.
    monkeypatch.setattr(hoinghi_cli, "MAIN_LOOP_S", 3600.0)
    server = listening_server
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await _started(server, task)
        ticks = []
        real_tick = server.on_tick

        async def on_tick(counter: int) -> bool:
            ticks.append(counter)
            return await real_tick(counter)

        server.on_tick = on_tick  # type: ignore[method-assign]
        server.handle_exit(signal.SIGINT, None)
        server._captured_signals.clear()  # uvicorn re-raises captured signals on the way out
        async with asyncio.timeout(20):
            await task
        assert len(ticks) == 1, "the wait did not end with one more tick seeing should_exit"
    finally:
        task.cancel()
        sock.close()


async def test_date_header_is_renewed_by_each_tick(
    listening_server: uvicorn.Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    # uvicorn renews its Date header on every tenth of its own ticks; each of ours counts as
    # ten, so every tick must renew it.
    monkeypatch.setattr(hoinghi_cli, "MAIN_LOOP_S", 0.0)
    server = listening_server
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await _started(server, task)
        seen: list[int] = []
        real_tick = server.on_tick

        async def on_tick(counter: int) -> bool:
            seen.append(counter)
            server.server_state.default_headers = []  # renewed only if uvicorn's tick ran
            done = await real_tick(counter)
            assert server.server_state.default_headers, f"tick {counter} renewed no headers"
            return done or len(seen) >= 3

        server.on_tick = on_tick  # type: ignore[method-assign]
        async with asyncio.timeout(20):
            await task
        assert len(seen) == 3 and all(c % 10 == 0 for c in seen)
    finally:
        task.cancel()
        sock.close()


def test_serve_leaves_keepalive_to_the_protocol() -> None:
    # docs/signaling.md's ping/pong finds dead peers; websocket-level pings would only add a
    # timer, a frame and a pong per bridge every 20 s.
    args = hoinghi_cli._parser().parse_args(["serve", "--port", "0"])
    config = hoinghi_cli._uvicorn_config(Starlette(), args, 65536)
    assert config.ws_ping_interval is None
    assert config.ws_max_size == 4 * 65536 and config.host == "127.0.0.1"

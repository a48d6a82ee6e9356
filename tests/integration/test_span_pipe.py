"""The pipe in detail: an in-process home (SpanningRouter, real aiortc publisher and
subscribers) and a real worker process as its edge (`hoinghi serve --worker-index 1`).

Datagrams lost on the pipe are asked for again by the edge (NACK) and re-sent by the home from
its ring, so the edge's subscriber decodes every picture while the home's own subscriber is
served as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sfu.config import SfuConfig
from sfu.core.pipe import RTP
from sfu.router import SendOffer
from sfu.span import SpanningRouter
from signaling.span_routes import internal_token
from tests.conftest import ServerProcess, running_server
from tests.integration.rtc import harness, wait_until
from tests.integration.test_span import room_metric

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with running_server(tmp_path_factory.mktemp("edge"), "--worker-index", "1") as s:
        yield s


class EdgePeers:
    """The home's view of its peers (sfu.span.Peers): one edge, spanning after one."""

    span_after = 1

    def __init__(self, edge: ServerProcess) -> None:
        self.edge = edge

    def urls(self) -> dict[int, str]:
        return {1: self.edge.url}

    def token(self, room_id: str) -> str:
        return internal_token(self.edge.secret, f"span:{room_id}")


def spanning(edge: ServerProcess) -> Callable[[str, SfuConfig, SendOffer], SpanningRouter]:
    return lambda room, config, send: SpanningRouter(room, config, send, EdgePeers(edge))


def lossy(sendto: Callable[..., Any], every: int) -> Callable[..., Any]:
    """A pipe that loses every `every`-th media datagram (a loopback pipe loses none)."""
    count = 0

    def send(data: bytes, addr: Any) -> Any:
        nonlocal count
        if data[0] == RTP:
            count += 1
            if count % every == 0:
                return len(data)
        return sendto(data, addr)

    return send


async def test_pipe_losses_are_repaired_from_the_homes_ring(edge: ServerProcess) -> None:
    room = "pipe-loss"
    async with harness(spanning(edge), room=room) as h:
        _, tracks, _ = await h.publish("chair")
        ids = [t.id for t in tracks]
        _, at_home = await h.subscribe("home", ids)  # the first stays home
        _, at_edge = await h.subscribe("far", ids)  # span_after 1: on the edge
        router = h.router
        assert isinstance(router, SpanningRouter)
        assert router.remote == {"far": 1} and set(router.links) == {1}
        assert router._pipe is not None
        router._pipe.sendto = lossy(router._pipe.sendto, every=15)
        video = at_edge["chair/camera"]
        assert await asyncio.wait_for(video.wait_frames(40), 30), vars(video.video)
        assert video.video.invalid == 0 and video.video.regressions == 0
        assert await wait_until(lambda: router.stats()["pipe_retransmitted"] > 0, 10)
        nacks = await room_metric(edge, "hoinghi_router_nacks_sent", room)
        assert nacks.get("", 0) > 0
        assert await asyncio.wait_for(at_home["chair/camera"].wait_frames(40), 30)
        assert (await at_edge["chair/microphone"].stats())["packets"] > 0  # audio too

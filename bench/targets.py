"""The two systems under test behind one small interface.

Server side (in the orchestrating process): `start() -> pid`, `spec()`, `stop()`.
Client side (in the publisher and subscriber processes), built from the JSON-able spec:
`publish(pc) -> info` and `subscribe(pc, on_offer)`, then `close()`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from aiortc import RTCPeerConnection


class Server(Protocol):
    system: str
    config: str

    @property
    def pid(self) -> int: ...

    async def start(self) -> int: ...

    def spec(self) -> dict[str, object]: ...

    async def forwarded_packets(self) -> int:
        """The server's own count of media packets sent to subscribers (for a cross-check)."""
        ...

    async def stop(self) -> None: ...


class Client(Protocol):
    async def publish(self, pc: RTCPeerConnection) -> dict[str, Any]: ...

    async def subscribe(
        self, pc: RTCPeerConnection, on_offer: Callable[[RTCPeerConnection, str], None]
    ) -> None: ...

    async def close(self) -> None: ...


def make_server(system: str, workdir: Path, config: str = "default") -> Server:
    if system == "hoinghi":
        from bench.hoinghi_target import HoinghiServer

        return HoinghiServer(workdir, config)
    if system == "janus":
        from bench.janus import JanusServer

        return JanusServer(workdir, config)
    raise ValueError(f"unknown system {system!r}")


def make_client(spec: dict[str, Any]) -> Client:
    if spec["system"] == "hoinghi":
        from bench.hoinghi_target import HoinghiClient

        return HoinghiClient(spec)
    if spec["system"] == "janus":
        from bench.janus_api import JanusClient

        return JanusClient(spec)
    raise ValueError(f"unknown system {spec['system']!r}")

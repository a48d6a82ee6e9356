"""`hoinghi` command line: serve, token, and dispatch to bridge / bench / loadtest."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any

# Subcommands owned by other packages: imported only when used, handed the rest of argv.
_DISPATCH = {
    "bridge": ("clients.bridge", "main"),
    "bench": ("bench.cli", "main"),
    "loadtest": ("bench.loadtest", "main"),
}


# `serve` flags that override a SignalingConfig field (the flag's name, dashes as underscores;
# rate flags go into RateLimits). Unset flags keep the config's defaults.
_LIMIT_FLAGS: list[tuple[str, type, str, str]] = [
    ("--max-participants", int, "N", "participants per conference (default 5000)"),
    ("--max-connections-per-token", int, "N", "live sockets per token (default 2)"),
    ("--max-message-bytes", int, "BYTES", "largest client message (default 65536)"),
    ("--rate-burst", int, "N", "messages a connection may send at once (default 50)"),
    ("--rate-per-s", float, "N", "sustained messages per second (default 20)"),
    ("--flood-close-after", int, "N", "messages over the rate before closing 4008 (200)"),
    ("--last-n", int, "N", "videos a subscriber gets besides chair, floor, spotlight (4)"),
    ("--last-n-max", int, "N", "most a chair console may ask for with set_last_n (25)"),
    ("--max-speakers", int, "N", "bridges holding the floor at once (default 1)"),
    ("--span-after", int, "N", "with --workers: a conference's subscribers on its own worker "
     "before more go to other workers (default 400; 0: never)"),
]
_RATE_FIELDS = {"rate_burst": "burst", "rate_per_s": "per_s",
                "flood_close_after": "flood_close_after"}  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hoinghi", description="hoinghi SFU and signaling")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the signaling server and SFU")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    serve.add_argument(
        "--ice-host",
        action="append",
        default=[],
        metavar="ADDR",
        help="address offered as ICE host candidate (repeatable; e.g. 127.0.0.1 on loopback)",
    )
    serve.add_argument(
        "--stun",
        action="append",
        default=[],
        metavar="URL",
        help="STUN server for clients and for the server's own peers (repeatable)",
    )
    serve.add_argument(
        "--turn",
        action="append",
        default=[],
        metavar="URL",
        help="TURN server handed to clients (repeatable)",
    )
    serve.add_argument("--turn-user")
    serve.add_argument("--turn-password")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="worker processes behind one port, rooms spread across them (0: one per core; "
        "default 1: a single process)",
    )
    serve.add_argument(
        "--park-idle-after",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="a publisher connection without RTP this long is read ten times a second instead "
        "of on every datagram (default 2; 0: never)",
    )
    serve.add_argument(
        "--frame-hold-ms",
        type=float,
        default=float(os.environ.get("HOINGHI_FRAME_HOLD_MS", "2")),
        metavar="MS",
        help="hold a video frame's first packets at most this long for its last one, so the "
        "frame leaves in one send per subscriber (default 2, or $HOINGHI_FRAME_HOLD_MS; 0: off)",
    )
    # Set by the front for its workers (signaling/cluster.py: worker_argv); shown in logs.
    serve.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    serve.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    limits = serve.add_argument_group("limits and conference control (defaults: docs/signaling.md)")
    for flag, kind, metavar, what in _LIMIT_FLAGS:
        limits.add_argument(flag, type=kind, metavar=metavar, help=what)

    token = sub.add_parser("token", help="print an access token (secret from HOINGHI_SECRET)")
    token.add_argument("--room", required=True)
    token.add_argument("--identity", required=True)
    token.add_argument("--role", required=True)
    token.add_argument("--name")
    token.add_argument("--province")
    token.add_argument("--ttl", type=float, default=3600.0, help="seconds (default 3600)")

    for name in _DISPATCH:
        sub.add_parser(name, help=f"see `hoinghi {name} --help`", add_help=False)
    return parser


def _sfu_config(args: argparse.Namespace) -> Any:
    from sfu.config import IceServer, SfuConfig

    stun = tuple(IceServer(urls=(url,)) for url in args.stun)
    turn: tuple[IceServer, ...] = ()
    if args.turn:
        turn = (
            IceServer(
                urls=tuple(args.turn), username=args.turn_user, credential=args.turn_password
            ),
        )
    # The server's own peers use STUN only (to learn a public address); TURN is for clients.
    if args.park_idle_after < 0:
        raise ValueError("--park-idle-after must be >= 0")
    if not 0 <= args.frame_hold_ms <= 100:
        raise ValueError("--frame-hold-ms must be between 0 and 100")
    return SfuConfig(
        ice_hosts=tuple(args.ice_host), ice_servers=stun, client_ice_servers=stun + turn,
        park_idle_after_s=args.park_idle_after, frame_hold_ms=args.frame_hold_ms,
    )


def _serve(args: argparse.Namespace, serve_args: Sequence[str]) -> int:
    from signaling.app import create_app
    from signaling.config import ConfigError, SignalingConfig

    workers = args.workers if args.workers > 0 else (os.cpu_count() or 1)
    if args.workers < 0:
        print("error: --workers must be 0 or more", file=sys.stderr)
        return 2
    who = "front" if workers > 1 else (
        "" if args.worker_index is None else f"worker{args.worker_index}")
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s {who + ' ' if who else ''}%(name)s: %(message)s",
    )
    if bool(args.turn_user) != bool(args.turn_password):
        print("error: --turn-user and --turn-password go together", file=sys.stderr)
        return 2
    try:
        config = SignalingConfig.from_env(sfu=_sfu_config(args), worker_index=args.worker_index,
                                          **_limit_overrides(args))
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.ice_host:
        from sfu.adapters.aiortc_tap import set_ice_hosts

        set_ice_hosts(tuple(args.ice_host))

    if workers > 1:
        from signaling.front import create_front_app

        app = create_front_app(config, serve_args, workers)
    else:
        app = create_app(config)
    server = _listening_server(_uvicorn_config(app, args, config.max_message_bytes))
    asyncio.run(server.serve())
    return 0 if server.started else 1


def _limit_overrides(args: argparse.Namespace) -> dict[str, Any]:
    from dataclasses import replace

    from signaling.limits import RateLimits

    overrides: dict[str, Any] = {}
    rate: dict[str, Any] = {}
    for flag, *_ in _LIMIT_FLAGS:
        name = flag[2:].replace("-", "_")
        value = getattr(args, name)
        if value is None:
            continue
        # Last-N 0: chair and floor only; span-after 0: a conference never spans workers
        if value < 0 or (value == 0 and name not in ("last_n", "span_after")):
            raise ValueError(f"{flag} must be positive")
        if name in _RATE_FIELDS:
            rate[_RATE_FIELDS[name]] = value
        else:
            overrides[name] = value
    if rate:
        overrides["rate"] = replace(RateLimits(), **rate)
    return overrides


def _uvicorn_config(app: Any, args: argparse.Namespace, max_message_bytes: int) -> Any:
    import uvicorn

    return uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        # The app refuses frames over 64 KiB with `too_large` (docs/signaling.md) and so must
        # see them; the websocket layer cuts off anything far bigger before it is buffered.
        ws_max_size=4 * max_message_bytes,
        # No websocket-level pings: the protocol's own keepalive (a client ping every
        # keepalive_s, silent connections closed after 3x) already finds dead peers and keeps
        # NATs open; uvicorn's would add a timer, a frame and a pong per bridge every 20 s.
        ws_ping_interval=None,
        # No permessage-deflate: every broadcast would be compressed once per bridge
        # (docs/signaling.md, Transport).
        ws_per_message_deflate=False,
        log_level=args.log_level,
        timeout_graceful_shutdown=5,
    )


MAIN_LOOP_S = 1.0  # the server's housekeeping tick (uvicorn's is 0.1 s)


def _listening_server(config: Any) -> Any:
    """A uvicorn.Server that prints `hoinghi listening on http://HOST:PORT` once it listens
    (the real port when --port 0): tests and scripts wait for that line."""
    import uvicorn

    class ListeningServer(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.should_exit or not self.servers:
                return
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            print(f"hoinghi listening on http://{shown}:{port}", flush=True)

        async def main_loop(self) -> None:
            # uvicorn's own polls should_exit every 0.1 s: 10 wake-ups a second, ~2 % of the
            # server's CPU with 50 bridges watching (bench/README.md). Once a second is all the
            # Date header needs; a signal ends the wait at once.
            self._wake = asyncio.Event()
            self._loop = asyncio.get_running_loop()
            counter = 0  # uvicorn's tick count: its on_tick renews the Date header every 10th
            while not await self.on_tick(counter):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), MAIN_LOOP_S)
                counter = (counter + 10) % 864000

        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            loop = getattr(self, "_loop", None)
            if loop is not None and not loop.is_closed():  # safe in a signal handler
                loop.call_soon_threadsafe(self._wake.set)

    return ListeningServer(config)


def _token(args: argparse.Namespace) -> int:
    from signaling.auth import issue_token
    from signaling.config import SECRET_ENV

    secret = os.environ.get(SECRET_ENV)
    if not secret:
        print(f"error: {SECRET_ENV} is not set", file=sys.stderr)
        return 2
    try:
        token = issue_token(
            secret,
            args.room,
            args.identity,
            args.role,
            name=args.name,
            province=args.province,
            ttl_s=args.ttl,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] in _DISPATCH:
        import importlib

        module_name, func = _DISPATCH[args_list[0]]
        module = importlib.import_module(module_name)
        result = getattr(module, func)(args_list[1:])
        return int(result or 0)
    args = _parser().parse_args(args_list)
    if args.command == "serve":
        return _serve(args, args_list[1:])
    if args.command == "token":
        return _token(args)
    return 2  # unreachable: argparse requires a known command


if __name__ == "__main__":
    sys.exit(main())

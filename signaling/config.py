"""Signaling configuration: one frozen dataclass, read from the environment in one place."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sfu.config import SfuConfig
from signaling.limits import RateLimits
from signaling.messages import MAX_MESSAGE_BYTES

SECRET_ENV = "HOINGHI_SECRET"


class ConfigError(Exception):
    """A required setting is missing or invalid; the server must not start."""


def default_web_root() -> Path | None:
    import clients

    # An editable install may present `clients` as a namespace package (no __file__).
    base = Path(clients.__file__).parent if clients.__file__ else Path(next(iter(clients.__path__)))
    web = base / "web"
    return web if web.is_dir() else None


@dataclass(frozen=True)
class SignalingConfig:
    secret: str
    sfu: SfuConfig = field(default_factory=SfuConfig)
    join_timeout_s: float = 10.0
    keepalive_s: float = 15.0
    # A connection silent for keepalive_s * this is closed (4010).
    keepalive_misses: int = 3
    max_message_bytes: int = MAX_MESSAGE_BYTES
    rate: RateLimits = field(default_factory=RateLimits)
    # Messages queued to one client before it counts as too slow and is closed (1008). About
    # one full roster of events: a bridge joining early must absorb everyone else's joins.
    send_queue_max: int = 4096
    # How long a closing connection may take to flush its queue, then to see the disconnect.
    close_grace_s: float = 5.0
    # Default per room; a room's `max_participants` attribute overrides it. 1 chair, 34
    # provinces and 3,321 communes fit with room for operators and observers.
    max_participants: int = 5000
    # Live websockets presenting the same token (its `jti`, else the token itself): a bridge
    # reconnecting over a dead socket needs two; a third is refused (too_many_connections).
    max_connections_per_token: int = 2
    # Last-N: the video each subscriber gets besides the chair, the floor and the spotlight.
    # Per room (POST /api/rooms `last_n`); `last_n_max` caps what a chair's console or an ops
    # wall (observe_all) may ask for with set_last_n.
    last_n: int = 4
    last_n_max: int = 25
    # Bridges that may hold the floor at once besides the chair (per room: `max_speakers`).
    max_speakers: int = 1
    # `serve --workers N` only: this worker's index (None: a single server or the front), and
    # how many of one conference's subscribers its home worker takes before the rest go to
    # other workers over pipes (sfu/span.py). ~400 subscribers at ~210 packets/s fill a core.
    worker_index: int | None = None
    span_after: int = 400
    web_root: Path | None = field(default_factory=default_web_root)

    def __post_init__(self) -> None:
        if not self.secret:
            raise ConfigError(f"{SECRET_ENV} is empty")
        if self.join_timeout_s <= 0 or self.keepalive_s <= 0 or self.keepalive_misses < 1:
            raise ConfigError("timeouts must be positive")
        if (self.max_message_bytes <= 0 or self.send_queue_max <= 0 or self.max_participants <= 0
                or self.max_connections_per_token <= 0 or self.max_speakers <= 0):
            raise ConfigError("limits must be positive")
        if not 0 <= self.last_n <= self.last_n_max:
            raise ConfigError("last_n must be from 0 to last_n_max")

    @property
    def silence_timeout_s(self) -> float:
        return self.keepalive_s * self.keepalive_misses

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> SignalingConfig:
        """The secret comes from HOINGHI_SECRET; fails loudly when it is not set."""
        env = os.environ if environ is None else environ
        secret = env.get(SECRET_ENV, "")
        if not secret:
            raise ConfigError(f"{SECRET_ENV} is not set: export a long random secret")
        return cls(secret=secret, **overrides)

    def with_sfu(self, sfu: SfuConfig) -> SignalingConfig:
        return replace(self, sfu=sfu)

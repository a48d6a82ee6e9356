"""Who the simulated bridges are, and when each one joins: the same answer on every machine.

`hoinghi loadtest` may run on several machines at once (`--worker-index I --worker-count C`).
Nothing is exchanged between them, so the plan is a pure function of the options: every machine
computes the whole plan and keeps its own slice (global index ≡ I mod C). Identities therefore
never collide, and bridge k joins at `start + k / ramp` whichever machine runs it, so C machines
together join at the requested rate.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

# The 34 provinces and centrally governed cities after the 2025 merger (short codes of our own;
# the server only carries them, it gives them no meaning).
PROVINCES = (
    "HNI", "HUE", "LCU", "DBN", "SLA", "LSN", "QNH", "THA", "NAN", "HTH", "CBG", "TQG",
    "LCI", "TNN", "PTO", "BNH", "HYN", "HPG", "NBH", "QTI", "DNG", "QNI", "GLI", "KHA",
    "LDG", "DLK", "HCM", "DNI", "TNH", "CTO", "VLG", "DTP", "CMU", "AGG",
)  # fmt: skip
COMMUNES_PER_PROVINCE_BRIDGE = 100  # national: about 34 provinces for 3,321 communes


@dataclass
class Options:
    """Everything a worker needs to rebuild the plan and run its bridges (JSON round-trips)."""

    url: str
    secret: str
    room: str
    bridges: int
    publishers: int = 1
    ramp: float = 10.0  # joins per second, all machines together
    duration: float = 30.0  # hold after the ramp, seconds
    shape: str = "flat"  # flat | national
    decode: int = 2  # bridges that fully decode and check pictures
    floor_turns: int = 0
    turn_s: float = 10.0
    worker_index: int = 0  # this machine's slice
    worker_count: int = 1
    join_timeout: float = 30.0  # scheduled start → media flowing, else the bridge failed
    ping_every: float = 2.0  # signaling RTT probe period per bridge
    quality_every: float = 5.0  # `quality` reports, as the web client sends them; 0: none
    width: int = 320
    height: int = 240
    fps: float = 15.0
    bitrate: int | None = None  # publishers' VP8 bit/s, pinned; None: aiortc's, REMB-steered
    ice_hosts: list[str] = field(default_factory=list)  # empty: loopback URL → 127.0.0.1
    ttl_s: float = 6 * 3600

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Options:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def public(self) -> dict[str, Any]:
        """The options as written to --json: never the secret."""
        out = self.to_json()
        out.pop("secret", None)
        return out

    @property
    def ramp_s(self) -> float:
        """Seconds from the start until the last bridge is scheduled."""
        return self.bridges / self.ramp

    def turns_that_fit(self) -> int:
        """Floor turns that fit in the hold window (turns start when the ramp ends)."""
        if self.shape != "national" or self.floor_turns <= 0 or self.turn_s <= 0:
            return 0
        return min(self.floor_turns, int(self.duration // self.turn_s))


@dataclass(frozen=True)
class BridgeSpec:
    index: int  # global: 0 .. bridges-1, also the join order
    identity: str
    role: str
    province: str | None
    publish: bool
    decode: bool
    expect_media: bool  # someone else publishes something this bridge should receive
    at: float  # seconds after the start when it joins

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def province_count(bridges: int) -> int:
    """National shape: one province bridge per ~100 bridges, 1 to 34 of them."""
    if bridges < 2:
        return 0
    return max(1, min(len(PROVINCES), round(bridges / COMMUNES_PER_PROVINCE_BRIDGE)))


def _roles(opts: Options) -> list[tuple[str, str, str | None]]:
    """(identity, role, province) for every global index."""
    n = opts.bridges
    if opts.shape == "flat":
        # Publishers take the chair role: a chair is always heard and always shown (docs/floor.md
        # rules 1 and Last-N), so every bridge receives every publisher, as in bench forward.
        out = []
        for i in range(n):
            if i < opts.publishers:
                out.append((f"lt-pub-{i:04d}", "chair", None))
            else:
                out.append((f"lt-bridge-{i:04d}", "commune", PROVINCES[i % len(PROVINCES)]))
        return out
    if opts.shape != "national":
        raise ValueError(f"unknown shape {opts.shape!r}")
    provinces = province_count(n)
    out = [("lt-chair", "chair", None)]
    for p in range(provinces):
        out.append((f"lt-province-{p + 1:02d}", "province", PROVINCES[p]))
    for c in range(n - 1 - provinces):
        # Communes spread over the provinces that exist, in turn.
        code = PROVINCES[c % max(1, provinces)] if provinces else None
        out.append((f"lt-commune-{c + 1:04d}", "commune", code))
    return out[:n]


def _decoders(candidates: list[int], k: int) -> set[int]:
    """k indexes spread evenly over the candidates: pictures checked early and late in the ramp."""
    if k <= 0 or not candidates:
        return set()
    if k >= len(candidates):
        return set(candidates)
    if k == 1:
        return {candidates[len(candidates) // 2]}
    step = (len(candidates) - 1) / (k - 1)
    return {candidates[round(i * step)] for i in range(k)}


def plan(opts: Options) -> list[BridgeSpec]:
    """Every bridge of the whole test (all machines), in join order."""
    if opts.bridges < 1 or opts.ramp <= 0:
        raise ValueError("--bridges must be ≥ 1 and --ramp > 0")
    roles = _roles(opts)
    # national: the chair is index 0 and publishes; the next publishers-1 bridges (provinces
    # first) publish too: they are the ones given the floor, so there is a picture to switch to.
    publishing = set(range(min(max(opts.publishers, 0), opts.bridges)))
    if opts.shape == "national" and opts.bridges:
        publishing.add(0)
    subscribers = [i for i in range(opts.bridges) if i not in publishing]
    decoding = _decoders(subscribers, opts.decode)
    specs = []
    for i, (identity, role, province) in enumerate(roles):
        others_publish = len(publishing - {i}) > 0
        specs.append(BridgeSpec(
            index=i, identity=identity, role=role, province=province,
            publish=i in publishing, decode=i in decoding, expect_media=others_publish,
            at=i / opts.ramp,
        ))  # fmt: skip
    return specs


def machine_slice(opts: Options, specs: list[BridgeSpec]) -> list[BridgeSpec]:
    """This machine's bridges (--worker-index of --worker-count)."""
    return [s for s in specs if s.index % opts.worker_count == opts.worker_index]


def local_share(specs: list[BridgeSpec], workers: int, worker: int) -> list[BridgeSpec]:
    """One local worker process's bridges: round-robin, so publishers and decoders spread."""
    return specs[worker::workers]


def floor_targets(opts: Options, specs: list[BridgeSpec]) -> list[str]:
    """Identities the chair gives the floor to, in turn.

    Publishing bridges first (a floor holder with a camera is what the conference shows), then
    provinces, then communes; cycled when there are more turns than candidates.
    """
    turns = opts.turns_that_fit()
    if turns == 0:
        return []
    pubs = [s.identity for s in specs if s.publish and s.role != "chair"]
    rest = [s.identity for s in specs if not s.publish and s.role == "province"]
    rest += [s.identity for s in specs if not s.publish and s.role == "commune"]
    pool = pubs + rest
    return [pool[i % len(pool)] for i in range(turns)] if pool else []


def default_workers() -> int:
    return max(1, (os.cpu_count() or 2) - 1)

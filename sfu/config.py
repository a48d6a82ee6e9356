"""SFU configuration: one frozen dataclass, read once at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class IceServer:
    """A STUN/TURN server, as handed to clients (and used by the server's own peers)."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"urls": list(self.urls)}
        if self.username is not None:
            out["username"] = self.username
        if self.credential is not None:
            out["credential"] = self.credential
        return out


@dataclass(frozen=True)
class SfuConfig:
    # Addresses ICE offers as host candidates. Empty: let aioice gather (which skips loopback).
    ice_hosts: tuple[str, ...] = ()
    # Servers the server's own peer connections use. Empty by default: aiortc would otherwise
    # add a public STUN server, and the server must never reach outside on its own.
    ice_servers: tuple[IceServer, ...] = ()
    # Servers handed to clients in `joined`.
    client_ice_servers: tuple[IceServer, ...] = ()
    keyframe_interval_s: float = 1.0  # at most one PLI per track per this interval
    retransmit_cache: int = 1024  # packets per track kept to answer NACKs (power of two)
    max_bitrate_bps: int = 2_500_000  # REMB cap advertised to publishers
    video_codecs: tuple[str, ...] = field(default=("VP8", "H264"))
    # A publisher connection with no RTP for this long is parked: its RTCP and consent checks
    # are read ten times a second by one poller instead of waking the loop each (an idle
    # commune's camera). Its next RTP waits at most 0.1 s. 0: never.
    park_idle_after_s: float = 2.0
    # A video frame's packets read before its last one (RTP marker bit) are held this long at
    # most, so the frame leaves in one round of the fan-out (one send, one GSO message per
    # subscriber) and its last packet does not wait behind a round for its first ones. 0: every
    # batch goes out as it was read.
    frame_hold_ms: float = 2.0

"""Router: one conference's media switch (mediasoup's word). Signaling talks only to this.

STUB: the API is fixed here; the implementation lands with the aiortc adapter.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sfu.config import SfuConfig


class SfuError(Exception):
    """Base of errors the SFU reports to signaling; `code` is the stable wire code."""

    code = "internal"


class SdpError(SfuError):
    code = "bad_sdp"


class CandidateError(SfuError):
    code = "bad_candidate"


class UnknownTrackError(SfuError):
    code = "unknown_track"


@dataclass(frozen=True)
class TrackInfo:
    id: str  # "{participant_id}/{source}"
    participant_id: str
    kind: str  # "audio" | "video"
    source: str  # "camera" | "microphone" | "screen"
    codec: str  # "opus" | "VP8" | "H264"
    muted: bool = False

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "participant_id": self.participant_id,
            "kind": self.kind,
            "source": self.source,
            "codec": self.codec,
            "muted": self.muted,
        }


# Called by the router when a subscriber connection needs (re)negotiation:
# send_offer(participant_id, sdp, mids) must deliver {"type":"offer","pc":"subscriber",...}.
SendOffer = Callable[[str, str, dict[str, str]], Awaitable[None]]


class Router:
    def __init__(self, room_id: str, config: SfuConfig, send_offer: SendOffer) -> None:
        self.room_id = room_id
        self.config = config
        self._send_offer = send_offer

    async def publish(
        self, participant_id: str, sdp: str, sources: dict[str, str]
    ) -> tuple[str, list[TrackInfo]]:
        """Answer a publisher offer. `sources` maps mid -> source. Returns (answer sdp, new
        tracks). Raises SdpError. A track id already published by this participant keeps its id
        (publisher reconnect): it is not returned as new."""
        raise NotImplementedError

    async def add_ice_candidate(self, participant_id: str, pc: str, candidate: dict | None) -> None:
        """pc is "publisher" or "subscriber". Raises CandidateError."""
        raise NotImplementedError

    async def subscribe(self, participant_id: str, track_ids: list[str]) -> None:
        """Add tracks to what the participant receives; negotiates via send_offer when needed.
        Raises UnknownTrackError (and changes nothing) if any id is unknown."""
        raise NotImplementedError

    async def unsubscribe(self, participant_id: str, track_ids: list[str]) -> None:
        raise NotImplementedError

    async def subscriber_answer(self, participant_id: str, sdp: str) -> None:
        """The client's answer to the last offer sent for its subscriber pc. Raises SdpError."""
        raise NotImplementedError

    def set_track_muted(self, track_id: str, muted: bool) -> TrackInfo:
        """Record mute state (the client's own). Raises UnknownTrackError."""
        raise NotImplementedError

    def tracks(self) -> list[TrackInfo]:
        raise NotImplementedError

    async def remove_participant(self, participant_id: str) -> list[str]:
        """Close the participant's connections; returns the ids of tracks that went away."""
        raise NotImplementedError

    def stats(self) -> dict[str, object]:
        """Counters for /metrics and tests: packets in/forwarded/dropped, NACKs, PLIs..."""
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

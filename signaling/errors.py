"""Signaling errors: one small tree, each class with the stable wire `code` of docs/signaling.md.

The `message` sent to a client is always the class's fixed text (or text this package wrote
itself, such as which field was wrong), never the text of an arbitrary exception: `internal`
discloses nothing, and whatever caused it is logged instead.
"""

from __future__ import annotations

# Close codes (docs/signaling.md). 1000/1008/1009 are RFC 6455's; 40xx are ours.
CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008  # the client did not read what it was sent (its queue overflowed)
CLOSE_TOO_LARGE = 1009
CLOSE_AUTH = 4001
CLOSE_PROTOCOL = 4002
CLOSE_ROOM = 4003
CLOSE_REMOVED = 4004  # a moderator removed this identity; it may not rejoin until readmitted
CLOSE_TOKEN_IN_USE = 4005  # too many live connections with the same token
CLOSE_RATE = 4008
CLOSE_REPLACED = 4009
CLOSE_KEEPALIVE = 4010
CLOSE_TRY_AGAIN = 1013  # RFC 6455 "try again later": the room's worker is down

Re = str | int | None


class SignalingError(Exception):
    """Base of every error a client can be told about.

    `close_code` is None when the connection stays open after the error reply.
    `re` is the id of the request that caused it, echoed back as `"re"`.
    """

    code = "internal"
    default_message = "internal server error"
    close_code: int | None = None

    def __init__(self, message: str | None = None, *, re: Re = None) -> None:
        self.message = message or self.default_message
        self.re = re
        super().__init__(self.message)


class InternalError(SignalingError):
    code = "internal"


# --- the client sent something malformed (its fault; connection stays open) -----------------


class ProtocolError(SignalingError):
    code = "bad_message"
    default_message = "malformed message"


class BadJson(ProtocolError):
    code = "bad_json"
    default_message = "the frame is not a JSON object"


class BadMessage(ProtocolError):
    code = "bad_message"
    default_message = "a field is missing or has the wrong type"


class UnknownType(ProtocolError):
    code = "unknown_type"
    default_message = "unknown message type"


class TooLarge(ProtocolError):
    code = "too_large"
    default_message = "message over 64 KiB"
    close_code = CLOSE_TOO_LARGE


class RateLimited(ProtocolError):
    code = "rate_limited"
    default_message = "too many messages"


class Flooding(RateLimited):
    """Still rate_limited on the wire, but the connection is closed (4008)."""

    default_message = "too many messages; closing"
    close_code = CLOSE_RATE


class NotJoined(ProtocolError):
    code = "not_joined"
    default_message = "send join first"


class AlreadyJoined(ProtocolError):
    code = "already_joined"
    default_message = "already joined"


class JoinTimeout(ProtocolError):
    code = "join_timeout"
    default_message = "no join in time"
    close_code = CLOSE_AUTH


class UnsupportedProtocol(ProtocolError):
    code = "unsupported_protocol"
    default_message = "protocol version not supported"
    close_code = CLOSE_PROTOCOL


# --- credentials (connection closed 4001) -----------------------------------------------------


class AuthError(SignalingError):
    code = "token_invalid"
    default_message = "invalid token"
    close_code = CLOSE_AUTH


class TokenMissing(AuthError):
    code = "token_missing"
    default_message = "no token"


class TokenInvalid(AuthError):
    code = "token_invalid"
    default_message = "invalid token"


class TokenExpired(AuthError):
    code = "token_expired"
    default_message = "token expired"


class WrongRoom(AuthError):
    code = "wrong_room"
    default_message = "the token is for another room"


# --- admission and permissions -----------------------------------------------------------------


class RoomFull(SignalingError):
    code = "room_full"
    default_message = "the room is full"
    close_code = CLOSE_ROOM


class RoomLocked(SignalingError):
    code = "room_locked"
    default_message = "the room is locked"
    close_code = CLOSE_ROOM


class Removed(SignalingError):
    code = "removed"
    default_message = "removed from the conference by a moderator"
    close_code = CLOSE_REMOVED


class TooManyConnections(SignalingError):
    code = "too_many_connections"
    default_message = "too many live connections with this token"
    close_code = CLOSE_TOKEN_IN_USE


class Unavailable(SignalingError):
    """Only with `serve --workers`: the worker carrying the room is down (restarting)."""

    code = "unavailable"
    default_message = "the server carrying this room is restarting; join again"
    close_code = CLOSE_TRY_AGAIN


class Forbidden(SignalingError):
    code = "forbidden"
    default_message = "not allowed for this role"


# --- conference control (docs/floor.md; FloorControl's refusals) --------------------------------


class UnknownParticipant(SignalingError):
    code = "unknown_participant"
    default_message = "no such participant in the conference"


class NotAllowedInState(SignalingError):
    code = "not_allowed_in_state"
    default_message = "not possible in the participant's current state"


class Replaced(SignalingError):
    code = "replaced"
    default_message = "the same identity joined again"
    close_code = CLOSE_REPLACED


# Codes the media plane (sfu.router.SfuError.code) may report, with the text a client gets.
# Anything else from the SFU becomes `internal`.
SFU_CODES: dict[str, str] = {
    "bad_sdp": "SDP could not be parsed or negotiated",
    "bad_candidate": "malformed ICE candidate",
    "unknown_track": "no such track",
}

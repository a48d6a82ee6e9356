"""One client connection's protocol state, sans I/O (after h11 / websockets' protocol objects).

Feed it frames (`receive`) and the clock (`tick`, `deadline`); it returns actions for the shell
to carry out, in order: `Send` a message, `Close` the socket, or run a request that needs the
room (`JoinRequest`, `Request`). The shell reports how a join went (`join_accepted` /
`fail`). Nothing here awaits, touches a socket, or reads the wall clock unless handed one.

States and what moves between them:

    AWAITING_JOIN --join (token ok)--> JOINING --join_accepted--> JOINED --leave--> CLOSED
    AWAITING_JOIN --join_timeout / bad credentials / bad protocol--> CLOSED
    JOINING --fail (closing error)--> CLOSED; --fail (other)--> AWAITING_JOIN
    JOINING, JOINED --silent for 3 x keepalive_s--> CLOSED (4010)
    any --too_large / flooding / closed()--> CLOSED

Rules: every frame counts as activity and against the rate limit, before it is parsed; in
AWAITING_JOIN anything but `join` is `not_joined`; grants are checked here, before the room
sees a request.
"""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass

from sfu.router import SfuError
from signaling import messages as m
from signaling.auth import Grant, verify_token
from signaling.config import SignalingConfig
from signaling.errors import (
    CLOSE_KEEPALIVE,
    CLOSE_NORMAL,
    SFU_CODES,
    AlreadyJoined,
    AuthError,
    Flooding,
    Forbidden,
    InternalError,
    JoinTimeout,
    NotJoined,
    RateLimited,
    Re,
    SignalingError,
    UnsupportedProtocol,
    WrongRoom,
)
from signaling.limits import Clock, RateLimiter, Verdict

logger = logging.getLogger(__name__)


class State(enum.Enum):
    AWAITING_JOIN = "awaiting_join"
    JOINING = "joining"
    JOINED = "joined"
    CLOSED = "closed"


@dataclass(frozen=True)
class Send:
    message: m.JsonObject


@dataclass(frozen=True)
class Close:
    code: int
    reason: str


@dataclass(frozen=True)
class JoinRequest:
    message: m.Join
    grant: Grant


@dataclass(frozen=True)
class Request:
    """A joined participant's request the room must carry out (publish, subscribe, leave...)."""

    message: m.Message


Action = Send | Close | JoinRequest | Request

# States in which a silent client is timed out (keepalive).
_LIVE = (State.JOINING, State.JOINED)


class SessionCore:
    def __init__(
        self,
        config: SignalingConfig,
        *,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        self.config = config
        self._clock = clock
        self._wall_clock = wall_clock  # token expiry is in unix seconds
        self._limiter = RateLimiter(config.rate, clock)
        self.state = State.AWAITING_JOIN
        self.grant: Grant | None = None
        self.auto_subscribe = True
        now = clock()
        self._join_deadline = now + config.join_timeout_s
        self._last_rx = now

    # --- input ---------------------------------------------------------------------------------

    def receive(self, frame: str | bytes) -> list[Action]:
        """One websocket frame (text as str, binary as bytes)."""
        if self.state is State.CLOSED:
            return []
        self._last_rx = self._clock()
        try:
            m.check_size(frame, self.config.max_message_bytes)
            verdict = self._limiter.check()
            if verdict is not Verdict.ALLOW:
                # Not handled, but the client may still match the error to its request.
                re = m.peek_id(frame)
                raise Flooding(re=re) if verdict is Verdict.CLOSE else RateLimited(re=re)
            return self._dispatch(m.parse(frame, self.config.max_message_bytes))
        except SignalingError as exc:
            return self._error(exc)

    def tick(self) -> list[Action]:
        """Check the timers; call at (or after) `deadline()`."""
        now = self._clock()
        if self.state is State.AWAITING_JOIN and now >= self._join_deadline:
            return self._error(JoinTimeout())
        if self.state in _LIVE and now >= self._last_rx + self.config.silence_timeout_s:
            self.state = State.CLOSED
            return [Close(CLOSE_KEEPALIVE, "keepalive_timeout")]
        return []

    def deadline(self) -> float | None:
        """When `tick` next has something to do (clock seconds), or None."""
        if self.state is State.AWAITING_JOIN:
            return self._join_deadline
        if self.state in _LIVE:
            return self._last_rx + self.config.silence_timeout_s
        return None

    # --- what the shell reports back -----------------------------------------------------------

    def join_accepted(self) -> None:
        if self.state is State.JOINING:
            self.state = State.JOINED

    def fail(self, exc: BaseException, re: Re = None, *, context: str = "request") -> list[Action]:
        """An error from carrying out a request (or a join): the error reply, and a close if
        the error closes. Exception text reaches the client only for our own SignalingErrors."""
        err: SignalingError
        if isinstance(exc, SignalingError):
            err = exc
            if err.re is None:
                err.re = re
        elif isinstance(exc, SfuError) and exc.code in SFU_CODES:
            err = SignalingError(SFU_CODES[exc.code], re=re)
            err.code = exc.code
        else:
            logger.error(
                "internal error in %s (participant %s)",
                context,
                self.grant.identity if self.grant else "-",
                exc_info=exc,
            )
            err = InternalError(re=re)
        if self.state is State.JOINING and err.close_code is None:
            self.state = State.AWAITING_JOIN  # the join did not happen; the client may retry
            self.grant = None
        return self._error(err)

    def closed(self) -> None:
        """The socket is gone (or a close was sent): ignore anything further."""
        self.state = State.CLOSED

    @property
    def participant_id(self) -> str | None:
        return self.grant.identity if self.grant else None

    # --- internals -----------------------------------------------------------------------------

    def _error(self, exc: SignalingError) -> list[Action]:
        actions: list[Action] = [Send(m.error(exc.code, exc.message, exc.re))]
        if exc.close_code is not None:
            self.state = State.CLOSED
            actions.append(Close(exc.close_code, exc.code))
        return actions

    def _dispatch(self, msg: m.Message) -> list[Action]:
        if self.state is not State.JOINED:
            if not isinstance(msg, m.Join) or self.state is State.JOINING:
                raise NotJoined(re=msg.id)
            return self._join(msg)
        if isinstance(msg, m.Join):
            raise AlreadyJoined(re=msg.id)
        if isinstance(msg, m.Ping):
            return [Send(m.pong(msg.id))]
        if isinstance(msg, m.Leave):
            self.state = State.CLOSED
            return [Request(msg), Send(m.left(msg.id)), Close(CLOSE_NORMAL, "left")]
        self._authorize(msg)
        return [Request(msg)]

    def _join(self, msg: m.Join) -> list[Action]:
        if msg.protocol != m.PROTOCOL:
            raise UnsupportedProtocol(re=msg.id)
        try:
            grant = verify_token(self.config.secret, msg.token, now=self._wall_clock())
        except AuthError as exc:
            exc.re = msg.id
            raise
        if msg.room is not None and msg.room != grant.room:
            raise WrongRoom(re=msg.id)
        self.state = State.JOINING
        self.grant = grant
        self.auto_subscribe = msg.auto_subscribe
        return [JoinRequest(msg, grant)]

    def _authorize(self, msg: m.Message) -> None:
        assert self.grant is not None
        grants = self.grant.grants
        if isinstance(msg, m.Publish) and not grants.publish:
            raise Forbidden("this role may not publish", re=msg.id)
        if isinstance(msg, m.Trickle) and msg.pc == "publisher" and not grants.publish:
            raise Forbidden("this role may not publish", re=msg.id)
        if isinstance(msg, m.Subscribe) and not grants.subscribe:
            raise Forbidden("this role may not subscribe", re=msg.id)
        if isinstance(msg, m.Mute) and not msg.track.startswith(self.grant.identity + "/"):
            raise Forbidden("only the owner may mute a track", re=msg.id)

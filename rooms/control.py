"""RoomControl: one live room's conference control, between FloorControl and the media Router.

FloorControl (rooms/floor.py) decides who may speak and be shown; the Last-N planner
(sfu/core/lastn.py) decides which video each subscriber gets. This class only carries their
decisions out: after every floor result it broadcasts the events, tells each affected
participant its own `floor_state`, re-opens or closes audio gates in the Router, and re-plans
Last-N, applying only the diff. Nothing here awaits: membership (join/leave/remove) is
serialized by the RoomManager's per-room lock around these calls.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from statistics import median
from typing import TYPE_CHECKING, Any

from rooms.floor import ErrorCode, FloorControl, FloorEvent, FloorResult
from rooms.model import Participant
from sfu.core import lastn
from sfu.router import Router, TrackInfo
from signaling import messages as m
from signaling.errors import (
    BadMessage,
    Forbidden,
    NotAllowedInState,
    NotJoined,
    Removed,
    RoomLocked,
    SignalingError,
    UnknownParticipant,
    UnknownType,
)

if TYPE_CHECKING:
    from rooms.peer import Peer

logger = logging.getLogger(__name__)

# (message, exclude, about): to the sessions whose roster lists `about` (rooms/audience.py)
Broadcast = Callable[[dict[str, Any], "Peer | None", str | None], None]
Fixed = tuple[tuple[str, ...], tuple[str, ...], str | None]  # chairs, floor holders, spotlight

# The actor of changes the server makes itself (a lock set through the store). '@' cannot
# appear in a token identity, so it never names a participant.
SERVER_ACTOR = "@server"
# Floor events after which the Last-N plan may differ.
REPLAN_ON = frozenset({"participant_joined", "participant_left", "floor_given", "floor_taken",
                       "spotlight_changed"})
# Events sent only to the sessions whose roster lists their participant (rooms/roster.py): a
# surge of joins or of raised hands must not reach every bridge of a national conference.
ABOUT_TARGET = frozenset({"participant_joined", "participant_left", "hand_raised",
                          "hand_lowered", "participant_muted", "participant_unmuted"})
_ERRORS: dict[ErrorCode, type[SignalingError]] = {
    ErrorCode.FORBIDDEN: Forbidden,
    ErrorCode.NOT_JOINED: NotJoined,
    ErrorCode.UNKNOWN_PARTICIPANT: UnknownParticipant,
    ErrorCode.NOT_ALLOWED_IN_STATE: NotAllowedInState,
    ErrorCode.ROOM_LOCKED: RoomLocked,
    ErrorCode.REMOVED: Removed,
    ErrorCode.BAD_ARGS: BadMessage,
    ErrorCode.UNKNOWN_ACTION: UnknownType,
}


def check(result: FloorResult) -> FloorResult:
    """The result, or the signaling error its code stands for."""
    if not result.ok:
        assert result.code is not None
        raise _ERRORS[result.code]()
    return result


def floor_join(floor: FloorControl, p: Participant, now: float) -> FloorResult:
    """Admit `p` to the floor (RoomLocked / Removed if refused). The token's grants, already
    narrowed, narrow the floor's role grants the same way."""
    grants = {g: p.can(g) for g in ("publish", "moderate")}
    args = {"name": p.name, "province": p.province, "grants": grants}
    return check(floor.handle(p.id, p.role, "join", args, now))


def event_message(ev: FloorEvent) -> dict[str, Any]:
    """One logged event as the wire carries it. Joins and leaves keep the shape clients already
    know (docs/signaling.md), with the log's `seq` added."""
    d = ev.details
    if ev.type == "participant_joined" and ev.target is not None:
        participant = {"id": ev.target, "name": d.get("name") or ev.target,
                       "role": d.get("role"), "province": d.get("province")}
        return m.participant_joined(participant, seq=ev.seq, time=ev.time,
                                    invited=d.get("invited", False))
    if ev.type == "participant_left" and ev.target is not None:
        return m.participant_left(ev.target, d.get("reason", "left"), seq=ev.seq, time=ev.time,
                                  actor=ev.actor)
    return m.floor_event(ev.type, ev.seq, ev.time, ev.actor, ev.target, d)


class RoomControl:
    def __init__(
        self,
        floor: FloorControl,
        router: Router,
        peers: Mapping[str, Peer],
        broadcast: Broadcast,
        *,
        last_n: int,
        last_n_max: int,
        subscribe_by_plan: bool = False,
        feature: Callable[[Iterable[str]], None] = lambda pids: None,
    ) -> None:
        self.floor = floor
        self.router = router
        self.peers = peers  # the room's live sessions, owned by the manager
        self._broadcast = broadcast
        # Those everyone is to be told of now: chairs, floor, spotlight, dominant speaker, and
        # whoever a Last-N plan shows (rooms/roster.py).
        self._feature = feature
        self.last_n = last_n
        self.last_n_max = max(last_n_max, last_n)
        self._n_for: dict[str, int] = {}  # set_last_n overrides
        self._plan: lastn.Plan = {}  # what the Router was last told
        # What the last full plan was made from (chairs, floor, spotlight; ranking; available):
        # one subscriber can be planned alone against it, as if with everyone.
        self._inputs: tuple[Fixed, list[str], set[str]] = (((), (), None), [], set())
        self._audio: dict[str, bool] = {}  # audio gates the Router was last told
        self._heard: set[str] = set()  # those of them open
        self._client_quality: dict[str, dict[str, Any]] = {}
        self._positions: dict[str, int] = {}  # hand queue positions participants were told
        # Auto-subscribers get the tracks the plan and the floor give them, not every track
        # (a conference's thousands of bridges): one sync task per subscriber at a time.
        self.subscribe_by_plan = subscribe_by_plan
        self._syncing: dict[str, asyncio.Task[None]] = {}
        self._resync: set[str] = set()
        self.subscription_syncs = 0  # runs of `_sync_loop` (GET /api/rooms/{room}/media)
        self.replans = 0  # full Last-N plans (idem)
        router.on_dominant_speaker = self._on_dominant_speaker

    # --- floor results ---------------------------------------------------------------------

    def apply(self, result: FloorResult, *, exclude: Peer | None = None, replan: bool = True,
              hold_left: bool = False) -> list[dict[str, Any]]:
        """Carry out one floor result: events to everyone (but `exclude`), `floor_state` to
        each affected participant, audio gates, Last-N. With `hold_left`, `participant_left`
        messages are returned instead of sent, for the caller to send once the participant's
        tracks are gone (clients see track_unpublished before the participant leaves)."""
        held: list[dict[str, Any]] = []
        # A bridge given the floor is introduced before `floor_given` names it; a joiner
        # after its own `participant_joined`.
        joining = {ev.target for ev in result.events if ev.type == "participant_joined"}
        self._feature(p for p in self._fixed_ids() if p not in joining)
        for ev in result.events:
            msg = event_message(ev)
            about = ev.target if ev.type in ABOUT_TARGET else None
            if hold_left and ev.type == "participant_left":
                held.append(msg)
            else:
                self._broadcast(msg, exclude, about)
        if joining:
            self._feature(self._fixed_ids())
        told: set[str] = set()
        for pid in result.affected:
            self._sync_audio(pid)
            told.add(pid)
            self._send_state(pid, exclude)
        if any(ev.type == "hand_lowered" for ev in result.events):
            # Everyone behind a lowered hand moved up the queue: their own state changed too.
            queue = [h["id"] for h in self.floor.snapshot()["hands"]]
            for position, pid in enumerate(queue, 1):
                if pid not in told and self._positions.get(pid) != position:
                    self._send_state(pid, exclude)
            self._positions = dict(zip(queue, range(1, len(queue) + 1), strict=True))
        elif any(ev.type == "hand_raised" for ev in result.events):
            for ev in result.events:
                if ev.type == "hand_raised" and ev.target is not None:
                    self._positions[ev.target] = ev.details.get("position", 0)
        if replan and any(ev.type in REPLAN_ON for ev in result.events):
            if all(ev.type == "participant_joined" for ev in result.events):
                # A joiner publishes nothing yet: nobody else's plan changes (3,000 bridges
                # joining must not cost 3,000 full plans).
                for ev in result.events:
                    if ev.target is not None:
                        self._plan_one(ev.target)
            else:
                self.replan()
        return held

    def _send_state(self, pid: str, exclude: Peer | None) -> None:
        peer = self.peers.get(pid)
        state = self.floor.state_of(pid)
        # A joiner learns its state from `joined`; one that left has none.
        if peer is not None and peer is not exclude and state is not None:
            peer.send(m.floor_state(state))

    def act(self, actor: Participant, action: str, args: Mapping[str, Any],
            now: float) -> FloorResult:
        """A participant's control request, checked by the floor (raises its error)."""
        if action == "roll_call":
            self._refresh_quality()
        return check(self.floor.handle(actor.id, actor.role, action, args, now))

    def leave(self, p: Participant, reason: str, now: float) -> FloorResult:
        self._n_for.pop(p.id, None)
        self._client_quality.pop(p.id, None)
        result = self.floor.handle(p.id, p.role, "leave", {"reason": reason}, now)
        if not result.ok:  # never joined the floor (cannot happen): nothing to undo
            logger.warning("floor leave refused participant=%s: %s", p.id, result.code)
        return result

    def set_locked(self, locked: bool, now: float) -> None:
        """A lock set from outside (the store / HTTP API), as if an operator had set it."""
        if self.floor.locked != locked:
            action = "lock" if locked else "unlock"
            self.apply(check(self.floor.handle(SERVER_ACTOR, "operator", action, None, now)))

    def snapshot(self, pid: str) -> dict[str, Any]:
        return self.floor.snapshot(pid)

    def forget(self, pid: str) -> None:
        """A participant gone from the room: nothing of it stays in the plan's bookkeeping."""
        self._audio.pop(pid, None)
        self._heard.discard(pid)
        self._plan.pop(pid, None)

    def _sync_audio(self, pid: str) -> None:
        # Only changes reach the Router: mute_all touches thousands of bridges, most of which
        # were not heard anyway, and each Router call scans the room's producers.
        allowed = self.floor.audio_allowed(pid)
        if self._audio.get(pid) != allowed:
            self.router.set_audio_allowed(pid, allowed)
            self._audio[pid] = allowed
            (self._heard.add if allowed else self._heard.discard)(pid)
            if self.subscribe_by_plan and self._tracks_of([pid], "audio"):
                for other in self.peers:
                    if other != pid:
                        self.sync_tracks(other)  # everyone else hears (or stops hearing) it

    # --- Last-N ----------------------------------------------------------------------------

    def n_of(self, pid: str) -> int:
        return self._n_for.get(pid, self.last_n)

    def set_last_n(self, p: Participant, n: int) -> int:
        """A subscriber asks for n other videos; the chair's console and ops walls
        (observe_all) may go up to last_n_max, bridges only down. Returns the n applied."""
        n = min(n, self.last_n_max if p.can("observe_all") else self.last_n)
        if n == self.last_n:
            self._n_for.pop(p.id, None)
        else:
            self._n_for[p.id] = n
        self._plan_one(p.id)  # nobody else's view changes
        return n

    def replan(self) -> None:
        """Recompute who sees whose video and tell the Router only what changed."""
        subscribers = [pid for pid, peer in self.peers.items() if peer.participant.can("subscribe")]
        available = self._video_publishers()
        ranking = self._ranking(available)
        fixed = self._fixed()
        new = lastn.plan(subscribers, *fixed, ranking, self.last_n, available,
                         self._n_for or None)
        for sub in lastn.diff(self._plan, new):
            if sub in new:
                self._feature(new[sub])
                self.router.set_video_from(sub, new[sub])
                self.sync_tracks(sub)
        self._plan = new
        self._inputs = (fixed, ranking, available)
        self.replans += 1

    def video_published(self, pid: str) -> bool:
        """`pid`'s video is available now: re-plan, unless it enters nobody's plan (a
        commune's camera in a national room: `lastn.shown_by_nobody`), where only the inputs
        that `_plan_one` plans joiners against take it in. Returns whether anyone may be
        shown it."""
        fixed = self._fixed()
        available = self._inputs[2] | {pid}
        ranking = self._ranking(available)
        n_max = max([self.last_n, *self._n_for.values()])
        if pid in self._inputs[2] or not lastn.shown_by_nobody(pid, *fixed, ranking, n_max,
                                                                  self._inputs[2]):
            self.replan()
            return True
        self._inputs = (fixed, ranking, available)
        return False

    def after_leave(self, pid: str) -> None:
        """A participant and its tracks are gone: re-plan only if somebody was shown its video."""
        if pid in lastn.demanded(self._plan):
            self.replan()

    def _plan_one(self, pid: str) -> None:
        """One subscriber's plan, from the inputs of the last full plan: what `replan` would
        give it, without planning everyone (a joiner, a set_last_n)."""
        peer = self.peers.get(pid)
        if peer is None or not peer.participant.can("subscribe"):
            return
        fixed, ranking, available = self._inputs
        new = lastn.select_video(pid, *fixed, ranking, self.n_of(pid), available)
        if self._plan.get(pid) != new:
            self._feature(new)
            self._plan[pid] = new
            self.router.set_video_from(pid, new)
            self.sync_tracks(pid)

    # --- plan-driven auto-subscription -----------------------------------------------------

    def wanted_tracks(self, pid: str) -> list[str] | None:
        """What an auto-subscribing `pid` is subscribed to: the video of its plan and the audio
        the floor lets it hear (None: every track, where the room does not subscribe by plan).
        Costs its plan and the heard, not the room's tracks: every joiner of a national
        conference asks, and the room may hold thousands of tracks by then."""
        if not self.subscribe_by_plan:
            return None
        video = [p for p in self._plan.get(pid, ()) if p != pid]
        heard = [p for p in self._heard if p != pid]
        tracks = self._tracks_of(video, "video") + self._tracks_of(heard, "audio")
        return sorted(t.id for t in tracks)

    def _tracks_of(self, pids: list[str], kind: str) -> list[TrackInfo]:
        return [p.track for pid in pids for p in self.router.producers_of(pid) if p.kind == kind]

    def sync_published(self, pid: str, tracks: list[TrackInfo],
                       shown: bool) -> list[asyncio.Future[None]]:
        """After `pid` published `tracks` (and `video_published`, which says whether anyone
        may be `shown` its video): syncs of only the auto-subscribers that want one of them
        (everyone for audio the floor lets be heard, those shown its video), not of the whole
        room: a commune's camera shown to nobody must not cost 3,000 syncs."""
        heard = pid in self._heard and any(t.kind == "audio" for t in tracks)
        if not (heard or shown):
            return []
        syncs = [self.sync_tracks(o) for o in self.peers
                 if o != pid and (heard or (shown and pid in self._plan.get(o, ())))]
        return [s for s in syncs if s is not None]

    def sync_tracks(self, pid: str) -> asyncio.Future[None] | None:
        """Bring an auto-subscriber's subscriptions to `wanted_tracks`, unsubscribing and
        subscribing in one renegotiation (freed slots are reused). Returns the task to await;
        None if there is nothing to do. Requests made while one runs fold into one more run."""
        peer = self.peers.get(pid)
        if not (self.subscribe_by_plan and peer is not None and peer.auto_subscribe
                and peer.participant.can("subscribe")):
            return None
        self._resync.add(pid)
        task = self._syncing.get(pid)
        if task is None or task.done():
            task = self._syncing[pid] = asyncio.ensure_future(self._sync_loop(pid))
        return task

    async def _sync_loop(self, pid: str) -> None:
        try:
            while pid in self._resync:
                self._resync.discard(pid)
                self.subscription_syncs += 1
                wanted = self.wanted_tracks(pid)
                if pid not in self.peers or wanted is None:
                    return
                have = self.router.subscribed(pid)
                add = [t for t in wanted if t not in have]
                remove = sorted(have - set(wanted))
                if add or remove:
                    await self.router.update_subscriptions(pid, add, remove)
        except Exception:
            logger.exception("auto-subscribe failed participant=%s", pid)
        finally:
            self._resync.discard(pid)
            if self._syncing.get(pid) is asyncio.current_task():
                del self._syncing[pid]

    def _fixed(self) -> Fixed:
        """Who everyone is shown, N or not: chairs, floor holders, spotlight."""
        return (self.floor.chair_ids(), self.floor.floor_holders(), self.floor.spotlight)

    def _fixed_ids(self) -> list[str]:
        chairs, holders, spotlight = self._fixed()
        return [*chairs, *holders, *([spotlight] if spotlight else [])]

    def _video_publishers(self) -> set[str]:
        return {p.track.participant_id for p in self.router.producers.values() if p.video}

    def _ranking(self, available: set[str]) -> list[str]:
        """The speaker ranking (dominant first, then recent speech), then the publishers that
        never spoke in join order: N always means N videos when there are N to show, and the
        order only changes when someone speaks, so idle rooms do not churn."""
        ranked = self.router.speaker.ranking()
        seen = set(ranked)
        return ranked + [pid for pid in self.peers if pid in available and pid not in seen]

    def _on_dominant_speaker(self, pid: str) -> None:
        # Called from the Router's timer task; sending only queues, so no I/O happens here.
        try:
            self._feature((pid,))
            self._broadcast(m.dominant_speaker(pid), None, None)
            self.replan()
        except Exception:
            logger.exception("dominant speaker update failed participant=%s", pid)

    # --- connection quality ----------------------------------------------------------------

    def report_quality(self, pid: str, quality: dict[str, Any]) -> None:
        self._client_quality[pid] = quality

    def quality_of(self, pid: str) -> dict[str, Any] | None:
        """Client-reported (`quality` messages) and server-measured (RTCP receiver reports
        from its subscriber connection) quality, side by side: they can disagree."""
        client, server = self._client_quality.get(pid), self._server_quality(pid)
        if client is None and server is None:
            return None
        return {"client": client, "server": server}

    def _server_quality(self, pid: str) -> dict[str, Any] | None:
        sub = self.router.subscribers.get(pid)
        if sub is None:
            return None
        live = [c for c in sub.consumers.values() if c.ready and not c.paused]
        if not live:
            return None
        rtts = [c.rtt_s * 1000 for c in live if c.rtt_s is not None]
        jitter = max(c.jitter * 1000 / c.producer.clock_rate for c in live)
        return {"loss": round(max(c.fraction_lost for c in live), 4),
                "jitter_ms": round(jitter, 1),
                "rtt_ms": round(median(rtts), 1) if rtts else None, "tracks": len(live)}

    def _refresh_quality(self) -> None:
        for pid in self.peers:
            quality = self.quality_of(pid)
            if quality is not None:
                self.floor.set_quality(pid, quality)

    # --- read-only views -------------------------------------------------------------------

    def media_view(self, participant: str | None = None) -> dict[str, Any]:
        """What each subscriber is planned to and does receive (debug and tests)."""
        subs = [participant] if participant is not None else list(self._plan)
        return {
            "last_n": self.last_n,
            "dominant": self.router.speaker.dominant,
            "chairs": list(self.floor.chair_ids()),
            "floor": list(self.floor.floor_holders()),
            "spotlight": self.floor.spotlight,
            "audio_allowed": sorted(p for p in self.peers if self.floor.audio_allowed(p)),
            "subscription_syncs": self.subscription_syncs,
            "replans": self.replans,
            "demanded": sorted(lastn.demanded(self._plan)),
            # per video track: subscribers it is forwarded to now (0: no work done for it)
            "forwarding": {t: sum(1 for c in p.consumers if not c.paused)
                           for t, p in self.router.producers.items() if p.video},
            "plan": {s: sorted(self._plan.get(s, ())) for s in subs},
            "receiving_video": {s: sorted(self.router.receiving_video(s)) for s in subs},
        }

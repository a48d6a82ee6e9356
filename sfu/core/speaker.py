"""Dominant speaker identification from RFC 6464 audio levels, all participants at once (numpy).

The algorithm is Volfin & Cohen, "Dominant Speaker Identification for Multipoint
Videoconferencing" (2012), in the form Jitsi applies to RFC 6464 levels:

- every 20 ms frame a participant has a loudness 0..127 (127 - dBov; 0 is silence), quantized
  into N1 = 13 "sub-bands" (loudness // 10) once it clears the participant's noise gate;
- medium window: per 100 ms block (N2 = 5 frames), how many frames have more than 7 sub-bands;
- long window: per second (N3 = 10 blocks), how many blocks are fully active (more than 4 of 5);
- each count becomes a speech activity score (the log-likelihood ratio of a binomial "speech"
  model against an exponential "noise" one), and a challenger replaces the dominant speaker only
  when its scores beat the dominant's by log-ratios C1 = 3, C2 = 2, C3 = 0 in all three windows
  at once. The immediate and medium tests mean the dominant must have paused; the long test means
  the challenger has spoken more than the dominant over the last second. Silence changes nothing.

Where this differs from Jitsi, and why:

- Frames are slots of time (`now // 20 ms`) shared by every participant, so one 2-D array and one
  fancy index per tick hold everybody, and a bridge whose packets stop (DTX, mute) reads as
  silence without per-participant timers. A frame without a packet repeats the previous level for
  up to `hold_frames` (2 = 40 ms, Jitsi's LEVEL_IDLE_TIMEOUT): jitter and 40/60 ms packets must not
  punch holes in speech.
- The noise floor is the minimum, over `floor_window_s` one-second buckets, of each second's
  10th-percentile level, not the running minimum level. The minimum sinks to the noise's deepest
  dip (mean - 3 sigma), so noise of +-3 dB clears a 10 dB gate, and one odd quiet frame drags it
  down for tens of seconds. This estimate sits near mean - 1.6 sigma for noise, and in the pauses
  for a speaker: any second with a tenth of pauses brings the floor down to them.
- A challenger also needs `min_long_blocks` fully active 100 ms blocks in the last second: a click
  or a cough cannot produce three; a second of speech does. With no dominant speaker yet,
  challengers compete against silence instead of a randomly nominated participant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FRAMES_PER_S = 50  # 20 ms frames: the usual Opus packet duration
N1, N2, N3 = 13, 5, 10
SUBUNIT = (127 + N1 - 1) // N1  # loudness per sub-band: 10
MEDIUM_THRESHOLD = 7  # a frame counts toward its block with more sub-bands than this
LONG_THRESHOLD = 4  # a block counts toward the second with more active frames than this
C1, C2, C3 = 3.0, 2.0, 0.0
MIN_SCORE = 1e-10  # floor of every score: they are divided and logged
WINDOW = N2 * N3  # frames in the long window: 1 s
RING = 64  # frames kept per participant: WINDOW + hold, rounded up to a power of two
BUCKETS = 32  # one-second buckets of noise-floor history (>= floor_window_s)
_NO_FRAME = np.iinfo(np.int64).min


def _scores(n: int, lam: float) -> np.ndarray:
    """Speech activity score for 0..n active sub-units (Volfin & Cohen eq. 5, p = 0.5)."""
    v = np.arange(n + 1)
    log_comb = np.log([math.comb(n, int(k)) for k in v])
    return np.maximum(log_comb + n * math.log(0.5) - math.log(lam) + lam * v, MIN_SCORE)


IMMEDIATE_SCORE = _scores(N1, 0.78)
MEDIUM_SCORE = _scores(N2, 24.0)
LONG_SCORE = _scores(N3, 47.0)


def _frame(t: float) -> int:
    # The epsilon keeps t = 0.06 in frame 3 (0.06 * 50 = 2.9999999999999996).
    return math.floor(t * FRAMES_PER_S + 1e-6)


@dataclass(frozen=True, slots=True)
class SpeakerConfig:
    gate_db: int = 10  # a frame counts this far above its noise floor (one sub-band, as Jitsi)
    hold_frames: int = 2  # a frame without a packet repeats the previous level this many times
    min_long_blocks: int = 3  # fully active 100 ms blocks in the last second to challenge
    floor_window_s: int = 10  # the noise floor follows a louder room after this long
    floor_percentile: float = 10.0  # of each second's levels: below noise, in a speaker's pauses

    def __post_init__(self) -> None:
        if not (0 <= self.hold_frames <= RING - WINDOW and 1 <= self.floor_window_s < BUCKETS):
            raise ValueError("hold_frames or floor_window_s out of range")


class SpeakerDetector:
    """Per packet `add_level`; every 100-300 ms `tick`; `ranking` for Last-N."""

    __slots__ = ("_bucket_low", "_bucket_sec", "_dominant", "_floor", "_fresh_until", "_ids",
                 "_joined", "_last_speech", "_level", "_newest", "_rows", "_seq", "_stamp", "_used",
                 "config")

    def __init__(self, now: float, config: SpeakerConfig | None = None) -> None:
        self.config = config or SpeakerConfig()
        self._ids: list[str | None] = []  # row -> participant; None marks a free row
        self._rows: dict[str, int] = {}
        self._seq = 0
        self._dominant: int | None = None
        self._newest = _frame(now)  # newest frame seen: older than RING frames is too late
        cap = 16
        self._level = np.zeros((cap, RING), np.int16)  # loudness per frame (ring by frame)
        self._stamp = np.full((cap, RING), _NO_FRAME, np.int64)  # which frame each cell holds
        self._floor = np.zeros(cap)  # noise floor loudness, 0 until known
        self._bucket_low = np.full((cap, BUCKETS), np.inf)  # per second: its 10th percentile
        self._bucket_sec = np.full(BUCKETS, _NO_FRAME, np.int64)  # which second each column is
        self._last_speech = np.full(cap, -np.inf)  # last tick with sustained speech
        self._joined = np.zeros(cap, np.int64)  # arrival order: ranking ties, stable
        self._used = np.zeros(cap, bool)  # rows that hold a participant
        self._fresh_until = 0.0  # a newcomer's first second: the floor is updated every tick

    @property
    def dominant(self) -> str | None:
        return self._ids[self._dominant] if self._dominant is not None else None

    def __len__(self) -> int:
        return len(self._rows)

    def add_level(self, participant_id: str, level_dbov: int, now: float) -> None:
        """One audio packet's RFC 6464 level (0 = loudest, 127 = silence). Cheap: no numpy
        work beyond two cell writes."""
        row = self._rows.get(participant_id)
        if row is None:
            row = self._add(participant_id)
            self._fresh_until = max(self._fresh_until, now + 1.0)  # see _update_floor
        frame = _frame(now)
        if frame > self._newest:
            self._newest = frame
        elif frame <= self._newest - RING:  # its cell already holds a newer frame
            return
        loud = 127 - min(max(level_dbov, 0), 127)
        col = frame % RING
        if self._stamp[row, col] == frame:  # two packets in one frame (10 ms ptime, a burst)
            if loud > self._level[row, col]:
                self._level[row, col] = loud
        else:
            self._stamp[row, col] = frame
            self._level[row, col] = loud

    def remove(self, participant_id: str) -> bool:
        """Forget a participant. True if it was the dominant speaker (there is none now)."""
        row = self._rows.pop(participant_id, None)
        if row is None:
            return False
        self._ids[row] = None
        self._used[row] = False
        self._stamp[row] = _NO_FRAME
        self._floor[row] = 0.0
        self._bucket_low[row] = np.inf
        self._last_speech[row] = -np.inf
        if self._dominant == row:
            self._dominant = None
            return True
        return False

    def ranking(self) -> list[str]:
        """Dominant first, then by the latest sustained speech, then by arrival. Only speech
        reorders it, so Last-N built on it does not churn while the room is quiet."""
        rows = np.array(list(self._rows.values()), np.int64)
        if rows.size == 0:
            return []
        not_dominant = rows != (-1 if self._dominant is None else self._dominant)
        order = np.lexsort((self._joined[rows], -self._last_speech[rows], not_dominant))
        return [pid for r in rows[order] if (pid := self._ids[r]) is not None]

    def tick(self, now: float) -> str | None:
        """Update scores and decide. Returns the new dominant speaker when it changed."""
        n = len(self._ids)
        if not self._rows:
            return None
        cfg = self.config
        end = _frame(now) - 1  # the newest complete frame: the current one may still fill
        self._newest = max(self._newest, end + 1)
        span = WINDOW + cfg.hold_frames
        frames = end - np.arange(span)  # newest first
        cols = frames % RING
        got = self._stamp[:n, cols] == frames  # a packet arrived in that frame
        level = np.where(got, self._level[:n, cols], 0)
        self._update_floor(level[:, :WINDOW], got[:, :WINDOW], now)

        x = level[:, :WINDOW].copy()
        have = got[:, :WINDOW].copy()
        for h in range(1, cfg.hold_frames + 1):
            fill = ~have & got[:, h:WINDOW + h]
            x[fill] = level[:, h:WINDOW + h][fill]
            have |= fill
        floor = self._floor[:n]
        gate = np.where(floor > 0, floor + cfg.gate_db, 1.0)
        sub = np.where(x >= gate[:, None], x // SUBUNIT, 0)
        blocks = (sub > MEDIUM_THRESHOLD).reshape(n, N3, N2).sum(axis=2)  # block 0 is newest
        longs = (blocks > LONG_THRESHOLD).sum(axis=1)
        sustained = self._used[:n] & (longs >= cfg.min_long_blocks)
        self._last_speech[:n][sustained] = now
        d = self._dominant
        if d is not None:
            sustained[d] = False  # the dominant does not challenge itself
        if not sustained.any():  # no challenger possible: the usual tick ends here, cheaply
            return None

        imm = IMMEDIATE_SCORE[sub[:, 0]]
        med = MEDIUM_SCORE[blocks[:, 0]]
        lng = LONG_SCORE[longs]
        base = (MIN_SCORE, MIN_SCORE, MIN_SCORE) if d is None else (imm[d], med[d], lng[d])
        c1, c2, c3 = np.log(imm / base[0]), np.log(med / base[1]), np.log(lng / base[2])
        challengers = sustained & (c1 > C1) & (c2 > C2) & (c3 > C3)
        if not challengers.any():
            return None
        # Several challengers compete on the medium window, as in the paper.
        self._dominant = int(np.argmax(np.where(challengers, c2, -np.inf)))
        return self._ids[self._dominant]

    def _update_floor(self, level: np.ndarray, got: np.ndarray, now: float) -> None:
        # Once a second (the sort made it most of a tick's cost when it ran every tick): the
        # floor follows the room over `floor_window_s` seconds anyway. Every tick while a
        # newcomer is in its first second, so that its noise is learnt as noise at once.
        cfg = self.config
        sec = math.floor(now)
        col = sec % BUCKETS
        new_second = self._bucket_sec[col] != sec
        if not new_second and now >= self._fresh_until:
            return
        heard = got & (level > 0)
        count = heard.sum(axis=1)
        # The percentile over heard frames only: sort with the unheard ones pushed to the end.
        ranked = np.sort(np.where(heard, level, 1 << 14), axis=1)
        k = np.clip((count * cfg.floor_percentile / 100.0).astype(np.int64), 0, WINDOW - 1)
        low = np.where(count > 0, np.take_along_axis(ranked, k[:, None], 1)[:, 0], np.inf)
        n = level.shape[0]
        if new_second:
            self._bucket_sec[col] = sec
            self._bucket_low[:, col] = np.inf
        # The latest window of each second it ran in, not the lowest: the minimum of ten
        # overlapping windows per second would sink to the noise's deepest dips again.
        self._bucket_low[:n, col] = np.where(count > 0, low, self._bucket_low[:n, col])
        recent = self._bucket_sec > sec - cfg.floor_window_s
        floor = self._bucket_low[:n, recent].min(axis=1)
        self._floor[:n] = np.where(np.isfinite(floor), floor, 0.0)

    def _add(self, participant_id: str) -> int:
        try:
            row = self._ids.index(None)
        except ValueError:
            row = len(self._ids)
            self._ids.append(None)
            if row == self._level.shape[0]:
                self._grow()
        self._ids[row] = participant_id
        self._used[row] = True
        self._rows[participant_id] = row
        self._joined[row] = self._seq
        self._seq += 1
        return row

    def _grow(self) -> None:
        cap = self._level.shape[0] * 2

        def grown(a: np.ndarray, fill: float | int) -> np.ndarray:
            out = np.full((cap, *a.shape[1:]), fill, a.dtype)
            out[: a.shape[0]] = a
            return out

        self._level = grown(self._level, 0)
        self._stamp = grown(self._stamp, _NO_FRAME)
        self._floor = grown(self._floor, 0.0)
        self._bucket_low = grown(self._bucket_low, np.inf)
        self._last_speech = grown(self._last_speech, -np.inf)
        self._joined = grown(self._joined, 0)
        self._used = grown(self._used, False)

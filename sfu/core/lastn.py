"""Last-N: which publishers' video each subscriber receives, and which audio. Pure functions.

A subscriber receives the chair(s), the floor holder(s) and the spotlighted bridge (the "fixed"
ones, never counted against N), plus the first `n` other publishers of the speaker ranking
(`SpeakerDetector.ranking()`: dominant first, then the most recent speakers). Never itself, only
publishers whose video is available. With 3,321 subscribers and a handful of publishers worth
watching, almost everybody gets the same set: `plan` computes it once and shares one frozenset,
so a plan costs O(subscribers) and `diff` skips shared sets by identity.

`demanded(plan)` is every publisher somebody watches: video outside it is not forwarded at all
(the SFU can also tell its publisher to pause it), which is how 3,000 idle communes cost nothing.

Audio follows the floor, not the ranking: a subscriber hears every publisher that
`FloorControl.audio_allowed` admits (the chair, the unmuted floor holders), except itself.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

Plan = dict[str, frozenset[str]]


@dataclass(frozen=True, slots=True)
class Change:
    added: frozenset[str]
    removed: frozenset[str]


def _fixed(chair_ids: Iterable[str], floor_holders: Iterable[str], spotlight: str | None,
           available: Collection[str]) -> frozenset[str]:
    wanted = [*chair_ids, *floor_holders, *(() if spotlight is None else (spotlight,))]
    return frozenset(p for p in wanted if p in available)


def _ranked(ranking: Sequence[str], skip: Collection[str], available: Collection[str],
            count: int, also_skip: str | None = None) -> list[str]:
    """The first `count` distinct available publishers of `ranking` not in `skip`."""
    out: list[str] = []
    if count <= 0:
        return out
    seen: set[str] = set()
    for p in ranking:
        if p in seen or p in skip or p == also_skip or p not in available:
            continue
        seen.add(p)
        out.append(p)
        if len(out) == count:
            break
    return out


def select_video(subscriber_id: str, chair_ids: Iterable[str], floor_holders: Iterable[str],
                 spotlight: str | None, ranking: Sequence[str], n: int,
                 available: Collection[str]) -> frozenset[str]:
    """Publishers whose video `subscriber_id` receives: the fixed ones and `n` more by ranking."""
    if n < 0:
        raise ValueError("n must be >= 0")
    fixed = _fixed(chair_ids, floor_holders, spotlight, available)
    others = _ranked(ranking, fixed, available, n, also_skip=subscriber_id)
    return (fixed - {subscriber_id}).union(others)


def plan(subscribers: Iterable[str], chair_ids: Iterable[str], floor_holders: Iterable[str],
         spotlight: str | None, ranking: Sequence[str], n: int, available: Collection[str],
         n_for: Mapping[str, int] | None = None) -> Plan:
    """`select_video` for every subscriber; `n_for` overrides n for some (the chair's console or
    an ops wall may show more). Subscribers that get the common set share one object."""
    if n < 0 or (n_for is not None and any(k < 0 for k in n_for.values())):
        raise ValueError("n must be >= 0")
    chair_ids, floor_holders = tuple(chair_ids), tuple(floor_holders)
    fixed = _fixed(chair_ids, floor_holders, spotlight, available)
    # One spare: a subscriber among the top n is replaced by the next in line.
    top = _ranked(ranking, fixed, available, n + 1)
    common = fixed.union(top[:n])
    out: Plan = {}
    for s in subscribers:
        k = n if n_for is None else n_for.get(s, n)
        if k != n:
            out[s] = select_video(s, chair_ids, floor_holders, spotlight, ranking, k, available)
        elif s not in common:
            out[s] = common
        else:
            out[s] = (fixed - {s}).union([p for p in top if p != s][:n])
    return out


def shown_by_nobody(publisher: str, chair_ids: Collection[str], floor_holders: Collection[str],
                    spotlight: str | None, ranking: Sequence[str], n_max: int,
                    available: Collection[str]) -> bool:
    """Whether `publisher`'s video, once it joins `available`, enters no plan whatever the
    subscribers: it is not fixed, and more than `n_max` other available publishers that are
    not fixed rank before it (a subscriber takes at most `n_max` of them, one more when it is
    one of them itself). Then no re-plan is needed: a national room's commune cameras, shown
    to nobody, do not re-plan 3,000 subscribers each. False when unsure (not ranked at all)."""
    if publisher == spotlight or publisher in chair_ids or publisher in floor_holders:
        return False
    fixed = {*chair_ids, *floor_holders, spotlight}
    seen: set[str] = set()
    for p in ranking:
        if p == publisher:
            return False
        if p in seen or p in fixed or p not in available:
            continue
        seen.add(p)
        if len(seen) > n_max:
            return True
    return False


def diff(old: Mapping[str, frozenset[str]], new: Mapping[str, frozenset[str]]
         ) -> dict[str, Change]:
    """Per subscriber, what to start and stop forwarding; unchanged subscribers are left out. A
    subscriber only in `old` loses everything, one only in `new` gains everything."""
    empty: frozenset[str] = frozenset()
    out: dict[str, Change] = {}
    for s in old.keys() | new.keys():
        a, b = old.get(s, empty), new.get(s, empty)
        if a is b or a == b:
            continue
        out[s] = Change(added=b - a, removed=a - b)
    return out


def demanded(p: Mapping[str, frozenset[str]]) -> frozenset[str]:
    """Publishers at least one subscriber watches: forward (and ask for) no other video."""
    distinct = {id(v): v for v in p.values()}  # shared sets counted once
    return frozenset().union(*distinct.values())


def select_audio(subscriber_id: str, speakers: Iterable[str],
                 available: Collection[str]) -> frozenset[str]:
    """Audio a subscriber receives: every publisher the floor lets speak, never itself."""
    return frozenset(p for p in speakers if p != subscriber_id and p in available)

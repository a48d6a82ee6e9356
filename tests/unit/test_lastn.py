"""Last-N selection, plans and diffs: examples and Hypothesis properties."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu.core.lastn import (
    Change,
    demanded,
    diff,
    plan,
    select_audio,
    select_video,
    shown_by_nobody,
)

PUBS = {"hq", "hn", "hp", "dn", "xa1", "xa2", "xa3", "xa4"}
RANKING = ["xa3", "hn", "xa1", "hq", "xa2", "dn", "hp", "xa4"]


def test_fixed_ones_first_then_n_by_ranking() -> None:
    got = select_video("xa4", ["hq"], ["hp"], "dn", RANKING, 2, PUBS)
    assert got == {"hq", "hp", "dn", "xa3", "hn"}  # fixed ones do not count against n
    assert select_video("xa4", ["hq"], [], None, RANKING, 0, PUBS) == {"hq"}


def test_never_itself_the_next_in_line_takes_its_place() -> None:
    assert select_video("xa3", ["hq"], [], None, RANKING, 2, PUBS) == {"hq", "hn", "xa1"}
    assert select_video("hq", ["hq"], ["hn"], "hq", RANKING, 1, PUBS) == {"hn", "xa3"}


def test_only_available_publishers() -> None:
    available = {"hq", "xa1", "dn"}  # hn's camera is off, hp has not published
    got = select_video("xa4", ["hq"], ["hp"], None, RANKING, 2, available)
    assert got == {"hq", "xa1", "dn"}
    assert select_video("x", [], [], None, ["ghost", "ghost"], 3, set()) == frozenset()


def test_duplicates_in_the_ranking_count_once() -> None:
    assert select_video("z", [], [], None, ["a", "a", "b"], 2, {"a", "b", "c"}) == {"a", "b"}


def test_negative_n_is_a_bug() -> None:
    with pytest.raises(ValueError):
        select_video("x", [], [], None, [], -1, set())
    with pytest.raises(ValueError):
        plan(["x"], [], [], None, [], -1, set())
    with pytest.raises(ValueError):
        plan(["x"], [], [], None, [], 1, set(), n_for={"x": -2})


def test_plan_shares_the_common_set() -> None:
    subs = [f"xa{i}" for i in range(5, 3326)]
    p = plan([*subs, "hq", "xa3"], ["hq"], ["hn"], None, RANKING, 2, PUBS)
    common = p["xa5"]
    assert common == {"hq", "hn", "xa3", "xa1"}
    assert all(p[s] is common for s in subs)  # one object for 3,321 communes
    assert p["hq"] == {"hn", "xa3", "xa1"}
    assert p["xa3"] == {"hq", "hn", "xa1", "xa2"}  # hq is fixed, so xa2 is next in line


def test_plan_overrides_n_per_subscriber() -> None:
    p = plan(["ops", "xa4"], ["hq"], [], None, RANKING, 1, PUBS, n_for={"ops": 4})
    assert p["ops"] == {"hq", "xa3", "hn", "xa1", "xa2"}
    assert p["xa4"] == {"hq", "xa3"}


def test_diff_and_demanded() -> None:
    old = plan(["a", "b", "xa3"], ["hq"], [], None, RANKING, 1, PUBS)
    new = plan(["a", "xa3", "c"], ["hq"], ["hp"], None, RANKING, 1, PUBS)
    d = diff(old, new)
    assert d == {
        "a": Change(added=frozenset({"hp"}), removed=frozenset()),
        "xa3": Change(added=frozenset({"hp"}), removed=frozenset()),
        "b": Change(added=frozenset(), removed=frozenset({"hq", "xa3"})),
        "c": Change(added=frozenset({"hq", "hp", "xa3"}), removed=frozenset()),
    }
    assert diff(new, new) == {}
    assert demanded(new) == {"hq", "hp", "xa3", "hn"}  # hn only because xa3 watches it
    assert demanded({}) == frozenset()


def test_audio_follows_the_floor() -> None:
    speakers = ["hq", "hn"]  # FloorControl.audio_allowed said yes to these
    assert select_audio("xa1", speakers, PUBS) == {"hq", "hn"}
    assert select_audio("hn", speakers, PUBS) == {"hq"}
    assert select_audio("xa1", speakers, {"hq"}) == {"hq"}  # hn has no microphone track yet


# ---- properties -----------------------------------------------------------------------------

ids = st.sampled_from([f"p{i}" for i in range(12)])
Args = dict[str, Any]
inputs = st.fixed_dictionaries({
    "subscriber": ids,
    "chairs": st.lists(ids, max_size=2),
    "holders": st.lists(ids, max_size=2),
    "spotlight": st.one_of(st.none(), ids),
    "ranking": st.lists(ids, max_size=15),
    "n": st.integers(0, 6),
    "available": st.sets(ids),
})


def call(a: Args, ranking: list[str] | None = None) -> frozenset[str]:
    return select_video(a["subscriber"], a["chairs"], a["holders"], a["spotlight"],
                        a["ranking"] if ranking is None else ranking, a["n"], a["available"])


def fixed_of(a: Args) -> set[str]:
    wanted = {*a["chairs"], *a["holders"], *([a["spotlight"]] if a["spotlight"] else [])}
    return wanted & a["available"]


@settings(max_examples=200)
@given(inputs)
def test_selection_bounds(a: Args) -> None:
    got = call(a)
    fixed = fixed_of(a)
    assert a["subscriber"] not in got
    assert got <= a["available"]
    assert fixed - {a["subscriber"]} <= got  # the chair, floor and spotlight always
    assert len(got) <= a["n"] + len(fixed)
    assert got <= fixed | set(a["ranking"])
    # As many others as the ranking can offer, up to n.
    offer = set(a["ranking"]) & a["available"] - fixed - {a["subscriber"]}
    assert len(got - fixed) == min(a["n"], len(offer))


@settings(max_examples=200)
@given(inputs)
def test_the_others_are_a_prefix_of_the_ranking(a: Args) -> None:
    got = call(a)
    others = got - fixed_of(a)
    eligible = [p for p in dict.fromkeys(a["ranking"])
                if p in a["available"] and p not in fixed_of(a) and p != a["subscriber"]]
    assert list(others) == [] or set(eligible[: len(others)]) == others


@settings(max_examples=200)
@given(inputs, st.randoms(use_true_random=False))
def test_stable_while_the_ranking_does_not_change_where_it_matters(a: Args,
                                                                    rnd: random.Random) -> None:
    got = call(a)
    assert call(a) == got  # same inputs, same answer
    # Reordering what comes after the last selected publisher changes nothing.
    ranking = list(a["ranking"])
    last = max((i for i, p in enumerate(ranking) if p in got - fixed_of(a)), default=-1)
    tail = ranking[last + 1:]
    head = ranking[: last + 1]
    if len(got - fixed_of(a)) == a["n"]:  # full: later entries cannot get in
        rnd.shuffle(tail)
        assert call(a, head + tail) == got


@settings(max_examples=150)
@given(inputs, st.lists(ids, max_size=12, unique=True),
       st.dictionaries(ids, st.integers(0, 4), max_size=3))
def test_plan_is_select_video_for_everyone(a: Args, subs: list[str],
                                            n_for: dict[str, int]) -> None:
    p = plan(subs, a["chairs"], a["holders"], a["spotlight"], a["ranking"], a["n"],
             a["available"], n_for=n_for)
    assert set(p) == set(subs)
    for s in subs:
        want = select_video(s, a["chairs"], a["holders"], a["spotlight"], a["ranking"],
                            n_for.get(s, a["n"]), a["available"])
        assert p[s] == want


@settings(max_examples=200)
@given(st.dictionaries(ids, st.frozensets(ids)), st.dictionaries(ids, st.frozensets(ids)))
def test_diff_applied_to_old_gives_new(old: dict[str, frozenset[str]],
                                       new: dict[str, frozenset[str]]) -> None:
    d = diff(old, new)
    for s in old.keys() | new.keys():
        before, after = old.get(s, frozenset()), new.get(s, frozenset())
        change = d.get(s, Change(frozenset(), frozenset()))
        assert (before - change.removed) | change.added == after
        assert not change.added & change.removed
        assert (s in d) == (before != after)
    assert demanded(new) == frozenset().union(*new.values())


@settings(max_examples=400)
@given(inputs, ids, st.lists(ids, max_size=12, unique=True),
       st.dictionaries(ids, st.integers(0, 4), max_size=3))
def test_a_video_shown_by_nobody_changes_no_plan(a: Args, new: str, subs: list[str],
                                                  n_for: dict[str, int]) -> None:
    """What `shown_by_nobody` promises: adding that publisher to `available` leaves every plan
    as it was, whoever subscribes and whatever their n."""
    available = set(a["available"]) - {new}
    n_max = max([a["n"], *n_for.values()])
    args = (a["chairs"], a["holders"], a["spotlight"], a["ranking"])
    if not shown_by_nobody(new, *args, n_max, available):
        return
    before = plan(subs, *args, a["n"], available, n_for=n_for)
    after = plan(subs, *args, a["n"], available | {new}, n_for=n_for)
    assert after == before


def test_shown_by_nobody_examples() -> None:
    ranking = ["xa3", "hn", "xa1", "hq", "xa2", "dn", "hp", "xa4"]
    # Two others before xa4 would do for n = 1 (one more in case the subscriber is one).
    assert shown_by_nobody("xa4", ["hq"], [], None, ranking, 1, PUBS - {"xa4"})
    assert not shown_by_nobody("xa4", ["hq"], [], None, ranking, 6, PUBS - {"xa4"})
    assert not shown_by_nobody("xa4", ["xa4"], [], None, ranking, 1, PUBS)  # a chair
    assert not shown_by_nobody("xa4", [], ["xa4"], None, ranking, 1, PUBS)  # the floor
    assert not shown_by_nobody("xa4", [], [], "xa4", ranking, 1, PUBS)  # the spotlight
    assert not shown_by_nobody("xa3", [], [], None, ranking, 0, PUBS)  # ranked first
    assert shown_by_nobody("xa1", [], [], None, ranking, 0, PUBS)  # n = 0: only fixed ones
    assert not shown_by_nobody("zz", [], [], None, ranking, 8, PUBS)  # not ranked: unsure
    # Fixed ones and unavailable ones do not count as ranked before it.
    assert not shown_by_nobody("xa1", ["xa3"], [], None, ranking, 0, {"hn", "xa3"} - {"hn"})

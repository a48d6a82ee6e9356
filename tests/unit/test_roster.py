"""rooms/roster.py: who is told of whom, and the `presence` that covers the log entries a
featured-roster session is not sent. Pure; the client's gap check is modelled as floor.js
does it (a `seq` more than one ahead of the last one means events were missed)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from rooms.roster import FEATURED, FULL, Roster


def test_moderators_and_observers_are_told_of_everyone_bridges_of_the_featured() -> None:
    r = Roster(featured_only=True)
    r.add("hq", sees_all=True)
    r.add("xa-1", sees_all=False)
    r.add("xa-2", sees_all=False)
    assert (r.kind_for(True), r.kind_for(False)) == (FULL, FEATURED)
    assert r.told_all == {"hq"}
    assert not r.public("xa-2") and r.public(None)
    assert r.feature("xa-2") and not r.feature("xa-2")  # introduced once
    assert r.public("xa-2") and r.featured == {"xa-2"}
    assert not r.feature("gone")  # nobody is featured before it is in the room
    r.remove("xa-2")
    assert not r.public("xa-2")
    r.add("xa-2", sees_all=False)  # back after leaving: a stranger again, introduced again
    assert not r.public("xa-2") and r.feature("xa-2")


def test_an_adhoc_room_or_a_full_roster_conference_tells_everyone_everything() -> None:
    r = Roster(featured_only=False)
    r.add("a", sees_all=False)
    r.add("b", sees_all=False)
    assert r.kind_for(False) == FULL and r.told_all == {"a", "b"} and r.public("b")
    assert not r.feature("b")  # nothing to introduce: everyone knew already


def test_presence_covers_up_to_the_last_skipped_entry_and_brings_a_changed_count() -> None:
    r = Roster(featured_only=True)
    r.skipped(1)
    r.skipped(2)
    assert r.flush(count=3) == 2 and r.flush(count=3) is None
    assert r.flush(count=2) == 2  # nothing uncovered, but the count they know is stale
    r.skipped(3)
    assert r.before_public(4, count=2) == 3  # a logged event: presence first, then it
    assert r.flush(count=2) is None  # the timer armed meanwhile finds nothing left
    r.skipped(4)  # an entry already covered (sent late, out of order): nothing due
    assert r.flush(count=2) is None
    assert r.before_public(None, count=9) is None  # unlogged (dominant_speaker): no presence
    assert r.before_public(5, count=2) is None


@given(st.lists(st.tuples(st.sampled_from(["public", "skipped", "flush", "unlogged"]),
                          st.integers(1, 4)), max_size=60))
def test_a_featured_roster_session_never_sees_a_gap_and_ends_up_current(
        ops: list[tuple[str, int]]) -> None:
    r = Roster(featured_only=True)
    seq = 0  # the conference log
    client, told = 0, 0  # the client's last seq (floor.js) and participant count

    def receive(s: int) -> None:  # a logged event
        nonlocal client
        assert s <= client + 1, f"gap: {client} then {s}"
        client = max(client, s)

    def presence(cover: int | None, count: int) -> None:  # covers every entry up to its seq
        nonlocal client, told
        if cover is not None:
            assert cover > client or count != told  # never sent for nothing
            client, told = max(client, cover), count

    count = 1
    for op, n in ops:
        if op == "flush":
            presence(r.flush(count), count)
        elif op == "unlogged":
            assert r.before_public(None, count) is None
        else:
            seq += 1
            count = n
            if op == "public":
                presence(r.before_public(seq, count), count)
                receive(seq)
            else:
                r.skipped(seq)
    presence(r.flush(count), count)
    assert client == seq and told == count

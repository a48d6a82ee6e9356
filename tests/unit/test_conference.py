"""Conference creation (rooms/conference.py): the POST /api/rooms body, its room attributes,
and the FloorControl built back from them. Pure."""

from __future__ import annotations

from typing import Any

import pytest

from rooms.conference import ConferenceError, floor_for, is_conference, parse_conference
from rooms.floor import Invitee
from rooms.model import Room

INVITED = [{"id": "xa-1", "name": "Xã Một", "province": "HN"},
           {"id": "hn", "province": "HN", "role": "province"}]  # fmt: skip


def test_a_conference_round_trips_through_room_attributes() -> None:
    spec = parse_conference({"room": "national", "invited": INVITED, "last_n": 2,
                             "max_speakers": 2, "max_participants": 4000,
                             "roster": "full"})  # fmt: skip
    assert spec.invited == (Invitee("xa-1", "Xã Một", "HN", "commune"),
                            Invitee("hn", "hn", "HN", "province"))  # fmt: skip
    attrs = spec.attributes()
    assert attrs["last_n"] == 2 and attrs["max_participants"] == 4000
    assert attrs["roster"] == "full"
    assert "roster" not in parse_conference({"room": "r"}).attributes()  # the default: featured
    room = Room("national", attributes=attrs)
    assert is_conference(room) and room.max_participants == 4000
    floor = floor_for(room, default_max_speakers=1)
    assert floor.max_speakers == 2
    call = floor.handle("hq", "chair", "roll_call", None, 1.0).data
    assert call is not None and (call["expected"], call["connected"]) == (2, 0)
    assert not is_conference(Room("adhoc"))
    assert floor_for(Room("adhoc"), 1).handle("hq", "chair", "roll_call", None, 1.0).data


@pytest.mark.parametrize(
    "body",
    [[], {"invited": []}, {"room": ""}, {"room": 5}, {"room": "r", "invited": {}},
     {"room": "r", "invited": [{"id": "bad id"}]}, {"room": "r", "invited": ["xa-1"]},
     {"room": "r", "invited": [{"id": "a"}, {"id": "a"}]},
     {"room": "r", "invited": [{"id": "a", "role": "king"}]},
     {"room": "r", "invited": [{"id": "a", "name": "n" * 129}]},
     {"room": "r", "last_n": -1}, {"room": "r", "last_n": True}, {"room": "r", "max_speakers": 0},
     {"room": "r", "max_participants": "10"}, {"room": "r", "roster": "some"},
     {"room": "r", "roster": ["full"]}],
)  # fmt: skip
def test_bad_bodies_are_refused_with_the_field_named(body: Any) -> None:
    with pytest.raises(ConferenceError):
        parse_conference(body)

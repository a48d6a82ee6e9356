"""signaling.messages: every client type parses, every malformation has its code."""

from __future__ import annotations

import json
from typing import Any

import pytest

from signaling import messages as m
from signaling.errors import BadJson, BadMessage, ProtocolError, TooLarge, UnknownType


def parse(obj: dict[str, Any]) -> m.Message:
    return m.parse(json.dumps(obj))


def code_of(frame: str | bytes) -> tuple[str, object]:
    with pytest.raises(ProtocolError) as info:
        m.parse(frame)
    return info.value.code, info.value.re


# --- valid messages, one per type ------------------------------------------------------------


def test_join_with_defaults_and_options() -> None:
    assert parse({"type": "join", "protocol": 1, "token": "t"}) == m.Join(
        id=None, protocol=1, token="t", room=None, auto_subscribe=True
    )
    msg = parse(
        {
            "type": "join",
            "id": 1,
            "protocol": 1,
            "token": "t",
            "room": "r",
            "auto_subscribe": False,
            "future_field": {"x": 1},
        }
    )
    assert msg == m.Join(id=1, protocol=1, token="t", room="r", auto_subscribe=False)


def test_join_without_token_parses_so_the_session_can_say_token_missing() -> None:
    assert parse({"type": "join", "protocol": 1}) == m.Join(id=None, protocol=1, token=None)
    assert parse({"type": "join", "protocol": 1, "token": None}).token is None  # type: ignore[union-attr]


def test_publish_maps_mids_to_sources() -> None:
    msg = parse(
        {
            "type": "publish",
            "id": 2,
            "sdp": "v=0",
            "tracks": [{"mid": "0", "source": "microphone"}, {"mid": "1", "source": "camera"}],
        }
    )
    assert msg == m.Publish(id=2, sdp="v=0", sources={"0": "microphone", "1": "camera"})
    assert parse({"type": "publish", "sdp": "v=0"}) == m.Publish(id=None, sdp="v=0", sources={})


def test_answer_subscribe_unsubscribe_trickle_mute_ping_leave() -> None:
    assert parse({"type": "answer", "pc": "subscriber", "sdp": "v=0"}) == m.Answer(None, "v=0")
    assert parse({"type": "subscribe", "id": 3, "tracks": ["a/camera", "a/microphone"]}) == (
        m.Subscribe(3, ("a/camera", "a/microphone"))
    )
    assert parse({"type": "unsubscribe", "id": 4, "tracks": []}) == m.Unsubscribe(4, ())
    cand = {
        "candidate": "candidate:1 1 udp 1 1.2.3.4 5 typ host",
        "sdpMid": "0",
        "sdpMLineIndex": 0,
    }
    assert parse({"type": "trickle", "pc": "publisher", "candidate": cand}) == m.Trickle(
        None, "publisher", cand
    )
    assert parse({"type": "trickle", "pc": "subscriber", "candidate": None}) == m.Trickle(
        None, "subscriber", None
    )
    assert parse({"type": "mute", "id": 5, "track": "a/microphone", "muted": True}) == m.Mute(
        5, "a/microphone", True
    )
    assert parse({"type": "ping", "id": "p"}) == m.Ping("p")
    assert parse({"type": "leave"}) == m.Leave(None)


def test_every_documented_client_type_is_known() -> None:
    assert {
        "join",
        "publish",
        "answer",
        "subscribe",
        "unsubscribe",
        "trickle",
        "mute",
        "ping",
        "leave",
        # conference control (docs/signaling.md, "Conference control")
        "raise_hand",
        "lower_hand",
        "give_floor",
        "take_floor",
        "mute_participant",
        "unmute_participant",
        "mute_all",
        "spotlight",
        "lock_room",
        "unlock_room",
        "remove_participant",
        "readmit_participant",
        "roll_call",
        "floor_snapshot",
        "quality",
        "set_last_n",
    } == m.TYPES


# --- malformed frames --------------------------------------------------------------------------


@pytest.mark.parametrize("frame", ["", "{", "nope", "[1]", "1", '"s"', "null", "true"])
def test_not_a_json_object_is_bad_json(frame: str) -> None:
    assert code_of(frame) == ("bad_json", None)


def test_deeply_nested_json_is_bad_json_not_a_crash() -> None:
    assert code_of("[" * 30_000 + "]" * 30_000)[0] == "bad_json"


def test_binary_frames_are_bad_message() -> None:
    with pytest.raises(BadMessage):
        m.parse(b'{"type": "ping"}')


def test_type_missing_wrong_or_unknown() -> None:
    assert code_of('{"id": 1}') == ("bad_message", 1)
    assert code_of('{"type": 3, "id": 1}') == ("bad_message", 1)
    assert code_of('{"type": "shout", "id": "x"}') == ("unknown_type", "x")
    # server → client types are not client types
    for kind in ("joined", "offer", "pong", "error", "participant_joined"):
        with pytest.raises(UnknownType):
            m.parse(json.dumps({"type": kind}))


@pytest.mark.parametrize("bad_id", [True, 1.5, [1], {"a": 1}, "x" * 65, 10**65])
def test_bad_ids_are_bad_message_without_re(bad_id: object) -> None:
    assert code_of(json.dumps({"type": "ping", "id": bad_id})) == ("bad_message", None)


def test_id_limits() -> None:
    assert parse({"type": "ping", "id": "x" * 64}) == m.Ping("x" * 64)
    assert parse({"type": "ping", "id": 0}) == m.Ping(0)
    assert parse({"type": "ping", "id": None}) == m.Ping(None)


MALFORMED: list[dict[str, Any]] = [
    {"type": "join", "token": "t"},  # protocol missing
    {"type": "join", "protocol": "1", "token": "t"},
    {"type": "join", "protocol": True, "token": "t"},
    {"type": "join", "protocol": 1, "token": 5},
    {"type": "join", "protocol": 1, "token": "t", "room": 5},
    {"type": "join", "protocol": 1, "token": "t", "auto_subscribe": "yes"},
    {"type": "publish"},
    {"type": "publish", "sdp": 1},
    {"type": "publish", "sdp": "v=0", "tracks": {"0": "camera"}},
    {"type": "publish", "sdp": "v=0", "tracks": ["0"]},
    {"type": "publish", "sdp": "v=0", "tracks": [{"mid": 0, "source": "camera"}]},
    {"type": "publish", "sdp": "v=0", "tracks": [{"mid": "0", "source": "tv"}]},
    {"type": "publish", "sdp": "v=0", "tracks": [{"mid": "0"}]},
    {"type": "answer", "sdp": "v=0"},
    {"type": "answer", "pc": "publisher", "sdp": "v=0"},
    {"type": "answer", "pc": "subscriber"},
    {"type": "subscribe"},
    {"type": "subscribe", "tracks": "a/camera"},
    {"type": "subscribe", "tracks": [1]},
    {"type": "unsubscribe", "tracks": None},
    {"type": "trickle", "pc": "publisher"},
    {"type": "trickle", "pc": "both", "candidate": None},
    {"type": "trickle", "pc": "publisher", "candidate": "candidate:1"},
    {"type": "mute", "track": "a/camera"},
    {"type": "mute", "track": "a/camera", "muted": 1},
    {"type": "mute", "muted": True},
]


@pytest.mark.parametrize("obj", MALFORMED, ids=lambda o: json.dumps(o)[:60])
def test_missing_or_wrong_fields_are_bad_message_with_re(obj: dict[str, Any]) -> None:
    assert code_of(json.dumps({**obj, "id": 42})) == ("bad_message", 42)


# --- size --------------------------------------------------------------------------------------


def test_size_limit_counts_utf8_bytes() -> None:
    pad = 65536 - len('{"type":"ping","p":""}')
    exact = '{"type":"ping","p":"' + "x" * pad + '"}'
    assert len(exact.encode()) == 65536
    assert m.parse(exact) == m.Ping(None)
    with pytest.raises(TooLarge):
        m.parse(exact[:-2] + 'x"}')
    # 3 bytes per char: far fewer characters than bytes
    wide = '{"type":"ping","p":"' + "ệ" * 22000 + '"}'
    assert len(wide) < 65536 < len(wide.encode())
    with pytest.raises(TooLarge) as info:
        m.parse(wide)
    assert info.value.close_code == 1009
    with pytest.raises(TooLarge):
        m.parse(b"x" * 65537)


def test_peek_id_is_best_effort() -> None:
    assert m.peek_id('{"type": "ping", "id": 9}') == 9
    assert m.peek_id('{"id": [1]}') is None
    assert m.peek_id("{nope") is None
    assert m.peek_id("[1]") is None
    assert m.peek_id(b'{"id": 1}') is None


# --- builders ----------------------------------------------------------------------------------


def test_builders_follow_the_doc() -> None:
    assert m.error("forbidden", "no", 3) == {
        "type": "error",
        "code": "forbidden",
        "message": "no",
        "re": 3,
    }
    assert "re" not in m.error("internal", "x")
    assert m.ok(None) == {"type": "ok"}
    assert m.pong(6) == {"type": "pong", "re": 6}
    assert m.subscriber_offer("v=0", {"0": "a/camera"}) == {
        "type": "offer",
        "pc": "subscriber",
        "sdp": "v=0",
        "mids": {"0": "a/camera"},
    }
    assert m.publisher_answer(2, "v=0", []) == {
        "type": "answer",
        "re": 2,
        "pc": "publisher",
        "sdp": "v=0",
        "tracks": [],
    }
    assert m.participant_left("a", "left") == {
        "type": "participant_left",
        "participant_id": "a",
        "reason": "left",
    }
    assert m.track_unpublished("a/camera") == {"type": "track_unpublished", "track_id": "a/camera"}
    assert m.track_muted("a/camera", True) == {
        "type": "track_muted",
        "track_id": "a/camera",
        "muted": True,
    }
    joined = m.joined(1, "r", {"id": "a"}, [], [], [], 15.0)
    assert joined["keepalive_s"] == 15 and isinstance(joined["keepalive_s"], int)
    assert joined["protocol"] == 1 and joined["room"] == {"id": "r"} and joined["re"] == 1


def test_json_errors_are_bad_json_class() -> None:
    with pytest.raises(BadJson):
        m.parse("{")

"""signaling/fragments.py: `joined` assembled from per-record JSON texts is the very text
`json.dumps` makes of the whole message, and a record's text lives as long as the record."""

from __future__ import annotations

import gc
import json
from dataclasses import replace

from rooms.model import Participant
from sfu.router import TrackInfo
from signaling import messages as m
from signaling.fragments import Fragments, dumps


def _room() -> tuple[list[Participant], list[TrackInfo]]:
    people = [Participant("hq", "r", "chair", 'Hà Nội "HQ"', "01"),
              Participant("xa-1", "r", "commune", "Xã Đông\\Tây", None),
              Participant("tinh-2", "r", "province", "Tỉnh 🇻🇳", "02")]
    tracks = [TrackInfo(f"{p.id}/{s}", p.id, k, s, c) for p in people
              for s, k, c in (("camera", "video", "VP8"), ("microphone", "audio", "opus"))]
    return people, tracks


def _joined(people: list[Participant], tracks: list[TrackInfo]) -> dict[str, object]:
    return m.joined("7", "r", {"id": "me", "name": "Tôi"}, [p.to_json() for p in people],
                    [t.to_json() for t in tracks], [], 15, floor={"you": {"state": "idle"}},
                    last_n=2, roster="featured", participant_count=3356)


def test_the_assembled_text_is_the_whole_message_encoded() -> None:
    people, tracks = _room()
    whole = _joined(people, tracks)
    frags = Fragments()
    shell = _joined([], [])
    text = frags.message(shell, {"participants": people, "tracks": tracks})
    assert text == dumps(whole)  # byte for byte, key order included
    assert json.loads(text) == whole
    assert frags.message(shell, {"participants": [], "tracks": []}) == dumps(shell)


def test_each_record_is_encoded_once_and_forgotten_with_it() -> None:
    people, tracks = _room()
    frags = Fragments()
    shell = _joined([], [])
    first = frags.message(shell, {"participants": people, "tracks": tracks})
    assert frags.made == len(people) + len(tracks) == len(frags)
    assert frags.message(shell, {"participants": people, "tracks": tracks}) == first
    assert frags.made == len(people) + len(tracks)  # the second joiner: nothing encoded

    # A muted track is a new record: its new text, not the cached one.
    muted = replace(tracks[0], muted=True)
    assert json.loads(frags.text(muted))["muted"] is True
    assert json.loads(frags.text(tracks[0]))["muted"] is False

    del tracks[0], muted
    gc.collect()
    assert len(frags) == len(people) + len(tracks)  # the gone records' texts went with them
    people.clear()
    tracks.clear()
    gc.collect()
    assert len(frags) == 0

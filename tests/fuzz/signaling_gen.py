"""Generated and mutated client messages for the signaling fuzz test.

Hypothesis draws protocol messages (every client type, fields right, wrong-typed or missing,
unknown fields, ids of every shape, participant ids that exist and ones that do not); `mutate`
then derives byte- and structure-level variants from each (cut, spliced, nested, truncated,
binary, huge numbers, huge or odd SDP). `expect` is the oracle, written from docs/signaling.md
(not from the server's code): what kind of reply each frame must get.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

PLACEHOLDER = "$"  # strings starting with it are filled in by the harness (tokens, SDPs, room)
ROLES = ("chair", "operator", "province", "commune", "secretary", "observer")
# Identities the harness uses (initial sessions, then reconnections): control actions aim at
# participants that exist as well as at ones that do not.
IDENTITIES = [f"fz-{r}" for r in ROLES] + [f"fz-{r}-{k}" for r in ROLES for k in range(1, 6)]
TRACKS = [f"{i}/{s}" for i in IDENTITIES[:8] for s in ("camera", "microphone")]
TOKENS = ["$token:valid"] * 4 + ["$token:garbage", "$token:expired", "$token:forged",
                                  "$token:other_room", "$token:bad_role", ""]  # fmt: skip
SDPS = ["$sdp:seed", "$sdp:huge", "$sdp:odd", "$sdp:many", "v=0", "", "m=audio"]
CANDIDATES = ["candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host",
              "candidate:x", "", "candidate:1 1 udp notanumber 1.2.3.4 1 typ host"]  # fmt: skip

CONTROL = ["raise_hand", "lower_hand", "give_floor", "take_floor", "mute_participant",
           "unmute_participant", "mute_all", "spotlight", "lock_room", "unlock_room",
           "remove_participant", "readmit_participant", "roll_call", "floor_snapshot"]  # fmt: skip
# Weighted by repetition: control actions most, `leave` (it closes) and `join` less.
TYPES = (CONTROL * 3 + ["publish"] * 3 + ["join"] * 5 + ["answer", "subscribe", "unsubscribe",
         "trickle", "mute", "ping", "quality", "set_last_n", "leave",
         "joined", "offer", "shout", "", "PING"])  # fmt: skip

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(),
    st.text(max_size=12), st.sampled_from(["", "x" * 65, "0", "-1", "null", "é", "\u202e"]),
)
any_json = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                               max_size=3),
    max_leaves=6,
)


_OMIT = object()
wrong = st.one_of(any_json, st.just(_OMIT))  # any JSON value, or the field left out
# the sessions there at the start are the likeliest targets (a control action that changes
# something), then later ones, and ids that never were
pid = st.sampled_from(IDENTITIES[:len(ROLES)] * 4 + [*IDENTITIES, "ghost", "", "x" * 70,
                                                     "@server"])
FIELDS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "join": {"protocol": st.sampled_from([1, 1, 1, 2, 0]), "token": st.sampled_from(TOKENS),
             "room": st.sampled_from(["$room", "$room", "other"]),
             "auto_subscribe": st.booleans()},
    "publish": {"sdp": st.sampled_from(["$sdp:seed"] * 3 + SDPS),
                "tracks": st.sampled_from([
                    [], [{"mid": "0", "source": "microphone"}, {"mid": "1", "source": "camera"}],
                    [{"mid": "1", "source": "screen"}], [{"mid": "0", "source": "camera"}] * 2,
                    [{"mid": "7", "source": "tv"}]])},
    "answer": {"pc": st.sampled_from(["subscriber", "subscriber", "publisher", "x"]),
               "sdp": st.sampled_from(SDPS)},
    "subscribe": {"tracks": st.lists(st.sampled_from(TRACKS) | st.text(max_size=8), max_size=4)},
    "unsubscribe": {"tracks": st.lists(st.sampled_from(TRACKS), max_size=4)},
    "trickle": {"pc": st.sampled_from(["publisher", "subscriber", "x"]),
                "candidate": st.none() | st.fixed_dictionaries({
                    "candidate": st.sampled_from(CANDIDATES),
                    "sdpMid": st.sampled_from(["0", "1", None]),
                    "sdpMLineIndex": st.sampled_from([0, 1, None, -1])})},
    "mute": {"track": st.sampled_from(TRACKS), "muted": st.booleans()},
    "quality": {"bitrate_kbps": st.floats(0, 5000), "loss": st.floats(0, 1),
                "rtt_ms": st.integers(0, 900), "jitter_ms": st.floats(0, 50)},
    "set_last_n": {"n": st.integers(-2, 40)},
    "roll_call": {"status": st.sampled_from(["all", "missing", "connected", "uninvited", "?"]),
                  "province": st.sampled_from(["HN", "HP", None]),
                  "offset": st.integers(-1, 5), "limit": st.integers(-1, 600)},
}
for kind in CONTROL:
    FIELDS.setdefault(kind, {})["participant_id"] = pid


@st.composite
def messages(draw: st.DrawFn) -> dict[str, Any]:
    """A message of any type: every field right (half of them, so that requests also succeed
    and change the conference), one field wrong, or any field anything."""
    kind = draw(st.sampled_from(TYPES))
    msg: dict[str, Any] = {"type": kind} if draw(st.integers(0, 20)) else {}
    fields = FIELDS.get(kind, {})
    mode = draw(st.sampled_from(["right", "right", "one_wrong", "any"]))
    spoiled = draw(st.sampled_from(sorted(fields))) if fields and mode == "one_wrong" else None
    for key, good in fields.items():
        bad = (mode == "any" and draw(st.booleans())) or key == spoiled
        value = draw(wrong if bad else good)
        if value is not _OMIT:
            msg[key] = value
    if draw(st.integers(0, 6)) == 0:
        msg[draw(st.sampled_from(["x", "extra", "type", "id"]))] = draw(any_json)
    return msg


@st.composite
def batches(draw: st.DrawFn) -> tuple[int, list[dict[str, Any]], int]:
    """(which session sends, base messages, seed of their mutations)."""
    return (draw(st.integers(0, 1000)), draw(st.lists(messages(), min_size=8, max_size=14)),
            draw(st.integers(0, 2**32)))


# --- mutation -------------------------------------------------------------------------------------

_CHARS = '{}[]":,\\ 0123456789-+.eE\tnulltruefalse\x00\x7féệ\u2028\U0001f600'


def _rand_text(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(_CHARS) for _ in range(n))


def mutate(text: str, rng: random.Random) -> str | bytes:
    """One raw variant of a serialized message."""
    op = rng.randrange(11)
    n = len(text)
    i, j = sorted((rng.randrange(n + 1), rng.randrange(n + 1)))
    if op == 0:  # a character replaced
        return text[:i] + rng.choice(_CHARS) + text[i + 1:]
    if op == 1:  # a span cut out
        return text[:i] + text[j:]
    if op == 2:  # random characters spliced in
        return text[:i] + _rand_text(rng, rng.randrange(1, 12)) + text[i:]
    if op == 3:  # a span repeated
        return text[:j] + text[i:j] * rng.randrange(1, 4) + text[j:]
    if op == 4:  # truncated
        return text[:i]
    if op == 5:  # wrapped or nested
        depth = rng.choice([1, 3, 100, 5000])
        return rng.choice(["[", '{"a":']) * depth + text + rng.choice(["]", "}"]) * depth
    if op == 6:  # sent as a binary frame
        return text.encode()
    if op == 7:  # a number made huge
        return text.replace(":", ':' + rng.choice(["1e999", "9" * 5000, "-0.0e-999"]), 1)
    if op == 8:  # a big string value, still under 64 KiB
        return text.replace('"', '"' + "A" * rng.randrange(20_000, 60_000), 1)[:64_000]
    if op == 9:  # the type swapped for another client type
        return text.replace('"type"', '"type":"' + rng.choice(TYPES) + '","old"', 1)
    # the same message, written differently (JSON that must read the same)
    return json.dumps(json.loads(text), indent=rng.choice([None, 1]),
                      ensure_ascii=rng.random() < 0.5)


# --- the oracle ----------------------------------------------------------------------------------

NO_ID = object()  # the reply carries no `re`
MAX_BYTES = 64 * 1024  # docs/signaling.md: larger messages get too_large, then close 1009


@dataclass(frozen=True)
class Expect:
    re: Any  # the `re` the reply must carry, or NO_ID
    codes: frozenset[str] | None  # the error codes it must be one of; None: any outcome
    kind: str | None  # the message type, when the frame is a JSON object with one


def _valid_id(value: Any) -> bool:
    return (isinstance(value, str | int) and not isinstance(value, bool)
            and len(str(value)) <= 64)


def expect(frame: str | bytes) -> Expect:
    """What docs/signaling.md promises for one frame, from the frame alone."""
    size = len(frame) if isinstance(frame, bytes) else len(frame.encode())
    if size > MAX_BYTES:
        return Expect(NO_ID, frozenset({"too_large"}), None)
    if isinstance(frame, bytes):
        return Expect(NO_ID, frozenset({"bad_message"}), None)
    try:
        obj = json.loads(frame)
    except (ValueError, RecursionError):
        return Expect(NO_ID, frozenset({"bad_json"}), None)
    if not isinstance(obj, dict):
        return Expect(NO_ID, frozenset({"bad_json"}), None)
    raw = obj.get("id")
    if raw is not None and not _valid_id(raw):
        return Expect(NO_ID, frozenset({"bad_message"}), None)
    kind = obj.get("type") if isinstance(obj.get("type"), str) else None
    return Expect(NO_ID if raw is None else raw, None, kind)

"""Fuzz a running `hoinghi serve` with tens of thousands of generated and mutated messages.

Nine sessions (a chair, an operator, a province, two communes, a secretary, an observer, and two
that have not joined) take turns sending batches: Hypothesis draws the messages, `mutate` derives
raw variants (tests/fuzz/signaling_gen.py). Each batch ends with a ping; for every frame the
server must have answered, in order, before that ping's pong, within BOUND_S:

- a frame that is not JSON, a binary frame, a bad `id`: an `error` of the documented code, no
  `re`; any other frame: exactly one reply carrying its `id` as `re` (or none, without one),
  and an `error` reply always has a code documented in docs/signaling.md;
- a session the server closes gets a documented close code (and, before it, the error that
  says why); the harness then opens a new one (a fresh identity if it was removed).

At the end the server process is alive, /healthz answers, and once every session is gone the
/metrics gauges are back where they started: no session, participant, room or asyncio task
leaked. The rate limit is lifted by flags for the run (its own tests are in test_signaling).
The run is reproducible (a fixed Hypothesis seed); HOINGHI_FUZZ_SEED=N explores other inputs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from signaling.auth import issue_token
from tests.conftest import REPO, ServerProcess, start_server, stop_server
from tests.fuzz.signaling_gen import NO_ID, batches, expect, mutate

ROOM = "fuzz-room"
TARGET_FRAMES = 20_000
EXAMPLES = 300  # about 100 frames each, fewer when a batch closes its session
BOUND_S = 15.0  # every batch (≈ 120 frames) answered within this
VARIANTS = 8  # raw mutations per generated message (plus the message itself)
REPLIES = {"ok", "pong", "joined", "answer", "roll_call", "floor_snapshot", "last_n", "left",
           "error"}  # fmt: skip
# Errors a session gets without asking, after which the server closes it.
NOTICES = {"replaced", "removed", "join_timeout"}
CLOSES = {1000, 1008, 1009, 4001, 4002, 4003, 4004, 4005, 4008, 4009, 4010}
ROLES = ("chair", "operator", "province", "commune", "commune", "secretary", "observer")


def documented_codes() -> frozenset[str]:
    """Every error code in docs/signaling.md's error tables (first column)."""
    text = (REPO / "docs" / "signaling.md").read_text()
    errors = text[text.index("## Errors"):]
    return frozenset(re.findall(r"^\| `([a-z_]+)`", errors, re.M)) | frozenset(
        re.findall(r"/ `([a-z_]+)`", errors))


CODES = documented_codes()


def _seed_sdp() -> str:
    """A real aiortc publisher offer (microphone + camera), as a client makes it."""
    from aiortc import RTCConfiguration, RTCPeerConnection

    from clients.media import PatternVideoTrack, ToneAudioTrack
    from sfu.adapters.aiortc_tap import set_ice_hosts

    async def offer() -> str:
        set_ice_hosts(["127.0.0.1"])
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTransceiver(ToneAudioTrack(), direction="sendonly")
        pc.addTransceiver(PatternVideoTrack(), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        await pc.close()
        return sdp

    return asyncio.run(offer())


@dataclass
class Session:
    role: str
    identity: str
    ws: ClientConnection
    joined: bool = False


@dataclass
class Harness:
    server: ServerProcess
    sdp: str
    sessions: list[Session] = field(default_factory=list)
    frames: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    replies: Counter[str] = field(default_factory=Counter)  # (frame type, reply) seen
    closes: Counter[int] = field(default_factory=Counter)
    reconnects: int = 0
    _serial: int = 0
    _again: Counter[str] = field(default_factory=Counter)

    # --- sessions --------------------------------------------------------------------------

    def fresh_identity(self, role: str) -> str:
        """For tokens the fuzzer joins with: never an identity already used."""
        self._serial += 1
        return f"fz-t{self._serial}"

    def next_identity(self, role: str) -> str:
        """For a session reopened after a close: fz-ROLE-1, -2... (the fuzzer aims at these)."""
        self._again[role] += 1
        return f"fz-{role}-{self._again[role]}"

    def token(self, role: str, identity: str, **kw: Any) -> str:
        return issue_token(self.server.secret, ROOM, identity, role, **kw)

    def open(self, role: str, identity: str, join: bool) -> Session:
        # Entered by hand: each session is closed by the harness (ws.close()) when replaced.
        ws = connect(self.server.ws_url, proxy=None, compression=None, max_queue=None,
                     max_size=2**22, open_timeout=BOUND_S, close_timeout=2).__enter__()  # fmt: skip
        session = Session(role, identity, ws)
        if join:
            ws.send(json.dumps({"type": "join", "id": "j", "protocol": 1,
                                "token": self.token(role, identity)}))  # fmt: skip
            while True:
                reply = json.loads(ws.recv(timeout=BOUND_S))
                if reply.get("re") == "j":
                    break
            if reply.get("code") == "room_locked":  # a fuzzed lock: the chair lifts it
                ws.close()
                self.request(self.sessions[0], {"type": "unlock_room"})
                return self.open(role, identity, join)
            assert reply["type"] == "joined", reply
            session.joined = True
        return session

    def reconnect(self, index: int) -> None:
        old = self.sessions[index]
        with contextlib.suppress(Exception):
            old.ws.close()
        self.reconnects += 1
        if index >= len(ROLES):  # a session that never joins on its own
            self.sessions[index] = self.open(old.role, old.identity, join=False)
        else:  # a fresh identity: the old one may have been removed (and banned)
            role = ROLES[index]
            self.sessions[index] = self.open(role, self.next_identity(role), join=True)

    def request(self, session: Session, message: dict[str, Any]) -> dict[str, Any]:
        session.ws.send(json.dumps({**message, "id": "h"}))
        while True:
            reply = json.loads(session.ws.recv(timeout=BOUND_S))
            if reply.get("re") == "h":
                return reply

    def drain(self, index: int) -> None:
        """Read what a session was sent meanwhile (events); reconnect it if it was closed."""
        session = self.sessions[index]
        try:
            while True:
                self.check_well_formed(json.loads(session.ws.recv(timeout=0)))
        except TimeoutError:
            return
        except ConnectionClosed as exc:
            self.closed(exc)
            self.reconnect(index)

    def closed(self, exc: ConnectionClosed) -> None:
        code = exc.rcvd.code if exc.rcvd else None
        assert code in CLOSES, f"undocumented close {code}"
        self.closes[code] += 1

    # --- one batch ---------------------------------------------------------------------------

    def fill(self, value: Any, rng: random.Random) -> Any:
        """Placeholders of generated messages → real tokens, SDPs, room."""
        if isinstance(value, dict):
            return {k: self.fill(v, rng) for k, v in value.items()}
        if isinstance(value, list):
            return [self.fill(v, rng) for v in value]
        if not (isinstance(value, str) and value.startswith("$")):
            return value
        if value == "$room":
            return ROOM
        if value.startswith("$sdp:"):
            return {"seed": self.sdp,
                    "huge": self.sdp + "a=x-pad:" + "z" * rng.randrange(30_000, 60_000) + "\r\n",
                    "odd": self.sdp.replace("m=video", "m=video 0 RTP/AVP 1\r\nm=video", 1),
                    "many": self.sdp + "".join(
                        f"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:x{k}\r\n" for k in range(20)),
                    }[value[5:]]  # fmt: skip
        kind = value.removeprefix("$token:")
        role = rng.choice(["commune", "province", "operator", "secretary", "observer"])
        identity = self.fresh_identity(role)
        now = time.time()
        return {"valid": self.token(role, identity), "garbage": "a.b.c",
                "expired": issue_token(self.server.secret, ROOM, identity, role, ttl_s=5,
                                       now=now - 60),
                "forged": issue_token("f" * 40, ROOM, identity, "chair"),
                "other_room": issue_token(self.server.secret, "elsewhere", identity, role),
                "bad_role": self.token(role, identity, grants={"publish": False})}.get(kind, value)

    def frames_of(self, base: list[dict[str, Any]], rng: random.Random) -> list[str | bytes]:
        out: list[str | bytes] = []
        for msg in base:
            text = json.dumps({**self.fill(msg, rng), "id": f"f{self.frames + len(out)}"})
            out.append(text)
            out += [mutate(text, rng) for _ in range(VARIANTS)]
        # answer/trickle without an id have no reply when they succeed: the oracle could not
        # pair the replies up, so they go out with an id only.
        return [f for f in out if not (expect(f).re is NO_ID and expect(f).codes is None
                                       and expect(f).kind in ("answer", "trickle"))]

    def run_batch(self, which: int, base: list[dict[str, Any]], mutation_seed: int) -> None:
        index = which % len(self.sessions)
        for i in range(len(self.sessions)):
            self.drain(i)
        session = self.sessions[index]
        rng = random.Random(mutation_seed)
        if not session.joined and rng.random() < 0.5:
            # Half the batches of a session that has not joined contain a join that works
            # (the frames after it then act as a freshly joined participant); the others only
            # the generated ones, most of which it refuses, closing.
            at = rng.randrange(len(base) + 1)
            base = [*base[:at], {"type": "join", "protocol": 1, "token": "$token:valid"},
                    *base[at:]]
        frames = self.frames_of(base, rng)
        sentinel = f"sentinel-{self.frames}"
        received: list[dict[str, Any]] = []
        deadline = time.monotonic() + BOUND_S
        try:
            for frame in frames:
                session.ws.send(frame)
            session.ws.send(json.dumps({"type": "ping", "id": sentinel}))
            while True:
                left = deadline - time.monotonic()
                assert left > 0, f"no answer within {BOUND_S} s ({len(received)} messages)"
                message = json.loads(session.ws.recv(timeout=left))
                received.append(message)
                if message.get("re") == sentinel:
                    break
        except ConnectionClosed as exc:
            self.closed(exc)
            self.frames += self.check_replies(frames, received, session, closed=True)
            self.reconnect(index)
        else:
            self.frames += self.check_replies(frames, received, session, closed=False)
            if index >= len(ROLES) and session.joined:  # keep fuzzing what comes before join
                self.reconnect(index)

    def check_well_formed(self, message: Any) -> bool:
        """A server message is an object with a type; an error has a documented code and a
        text. Returns True for a notice (an unasked error before a close)."""
        assert isinstance(message, dict) and isinstance(message.get("type"), str), message
        if message["type"] != "error":
            return False
        assert message["code"] in CODES, f"undocumented error code {message['code']}"
        assert isinstance(message["message"], str)
        self.codes[message["code"]] += 1
        return "re" not in message and message["code"] in NOTICES

    def check_replies(self, frames: list[str | bytes], received: list[dict[str, Any]],
                      session: Session, *, closed: bool) -> int:
        """Checks each frame's reply; returns how many frames were answered."""
        replies = [m for m in received if not self.check_well_formed(m)
                   and m["type"] in REPLIES]
        if not closed:
            assert len(replies) == len(frames) + 1, (len(replies), len(frames))
        for frame, reply in zip(frames, replies, strict=False):
            want = expect(frame)
            got = reply.get("re", NO_ID)
            assert got == want.re, (str(frame)[:300], reply)
            if want.codes is not None:
                assert reply["type"] == "error" and reply["code"] in want.codes, (frame, reply)
            assert reply.get("code") != "internal", (str(frame)[:500], reply)
            self.replies[f"{want.kind}>{reply.get('code', reply['type'])}"] += 1
            if reply["type"] == "joined":
                session.joined = True
        return min(len(frames), len(replies))


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    server = start_server(tmp_path_factory.mktemp("fuzz"), "--rate-burst", "1000000",
                          "--rate-per-s", "1000000", "--flood-close-after", "1000000",
                          "--log-level", "warning")  # fmt: skip
    try:
        h = Harness(server, _seed_sdp())
        yield h
    finally:
        alive = server.alive()
        stop_server(server)
        assert alive, f"the server died:\n{server.log_tail()}"


def _metrics(server: ServerProcess) -> dict[str, float]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(server.url + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for name in ("hoinghi_sessions", "hoinghi_participants", "hoinghi_rooms",
                 "hoinghi_asyncio_tasks"):  # fmt: skip
        out[name] = float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]
    return out


def _healthz(server: ServerProcess) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(server.url + "/healthz", timeout=5) as resp:
        return resp.status == 200 and json.loads(resp.read()) == {"status": "ok"}


def test_signaling_survives_tens_of_thousands_of_bad_messages(harness: Harness) -> None:
    h = harness
    idle = _metrics(h.server)
    h.sessions = [h.open(role, f"fz-{role}" + ("-0" if i == 4 else ""), join=True)
                  for i, role in enumerate(ROLES)]  # fmt: skip
    h.sessions += [h.open("commune", f"fz-new-{k}", join=False) for k in range(2)]

    @seed(int(os.environ.get("HOINGHI_FUZZ_SEED", "20261123")))
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=False,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(batches())
    def fuzz(batch: tuple[int, list[dict[str, Any]], int]) -> None:
        h.run_batch(*batch)

    fuzz()
    assert h.frames >= TARGET_FRAMES, h.frames
    assert h.server.alive() and _healthz(h.server)
    # Everyone goes; the server must come back to idle: nothing leaked.
    for s in h.sessions:
        with contextlib.suppress(Exception):
            s.ws.close()
    deadline = time.monotonic() + 20
    while (now := _metrics(h.server)) != idle and time.monotonic() < deadline:
        time.sleep(0.2)
    assert now == idle, (now, idle)
    print(f"\nfuzz: {h.frames} frames, {h.reconnects} reconnects, errors {dict(h.codes)}, "
          f"closes {dict(h.closes)}\n{sorted(h.replies.items())}")


def test_too_large_and_oversized_frames_close_with_1009(harness: Harness) -> None:
    h = harness
    s = h.open("commune", "fz-big", join=True)
    s.ws.send(json.dumps({"type": "ping", "pad": "x" * 70_000}))
    reply = json.loads(s.ws.recv(timeout=BOUND_S))
    assert (reply["type"], reply["code"]) == ("error", "too_large")
    with pytest.raises(ConnectionClosed) as info:
        s.ws.recv(timeout=BOUND_S)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    s = h.open("commune", "fz-bigger", join=False)
    s.ws.send("x" * 300_000)  # over the websocket layer's own limit: cut off, no message
    with pytest.raises(ConnectionClosed) as info:
        s.ws.recv(timeout=BOUND_S)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    assert _healthz(h.server)


"""Signaling against a real `hoinghi serve` subprocess over real websockets (no media here).

After every kind of abuse a second participant on the same server must still get `pong` and
events: one connection's trouble never reaches another.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import types
import urllib.request
import uuid
from typing import Any

import pytest

from signaling.auth import verify_token
from tests.conftest import REPO, Connect, ServerProcess, WsClient

ALL_GRANTS = {
    "publish": True,
    "subscribe": True,
    "moderate": True,
    "record": True,
    "observe_all": True,
}


@pytest.fixture
def room() -> str:
    return f"room-{uuid.uuid4().hex[:10]}"


async def joined(
    connect_ws: Connect,
    server: ServerProcess,
    room: str,
    identity: str,
    role: str = "commune",
    **kw: Any,
) -> tuple[WsClient, dict[str, Any]]:
    client = await connect_ws(server)
    reply = await client.join(server.token(room, identity, role, **kw))
    assert reply["type"] == "joined", reply
    return client, reply


async def assert_still_served(
    connect_ws: Connect, server: ServerProcess, room: str, bystander: WsClient
) -> None:
    """The bystander answers pings and sees a newcomer join and leave."""
    await bystander.ping()
    newcomer_id = f"n-{uuid.uuid4().hex[:8]}"
    newcomer, _ = await joined(connect_ws, server, room, newcomer_id)
    event = await bystander.wait_type("participant_joined")
    assert event["participant"]["id"] == newcomer_id
    await newcomer.send({"type": "leave"})
    event = await bystander.wait_type("participant_left")
    # seq/time/actor: its place in the conference's event log (docs/signaling.md)
    assert logged(event) == {
        "type": "participant_left",
        "participant_id": newcomer_id,
        "reason": "left",
    }
    assert event["actor"] == newcomer_id and isinstance(event["seq"], int)
    await bystander.ping()
    assert server.alive()


def logged(event: dict[str, Any]) -> dict[str, Any]:
    """An event without the fields every logged event carries (seq, time, actor)."""
    return {k: v for k, v in event.items() if k not in ("seq", "time", "actor")}


def http_get(server: ServerProcess, path: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(server.url + path, timeout=5) as resp:
        return resp.status, resp.headers.get("content-type", ""), resp.read().decode()


# --- HTTP --------------------------------------------------------------------------------------


async def test_healthz_info_and_metrics(
    module_server: ServerProcess, connect_ws: Connect, room: str
) -> None:
    status, _, body = http_get(module_server, "/healthz")
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    status, _, body = http_get(module_server, "/api/info")
    assert json.loads(body) == {"protocol": 1, "signaling": "/ws", "server": "hoinghi/0.1"}

    client, _ = await joined(connect_ws, module_server, room, "metered")
    stranger = await connect_ws(module_server)
    assert (await stranger.request({"type": "ping"}))["code"] == "not_joined"
    status, ctype, body = http_get(module_server, "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    values = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line and not line.startswith("#")
    }
    assert values["hoinghi_rooms"] >= 1 and values["hoinghi_participants"] >= 1
    assert values["hoinghi_sessions"] >= 2
    assert values["hoinghi_messages_received_total"] >= 2
    assert values["hoinghi_messages_sent_total"] >= 2
    assert values['hoinghi_errors_total{code="not_joined"}'] >= 1
    # the room's Router reports its counters, labelled by room
    assert any(k.startswith("hoinghi_router_") and f'room="{room}"' in k for k in values)
    await client.ping()


# --- joining -----------------------------------------------------------------------------------


async def test_join_returns_joined_with_the_documented_content(
    module_server: ServerProcess, connect_ws: Connect, room: str
) -> None:
    client = await connect_ws(module_server)
    # The client offered permessage-deflate (websockets does by default, browsers too); the
    # server declines it: compressing each broadcast per bridge costs a surge more than the
    # bytes it saves (docs/signaling.md, Transport).
    assert "permessage-deflate" in (client.ws.request.headers.get("Sec-WebSocket-Extensions")
                                    or "")
    assert client.ws.response.headers.get("Sec-WebSocket-Extensions") is None
    token = module_server.token(room, "hanoi-hq", "chair", name="Hà Nội HQ", province="01")
    reply = await client.join(token, room=room)
    assert reply == {
        "type": "joined",
        "re": reply["re"],
        "protocol": 1,
        "room": {"id": room},
        "participant": {
            "id": "hanoi-hq",
            "name": "Hà Nội HQ",
            "role": "chair",
            "province": "01",
            "grants": ALL_GRANTS,
        },
        "participants": [],
        "tracks": [],
        "roster": "full",
        "participant_count": 1,
        "ice_servers": [],
        "keepalive_s": 15,
        "floor": {
            "seq": 1,  # this join
            "locked": False,
            "max_speakers": 1,
            "chairs": ["hanoi-hq"],
            "floor": [],
            "hands": [],
            "muted": [],
            "spotlight": None,
            "you": {
                "id": "hanoi-hq",
                "state": "always",
                "hand_position": None,
                "floor": True,
                "muted": False,
                "audio_allowed": True,
            },
        },
        "last_n": 4,
    }
    await client.ping()


async def test_participants_see_each_other_join_and_leave(
    module_server: ServerProcess, connect_ws: Connect, room: str
) -> None:
    chair, _ = await joined(connect_ws, module_server, room, "chair", "chair")
    commune, reply = await joined(
        connect_ws, module_server, room, "xa-001", "commune", name="Xã 001", province="26"
    )
    assert reply["participants"] == [
        {"id": "chair", "name": "chair", "role": "chair", "province": None}
    ]
    assert reply["participant"]["grants"] == {
        **ALL_GRANTS,
        "moderate": False,
        "record": False,
        "observe_all": False,
    }
    event = await chair.wait_type("participant_joined")
    assert event["participant"] == {
        "id": "xa-001",
        "name": "Xã 001",
        "role": "commune",
        "province": "26",
    }

    # leave: reply `left`, close 1000, and the others are told why
    await commune.send({"type": "leave"})
    code, got = await commune.closed()
    assert (code, got) == (1000, [{"type": "left"}])
    event = await chair.wait_type("participant_left")
    assert logged(event) == {
        "type": "participant_left",
        "participant_id": "xa-001",
        "reason": "left",
    }

    # closing the socket without leave: `disconnected`
    observer, _ = await joined(connect_ws, module_server, room, "obs", "observer")
    await chair.wait_type("participant_joined")
    await observer.ws.close()
    event = await chair.wait_type("participant_left")
    assert event["participant_id"] == "obs" and event["reason"] == "disconnected"
    await chair.ping()


async def test_same_identity_replaces_the_old_session(
    server: ServerProcess, connect_ws: Connect, room: str
) -> None:
    watcher, _ = await joined(connect_ws, server, room, "chair", "chair")
    old, _ = await joined(connect_ws, server, room, "xa-002")
    await watcher.wait_type("participant_joined")
    new, reply = await joined(connect_ws, server, room, "xa-002")
    assert [p["id"] for p in reply["participants"]] == ["chair"]

    code, got = await old.closed()
    assert code == 4009
    assert got[-1]["type"] == "error" and got[-1]["code"] == "replaced"
    left = await watcher.wait_type("participant_left")
    assert left["participant_id"] == "xa-002" and left["reason"] == "replaced"
    again = await watcher.wait_type("participant_joined")
    assert again["participant"]["id"] == "xa-002"

    await new.ping()
    # the replaced session's disconnect must not remove its replacement
    await new.send({"type": "leave"})
    event = await watcher.wait_type("participant_left")
    assert event["reason"] == "left"
    await assert_still_served(connect_ws, server, room, watcher)


# --- credentials -------------------------------------------------------------------------------


def _bad_join(server: ServerProcess, room: str, case: str) -> tuple[dict[str, Any], str, int]:
    """(join fields, expected code, expected close code) for each way a join is refused."""
    token = server.token(room, "intruder", "commune")
    if case == "missing":
        return {}, "token_missing", 4001
    if case == "empty":
        return {"token": ""}, "token_missing", 4001
    if case == "garbage":
        return {"token": "not.a.jwt"}, "token_invalid", 4001
    if case == "forged":
        from signaling.auth import issue_token

        return {"token": issue_token("x" * 48, room, "intruder", "chair")}, "token_invalid", 4001
    if case == "expired":
        from signaling.auth import issue_token

        stale = issue_token(
            server.secret, room, "intruder", "commune", ttl_s=60, now=time.time() - 3600
        )
        return {"token": stale}, "token_expired", 4001
    if case == "wrong_room":
        return {"token": token, "room": room + "-other"}, "wrong_room", 4001
    if case == "protocol":
        return {"token": token, "protocol": 2}, "unsupported_protocol", 4002
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case", ["missing", "empty", "garbage", "forged", "expired", "wrong_room", "protocol"]
)
async def test_refused_join_gets_its_code_and_close(
    module_server: ServerProcess, connect_ws: Connect, room: str, case: str
) -> None:
    bystander, _ = await joined(connect_ws, module_server, room, "chair", "chair")
    fields, code, close_code = _bad_join(module_server, room, case)
    intruder = await connect_ws(module_server)
    await intruder.send({"type": "join", "id": 7, "protocol": 1, **fields})
    got_code, got = await intruder.closed()
    assert got_code == close_code
    assert len(got) == 1 and got[0]["type"] == "error"
    assert (got[0]["code"], got[0]["re"]) == (code, 7)
    # Nothing was admitted: the bystander's next message is the pong, no participant_joined.
    reply = await bystander.request({"type": "ping"})
    assert reply["type"] == "pong" and bystander.skipped == []
    await assert_still_served(connect_ws, module_server, room, bystander)


async def test_messages_before_join_and_second_join(
    module_server: ServerProcess, connect_ws: Connect, room: str
) -> None:
    client = await connect_ws(module_server)
    reply = await client.request({"type": "ping"})
    assert (reply["type"], reply["code"]) == ("error", "not_joined")
    reply = await client.request({"type": "publish", "sdp": "v=0"})
    assert reply["code"] == "not_joined"
    assert (await client.join(module_server.token(room, "a", "commune")))["type"] == "joined"
    reply = await client.join(module_server.token(room, "a", "commune"))
    assert reply["code"] == "already_joined"
    await client.ping()


# --- malformed input ---------------------------------------------------------------------------

MALFORMED: dict[str, tuple[str | bytes | dict[str, Any], str]] = {
    "not_json": ("{nope", "bad_json"),
    "json_array": ("[1, 2, 3]", "bad_json"),
    "json_string": ('"hello"', "bad_json"),
    "binary": (b'{"type": "ping"}', "bad_message"),
    "unknown_type": ({"type": "shout"}, "unknown_type"),
    "server_type": ({"type": "joined"}, "unknown_type"),
    "type_not_string": ({"type": 5}, "bad_message"),
    "publish_no_sdp": ({"type": "publish"}, "bad_message"),
    "publish_bad_source": (
        {"type": "publish", "sdp": "v=0", "tracks": [{"mid": "0", "source": "tv"}]},
        "bad_message",
    ),
    "subscribe_not_list": ({"type": "subscribe", "tracks": "chair/camera"}, "bad_message"),
    "mute_no_muted": ({"type": "mute", "track": "a/camera"}, "bad_message"),
    "trickle_bad_pc": ({"type": "trickle", "pc": "x", "candidate": None}, "bad_message"),
    "answer_publisher_pc": ({"type": "answer", "pc": "publisher", "sdp": "v=0"}, "bad_message"),
    "bad_id": ({"type": "ping", "id": [1]}, "bad_message"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_malformed_message_gets_error_and_connection_stays(
    module_server: ServerProcess, connect_ws: Connect, room: str, case: str
) -> None:
    bystander, _ = await joined(connect_ws, module_server, room, "chair", "chair")
    client, _ = await joined(connect_ws, module_server, room, "xa-003")
    await bystander.wait_type("participant_joined")
    frame, code = MALFORMED[case]
    await client.send(frame)
    error = await client.wait_type("error")
    assert error["code"] == code
    assert "Traceback" not in error["message"]
    await client.ping()  # still open and served
    await assert_still_served(connect_ws, module_server, room, bystander)


async def test_message_over_64_kib_is_refused_and_closed_1009(
    module_server: ServerProcess, connect_ws: Connect, room: str
) -> None:
    bystander, _ = await joined(connect_ws, module_server, room, "chair", "chair")
    client, _ = await joined(connect_ws, module_server, room, "xa-004")
    await client.send(json.dumps({"type": "ping", "pad": "x" * 65536}))
    code, got = await client.closed()
    assert code == 1009
    assert [m["code"] for m in got] == ["too_large"]
    left = await bystander.wait_type("participant_left")
    assert left["participant_id"] == "xa-004"

    # Far over the limit: the websocket layer closes before buffering it all.
    huge, _ = await joined(connect_ws, module_server, room, "xa-005")
    await huge.send("x" * (1 << 20))
    code, _ = await huge.closed()
    assert code == 1009
    await assert_still_served(connect_ws, module_server, room, bystander)


async def test_flood_is_rate_limited_then_closed_4008(
    module_server: ServerProcess, connect_ws: Connect, room: str
) -> None:
    bystander, _ = await joined(connect_ws, module_server, room, "chair", "chair")
    flooder, _ = await joined(connect_ws, module_server, room, "xa-006")

    async def flood() -> None:
        try:
            for i in range(1000):
                await flooder.send({"type": "ping", "id": i})
        except Exception:  # the server closed us mid-flood: that is the point
            return

    sender = asyncio.create_task(flood())
    code, got = await flooder.closed(timeout=20)
    await sender
    assert code == 4008
    kinds = [m["type"] if m["type"] != "error" else m["code"] for m in got]
    assert kinds.count("pong") >= 49  # the burst (less the join) went through
    assert kinds.count("rate_limited") > 100
    assert set(kinds) == {"pong", "rate_limited"}
    assert isinstance(next(m for m in got if m["type"] == "error")["re"], int)
    await assert_still_served(connect_ws, module_server, room, bystander)


# --- permissions -------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["observer", "secretary"])
async def test_publish_is_forbidden_without_the_grant(
    module_server: ServerProcess, connect_ws: Connect, room: str, role: str
) -> None:
    client, reply = await joined(connect_ws, module_server, room, f"{role}-1", role)
    assert reply["participant"]["grants"]["publish"] is False
    error = await client.request({"type": "publish", "sdp": "v=0\r\n"})
    assert (error["type"], error["code"]) == ("error", "forbidden")
    error = await client.request(
        {"type": "trickle", "pc": "publisher", "candidate": {"candidate": "x"}}
    )
    assert error["code"] == "forbidden"
    await client.ping()


async def test_grants_in_the_token_narrow_the_role(
    module_server: ServerProcess, connect_ws: Connect, room: str
) -> None:
    client, reply = await joined(
        connect_ws, module_server, room, "muted-chair", "chair", grants={"publish": False}
    )
    assert reply["participant"]["grants"] == {**ALL_GRANTS, "publish": False}
    error = await client.request({"type": "publish", "sdp": "v=0\r\n"})
    assert error["code"] == "forbidden"


async def test_mute_of_someone_elses_track_is_forbidden_and_unknown_tracks_refused(
    module_server: ServerProcess, connect_ws: Connect, room: str
) -> None:
    client, _ = await joined(connect_ws, module_server, room, "xa-007")
    error = await client.request({"type": "mute", "track": "chair/microphone", "muted": True})
    assert error["code"] == "forbidden"
    error = await client.request({"type": "subscribe", "tracks": ["nobody/camera"]})
    assert error["code"] == "unknown_track"
    await client.ping()


# --- command line ------------------------------------------------------------------------------


def _cli(*args: str, secret: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HOINGHI_SECRET"}
    if secret is not None:
        env["HOINGHI_SECRET"] = secret
    return subprocess.run(
        [sys.executable, "-m", "hoinghi_cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_token_prints_a_verifiable_jwt() -> None:
    secret = "cli-secret-" + "7" * 40
    out = _cli(
        "token",
        "--room",
        "national",
        "--identity",
        "xa-9",
        "--role",
        "commune",
        "--name",
        "Xã 9",
        "--province",
        "26",
        "--ttl",
        "120",
        secret=secret,
    )
    assert out.returncode == 0, out.stderr
    grant = verify_token(secret, out.stdout.strip())
    assert (grant.identity, grant.room, grant.role, grant.name, grant.province) == (
        "xa-9",
        "national",
        "commune",
        "Xã 9",
        "26",
    )
    assert grant.expires_at - time.time() <= 121
    bad = _cli("token", "--room", "r", "--identity", "a", "--role", "king", secret=secret)
    assert bad.returncode == 2 and "role" in bad.stderr


def test_cli_refuses_to_run_without_a_secret() -> None:
    for args in (
        ("token", "--room", "r", "--identity", "a", "--role", "chair"),
        ("serve", "--port", "0"),
    ):
        out = _cli(*args, secret=None)
        assert out.returncode == 2 and "HOINGHI_SECRET" in out.stderr
        assert "Traceback" not in out.stderr


def test_cli_dispatches_other_subcommands_with_the_rest_of_argv(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import hoinghi_cli

    seen: dict[str, list[str]] = {}
    for command, module in (
        ("bridge", "clients.bridge"),
        ("bench", "bench.cli"),
        ("loadtest", "bench.loadtest"),
    ):
        fake = types.ModuleType(module)

        def fake_main(argv: list[str], command: str = command) -> int:
            seen[command] = argv
            return 3

        fake.main = fake_main  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, module, fake)
        assert hoinghi_cli.main([command, "--url", "http://x", "-v"]) == 3
    assert seen == {c: ["--url", "http://x", "-v"] for c in ("bridge", "bench", "loadtest")}

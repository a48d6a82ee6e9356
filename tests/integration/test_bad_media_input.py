"""Bad media negotiation input through the real server: a clear `bad_sdp` / `bad_candidate`,
and the server keeps serving everyone else (over real websockets)."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import Connect, PublisherOffer, ServerProcess

pytestmark = pytest.mark.integration

BAD_SDPS = [
    "",
    "not an sdp",
    "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n",  # no session lines, no ICE, no DTLS
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n",  # no media at all
    "v=0\r\n" + "a=" + "x" * 60000 + "\r\n",  # huge attribute
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
    "c=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\na=rtpmap:111 opus/48000/2\r\n",  # no ICE/DTLS
]


async def test_invalid_sdp_gets_bad_sdp_and_others_are_unaffected(
    server: ServerProcess, connect_ws: Connect, publisher_offer: PublisherOffer
) -> None:
    room = f"r-{uuid.uuid4().hex[:8]}"
    bystander = await connect_ws(server)
    assert (await bystander.join(server.token(room, "watcher", "commune")))["type"] == "joined"
    bad = await connect_ws(server)
    assert (await bad.join(server.token(room, "sloppy", "province")))["type"] == "joined"
    for sdp in BAD_SDPS:
        reply = await bad.request({"type": "publish", "sdp": sdp})
        assert reply["type"] == "error" and reply["code"] in ("bad_sdp", "bad_message"), reply
        assert "Traceback" not in reply["message"]
    # A wrong answer to no offer, and a malformed candidate.
    reply = await bad.request({"type": "answer", "pc": "subscriber", "sdp": "v=0"})
    assert reply["type"] == "error" and reply["code"] == "bad_sdp", reply
    # The same connection still works: a real offer is answered.
    answer = await bad.request({"type": "publish", "sdp": await publisher_offer()})
    assert answer["type"] == "answer" and answer["sdp"].startswith("v=0"), answer
    reply = await bad.request({"type": "trickle", "pc": "publisher",
                               "candidate": {"candidate": "candidate:garbage", "sdpMid": "0"}})
    assert reply["type"] == "error" and reply["code"] == "bad_candidate", reply
    # Everyone else saw the good publish and still gets answers.
    published = await bystander.wait_type("track_published")
    assert published["track"]["participant_id"] == "sloppy"
    await bystander.ping()
    assert server.alive()

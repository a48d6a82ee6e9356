"""Unit checks of the browser client's pure modules, run in Chromium (there is no JS test
runner and no build step; the modules are imported as the pages import them)."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.e2e


@pytest.fixture
async def page(browser: Any, server: Any) -> Any:
    ctx = await browser.new_context()
    p = await ctx.new_page()
    await p.goto(f"{server.url}/index.html")
    yield p
    await ctx.close()


async def test_subscription_policy(page: Any) -> None:
    got = await page.evaluate("""async () => {
        const { desiredSubscriptions } = await import("/js/policy.js");
        const people = [{id: "hq", role: "chair"}, {id: "me", role: "commune", province: "B"}];
        for (let i = 0; i < 3; i++) people.push({id: `p${i}`, role: "province", province: `Z${i}`});
        for (let i = 0; i < 20; i++) people.push({id: `c${String(i).padStart(2, "0")}`,
                                                  role: "commune", province: "A"});
        const participants = new Map(people.map(p => [p.id, p]));
        const tracks = people.flatMap(p => [
            {id: `${p.id}/microphone`, kind: "audio", source: "microphone"},
            {id: `${p.id}/camera`, kind: "video", source: "camera"}]);
        const run = (extra) => [...desiredSubscriptions({tracks, participants, selfId: "me",
            limits: {video: 4, audio: 12}, ...extra})].sort();
        return {
            base: run({}),
            floor: run({floorHolder: "c17"}),
            pinned: run({pinned: ["c19"]}),
            small: run({limits: {video: 2, audio: 100}}).filter(id => id.endsWith("microphone")),
        };
    }""")
    # The chair always; never ourselves; provinces first among thumbnails; no bridge audio in a
    # room with more microphones than the limit.
    assert got["base"] == sorted(
        ["hq/camera", "hq/microphone", "p0/camera", "p1/camera", "p2/camera", "c00/camera"]
    )
    assert {"c17/camera", "c17/microphone"} <= set(got["floor"])
    assert {"c19/camera", "c19/microphone"} <= set(got["pinned"])
    assert len(got["small"]) == 24 and "me/microphone" not in got["small"]


async def test_subscription_manager_isolates_unknown_tracks(page: Any) -> None:
    got = await page.evaluate("""async () => {
        const { SubscriptionManager } = await import("/js/policy.js");
        const conf = new EventTarget();
        Object.assign(conf, {self: {id: "me"}, ws: {}, requests: [], unknown: new Set(["b"]),
            tracks: new Map(["a", "b", "c"].map(id => [id, {id}])),
            async request(msg) {
                this.requests.push(`${msg.type} ${msg.tracks.join(",")}`);
                if (msg.tracks.some(id => this.unknown.has(id))) {
                    throw Object.assign(new Error("unknown"), {code: "unknown_track"});
                }
                return {type: "ok"};
            },
            dropTransport(reason) { this.dropped = reason; }});
        let want = new Set(["a", "b", "c"]);
        const m = new SubscriptionManager(conf, () => want);
        const settle = async () => { while (m._running) await new Promise(r => setTimeout(r)); };
        m.sync(); await settle();
        const first = {requests: [...conf.requests], subscribed: [...m.subscribed].sort(),
                       refused: [...m.refused]};
        conf.requests.length = 0;
        m.sync(); await settle();
        const quiet = [...conf.requests];
        conf.unknown.clear();  // b is published (again): asked for again
        conf.dispatchEvent(new CustomEvent("track_published", {detail: {track: {id: "b"}}}));
        await settle();
        const republished = [...conf.requests];
        conf.requests.length = 0;
        want = new Set(["c"]);
        m.sync(); await settle();
        return {first, quiet, republished, dropped: [...conf.requests],
                subscribed: [...m.subscribed], transportDropped: conf.dropped ?? null};
    }""")
    assert got["first"] == {
        "requests": ["subscribe a,b,c", "subscribe a", "subscribe b", "subscribe c"],
        "subscribed": ["a", "c"],
        "refused": ["b"],
    }
    assert got["quiet"] == []  # a refused id is not asked for again and again
    assert got["republished"] == ["subscribe b"]
    assert got["dropped"] == ["unsubscribe a,b"] and got["subscribed"] == ["c"]
    assert got["transportDropped"] is None


async def test_token_decoding_and_search_folding(page: Any) -> None:
    got = await page.evaluate("""async () => {
        const { decodeToken, isExpired, viewFor } = await import("/js/token.js");
        const { fold } = await import("/js/roster.js");
        const b64 = s => btoa(String.fromCharCode(...new TextEncoder().encode(s)))
            .replace(/\\+/g, "-").replace(/\\//g, "_").replace(/=+$/, "");
        const jwt = claims => `${b64('{"alg":"HS256"}')}.${b64(JSON.stringify(claims))}.sig`;
        const claims = decodeToken(jwt({sub: "x", role: "commune", name: "Xã Đắk Mil", exp: 1}));
        const errors = [];
        for (const bad of ["", "a.b", jwt({sub: "x"}), jwt({sub: "x", role: "king"}), "a.%%%.c"]) {
            try { decodeToken(bad); errors.push(null); } catch (e) { errors.push(e.message); }
        }
        return {name: claims.name, expired: isExpired(claims), view: viewFor(claims),
                chair: viewFor({role: "operator"}), errors,
                folded: fold("Xã Đắk Mil, TỈNH ĐỒNG THÁP")};
    }""")
    assert got["name"] == "Xã Đắk Mil" and got["expired"] is True
    assert got["view"] == "bridge.html" and got["chair"] == "chair.html"
    assert all(got["errors"]), got["errors"]
    assert got["folded"] == "xa dak mil, tinh dong thap"


async def test_browser_pattern_reads_as_clients_media_pattern(page: Any) -> None:
    """testmedia.js paints clients/media.py's pattern (the Python probe checks browsers with
    it): read frames of the JS track with the Python reader, so the two cannot drift apart."""
    import base64

    import av
    import numpy as np

    from clients.media import bar_matches, read_frame_number

    grabs = await page.evaluate("""async () => {
        const { patternVideoTrack } = await import("/js/testmedia.js");
        const track = patternVideoTrack();
        const video = Object.assign(document.createElement("video"),
                                    {muted: true, srcObject: new MediaStream([track])});
        await video.play();
        const out = [];
        const canvas = new OffscreenCanvas(320, 240);
        const ctx = canvas.getContext("2d", {willReadFrequently: true});
        while (out.length < 3) {  // one grab per new video frame
            await new Promise(r => video.requestVideoFrameCallback(r));
            ctx.drawImage(video, 0, 0);
            const rgba = ctx.getImageData(0, 0, 320, 240).data;
            let gray = "";  // the pattern is gray: one channel is the picture
            for (let k = 0; k < rgba.length; k += 4) gray += String.fromCharCode(rgba[k]);
            out.push({w: 320, h: 240, gray: btoa(gray)});
        }
        track.stop();
        return out;
    }""")
    numbers = []
    for g in grabs:
        plane = np.frombuffer(base64.b64decode(g["gray"]), np.uint8).reshape(g["h"], g["w"])
        rgb = np.repeat(plane[:, :, None], 3, axis=2)
        # The same RGB -> video-range YUV conversion an encoder's input path does.
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        n = read_frame_number(frame)
        assert n is not None, "the browser pattern does not read as clients.media's"
        assert bar_matches(frame, n)
        numbers.append(n)
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers), numbers


async def test_floor_state_takes_presence_as_covering_the_log(page: Any) -> None:
    """floor.js: a `presence` moves the log position without a resync (it stands for joins and
    leaves a featured roster is not sent); a real gap still asks for a snapshot."""
    got = await page.evaluate("""async () => {
        const { FloorState } = await import("/js/floor.js");
        const conf = new EventTarget();
        conf.requests = [];
        conf.request = async (msg) => { conf.requests.push(msg.type); return {}; };
        const floor = new FloorState(conf);
        const emit = (type, detail) => conf.dispatchEvent(new CustomEvent(type, {detail}));
        emit("joined", {floor: {seq: 3, floor: [], hands: [], muted: [], chairs: ["hq"]}});
        emit("presence", {type: "presence", seq: 9, participant_count: 40});
        const afterPresence = [floor.seq, conf.requests.length];
        emit("floor_given", {type: "floor_given", seq: 10, participant_id: "xa-7"});
        const afterGiven = [floor.seq, floor.holder, conf.requests.length];
        emit("presence", {type: "presence", seq: 10, participant_count: 39});  // count only
        emit("hand_raised", {type: "hand_raised", seq: 12, participant_id: "xa-8"});
        return {afterPresence, afterGiven, gap: [floor.seq, conf.requests]};
    }""")
    assert got["afterPresence"] == [9, 0]
    assert got["afterGiven"] == [10, "xa-7", 0]
    assert got["gap"] == [10, ["floor_snapshot"]]

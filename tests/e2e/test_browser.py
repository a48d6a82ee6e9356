"""The browser client (clients/web) in a real headless Chromium against a real server.

Numbers (frames decoded, roster entries, state) come from the pages' `window.hoinghi` hook; the
roster is also checked in the DOM. Every wait is on a condition, never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.request
from typing import Any

import pytest

from .conftest import HOINGHI, PAGE_LOGS, screenshot

pytestmark = pytest.mark.e2e

ROOM = "hoinghi-e2e"
CHAIR = "trung-uong"
BRIDGE_A = "xa-hien-luong"
BRIDGE_B = "tinh-quang-ninh"
WAIT_MS = 25_000
MIC_MUTED = """([id, muted]) => window.hoinghi.roster()
    .some(e => e.id === id && e.connected && e.audio.muted === muted)"""
VISIBLE_ROWS = """() => [...document.querySelectorAll('#roster .row')]
    .filter(r => !r.hidden && !r.closest('details').hidden).length"""
RECONNECTED = "n => window.hoinghi.reconnects >= n && window.hoinghi.state === 'connected'"


async def diag(page: Any) -> str:
    """What a page knows, for assertion messages."""
    try:
        return json.dumps(
            await page.evaluate("""() => ({
            state: hoinghi.state, states: hoinghi.states, lastError: hoinghi.lastError,
            reconnects: hoinghi.reconnects, remote: hoinghi.remoteTracks(),
            frames: hoinghi.framesDecoded(), quality: hoinghi.quality(),
            participants: hoinghi.participants().map(p => p.id)})""")
        )
    except Exception as exc:  # the page may be gone
        return f"<no diagnostics: {exc}>"


async def wait_for(page: Any, expr: str, arg: Any = None, timeout: int = WAIT_MS) -> None:
    try:
        await page.wait_for_function(expr, arg=arg, timeout=timeout)
    except Exception as exc:
        raise AssertionError(f"{expr} (arg={arg!r}) not met: {exc}\n{await diag(page)}") from None


async def wait_connected(page: Any) -> None:
    await wait_for(page, "() => window.hoinghi.state === 'connected'")


async def frames(page: Any, track_id: str) -> int:
    return await page.evaluate("id => window.hoinghi.framesDecoded()[id] || 0", track_id)


async def wait_frames_grow(page: Any, track_id: str, by: int = 15) -> None:
    """framesDecoded of track_id (cumulative over rejoins) grows by `by` from now on."""
    start = await frames(page, track_id)
    await wait_for(
        page,
        "([id, n]) => (window.hoinghi.framesDecoded()[id] || 0) >= n",
        [track_id, start + by],
    )


def post_json(url: str, body: Any, token: str) -> tuple[int, Any]:
    req = urllib.request.Request(url, json.dumps(body).encode(), method="POST", headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only
    with opener.open(req, timeout=10) as resp:
        return resp.status, json.loads(resp.read())


def roster_has(ids: list[str]) -> str:
    return "ids => ids.every(id => window.hoinghi.roster().some(e => e.id === id && e.connected))"


async def test_join_page_routes_by_role(server: Any, browser: Any) -> None:
    ctx = await browser.new_context(permissions=["camera", "microphone"])
    try:
        page = await ctx.new_page()
        chair = server.token(ROOM, CHAIR, "chair", name="Trung ương")
        await page.goto(f"{server.url}/?token={chair}")
        await page.wait_for_url("**/chair.html")
        assert "token=" not in page.url  # tokens do not stay in the address bar

        commune = server.token(ROOM, BRIDGE_A, "commune", name="Xã Hiền Lương", province="PT")
        page = await ctx.new_page()
        await page.goto(f"{server.url}/")
        await page.fill("#token", commune)
        await page.wait_for_selector("#token-info:not([hidden])")
        assert "Xã Hiền Lương" in await page.text_content("#token-info")
        await screenshot(page, "join", "index")
        await page.click("#join")
        await page.wait_for_url("**/bridge.html")
        await wait_connected(page)

        page = await ctx.new_page()
        await page.goto(f"{server.url}/?token=not-a-jwt")
        await page.wait_for_selector("#join-error:not([hidden])")
        assert "JWT" in await page.text_content("#join-error")
    finally:
        await ctx.close()


async def test_chair_and_two_bridges(server: Any, pages: Any) -> None:
    test = "conference"
    chair = await pages.open("chair", server.token(ROOM, CHAIR, "chair", name="Trung ương"))
    a = await pages.open(
        "bridge-a", server.token(ROOM, BRIDGE_A, "commune", name="Xã Hiền Lương", province="PT")
    )
    b = await pages.open(
        "bridge-b",
        server.token(ROOM, BRIDGE_B, "province", name="Tỉnh Quảng Ninh", province="QN"),
    )
    for page in (chair, a, b):
        await wait_connected(page)

    # Media: each bridge decodes the chair; the chair decodes both bridges.
    for page in (a, b):
        await wait_frames_grow(page, f"{CHAIR}/camera")
    for bridge in (BRIDGE_A, BRIDGE_B):
        await wait_frames_grow(chair, f"{bridge}/camera")

    # Roster: the hook, then the DOM (grouped by province, names shown).
    await wait_for(chair, roster_has([BRIDGE_A, BRIDGE_B]), [BRIDGE_A, BRIDGE_B])
    entries = {e["id"]: e for e in await chair.evaluate("() => window.hoinghi.roster()")}
    assert entries[BRIDGE_A]["province"] == "PT" and entries[BRIDGE_A]["role"] == "commune"
    assert entries[BRIDGE_B]["video"]["published"] and entries[BRIDGE_B]["audio"]["published"]
    for bridge, province, name in (
        (BRIDGE_A, "PT", "Xã Hiền Lương"),
        (BRIDGE_B, "QN", "Tỉnh Quảng Ninh"),
    ):
        row = chair.locator(
            f'#roster details[data-province="{province}"] [data-participant-id="{bridge}"]'
        )
        await row.wait_for(state="visible")
        assert name in await row.text_content()
        assert await row.get_attribute("data-connected") == "true"
    assert await chair.locator("#roster [data-participant-id]").count() == 2

    # The chair's big tile: on a bridge by itself, then on the one the chair clicks.
    assert (await chair.evaluate("() => window.hoinghi.layout().focus")) in (BRIDGE_A, BRIDGE_B)
    await chair.click(f'#roster [data-participant-id="{BRIDGE_A}"]')
    await wait_for(chair, "id => window.hoinghi.layout().focus === id", BRIDGE_A)
    focus = chair.locator(f'#focus-slot [data-track-id="{BRIDGE_A}/camera"]')
    await focus.wait_for()
    assert "Xã Hiền Lương" in await chair.text_content("#control-target")

    # The bridge view: chair large, the other bridge as a thumbnail, or in the speaker's tile
    # while the server hears it as the dominant speaker (every page plays the same tone).
    shown_b = ("(window.hoinghi.layout().thumbnails.includes(id)"
               " || window.hoinghi.layout().speaker === id)")
    await wait_for(a, f"id => {shown_b}", BRIDGE_B)
    layout = await a.evaluate("() => window.hoinghi.layout()")
    assert layout["chair"] == CHAIR
    assert BRIDGE_B in layout["thumbnails"] or layout["speaker"] == BRIDGE_B
    assert BRIDGE_B not in layout["thumbnails"] or layout["speaker"] != BRIDGE_B  # once

    # Search narrows the roster without diacritics.
    await chair.fill("#roster-search", "quang ninh")
    await chair.locator(f'#roster [data-participant-id="{BRIDGE_A}"]').wait_for(state="hidden")
    assert await chair.locator(f'#roster [data-participant-id="{BRIDGE_B}"]').is_visible()
    await chair.fill("#roster-search", "")

    # Mute: visible on the bridge itself and in the chair's roster.
    await a.click("#mic")
    await wait_for(a, "() => window.hoinghi.muted().microphone === true")
    await a.locator("#mute-indicator[data-muted='true']").wait_for()
    assert "TẮT" in await a.text_content("#mute-indicator")
    await wait_for(
        chair, "id => window.hoinghi.roster().find(e => e.id === id).audio.muted", BRIDGE_A
    )
    await chair.locator(f'#roster [data-participant-id="{BRIDGE_A}"] .av.muted').wait_for()

    # Own connection quality is measured and shown.
    await wait_for(a, "() => window.hoinghi.quality().up_kbps > 0")
    for name, page in (("chair", chair), ("bridge-a", a), ("bridge-b", b)):
        await screenshot(page, test, name)

    # Closing a bridge page removes it from the roster within a few seconds.
    await b.close()
    await wait_for(
        chair, "id => !window.hoinghi.roster().some(e => e.id === id)", BRIDGE_B, timeout=5_000
    )
    await chair.locator(f'#roster [data-participant-id="{BRIDGE_B}"]').wait_for(
        state="detached", timeout=5_000
    )
    await wait_for(a, f"id => !{shown_b}", BRIDGE_B, timeout=5_000)
    await screenshot(chair, test, "chair-after-leave")


async def test_bridge_reconnects(server: Any, pages: Any) -> None:
    test = "reconnect"
    chair = await pages.open("chair", server.token(ROOM, CHAIR, "chair", name="Trung ương"))
    a = await pages.open(
        "bridge", server.token(ROOM, BRIDGE_A, "commune", name="Xã Hiền Lương", province="PT")
    )
    for page in (chair, a):
        await wait_connected(page)
    await wait_frames_grow(a, f"{CHAIR}/camera")
    await wait_frames_grow(chair, f"{BRIDGE_A}/camera")
    await a.click("#mic")  # a muted bridge must come back muted
    await wait_for(chair, MIC_MUTED, [BRIDGE_A, True])

    # 1. The websocket dies under the page (closed from outside the client's logic).
    await a.evaluate("() => window.hoinghi.debug.closeSocket()")
    await wait_for(a, RECONNECTED, 1)
    assert "reconnecting" in await a.evaluate("() => window.hoinghi.states")
    await wait_frames_grow(a, f"{CHAIR}/camera")
    await wait_frames_grow(chair, f"{BRIDGE_A}/camera")
    await wait_for(chair, roster_has([BRIDGE_A]), [BRIDGE_A])
    await wait_for(chair, MIC_MUTED, [BRIDGE_A, True])
    assert (await a.evaluate("() => window.hoinghi.muted()"))["microphone"] is True

    # 2. ICE fails: the same full rejoin.
    await a.evaluate("() => window.hoinghi.debug.failIce()")
    await wait_for(a, RECONNECTED, 2)
    await wait_frames_grow(a, f"{CHAIR}/camera")
    await wait_frames_grow(chair, f"{BRIDGE_A}/camera")

    # 3. The server closes the socket itself: flooding past the rate limit gets close 4008.
    await a.evaluate("""() => { const ws = window.hoinghi.conference.ws;
        for (let i = 0; i < 400; i++) ws.send(JSON.stringify({type: "ping"})); }""")
    await wait_for(a, RECONNECTED, 3)
    assert "4008" in await a.evaluate("() => window.hoinghi.lastError")
    await wait_frames_grow(a, f"{CHAIR}/camera")
    await wait_frames_grow(chair, f"{BRIDGE_A}/camera")

    # 4. The chair's own connection drops: every bridge gets the chair back.
    await chair.evaluate("() => window.hoinghi.debug.closeSocket()")
    await wait_for(chair, RECONNECTED, 1)
    await wait_frames_grow(a, f"{CHAIR}/camera")
    await wait_for(a, "id => window.hoinghi.layout().chair === id", CHAIR)
    await screenshot(a, test, "bridge-after-reconnect")
    await screenshot(chair, test, "chair")


async def test_floor_control(server: Any, pages: Any) -> None:
    """docs/floor.md end to end, in a conference created through the API with `last_n` 0: the
    chair gives the floor, every bridge shows the speaker; a bridge raises its hand; the roll
    call brings each bridge's own quality to the roster. The bridges get the featured roster
    (docs/signaling.md): the chair and the count, then the speaker when it is given the floor."""
    chair_token = server.token(ROOM, CHAIR, "chair", name="Trung ương")
    status, body = await asyncio.to_thread(
        post_json, f"{server.url}/api/rooms", {"room": ROOM, "last_n": 0}, chair_token)
    assert status == 201 and body["roster"] == "featured", body
    chair = await pages.open("chair", chair_token)
    a = await pages.open(
        "bridge-a", server.token(ROOM, BRIDGE_A, "commune", name="Xã Hiền Lương", province="PT")
    )
    b = await pages.open(
        "bridge-b", server.token(ROOM, BRIDGE_B, "province", name="Tỉnh Quảng Ninh", province="QN")
    )
    for page in (chair, a, b):
        await wait_connected(page)
    if not await chair.evaluate("() => window.hoinghi.floor().supported"):
        pytest.skip("this server sends no `joined.floor`: floor control not there yet")
    # Bridge A is told of the chair and counts three; the chair's console is told of everyone.
    await wait_for(a, "() => window.hoinghi.presence().count === 3")
    assert await a.evaluate("() => window.hoinghi.presence().roster") == "featured"
    assert {p["id"] for p in await a.evaluate("() => window.hoinghi.participants()")} == {
        CHAIR, BRIDGE_A}
    # Rendered after the presence (batched): one other bridge, B, unless B is already shown
    # as the speaker (the server heard it first: the dominant speaker is featured).
    await wait_for(a, """id => { const h = window.hoinghi;
        const shown = h.floor().dominant === id && h.participants().some(p => p.id === id);
        return document.querySelector('#others-count').textContent
            .startsWith(shown ? '0 điểm cầu' : '1 điểm cầu'); }""", BRIDGE_B)
    await wait_for(chair, roster_has([BRIDGE_A, BRIDGE_B]), [BRIDGE_A, BRIDGE_B])

    await chair.click(f'#roster [data-participant-id="{BRIDGE_B}"]')
    await chair.click("#control-buttons [data-control='floor']")
    for page in (a, chair):
        await wait_for(page, "id => window.hoinghi.floor().holder === id", BRIDGE_B)
    await a.locator(f'#speaker-slot [data-participant-id="{BRIDGE_B}"]').wait_for()
    await wait_for(a, "() => document.querySelector('#speaker-slot').textContent"
                      ".includes('Tỉnh Quảng Ninh')")  # introduced by name
    await wait_frames_grow(a, f"{BRIDGE_B}/camera")  # the speaker is seen
    await b.locator("#floor-state[data-state='floor']").wait_for()
    # B, holding the floor, counts one other bridge (A): itself is not subtracted twice.
    await wait_for(b, "() => document.querySelector('#others-count').textContent"
                      ".startsWith('1 điểm cầu')")
    await wait_for(chair, "id => window.hoinghi.roster().find(e => e.id === id).floor", BRIDGE_B)
    assert "Thu hồi" in await chair.text_content("#control-buttons [data-control='floor']")

    await a.click("#hand")
    await a.locator("#floor-state[data-state='hand_raised']").wait_for()
    await chair.locator(f'#hands [data-participant-id="{BRIDGE_A}"]').wait_for()
    await wait_for(
        chair, "id => window.hoinghi.roster().find(e => e.id === id).hand === 1", BRIDGE_A
    )

    # Quality as the bridge itself reports it, through the roll call.
    await wait_for(
        chair,
        """id => (window.hoinghi.roster().find(e => e.id === id).quality || {})
        .source === 'client'""",
        BRIDGE_A,
    )
    for name, page in (("chair", chair), ("bridge-a", a), ("bridge-b", b)):
        await screenshot(page, "floor", name)

    # A `remap` (docs/signaling.md, Receiving): the section that carried B's camera now
    # carries another bridge's; the page re-labels it without any SDP (injected: the server
    # sends one on a floor turn between two holders, which this room of two bridges lacks).
    await a.evaluate("""id => { const conf = window.hoinghi.conference, mids = {};
        for (const [tid, e] of conf.remote) mids[e.mid] = tid;
        mids[conf.remote.get(id).mid] = "xa-khac/camera";
        window.hoinghi.debug.inject({type: "remap", pc: "subscriber", mids}); }""",
                     f"{BRIDGE_B}/camera")
    await wait_for(a, """id => { const r = window.hoinghi.remoteTracks();
        return r.includes("xa-khac/camera") && !r.includes(id); }""", f"{BRIDGE_B}/camera")

    await chair.click("#control-buttons [data-control='floor']")  # take it back
    await wait_for(a, "() => window.hoinghi.floor().holder === null")


async def test_replaced_and_expired_sessions_do_not_retry(server: Any, pages: Any) -> None:
    chair = await pages.open("chair", server.token(ROOM, CHAIR, "chair", name="Trung ương"))
    token = server.token(ROOM, BRIDGE_A, "commune", name="Xã Hiền Lương", province="PT")
    first = await pages.open("first", token)
    await wait_connected(first)
    # The same bridge opened elsewhere (a second PC in the commune hall): it takes over.
    second = await pages.open("second", token)
    await wait_connected(second)
    await wait_for(first, "() => window.hoinghi.state === 'replaced'")
    await first.locator("#notice:not([hidden])").wait_for()
    # Time passes (the chair keeps decoding the new session) and the old page stays down
    # instead of taking the bridge back, which would make two pages evict each other forever.
    await wait_frames_grow(chair, f"{BRIDGE_A}/camera", by=40)
    assert await first.evaluate("() => [window.hoinghi.state, window.hoinghi.reconnects]") == [
        "replaced",
        0,
    ]
    await screenshot(first, "replaced", "old-page")

    expired = server.token(ROOM, "xa-tre", "commune", ttl_s=60, now=time.time() - 3600)
    late = await pages.open("expired", expired, view="bridge.html")
    await wait_for(late, "() => window.hoinghi.state === 'failed'")
    assert await late.evaluate("() => window.hoinghi.lastError") == "token_expired"
    assert await late.evaluate("() => window.hoinghi.reconnects") == 0


async def test_python_bridge_and_browser(server: Any, pages: Any) -> None:
    probe = subprocess.run([str(HOINGHI), "bridge", "--help"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"`hoinghi bridge` not available yet: {probe.stderr.strip()[:200]}")
    # The browser publishes the verifiable pattern (testmedia.js) the Python probe checks.
    page = await pages.open(
        "browser",
        server.token(ROOM, BRIDGE_A, "commune", name="Xã Hiền Lương", province="PT"),
        query="media=pattern",
    )
    await wait_connected(page)

    def bridge(identity: str, *extra: str) -> Any:
        token = server.token(ROOM, identity, "commune", name=f"Xã {identity}", province="PT")
        return asyncio.create_subprocess_exec(
            str(HOINGHI), "bridge", "--url", server.url, "--token", token,
            "--ice-host", "127.0.0.1", *extra,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip

    # Python -> browser: a bridge that stays (the probe leaves as soon as it has its frames).
    resident = await bridge("xa-python")
    # Browser -> Python: the probe decodes and checks 30 of the browser's frames.
    checker = await bridge(
        "xa-python-probe", "--expect-frames", "30", "--from", BRIDGE_A, "--timeout", "30"
    )
    try:
        await wait_frames_grow(page, "xa-python/camera", by=30)
        await screenshot(page, "python-bridge", "browser")
        out, err = await asyncio.wait_for(checker.communicate(), 45)
    finally:
        for proc in (checker, resident):
            if proc.returncode is None:
                proc.terminate()  # the resident bridge leaves cleanly on SIGTERM
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
    summary = json.loads(out.decode().strip().splitlines()[-1]) if out.strip() else {}
    PAGE_LOGS.mkdir(parents=True, exist_ok=True)
    (PAGE_LOGS / "python-probe.json").write_text(json.dumps(summary, indent=1) + "\n")
    assert checker.returncode == 0, f"python probe: {summary} {err.decode()[-2000:]}"
    assert summary["ok"] and summary["frames"] >= 30, summary
    assert summary["invalid_frames"] == 0, summary


async def test_roster_at_national_scale(server: Any, pages: Any) -> None:
    """3,355 bridge points injected through the hook: grouped, counted, searchable, fast."""
    chair = await pages.open(
        "chair", server.token(ROOM, CHAIR, "chair", name="Trung ương"), query="subscribe=all"
    )
    await wait_connected(chair)
    elapsed = await chair.evaluate("""async () => {
        const provinces = Array.from({length: 34}, (_, i) => `P${String(i).padStart(2, "0")}`);
        const t0 = performance.now();
        const inject = window.hoinghi.debug.inject;
        for (let i = 0; i < 3355; i++) {
            const province = provinces[i % 34];
            const id = i < 34 ? `tinh-${province}` : `xa-${i}`;
            const name = i === 100 ? "Xã Ea Súp" : (i < 34 ? `Tỉnh ${province}` : `Xã số ${i}`);
            inject({type: "participant_joined", participant: {id, name, province,
                    role: i < 34 ? "province" : "commune"}});
            if (i % 50 === 0) continue;  // joined, nothing published yet: a problem to show
            inject({type: "track_published", track: {id: `${id}/microphone`, participant_id: id,
                    kind: "audio", source: "microphone", codec: "opus", muted: i % 3 === 0}});
        }
        await new Promise(r => {
            const check = () => document.querySelectorAll("#roster [data-participant-id]")
                .length === 3355 ? r() : setTimeout(check, 20);
            check();
        });
        return performance.now() - t0;
    }""")
    assert elapsed < 5_000, f"roster of 3,355 took {elapsed:.0f} ms"
    assert await chair.locator("#roster details.group").count() == 34
    assert "3355/3355" in await chair.text_content("#roster-count")
    group = chair.locator('#roster details[data-province="P07"]')
    assert await group.get_attribute("data-total") == str(len(range(7, 3355, 34)))
    assert not await group.evaluate("el => el.open")  # at this size provinces start collapsed

    await chair.fill("#roster-search", "ea sup")  # no diacritics, finds "Xã Ea Súp"
    await wait_for(chair, VISIBLE_ROWS + " === 1")
    await screenshot(chair, "scale", "chair-search")
    await chair.fill("#roster-search", "")

    await chair.check("#roster-problems")  # the 68 bridges that joined without media
    await wait_for(chair, VISIBLE_ROWS + " === 68")
    await screenshot(chair, "scale", "chair-problems")
    await chair.uncheck("#roster-problems")

    await chair.evaluate("""() => { for (let i = 34; i < 134; i++)
        window.hoinghi.debug.inject({type: "participant_left", participant_id: `xa-${i}`,
                                     reason: "disconnected"}); }""")
    await wait_for(chair, "() => window.hoinghi.roster().length === 3255")
    await wait_for(
        chair,
        """() => document.querySelectorAll('#roster [data-participant-id]')
        .length === 3255""",
    )
    await screenshot(chair, "scale", "chair")


async def test_chromium_keeps_ice_consent_with_our_stun_codec(server: Any, pages: Any) -> None:
    """The consent checks (RFC 7675) both ways are the SFU's own codec (sfu/core/stun.py):
    Chromium must accept our answers and our checks, every ~5 s, or it drops the call."""
    from tests.integration.test_span import room_metric

    room = "hoinghi-e2e-consent"
    chair = await pages.open("chair", server.token(room, CHAIR, "chair", name="Trung ương"))
    bridge = await pages.open("bridge", server.token(room, BRIDGE_A, "commune", name="Xã A"))
    for page in (chair, bridge):
        await wait_connected(page)

    async def answered() -> tuple[float, float]:
        theirs = await room_metric(server, "hoinghi_router_ingress_checks_answered", room)
        ours = await room_metric(server, "hoinghi_router_consent_checks_answered", room)
        return sum(theirs.values()), sum(ours.values())

    deadline = time.monotonic() + 40
    while min(await answered()) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.5)  # Chromium checks every 4-6 s, and so do we
    theirs, ours = await answered()
    assert theirs >= 2 and ours >= 2, (theirs, ours)
    expired = await room_metric(server, "hoinghi_router_consent_expired", room)
    assert sum(expired.values()) == 0
    await wait_frames_grow(bridge, f"{CHAIR}/camera")  # both connections still carry media

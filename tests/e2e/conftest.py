"""Fixtures for the browser tests: a headless Debian Chromium and pages in it.

The server is tests/conftest.py's `server` (a real `hoinghi serve --port 0 --ice-host
127.0.0.1` subprocess with `.url` and `.token(room, identity, role, **claims)`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
HOINGHI = Path(sys.executable).with_name("hoinghi")
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "artifacts"
SCREENSHOTS = ARTIFACTS / "screenshots"
PAGE_LOGS = ARTIFACTS / "e2e-logs"

# From shared/notes/webrtc-on-loopback.md: without --allow-loopback-in-peer-connection and the
# mDNS feature off, Chromium offers no usable candidate on 127.0.0.1 and ICE never completes.
CHROMIUM_ARGS = [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    # Several pages share one browser in a test; none may be throttled as a background tab.
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
]


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed (make sysdeps)")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        b = await pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield b
        finally:
            await b.close()


class Pages:
    """Opens one page per participant, each in its own browser context (own sessionStorage),
    keeps their console output, and writes it to artifacts/e2e-logs/ at the end."""

    def __init__(self, browser: Any, base_url: str, test_name: str) -> None:
        self.browser = browser
        self.base_url = base_url
        self.test_name = test_name
        self.logs: dict[str, list[str]] = {}
        self.contexts: list[Any] = []

    async def open(self, name: str, token: str, query: str = "", view: str = "") -> Any:
        """A page for `token`: through the join page, or straight to `view` (e.g. for a
        token the join page would refuse)."""
        ctx = await self.browser.new_context(
            permissions=["camera", "microphone"], viewport={"width": 1280, "height": 800}
        )
        self.contexts.append(ctx)
        page = await ctx.new_page()
        log = self.logs.setdefault(name, [])
        t0 = time.monotonic()
        page.on("console", lambda m: log.append(f"{time.monotonic() - t0:7.2f} {m.type}: {m.text}"))
        page.on("pageerror", lambda e: log.append(f"{time.monotonic() - t0:7.2f} PAGEERROR: {e}"))
        sep = "&" if query else ""
        await page.goto(f"{self.base_url}/{view}?{query}{sep}token={token}")
        await page.wait_for_function("() => window.hoinghi && window.hoinghi.self !== undefined")
        return page

    def dump(self) -> None:
        PAGE_LOGS.mkdir(parents=True, exist_ok=True)
        for name, lines in self.logs.items():
            (PAGE_LOGS / f"{self.test_name}-{name}.log").write_text("\n".join(lines) + "\n")

    async def close(self) -> None:
        for ctx in self.contexts:
            await ctx.close()


@pytest.fixture
async def pages(browser: Any, server: Any, request: pytest.FixtureRequest) -> AsyncIterator[Pages]:
    p = Pages(browser, server.url, request.node.name)
    try:
        yield p
    finally:
        p.dump()
        await p.close()


async def screenshot(page: Any, test: str, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{test}-{name}.png"
    await page.screenshot(path=str(path))
    return path

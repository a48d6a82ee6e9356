"""A minimal async HTTP/1.1 JSON client for loopback control APIs (Janus's HTTP API).

Why not a library: the venv has none (no aiohttp/httpx), the benchmark needs only POST/GET of
small JSON bodies to 127.0.0.1, and a dependency would mean editing pyproject.toml.
One TCP connection per request (`Connection: close`) keeps it trivially correct.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit


class HttpError(Exception):
    pass


async def request_json(
    method: str, url: str, body: Any = None, timeout: float = 40.0,
    headers: dict[str, str] | None = None,
) -> Any:
    """Send one request, return the decoded JSON body. Raises HttpError on non-2xx."""
    text = await request_text(method, url, body, timeout, headers)
    return json.loads(text) if text.strip() else None


async def request_text(
    method: str, url: str, body: Any = None, timeout: float = 40.0,
    headers: dict[str, str] | None = None,
) -> str:
    """Send one request, return the body as text. Raises HttpError on non-2xx."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    payload = b"" if body is None else json.dumps(body).encode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n{extra}\r\n"
    ).encode()

    async def go() -> str:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(head + payload)
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
        header, _, rest = raw.partition(b"\r\n\r\n")
        lines = header.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        pairs = (x.partition(":") for x in lines[1:])
        headers = {k.strip().lower(): v.strip() for k, _, v in pairs}
        if headers.get("transfer-encoding", "").lower() == "chunked":
            rest = _dechunk(rest)
        if not 200 <= status < 300:
            raise HttpError(f"{method} {url}: HTTP {status}: {rest[:300]!r}")
        return rest.decode("utf-8", errors="replace")

    return await asyncio.wait_for(go(), timeout)


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return bytes(out)

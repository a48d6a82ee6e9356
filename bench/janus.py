"""Janus (Debian's janus 1.1.2, VideoRoom plugin) as the peer SFU, run as our own child process.

Never the system service: a private config folder per run (only the VideoRoom plugin and the
HTTP transport, both bound to 127.0.0.1), a random admin secret, and an LD_PRELOAD shim.

Why the shim: Janus skips every interface flagged IFF_LOOPBACK when it collects ICE host
addresses (src/ice.c), so restricted to `lo` it has no address at all and falls back to other
NICs. The shim wraps getifaddrs() for the Janus child only and clears IFF_LOOPBACK on `lo`.
It is compiled with gcc at run time into the run's temp folder (nothing binary is committed).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import subprocess
from pathlib import Path

from bench.httpc import HttpError, request_json
from bench.janus_api import JanusSession
from bench.procs import Child, spawn

# HOINGHI_JANUS_ROOT: a relocatable copy (scripts/device-prep.sh packs one for the device
# machine, which cannot install packages): bin/janus, janus/{plugins,transports}, lib/.
_ROOT = os.environ.get("HOINGHI_JANUS_ROOT")
JANUS_BIN = str(Path(_ROOT) / "bin" / "janus") if _ROOT else "janus"
_LIBDIR_CANDIDATES = ((str(Path(_ROOT) / "janus"),) if _ROOT else ()) + (
    "/usr/lib/x86_64-linux-gnu/janus", "/usr/lib/aarch64-linux-gnu/janus", "/usr/lib/janus",
    "/opt/janus/lib/janus")

_SHIM_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <string.h>

int getifaddrs(struct ifaddrs **ifap) {
    static int (*real)(struct ifaddrs **) = 0;
    if (!real) real = (int (*)(struct ifaddrs **))dlsym(RTLD_NEXT, "getifaddrs");
    int rc = real(ifap);
    if (rc == 0)
        for (struct ifaddrs *i = *ifap; i; i = i->ifa_next)
            if (i->ifa_name && strcmp(i->ifa_name, "lo") == 0)
                i->ifa_flags &= ~IFF_LOOPBACK;
    return rc;
}
"""

# Janus configurations the benchmark knows, by name: overrides of janus.jcfg's general section.
CONFIGS: dict[str, dict[str, str]] = {
    "default": {},
    "event_loops2": {"event_loops": "2"},
}


def janus_available() -> bool:
    return shutil.which(JANUS_BIN) is not None and _libdir() is not None


def _libdir() -> Path | None:
    for d in _LIBDIR_CANDIDATES:
        if (Path(d) / "plugins" / "libjanus_videoroom.so").exists():
            return Path(d)
    return None


def free_port() -> int:
    # Janus cannot be told "port 0, tell me which": pick a free one and hand it over.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def compile_shim(folder: Path) -> Path:
    src, lib = folder / "lo_shim.c", folder / "lo_shim.so"
    src.write_text(_SHIM_C)
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise RuntimeError("janus peer needs gcc (or cc) to build its loopback shim")
    subprocess.run([gcc, "-shared", "-fPIC", "-O2", "-o", str(lib), str(src), "-ldl"],
                   check=True, capture_output=True)
    return lib


def write_config(folder: Path, config: str, http_port: int, admin_port: int,
                 admin_secret: str, rtp_range: tuple[int, int]) -> Path:
    """A config folder with only what the benchmark needs; returns the janus.jcfg path."""
    if config not in CONFIGS:
        raise ValueError(f"unknown janus config {config!r} (known: {', '.join(CONFIGS)})")
    libdir = _libdir()
    if libdir is None:
        raise RuntimeError("janus plugins not found (apt-get install -y janus)")
    # Private plugin/transport folders holding only what we load: Janus loads everything it finds.
    for kind, name in (("plugins", "libjanus_videoroom.so"), ("transports", "libjanus_http.so")):
        (folder / kind).mkdir(parents=True, exist_ok=True)
        link = folder / kind / name
        if not link.exists():
            link.symlink_to(libdir / kind / name)
    for kind in ("events", "loggers"):
        (folder / kind).mkdir(exist_ok=True)
    general = {
        "configs_folder": f'"{folder}"',
        "plugins_folder": f'"{folder / "plugins"}"',
        "transports_folder": f'"{folder / "transports"}"',
        "events_folder": f'"{folder / "events"}"',
        "loggers_folder": f'"{folder / "loggers"}"',
        # Warnings only: Janus's logging is CPU too, and info lines are per handle, not needed.
        "debug_level": os.environ.get("HOINGHI_BENCH_JANUS_DEBUG", "3"),
        "admin_secret": f'"{admin_secret}"',
        "interface": '"127.0.0.1"',
        "server_name": '"hoinghi-bench"',
        "session_timeout": "60",
    }
    general.update(CONFIGS[config])
    jcfg = folder / "janus.jcfg"
    jcfg.write_text(
        "general: {\n" + "".join(f"\t{k} = {v}\n" for k, v in general.items()) + "}\n"
        "certificates: {\n}\n"
        f'media: {{\n\tipv6 = false\n\trtp_port_range = "{rtp_range[0]}-{rtp_range[1]}"\n}}\n'
        'nat: {\n\tnice_debug = false\n\tice_enforce_list = "lo"\n\tignore_mdns = true\n}\n'
        "plugins: {\n}\ntransports: {\n}\nloggers: {\n}\nevents: {\n\tbroadcast = false\n}\n"
    )
    (folder / "janus.transport.http.jcfg").write_text(
        "general: {\n"
        f'\tjson = "compact"\n\tbase_path = "/janus"\n\thttp = true\n\tport = {http_port}\n'
        f'\tip = "127.0.0.1"\n\thttps = false\n\tacl = "127."\n}}\n'
        "admin: {\n"
        f'\tadmin_base_path = "/admin"\n\tadmin_http = true\n\tadmin_port = {admin_port}\n'
        f'\tadmin_ip = "127.0.0.1"\n\tadmin_https = false\n\tadmin_acl = "127."\n}}\n'
        "cors: {\n}\n"
    )
    # No static rooms: the benchmark creates its own through the API.
    (folder / "janus.plugin.videoroom.jcfg").write_text("general: {\n}\n")
    return jcfg


class JanusServer:
    """Start/stop one Janus child; exposes its pid (for /proc CPU) and the API URLs."""

    system = "janus"

    def __init__(self, workdir: Path, config: str = "default") -> None:
        self.workdir = workdir
        self.config = config
        self.child: Child | None = None
        self.url = ""
        self.admin_url = ""
        self.admin_secret = secrets.token_hex(12)
        self.room = secrets.randbelow(1 << 30) + 1
        self._control: JanusSession | None = None

    @property
    def pid(self) -> int:
        assert self.child is not None
        return self.child.pid

    async def start(self, timeout: float = 20.0) -> int:
        folder = self.workdir / f"janus-{self.config}"
        folder.mkdir(parents=True, exist_ok=True)
        shim = compile_shim(folder)
        http_port, admin_port = free_port(), free_port()
        # Below the ephemeral range (where aiortc's sockets land), random to avoid neighbours.
        base = 20000 + secrets.randbelow(10) * 1000
        jcfg = write_config(folder, self.config, http_port, admin_port, self.admin_secret,
                            (base, base + 999))
        env = dict(os.environ, LD_PRELOAD=str(shim))
        if _ROOT:  # the copy's own libraries, for the Janus child only
            env["LD_LIBRARY_PATH"] = str(Path(_ROOT) / "lib")
        self.child = await spawn(
            f"janus[{self.config}]",
            [JANUS_BIN, "-F", str(folder), "-C", str(jcfg), "-o"],
            self.workdir / f"janus-{self.config}.log", env=env, worker=False, server=True,
        )
        self.url = f"http://127.0.0.1:{http_port}/janus"
        self.admin_url = f"http://127.0.0.1:{admin_port}/admin"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self.child.proc.returncode is not None:
                raise RuntimeError(f"janus exited at start:\n{self.child.log_tail()}")
            try:
                await request_json("GET", self.url + "/info", timeout=2)
                break
            except (OSError, HttpError, TimeoutError):
                if loop.time() > deadline:
                    raise RuntimeError(
                        f"janus not answering on {self.url}:\n{self.child.log_tail()}"
                    ) from None
                await asyncio.sleep(0.1)
        # Our own control session: creates the room and stays alive (keepalives) for the run.
        self._control = await JanusSession.create(self.url)
        handle = await self._control.attach()
        await self._control.message(handle, {
            "request": "create", "room": self.room, "publishers": 1,
            "audiocodec": "opus", "videocodec": "vp8",
            # Janus sends REMB with this cap; the publisher pins its encoder anyway.
            "bitrate": 2_000_000, "fir_freq": 0, "notify_joining": False,
        })
        return self.child.pid

    def spec(self) -> dict[str, object]:
        """What the publisher and subscriber processes need to reach this server."""
        return {"system": "janus", "url": self.url, "room": self.room}

    async def forwarded_packets(self) -> int:
        """Media packets Janus itself says it sent, all handles (admin API `handle_info`).

        Independent of the subscribers: tells an SFU that drops from receivers that drop.
        """
        body = {"janus": "list_sessions", "transaction": secrets.token_hex(6),
                "admin_secret": self.admin_secret}
        total = 0
        sessions = (await request_json("POST", self.admin_url, body)).get("sessions", [])
        for sid in sessions:
            body = dict(body, janus="list_handles", transaction=secrets.token_hex(6))
            handles = await request_json("POST", f"{self.admin_url}/{sid}", body)
            for hid in handles.get("handles", []):
                body = dict(body, janus="handle_info", transaction=secrets.token_hex(6))
                info = await request_json("POST", f"{self.admin_url}/{sid}/{hid}", body)
                media = info.get("info", {}).get("webrtc", {}).get("media", {}) or {}
                for medium in media.values():
                    total += int(medium.get("stats", {}).get("out", {}).get("packets", 0) or 0)
        return total

    async def stop(self) -> None:
        if self._control is not None:
            await self._control.close()
            self._control = None
        if self.child is not None:
            await self.child.stop(grace=5)

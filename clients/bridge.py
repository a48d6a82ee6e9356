"""`hoinghi bridge`: a conference bridge point (a commune's or province's room system) in Python.

It joins with its token, publishes a camera and a microphone (synthetic, or from a file) and
receives everyone else. Two modes:
- `--expect-frames N --from ID`: a probe. Exit 0 once N valid frames (right picture, increasing
  numbers) of ID's camera are decoded; non-zero on timeout or a bad picture. One JSON line on
  stdout either way.
- otherwise: run until SIGINT/SIGTERM, reconnecting (same identity, the server replaces the old
  session) when the connection drops; leave cleanly on the signal.

Exit codes: 0 ok, 1 expectation not met (timeout, bad pictures), 2 usage, 3 refused by the server
(bad token, wrong room, replaced...) or unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

from aiortc import MediaStreamTrack
from websockets.exceptions import WebSocketException

from .media import PatternVideoTrack, ToneAudioTrack, TrackReceiver, media_file_tracks
from .session import BridgeSession, SignalingError

log = logging.getLogger("hoinghi.bridge")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED = 0, 1, 2, 3
# Reconnecting cannot fix these: the credentials or the room say no, or we were replaced.
_GIVE_UP = frozenset({"token_missing", "token_invalid", "token_expired", "wrong_room",
                      "unsupported_protocol", "replaced", "forbidden"})  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hoinghi bridge", description=__doc__.split("\n")[0])
    p.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8443")
    p.add_argument("--token", required=True, help="JWT from `hoinghi token`")
    p.add_argument("--room", help="room id (checked against the token's)")
    p.add_argument(
        "--ice-host", action="append", default=[], metavar="ADDR",
        help="address ICE offers as host candidate (repeat); 127.0.0.1 on loopback",
    )  # fmt: skip
    p.add_argument("--media", metavar="FILE", help="publish this file instead of test media")
    p.add_argument("--loop", action="store_true", help="repeat --media (seekable files)")
    p.add_argument("--no-publish", action="store_true", help="receive only")
    p.add_argument("--video-codec", choices=["VP8", "H264"], default="VP8")
    p.add_argument("--expect-frames", type=int, metavar="N", help="probe mode: frames to decode")
    p.add_argument("--from", dest="from_id", metavar="IDENTITY", help="whose camera to check")
    p.add_argument("--timeout", type=float, default=30.0, help="probe mode limit, seconds")
    p.add_argument("--max-invalid", type=int, default=0, help="bad pictures tolerated")
    p.add_argument(
        "--any-picture", action="store_true",
        help="count every decoded frame (the sender plays a file, not test media)",
    )  # fmt: skip
    p.add_argument("-v", "--verbose", action="count", default=0)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits; callers of main() want a code
        return int(exc.code or 0)
    if args.expect_frames is not None and not args.from_id:
        parser.print_usage(sys.stderr)
        print("hoinghi bridge: --expect-frames needs --from", file=sys.stderr)
        return EXIT_USAGE
    # -v: our own progress; -vv: everything, aiortc/aioice included (very chatty).
    root = logging.DEBUG if args.verbose >= 2 else logging.WARNING
    logging.basicConfig(level=root, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    if args.verbose == 1:
        logging.getLogger("hoinghi").setLevel(logging.INFO)
    if args.expect_frames is not None:
        return asyncio.run(_probe(args))
    return asyncio.run(_serve(args))


def _tracks(args: argparse.Namespace, start: int = 0) -> tuple[Any, Any]:
    if args.no_publish:
        return None, None
    if args.media:
        return media_file_tracks(args.media, loop=args.loop)
    return ToneAudioTrack(), PatternVideoTrack(start=start)


def _session(args: argparse.Namespace) -> BridgeSession:
    return BridgeSession(args.url, args.token, room=args.room, ice_hosts=args.ice_host)


def _drain_others(session: BridgeSession, skip: set[str], t0: float) -> list[TrackReceiver]:
    """Consume every received track not in skip (aiortc queues decoded frames unread)."""
    receivers: list[TrackReceiver] = []
    seen: set[int] = set()

    def on_track(track_id: str, track: MediaStreamTrack) -> None:
        if track_id in skip or id(track) in seen:
            return
        seen.add(id(track))
        log.info("receiving %s", track_id)
        receivers.append(TrackReceiver(track, session.receiver_for(track_id), t0=t0).start())

    session.on_track(on_track)
    return receivers


async def _probe(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    cam, mic = f"{args.from_id}/camera", f"{args.from_id}/microphone"
    summary: dict[str, Any] = {
        "ok": False, "from": args.from_id, "frames": 0, "invalid_frames": 0, "packets": 0,
        "packets_lost": 0, "loss": 0.0, "bitrate_kbps": 0.0, "time_to_first_frame_s": None,
        "audio_frames": 0, "audio_freq_hz": 0.0,
    }  # fmt: skip
    session = _session(args)
    video: TrackReceiver | None = None
    audio: list[TrackReceiver] = []
    others: list[TrackReceiver] = []
    code = EXIT_FAILED
    try:
        async with asyncio.timeout(args.timeout):
            await session.connect()
            others = _drain_others(session, {cam, mic}, t0)

            def on_mic(track_id: str, track: MediaStreamTrack) -> None:
                if track_id == mic and not audio:
                    rx = TrackReceiver(track, session.receiver_for(mic), t0=t0)
                    audio.append(rx.start())

            session.on_track(on_mic)
            if mic in session.received:
                on_mic(mic, session.received[mic])
            audio_track, video_track = _tracks(args)
            if audio_track or video_track:
                await session.publish(audio_track, video_track, args.video_codec)
            track = await session.wait_track(cam, timeout=args.timeout)
            rtp = session.receiver_for(cam)
            video = TrackReceiver(track, rtp, t0=t0, verify=not args.any_picture).start()
            closed = asyncio.ensure_future(session.wait_closed())
            frames = asyncio.ensure_future(
                video.wait_frames(args.expect_frames, max_invalid=args.max_invalid)
            )
            await asyncio.wait({closed, frames}, return_when=asyncio.FIRST_COMPLETED)
            closed.cancel()
            if frames.done() and frames.result():
                code = EXIT_OK
                if audio:  # half a second of tone makes a trustworthy frequency; don't wait long
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(audio[0].wait_received(25), 2.0)
            else:
                frames.cancel()
                reason = session.error.code if session.error else "bad pictures or track ended"
                summary["error"] = reason
    except TimeoutError:
        if code != EXIT_OK:  # (the video may have passed before the audio top-up ran out)
            summary["error"] = "timeout"
    except SignalingError as exc:
        summary["error"], code = exc.code, EXIT_REFUSED
    except (OSError, WebSocketException) as exc:  # server unreachable
        summary["error"], code = f"unreachable: {exc}", EXIT_REFUSED
    finally:
        if video is not None:
            v = video.video
            with contextlib.suppress(Exception):  # the summary line must come out regardless
                summary |= await video.stats()
            summary |= {
                "frames": v.valid, "invalid_frames": v.invalid + v.regressions,
                "regressions": v.regressions, "skipped_frames": v.skipped,
                "first_frame_number": v.first, "last_frame_number": v.last,
                "time_to_first_frame_s": _round(video.time_to_first_frame),
            }  # fmt: skip
        if audio:
            summary["audio_frames"] = audio[0].frames
            summary["audio_freq_hz"] = round(audio[0].audio_frequency(), 1)
        for rx in [*([video] if video else []), *audio, *others]:
            await rx.stop()
        await session.close()
    summary["ok"] = code == EXIT_OK
    print(json.dumps(summary), flush=True)
    return code


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


async def _serve(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    backoff = 1.0
    next_frame = 0  # keep the painted numbering going across reconnects
    while not stop.is_set():
        session = _session(args)
        receivers: list[TrackReceiver] = []
        video_track: Any = None
        refused: str | None = None
        try:
            await session.connect()
            log.warning("joined as %s", session.participant_id)
            session.on_message(_log_event)
            receivers = _drain_others(session, set(), time.monotonic())
            audio_track, video_track = _tracks(args, start=next_frame)
            if audio_track or video_track:
                await session.publish(audio_track, video_track, args.video_codec)
            backoff = 1.0
            ended = asyncio.ensure_future(session.wait_closed())
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({ended, stopping}, return_when=asyncio.FIRST_COMPLETED)
            ended.cancel()
            stopping.cancel()
        except SignalingError as exc:
            log.warning("server refused: %s", exc)
            refused = exc.code
        except (OSError, WebSocketException) as exc:
            log.warning("cannot reach %s: %s", args.url, exc)
        finally:
            if isinstance(video_track, PatternVideoTrack):
                next_frame = video_track.frame_number
            for rx in receivers:
                await rx.stop()
            await session.close(leave=stop.is_set())
        refused = session.error.code if session.error else refused
        if refused in _GIVE_UP:
            log.error("giving up: %s", refused)
            return EXIT_REFUSED
        if not stop.is_set():
            log.warning("disconnected; reconnecting in %.0f s", backoff)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)  # a back-off, cut short by a signal
            backoff = min(backoff * 2, 30.0)
    return EXIT_OK


def _log_event(msg: dict[str, Any]) -> None:
    kind = msg.get("type")
    if kind in ("participant_joined", "participant_left", "track_published", "track_unpublished"):
        detail = msg.get("participant") or msg.get("track") or msg.get("participant_id")
        log.info("%s %s", kind, detail or msg.get("track_id"))
    elif kind == "error":
        log.warning("server error %s: %s", msg.get("code"), msg.get("message"))


if __name__ == "__main__":
    sys.exit(main())

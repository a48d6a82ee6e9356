"""Keyframe requests (rate-limited) and keyframe detection in RTP payloads (VP8, H264).

Detection works on the RTP *payload* (after header, CSRCs, extensions and without padding)
and never raises: a malformed or truncated payload is simply not a keyframe.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["KeyframeThrottle", "is_h264_keyframe", "is_keyframe", "is_vp8_keyframe"]

Payload = bytes | bytearray | memoryview


class KeyframeThrottle:
    """At most one keyframe request (PLI/FIR) per `interval_s` for one publisher track.

    A request inside the window is not dropped but remembered: `due(now)` turns true when the
    window ends, so the subscriber that asked still gets its keyframe. A keyframe arriving
    meanwhile (`on_keyframe`) satisfies the pending request.
    """

    __slots__ = ("_last_sent", "interval_s", "pending", "requested", "sent", "suppressed")

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self._last_sent: float | None = None
        self.pending = False
        self.requested = 0  # calls to request()
        self.sent = 0  # requests that should go out (from request() or due())
        self.suppressed = 0  # calls to request() inside the window

    def request(self, now: float) -> bool:
        """A keyframe is wanted; True when a PLI should be sent now."""
        self.requested += 1
        last = self._last_sent
        if last is None or now - last >= self.interval_s:
            self._send(now)
            return True
        self.pending = True
        self.suppressed += 1
        return False

    def due(self, now: float) -> bool:
        """True when a remembered request should be sent now (call it from the shell's tick)."""
        if self.pending and (self._last_sent is None or now - self._last_sent >= self.interval_s):
            self._send(now)
            return True
        return False

    def on_keyframe(self, now: float) -> None:
        """A keyframe was forwarded: whoever was waiting for one has it."""
        self.pending = False

    def _send(self, now: float) -> None:
        self._last_sent = now
        self.pending = False
        self.sent += 1


def is_vp8_keyframe(payload: Payload) -> bool:
    """RFC 7741: first packet of a partition 0 (S=1, PID=0) whose VP8 header has P=0."""
    n = len(payload)
    if n < 1:
        return False
    b0 = payload[0]
    if b0 & 0x17 != 0x10:  # S bit set, PID (low 3 bits) zero
        return False
    pos = 1
    if b0 & 0x80:  # X: extension octet follows
        if n < 2:
            return False
        x = payload[1]
        pos = 2
        if x & 0x80:  # I: PictureID, 7 or 15 bits (M bit)
            if n <= pos:
                return False
            pos += 2 if payload[pos] & 0x80 else 1
        if x & 0x40:  # L: TL0PICIDX
            pos += 1
        if x & 0x30:  # T or K: TID/Y/KEYIDX octet
            pos += 1
    if n <= pos:
        return False
    return not payload[pos] & 0x01


_H264_KEY_TYPES = (5, 7)  # IDR slice, SPS


def is_h264_keyframe(payload: Payload) -> bool:
    """RFC 6184 packetization mode 0/1: a single NAL, a STAP-A aggregate, or the first FU-A
    fragment carrying an IDR slice (5) or an SPS (7)."""
    n = len(payload)
    if n < 1:
        return False
    nal_type = payload[0] & 0x1F
    if nal_type == 28:  # FU-A
        return n >= 2 and bool(payload[1] & 0x80) and (payload[1] & 0x1F) in _H264_KEY_TYPES
    if nal_type == 24:  # STAP-A: [size16 | NAL]...
        pos = 1
        while pos + 2 < n:
            size = (payload[pos] << 8) | payload[pos + 1]
            pos += 2
            if size == 0 or pos + size > n:
                return False
            if payload[pos] & 0x1F in _H264_KEY_TYPES:
                return True
            pos += size
        return False
    return nal_type in _H264_KEY_TYPES


_DETECTORS: dict[str, Callable[[Payload], bool]] = {}
for _name, _fn in (("vp8", is_vp8_keyframe), ("h264", is_h264_keyframe)):
    for _spelling in (_name, _name.upper(), f"video/{_name}", f"video/{_name.upper()}"):
        _DETECTORS[_spelling] = _fn


def is_keyframe(codec: str, payload: Payload) -> bool:
    """Dispatch on the codec name ("VP8", "video/H264", ...); unknown codecs are never key.

    Per-packet callers that know the codec should bind `is_vp8_keyframe`/`is_h264_keyframe`
    once instead (no string work per packet).
    """
    detector = _DETECTORS.get(codec)
    if detector is None:
        detector = _DETECTORS.get(codec.lower().removeprefix("video/"))
        if detector is None:
            return False
    return detector(payload)

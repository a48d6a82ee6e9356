"""Periodic RTCP the SFU originates: sender reports to subscribers, receiver reports and a
bitrate cap (REMB) to publishers. Built once a second per connection, as one compound packet."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sfu.core.rtcp import build_remb, build_rr, build_sdes, build_sr, ntp_from_unix

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sfu.producer import Producer
    from sfu.transports.webrtc import PublisherConnection, SubscriberConnection

NTP_UNIX_OFFSET = 2208988800


def subscriber_reports(sub: SubscriberConnection, now: float) -> bytes:
    """SR + SDES for every stream we send this subscriber.

    The RTP timestamp is extrapolated from the publisher's own SR when we have one, so audio
    and video keep the publisher's lip-sync relation; otherwise from the last packet.
    """
    parts: list[bytes] = []
    ntp = ntp_from_unix(now)
    for c in sub.consumers.values():
        if not c.ready:
            continue
        p = c.producer
        if p.last_sr is not None:
            _pub_ntp, pub_rtp, arrival = p.last_sr
            rtp = pub_rtp + int((now - arrival) * p.clock_rate)
        elif p.last_ts is not None and p.last_time is not None:
            rtp = p.last_ts + int((now - p.last_time) * p.clock_rate)
        else:
            continue
        parts.append(build_sr(c.ssrc, ntp, (rtp + c.ts_off) & 0xFFFFFFFF,
                              c.packets_sent & 0xFFFFFFFF, c.octets_sent & 0xFFFFFFFF))
        if sub.cname:
            parts.append(build_sdes(c.ssrc, sub.cname))
    return b"".join(parts)


def publisher_feedback(pub: PublisherConnection, now: float, max_bitrate_bps: int) -> bytes:
    """RR blocks for each stream the publisher sends us, and REMB with our bitrate cap."""
    blocks = []
    video_ssrcs = []
    for p in pub.producers:
        src = p.source
        if src is None or not src.ssrc or p.stats.packets == 0:
            continue
        last_ntp, last_arrival = (p.last_sr[0], p.last_sr[2]) if p.last_sr else (None, None)
        blocks.append(p.stats.report_block(src.ssrc, now, last_ntp, last_arrival))
        if p.video:
            video_ssrcs.append(src.ssrc)
    if not blocks:
        return b""
    sender = pub.producers[0].rtcp_ssrc
    packet = build_rr(sender, blocks)
    if video_ssrcs:
        packet += build_remb(sender, max_bitrate_bps, video_ssrcs)
    return packet


def send_reports(subscribers: Iterable[SubscriberConnection], producers: Iterable[Producer],
                 publishers: Iterable[PublisherConnection], now: float,
                 max_bitrate_bps: int) -> None:
    """The once-a-second round: SRs to every subscriber, RR + REMB to every publisher. Also
    where ICE pairs are followed (they move on ICE restart), as it runs anyway."""
    for sub in subscribers:
        if sub.path is None:
            continue
        for c in sub.consumers.values():
            c.refresh_path()
        packet = subscriber_reports(sub, now)
        if packet:
            sub.path.send_rtcp(packet)
    for producer in producers:
        producer.refresh_paths()
    for pub in publishers:
        if pub.path is None:
            continue
        pub.path.refresh()
        packet = publisher_feedback(pub, now, max_bitrate_bps)
        if packet:
            pub.path.send_rtcp(packet)

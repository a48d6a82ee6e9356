"""A Router's counters as one flat dict: /metrics exports each as `hoinghi_router_<key>`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sfu.adapters import aiortc_tap as tap
from sfu.adapters import parking
from sfu.adapters.consent import consent_checks
from sfu.adapters.direct_ingress import ingress_counters
from sfu.fastpath import gso_counters, uring_counters

if TYPE_CHECKING:
    from sfu.router import Router


def router_stats(router: Router) -> dict[str, object]:
    """A Router's counters, for /metrics (hoinghi_router_*) and tests."""
    producers = list(router.producers.values())
    ingress = [c.ingress for c in (*router.publishers.values(), *router.subscribers.values())
               if c.ingress is not None and c.ingress.active]
    consent = consent_checks().schedule
    return {
        "room": router.room_id,
        "producers": len(producers),
        "consumers": sum(len(p.consumers) for p in producers),
        "packets_in": sum(p.packets for p in producers),
        "packets_forwarded": sum(p.forwarded for p in producers),
        "packets_dropped": sum(p.dropped for p in producers),
        "malformed_rtp": router.counters.malformed,
        "malformed_rtcp": router.counters.rtcp_malformed,
        "unknown_ssrc": router.counters.unknown_ssrc,
        "plis_sent": sum(p.plis_sent for p in producers),
        "keyframes_seen": sum(p.keyframes_seen for p in producers),
        "frames_held": sum(p.frames_held for p in producers),
        "nacks_sent": sum(p.nack.nacked for p in producers if p.nack is not None),
        "nack_recovered": sum(p.nack.recovered for p in producers if p.nack is not None),
        "retransmitted": sum(c.retransmitted for p in producers for c in p.consumers),
        "tap_errors": tap.TapDtlsTransport.tap_errors,
        **gso_counters(),  # process-wide
        **uring_counters(),
        "fanout_connected": sum(g.connected_count for p in producers for g in p.fast.values()),
        **ingress_counters(ingress),  # connections whose socket the SFU reads itself
        # Process-wide: parked reads; our ICE consent checks sent, answered, expired.
        "ingress_parked_reads": parking.poller().reads,
        "consent_checks_sent": consent.sent,
        "consent_checks_answered": consent.answered,
        "consent_expired": consent.expired_total,
        "timer_polls": router.timers.polls,
        "timer_idle_wakeups": router.timers.idle_wakeups,
        "producers_ticking": len(router._ticking),  # with NACKs or a keyframe request due
        "subscriber_offers": router.offers,
        "subscriber_remaps": router.remaps,  # subscription changes that needed no offer
    }

"""Prometheus metrics of one app: counters kept by the shell, gauges read at scrape time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from signaling.app import Hub

logger = logging.getLogger(__name__)


class Metrics:
    """Prometheus metrics of one app (its own registry, so several apps can share a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.received = Counter(
            "hoinghi_messages_received", "Frames received from clients", registry=self.registry
        )
        self.sent = Counter(
            "hoinghi_messages_sent", "Messages sent to clients", registry=self.registry
        )
        self.errors = Counter(
            "hoinghi_errors", "Error replies sent, by code", ["code"], registry=self.registry
        )

    def watch(self, hub: Callable[[], Hub]) -> None:
        self.registry.register(_HubCollector(hub))

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _flatten(stats: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, float]]:
    for key, value in stats.items():
        name = prefix + "".join(c if c.isalnum() else "_" for c in str(key))
        if isinstance(value, dict):
            yield from _flatten(value, name + "_")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            yield name, float(value)


class _HubCollector(Collector):
    """Gauges read at scrape time: nothing is counted on the media path for them."""

    def __init__(self, hub: Callable[[], Hub]) -> None:
        self._hub = hub

    def collect(self) -> Iterator[Metric]:
        hub = self._hub()
        mgr = hub.manager
        yield GaugeMetricFamily(
            "hoinghi_rooms", "Rooms open on this node", value=len(mgr.room_ids())
        )
        yield GaugeMetricFamily(
            "hoinghi_participants", "Joined participants", value=mgr.participant_count()
        )
        yield GaugeMetricFamily("hoinghi_sessions", "Open websocket sessions", value=hub.sessions)
        # Leak detection (the fuzz test): back to its idle value once every session is gone.
        yield GaugeMetricFamily(
            "hoinghi_asyncio_tasks", "asyncio tasks alive", value=len(asyncio.all_tasks())
        )
        families: dict[str, GaugeMetricFamily] = {}
        # A worker's share of conferences homed elsewhere (sfu/edge.py) counts like its own.
        cluster = hub.cluster
        edges = [(e.room_id, e) for e in cluster.edges.values()] if cluster is not None else []
        for room_id, router in [*mgr.routers().items(), *edges]:
            try:
                stats = router.stats()
            except NotImplementedError:  # Router still a stub
                continue
            except Exception:
                logger.exception("router stats failed room=%s", room_id)
                continue
            for key, value in _flatten(stats):
                family = families.get(key)
                if family is None:
                    family = families[key] = GaugeMetricFamily(
                        f"hoinghi_router_{key}", f"Router stat {key}", labels=["room"]
                    )
                family.add_metric([room_id], value)
        yield from families.values()

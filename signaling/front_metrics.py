"""The front's /metrics: every worker's own metrics with a `worker` label, then the front's.

Workers are scraped at request time (concurrently, each with a short timeout): one Prometheus
target per deployment, as with a single process. A worker that does not answer is left out of
that scrape and shows as `hoinghi_front_worker_scrape_ok{worker} 0`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from signaling.cluster import Placement
from signaling.workers import WorkerPool

logger = logging.getLogger(__name__)

SCRAPE_TIMEOUT_S = 3.0


class FrontMetrics:
    def __init__(self, placement: Placement, pool: WorkerPool) -> None:
        self.placement, self.pool = placement, pool
        self.registry = CollectorRegistry(auto_describe=False)
        self.relayed = Counter("hoinghi_front_sessions_relayed",
                               "Websocket sessions handed to a worker", registry=self.registry)
        self.unavailable = Counter(
            "hoinghi_front_unavailable",
            "Sessions refused or cut because their worker was down", registry=self.registry)
        self.registry.register(_FrontCollector(self))

    def worker_states(self) -> list[dict[str, Any]]:
        return [{"index": w.index, "up": w.url is not None, "pid": w.pid, "url": w.url,
                 "sessions": load.sessions, "rooms": load.rooms, "restarts": load.restarts}
                for w, load in zip(self.pool.workers, self.placement.workers, strict=True)]

    async def render(self, http: httpx.AsyncClient) -> tuple[bytes, str]:
        texts = await asyncio.gather(*(self._scrape(http, w.url) for w in self.pool.workers))
        merged = merge_worker_metrics(texts)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families(merged))
        scraped = GaugeMetricFamily("hoinghi_front_worker_scrape_ok",
                                    "1 when the worker's metrics were read", labels=["worker"])
        for i, text in enumerate(texts):
            scraped.add_metric([str(i)], 0.0 if text is None else 1.0)
        registry.register(_Families([scraped]))
        return generate_latest(registry) + generate_latest(self.registry), CONTENT_TYPE_LATEST

    async def _scrape(self, http: httpx.AsyncClient, url: str | None) -> str | None:
        if url is None:
            return None
        try:
            reply = await http.get(url + "/metrics", timeout=SCRAPE_TIMEOUT_S)
            reply.raise_for_status()
            return reply.text
        except httpx.HTTPError as exc:
            logger.warning("worker metrics at %s: %r", url, exc)
            return None


def merge_worker_metrics(texts: list[str | None]) -> list[Metric]:
    """Each worker's families, every sample labelled with its worker index; one family per
    name across workers (Prometheus wants a name's samples together)."""
    families: dict[str, Metric] = {}
    for index, text in enumerate(texts):
        if text is None:
            continue
        for family in text_string_to_metric_families(text):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(family.name, family.documentation,
                                                        family.type, family.unit)
            for s in family.samples:
                merged.add_sample(s.name, {**s.labels, "worker": str(index)}, s.value,
                                  s.timestamp, s.exemplar)
    return list(families.values())


class _Families(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


class _FrontCollector(Collector):
    def __init__(self, metrics: FrontMetrics) -> None:
        self._m = metrics

    def collect(self) -> Iterator[Metric]:
        states = self._m.worker_states()
        up = GaugeMetricFamily("hoinghi_front_worker_up", "1 while the worker serves",
                               labels=["worker"])
        sessions = GaugeMetricFamily("hoinghi_front_worker_sessions",
                                     "Websocket sessions relayed to the worker", labels=["worker"])
        rooms = GaugeMetricFamily("hoinghi_front_worker_rooms", "Rooms placed on the worker",
                                  labels=["worker"])
        restarts = CounterMetricFamily("hoinghi_front_worker_restarts",
                                       "Times the worker died and was restarted",
                                       labels=["worker"])
        for s in states:
            label = [str(s["index"])]
            up.add_metric(label, float(s["up"]))
            sessions.add_metric(label, float(s["sessions"]))
            rooms.add_metric(label, float(s["rooms"]))
            restarts.add_metric(label, float(s["restarts"]))
        yield from (up, sessions, rooms, restarts)

"""Fleet gauges and counters, read at scrape time from the registry, the journal and the queue.

Read, not pushed: the registry and the journal are shared by every gateway
instance (Cosmos DB on Azure), so any instance's `/metrics` reports the same
fleet, and nothing is lost when the process that saw an eviction is gone.
Desired sizes come from the fleet monitor's last decision per pool.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from spotgate.clock import Clock
from spotgate.fleet.journal import FleetJournal
from spotgate.fleet.registry import WorkerRegistry
from spotgate.fleet.worker import WorkerState

WINDOW_S = 24 * 3600.0
"""Evictions and decisions are counted over the journal's last day."""
RECENT_DECISIONS = 500


class FleetCollector(Collector):
    def __init__(
        self,
        registry: WorkerRegistry,
        journal: FleetJournal,
        clock: Clock,
        pools: Iterable[str],
        queue_depth: Callable[[str], int],
        breaker_open: Callable[[], Iterable[str]] = tuple,
    ) -> None:
        self._registry = registry
        self._journal = journal
        self._clock = clock
        self._pools = tuple(pools)
        self._queue_depth = queue_depth
        self._breaker_open = breaker_open

    def describe(self) -> Iterator[Any]:
        return iter(())  # collected fresh each scrape; nothing to check at registration

    def collect(self) -> Iterator[Any]:
        now = self._clock.now()
        workers = GaugeMetricFamily(
            "spotgate_pool_workers",
            "Workers per pool by priority, zone and state (desired: the monitor's last target).",
            labels=("pool", "priority", "zone", "state"),
        )
        counts: Tally[tuple[str, str, str, str]] = Tally()
        for worker in self._registry.all():
            key = (worker.pool, worker.priority or "-", worker.zone or "-")
            if worker.state == WorkerState.GONE:
                continue
            counts[(*key, "actual")] += 1
            counts[(*key, "ready")] += worker.state == WorkerState.READY
        for worker_labels, count in sorted(counts.items()):
            workers.add_metric(worker_labels, count)
        for pool, priority, target in self._desired():
            workers.add_metric((pool, priority, "-", "desired"), target)
        yield workers

        queue = GaugeMetricFamily(
            "spotgate_admission_queue_depth",
            "Requests waiting for a worker slot, per pool (this instance).",
            labels=("pool",),
        )
        for pool in self._pools:
            queue.add_metric((pool,), self._queue_depth(pool))
        yield queue

        breaker = GaugeMetricFamily(
            "spotgate_breaker_open",
            "1 for each worker whose circuit breaker is open (taken out after failures).",
            labels=("worker",),
        )
        for worker_id in sorted(self._breaker_open()):
            breaker.add_metric((worker_id,), 1.0)
        yield breaker

        evictions = CounterMetricFamily(
            "spotgate_evictions",
            "Spot eviction notices in the journal's last day, by pool and zone.",
            labels=("pool", "zone"),
        )
        tally: Tally[tuple[str, str]] = Tally(
            (e.pool, e.zone or "-") for e in self._journal.all_evictions(now - WINDOW_S)
        )
        for zone_labels, seen in sorted(tally.items()):
            evictions.add_metric(zone_labels, seen)
        yield evictions

        yield from self._decisions(now)

    def _recent(self) -> list[dict[str, Any]]:
        return self._journal.recent(RECENT_DECISIONS)

    def _desired(self) -> list[tuple[str, str, float]]:
        latest: dict[str, dict[str, Any]] = {}
        for decision in self._recent():
            pool = decision.get("pool")
            if isinstance(pool, str):
                latest[pool] = decision
        out = []
        for pool, decision in sorted(latest.items()):
            for priority, field in (("spot", "spot_target"), ("on-demand", "on_demand_target")):
                value = decision.get(field)
                if isinstance(value, int | float):
                    out.append((pool, priority, float(value)))
        return out

    def _decisions(self, now: float) -> Iterator[Any]:
        decisions = CounterMetricFamily(
            "spotgate_scaling_decisions",
            "Fleet monitor decisions in the journal's recent history, by pool and action.",
            labels=("pool", "action"),
        )
        tally: Tally[tuple[str, str]] = Tally()
        for decision in self._recent():
            at = decision.get("observed_at", decision.get("at"))
            if isinstance(at, int | float) and now - at > WINDOW_S:
                continue
            tally[(str(decision.get("pool", "-")), str(decision.get("action", "-")))] += 1
        for labels, value in sorted(tally.items()):
            decisions.add_metric(labels, value)
        yield decisions

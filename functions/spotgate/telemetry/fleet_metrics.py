"""Fleet gauges and counters, read at collection from the registry, the journal and the queue.

Read, not pushed: the registry and the journal are shared by every gateway
instance (Cosmos DB on Azure), so every instance reports the same fleet, and
nothing is lost when the process that saw an eviction is gone. Desired sizes
come from the fleet monitor's last decision per pool. Queue depth and
requests in flight are this instance's own (the queries sum them).

Evictions and decisions are counters of journal entries recorded since this
process started, each counted once although successive reads overlap. A
count of "the last day" would be no counter: it falls as entries age out,
and an exporter that sends increments (Azure Monitor's) would report a whole
day of evictions as new each time an instance starts, which on a scale-out
looks exactly like an eviction burst.
"""

from __future__ import annotations

import threading
from collections import Counter as Tally
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from spotgate.clock import Clock
from spotgate.fleet.journal import FleetJournal
from spotgate.fleet.registry import WorkerRegistry
from spotgate.fleet.worker import WorkerState
from spotgate.telemetry.metric_specs import (
    BREAKER_OPEN,
    EVICTIONS,
    GATEWAY_IN_FLIGHT,
    POOL_WORKERS,
    QUEUE_DEPTH,
    SCALING_DECISIONS,
)
from spotgate.telemetry.recorder import Labels, Reading, Recorder

RECENT_DECISIONS = 500
LATE_ENTRY_S = 600.0
"""How late (by its own time) an entry may reach this instance's journal and still be counted:
another instance's record syncs within seconds; an agent's retried report keeps its first time."""


class JournalFollower:
    """Counts entries at or after `start`, each once by key, in totals per label values."""

    def __init__(self, start: float, late_s: float = LATE_ENTRY_S) -> None:
        self._floor = start
        self._late_s = late_s
        self._seen: dict[Hashable, float] = {}
        self._totals: Tally[Labels] = Tally()
        self._lock = threading.Lock()

    @property
    def since(self) -> float:
        """Where a read must start to see every entry not counted yet."""
        return self._floor

    def take(self, entries: Iterable[tuple[Hashable, float, Labels]]) -> list[Reading]:
        """Counts the new ones among `entries` (key, time, labels); returns the totals."""
        with self._lock:
            for key, at, labels in entries:
                if at >= self._floor and key not in self._seen:
                    self._seen[key] = at
                    self._totals[labels] += 1
            if self._seen:
                self._floor = max(self._floor, max(self._seen.values()) - self._late_s)
                self._seen = {k: at for k, at in self._seen.items() if at >= self._floor}
            return sorted(self._totals.items())


class FleetReadings:
    def __init__(
        self,
        registry: WorkerRegistry,
        journal: FleetJournal,
        clock: Clock,
        pools: Iterable[str],
        queue_depth: Callable[[str], int],
        in_flight: Callable[[str], int] = lambda _pool: 0,
        breaker_open: Callable[[], Iterable[str]] = tuple,
    ) -> None:
        self.registry = registry
        self._journal = journal
        self._pools = tuple(pools)
        self._queue_depth = queue_depth
        self._in_flight = in_flight
        self._breaker_open = breaker_open
        self._evictions = JournalFollower(clock.now())
        self._decisions = JournalFollower(clock.now())

    def watch(self, recorder: Recorder) -> None:
        recorder.watch(POOL_WORKERS, self.pool_workers)
        recorder.watch(QUEUE_DEPTH, self.queue_depth)
        recorder.watch(GATEWAY_IN_FLIGHT, self.in_flight)
        recorder.watch(BREAKER_OPEN, self.breakers)
        recorder.watch(EVICTIONS, self.evictions)
        recorder.watch(SCALING_DECISIONS, self.decisions)

    def pool_workers(self) -> list[Reading]:
        counts: Tally[Labels] = Tally()
        for worker in self.registry.all():
            if worker.state == WorkerState.GONE:
                continue
            key = (worker.pool, worker.priority or "-", worker.zone or "-")
            counts[(*key, "actual")] += 1
            counts[(*key, "ready")] += worker.state == WorkerState.READY
        desired = [((pool, priority, "-", "desired"), n) for pool, priority, n in self._desired()]
        return [*sorted(counts.items()), *desired]

    def queue_depth(self) -> list[Reading]:
        return [((pool,), self._queue_depth(pool)) for pool in self._pools]

    def in_flight(self) -> list[Reading]:
        return [((pool,), self._in_flight(pool)) for pool in self._pools]

    def breakers(self) -> list[Reading]:
        return [((worker_id,), 1.0) for worker_id in sorted(self._breaker_open())]

    def evictions(self) -> list[Reading]:
        follower = self._evictions
        return follower.take(
            ((e.pool, e.worker_id, e.at), e.at, (e.pool, e.zone or "-"))
            for e in self._journal.all_evictions(follower.since)
        )

    def decisions(self) -> list[Reading]:
        entries = []
        for decision in self._journal.recent(RECENT_DECISIONS):
            at = decision_time(decision)
            if at is not None:
                pool = str(decision.get("pool", "-"))
                key = (pool, at, decision.get("tick"))
                entries.append((key, at, (pool, str(decision.get("action", "-")))))
        return self._decisions.take(entries)

    def _desired(self) -> list[tuple[str, str, float]]:
        latest: dict[str, dict[str, Any]] = {}
        for decision in self._journal.recent(RECENT_DECISIONS):
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


def decision_time(decision: dict[str, Any]) -> float | None:
    at = decision.get("observed_at", decision.get("at"))
    return float(at) if isinstance(at, int | float) else None

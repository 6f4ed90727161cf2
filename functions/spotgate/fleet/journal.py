"""The fleet's memory of events: evictions, refused capacity requests and the monitor's decisions.

The monitor is level-triggered, so these must live in a store rather than in
an orchestration's history: a `continue_as_new`, a lost wake event or a
restarted control plane must not make the capacity mix forget that spot was
refused a minute ago. Reads are "the recent ones for this pool", the windows
the policies look at; old entries are pruned by age.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any, Protocol

from spotgate.fleet.signals import CapacityFailure, EvictionSignal


class FleetJournal(Protocol):
    def record_eviction(self, pool: str, worker_id: str, zone: str | None, at: float) -> None: ...

    def record_capacity_failure(
        self, pool: str, priority: str, zone: str | None, reason: str, at: float
    ) -> None: ...

    def evictions(self, pool: str, since: float) -> list[EvictionSignal]: ...

    def capacity_failures(self, pool: str, since: float) -> list[CapacityFailure]: ...

    def prune(self, before: float) -> None: ...

    # the decision log (DecisionLog)
    def append(self, decision: dict[str, Any]) -> None: ...

    def recent(self, n: int) -> list[dict[str, Any]]: ...


class InMemoryFleetJournal:
    """For tests and for hosts without a database; keeps the newest `maxlen` of each kind."""

    def __init__(self, maxlen: int = 500) -> None:
        self._evictions: deque[tuple[str, str, EvictionSignal]] = deque(maxlen=maxlen)
        self._failures: deque[tuple[str, CapacityFailure]] = deque(maxlen=maxlen)
        self._decisions: deque[dict[str, Any]] = deque(maxlen=maxlen)

    def record_eviction(self, pool: str, worker_id: str, zone: str | None, at: float) -> None:
        if any(p == pool and w == worker_id for p, w, _ in self._evictions):
            return  # an agent retrying its report is one eviction
        self._evictions.append((pool, worker_id, EvictionSignal(zone=zone, at=at)))

    def record_capacity_failure(
        self, pool: str, priority: str, zone: str | None, reason: str, at: float
    ) -> None:
        self._failures.append((pool, CapacityFailure(priority, zone, reason, at)))

    def evictions(self, pool: str, since: float) -> list[EvictionSignal]:
        return [e for p, _, e in self._evictions if p == pool and e.at >= since]

    def capacity_failures(self, pool: str, since: float) -> list[CapacityFailure]:
        return [f for p, f in self._failures if p == pool and f.at >= since]

    def prune(self, before: float) -> None:
        self._evictions = deque(
            (x for x in self._evictions if x[2].at >= before), maxlen=self._evictions.maxlen
        )
        self._failures = deque(
            (x for x in self._failures if x[1].at >= before), maxlen=self._failures.maxlen
        )

    def append(self, decision: dict[str, Any]) -> None:
        self._decisions.append(decision)

    def recent(self, n: int) -> list[dict[str, Any]]:
        return list(self._decisions)[-n:] if n > 0 else []

    def __len__(self) -> int:
        return len(self._decisions)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(list(self._decisions))

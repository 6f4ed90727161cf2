"""The fleet's memory of events: evictions, refused capacity requests and the monitor's decisions.

The monitor is level-triggered, so these must live in a store rather than in
an orchestration's history: a `continue_as_new`, a lost wake event or a
restarted control plane must not make the capacity mix forget that spot was
refused a minute ago. Reads are "the recent ones for this pool", the windows
the policies look at; old entries are pruned by age.

It also keeps the ended worker spans a cost report prices. Every gateway
instance sees the same worker go gone, so a span is recorded by worker id:
the second record of one worker replaces the first rather than billing twice.
The `all_*` reads, across pools, are for exports, not for the policies.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from spotgate.fleet.signals import CapacityFailure, EvictionSignal
from spotgate.fleet.worker_spans import WorkerSpan


@dataclass(frozen=True)
class EvictionRecord:
    pool: str
    worker_id: str
    zone: str | None
    at: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CapacityFailureRecord:
    pool: str
    priority: str
    zone: str | None
    reason: str
    at: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ended_at(span: WorkerSpan) -> float:
    """Its end; a running worker's span is not the journal's to keep (its end is unknown)."""
    if span.end is None:
        raise ValueError(f"worker span of {span.worker_id!r} has not ended")
    return span.end


def spans_in(spans: Iterable[WorkerSpan], since: float, until: float | None) -> list[WorkerSpan]:
    """Ended spans that ended at or after `since` and started before `until`, by start."""
    found = [
        s
        for s in spans
        if s.end is not None and s.end >= since and (until is None or s.start < until)
    ]
    return sorted(found, key=lambda s: (s.start, s.worker_id))


JOURNAL_RETENTION_S = 35 * 86_400.0
"""How long the monitor keeps evictions, refusals and worker spans: a month's cost report
and export need them, though its policies only look back minutes (Cosmos DB expires
evictions and refusals sooner, after two days, by their own TTL)."""


class FleetJournal(Protocol):
    def record_eviction(self, pool: str, worker_id: str, zone: str | None, at: float) -> None: ...

    def record_capacity_failure(
        self, pool: str, priority: str, zone: str | None, reason: str, at: float
    ) -> None: ...

    def evictions(self, pool: str, since: float) -> list[EvictionSignal]: ...

    def capacity_failures(self, pool: str, since: float) -> list[CapacityFailure]: ...

    def all_evictions(self, since: float) -> list[EvictionRecord]:
        """Every pool's evictions at or after `since`, by time."""
        ...

    def all_capacity_failures(self, since: float) -> list[CapacityFailureRecord]:
        """Every pool's refusals at or after `since`, by time."""
        ...

    def record_worker_span(self, span: WorkerSpan) -> None:
        """Keep an ended span; a later span of the same worker id replaces it."""
        ...

    def worker_spans(self, since: float, until: float | None = None) -> list[WorkerSpan]:
        """Ended spans that ended at or after `since` and started before `until`, by start."""
        ...

    def prune(self, before: float) -> None:
        """Drop evictions, failures and spans (by their end) older than `before`."""
        ...

    # the decision log (DecisionLog)
    def append(self, decision: dict[str, Any]) -> None: ...

    def recent(self, n: int) -> list[dict[str, Any]]: ...


class InMemoryFleetJournal:
    """For tests and for hosts without a database; keeps the newest `maxlen` of each kind."""

    def __init__(self, maxlen: int = 500) -> None:
        self._evictions: deque[tuple[str, str, EvictionSignal]] = deque(maxlen=maxlen)
        self._failures: deque[tuple[str, CapacityFailure]] = deque(maxlen=maxlen)
        self._decisions: deque[dict[str, Any]] = deque(maxlen=maxlen)
        self._spans: OrderedDict[str, WorkerSpan] = OrderedDict()
        self._max_spans = maxlen

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

    def all_evictions(self, since: float) -> list[EvictionRecord]:
        found = [EvictionRecord(p, w, e.zone, e.at) for p, w, e in self._evictions if e.at >= since]
        return sorted(found, key=lambda r: r.at)

    def all_capacity_failures(self, since: float) -> list[CapacityFailureRecord]:
        found = [
            CapacityFailureRecord(p, f.priority, f.zone, f.reason, f.at)
            for p, f in self._failures
            if f.at >= since
        ]
        return sorted(found, key=lambda r: r.at)

    def record_worker_span(self, span: WorkerSpan) -> None:
        ended_at(span)
        self._spans.pop(span.worker_id, None)
        self._spans[span.worker_id] = span
        while len(self._spans) > self._max_spans:
            self._spans.popitem(last=False)

    def worker_spans(self, since: float, until: float | None = None) -> list[WorkerSpan]:
        return spans_in(self._spans.values(), since, until)

    def prune(self, before: float) -> None:
        self._evictions = deque(
            (x for x in self._evictions if x[2].at >= before), maxlen=self._evictions.maxlen
        )
        self._failures = deque(
            (x for x in self._failures if x[1].at >= before), maxlen=self._failures.maxlen
        )
        for worker_id in [w for w, s in self._spans.items() if ended_at(s) < before]:
            del self._spans[worker_id]

    def append(self, decision: dict[str, Any]) -> None:
        self._decisions.append(decision)

    def recent(self, n: int) -> list[dict[str, Any]]:
        return list(self._decisions)[-n:] if n > 0 else []

    def __len__(self) -> int:
        return len(self._decisions)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(list(self._decisions))

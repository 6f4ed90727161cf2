"""Everything the scaling policy may look at for one pool in one tick, as a plain value.

The policy runs inside the fleet monitor orchestrator, which may only see what
activities returned: so signals are gathered by an activity, cross the
orchestration boundary as JSON, and come back as this frozen value. `now` is
part of the value (never read from a clock) so a replayed decision is the same.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from spotgate.fleet.worker import WorkerState

SPOT = "spot"
ON_DEMAND = "on-demand"
PRIORITIES = (SPOT, ON_DEMAND)

LIVE_STATES = (WorkerState.PROVISIONING, WorkerState.READY)
"""States that count as capacity that exists or is coming; draining and gone do not."""
SERVING_STATES = (WorkerState.READY, WorkerState.DRAINING)
"""States whose engines run requests: live ones that serve, and draining ones finishing."""


@dataclass(frozen=True)
class WorkerSignal:
    """One worker as the scaler sees it: where it runs, what it costs, how busy it is.

    `since` is when it entered its state, which is what drain and provisioning
    deadlines count from; `evicting` and `deadline` carry a spot eviction notice
    and its NotBefore, because an evicted worker is the platform's to remove.
    """

    worker_id: str
    priority: str = SPOT
    zone: str | None = None
    state: str = WorkerState.READY
    running: float = 0.0
    waiting: float = 0.0
    kv_cache_usage: float = 0.0
    since: float = 0.0
    evicting: bool = False
    deadline: float | None = None

    @property
    def in_flight(self) -> float:
        return self.running + self.waiting

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES

    def to_dict(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "priority": self.priority,
            "zone": self.zone,
            "state": self.state,
            "running": self.running,
            "waiting": self.waiting,
            "kv_cache_usage": self.kv_cache_usage,
            "since": self.since,
            "evicting": self.evicting,
            "deadline": self.deadline,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WorkerSignal:
        zone = data.get("zone")
        return cls(
            worker_id=str(data["worker_id"]),
            priority=str(data.get("priority", SPOT)),
            zone=None if zone is None else str(zone),
            state=str(data.get("state", WorkerState.READY)),
            running=float(data.get("running", 0.0) or 0.0),
            waiting=float(data.get("waiting", 0.0) or 0.0),
            kv_cache_usage=float(data.get("kv_cache_usage", 0.0) or 0.0),
            since=float(data.get("since", 0.0) or 0.0),
            evicting=bool(data.get("evicting", False)),
            deadline=None if data.get("deadline") is None else float(data["deadline"]),
        )


@dataclass(frozen=True)
class EvictionSignal:
    """A spot eviction seen recently: its zone tells placement where not to go next."""

    zone: str | None
    at: float

    def to_dict(self) -> dict[str, Any]:
        return {"zone": self.zone, "at": self.at}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvictionSignal:
        zone = data.get("zone")
        return cls(zone=None if zone is None else str(zone), at=float(data["at"]))


@dataclass(frozen=True)
class CapacityFailure:
    """A capacity request the cloud refused (e.g. SkuNotAvailable): spot may not be had there."""

    priority: str
    zone: str | None
    reason: str
    at: float

    def to_dict(self) -> dict[str, Any]:
        return {"priority": self.priority, "zone": self.zone, "reason": self.reason, "at": self.at}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CapacityFailure:
        zone = data.get("zone")
        return cls(
            priority=str(data.get("priority", SPOT)),
            zone=None if zone is None else str(zone),
            reason=str(data.get("reason", "")),
            at=float(data["at"]),
        )


@dataclass(frozen=True)
class PoolSignals:
    """One pool at one instant. Lists are tuples so the value is immutable once built.

    `ready` and `provisioning` (per priority) are derived from `workers`; they
    are in `to_dict` for readers of the JSON and ignored by `from_dict`.
    `batch_deadline_s` (seconds until the earliest active batch expires) and
    `batch_line_s` (how long one line holds a slot, as measured) are None
    when nobody knows yet: the policy then uses its configured estimate.
    `batch_in_flight` are the batch lines running now: not in `gateway_in_flight`,
    and taken out of the engines' `running`, since they fill spare slots only.
    """

    pool: str
    now: float
    admission_queue_depth: int = 0
    gateway_in_flight: int = 0
    batch_queue_depth: int = 0
    batch_deadline_s: float | None = None
    batch_line_s: float | None = None
    batch_in_flight: int = 0
    workers: tuple[WorkerSignal, ...] = ()
    evictions: tuple[EvictionSignal, ...] = ()
    capacity_failures: tuple[CapacityFailure, ...] = ()

    @classmethod
    def build(
        cls,
        pool: str,
        now: float,
        *,
        admission_queue_depth: int = 0,
        gateway_in_flight: int = 0,
        batch_queue_depth: int = 0,
        batch_deadline_s: float | None = None,
        batch_line_s: float | None = None,
        batch_in_flight: int = 0,
        workers: Iterable[WorkerSignal] = (),
        evictions: Iterable[EvictionSignal] = (),
        capacity_failures: Iterable[CapacityFailure] = (),
    ) -> PoolSignals:
        """The value with its lists in a canonical order (workers by id, events by time)."""
        return cls(
            pool=pool,
            now=now,
            admission_queue_depth=admission_queue_depth,
            gateway_in_flight=gateway_in_flight,
            batch_queue_depth=batch_queue_depth,
            batch_deadline_s=batch_deadline_s,
            batch_line_s=batch_line_s,
            batch_in_flight=batch_in_flight,
            workers=tuple(sorted(workers, key=lambda w: w.worker_id)),
            evictions=tuple(sorted(evictions, key=lambda e: (e.at, e.zone or ""))),
            capacity_failures=tuple(
                sorted(capacity_failures, key=lambda f: (f.at, f.priority, f.zone or ""))
            ),
        )

    @property
    def ready(self) -> dict[str, int]:
        """Ready workers per priority."""
        return self._count(WorkerState.READY)

    @property
    def provisioning(self) -> dict[str, int]:
        """Provisioning workers per priority."""
        return self._count(WorkerState.PROVISIONING)

    def _count(self, state: WorkerState) -> dict[str, int]:
        return {
            p: sum(1 for w in self.workers if w.priority == p and w.state == state)
            for p in PRIORITIES
        }

    @property
    def running(self) -> float:
        """Requests the engines of live or draining workers report running."""
        return sum(w.running for w in self.workers if w.state in SERVING_STATES)

    @property
    def waiting(self) -> float:
        """Requests queued inside the engines of live or draining workers."""
        return sum(w.waiting for w in self.workers if w.state in SERVING_STATES)

    def live(self, priority: str) -> int:
        """Capacity of one priority that exists or is coming (ready + provisioning)."""
        return self.ready.get(priority, 0) + self.provisioning.get(priority, 0)

    @property
    def live_total(self) -> int:
        return sum(self.live(p) for p in PRIORITIES)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "now": self.now,
            "admission_queue_depth": self.admission_queue_depth,
            "gateway_in_flight": self.gateway_in_flight,
            "batch_queue_depth": self.batch_queue_depth,
            "batch_deadline_s": self.batch_deadline_s,
            "batch_line_s": self.batch_line_s,
            "batch_in_flight": self.batch_in_flight,
            "workers": [w.to_dict() for w in self.workers],
            "ready": self.ready,
            "provisioning": self.provisioning,
            "evictions": [e.to_dict() for e in self.evictions],
            "capacity_failures": [f.to_dict() for f in self.capacity_failures],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PoolSignals:
        return cls(
            pool=str(data["pool"]),
            now=float(data["now"]),
            admission_queue_depth=int(data.get("admission_queue_depth", 0) or 0),
            gateway_in_flight=int(data.get("gateway_in_flight", 0) or 0),
            batch_queue_depth=int(data.get("batch_queue_depth", 0) or 0),
            batch_deadline_s=_opt_float(data.get("batch_deadline_s")),
            batch_line_s=_opt_float(data.get("batch_line_s")),
            batch_in_flight=int(data.get("batch_in_flight", 0) or 0),
            workers=tuple(WorkerSignal.from_dict(w) for w in data.get("workers") or ()),
            evictions=tuple(EvictionSignal.from_dict(e) for e in data.get("evictions") or ()),
            capacity_failures=tuple(
                CapacityFailure.from_dict(f) for f in data.get("capacity_failures") or ()
            ),
        )


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)

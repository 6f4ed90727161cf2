"""A worker is one inference server (a GPU VM locally faked by a process) and its lifecycle.

States only move forward: provisioning -> ready -> draining -> gone. A worker
that comes back after being declared gone registers afresh, so routing never
trusts a stale record.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

RETIRED_PREFIX = "deleted"
"""How the reason of a worker the monitor deleted starts: `deleted: drained`."""
LOST_REASON = "heartbeat timeout"


class WorkerState(StrEnum):
    PROVISIONING = "provisioning"
    READY = "ready"
    DRAINING = "draining"
    GONE = "gone"


_ORDER = {s: i for i, s in enumerate(WorkerState)}


def can_move(current: WorkerState, target: WorkerState) -> bool:
    return _ORDER[target] >= _ORDER[current]


@dataclass
class EngineMetrics:
    """What the agent scrapes from the engine's Prometheus endpoint."""

    num_requests_running: float = 0.0
    num_requests_waiting: float = 0.0
    kv_cache_usage_perc: float = 0.0

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> EngineMetrics:
        data = data or {}
        return cls(
            num_requests_running=float(data.get("num_requests_running", 0.0) or 0.0),
            num_requests_waiting=float(data.get("num_requests_waiting", 0.0) or 0.0),
            kv_cache_usage_perc=float(data.get("kv_cache_usage_perc", 0.0) or 0.0),
        )


@dataclass
class Eviction:
    """A spot eviction notice as the agent read it from Scheduled Events."""

    event_id: str
    not_before: float | None
    reported_at: float
    event_type: str = "Preempt"

    @property
    def returns(self) -> bool:
        """A rebooted or redeployed VM comes back; a preempted or terminated one does not."""
        return self.event_type in ("Reboot", "Redeploy")


@dataclass
class Worker:
    id: str
    pool: str
    model: str
    engine: str
    url: str
    state: WorkerState = WorkerState.PROVISIONING
    priority: str = "spot"
    zone: str | None = None
    registered_at: float = 0.0
    last_heartbeat: float = 0.0
    state_changed_at: float = 0.0
    reason: str | None = None
    metrics: EngineMetrics = field(default_factory=EngineMetrics)
    eviction: Eviction | None = None
    address: str | None = None
    """Where the compute provider placed it ("ip" or "ip:port"); registrations must match."""
    credential: str | None = None
    """Digest of the credential its agent got at registration; never the credential."""
    distrusted: str | None = None
    """Why its answers are no longer trusted (the cache drops what it produced)."""

    @property
    def lost(self) -> bool:
        """Declared gone because its agent went quiet: its VM may still run (and bill)."""
        return self.state == WorkerState.GONE and self.reason == LOST_REASON

    @property
    def retired(self) -> bool:
        """Deleted on the fleet monitor's decision (its reason says so), not lost."""
        return self.state == WorkerState.GONE and (self.reason or "").startswith(RETIRED_PREFIX)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = self.state.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Worker:
        eviction = data.get("eviction")
        return cls(
            id=data["id"],
            pool=data["pool"],
            model=data["model"],
            engine=data["engine"],
            url=data["url"],
            state=WorkerState(data.get("state", WorkerState.PROVISIONING)),
            priority=data.get("priority", "spot"),
            zone=data.get("zone"),
            registered_at=float(data.get("registered_at", 0.0)),
            last_heartbeat=float(data.get("last_heartbeat", 0.0)),
            state_changed_at=float(data.get("state_changed_at", 0.0)),
            reason=data.get("reason"),
            metrics=EngineMetrics.from_dict(data.get("metrics")),
            eviction=Eviction(**eviction) if eviction else None,
            address=data.get("address"),
            credential=data.get("credential"),
            distrusted=data.get("distrusted"),
        )

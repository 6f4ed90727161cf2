"""What the fleet monitor sees of one pool in one tick: a plain, serialisable value.

Observations cross the orchestration boundary (activity output, custom
status), so they are dicts of JSON types with a typed wrapper around them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from spotgate.fleet.registry import WorkerRegistry
from spotgate.fleet.worker import WorkerState


@dataclass
class PoolObservation:
    pool: str
    observed_at: float
    total: int = 0
    provisioning: int = 0
    ready: int = 0
    draining: int = 0
    gone: int = 0
    running: float = 0.0
    waiting: float = 0.0
    expired: list[str] = field(default_factory=list)
    evicting: list[str] = field(default_factory=list)

    @property
    def actual(self) -> int:
        """Capacity that exists or is coming: what a scaler compares with the desired size."""
        return self.provisioning + self.ready

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["actual"] = self.actual
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PoolObservation:
        fields = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in fields})


def observe_pool(
    registry: WorkerRegistry, pool: str, *, heartbeat_timeout_s: float, now: float
) -> PoolObservation:
    """Expire silent workers, then count what is left: level-triggered, so nothing is missed."""
    expired = [w.id for w in registry.expire_stale(heartbeat_timeout_s) if w.pool == pool]
    observation = PoolObservation(pool=pool, observed_at=now, expired=expired)
    for worker in registry.in_pool(pool):
        observation.total += 1
        setattr(observation, worker.state.value, getattr(observation, worker.state.value) + 1)
        if worker.state in (WorkerState.READY, WorkerState.DRAINING):
            observation.running += worker.metrics.num_requests_running
            observation.waiting += worker.metrics.num_requests_waiting
        if worker.eviction is not None and worker.state == WorkerState.DRAINING:
            observation.evicting.append(worker.id)
    return observation

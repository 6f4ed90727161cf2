"""What the fleet monitor sees of one pool in one tick: the policy's signals plus what changed.

Observations cross the orchestration boundary (activity output, custom
status), so they are values of JSON types. Building one is also where the
registry is reconciled with the cloud, level-triggered: workers whose agent
went quiet are expired, workers whose instance the cloud no longer lists are
declared gone, and instances the registry never heard of are adopted as
provisioning (a control plane that restarted mid-scale-out loses nothing).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from spotgate.fleet.compute import Instance
from spotgate.fleet.registration import join_address
from spotgate.fleet.registry import WorkerRegistry
from spotgate.fleet.signals import CapacityFailure, EvictionSignal, PoolSignals, WorkerSignal
from spotgate.fleet.worker import Worker, WorkerState

log = logging.getLogger("spotgate.fleet")


@dataclass(frozen=True)
class PoolDemand:
    """Demand the gateway sees for a pool: requests running, requests queued, batch backlog.

    The batch fields are what `BatchBacklogView` says (None: not known).
    """

    admission_queue_depth: int = 0
    gateway_in_flight: int = 0
    batch_queue_depth: int = 0
    batch_deadline_s: float | None = None
    batch_line_s: float | None = None
    batch_in_flight: int = 0
    """Batch lines running on spare slots now (not in `gateway_in_flight`)."""


class DemandSource(Protocol):
    """Where a pool's demand is read: this gateway's admission queue, or Azure Monitor."""

    async def of(self, pool: str) -> PoolDemand: ...


@dataclass(frozen=True)
class BatchBacklogView:
    """A pool's batch backlog: lines waiting, seconds until the earliest active batch
    expires, and seconds one line has been holding a slot (None until measured)."""

    lines: int = 0
    deadline_s: float | None = None
    line_s: float | None = None


class BatchBacklog(Protocol):
    """Whoever runs batch lines knows the backlog best: its queue, deadlines and pace."""

    async def backlog(self, pool: str) -> BatchBacklogView: ...


class WithBatchBacklog:
    """A DemandSource whose batch fields come from a BatchBacklog, the rest from `inner`.

    An unreadable backlog leaves the inner source's batch figures in place, so
    a failing batch store slows batch scaling but never stops the pool's tick.
    """

    def __init__(self, inner: DemandSource, backlog: BatchBacklog) -> None:
        self._inner = inner
        self._backlog = backlog

    async def of(self, pool: str) -> PoolDemand:
        demand = await self._inner.of(pool)
        try:
            view = await self._backlog.backlog(pool)
        except Exception as exc:
            log.warning("batch backlog of %s unavailable: %s", pool, exc)
            return demand
        return replace(
            demand,
            batch_queue_depth=max(0, view.lines),
            batch_deadline_s=view.deadline_s,
            batch_line_s=view.line_s,
        )


@dataclass(frozen=True)
class PoolObservation:
    signals: PoolSignals
    gone: int = 0
    expired: tuple[str, ...] = ()
    vanished: tuple[str, ...] = ()
    adopted: tuple[str, ...] = ()
    failed_instances: tuple[str, ...] = ()
    lost: tuple[tuple[str, float], ...] = ()
    """(worker id, gone since) of workers whose agent went quiet while the cloud still
    lists their instance: a VM that bills and serves nobody until it is deleted."""

    @property
    def pool(self) -> str:
        return self.signals.pool

    @property
    def observed_at(self) -> float:
        return self.signals.now

    def count(self, state: str) -> int:
        return sum(1 for w in self.signals.workers if w.state == state)

    @property
    def actual(self) -> int:
        """Capacity that exists or is coming: what a scaler compares with the desired size."""
        return self.signals.live_total

    @property
    def evicting(self) -> list[str]:
        return [w.worker_id for w in self.signals.workers if w.evicting]

    def to_dict(self) -> dict[str, Any]:
        return {
            "signals": self.signals.to_dict(),
            "gone": self.gone,
            "expired": list(self.expired),
            "vanished": list(self.vanished),
            "adopted": list(self.adopted),
            "failed_instances": list(self.failed_instances),
            "lost": [{"worker_id": w, "since": since} for w, since in self.lost],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PoolObservation:
        return cls(
            signals=PoolSignals.from_dict(data["signals"]),
            gone=int(data.get("gone", 0)),
            expired=tuple(data.get("expired") or ()),
            vanished=tuple(data.get("vanished") or ()),
            adopted=tuple(data.get("adopted") or ()),
            failed_instances=tuple(data.get("failed_instances") or ()),
            lost=tuple(
                (str(item["worker_id"]), float(item["since"])) for item in data.get("lost") or ()
            ),
        )


def worker_signal(worker: Worker, gateway_in_flight: int) -> WorkerSignal:
    """The engine's own counts lag a heartbeat; the gateway's count does not, so take the larger."""
    metrics = worker.metrics
    evicting = worker.eviction is not None and worker.state == WorkerState.DRAINING
    return WorkerSignal(
        worker_id=worker.id,
        priority=worker.priority,
        zone=worker.zone,
        state=worker.state.value,
        running=max(metrics.num_requests_running, float(gateway_in_flight)),
        waiting=metrics.num_requests_waiting,
        kv_cache_usage=metrics.kv_cache_usage_perc,
        since=worker.state_changed_at,
        evicting=evicting,
        deadline=worker.eviction.not_before if evicting and worker.eviction else None,
    )


def reconcile_instances(
    registry: WorkerRegistry,
    pool: str,
    instances: Iterable[Instance],
    *,
    now: float,
    grace_s: float,
) -> tuple[list[str], list[str], list[str]]:
    """Align the registry with what the cloud lists: (vanished, adopted, failed instance ids).

    A worker only counts as vanished after `grace_s` in its state, since a
    cloud's list may lag a scale-out it just acknowledged.
    """
    listed = {i.worker_id: i for i in instances if i.pool == pool}
    vanished, adopted, failed = [], [], []
    for instance in listed.values():
        if instance.private_ip:
            registry.locate(instance.worker_id, join_address(instance.private_ip, instance.port))
    for worker in registry.in_pool(pool):
        if worker.state == WorkerState.GONE or worker.id in listed:
            continue
        if now - worker.state_changed_at >= grace_s:
            registry.mark_gone(worker.id, "instance no longer exists")
            vanished.append(worker.id)
    for instance in listed.values():
        if instance.state == "failed":
            failed.append(instance.worker_id)
            continue
        known = registry.get(instance.worker_id)
        if known is None and instance.state != "deleting":
            address = instance.private_ip and join_address(instance.private_ip, instance.port)
            registry.expect(
                instance.worker_id,
                pool=pool,
                model="",
                engine="",
                priority=instance.priority,
                zone=instance.zone,
                address=address or None,
            )
            adopted.append(instance.worker_id)
    return vanished, adopted, failed


def observe_pool(
    registry: WorkerRegistry,
    pool: str,
    *,
    heartbeat_timeout_s: float,
    now: float,
    demand: PoolDemand | None = None,
    in_flight: Callable[[str], int] = lambda _worker_id: 0,
    evictions: Iterable[EvictionSignal] = (),
    capacity_failures: Iterable[CapacityFailure] = (),
    instances: Iterable[Instance] | None = None,
    instance_grace_s: float = 30.0,
) -> PoolObservation:
    """Expire silent workers, reconcile with the cloud, then describe what is left."""
    expired = tuple(w.id for w in registry.expire_stale(heartbeat_timeout_s, pool))
    vanished: list[str] = []
    adopted: list[str] = []
    failed: list[str] = []
    lost: list[tuple[str, float]] = []
    if instances is not None:
        instances = list(instances)
        vanished, adopted, failed = reconcile_instances(
            registry, pool, instances, now=now, grace_s=instance_grace_s
        )
        running = {i.worker_id for i in instances if i.pool == pool and i.state != "deleting"}
        lost = [
            (w.id, w.state_changed_at) for w in registry.in_pool(pool) if w.lost and w.id in running
        ]
    demand = demand or PoolDemand()
    members = registry.in_pool(pool)
    signals = PoolSignals.build(
        pool,
        now,
        admission_queue_depth=demand.admission_queue_depth,
        gateway_in_flight=demand.gateway_in_flight,
        batch_queue_depth=demand.batch_queue_depth,
        batch_deadline_s=demand.batch_deadline_s,
        batch_line_s=demand.batch_line_s,
        batch_in_flight=demand.batch_in_flight,
        workers=[worker_signal(w, in_flight(w.id)) for w in members if w.state != WorkerState.GONE],
        evictions=evictions,
        capacity_failures=capacity_failures,
    )
    return PoolObservation(
        signals=signals,
        gone=sum(1 for w in members if w.state == WorkerState.GONE),
        expired=expired,
        vanished=tuple(vanished),
        adopted=tuple(adopted),
        failed_instances=tuple(failed),
        lost=tuple(lost),
    )

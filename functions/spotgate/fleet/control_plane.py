"""What worker agents ask of the control plane: join, report load, report an eviction.

Kept out of the HTTP routes so each use case reads as one function of the
fleet core: the route authenticates the fleet token and parses, this decides.
An eviction notice is three things at once: stop routing to the worker,
remember the eviction (the capacity mix avoids that zone and may fall back
to on-demand), and wake the pool's monitor so the replacement is requested
in this second, not at the next tick.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from spotgate.errors import InvalidRequest
from spotgate.fleet.journal import FleetJournal
from spotgate.fleet.registration import IPNetwork, check_worker_url
from spotgate.fleet.registry import WorkerRegistry
from spotgate.fleet.worker import Worker

PRIORITIES = ("spot", "on-demand")


class MonitorWake(Protocol):
    async def wake(self, pool: str) -> None: ...


@dataclass(frozen=True)
class Enrolment:
    """What an agent says when its engine is healthy (the body of POST /fleet/workers)."""

    worker_id: str
    pool: str
    model: str
    engine: str
    url: str
    priority: str = "spot"
    zone: str | None = None


@dataclass(frozen=True)
class EvictionNotice:
    """A Scheduled Event the agent read: Preempt and Terminate end the VM, Reboot returns."""

    event_id: str
    event_type: str = "Preempt"
    not_before: float | None = None


class ControlPlane:
    def __init__(
        self,
        registry: WorkerRegistry,
        journal: FleetJournal,
        waker: MonitorWake,
        *,
        pools: Iterable[str],
        worker_networks: Iterable[IPNetwork],
    ) -> None:
        self._registry = registry
        self._journal = journal
        self._waker = waker
        self._pools = frozenset(pools)
        self._networks = tuple(worker_networks)

    def enrol(self, enrolment: Enrolment, credential: str | None) -> tuple[Worker, str]:
        """The worker and its new credential; see registration.py for what it must prove."""
        if enrolment.pool not in self._pools:
            raise InvalidRequest(
                f"Unknown pool '{enrolment.pool}'.", param="pool", code="unknown_pool"
            )
        if enrolment.priority not in PRIORITIES:
            raise InvalidRequest("'priority' must be spot or on-demand.", param="priority")
        address = check_worker_url(enrolment.url, self._networks)
        return self._registry.enroll(
            enrolment.worker_id,
            address,
            credential,
            pool=enrolment.pool,
            model=enrolment.model,
            engine=enrolment.engine,
            priority=enrolment.priority,
            zone=enrolment.zone,
        )

    def heartbeat(
        self, worker_id: str, credential: str | None, metrics: dict[str, Any] | None
    ) -> Worker:
        self._registry.authenticate(worker_id, credential)
        return self._registry.heartbeat(worker_id, metrics)

    async def evicting(
        self, worker_id: str, credential: str | None, notice: EvictionNotice
    ) -> Worker:
        """Drain now, remember the eviction, and have the replacement requested now."""
        self._registry.authenticate(worker_id, credential)
        worker = self._registry.drain(
            worker_id,
            f"scheduled event {notice.event_type}",
            event_id=notice.event_id,
            not_before=notice.not_before,
            event_type=notice.event_type,
        )
        if worker.eviction is not None and not worker.eviction.returns:
            self._journal.record_eviction(
                worker.pool, worker.id, worker.zone, worker.eviction.reported_at
            )
        await self._waker.wake(worker.pool)
        return worker

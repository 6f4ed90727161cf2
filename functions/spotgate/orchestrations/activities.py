"""The fleet monitor's activities: the only place its ticks touch the registry or the cloud.

They are plain functions of (services, payload) so the same code runs under
the Azure Functions host, the local runner and unit tests; each host decides
how to supply the services. Payloads and results are JSON types because
they cross the orchestration boundary and are stored in history.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from spotgate.fleet.compute import CapacityError, ProvisionRequest
from spotgate.fleet.decision import DeleteRequest
from spotgate.fleet.journal import JOURNAL_RETENTION_S
from spotgate.fleet.observation import observe_pool as _observe
from spotgate.fleet.worker import WorkerState
from spotgate.orchestrations.services import FleetServices

log = logging.getLogger("spotgate.fleet")

OBSERVE_POOL = "observe_pool"
PROVISION_WORKERS = "provision_workers"
DRAIN_WORKERS = "drain_workers"
DELETE_WORKERS = "delete_workers"
RECORD_DECISION = "record_decision"

Activity = Callable[[Any], Awaitable[Any]]


async def observe_pool(services: FleetServices, payload: dict[str, Any]) -> dict[str, Any]:
    """Reconcile the registry with the cloud and read the demand: what one tick acts on."""
    pool = str(payload["pool"])
    now = services.clock.now()
    lookback_s = float(payload.get("lookback_s", 900.0))
    since = now - lookback_s
    instances = await services.compute.instances(pool) if services.compute else None
    demand = await services.demand.of(pool) if services.demand else None
    services.journal.prune(now - max(2 * lookback_s, JOURNAL_RETENTION_S))
    observation = _observe(
        services.registry,
        pool,
        heartbeat_timeout_s=services.heartbeat_timeout_s,
        now=now,
        demand=demand,
        in_flight=services.in_flight,
        evictions=services.journal.evictions(pool, since),
        capacity_failures=services.journal.capacity_failures(pool, since),
        instances=instances,
    )
    return observation.to_dict()


async def provision_workers(services: FleetServices, payload: dict[str, Any]) -> dict[str, Any]:
    """Ask the cloud for workers; a refusal is recorded for the capacity mix, not raised.

    The payload is a `ProvisionRequest.to_dict()`.
    """
    request = ProvisionRequest.from_dict(payload)
    if services.compute is None:
        return {"provisioned": [], "failure": None}
    failure = None
    try:
        provisioned = await services.compute.provision(request)
    except CapacityError as exc:
        provisioned = exc.provisioned
        failure = {"reason": exc.reason, "code": exc.code, "message": str(exc)}
        services.journal.record_capacity_failure(
            request.pool, request.priority, request.zone, exc.reason, services.clock.now()
        )
        log.warning(
            "%s %s capacity refused in zone %s: %s",
            request.pool,
            request.priority,
            request.zone,
            exc.reason,
        )
    for worker_id in provisioned:
        if services.registry.get(worker_id) is None:
            services.registry.expect(
                worker_id,
                pool=request.pool,
                model="",
                engine="",
                priority=request.priority,
                zone=request.zone,
            )
    return {"provisioned": list(provisioned), "failure": failure}


async def drain_workers(services: FleetServices, payload: dict[str, Any]) -> list[str]:
    """Stop routing to these workers; they are deleted on a later tick, once empty."""
    drained = []
    for worker_id in payload.get("workers") or []:
        worker = services.registry.get(worker_id)
        if worker is not None and worker.state == WorkerState.READY:
            services.registry.drain(worker_id, str(payload.get("reason") or "scale down"))
            drained.append(worker_id)
    return drained


async def delete_workers(services: FleetServices, payload: dict[str, Any]) -> list[str]:
    """Delete exactly the named instances, then forget them: never a blind capacity decrease.

    `workers` holds `DeleteRequest.to_dict()`s: `{"worker_id", "why"}`.
    """
    pool = str(payload["pool"])
    requests = [DeleteRequest.from_dict(d) for d in payload.get("workers") or []]
    wanted = {r.worker_id: r.why or "deleted" for r in requests}
    if not wanted:
        return []
    deleted = list(wanted)
    if services.compute is not None:
        deleted = await services.compute.delete(pool, list(wanted))
    for worker_id in deleted:
        services.registry.retire(worker_id, wanted.get(worker_id, "by the monitor"))
    return deleted


async def record_decision(services: FleetServices, payload: dict[str, Any]) -> None:
    """Make the decision visible outside the orchestration (status pages, audits)."""
    decision = dict(payload["decision"])
    decision.setdefault("pool", payload.get("pool"))
    services.journal.append(decision)


def activity_table(services: FleetServices) -> dict[str, Activity]:
    """The activities by their registered names, bound to services, for the local runner."""
    return {
        OBSERVE_POOL: partial(observe_pool, services),
        PROVISION_WORKERS: partial(provision_workers, services),
        DRAIN_WORKERS: partial(drain_workers, services),
        DELETE_WORKERS: partial(delete_workers, services),
        RECORD_DECISION: partial(record_decision, services),
    }

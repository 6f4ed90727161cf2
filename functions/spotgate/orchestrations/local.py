"""Starts the fleet monitors of a local stack on the in-process Durable replay engine.

Besides starting one monitor per pool, this wires the events that should
make a monitor tick now instead of at its next timer: a spot eviction
notice (its replacement is requested in the same tick), a worker lost
without notice, and a request waiting on a pool scaled to zero.
"""

from __future__ import annotations

import asyncio

from spotgate.adapters.local.durable_runner import LocalOrchestrationRunner
from spotgate.fleet.compute import ComputeProvider
from spotgate.fleet.fleet_policy import FleetPolicyConfig
from spotgate.fleet.worker import Worker, WorkerState
from spotgate.gateway.pool_load import AdmissionPoolLoad
from spotgate.orchestrations.activities import activity_table
from spotgate.orchestrations.blueprint import fleet_monitor
from spotgate.orchestrations.fleet_monitor import WAKE_EVENT, monitor_instance_id
from spotgate.orchestrations.services import SimpleFleetServices
from spotgate.orchestrations.watchdog import start_input
from spotgate.runtime import Runtime


def needs_wake(worker: Worker) -> bool:
    """Losses the monitor did not cause itself; its own deletes are already in its plan.

    Eviction notices wake the monitor from the `/evicting` route, on every host.
    """
    return worker.state == WorkerState.GONE and not worker.retired


async def start_local_orchestrations(
    runtime: Runtime,
    compute: ComputeProvider | None = None,
    policies: dict[str, FleetPolicyConfig] | None = None,
) -> LocalOrchestrationRunner:
    settings = runtime.settings
    admission = runtime.router.admission
    services = SimpleFleetServices(
        registry=runtime.registry,
        clock=runtime.clock,
        heartbeat_timeout_s=settings.heartbeat_timeout_s,
        journal=runtime.journal,
        compute=compute,
        load_source=AdmissionPoolLoad(admission),
        in_flight=runtime.load.of,
    )
    runner = LocalOrchestrationRunner(
        {"fleet_monitor": fleet_monitor}, activity_table(services), runtime.clock
    )
    runtime.orchestrations = runner
    policies = policies or {}
    for pool in settings.pools:
        await runner.start(
            "fleet_monitor",
            monitor_instance_id(pool),
            start_input(settings, pool, policies.get(pool)),
        )

    def wake(pool: str) -> None:
        instance_id = monitor_instance_id(pool)
        if runner.status(instance_id) is not None:
            asyncio.get_running_loop().create_task(runner.raise_event(instance_id, WAKE_EVENT))

    def on_worker_change(worker: Worker) -> None:
        if needs_wake(worker):
            wake(worker.pool)

    runtime.registry.subscribe(on_worker_change)
    admission.on_cold_wait(wake)
    return runner

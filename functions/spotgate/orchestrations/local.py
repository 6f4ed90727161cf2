"""Starts the fleet monitors of a local stack on the in-process Durable replay engine."""

from __future__ import annotations

import asyncio

from spotgate.adapters.local.durable_runner import LocalOrchestrationRunner
from spotgate.fleet.worker import Worker, WorkerState
from spotgate.orchestrations.activities import activity_table
from spotgate.orchestrations.blueprint import fleet_monitor
from spotgate.orchestrations.fleet_monitor import initial_state, monitor_instance_id
from spotgate.orchestrations.services import SimpleFleetServices
from spotgate.runtime import Runtime

_WAKE_STATES = (WorkerState.DRAINING, WorkerState.GONE)


async def start_local_orchestrations(runtime: Runtime) -> LocalOrchestrationRunner:
    settings = runtime.settings
    services = SimpleFleetServices(
        registry=runtime.registry,
        clock=runtime.clock,
        heartbeat_timeout_s=settings.heartbeat_timeout_s,
        decisions=runtime.decisions,
    )
    runner = LocalOrchestrationRunner(
        {"fleet_monitor": fleet_monitor}, activity_table(services), runtime.clock
    )
    runtime.orchestrations = runner
    for pool in settings.pools:
        await runner.start(
            "fleet_monitor",
            monitor_instance_id(pool),
            initial_state(
                pool,
                tick_seconds=settings.monitor_tick_s,
                ticks_per_run=settings.monitor_ticks_per_run,
            ),
        )

    def wake_on_loss(worker: Worker) -> None:
        """Losing capacity wakes the monitor now; it would notice at its next tick anyway."""
        instance_id = monitor_instance_id(worker.pool)
        if worker.state in _WAKE_STATES and runner.status(instance_id) is not None:
            asyncio.get_running_loop().create_task(runner.raise_event(instance_id, "wake"))

    runtime.registry.subscribe(wake_on_loss)
    return runner

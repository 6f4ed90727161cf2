"""Keeps one fleet monitor running per pool, whatever happened to the last one.

Eternal orchestrations can still end: a failed activity, a deployment that
purged the task hub, an operator's terminate. The watchdog re-creates the
singleton when it is missing or finished, and leaves a live one alone, since
start_new on an existing id would silently replace it and lose its state.
"""

from __future__ import annotations

import logging
from typing import Any

import azure.durable_functions as df
from azure.durable_functions.models.OrchestrationRuntimeStatus import OrchestrationRuntimeStatus

from spotgate.orchestrations.monitor_contract import (
    ORCHESTRATOR_NAME,
    MonitorPlan,
    monitor_instance_id,
)

log = logging.getLogger(__name__)

WATCHDOG_SCHEDULE = "0 */1 * * * *"
_ALIVE = {OrchestrationRuntimeStatus.Running, OrchestrationRuntimeStatus.Pending}


def _is_alive(status: Any) -> bool:
    # A not-found instance comes back as a falsy DurableOrchestrationStatus, not None.
    return bool(status) and getattr(status, "runtime_status", None) in _ALIVE


async def ensure_monitors(
    client: df.DurableOrchestrationClient, monitors: MonitorPlan
) -> list[str]:
    """Start the monitor of every pool that has none alive; return the instance ids started."""
    started = []
    for pool in monitors.pools:
        instance_id = monitor_instance_id(pool)
        try:
            status = await client.get_status(instance_id)
        except Exception:
            # Unknown is not dead: replacing a live monitor is worse than waiting a minute.
            log.exception("watchdog could not read %s; will retry next run", instance_id)
            continue
        if _is_alive(status):
            continue
        await client.start_new(ORCHESTRATOR_NAME, instance_id, monitors.start_input(pool))
        log.info(
            "watchdog started %s (was %s)", instance_id, getattr(status, "runtime_status", None)
        )
        started.append(instance_id)
    return started

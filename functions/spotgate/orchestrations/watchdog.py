"""Keeps one fleet monitor running per pool, whatever happened to the last one.

Eternal orchestrations can still end: a failed activity, a deployment that
purged the task hub, an operator's terminate. The watchdog re-creates the
singleton when it is missing or finished, and leaves a live one alone, since
start_new on an existing id would silently replace it and lose its state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import azure.durable_functions as df
from azure.durable_functions.models.OrchestrationRuntimeStatus import OrchestrationRuntimeStatus

from spotgate.fleet.fleet_policy import FleetPolicyConfig
from spotgate.orchestrations.fleet_monitor import (
    DEFAULT_TICK_SECONDS,
    DEFAULT_TICKS_PER_RUN,
    ORCHESTRATOR_NAME,
    initial_state,
    monitor_instance_id,
)
from spotgate.settings import Settings

log = logging.getLogger(__name__)

WATCHDOG_SCHEDULE = "0 */1 * * * *"
_ALIVE = {OrchestrationRuntimeStatus.Running, OrchestrationRuntimeStatus.Pending}


def start_input(
    settings: Settings, pool: str, policy: FleetPolicyConfig | None = None
) -> dict[str, Any]:
    """A monitor's first input from the settings: what the watchdog, the API and the local
    stack all start a monitor with."""
    return initial_state(
        pool,
        tick_seconds=settings.monitor_tick_s,
        ticks_per_run=settings.monitor_ticks_per_run,
        policy=policy or settings.fleet_policy(pool),
    )


def _is_alive(status: Any) -> bool:
    # A not-found instance comes back as a falsy DurableOrchestrationStatus, not None.
    return bool(status) and getattr(status, "runtime_status", None) in _ALIVE


async def ensure_monitors(
    client: df.DurableOrchestrationClient,
    pools: list[str],
    *,
    tick_seconds: float = DEFAULT_TICK_SECONDS,
    ticks_per_run: int = DEFAULT_TICKS_PER_RUN,
    policy_for: Callable[[str], FleetPolicyConfig] | None = None,
) -> list[str]:
    """Start the monitor of every pool that has none alive; return the instance ids started."""
    started = []
    for pool in pools:
        instance_id = monitor_instance_id(pool)
        try:
            status = await client.get_status(instance_id)
        except Exception:
            # Unknown is not dead: replacing a live monitor is worse than waiting a minute.
            log.exception("watchdog could not read %s; will retry next run", instance_id)
            continue
        if _is_alive(status):
            continue
        state = initial_state(
            pool,
            tick_seconds=tick_seconds,
            ticks_per_run=ticks_per_run,
            policy=policy_for(pool) if policy_for else None,
        )
        await client.start_new(ORCHESTRATOR_NAME, instance_id, state)
        log.info(
            "watchdog started %s (was %s)", instance_id, getattr(status, "runtime_status", None)
        )
        started.append(instance_id)
    return started

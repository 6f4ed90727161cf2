"""The Durable Functions blueprint: the fleet monitor, its activities and its watchdog.

Everything the Azure host indexes is registered here, on one `bp`, and the
local runner takes the very same orchestrator from it, so both run identical
orchestration code. Activities differ only in how they get their services:
on Azure through a provider the function app sets once at startup (the host
owns construction), locally through a table bound to services directly.

No `from __future__ import annotations` here: the Functions worker inspects
the parameter annotations of triggers and bindings at indexing time.
"""

import os
from collections.abc import Awaitable, Callable
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from spotgate.orchestrations import activities, batch_activities, watchdog
from spotgate.orchestrations.batch_activities import BatchServices
from spotgate.orchestrations.batch_job import batch_job as _batch_job
from spotgate.orchestrations.fleet_monitor import fleet_monitor as _fleet_monitor
from spotgate.orchestrations.monitor_contract import MonitorPlan
from spotgate.orchestrations.services import FleetServices

ServicesProvider = Callable[[], FleetServices]
BatchServicesProvider = Callable[[], BatchServices | None]
StartupHook = Callable[[], Awaitable[None]]
ClientListener = Callable[[df.DurableOrchestrationClient], None]

bp = df.Blueprint()

_provider: ServicesProvider | None = None
_batch_provider: BatchServicesProvider | None = None
_startup: StartupHook | None = None
_monitors: MonitorPlan | None = None
_client_listeners: list[ClientListener] = []


def set_services_provider(provider: ServicesProvider | None) -> None:
    """Called once by the function app; a callable so services can be built lazily."""
    global _provider
    _provider = provider


def set_batch_services_provider(provider: BatchServicesProvider | None) -> None:
    """Called once by the function app when the deployment serves the Batch API."""
    global _batch_provider
    _batch_provider = provider


async def _batch_services_ready() -> BatchServices:
    if _startup is not None:
        await _startup()
    services = _batch_provider() if _batch_provider is not None else None
    if services is None:
        raise RuntimeError("No batch services: the Batch API is not configured.")
    return services


def set_startup_hook(hook: StartupHook | None) -> None:
    """Awaited before every activity and watchdog run: the host's stores must be loaded first,
    and a worker process may run activities before it ever serves an HTTP request."""
    global _startup
    _startup = hook


async def _services_ready() -> FleetServices:
    if _startup is not None:
        await _startup()
    return _services()


def set_monitor_plan(plan: MonitorPlan | None) -> None:
    """Which pools the watchdog keeps a monitor for, and their start input (from the host)."""
    global _monitors
    _monitors = plan


def on_durable_client(listener: ClientListener) -> None:
    """`listener(client)` each time the watchdog runs, so an instance that serves no HTTP
    request still has a durable client (HTTP requests bring their own, hosts/azure.py)."""
    _client_listeners.append(listener)


def _services() -> FleetServices:
    if _provider is None:
        raise RuntimeError("No fleet services: call set_services_provider() at startup.")
    return _provider()


fleet_monitor = bp.orchestration_trigger(context_name="context")(_fleet_monitor)
batch_job = bp.orchestration_trigger(context_name="context")(_batch_job)

WATCHDOG_RUN_ON_STARTUP_SETTING = "SPOTGATE_WATCHDOG_RUN_ON_STARTUP"


def watchdog_runs_on_startup(env: dict[str, str] | None = None) -> bool:
    """Whether the watchdog also fires when a host starts: read while the app is indexed.

    On by default (a local `func start` gets its monitors at once); the Bicep deployment
    sets the app setting to false, since on Flex Consumption hosts start on every scale-out
    and restart, and the every-minute schedule alone keeps the monitors alive.
    """
    value = (os.environ if env is None else env).get(WATCHDOG_RUN_ON_STARTUP_SETTING, "true")
    return value.strip().lower() not in {"0", "false", "no", "off"}


@bp.activity_trigger(input_name="payload")
async def observe_pool(payload: dict[str, Any]) -> dict[str, Any]:
    return await activities.observe_pool(await _services_ready(), payload)


@bp.activity_trigger(input_name="payload")
async def provision_workers(payload: dict[str, Any]) -> dict[str, Any]:
    return await activities.provision_workers(await _services_ready(), payload)


@bp.activity_trigger(input_name="payload")
async def drain_workers(payload: dict[str, Any]) -> list[str]:
    return await activities.drain_workers(await _services_ready(), payload)


@bp.activity_trigger(input_name="payload")
async def delete_workers(payload: dict[str, Any]) -> list[str]:
    return await activities.delete_workers(await _services_ready(), payload)


@bp.activity_trigger(input_name="payload")
async def record_decision(payload: dict[str, Any]) -> None:
    await activities.record_decision(await _services_ready(), payload)


@bp.activity_trigger(input_name="payload")
async def prepare_batch(payload: dict[str, Any]) -> dict[str, Any]:
    return await batch_activities.prepare_batch(await _batch_services_ready(), payload)


@bp.activity_trigger(input_name="payload")
async def enqueue_lines(payload: dict[str, Any]) -> int:
    return await batch_activities.enqueue_lines(await _batch_services_ready(), payload)


@bp.activity_trigger(input_name="payload")
async def batch_progress(payload: dict[str, Any]) -> dict[str, Any]:
    return await batch_activities.batch_progress(await _batch_services_ready(), payload)


@bp.activity_trigger(input_name="payload")
async def finalise_batch(payload: dict[str, Any]) -> dict[str, Any]:
    return await batch_activities.finalise_batch(await _batch_services_ready(), payload)


@bp.activity_trigger(input_name="payload")
async def fail_batch(payload: dict[str, Any]) -> dict[str, Any]:
    return await batch_activities.fail_batch(await _batch_services_ready(), payload)


@bp.timer_trigger(
    arg_name="timer",
    schedule=watchdog.WATCHDOG_SCHEDULE,
    run_on_startup=watchdog_runs_on_startup(),
)
@bp.durable_client_input(client_name="client")
async def fleet_watchdog(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    if _startup is not None:
        await _startup()
    for listener in _client_listeners:
        listener(client)
    if _monitors is None:
        raise RuntimeError("No monitor plan: call set_monitor_plan() at startup.")
    await watchdog.ensure_monitors(client, _monitors)

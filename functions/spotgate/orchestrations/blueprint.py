"""The Durable Functions blueprint: the fleet monitor, its activities and its watchdog.

Everything the Azure host indexes is registered here, on one `bp`, and the
local runner takes the very same orchestrator from it, so both run identical
orchestration code. Activities differ only in how they get their services:
on Azure through a provider the function app sets once at startup (the host
owns construction), locally through a table bound to services directly.

No `from __future__ import annotations` here: the Functions worker inspects
the parameter annotations of triggers and bindings at indexing time.
"""

from collections.abc import Callable
from typing import Any

import azure.durable_functions as df
import azure.functions as func

from spotgate.orchestrations import activities, watchdog
from spotgate.orchestrations.fleet_monitor import fleet_monitor as _fleet_monitor
from spotgate.orchestrations.services import FleetServices
from spotgate.settings import Settings

ServicesProvider = Callable[[], FleetServices]
ClientListener = Callable[[df.DurableOrchestrationClient], None]

bp = df.Blueprint()

_provider: ServicesProvider | None = None
_client_listeners: list[ClientListener] = []


def set_services_provider(provider: ServicesProvider | None) -> None:
    """Called once by the function app; a callable so services can be built lazily."""
    global _provider
    _provider = provider


def on_durable_client(listener: ClientListener) -> None:
    """`listener(client)` each time the watchdog runs: the HTTP API's way to a durable client."""
    _client_listeners.append(listener)


def _services() -> FleetServices:
    if _provider is None:
        raise RuntimeError("No fleet services: call set_services_provider() at startup.")
    return _provider()


fleet_monitor = bp.orchestration_trigger(context_name="context")(_fleet_monitor)


@bp.activity_trigger(input_name="payload")
async def observe_pool(payload: dict[str, Any]) -> dict[str, Any]:
    return await activities.observe_pool(_services(), payload)


@bp.activity_trigger(input_name="payload")
async def provision_workers(payload: dict[str, Any]) -> dict[str, Any]:
    return await activities.provision_workers(_services(), payload)


@bp.activity_trigger(input_name="payload")
async def drain_workers(payload: dict[str, Any]) -> list[str]:
    return await activities.drain_workers(_services(), payload)


@bp.activity_trigger(input_name="payload")
async def delete_workers(payload: dict[str, Any]) -> list[str]:
    return await activities.delete_workers(_services(), payload)


@bp.activity_trigger(input_name="payload")
async def record_decision(payload: dict[str, Any]) -> None:
    await activities.record_decision(_services(), payload)


@bp.timer_trigger(arg_name="timer", schedule=watchdog.WATCHDOG_SCHEDULE, run_on_startup=True)
@bp.durable_client_input(client_name="client")
async def fleet_watchdog(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    for listener in _client_listeners:
        listener(client)
    await watchdog.ensure_monitors(
        client,
        watchdog.pools_from_env(),
        **watchdog.monitor_settings_from_env(),
        policy_for=Settings().fleet_policy,
    )

"""The fleet monitor's services on Azure (composition): scale sets, Azure Monitor, the batch queue.

Each is optional, so a half-configured deployment still runs: without a
subscription and resource group the monitor observes and decides but
provisions nothing (and says so in every decision's plan); without Monitor
settings it counts only this instance's queue. Clients are built on first
use, inside the Functions worker's event loop, and shared by all activities;
they all authenticate with one credential (the managed identity), which the
scale-set provider owns and closes.
"""

from __future__ import annotations

from collections.abc import Callable

from azure.core.credentials_async import AsyncTokenCredential

from spotgate.adapters.azure.azure_demand import AzureDemand
from spotgate.adapters.azure.monitor_signals import MonitorSignals
from spotgate.adapters.azure.queue_depth import StorageQueueDepth
from spotgate.adapters.azure.vmss_compute import VmssCompute
from spotgate.fleet.observation import DemandSource
from spotgate.gateway.admission_demand import AdmissionDemand
from spotgate.orchestrations.services import FleetServices, SimpleFleetServices
from spotgate.runtime import Runtime


def azure_fleet_services(
    runtime: Runtime, gateway_load: DemandSource | None = None
) -> Callable[[], FleetServices]:
    """A provider for the blueprint: builds the services once, on the first activity.

    `gateway_load` is every instance's admission counts (SharedDemand); without
    it, only this instance's queue is seen.
    """
    built: list[FleetServices] = []

    def provide() -> FleetServices:
        if not built:
            built.append(_build(runtime, gateway_load))
        return built[0]

    return provide


def _build(runtime: Runtime, gateway_load: DemandSource | None) -> FleetServices:
    settings = runtime.settings
    subscription, group = settings.azure.azure_subscription_id, settings.azure.azure_resource_group
    credential: AsyncTokenCredential | None = None
    if (subscription and group) or settings.azure.batch_queue_account_url:
        from azure.identity.aio import DefaultAzureCredential

        credential = DefaultAzureCredential()
    compute = None
    if subscription and group and credential is not None:
        compute = VmssCompute(credential, subscription, group, owns_credential=True)
    monitor = None
    if (
        compute is not None
        and credential is not None
        and settings.azure.monitor_metrics_endpoint
        and settings.azure.monitor_gateway_resource_id
    ):
        monitor = MonitorSignals(
            credential,
            metrics_endpoint=settings.azure.monitor_metrics_endpoint,
            gateway_resource_id=settings.azure.monitor_gateway_resource_id,
        )
    batch = None
    if settings.azure.batch_queue_account_url:
        batch = StorageQueueDepth(settings.azure.batch_queue_account_url, credential)
    return SimpleFleetServices(
        registry=runtime.registry,
        clock=runtime.clock,
        heartbeat_timeout_s=settings.fleet.heartbeat_timeout_s,
        journal=runtime.journal,
        compute=compute,
        demand=AzureDemand(
            gateway_load or AdmissionDemand(runtime.router.admission),
            monitor=monitor,
            batch=batch,
        ),
        in_flight=runtime.in_flight.of,
    )

"""How the Azure host assembles the monitor's services, and how it reads a pool's load."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from spotgate.adapters.azure.azure_demand import AzureDemand
from spotgate.adapters.azure.monitor_signals import GatewayDemand
from spotgate.adapters.azure.vmss_compute import VmssCompute
from spotgate.fleet.observation import PoolDemand
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.hosts.azure_fleet import azure_fleet_services
from spotgate.hosts.gateway import build_runtime
from spotgate.settings import Settings


@dataclass
class Fixed:
    load_now: PoolDemand

    async def of(self, pool: str) -> PoolDemand:
        return self.load_now


@dataclass
class FakeMonitor:
    seen: GatewayDemand

    async def gateway_load(self, pool: str) -> GatewayDemand:
        return self.seen


class FakeQueue:
    def __init__(self, depth: int | Exception) -> None:
        self._depth = depth

    async def depth(self, pool: str) -> int:
        if isinstance(self._depth, Exception):
            raise self._depth
        return self._depth


async def test_the_larger_of_this_instance_and_azure_monitor_wins() -> None:
    source = AzureDemand(
        Fixed(PoolDemand(admission_queue_depth=5, gateway_in_flight=2)),
        monitor=FakeMonitor(GatewayDemand(admission_queue_depth=1, gateway_in_flight=9)),  # type: ignore[arg-type]
        batch=FakeQueue(7),  # type: ignore[arg-type]
    )
    assert await source.of("gpu") == PoolDemand(5, 9, 7)


async def test_an_unmeasured_monitor_answer_is_not_taken_for_idle() -> None:
    source = AzureDemand(
        Fixed(PoolDemand(admission_queue_depth=3, gateway_in_flight=4)),
        monitor=FakeMonitor(GatewayDemand(0, 0, measured=False)),  # type: ignore[arg-type]
    )
    assert await source.of("gpu") == PoolDemand(3, 4, 0)


async def test_an_unreadable_batch_queue_costs_only_the_batch_signal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = AzureDemand(
        Fixed(PoolDemand(1, 1)),
        batch=FakeQueue(OSError("storage down")),  # type: ignore[arg-type]
    )
    assert await source.of("gpu") == PoolDemand(1, 1, 0)
    assert "storage down" in caplog.text


async def test_without_a_subscription_the_monitor_decides_but_cannot_act() -> None:
    runtime = build_runtime(Settings(compute="azure"), InMemoryWorkerStore())
    services = azure_fleet_services(runtime)()
    assert services.compute is None
    assert services.demand is not None  # load is still read, so decisions still explain
    await runtime.close()


async def test_with_a_subscription_the_monitor_acts_on_scale_sets() -> None:
    settings = Settings(
        compute="azure",
        azure_subscription_id="00000000-0000-0000-0000-000000000000",
        azure_resource_group="rg-spotgate",
    )
    runtime = build_runtime(settings, InMemoryWorkerStore())
    provide = azure_fleet_services(runtime)
    services = provide()
    assert isinstance(services.compute, VmssCompute)
    assert provide() is services  # built once, shared by every activity
    await services.compute.close()
    await runtime.close()

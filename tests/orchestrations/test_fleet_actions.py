"""The monitor acting on a pool through a compute provider: provision, drain, delete, fall back.

The registered orchestrator runs on the local runner with the real
activities and registry; only the cloud is a fake, an in-memory provider
whose new workers register at once (as an agent would once its engine is up).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from spotgate.adapters.local.durable_runner import (
    LocalOrchestrationRunner,
    orchestrators_from_blueprint,
)
from spotgate.clock import ManualClock, SystemClock
from spotgate.fleet.compute import CapacityError, Instance, ProvisionRequest
from spotgate.fleet.fleet_policy import FleetPolicyConfig
from spotgate.fleet.registry import WorkerRegistry
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.fleet.worker import WorkerState
from spotgate.orchestrations import blueprint
from spotgate.orchestrations.activities import activity_table
from spotgate.orchestrations.monitor_contract import initial_state, monitor_instance_id
from spotgate.orchestrations.services import SimpleFleetServices

from .conftest import Fleet

ID = monitor_instance_id("default")


@dataclass
class FakeCompute:
    """A cloud with unlimited on-demand, spot that can be refused, and instant boots."""

    registry: WorkerRegistry
    spot_refused: bool = False
    boot: bool = True
    provisioned: list[ProvisionRequest] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    live: dict[str, Instance] = field(default_factory=dict)
    counter: int = 0

    async def provision(self, request: ProvisionRequest) -> list[str]:
        if request.priority == "spot" and self.spot_refused:
            raise CapacityError("sku_not_available", "no spot", priority="spot", zone=request.zone)
        self.provisioned.append(request)
        ids = []
        for _ in range(request.count):
            self.counter += 1
            worker_id = f"vm{self.counter}"
            ids.append(worker_id)
            self.live[worker_id] = Instance(worker_id, request.pool, request.priority, request.zone)
            if self.boot:
                self.registry.register(
                    worker_id,
                    pool=request.pool,
                    model="m",
                    engine="sim",
                    url=f"http://{worker_id}",
                    priority=request.priority,
                    zone=request.zone,
                )
        return ids

    async def delete(self, pool: str, worker_ids: Sequence[str]) -> list[str]:
        self.deleted += list(worker_ids)
        for worker_id in worker_ids:
            self.live.pop(worker_id, None)
        return list(worker_ids)

    async def instances(self, pool: str) -> list[Instance]:
        return [i for i in self.live.values() if i.pool == pool]

    def ready(self, priority: str | None = None) -> list[str]:
        return [
            w.id
            for w in self.registry.in_pool("default")
            if w.state == WorkerState.READY and (priority is None or w.priority == priority)
        ]


@dataclass
class Acting(Fleet):
    compute: FakeCompute
    in_flight: dict[str, int]

    async def start(self, policy: FleetPolicyConfig, tick_seconds: float = 0.05) -> None:
        state = initial_state("default", tick_seconds=tick_seconds, policy=policy)
        await self.runner.start("fleet_monitor", ID, state)

    async def until(self, predicate: Any, within: float = 3.0) -> dict[str, Any]:
        return await self.wait_for(
            ID, lambda s: bool(s.get("customStatus")) and predicate(s), within=within
        )


@pytest.fixture
async def acting() -> AsyncIterator[Acting]:
    clock = ManualClock()
    registry = WorkerRegistry(InMemoryWorkerStore(), clock)
    compute = FakeCompute(registry)
    in_flight: dict[str, int] = {}
    services = SimpleFleetServices(
        registry,
        clock,
        heartbeat_timeout_s=1e9,
        compute=compute,
        in_flight=lambda worker_id: in_flight.get(worker_id, 0),
    )
    runner = LocalOrchestrationRunner(
        orchestrators_from_blueprint(blueprint.bp), activity_table(services), SystemClock()
    )
    yield Acting(clock, registry, services, runner, compute, in_flight)
    await runner.stop()


def autoscaled(**autoscaling: Any) -> FleetPolicyConfig:
    base = {"min_workers": 0, "max_workers": 4, "scale_down_stabilisation_s": 0}
    return FleetPolicyConfig.from_dict({"autoscaling": base | autoscaling})


async def test_an_empty_pool_is_filled_with_spot_spread_over_zones(acting: Acting) -> None:
    await acting.start(FleetPolicyConfig().fixed_size(3))
    status = await acting.until(lambda s: s["customStatus"]["ready"] == 3)

    zones = sorted(w.zone or "" for w in acting.registry.in_pool("default"))
    assert zones == ["1", "2", "3"]
    assert acting.compute.ready("spot") == acting.compute.ready()
    assert status["customStatus"]["desired"] == status["customStatus"]["actual"] == 3
    assert sum(r.count for r in acting.compute.provisioned) == 3  # no double provisioning


async def test_an_eviction_is_replaced_in_the_next_tick_elsewhere_and_left_to_the_platform(
    acting: Acting,
) -> None:
    await acting.start(FleetPolicyConfig().fixed_size(2), tick_seconds=60.0)
    await acting.until(lambda s: len(acting.compute.ready()) == 2)
    victim = acting.registry.get("vm1")
    assert victim is not None

    acting.registry.drain(
        "vm1", "scheduled event Preempt", event_id="e1", not_before=acting.clock.now() + 30
    )
    acting.services.journal.record_eviction("default", "vm1", victim.zone, acting.clock.now())
    await acting.runner.raise_event(ID, "wake")  # the tick timer is a minute away
    status = await acting.until(lambda s: len(acting.compute.ready()) == 2)

    replacement = acting.registry.get("vm3")
    assert replacement is not None and replacement.zone != victim.zone
    assert "eviction notice vm1" in str(acting.services.journal.recent(5))
    assert status["customStatus"]["draining"] == 1
    assert acting.compute.deleted == []  # the platform removes an evicted VM, not the monitor


async def test_scale_in_drains_first_and_deletes_only_once_nothing_is_in_flight(
    acting: Acting,
) -> None:
    await acting.start(autoscaled(min_workers=3))
    await acting.until(lambda s: s["customStatus"]["ready"] == 3)
    acting.in_flight.update({"vm1": 2, "vm2": 1, "vm3": 1})
    await acting.runner.terminate(ID, "reconfigure")

    await acting.start(autoscaled(min_workers=1))
    status = await acting.until(lambda s: s["customStatus"]["draining"] == 2)
    draining = {w.id for w in acting.registry.in_pool("default") if w.state.value == "draining"}
    assert "vm1" not in draining  # the busiest worker stays
    assert acting.compute.deleted == []  # busy draining workers are never deleted
    assert status["customStatus"]["ready"] == 1

    first = sorted(draining)[0]
    acting.in_flight[first] = 0
    await acting.until(lambda s: first in acting.compute.deleted)
    assert acting.compute.deleted == [first]
    gone = acting.registry.get(first)
    assert gone is not None and gone.state == WorkerState.GONE


async def test_refused_spot_falls_back_to_on_demand_and_returns_when_spot_is_back(
    acting: Acting,
) -> None:
    policy = FleetPolicyConfig.from_dict(
        FleetPolicyConfig().fixed_size(2).to_dict()
        | {"mix": {"spot_healthy_cooldown_s": 60, "spot_failure_window_s": 60}}
    )
    acting.compute.spot_refused = True
    await acting.start(policy)
    await acting.until(lambda s: len(acting.compute.ready("on-demand")) == 2)
    failures = acting.services.journal.capacity_failures("default", 0)
    assert failures and failures[0].reason == "sku_not_available"

    acting.compute.spot_refused = False
    acting.clock.advance(61)  # spot trouble-free for the cool-down
    await acting.until(lambda s: len(acting.compute.ready("spot")) == 2)
    await acting.until(
        lambda s: not acting.compute.ready("on-demand") and len(acting.compute.deleted) == 2
    )
    assert all(w.startswith("vm") for w in acting.compute.deleted)
    assert len(acting.compute.ready()) == 2

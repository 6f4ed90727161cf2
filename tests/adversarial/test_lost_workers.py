"""A worker whose agent went quiet must not keep its VM running (and billing) forever.

It is deleted once its replacement is requested, or after a grace period if
none is needed; if it comes back before that it serves again, and after that
it is refused (retired), never its replacement. Pure tests drive the same
observe -> plan -> act steps the fleet monitor runs; one runs them against
the Azure compute provider over recorded ARM answers.
"""

from __future__ import annotations

from typing import Any

import pytest

from spotgate.adapters.azure.vmss_compute import VmssCompute
from spotgate.clock import ManualClock
from spotgate.fleet.autoscaler import AutoscalerConfig
from spotgate.fleet.capacity_mix import CapacityMixConfig
from spotgate.fleet.compute import Instance
from spotgate.fleet.fleet_policy import FleetPolicyConfig
from spotgate.fleet.observation import PoolObservation, observe_pool
from spotgate.fleet.planner import PolicyState, plan_tick
from spotgate.fleet.registration import check_worker_url, parse_networks
from spotgate.fleet.registry import WorkerRegistry, WorkerRetired
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.fleet.worker import WorkerState
from spotgate.orchestrations import activities
from spotgate.orchestrations.services import SimpleFleetServices
from tests.adapters.azure.arm_transport import (
    RESOURCE_GROUP,
    SUBSCRIPTION,
    ArmTransport,
    FakeCredential,
    Reply,
)
from tests.adapters.azure.test_vmss_compute import (
    ON_DEMAND_Z2,
    SPOT_Z1,
    SPOT_Z2,
    delete_of,
    delete_ok,
    nic,
    nics,
    nics_of,
    uniform_vm_id,
    vm,
    vms,
    vms_of,
)

pytestmark = pytest.mark.adversarial

POOL = "chat"
TIMEOUT_S = 6.0
LOOPBACK = parse_networks(["127.0.0.0/8"])


def policy(size: int, grace_s: float = 60.0) -> FleetPolicyConfig:
    return FleetPolicyConfig(
        autoscaling=AutoscalerConfig(min_workers=size, max_workers=size),
        mix=CapacityMixConfig(zones=("2",)),
        lost_worker_grace_s=grace_s,
    )


def fleet(*names: str) -> tuple[WorkerRegistry, ManualClock, list[Instance]]:
    clock = ManualClock()
    registry = WorkerRegistry(InMemoryWorkerStore(), clock)
    instances = []
    for port, name in enumerate(names, start=9100):
        registry.expect(name, pool=POOL, model="", engine="", address=f"127.0.0.1:{port}")
        address = check_worker_url(f"http://127.0.0.1:{port}", LOOPBACK)
        registry.enroll(name, address, None, pool=POOL, model="m", engine="vllm", zone="2")
        instances.append(Instance(name, POOL, "spot", "2", private_ip="127.0.0.1", port=port))
    return registry, clock, instances


def observe(
    registry: WorkerRegistry, clock: ManualClock, instances: list[Instance]
) -> PoolObservation:
    return observe_pool(
        registry, POOL, heartbeat_timeout_s=TIMEOUT_S, now=clock.now(), instances=instances
    )


def silence(registry: WorkerRegistry, clock: ManualClock, quiet: str, others: list[str]) -> None:
    """`quiet`'s agent stops; the others keep beating through the timeout."""
    for _ in range(4):
        clock.advance(TIMEOUT_S / 3)
        for name in others:
            registry.heartbeat(name)


def deleted(observation: PoolObservation, config: FleetPolicyConfig) -> dict[str, str]:
    decision = plan_tick(observation, config, PolicyState({}, {}), None, 1).decision
    return {d.worker_id: d.why for d in decision.delete}


def test_a_lost_worker_is_deleted_in_the_tick_that_requests_its_replacement() -> None:
    registry, clock, instances = fleet("w1", "w2")
    silence(registry, clock, "w2", ["w1"])
    observation = observe(registry, clock, instances)
    assert observation.lost == (("w2", registry.get("w2").state_changed_at),)  # type: ignore[union-attr]
    decision = plan_tick(observation, policy(2), PolicyState({}, {}), None, 1).decision
    assert [p.count for p in decision.provision] == [1]
    assert [d.worker_id for d in decision.delete] == ["w2"]
    assert "delete_lost" in decision.codes


def test_a_lost_worker_nobody_replaces_goes_after_its_grace_period() -> None:
    registry, clock, instances = fleet("w1", "w2")
    silence(registry, clock, "w2", ["w1"])
    assert deleted(observe(registry, clock, instances), policy(1, grace_s=60)) == {}
    clock.advance(61)
    registry.heartbeat("w1")
    assert "w2" in deleted(observe(registry, clock, instances), policy(1, grace_s=60))


def test_a_lost_worker_that_is_back_in_time_serves_again() -> None:
    registry, clock, instances = fleet("w1")
    silence(registry, clock, "w1", [])
    assert [w for w, _ in observe(registry, clock, instances).lost] == ["w1"]
    address = check_worker_url("http://127.0.0.1:9100", LOOPBACK)
    registry.enroll("w1", address, None, pool=POOL, model="m", engine="vllm")
    assert [w.id for w in registry.ready_for_model("m")] == ["w1"]
    assert observe(registry, clock, instances).lost == ()


async def test_a_lost_worker_back_after_its_replacement_is_retired_not_the_replacement() -> None:
    registry, clock, instances = fleet("w1", "w2")
    silence(registry, clock, "w2", ["w1"])
    services = SimpleFleetServices(registry=registry, clock=clock, heartbeat_timeout_s=TIMEOUT_S)
    decision = plan_tick(
        observe(registry, clock, instances), policy(2), PolicyState({}, {}), None, 1
    )
    workers = [d.to_dict() for d in decision.decision.delete]
    await activities.delete_workers(services, {"pool": POOL, "workers": workers})
    address = check_worker_url("http://127.0.0.1:9101", LOOPBACK)
    with pytest.raises(WorkerRetired):
        registry.enroll("w2", address, None, pool=POOL, model="m", engine="vllm")
    assert registry.get("w1").state == WorkerState.READY  # type: ignore[union-attr]


# --- the same steps against the Azure compute provider, over recorded ARM answers ---


@pytest.fixture
def arm() -> ArmTransport:
    transport = ArmTransport()
    transport.on("GET", r"/virtualMachineScaleSets\?", Reply.of("vmss_list"), repeat_last=True)
    for name, listing in (
        (SPOT_Z2, vms(vm(SPOT_Z2, 0), vm(SPOT_Z2, 3))),
        (SPOT_Z1, vms()),
        (ON_DEMAND_Z2, vms()),
    ):
        transport.on("GET", vms_of(name), listing, repeat_last=True)
    addresses = nics(
        nic(uniform_vm_id(SPOT_Z2, 0), "10.60.16.4"), nic(uniform_vm_id(SPOT_Z2, 3), "10.60.16.5")
    )
    transport.on("GET", nics_of(SPOT_Z2), addresses, repeat_last=True)
    return transport


async def test_a_lost_vm_of_a_scale_set_is_deleted_by_name(arm: ArmTransport) -> None:
    compute = VmssCompute(
        FakeCredential(),
        SUBSCRIPTION,
        RESOURCE_GROUP,
        transport=arm,
        retry_total=0,
        polling_interval=0,
    )
    clock = ManualClock()
    registry = WorkerRegistry(InMemoryWorkerStore(), clock)
    services = SimpleFleetServices(
        registry=registry, clock=clock, heartbeat_timeout_s=TIMEOUT_S, compute=compute
    )
    try:
        observed: dict[str, Any] = await activities.observe_pool(services, {"pool": POOL})
        adopted = PoolObservation.from_dict(observed).adopted
        assert set(adopted) == {"sg-chat-spot-z2_0", "sg-chat-spot-z2_3"}
        networks = parse_networks(["10.60.16.0/24"])
        for name, ip in (("sg-chat-spot-z2_0", "10.60.16.4"), ("sg-chat-spot-z2_3", "10.60.16.5")):
            address = check_worker_url(f"http://{ip}:8000", networks)
            registry.enroll(name, address, None, pool=POOL, model="m", engine="vllm", zone="2")
        silence(registry, clock, "sg-chat-spot-z2_3", ["sg-chat-spot-z2_0"])
        observation = PoolObservation.from_dict(
            await activities.observe_pool(services, {"pool": POOL})
        )
        assert [w for w, _ in observation.lost] == ["sg-chat-spot-z2_3"]
        clock.advance(61)
        registry.heartbeat("sg-chat-spot-z2_0")
        observation = PoolObservation.from_dict(
            await activities.observe_pool(services, {"pool": POOL})
        )
        decision = plan_tick(observation, policy(1), PolicyState({}, {}), None, 1).decision
        delete_ok(arm, SPOT_Z2)
        workers = [d.to_dict() for d in decision.delete]
        gone = await activities.delete_workers(services, {"pool": POOL, "workers": workers})
    finally:
        await compute.close()
    assert gone == ["sg-chat-spot-z2_3"]
    [request] = arm.requests("POST")
    assert request.path.endswith(delete_of(SPOT_Z2).replace("\\", "").rstrip("?"))
    assert request.body == {"instanceIds": ["3"]}
    assert registry.get("sg-chat-spot-z2_3").retired  # type: ignore[union-attr]

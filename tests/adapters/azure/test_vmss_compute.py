"""VmssCompute against recorded ARM exchanges: what it asks ARM, what the fleet monitor gets back.

The management SDK runs unmodified over `ArmTransport`, so retries,
Retry-After and long-running-operation polling are azure-core's own.
"""

from __future__ import annotations

import copy
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError

from spotgate.adapters.azure.arm_retry import ArmTransientError
from spotgate.adapters.azure.vmss_compute import ScaleSetNotFound, VmssCompute
from spotgate.fleet.compute import CapacityError, Instance, ProvisionRequest
from tests.adapters.azure.arm_transport import (
    RESOURCE_GROUP,
    SUBSCRIPTION,
    ArmTransport,
    FakeCredential,
    Reply,
    recorded,
)

SPOT_Z2 = "sg-chat-spot-z2"
SPOT_Z1 = "sg-chat-spot-z1"
ON_DEMAND_Z2 = "sg-chat-od-z2"
UPDATE_OP = r"/operations/b4a2f6e1-7c3d-4e8f-a1b2-c3d4e5f6a7b8\?"
DELETE_OP = r"/operations/e7d1c2b3-a4f5-4e6d-8c7b-9a0f1e2d3c4b\?"


def scale_set(name: str) -> str:
    return rf"/virtualMachineScaleSets/{re.escape(name)}\?"


def vms_of(name: str) -> str:
    return rf"/virtualMachineScaleSets/{re.escape(name)}/virtualMachines\?"


def delete_of(name: str) -> str:
    return rf"/virtualMachineScaleSets/{re.escape(name)}/delete\?"


def vm(name: str, instance_id: int, state: str = "Succeeded", zone: str = "2") -> dict[str, Any]:
    """The recorded VM, renamed: a Uniform scale set's VM is `{scale set}_{instance id}`."""
    body: dict[str, Any] = copy.deepcopy(recorded("vmss_vms_list")["body"]["value"][0])
    body["name"] = f"{name}_{instance_id}"
    body["id"] = re.sub(r"/virtualMachineScaleSets/.*", "", body["id"]) + (
        f"/virtualMachineScaleSets/{name}/virtualMachines/{instance_id}"
    )
    body["instanceId"] = str(instance_id)
    body["zones"] = [zone]
    body["properties"]["provisioningState"] = state
    return body


def vms(*entries: dict[str, Any], recording: str = "vmss_vms_list") -> Reply:
    reply = Reply.of(recording)
    reply.body = {"value": list(entries)}
    return reply


def vmss(name: str, listing: str = "vmss_list", get: str = "vmss_get") -> Reply:
    """GET of one scale set, as the listing has it."""
    listed = recorded(listing)["body"]["value"]
    reply = Reply.of(get)
    reply.body = next(s for s in listed if s["name"] == name)
    return reply


def error(name: str, status: int | None = None) -> Reply:
    reply = Reply.of(name)
    if status is not None:
        reply.status = status
    return reply


# Network interfaces: where the private IPs are. A Uniform scale set's NICs are listed
# through the scale set; a Flexible VM's NIC is the resource group's own.
GROUP_NICS = r"/resourceGroups/[^/]+/providers/Microsoft\.Network/networkInterfaces\?"


def nics_of(name: str) -> str:
    """Network Interfaces - List Virtual Machine Scale Set Network Interfaces."""
    return rf"/virtualMachineScaleSets/{re.escape(name)}/networkInterfaces\?"


def uniform_vm_id(scale_set: str, instance_id: int) -> str:
    return f"{VMSS_ID}{scale_set}/virtualMachines/{instance_id}"


def flexible_vm_id(name: str) -> str:
    return (
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}"
        f"/providers/Microsoft.Compute/virtualMachines/{name}"
    )


def nic(vm_id: str, *ips: str, primary: bool = True, name: str = "workers-nic") -> dict[str, Any]:
    """A recorded NIC attached to `vm_id`, one ipConfiguration per IP, the first one primary."""
    uniform = "/virtualMachineScaleSets/" in vm_id
    recording = "vmss_network_interfaces_list" if uniform else "nic_list_resource_group"
    body: dict[str, Any] = copy.deepcopy(recorded(recording)["body"]["value"][0])
    if uniform:
        body["name"] = name
        body["id"] = f"{vm_id}/networkInterfaces/{name}"
    else:
        body["name"] = f"{vm_id.rsplit('/', 1)[1]}-{name}"
        body["id"] = body["id"].rsplit("/", 1)[0] + f"/{body['name']}"
    props = body["properties"]
    props["primary"] = primary
    props["virtualMachine"] = {"id": vm_id}
    template = props["ipConfigurations"][0]
    props["ipConfigurations"] = []
    for i, ip in enumerate(ips, start=1):
        config = copy.deepcopy(template)
        config["name"] = f"ipconfig{i}"
        config["id"] = f"{body['id']}/ipConfigurations/ipconfig{i}"
        config["properties"]["privateIPAddress"] = ip
        config["properties"]["primary"] = i == 1
        props["ipConfigurations"].append(config)
    return body


def nics(*entries: dict[str, Any], recording: str = "vmss_network_interfaces_list") -> Reply:
    reply = Reply.of(recording)
    reply.body = {"value": list(entries)}
    return reply


@pytest.fixture
def arm() -> ArmTransport:
    transport = ArmTransport()
    transport.on("GET", r"/virtualMachineScaleSets\?", Reply.of("vmss_list"), repeat_last=True)
    return transport


@pytest.fixture
async def compute(arm: ArmTransport) -> AsyncIterator[VmssCompute]:
    provider = VmssCompute(
        FakeCredential(),
        SUBSCRIPTION,
        RESOURCE_GROUP,
        transport=arm,
        retry_total=3,
        retry_backoff_factor=0.01,
        retry_backoff_max=0.05,
        polling_interval=0,
    )
    yield provider
    await provider.close()


def scale_out(arm: ArmTransport, *patch_replies: Reply, before: Reply, after: Reply) -> None:
    """ARM's side of growing sg-chat-spot-z2 from 2: get, list, PATCH, poll, final get, list."""
    arm.on("GET", scale_set(SPOT_Z2), Reply.of("vmss_get"), repeat_last=True)
    arm.on("GET", vms_of(SPOT_Z2), before, after)
    arm.on("PATCH", scale_set(SPOT_Z2), *patch_replies)


def delete_ok(arm: ArmTransport, name: str) -> None:
    arm.on("POST", delete_of(name), Reply.of("delete_instances_accepted"))
    arm.on("GET", DELETE_OP + r".*monitor=true", Reply.of("delete_operation_monitor"))
    arm.on("GET", DELETE_OP, Reply.of("delete_operation_succeeded"))


SPOT_IN_ZONE_2 = ProvisionRequest(pool="chat", priority="spot", zone="2", count=2)
BEFORE = vms(vm(SPOT_Z2, 0), vm(SPOT_Z2, 3))


# --- provision ---


async def test_provision_grows_the_tagged_zone_scale_set_by_count(
    arm: ArmTransport, compute: VmssCompute
) -> None:
    scale_out(
        arm,
        Reply.of("vmss_update_accepted"),
        before=BEFORE,
        after=vms(vm(SPOT_Z2, 0), vm(SPOT_Z2, 3), vm(SPOT_Z2, 4), vm(SPOT_Z2, 5)),
    )
    arm.on(
        "GET",
        UPDATE_OP,
        Reply.of("async_operation_in_progress"),
        Reply.of("async_operation_succeeded"),
    )

    started = await compute.provision(SPOT_IN_ZONE_2)

    assert started == ["sg-chat-spot-z2_4", "sg-chat-spot-z2_5"]
    [patch] = arm.requests("PATCH")
    assert patch.path.endswith(f"/virtualMachineScaleSets/{SPOT_Z2}")
    assert patch.body == {
        "sku": {"name": "Standard_NC4as_T4_v3", "tier": "Standard", "capacity": 4}
    }
    assert len(arm.requests("GET", "/operations/")) == 2  # polled until Succeeded


async def test_provision_without_zone_grows_the_least_loaded_scale_set_of_the_priority(
    arm: ArmTransport, compute: VmssCompute
) -> None:
    # spot in zone 1 has capacity 1, spot in zone 2 has 2
    arm.on("GET", scale_set(SPOT_Z1), vmss(SPOT_Z1), repeat_last=True)
    arm.on("GET", vms_of(SPOT_Z1), vms(vm(SPOT_Z1, 1, zone="1")))
    arm.on("GET", vms_of(SPOT_Z1), vms(vm(SPOT_Z1, 1, zone="1"), vm(SPOT_Z1, 2, zone="1")))
    arm.on("PATCH", scale_set(SPOT_Z1), Reply.of("vmss_update_accepted"))
    arm.on("GET", UPDATE_OP, Reply.of("async_operation_succeeded"))

    started = await compute.provision(ProvisionRequest("chat", "spot", None, 1))

    assert started == ["sg-chat-spot-z1_2"]
    [patch] = arm.requests("PATCH")
    assert patch.path.endswith(SPOT_Z1)
    assert patch.body["sku"]["capacity"] == 2


@pytest.mark.parametrize(
    ("recording", "reason", "code"),
    [
        ("error_sku_not_available", "sku_not_available", "SkuNotAvailable"),
        ("error_quota_exceeded", "quota", "OperationNotAllowed"),
    ],
)
@pytest.mark.parametrize("status", [400, 409])
async def test_a_refused_scale_out_is_a_capacity_error_and_changes_nothing(
    arm: ArmTransport, compute: VmssCompute, recording: str, reason: str, code: str, status: int
) -> None:
    scale_out(arm, error(recording, status), before=BEFORE, after=BEFORE)

    with pytest.raises(CapacityError) as refused:
        await compute.provision(SPOT_IN_ZONE_2)

    assert (refused.value.reason, refused.value.code) == (reason, code)
    assert (refused.value.priority, refused.value.zone) == ("spot", "2")
    assert refused.value.provisioned == []
    assert len(arm.requests("PATCH")) == 1  # a refusal is not retried
    assert arm.requests("POST") == []
    assert len(arm.requests("GET", "/virtualMachines")) == 1  # no VM to look for afterwards


async def test_operation_not_allowed_without_quota_is_not_a_capacity_signal(
    arm: ArmTransport, compute: VmssCompute
) -> None:
    scale_out(arm, Reply.of("error_operation_not_allowed"), before=BEFORE, after=BEFORE)

    with pytest.raises(HttpResponseError) as failed:
        await compute.provision(SPOT_IN_ZONE_2)

    assert not isinstance(failed.value, CapacityError | ArmTransientError)
    assert "marked for deletion" in str(failed.value)


@pytest.mark.parametrize(
    ("recording", "reason"),
    [
        ("async_operation_failed_zonal_allocation", "allocation_failed"),
        ("async_operation_failed_overconstrained", "overconstrained"),
    ],
)
async def test_a_failed_scale_out_deletes_the_failed_vms_and_reports_the_started_ones(
    arm: ArmTransport, compute: VmssCompute, recording: str, reason: str
) -> None:
    scale_out(
        arm,
        Reply.of("vmss_update_accepted"),
        before=BEFORE,
        after=vms(vm(SPOT_Z2, 0), vm(SPOT_Z2, 3), vm(SPOT_Z2, 4), vm(SPOT_Z2, 5, state="Failed")),
    )
    arm.on("GET", UPDATE_OP, Reply.of("async_operation_in_progress"), Reply.of(recording))
    delete_ok(arm, SPOT_Z2)

    with pytest.raises(CapacityError) as refused:
        await compute.provision(SPOT_IN_ZONE_2)

    assert refused.value.reason == reason
    assert (refused.value.priority, refused.value.zone) == ("spot", "2")
    assert refused.value.provisioned == ["sg-chat-spot-z2_4"]
    [delete] = arm.requests("POST")
    assert delete.path.endswith(f"{SPOT_Z2}/delete")
    assert delete.body == {"instanceIds": ["5"]}


async def test_a_throttled_scale_out_waits_retry_after_and_succeeds(
    arm: ArmTransport, compute: VmssCompute
) -> None:
    scale_out(
        arm,
        Reply.of("error_throttled"),
        Reply.of("vmss_update_accepted"),
        before=BEFORE,
        after=vms(vm(SPOT_Z2, 0), vm(SPOT_Z2, 3), vm(SPOT_Z2, 4), vm(SPOT_Z2, 5)),
    )
    arm.on("GET", UPDATE_OP, Reply.of("async_operation_succeeded"))

    started_at = time.monotonic()
    started = await compute.provision(SPOT_IN_ZONE_2)

    assert started == ["sg-chat-spot-z2_4", "sg-chat-spot-z2_5"]
    assert len(arm.requests("PATCH")) == 2
    assert time.monotonic() - started_at >= 0.9  # Retry-After: 1 honoured


async def test_an_unavailable_arm_is_retried(arm: ArmTransport, compute: VmssCompute) -> None:
    scale_out(
        arm,
        Reply.of("error_service_unavailable"),
        Reply.of("vmss_update_accepted"),
        before=BEFORE,
        after=vms(vm(SPOT_Z2, 0), vm(SPOT_Z2, 3), vm(SPOT_Z2, 4), vm(SPOT_Z2, 5)),
    )
    arm.on("GET", UPDATE_OP, Reply.of("async_operation_succeeded"))

    assert await compute.provision(SPOT_IN_ZONE_2) == ["sg-chat-spot-z2_4", "sg-chat-spot-z2_5"]
    assert len(arm.requests("PATCH")) == 2


async def test_an_arm_that_stays_unavailable_is_reported_once_retries_are_spent(
    arm: ArmTransport, compute: VmssCompute
) -> None:
    unavailable = [Reply.of("error_service_unavailable") for _ in range(10)]
    scale_out(arm, *unavailable, before=BEFORE, after=BEFORE)

    with pytest.raises(ArmTransientError) as busy:
        await compute.provision(SPOT_IN_ZONE_2)

    assert busy.value.status == 503
    assert len(arm.requests("PATCH")) == 4  # the first try and retry_total=3, then it stops


async def test_a_subscription_that_stays_throttled_is_reported_not_taken_for_quota(
    arm: ArmTransport, compute: VmssCompute
) -> None:
    # the compute RP's 429 says OperationNotAllowed too, but it is about request rate
    throttled = [Reply.of("error_throttled", **{"Retry-After": "0"}) for _ in range(10)]
    scale_out(arm, *throttled, before=BEFORE, after=BEFORE)

    with pytest.raises(ArmTransientError) as busy:
        await compute.provision(SPOT_IN_ZONE_2)

    assert (busy.value.status, busy.value.code) == (429, "OperationNotAllowed")
    assert len(arm.requests("PATCH")) == 4


async def test_a_scale_set_deleted_since_it_was_listed_is_a_configuration_error(
    arm: ArmTransport, compute: VmssCompute
) -> None:
    arm.on("GET", scale_set(SPOT_Z2), Reply.of("error_not_found"))

    with pytest.raises(ScaleSetNotFound, match=SPOT_Z2):
        await compute.provision(SPOT_IN_ZONE_2)

    assert arm.requests("PATCH") == []


async def test_an_unknown_pool_priority_or_zone_is_a_configuration_error(
    arm: ArmTransport, compute: VmssCompute
) -> None:
    with pytest.raises(ScaleSetNotFound) as missing:
        await compute.provision(ProvisionRequest("chat", "on-demand", "3", 1))

    message = str(missing.value)
    assert "spotgate-pool=chat" in message
    assert "on-demand" in message
    assert "zone 3" in message
    assert "sg-chat-od-z2 (on-demand, zone 2)" in message  # what the pool does have
    assert len(arm.requests("GET", r"/virtualMachineScaleSets$")) == 2  # refreshed on the miss
    assert arm.requests("PATCH") == []


# --- delete ---


async def test_delete_calls_delete_instances_once_per_scale_set_with_exactly_those_ids(
    arm: ArmTransport, compute: VmssCompute
) -> None:
    delete_ok(arm, SPOT_Z2)
    arm.on("POST", delete_of(SPOT_Z1), Reply.of("delete_instances_accepted"))
    arm.on("GET", DELETE_OP + r".*monitor=true", Reply.of("delete_operation_monitor"))
    arm.on("GET", DELETE_OP, Reply.of("delete_operation_succeeded"))
    drained = ["sg-chat-spot-z2_0", "sg-chat-spot-z1_7", "sg-chat-spot-z2_3"]

    deleted = await compute.delete("chat", drained)

    assert deleted == drained
    sent = {d.path.rsplit("/", 2)[-2]: d.body for d in arm.requests("POST")}
    assert sent == {SPOT_Z2: {"instanceIds": ["0", "3"]}, SPOT_Z1: {"instanceIds": ["7"]}}
    assert arm.requests("PATCH") == [] and arm.requests("PUT") == []


async def test_delete_counts_a_gone_scale_set_or_instance_as_deleted(
    arm: ArmTransport, compute: VmssCompute
) -> None:
    arm.on("POST", delete_of(SPOT_Z1), Reply.of("error_not_found"))
    # sg-chat-spot-z2_9 is gone already: ARM refuses the whole call, the live id is retried alone
    arm.on("POST", delete_of(SPOT_Z2), Reply.of("error_delete_not_active_instance"))
    arm.on("GET", vms_of(SPOT_Z2), vms(vm(SPOT_Z2, 3)))
    delete_ok(arm, SPOT_Z2)
    asked = ["sg-chat-spot-z1_1", "sg-chat-spot-z2_3", "sg-chat-spot-z2_9", "sg-retired_4"]

    deleted = await compute.delete("chat", asked)

    assert deleted == asked
    bodies = [d.body for d in arm.requests("POST", SPOT_Z2)]
    assert bodies == [{"instanceIds": ["3", "9"]}, {"instanceIds": ["3"]}]
    assert arm.requests("POST", "sg-retired") == []  # not in the resource group at all
    assert arm.requests("PATCH") == []


async def test_delete_refuses_workers_of_another_pool_before_deleting_anything(
    arm: ArmTransport, compute: VmssCompute
) -> None:
    with pytest.raises(ValueError, match="sg-embed-spot-z2"):
        await compute.delete("chat", ["sg-chat-spot-z2_0", "sg-embed-spot-z2_0"])
    with pytest.raises(ValueError, match="not a scale set VM name"):
        await compute.delete("chat", ["worker-without-instance"])

    assert arm.requests("POST") == []


# --- instances ---


async def test_instances_lists_every_vm_of_the_pool_with_its_state(
    arm: ArmTransport, compute: VmssCompute
) -> None:
    arm.on("GET", vms_of(SPOT_Z2), vms(vm(SPOT_Z2, 0), vm(SPOT_Z2, 3, "Creating")))
    arm.on("GET", vms_of(SPOT_Z1), vms(vm(SPOT_Z1, 1, "Deleting", zone="1")))
    arm.on(
        "GET",
        vms_of(ON_DEMAND_Z2),
        vms(vm(ON_DEMAND_Z2, 0, "Failed"), vm(ON_DEMAND_Z2, 2, "Updating")),
    )
    arm.on("GET", nics_of(SPOT_Z2), Reply.of("vmss_network_interfaces_list"))
    arm.on("GET", nics_of(SPOT_Z1), nics(nic(uniform_vm_id(SPOT_Z1, 1), "10.60.16.12")))
    arm.on("GET", nics_of(ON_DEMAND_Z2), nics(nic(uniform_vm_id(ON_DEMAND_Z2, 0), "10.60.16.13")))

    found = await compute.instances("chat")

    assert sorted(found, key=lambda i: i.worker_id) == [
        Instance("sg-chat-od-z2_0", "chat", "on-demand", "2", "failed", "10.60.16.13"),
        Instance("sg-chat-od-z2_2", "chat", "on-demand", "2", "creating"),
        Instance("sg-chat-spot-z1_1", "chat", "spot", "1", "deleting", "10.60.16.12"),
        Instance("sg-chat-spot-z2_0", "chat", "spot", "2", "running", "10.60.16.4"),
        Instance("sg-chat-spot-z2_3", "chat", "spot", "2", "creating", "10.60.16.5"),
    ]
    listed = {r.path.rsplit("/", 2)[-2] for r in arm.requests("GET", "/virtualMachines$")}
    assert listed == {SPOT_Z2, SPOT_Z1, ON_DEMAND_Z2}  # not embed's, not the untagged one


async def test_the_scale_set_listing_is_reused_while_fresh(
    arm: ArmTransport, compute: VmssCompute
) -> None:
    arm.on("GET", r"/virtualMachines\?", vms(), repeat_last=True)

    await compute.instances("chat")
    await compute.instances("chat")

    assert len(arm.requests("GET", r"/virtualMachineScaleSets$")) == 1


# --- Flexible orchestration ---
#
# A Flexible scale set's VMs are ordinary virtual machines named `{scale set}_{8 hex}`:
# listed from the resource group by `$filter` on their scale set, deleted through the
# same deleteInstances with their names as instance ids, grown by the same PATCH.

FLEX_SPOT_Z3 = "sg-chat-spot-z3"
FLEX_OD_Z3 = "sg-chat-od-z3"
FLEX_A = "sg-chat-spot-z3_1f0c9a2e"
FLEX_B = "sg-chat-spot-z3_7b3d50c4"
SPOT_IN_ZONE_3 = ProvisionRequest(pool="chat", priority="spot", zone="3", count=2)
VMSS_ID = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}"
    "/providers/Microsoft.Compute/virtualMachineScaleSets/"
)


def flex_vms_of(name: str) -> str:
    """Virtual Machines - List of the resource group, filtered to one scale set."""
    return (
        r"/providers/Microsoft\.Compute/virtualMachines\?.*\$filter="
        rf"'virtualMachineScaleSet/id' eq '[^']*/virtualMachineScaleSets/{re.escape(name)}'"
    )


def flex_vm(
    name: str, state: str = "Succeeded", zone: str = "3", scale_set: str | None = None
) -> dict[str, Any]:
    """The recorded Flexible VM, renamed; it points back to `scale_set` (by default its prefix)."""
    body: dict[str, Any] = copy.deepcopy(recorded("vm_list_flexible")["body"]["value"][0])
    body["id"] = body["id"].rsplit("/", 1)[0] + f"/{name}"
    body["name"] = name
    body["zones"] = [zone]
    props = body["properties"]
    props["provisioningState"] = state
    owner = scale_set or name.rpartition("_")[0]
    vmss_ref = props["virtualMachineScaleSet"]
    vmss_ref["id"] = vmss_ref["id"].rsplit("/", 1)[0] + f"/{owner}"
    return body


def flex_vms(*entries: dict[str, Any]) -> Reply:
    return vms(*entries, recording="vm_list_flexible")


def flex_vmss(name: str) -> Reply:
    return vmss(name, listing="vmss_flexible_list", get="vmss_flexible_get")


def listing(*recordings: str) -> Reply:
    """One VMSS list answer holding the scale sets of several recorded listings."""
    reply = Reply.of(recordings[0])
    reply.body = {"value": [s for r in recordings for s in recorded(r)["body"]["value"]]}
    return reply


@pytest.fixture
def flex_arm() -> ArmTransport:
    """A resource group laid out as the bicep does it: Flexible scale sets only."""
    transport = ArmTransport()
    transport.on(
        "GET", r"/virtualMachineScaleSets\?", Reply.of("vmss_flexible_list"), repeat_last=True
    )
    return transport


@pytest.fixture
def mixed_arm() -> ArmTransport:
    """Uniform and Flexible scale sets in one pool."""
    transport = ArmTransport()
    transport.on(
        "GET",
        r"/virtualMachineScaleSets\?",
        listing("vmss_list", "vmss_flexible_list"),
        repeat_last=True,
    )
    return transport


def provider(transport: ArmTransport) -> VmssCompute:
    return VmssCompute(
        FakeCredential(),
        SUBSCRIPTION,
        RESOURCE_GROUP,
        transport=transport,
        retry_total=3,
        retry_backoff_factor=0.01,
        retry_backoff_max=0.05,
        polling_interval=0,
    )


@pytest.fixture
async def flex_compute(flex_arm: ArmTransport) -> AsyncIterator[VmssCompute]:
    compute = provider(flex_arm)
    yield compute
    await compute.close()


@pytest.fixture
async def mixed_compute(mixed_arm: ArmTransport) -> AsyncIterator[VmssCompute]:
    compute = provider(mixed_arm)
    yield compute
    await compute.close()


def flex_scale_out(arm: ArmTransport, *patch_replies: Reply, before: Reply, after: Reply) -> None:
    """ARM's side of growing the Flexible sg-chat-spot-z3 from 2."""
    arm.on("GET", scale_set(FLEX_SPOT_Z3), Reply.of("vmss_flexible_get"), repeat_last=True)
    arm.on("GET", flex_vms_of(FLEX_SPOT_Z3), before, after)
    arm.on("PATCH", scale_set(FLEX_SPOT_Z3), *patch_replies)


FLEX_BEFORE = flex_vms(flex_vm(FLEX_A), flex_vm(FLEX_B))


async def test_flexible_provision_raises_capacity_and_returns_the_new_vm_names(
    flex_arm: ArmTransport, flex_compute: VmssCompute
) -> None:
    flex_scale_out(
        flex_arm,
        Reply.of("vmss_flexible_update_accepted"),
        before=FLEX_BEFORE,
        after=flex_vms(
            flex_vm(FLEX_A),
            flex_vm(FLEX_B),
            flex_vm("sg-chat-spot-z3_0c4e9b71"),
            flex_vm("sg-chat-spot-z3_e25a8d03", "Creating"),
        ),
    )
    flex_arm.on(
        "GET",
        UPDATE_OP,
        Reply.of("async_operation_in_progress"),
        Reply.of("async_operation_succeeded"),
    )

    started = await flex_compute.provision(SPOT_IN_ZONE_3)

    assert started == ["sg-chat-spot-z3_0c4e9b71", "sg-chat-spot-z3_e25a8d03"]
    [patch] = flex_arm.requests("PATCH")
    assert patch.path.endswith(f"/virtualMachineScaleSets/{FLEX_SPOT_Z3}")
    assert patch.body == {
        "sku": {"name": "Standard_NC4as_T4_v3", "tier": "Standard", "capacity": 4}
    }
    listed = flex_arm.requests("GET", r"/providers/Microsoft\.Compute/virtualMachines$")
    assert len(listed) == 2  # before and after
    assert {r.query["$filter"] for r in listed} == {
        f"'virtualMachineScaleSet/id' eq '{VMSS_ID}{FLEX_SPOT_Z3}'"
    }
    assert flex_arm.requests("GET", r"/virtualMachineScaleSets/[^/]+/virtualMachines") == []


async def test_flexible_failed_scale_out_deletes_the_failed_vms_by_name(
    flex_arm: ArmTransport, flex_compute: VmssCompute
) -> None:
    flex_scale_out(
        flex_arm,
        Reply.of("vmss_flexible_update_accepted"),
        before=FLEX_BEFORE,
        after=flex_vms(
            flex_vm(FLEX_A),
            flex_vm(FLEX_B),
            flex_vm("sg-chat-spot-z3_0c4e9b71"),
            flex_vm("sg-chat-spot-z3_93f1a6d2", "Failed"),
        ),
    )
    flex_arm.on("GET", UPDATE_OP, Reply.of("async_operation_failed_zonal_allocation"))
    delete_ok(flex_arm, FLEX_SPOT_Z3)

    with pytest.raises(CapacityError) as refused:
        await flex_compute.provision(SPOT_IN_ZONE_3)

    assert refused.value.reason == "allocation_failed"
    assert (refused.value.priority, refused.value.zone) == ("spot", "3")
    assert refused.value.provisioned == ["sg-chat-spot-z3_0c4e9b71"]
    [delete] = flex_arm.requests("POST")
    assert delete.path.endswith(f"{FLEX_SPOT_Z3}/delete")
    assert delete.body == {"instanceIds": ["sg-chat-spot-z3_93f1a6d2"]}


async def test_flexible_refused_scale_out_is_a_capacity_error(
    flex_arm: ArmTransport, flex_compute: VmssCompute
) -> None:
    flex_scale_out(
        flex_arm, Reply.of("error_sku_not_available"), before=FLEX_BEFORE, after=FLEX_BEFORE
    )

    with pytest.raises(CapacityError) as refused:
        await flex_compute.provision(SPOT_IN_ZONE_3)

    assert (refused.value.reason, refused.value.provisioned) == ("sku_not_available", [])
    assert flex_arm.requests("POST") == []


async def test_flexible_delete_sends_exactly_the_vm_names(
    flex_arm: ArmTransport, flex_compute: VmssCompute
) -> None:
    delete_ok(flex_arm, FLEX_SPOT_Z3)
    flex_arm.on("POST", delete_of(FLEX_OD_Z3), Reply.of("delete_instances_accepted"))
    flex_arm.on("GET", DELETE_OP + r".*monitor=true", Reply.of("delete_operation_monitor"))
    flex_arm.on("GET", DELETE_OP, Reply.of("delete_operation_succeeded"))
    # an all-digit suffix is still a Flexible VM name, not a Uniform instance id
    drained = [FLEX_A, "sg-chat-od-z3_20481379", FLEX_B, FLEX_A]

    deleted = await flex_compute.delete("chat", drained)

    assert deleted == [FLEX_A, "sg-chat-od-z3_20481379", FLEX_B]
    sent = {d.path.rsplit("/", 2)[-2]: d.body for d in flex_arm.requests("POST")}
    assert sent == {
        FLEX_SPOT_Z3: {"instanceIds": [FLEX_A, FLEX_B]},
        FLEX_OD_Z3: {"instanceIds": ["sg-chat-od-z3_20481379"]},
    }
    assert flex_arm.requests("PATCH") == [] and flex_arm.requests("DELETE") == []


def gone_vm_error(kind: str) -> Reply:
    """How deleteInstances might refuse a Flexible VM name that is gone (undocumented)."""
    if kind == "not_found":
        return Reply.of("error_not_found")
    reply = Reply.of("error_delete_not_active_instance")
    error = reply.body["error"]
    error["message"] = error["message"].replace(
        "instanceId 7", "instanceId sg-chat-spot-z3_5d6e7f80"
    )
    return reply


@pytest.mark.parametrize("kind", ["not_active", "not_found"])
async def test_flexible_delete_of_a_gone_vm_relists_and_retries_with_the_live_ones(
    flex_arm: ArmTransport, flex_compute: VmssCompute, kind: str
) -> None:
    flex_arm.on("POST", delete_of(FLEX_SPOT_Z3), gone_vm_error(kind))
    # B is already on its way out: nothing to ask again for it either
    flex_arm.on(
        "GET", flex_vms_of(FLEX_SPOT_Z3), flex_vms(flex_vm(FLEX_A), flex_vm(FLEX_B, "Deleting"))
    )
    delete_ok(flex_arm, FLEX_SPOT_Z3)
    asked = [FLEX_A, FLEX_B, "sg-chat-spot-z3_5d6e7f80"]

    assert await flex_compute.delete("chat", asked) == asked

    bodies = [d.body for d in flex_arm.requests("POST")]
    assert bodies == [{"instanceIds": asked}, {"instanceIds": [FLEX_A]}]


async def test_flexible_delete_of_vms_that_are_all_gone_is_done_after_the_relist(
    flex_arm: ArmTransport, flex_compute: VmssCompute
) -> None:
    flex_arm.on("POST", delete_of(FLEX_SPOT_Z3), gone_vm_error("not_found"))
    flex_arm.on("GET", flex_vms_of(FLEX_SPOT_Z3), flex_vms())

    assert await flex_compute.delete("chat", [FLEX_A]) == [FLEX_A]
    assert len(flex_arm.requests("POST")) == 1


async def test_flexible_delete_refused_over_live_vms_is_raised_not_retried(
    flex_arm: ArmTransport, flex_compute: VmssCompute
) -> None:
    refusal = gone_vm_error("not_active")
    refusal.body["error"]["message"] = "Instance ids must belong to the scale set."
    flex_arm.on("POST", delete_of(FLEX_SPOT_Z3), refusal)
    flex_arm.on("GET", flex_vms_of(FLEX_SPOT_Z3), FLEX_BEFORE)

    with pytest.raises(HttpResponseError) as failed:
        await flex_compute.delete("chat", [FLEX_A, FLEX_B])

    assert failed.value.status_code == 400
    assert len(flex_arm.requests("POST")) == 1


async def test_flexible_instances_maps_provisioning_states_and_zones(
    flex_arm: ArmTransport, flex_compute: VmssCompute
) -> None:
    flex_arm.on(
        "GET",
        flex_vms_of(FLEX_SPOT_Z3),
        flex_vms(
            flex_vm(FLEX_A),
            flex_vm(FLEX_B, "Creating"),
            flex_vm("sg-chat-spot-z3_0c4e9b71", "Updating"),
            flex_vm("sg-chat-spot-z3_93f1a6d2", "Failed"),
            flex_vm("sg-chat-spot-z3_5d6e7f80", "Deleting"),
            # the filter should keep others out; one that slips through is not counted
            flex_vm("sg-other_0a1b2c3d", scale_set="sg-other"),
        ),
    )
    flex_arm.on(
        "GET", flex_vms_of(FLEX_OD_Z3), flex_vms(flex_vm("sg-chat-od-z3_4e2d1c0b", zone="3"))
    )
    flex_arm.on("GET", GROUP_NICS, Reply.of("nic_list_resource_group"))

    found = await flex_compute.instances("chat")

    assert sorted(found, key=lambda i: i.worker_id) == [
        Instance("sg-chat-od-z3_4e2d1c0b", "chat", "on-demand", "3", "running"),
        Instance("sg-chat-spot-z3_0c4e9b71", "chat", "spot", "3", "creating"),
        Instance(FLEX_A, "chat", "spot", "3", "running", "10.60.16.7"),
        Instance("sg-chat-spot-z3_5d6e7f80", "chat", "spot", "3", "deleting"),
        Instance(FLEX_B, "chat", "spot", "3", "creating", "10.60.16.8"),
        Instance("sg-chat-spot-z3_93f1a6d2", "chat", "spot", "3", "failed"),
    ]


async def test_a_mixed_pool_lists_provisions_and_deletes_in_each_scale_sets_own_mode(
    mixed_arm: ArmTransport, mixed_compute: VmssCompute
) -> None:
    # instances: the Uniform sets through their VMs list, the Flexible ones through the VM list
    mixed_arm.on("GET", vms_of(SPOT_Z2), vms(vm(SPOT_Z2, 0)))
    mixed_arm.on("GET", vms_of(SPOT_Z1), vms(vm(SPOT_Z1, 1, zone="1")))
    mixed_arm.on("GET", vms_of(ON_DEMAND_Z2), vms())
    mixed_arm.on("GET", flex_vms_of(FLEX_SPOT_Z3), flex_vms(flex_vm(FLEX_A)))
    mixed_arm.on("GET", flex_vms_of(FLEX_OD_Z3), flex_vms())
    mixed_arm.on("GET", nics_of(SPOT_Z2), Reply.of("vmss_network_interfaces_list"))
    mixed_arm.on("GET", nics_of(SPOT_Z1), nics(nic(uniform_vm_id(SPOT_Z1, 1), "10.60.16.12")))
    mixed_arm.on("GET", GROUP_NICS, Reply.of("nic_list_resource_group"))

    found = await mixed_compute.instances("chat")

    assert sorted((i.worker_id, i.private_ip) for i in found) == [
        ("sg-chat-spot-z1_1", "10.60.16.12"),
        ("sg-chat-spot-z2_0", "10.60.16.4"),
        (FLEX_A, "10.60.16.7"),
    ]

    # provision: one Uniform and one Flexible scale-out
    scale_out(
        mixed_arm,
        Reply.of("vmss_update_accepted"),
        before=BEFORE,
        after=vms(vm(SPOT_Z2, 0), vm(SPOT_Z2, 3), vm(SPOT_Z2, 4), vm(SPOT_Z2, 5)),
    )
    flex_scale_out(
        mixed_arm,
        Reply.of("vmss_flexible_update_accepted"),
        before=FLEX_BEFORE,
        after=flex_vms(flex_vm(FLEX_A), flex_vm(FLEX_B), flex_vm("sg-chat-spot-z3_0c4e9b71")),
    )
    mixed_arm.on(
        "GET",
        UPDATE_OP,
        Reply.of("async_operation_succeeded"),
        Reply.of("async_operation_succeeded"),
    )

    assert await mixed_compute.provision(SPOT_IN_ZONE_2) == [
        "sg-chat-spot-z2_4",
        "sg-chat-spot-z2_5",
    ]
    assert await mixed_compute.provision(ProvisionRequest("chat", "spot", "3", 1)) == [
        "sg-chat-spot-z3_0c4e9b71"
    ]

    # delete: one call, two modes, each scale set gets the ids it understands
    delete_ok(mixed_arm, SPOT_Z2)
    mixed_arm.on("POST", delete_of(FLEX_SPOT_Z3), Reply.of("delete_instances_accepted"))
    mixed_arm.on("GET", DELETE_OP + r".*monitor=true", Reply.of("delete_operation_monitor"))
    mixed_arm.on("GET", DELETE_OP, Reply.of("delete_operation_succeeded"))

    deleted = await mixed_compute.delete("chat", ["sg-chat-spot-z2_4", FLEX_A])

    assert deleted == ["sg-chat-spot-z2_4", FLEX_A]
    sent = {d.path.rsplit("/", 2)[-2]: d.body for d in mixed_arm.requests("POST")}
    assert sent == {SPOT_Z2: {"instanceIds": ["4"]}, FLEX_SPOT_Z3: {"instanceIds": [FLEX_A]}}
    assert len(mixed_arm.requests("GET", r"/virtualMachineScaleSets$")) == 1  # listed once


async def test_a_uniform_worker_id_must_end_in_an_instance_number(
    mixed_arm: ArmTransport, mixed_compute: VmssCompute
) -> None:
    with pytest.raises(ValueError, match="not a scale set VM name"):
        await mixed_compute.delete("chat", [FLEX_A, "sg-chat-spot-z2_1f0c9a2e"])

    assert mixed_arm.requests("POST") == []


def test_orchestration_mode_is_read_from_the_listing_and_defaults_to_uniform() -> None:
    from azure.mgmt.compute.models import VirtualMachineScaleSet

    from spotgate.adapters.azure.vmss_layout import FLEXIBLE, UNIFORM, scale_set_of

    flexible = VirtualMachineScaleSet(recorded("vmss_flexible_get")["body"])
    uniform = VirtualMachineScaleSet(recorded("vmss_get")["body"])
    unspecified_body = recorded("vmss_get")["body"]
    del unspecified_body["properties"]["orchestrationMode"]
    unspecified = VirtualMachineScaleSet(unspecified_body)

    read = [scale_set_of(s) for s in (flexible, uniform, unspecified)]

    assert [s.orchestration_mode if s else None for s in read] == [FLEXIBLE, UNIFORM, UNIFORM]
    assert read[0] is not None and read[0].resource_id == f"{VMSS_ID}{FLEX_SPOT_Z3}"
    assert (read[0].priority, read[0].zone, read[0].capacity) == ("spot", "3", 2)


# --- private IPs: what a worker may register from ---
#
# The fleet manager accepts a registration only from the private IP the cloud reports
# for that VM. It is on the VM's network interface, not the VM, so instances() lists NICs
# too: once per Uniform scale set that has VMs, once per resource group for Flexible ones.


async def test_uniform_instances_carry_each_vms_private_ip_from_the_scale_sets_nics(
    arm: ArmTransport, compute: VmssCompute
) -> None:
    arm.on("GET", vms_of(SPOT_Z2), BEFORE)
    arm.on("GET", vms_of(SPOT_Z1), vms(vm(SPOT_Z1, 1, zone="1")))
    arm.on("GET", vms_of(ON_DEMAND_Z2), vms())
    arm.on("GET", nics_of(SPOT_Z2), Reply.of("vmss_network_interfaces_list"))
    # VM 1 has a second NIC, listed first, and its primary NIC a secondary address, also first
    primary = nic(uniform_vm_id(SPOT_Z1, 1), "10.60.16.22", "10.60.16.21")
    configs = primary["properties"]["ipConfigurations"]
    configs[0]["properties"]["primary"], configs[1]["properties"]["primary"] = False, True
    secondary = nic(uniform_vm_id(SPOT_Z1, 1), "10.60.32.4", primary=False, name="extra-nic")
    arm.on("GET", nics_of(SPOT_Z1), nics(secondary, primary))

    found = await compute.instances("chat")

    assert {i.worker_id: i.private_ip for i in found} == {
        "sg-chat-spot-z2_0": "10.60.16.4",
        "sg-chat-spot-z2_3": "10.60.16.5",
        "sg-chat-spot-z1_1": "10.60.16.21",
    }
    assert all(i.port is None for i in found)
    listed = sorted(r.path.rsplit("/", 2)[-2] for r in arm.requests("GET", "/networkInterfaces$"))
    assert listed == [SPOT_Z1, SPOT_Z2]  # one call per scale set with VMs; none for the empty one
    assert arm.requests("GET", r"/Microsoft\.Network/networkInterfaces$") == []


async def test_flexible_instances_carry_each_vms_private_ip_from_one_resource_group_listing(
    flex_arm: ArmTransport, flex_compute: VmssCompute
) -> None:
    on_demand = "sg-chat-od-z3_4e2d1c0b"
    flex_arm.on("GET", flex_vms_of(FLEX_SPOT_Z3), FLEX_BEFORE)
    flex_arm.on("GET", flex_vms_of(FLEX_OD_Z3), flex_vms(flex_vm(on_demand)))
    group = Reply.of("nic_list_resource_group")
    group.body["value"].append(nic(flexible_vm_id(on_demand), "10.60.16.10"))
    flex_arm.on("GET", GROUP_NICS, group)

    found = await flex_compute.instances("chat")

    # FLEX_A's NIC names its VM with the resource group upper-cased: ids match in any case
    assert {i.worker_id: i.private_ip for i in found} == {
        FLEX_A: "10.60.16.7",
        FLEX_B: "10.60.16.8",
        on_demand: "10.60.16.10",
    }
    [listing] = flex_arm.requests("GET", "/networkInterfaces$")
    assert listing.path == (
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}"
        "/providers/Microsoft.Network/networkInterfaces"
    )


async def test_a_vm_missing_from_the_nic_listing_has_no_private_ip(
    mixed_arm: ArmTransport, mixed_compute: VmssCompute
) -> None:
    # sg-chat-spot-z2_4 and the new Flexible VM are still being created: no NIC listed yet
    mixed_arm.on("GET", vms_of(SPOT_Z2), vms(vm(SPOT_Z2, 0), vm(SPOT_Z2, 4, "Creating")))
    mixed_arm.on("GET", vms_of(SPOT_Z1), vms())
    mixed_arm.on("GET", vms_of(ON_DEMAND_Z2), vms())
    mixed_arm.on(
        "GET",
        flex_vms_of(FLEX_SPOT_Z3),
        flex_vms(flex_vm(FLEX_A), flex_vm("sg-chat-spot-z3_0c4e9b71", "Creating")),
    )
    mixed_arm.on("GET", flex_vms_of(FLEX_OD_Z3), flex_vms())
    mixed_arm.on("GET", nics_of(SPOT_Z2), Reply.of("vmss_network_interfaces_list"))
    mixed_arm.on("GET", GROUP_NICS, Reply.of("nic_list_resource_group"))

    found = await mixed_compute.instances("chat")

    assert {i.worker_id: i.private_ip for i in found} == {
        "sg-chat-spot-z2_0": "10.60.16.4",
        "sg-chat-spot-z2_4": None,
        FLEX_A: "10.60.16.7",
        "sg-chat-spot-z3_0c4e9b71": None,
    }


@pytest.mark.parametrize(
    ("recording", "status", "attempts"),
    [
        ("error_service_unavailable", None, 4),  # 503, retried retry_total (3) times
        ("error_service_unavailable", 500, 4),
        ("error_authorization_failed", None, 1),  # 403: no Microsoft.Network read, not retried
    ],
)
async def test_a_failed_nic_listing_leaves_private_ips_unknown_and_still_lists_the_vms(
    mixed_arm: ArmTransport,
    mixed_compute: VmssCompute,
    caplog: pytest.LogCaptureFixture,
    recording: str,
    status: int | None,
    attempts: int,
) -> None:
    mixed_arm.on("GET", vms_of(SPOT_Z2), BEFORE)
    mixed_arm.on("GET", vms_of(SPOT_Z1), vms(vm(SPOT_Z1, 1, zone="1")))
    mixed_arm.on("GET", vms_of(ON_DEMAND_Z2), vms())
    mixed_arm.on("GET", flex_vms_of(FLEX_SPOT_Z3), FLEX_BEFORE)
    mixed_arm.on("GET", flex_vms_of(FLEX_OD_Z3), flex_vms())
    # the resource group's NICs and one scale set's fail; the other scale set's still answer
    mixed_arm.on("GET", GROUP_NICS, error(recording, status), repeat_last=True)
    mixed_arm.on("GET", nics_of(SPOT_Z2), error(recording, status), repeat_last=True)
    mixed_arm.on("GET", nics_of(SPOT_Z1), nics(nic(uniform_vm_id(SPOT_Z1, 1), "10.60.16.12")))

    with caplog.at_level(logging.WARNING, logger="spotgate.adapters.azure.vmss_compute"):
        found = await mixed_compute.instances("chat")

    assert {i.worker_id: (i.state, i.private_ip) for i in found} == {
        "sg-chat-spot-z2_0": ("running", None),
        "sg-chat-spot-z2_3": ("running", None),
        "sg-chat-spot-z1_1": ("running", "10.60.16.12"),
        FLEX_A: ("running", None),
        FLEX_B: ("running", None),
    }
    assert len(mixed_arm.requests("GET", r"/Microsoft\.Network/networkInterfaces$")) == attempts
    assert len(mixed_arm.requests("GET", nics_of(SPOT_Z2).removesuffix(r"\?") + "$")) == attempts
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"NICs of scale set {SPOT_Z2}" in m for m in warned)
    assert any(f"NICs of resource group {RESOURCE_GROUP}" in m for m in warned)


async def test_without_primary_flags_the_first_nic_and_address_count(
    arm: ArmTransport, compute: VmssCompute
) -> None:
    arm.on("GET", vms_of(SPOT_Z2), BEFORE)
    arm.on("GET", vms_of(SPOT_Z1), vms())
    arm.on("GET", vms_of(ON_DEMAND_Z2), vms())
    unmarked = [
        nic(uniform_vm_id(SPOT_Z2, 0), "10.60.16.30", "10.60.16.31", name="a"),
        nic(uniform_vm_id(SPOT_Z2, 0), "10.60.16.40", name="b"),
    ]
    for body in unmarked:
        del body["properties"]["primary"]
        for config in body["properties"]["ipConfigurations"]:
            del config["properties"]["primary"]
    no_address = nic(uniform_vm_id(SPOT_Z2, 3))  # a NIC with no ipConfiguration yet
    arm.on("GET", nics_of(SPOT_Z2), nics(*unmarked, no_address))

    found = await compute.instances("chat")

    assert {i.worker_id: i.private_ip for i in found} == {
        "sg-chat-spot-z2_0": "10.60.16.30",
        "sg-chat-spot-z2_3": None,
    }

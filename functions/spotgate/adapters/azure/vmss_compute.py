"""The compute port on Azure: workers are VMs of VM Scale Sets, one per pool/priority/zone.

Each scale set is driven by its own orchestration mode (`orchestrationMode`
in the VMSS GET/list answer; see vmss_layout.py), so a pool may mix both:

- VMs: Uniform has scale-set VMs; Flexible has ordinary
  `Microsoft.Compute/virtualMachines`.
- VM name, which is the worker id: `{vmss}_{instance id}` / `{vmss}_{8 hex chars}`.
- Listing: Virtual Machine Scale Set VMs - List / Virtual Machines - List of the
  resource group with `$filter='virtualMachineScaleSet/id' eq '<vmss id>'`.
- deleteInstances `instanceIds`: the instance ids / the VM names.
- Scale-out: raising `sku.capacity`, in both (a Flexible scale set with a
  `virtualMachineProfile` creates its VMs from it).
- State and zone: `properties.provisioningState` and `zones` of the VM, in both.
- Private IP, the only address a worker may register from: on the VM's network
  interface, not the VM. Uniform: Network Interfaces - List Virtual Machine Scale
  Set Network Interfaces, one call per scale set; Flexible: Network Interfaces -
  List of the resource group, one call for all of them. Either way each NIC names
  its VM in `properties.virtualMachine.id`; the primary NIC's primary
  ipConfiguration holds `privateIPAddress`.

Growing a scale set means raising `sku.capacity`; ARM then creates VMs,
whose name is also what the agent on each VM registers as (IMDS
`compute.name`). ARM does not say which VMs a capacity change made, so
provision lists the VMs before and after and takes the difference; a
per-scale-set lock keeps this process from muddling two differences (or a
delete's lowered capacity) together.

Shrinking never touches capacity: ARM would pick the victims. Only
`deleteInstances` on named, drained workers goes down, and it lowers the
capacity by itself. If ARM refuses it because a named instance is already
gone, the scale set is listed again and the call retried once with the live
ones.

A scale-out can be refused up front (SkuNotAvailable, quota) or half fail
in the long-running operation (ZonalAllocationFailed): the VMs that did not
come up are deleted again, so a failed spot attempt costs nothing and does
not hold capacity, and the ones that did are reported in CapacityError.

What settled the Flexible-mode behaviour (each page, then what it settled):
learn.microsoft.com/azure/virtual-machine-scale-sets/virtual-machine-scale-sets-instance-ids
    Flexible VMs are named `{scale-set-name}_{8-char-guid}`; their instance id is the VM name.
learn.microsoft.com/azure/virtual-machine-scale-sets/orchestration-modes-api-comparison
    Flexible has no scale-set VM APIs but keeps the "VMSS Batch delete API"; instances are
    found by their `properties.virtualMachineScaleSet.id`.
learn.microsoft.com/azure/virtual-machine-scale-sets/virtual-machine-scale-sets-orchestration-modes
    details of many Flexible VMs: Resource Graph "or the standard List VM API".
learn.microsoft.com/rest/api/compute/virtualmachines/list
    `$filter` allows exactly `'virtualMachineScaleSet/id' eq '<vmss id>'` (so does
    azure-mgmt-compute's `virtual_machines.list(filter=...)`); VM bodies carry `zones`,
    `properties.provisioningState` and `properties.virtualMachineScaleSet.id`.
learn.microsoft.com/azure/virtual-machines/flexible-virtual-machine-scale-sets
    "define a VM profile ... You can then set the capacity parameter to increase or
    decrease the number of VM instances" (the -rest-api page's template: `orchestrationMode:
    Flexible` with `sku.capacity` and `virtualMachineProfile`).
learn.microsoft.com/azure/virtual-machine-scale-sets/resilient-vm-create-delete
    listing `.../virtualMachineScaleSets/{vmss}/virtualMachines` is "for Uniform
    orchestration only"; Flexible VMs are addressed by instance name.
github.com/Azure/vm-scale-sets/blob/golang-delete/vmss-flex-golang-sample/main.flex.go
    the VMSS team's sample (from Azure/azure-sdk-for-go#19636): one BeginDeleteInstances
    on a Flexible scale set whose InstanceIDs are the VM names.
learn.microsoft.com/rest/api/virtualnetwork/network-interfaces/list
    Network Interfaces - List of a resource group; the body as the 2024-05-01 example
    NetworkInterfaceList.json in Azure/azure-rest-api-specs has it: `properties.virtualMachine.id`,
    `properties.primary`, `properties.ipConfigurations[].properties.{primary, privateIPAddress}`.
learn.microsoft.com/rest/api/virtualnetwork/network-interface-in-vm-ss/list-virtual-machine-scale-set-network-interfaces
    `GET .../Microsoft.Compute/virtualMachineScaleSets/{vmss}/networkInterfaces` (default
    api-version 2018-10-01 in the SDKs), the same NetworkInterface items, `virtualMachine.id`
    being `.../virtualMachineScaleSets/{vmss}/virtualMachines/{instance id}`.
Not documented anywhere found: the error deleteInstances gives for a Flexible VM name that
is already gone, hence `instance_may_be_gone` (arm_retry.py) and the re-list before retrying.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.compute.aio import ComputeManagementClient
from azure.mgmt.compute.models import (
    Sku,
    VirtualMachineScaleSetUpdate,
    VirtualMachineScaleSetVMInstanceRequiredIDs,
)
from azure.mgmt.network.aio import NetworkManagementClient

from spotgate.adapters.azure.arm_retry import (
    RETRY_DEFAULTS,
    capacity_refusal,
    instance_may_be_gone,
    surfacing_transient,
)
from spotgate.adapters.azure.vm_addresses import PrivateAddresses
from spotgate.adapters.azure.vmss_layout import (
    POOL_TAG,
    ScaleSet,
    ScaleSetVm,
    flexible_member_of,
    flexible_vm,
    instance_id_of,
    pick,
    scale_set_name_of,
    scale_set_of,
    uniform_vm,
    vmss_filter,
)
from spotgate.clock import Clock, SystemClock
from spotgate.fleet.compute import CapacityError, Instance, ProvisionRequest

log = logging.getLogger(__name__)

LISTING_TTL_S = 30.0


class ScaleSetNotFound(LookupError):
    """No scale set is laid out for what was asked: a deployment mistake, not a capacity signal."""


# A listed VM and its ARM resource id, which its network interface points back to.
_ListedVm = tuple[ScaleSetVm, str]


class VmssCompute:
    def __init__(
        self,
        credential: AsyncTokenCredential,
        subscription_id: str,
        resource_group: str,
        *,
        clock: Clock | None = None,
        listing_ttl_s: float = LISTING_TTL_S,
        owns_credential: bool = False,
        **client_kwargs: Any,
    ) -> None:
        """`client_kwargs` go to the management clients (retry, polling, `transport`)."""
        settings = {**RETRY_DEFAULTS, **client_kwargs}
        self._client = ComputeManagementClient(credential, subscription_id, **settings)
        # The VMs' private IPs live on their NICs, which the network RP serves.
        network = NetworkManagementClient(credential, subscription_id, **settings)
        self._addresses = PrivateAddresses(network, resource_group)
        self._credential = credential if owns_credential else None
        self._subscription = subscription_id
        self._rg = resource_group
        self._clock = clock or SystemClock()
        self._ttl = listing_ttl_s
        self._listing: dict[str, ScaleSet] = {}
        self._listed_at: float | None = None
        self._locks: dict[str, asyncio.Lock] = {}

    async def close(self) -> None:
        await self._client.close()
        await self._addresses.close()
        if self._credential is not None:
            await self._credential.close()
            self._credential = None

    # --- the port ---

    async def provision(self, request: ProvisionRequest) -> list[str]:
        if request.count <= 0:
            return []
        target = await self._target(request)
        with surfacing_transient(f"scaling out {target.name}"):
            async with self._lock(target.name):
                return await self._scale_out(target, request)

    async def delete(self, pool: str, worker_ids: Sequence[str]) -> list[str]:
        workers: dict[str, list[str]] = {}
        for worker_id in dict.fromkeys(worker_ids):
            workers.setdefault(scale_set_name_of(worker_id), []).append(worker_id)
        listing = await self._scale_sets_named(workers)
        by_scale_set: dict[str, list[str]] = {}
        for name, named in workers.items():
            if name not in listing:
                continue  # Scale sets that no longer exist took their VMs with them.
            scale_set = listing[name]
            if scale_set.pool != pool:
                raise ValueError(f"scale set {name} is not tagged {POOL_TAG}={pool}: not deleting")
            by_scale_set[name] = [instance_id_of(scale_set, w) for w in named]
        results = await asyncio.gather(
            *(self._delete_from(listing[name], ids) for name, ids in by_scale_set.items()),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return list(dict.fromkeys(worker_ids))

    async def instances(self, pool: str) -> list[Instance]:
        scale_sets = await self._pool(pool)
        if not scale_sets:
            scale_sets = await self._pool(pool, refresh=True)
        listed = await asyncio.gather(*(self._vms_or_none(s) for s in scale_sets))
        with_vms = [s for s, vms in zip(scale_sets, listed, strict=True) if vms]
        addresses = await self._addresses.by_vm_id(
            [s.name for s in with_vms if not s.flexible], any(s.flexible for s in with_vms)
        )
        found: list[Instance] = []
        for scale_set, vms in zip(scale_sets, listed, strict=True):
            for vm, vm_id in vms or []:
                found.append(
                    Instance(
                        worker_id=vm.worker_id,
                        pool=pool,
                        priority=scale_set.priority,
                        zone=vm.zone or scale_set.zone,
                        state=vm.state,
                        private_ip=addresses.get(vm_id.lower()),
                    )
                )
        return found

    # --- scale-out ---

    async def _scale_out(self, target: ScaleSet, request: ProvisionRequest) -> list[str]:
        ops = self._client.virtual_machine_scale_sets
        try:
            current = await ops.get(self._rg, target.name)
        except ResourceNotFoundError as err:
            self._listed_at = None
            raise ScaleSetNotFound(f"scale set {target.name} is gone from {self._rg}") from err
        sku = current.sku or Sku()
        before = {vm.worker_id for vm in await self._vms(target)}
        # The same PATCH grows either mode: a Flexible scale set with a
        # virtualMachineProfile creates VMs from it when its capacity goes up.
        update = VirtualMachineScaleSetUpdate(
            sku=Sku(name=sku.name, tier=sku.tier, capacity=(sku.capacity or 0) + request.count)
        )
        try:
            poller = await ops.begin_update(self._rg, target.name, update)
        except HttpResponseError as err:
            # Refused before anything changed: no VM to look for or clean up.
            capacity = self._capacity_error(err, request, provisioned=[])
            if capacity is None:
                raise
            raise capacity from err
        refusal: HttpResponseError | None = None
        try:
            await poller.result()
        except HttpResponseError as err:
            refusal = err
        started: list[str] = []
        failed: list[ScaleSetVm] = []
        for vm in await self._vms(target):
            if vm.worker_id in before:
                continue
            if vm.state == "failed":
                failed.append(vm)
            else:
                started.append(vm.worker_id)
        if failed:
            await self._discard(target, failed)
        if refusal is not None:
            capacity = self._capacity_error(refusal, request, provisioned=started)
            if capacity is None:
                raise refusal
            raise capacity from refusal
        if len(started) < request.count:
            log.warning(
                "%s: asked for %d workers, %d started", target.name, request.count, len(started)
            )
        return started

    def _capacity_error(
        self, err: HttpResponseError, request: ProvisionRequest, provisioned: list[str]
    ) -> CapacityError | None:
        refusal = capacity_refusal(err)
        if refusal is None:
            return None
        reason, code, message = refusal
        return CapacityError(
            reason,
            message,
            priority=request.priority,
            zone=request.zone,
            code=code,
            provisioned=provisioned,
        )

    async def _discard(self, scale_set: ScaleSet, vms: list[ScaleSetVm]) -> None:
        """Deletes VMs that failed to start; failing that is logged, not raised over the refusal."""
        ids = [vm.instance_id for vm in vms]
        try:
            await self._delete_instances(scale_set.name, ids)
        except HttpResponseError as err:
            log.warning("%s: could not delete failed instances %s: %s", scale_set.name, ids, err)

    # --- scale-in ---

    async def _delete_from(self, scale_set: ScaleSet, instance_ids: list[str]) -> None:
        name = scale_set.name
        with surfacing_transient(f"deleting {len(instance_ids)} instances of {name}"):
            async with self._lock(name):
                try:
                    await self._delete_instances(name, instance_ids)
                    return
                except HttpResponseError as err:
                    if not instance_may_be_gone(err):
                        raise
                    if err.status_code == 404 and not scale_set.flexible:
                        self._listed_at = None
                        return  # the scale set itself is gone
                    refused = err
                # One id already gone fails the whole call: retry once with the live ones.
                # (For Flexible a 404 may name the VM as well as the scale set; the
                # listing tells, and a Flexible scale set cannot be deleted with VMs in it.)
                live = {
                    vm.instance_id
                    for vm, _ in await self._vms_or_none(scale_set) or []
                    if vm.state != "deleting"
                }
                remaining = [i for i in instance_ids if i in live]
                if remaining == instance_ids:
                    raise refused  # every one is still there: the refusal is about something else
                if remaining:
                    await self._delete_instances(name, remaining)

    async def _delete_instances(self, scale_set: str, instance_ids: list[str]) -> None:
        """deleteInstances: instance ids for Uniform, VM names for Flexible, same call."""
        poller = await self._client.virtual_machine_scale_sets.begin_delete_instances(
            self._rg,
            scale_set,
            VirtualMachineScaleSetVMInstanceRequiredIDs(instance_ids=instance_ids),
        )
        await poller.result()

    # --- discovery ---

    async def _target(self, request: ProvisionRequest) -> ScaleSet:
        for refresh in (False, True):
            scale_sets = await self._pool(request.pool, refresh=refresh)
            found = pick(scale_sets, request.pool, request.priority, request.zone)
            if found is not None:
                return found
        laid_out = ", ".join(s.describe() for s in scale_sets) or "none"
        raise ScaleSetNotFound(
            f"no scale set in resource group {self._rg} tagged {POOL_TAG}={request.pool} "
            f"with priority {request.priority} in zone {request.zone or 'any'} "
            f"(the pool has: {laid_out})"
        )

    async def spot_zones(self, pool: str) -> dict[str, str | None]:
        """The pool's spot scale sets and their zones: what eviction logs are matched against."""
        return {s.name: s.zone for s in await self._pool(pool) if s.priority == "spot"}

    async def _pool(self, pool: str, *, refresh: bool = False) -> list[ScaleSet]:
        listing = await self._listed(refresh=refresh)
        return [s for s in listing.values() if s.pool == pool]

    async def _scale_sets_named(self, names: Iterable[str]) -> dict[str, ScaleSet]:
        listing = await self._listed()
        if not set(names) <= set(listing):
            listing = await self._listed(refresh=True)
        return listing

    async def _listed(self, *, refresh: bool = False) -> dict[str, ScaleSet]:
        now = self._clock.now()
        if refresh or self._listed_at is None or now - self._listed_at > self._ttl:
            listing: dict[str, ScaleSet] = {}
            with surfacing_transient(f"listing scale sets of {self._rg}"):
                async for vmss in self._client.virtual_machine_scale_sets.list(self._rg):
                    scale_set = scale_set_of(vmss)
                    if scale_set is not None:
                        listing[scale_set.name] = scale_set
            self._listing, self._listed_at = listing, now
        return self._listing

    async def _vms(self, scale_set: ScaleSet) -> list[ScaleSetVm]:
        return [vm for vm, _ in await self._vms_with_ids(scale_set)]

    async def _vms_with_ids(self, scale_set: ScaleSet) -> list[_ListedVm]:
        """The VMs with their ARM ids (ARM always sends `id`; built from the names if not)."""
        scale_set_id = scale_set.resource_id or self._scale_set_id(scale_set.name)
        found: list[_ListedVm] = []
        if not scale_set.flexible:
            ops = self._client.virtual_machine_scale_set_vms
            async for scale_set_vm in ops.list(self._rg, scale_set.name):
                uniform = uniform_vm(scale_set.name, scale_set_vm)
                vm_id = scale_set_vm.id or f"{scale_set_id}/virtualMachines/{uniform.instance_id}"
                found.append((uniform, vm_id))
            return found
        # Flexible: ordinary VMs, listed from the resource group by their scale set.
        vms = self._client.virtual_machines.list(self._rg, filter=vmss_filter(scale_set_id))
        async for vm in vms:
            flexible = flexible_vm(vm) if flexible_member_of(vm, scale_set_id) else None
            if flexible is not None:
                found.append((flexible, vm.id or self._vm_id(flexible.worker_id)))
        return found

    async def _vms_or_none(self, scale_set: ScaleSet) -> list[_ListedVm] | None:
        """The VMs, or None if the scale set vanished since it was listed (then listed afresh)."""
        try:
            with surfacing_transient(f"listing VMs of {scale_set.name}"):
                return await self._vms_with_ids(scale_set)
        except ResourceNotFoundError:
            self._listed_at = None
            return None

    def _scale_set_id(self, name: str) -> str:
        return (
            f"/subscriptions/{self._subscription}/resourceGroups/{self._rg}"
            f"/providers/Microsoft.Compute/virtualMachineScaleSets/{name}"
        )

    def _vm_id(self, name: str) -> str:
        return (
            f"/subscriptions/{self._subscription}/resourceGroups/{self._rg}"
            f"/providers/Microsoft.Compute/virtualMachines/{name}"
        )

    def _lock(self, scale_set: str) -> asyncio.Lock:
        return self._locks.setdefault(scale_set, asyncio.Lock())

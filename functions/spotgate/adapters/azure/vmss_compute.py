"""The compute port on Azure: workers are VMs of Uniform VM Scale Sets, one per pool/priority/zone.

Growing a scale set means raising `sku.capacity`; ARM then creates VMs
named `{scale set}_{instance id}`, which is also what the agent on each VM
registers as (IMDS `compute.name`). ARM does not say which VMs a capacity
change made, so provision lists the VMs before and after and takes the
difference; a per-scale-set lock keeps this process from muddling two
differences (or a delete's lowered capacity) together.

Shrinking never touches capacity: ARM would pick the victims. Only
`deleteInstances` on named, drained workers goes down, and it lowers the
capacity by itself.

A scale-out can be refused up front (SkuNotAvailable, quota) or half fail
in the long-running operation (ZonalAllocationFailed): the VMs that did not
come up are deleted again, so a failed spot attempt costs nothing and does
not hold capacity, and the ones that did are reported in CapacityError.
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
    VirtualMachineScaleSetVM,
    VirtualMachineScaleSetVMInstanceRequiredIDs,
)

from spotgate.adapters.azure.arm_retry import (
    RETRY_DEFAULTS,
    capacity_refusal,
    is_gone,
    surfacing_transient,
)
from spotgate.adapters.azure.vmss_layout import (
    POOL_TAG,
    ScaleSet,
    pick,
    scale_set_of,
    split_worker_id,
    vm_provisioning_state,
    vm_state,
    worker_id_of,
    zone_of,
)
from spotgate.clock import Clock, SystemClock
from spotgate.fleet.compute import CapacityError, Instance, ProvisionRequest

log = logging.getLogger(__name__)

LISTING_TTL_S = 30.0


class ScaleSetNotFound(LookupError):
    """No scale set is laid out for what was asked: a deployment mistake, not a capacity signal."""


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
        """`client_kwargs` go to the management client (retry, polling, `transport`)."""
        self._client = ComputeManagementClient(
            credential, subscription_id, **{**RETRY_DEFAULTS, **client_kwargs}
        )
        self._credential = credential if owns_credential else None
        self._rg = resource_group
        self._clock = clock or SystemClock()
        self._ttl = listing_ttl_s
        self._listing: dict[str, ScaleSet] = {}
        self._listed_at: float | None = None
        self._locks: dict[str, asyncio.Lock] = {}

    @classmethod
    def from_settings(
        cls, subscription_id: str, resource_group: str, **client_kwargs: Any
    ) -> VmssCompute:
        """As deployed: the managed identity (or a developer's login), through azure-identity."""
        from azure.identity.aio import DefaultAzureCredential

        return cls(
            DefaultAzureCredential(),
            subscription_id,
            resource_group,
            owns_credential=True,
            **client_kwargs,
        )

    async def close(self) -> None:
        await self._client.close()
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
        by_scale_set: dict[str, list[str]] = {}
        for worker_id in dict.fromkeys(worker_ids):
            name, instance_id = split_worker_id(worker_id)
            by_scale_set.setdefault(name, []).append(instance_id)
        listing = await self._scale_sets_named(by_scale_set)
        for name in by_scale_set:
            if name in listing and listing[name].pool != pool:
                raise ValueError(f"scale set {name} is not tagged {POOL_TAG}={pool}: not deleting")
        results = await asyncio.gather(
            *(
                self._delete_from(name, ids)
                for name, ids in by_scale_set.items()
                if name in listing
            ),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        # Scale sets that no longer exist took their VMs with them.
        return list(dict.fromkeys(worker_ids))

    async def instances(self, pool: str) -> list[Instance]:
        scale_sets = await self._pool(pool)
        if not scale_sets:
            scale_sets = await self._pool(pool, refresh=True)
        listed = await asyncio.gather(*(self._vms_or_none(s.name) for s in scale_sets))
        found: list[Instance] = []
        for scale_set, vms in zip(scale_sets, listed, strict=True):
            for vm in vms or []:
                found.append(
                    Instance(
                        worker_id=worker_id_of(scale_set.name, vm),
                        pool=pool,
                        priority=scale_set.priority,
                        zone=zone_of(vm.zones) or scale_set.zone,
                        state=vm_state(vm_provisioning_state(vm)),
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
        before = {worker_id_of(target.name, vm) for vm in await self._vms(target.name)}
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
        failed: list[VirtualMachineScaleSetVM] = []
        for vm in await self._vms(target.name):
            worker_id = worker_id_of(target.name, vm)
            if worker_id in before:
                continue
            if vm_state(vm_provisioning_state(vm)) == "failed":
                failed.append(vm)
            else:
                started.append(worker_id)
        if failed:
            await self._discard(target.name, failed)
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

    async def _discard(self, scale_set: str, vms: list[VirtualMachineScaleSetVM]) -> None:
        """Deletes VMs that failed to start; failing that is logged, not raised over the refusal."""
        ids = [vm.instance_id or split_worker_id(worker_id_of(scale_set, vm))[1] for vm in vms]
        try:
            await self._delete_instances(scale_set, ids)
        except HttpResponseError as err:
            log.warning("%s: could not delete failed instances %s: %s", scale_set, ids, err)

    # --- scale-in ---

    async def _delete_from(self, scale_set: str, instance_ids: list[str]) -> None:
        with surfacing_transient(f"deleting {len(instance_ids)} instances of {scale_set}"):
            async with self._lock(scale_set):
                try:
                    await self._delete_instances(scale_set, instance_ids)
                    return
                except HttpResponseError as err:
                    if not is_gone(err):
                        raise
                    if err.status_code == 404:
                        self._listed_at = None
                        return  # the scale set itself is gone
                # One id already gone fails the whole call: retry once with the live ones.
                live = {vm.instance_id for vm in await self._vms_or_none(scale_set) or []}
                remaining = [i for i in instance_ids if i in live]
                if remaining:
                    await self._delete_instances(scale_set, remaining)

    async def _delete_instances(self, scale_set: str, instance_ids: list[str]) -> None:
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

    async def _vms(self, scale_set: str) -> list[VirtualMachineScaleSetVM]:
        ops = self._client.virtual_machine_scale_set_vms
        return [vm async for vm in ops.list(self._rg, scale_set)]

    async def _vms_or_none(self, scale_set: str) -> list[VirtualMachineScaleSetVM] | None:
        """The VMs, or None if the scale set vanished since it was listed (then listed afresh)."""
        try:
            with surfacing_transient(f"listing VMs of {scale_set}"):
                return await self._vms(scale_set)
        except ResourceNotFoundError:
            self._listed_at = None
            return None

    def _lock(self, scale_set: str) -> asyncio.Lock:
        return self._locks.setdefault(scale_set, asyncio.Lock())

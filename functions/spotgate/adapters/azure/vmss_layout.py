"""How spotgate reads a resource group of VM Scale Sets: which belong to a pool, and as what.

Nothing here talks to Azure; it turns ARM models into the few facts the
provider decides on, so the mapping can be read (and tested) in one place.

The resource group is laid out by the infrastructure (bicep), one scale set
per (pool, priority, zone), each tagged `spotgate-pool=<pool>`. Tags rather
than names are the contract, so operators can name scale sets as they like.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from azure.mgmt.compute.models import VirtualMachineScaleSet, VirtualMachineScaleSetVM

POOL_TAG = "spotgate-pool"

# ARM provisioning states, as the monitor counts them. "Updating" is a scale-out
# still settling (or a model update); neither serves yet from the monitor's view.
_STATES = {
    "creating": "creating",
    "updating": "creating",
    "succeeded": "running",
    "deleting": "deleting",
    "failed": "failed",
    "canceled": "failed",
}


@dataclass(frozen=True)
class ScaleSet:
    name: str
    pool: str | None  # None: in the resource group but not tagged for any pool
    priority: str  # spot | on-demand
    zone: str | None  # the one zone it is pinned to; None when regional or multi-zone
    sku_name: str | None
    sku_tier: str | None
    capacity: int

    def describe(self) -> str:
        return f"{self.name} ({self.priority}, zone {self.zone or 'any'})"


def priority_of(profile_priority: str | None) -> str:
    """Spot (and the legacy Low) is spot; Regular, or no priority at all, is on-demand."""
    return "spot" if (profile_priority or "").lower() in ("spot", "low") else "on-demand"


def zone_of(zones: Sequence[str] | None) -> str | None:
    """A scale set spread over several zones cannot promise any one of them."""
    return zones[0] if zones and len(zones) == 1 else None


def scale_set_of(vmss: VirtualMachineScaleSet) -> ScaleSet | None:
    if not vmss.name:
        return None
    profile = vmss.virtual_machine_profile  # flattened: see vm_provisioning_state
    sku = vmss.sku
    return ScaleSet(
        name=vmss.name,
        pool=(vmss.tags or {}).get(POOL_TAG),
        priority=priority_of(profile.priority if profile else None),
        zone=zone_of(vmss.zones),
        sku_name=sku.name if sku else None,
        sku_tier=sku.tier if sku else None,
        capacity=(sku.capacity or 0) if sku else 0,
    )


def pick(
    scale_sets: Iterable[ScaleSet], pool: str, priority: str, zone: str | None
) -> ScaleSet | None:
    """The scale set to grow; with no zone asked for, the least loaded one of the priority."""
    matching = [
        s
        for s in scale_sets
        if s.pool == pool and s.priority == priority and (zone is None or s.zone == zone)
    ]
    return min(matching, key=lambda s: (s.capacity, s.name), default=None)


def vm_state(provisioning_state: str | None) -> str:
    """Unknown or missing states count as creating: not yet shown to serve."""
    return _STATES.get((provisioning_state or "").lower(), "creating")


def vm_provisioning_state(vm: VirtualMachineScaleSetVM) -> str | None:
    """Read flattened, as azure-mgmt-compute before 35 spells it and later ones still accept."""
    state: str | None = vm.provisioning_state
    return state


def worker_id_of(scale_set: str, vm: VirtualMachineScaleSetVM) -> str:
    """A Uniform scale set names VMs `{scale set}_{instance id}`; the agent registers as that."""
    return vm.name or f"{scale_set}_{vm.instance_id}"


def split_worker_id(worker_id: str) -> tuple[str, str]:
    """(scale set, instance id) of a worker id; scale set names may themselves hold "_"."""
    scale_set, sep, instance_id = worker_id.rpartition("_")
    if not sep or not scale_set or not instance_id.isdigit():
        raise ValueError(
            f"{worker_id!r} is not a scale set VM name ({{scale set}}_{{instance id}})"
        )
    return scale_set, instance_id

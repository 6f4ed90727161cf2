"""How spotgate reads a resource group of VM Scale Sets: which belong to a pool, and as what.

Nothing here talks to Azure; it turns ARM models into the few facts the
provider decides on, so the mapping can be read (and tested) in one place.

The resource group is laid out by the infrastructure (bicep), one scale set
per (pool, priority, zone), each tagged `spotgate-pool=<pool>`. Tags rather
than names are the contract, so operators can name scale sets as they like.

Scale sets come in two orchestration modes (`properties.orchestrationMode`,
fixed at creation; absent means Uniform), and their VMs differ in kind:

- Uniform: scale-set VMs (`…/virtualMachineScaleSets/{vmss}/virtualMachines/{n}`),
  named `{vmss}_{instance id}`, the instance id a decimal number.
- Flexible: ordinary VMs (`Microsoft.Compute/virtualMachines`), named
  `{vmss}_{8 hex chars}`, whose scale-set "instance id" is the VM name itself.

Either way the VM name is what IMDS reports as `compute.name`, so it is the
worker id; `ScaleSetVm.instance_id` is what `deleteInstances` wants.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from azure.mgmt.compute.models import (
    VirtualMachine,
    VirtualMachineScaleSet,
    VirtualMachineScaleSetVM,
)

POOL_TAG = "spotgate-pool"
UNIFORM = "Uniform"
FLEXIBLE = "Flexible"

# ARM provisioning states, as the monitor counts them. "Updating" is a scale-out
# still settling (or a model update); neither serves yet from the monitor's view.
# Scale-set VMs (Uniform) and plain VMs (Flexible) use the same values.
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
    capacity: int
    orchestration_mode: str = UNIFORM  # UNIFORM | FLEXIBLE
    resource_id: str | None = None  # the ARM id, which Flexible VMs point back to

    @property
    def flexible(self) -> bool:
        return self.orchestration_mode == FLEXIBLE

    def describe(self) -> str:
        return f"{self.name} ({self.priority}, zone {self.zone or 'any'})"


@dataclass(frozen=True)
class ScaleSetVm:
    """One VM of a scale set, whichever the mode."""

    worker_id: str  # the VM name: what its agent registers as
    instance_id: str  # what deleteInstances takes: Uniform's number, Flexible's VM name
    zone: str | None
    state: str  # creating | running | deleting | failed


def priority_of(profile_priority: str | None) -> str:
    """Spot (and the legacy Low) is spot; Regular, or no priority at all, is on-demand."""
    return "spot" if (profile_priority or "").lower() in ("spot", "low") else "on-demand"


def zone_of(zones: Sequence[str] | None) -> str | None:
    """A scale set spread over several zones cannot promise any one of them."""
    return zones[0] if zones and len(zones) == 1 else None


def orchestration_mode_of(mode: str | None) -> str:
    """Flexible when ARM says so; Uniform otherwise, as for scale sets that predate the field."""
    return FLEXIBLE if (mode or "").lower() == "flexible" else UNIFORM


def scale_set_of(vmss: VirtualMachineScaleSet) -> ScaleSet | None:
    if not vmss.name:
        return None
    # read flattened, as azure-mgmt-compute before 35 spells it and later ones still accept
    profile = vmss.virtual_machine_profile
    sku = vmss.sku
    return ScaleSet(
        name=vmss.name,
        pool=(vmss.tags or {}).get(POOL_TAG),
        priority=priority_of(profile.priority if profile else None),
        zone=zone_of(vmss.zones),
        capacity=(sku.capacity or 0) if sku else 0,
        orchestration_mode=orchestration_mode_of(vmss.orchestration_mode),
        resource_id=vmss.id,
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


def worker_id_of(scale_set: str, vm: VirtualMachineScaleSetVM) -> str:
    """A Uniform scale set names VMs `{scale set}_{instance id}`; the agent registers as that."""
    return vm.name or f"{scale_set}_{vm.instance_id}"


def uniform_vm(scale_set: str, vm: VirtualMachineScaleSetVM) -> ScaleSetVm:
    worker_id = worker_id_of(scale_set, vm)
    return ScaleSetVm(
        worker_id=worker_id,
        instance_id=vm.instance_id or split_worker_id(worker_id)[1],
        zone=zone_of(vm.zones),
        state=vm_state(vm.provisioning_state),
    )


def flexible_vm(vm: VirtualMachine) -> ScaleSetVm | None:
    """A Flexible scale set's VM is known by its name alone; one without a name is skipped."""
    if not vm.name:
        return None
    return ScaleSetVm(
        worker_id=vm.name,
        instance_id=vm.name,
        zone=zone_of(vm.zones),
        state=vm_state(vm.provisioning_state),
    )


def flexible_member_of(vm: VirtualMachine, scale_set_id: str) -> bool:
    """False only for a VM that names another scale set (ARM ids compare case-insensitively).

    The `$filter` already asked ARM for this scale set's VMs; one without the
    reference is taken on trust, since dropping it would hide a live worker.
    """
    ref = vm.virtual_machine_scale_set
    return ref is None or not ref.id or ref.id.lower() == scale_set_id.lower()


def vmss_filter(scale_set_id: str) -> str:
    """The `$filter` of Virtual Machines - List that keeps one Flexible scale set's VMs."""
    return f"'virtualMachineScaleSet/id' eq '{scale_set_id}'"


def scale_set_name_of(worker_id: str) -> str:
    """The scale set a worker belongs to: both modes name VMs `{scale set}_{suffix}`.

    Scale set names may themselves hold "_"; the suffix never does.
    """
    scale_set, sep, suffix = worker_id.rpartition("_")
    if not sep or not scale_set or not suffix:
        raise ValueError(
            f"{worker_id!r} is not a scale set VM name ({{scale set}}_{{instance id or suffix}})"
        )
    return scale_set


def split_worker_id(worker_id: str) -> tuple[str, str]:
    """(scale set, instance id) of a Uniform worker id."""
    scale_set, sep, instance_id = worker_id.rpartition("_")
    if not sep or not scale_set or not instance_id.isdigit():
        raise ValueError(
            f"{worker_id!r} is not a scale set VM name ({{scale set}}_{{instance id}})"
        )
    return scale_set, instance_id


def instance_id_of(scale_set: ScaleSet, worker_id: str) -> str:
    """What deleteInstances takes for this worker: Flexible takes the VM name as it is."""
    if scale_set.flexible:
        return worker_id
    return split_worker_id(worker_id)[1]

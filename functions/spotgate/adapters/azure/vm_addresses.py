"""Where the cloud put each worker VM: its private IP, read from its network interface.

The IP is what a worker's registration is checked against, so it must come
from Azure, not from the agent. It lives on the VM's NIC, which the network
resource provider serves: a Uniform scale set's NICs are listed through the
scale set, a Flexible VM's NIC is an ordinary resource of the group. A failed
listing is logged and yields nothing, so the workers it covers wait for a
later listing to register, rather than the monitor losing its view of the fleet.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, Iterable

from azure.core.exceptions import AzureError
from azure.mgmt.network.aio import NetworkManagementClient
from azure.mgmt.network.models import NetworkInterface

log = logging.getLogger(__name__)


def _primary_first(nics: Iterable[NetworkInterface]) -> NetworkInterface | None:
    """The VM's primary NIC, else the first listed."""
    listed = list(nics)
    return next((n for n in listed if n.primary), listed[0] if listed else None)


def private_ip_of(nics: Iterable[NetworkInterface]) -> str | None:
    """The private IP of a VM's NICs: the primary NIC's primary ipConfiguration (else the first).

    Read flattened (`nic.ip_configurations`, `config.private_ip_address`), which both the
    older msrest-generated azure-mgmt-network models and the newer ones (`properties`
    kept, flattened names still answered) accept.
    """
    nic = _primary_first(nics)
    configs = list((nic.ip_configurations if nic is not None else None) or [])
    config = next((c for c in configs if c.primary), configs[0] if configs else None)
    return (config.private_ip_address or None) if config is not None else None


class PrivateAddresses:
    def __init__(self, network: NetworkManagementClient, resource_group: str) -> None:
        self._network = network
        self._rg = resource_group

    async def close(self) -> None:
        await self._network.close()

    async def by_vm_id(
        self, uniform_scale_sets: Iterable[str], any_flexible: bool
    ) -> dict[str, str | None]:
        """Private IP by lower-cased VM id: one NIC listing per Uniform scale set named,
        and one of the resource group if any Flexible scale set has VMs."""
        nics = self._network.network_interfaces
        lookups = [
            self._listed(
                f"NICs of scale set {name}",
                nics.list_virtual_machine_scale_set_network_interfaces(self._rg, name),
            )
            for name in uniform_scale_sets
        ]
        if any_flexible:
            lookups.append(self._listed(f"NICs of resource group {self._rg}", nics.list(self._rg)))
        addresses: dict[str, str | None] = {}
        for found in await asyncio.gather(*lookups):
            addresses.update(found)
        return addresses

    @staticmethod
    async def _listed(what: str, nics: AsyncIterable[NetworkInterface]) -> dict[str, str | None]:
        """ARM ids come back in either case, so they are matched lower-cased."""
        by_vm: dict[str, list[NetworkInterface]] = {}
        try:
            async for nic in nics:
                vm = nic.virtual_machine
                if vm is not None and vm.id:
                    by_vm.setdefault(vm.id.lower(), []).append(nic)
        except AzureError as err:
            log.warning(
                "listing %s failed, private IPs unknown until the next listing: %s", what, err
            )
            return {}
        return {vm_id: private_ip_of(attached) for vm_id, attached in by_vm.items()}

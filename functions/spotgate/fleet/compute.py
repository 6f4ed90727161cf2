"""The port through which the fleet monitor buys and returns capacity (VM Scale Sets, or processes).

The monitor only ever asks three things of a cloud: add `count` workers of a
priority in a zone, delete these exact workers, and list what exists. It never
lowers a scale set's capacity blindly, because the cloud would pick which VM
dies, and it might be the one serving a long stream; deleting named, drained
workers is the only way down.

A refusal to allocate (no spot capacity, SKU not offered in the zone, quota)
is not an error of the monitor: it is a signal the capacity mix acts on, so
providers raise `CapacityError` with a normalised reason and the activity
records it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

# ARM error codes that mean "the cloud has no such capacity for you now", by normalised reason.
_CAPACITY_CODES = {
    "skunotavailable": "sku_not_available",
    "zonalallocationfailed": "allocation_failed",
    "allocationfailed": "allocation_failed",
    "overconstrainedallocationrequest": "overconstrained",
    "overconstrainedzonalallocationrequest": "overconstrained",
    "spotvmevictedatcreation": "allocation_failed",
    "operationnotallowed": "quota",
    "quotaexceeded": "quota",
    "lowpriorityquotaexceeded": "quota",
    "spotquotaexceeded": "quota",
}


def capacity_reason(code: str | None, message: str = "") -> str | None:
    """The normalised capacity reason of an ARM error, or None if it is some other failure.

    `OperationNotAllowed` is ARM's code for many refusals; it is a capacity
    matter only when the message is about quota.
    """
    key = (code or "").replace("_", "").lower()
    reason = _CAPACITY_CODES.get(key)
    if key == "operationnotallowed" and "quota" not in message.lower():
        return None
    return reason


class CapacityError(Exception):
    """The cloud refused to allocate; `reason` is one of capacity_reason()'s values.

    A scale-out can half succeed: `provisioned` lists the workers that did
    start, so the caller still records them while it reports the refusal.
    """

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        priority: str,
        zone: str | None,
        code: str = "",
        provisioned: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.code = code
        self.priority = priority
        self.zone = zone
        self.provisioned = list(provisioned)


@dataclass(frozen=True)
class ProvisionRequest:
    """Add `count` workers of a priority in a zone (None: no zone) to a pool: one scale set."""

    pool: str
    priority: str
    zone: str | None
    count: int

    def to_dict(self) -> dict[str, Any]:
        """The activity payload, keys in the order the monitor has always written them."""
        return {
            "priority": self.priority,
            "zone": self.zone,
            "count": self.count,
            "pool": self.pool,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProvisionRequest:
        zone = data.get("zone")
        return cls(
            pool=str(data["pool"]),
            priority=str(data["priority"]),
            zone=None if zone is None else str(zone),
            count=int(data["count"]),
        )


@dataclass(frozen=True)
class Instance:
    """A VM (or local process) as the cloud lists it; `worker_id` is what its agent registers as."""

    worker_id: str
    pool: str
    priority: str
    zone: str | None = None
    state: str = "running"  # creating | running | deleting | failed
    private_ip: str | None = None
    """Where the cloud placed it: the only address its agent may register (None: not known yet)."""
    port: int | None = None
    """The port its engine listens on, when the provider chose it (local processes)."""


class ComputeProvider(Protocol):
    async def provision(self, request: ProvisionRequest) -> list[str]:
        """Start up to `request.count` workers; return the ids of those that did start.

        Raises CapacityError when the cloud refuses (with `provisioned` set if
        some started). The monitor sends at most one request per scale set per
        tick, which is what lets a provider find the new instances by listing.
        """
        ...

    async def delete(self, pool: str, worker_ids: Sequence[str]) -> list[str]:
        """Delete exactly these workers; ids already gone count as deleted and are returned."""
        ...

    async def instances(self, pool: str) -> list[Instance]:
        """Every instance of the pool the cloud knows, whatever its state."""
        ...

"""What the fleet activities need from the host, as a contract both hosts satisfy.

Activities are the only orchestration code allowed to do I/O, and they run
in two places: the Azure Functions host (where the blueprint wrappers fetch
services from a provider set at startup) and the local runner (where the
activity table closes over services directly). Both hand the activity
functions an object of this shape, so the activities never know which host
they are in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from spotgate.clock import Clock
from spotgate.fleet.compute import ComputeProvider
from spotgate.fleet.journal import FleetJournal, InMemoryFleetJournal
from spotgate.fleet.observation import DemandSource
from spotgate.fleet.registry import WorkerRegistry


class FleetServices(Protocol):
    registry: WorkerRegistry
    clock: Clock
    heartbeat_timeout_s: float
    journal: FleetJournal
    compute: ComputeProvider | None
    demand: DemandSource | None

    def in_flight(self, worker_id: str) -> int:
        """Requests this gateway has open on the worker (0 where it cannot know)."""
        ...


def _nothing_in_flight(_worker_id: str) -> int:
    return 0


@dataclass
class SimpleFleetServices:
    """A plain bundle that satisfies FleetServices, for the local stack and tests.

    `compute` None means there is nothing to act on (a control plane that
    only watches); the monitor then observes and decides but provisions and
    deletes nothing.
    """

    registry: WorkerRegistry
    clock: Clock
    heartbeat_timeout_s: float = 6.0
    journal: FleetJournal = field(default_factory=InMemoryFleetJournal)
    compute: ComputeProvider | None = None
    demand: DemandSource | None = None
    in_flight: Callable[[str], int] = _nothing_in_flight

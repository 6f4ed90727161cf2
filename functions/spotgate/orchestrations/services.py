"""What the fleet activities need from the host, as a contract both hosts satisfy.

Activities are the only orchestration code allowed to do I/O, and they run
in two places: the Azure Functions host (where the blueprint wrappers fetch
services from a provider set at startup) and the local runner (where the
activity table closes over services directly). Both hand the activity
functions an object of this shape, so the activities never know which host
they are in.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, overload

from spotgate.clock import Clock
from spotgate.fleet.registry import WorkerRegistry


class DecisionLog(Protocol):
    def append(self, decision: dict[str, Any]) -> None: ...

    def recent(self, n: int) -> list[dict[str, Any]]: ...


class FleetServices(Protocol):
    registry: WorkerRegistry
    clock: Clock
    heartbeat_timeout_s: float
    decisions: DecisionLog


class InMemoryDecisionLog:
    """Keeps the newest decisions only: the monitor runs forever and operators want the tail."""

    def __init__(self, maxlen: int = 500) -> None:
        self._items: deque[dict[str, Any]] = deque(maxlen=maxlen)

    def append(self, decision: dict[str, Any]) -> None:
        self._items.append(decision)

    def recent(self, n: int) -> list[dict[str, Any]]:
        if n <= 0:
            return []
        return list(self._items)[-n:]

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        """List-style reads, so it can stand in for a plain list (`log[-20:]`)."""
        return list(self._items)[index]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(list(self._items))


@dataclass
class SimpleFleetServices:
    """A plain bundle that satisfies FleetServices, for the local stack and tests."""

    registry: WorkerRegistry
    clock: Clock
    heartbeat_timeout_s: float = 6.0
    decisions: DecisionLog = field(default_factory=InMemoryDecisionLog)

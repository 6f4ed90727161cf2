"""Starting, poking and reading orchestrations, whichever host runs them; no Durable SDK here.

Locally the in-process runner implements `OrchestrationControl`, on Azure the
Durable client does (adapters/azure/durable_client_control.py). `MonitorWaker`
is the one way anything makes a fleet monitor tick now rather than at its
next timer: an eviction report, a worker lost without notice, a request
waiting on a pool at zero; the same on both hosts.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from spotgate.orchestrations.monitor_contract import WAKE_EVENT, monitor_instance_id

log = logging.getLogger("spotgate.orchestrations")


class OrchestrationControl(Protocol):
    @property
    def available(self) -> bool:
        """False while this process cannot reach its orchestrations (no client yet)."""
        ...

    async def start(self, name: str, instance_id: str, input: Any) -> str: ...

    async def raise_event(self, instance_id: str, name: str, data: Any = None) -> None: ...

    async def terminate(self, instance_id: str, reason: str) -> None: ...

    async def get_status(self, instance_id: str) -> dict[str, Any] | None:
        """Durable's status shape (name, instanceId, runtimeStatus, ...), None if unknown."""
        ...

    def management_links(self, base_url: str, instance_id: str) -> dict[str, str]:
        """The check-status payload: statusQueryGetUri, terminatePostUri, sendEventPostUri."""
        ...


class MonitorWaker:
    """Wakes a pool's monitor if one runs; a wake that cannot be delivered costs one tick."""

    def __init__(self, control: OrchestrationControl | None) -> None:
        self._control = control

    async def wake(self, pool: str) -> None:
        control = self._control
        if control is None:
            return
        instance_id = monitor_instance_id(pool)
        try:
            if await control.get_status(instance_id) is not None:
                await control.raise_event(instance_id, WAKE_EVENT)
        except Exception:  # the store is the truth: the next tick sees the change anyway
            log.warning("could not wake %s; its next tick will see the change", instance_id)

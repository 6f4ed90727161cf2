"""The orchestration endpoints on Azure, served through the Durable Functions client.

The HTTP function has its own durable client input binding and hands the
client over on every request (hosts/azure.py); the watchdog timer hands its
own over too, for an instance that runs only timers and activities. The
control keeps the newest: a client is only a set of management URLs for this
app's task hub, valid for the app's lifetime.
"""

from __future__ import annotations

from typing import Any

import azure.durable_functions as df


class OrchestrationsUnavailable(RuntimeError):
    """No durable client has reached this process yet (requests and the watchdog hand one over)."""


class DurableClientControl:
    """OrchestrationControl (orchestrations/control.py) over a `DurableOrchestrationClient`,
    adopted when a request or the watchdog hands one over; until then `available` is False."""

    def __init__(self, client: df.DurableOrchestrationClient | None = None) -> None:
        self._client = client

    def adopt(self, client: df.DurableOrchestrationClient) -> None:
        self._client = client

    @property
    def available(self) -> bool:
        return self._client is not None

    @property
    def client(self) -> df.DurableOrchestrationClient:
        if self._client is None:
            raise OrchestrationsUnavailable("no durable client in this process yet")
        return self._client

    async def start(self, name: str, instance_id: str, input: Any) -> str:
        return str(await self.client.start_new(name, instance_id, input))

    async def raise_event(self, instance_id: str, name: str, data: Any = None) -> None:
        await self.client.raise_event(instance_id, name, data)

    async def terminate(self, instance_id: str, reason: str) -> None:
        await self.client.terminate(instance_id, reason)

    async def get_status(self, instance_id: str) -> dict[str, Any] | None:
        if self._client is None:
            return None
        status = await self._client.get_status(instance_id, show_input=True)
        # a missing instance comes back as a falsy status object, not None
        if not status or getattr(status, "runtime_status", None) is None:
            return None
        return dict(status.to_json())

    def management_links(self, base_url: str, instance_id: str) -> dict[str, str]:
        """The host's own check-status payload (webhook URLs with the task hub's key)."""
        return dict(self.client.get_client_response_links(None, instance_id))

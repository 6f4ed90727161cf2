"""What a running process is made of: every part the API and the activities reach.

A host (spotgate/hosts/) builds it whole, once; nothing assigns to it
afterwards. The API reaches everything through it (`request.app.state.runtime`),
so routes stay a parse and one call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from spotgate.batch.service import BatchService
from spotgate.clock import Clock
from spotgate.costs.usage_reports import UsageReports
from spotgate.fleet.control_plane import ControlPlane
from spotgate.fleet.journal import FleetJournal
from spotgate.fleet.registry import WorkerRegistry
from spotgate.gateway.cache.response_cache import ResponseCache
from spotgate.gateway.health_probe import HealthProbe
from spotgate.gateway.in_flight import InFlight
from spotgate.gateway.routing import Router
from spotgate.gateway.serving import Serving
from spotgate.gateway.tenancy.admins import Roles
from spotgate.gateway.tenancy.tenancy import Tenancy
from spotgate.gateway.upstream import UpstreamClient
from spotgate.orchestrations.control import OrchestrationControl
from spotgate.orchestrations.monitor_contract import MonitorPlan
from spotgate.secret_store import SecretStore
from spotgate.settings import Settings
from spotgate.telemetry.telemetry import Telemetry


class Lifecycle(Protocol):
    """Something the app starts before it serves and closes after (store sync, pollers)."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class LocalFaults(Protocol):
    """Fault injection only a local stack offers: crash, eviction notice, spot refused."""

    def kill(self, worker_id: str) -> bool: ...

    def evict(self, worker_id: str, notice_s: float) -> dict[str, Any]: ...

    def spot(self, available: bool, zone: str | None) -> dict[str, Any]: ...


class ScheduledEventsSource(Protocol):
    """The local stand-in for Azure's Scheduled Events endpoint, one document per worker."""

    def document(self, worker_id: str) -> dict[str, Any]: ...

    def acknowledge(self, worker_id: str, event_ids: list[str]) -> int: ...


@dataclass
class Readiness:
    """Whether startup finished: the one thing about a runtime that changes after it is built."""

    ready: bool = False


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    clock: Clock
    registry: WorkerRegistry
    in_flight: InFlight
    router: Router
    serving: Serving
    control_plane: ControlPlane
    journal: FleetJournal
    monitors: MonitorPlan
    upstream: UpstreamClient
    tenancy: Tenancy
    usage_reports: UsageReports
    roles: Roles
    secrets: SecretStore
    response_cache: ResponseCache | None = None
    batches: BatchService | None = None
    """OpenAI's Files and Batches API; its routes exist only when it is set."""
    orchestrations: OrchestrationControl | None = None
    faults: LocalFaults | None = None
    scheduled_events: ScheduledEventsSource | None = None
    probe: HealthProbe | None = None
    telemetry: Telemetry = field(default_factory=Telemetry)
    lifecycles: tuple[Lifecycle, ...] = ()
    readiness: Readiness = field(default_factory=Readiness)

    @property
    def ready(self) -> bool:
        return self.readiness.ready

    async def start(self) -> None:
        for lifecycle in self.lifecycles:
            await lifecycle.start()
        await self.tenancy.start()  # after the lifecycles: it reads secrets and stores
        if self.probe is not None:
            await self.probe.start()
        self.readiness.ready = True

    async def close(self) -> None:
        self.readiness.ready = False
        if self.probe is not None:
            await self.probe.stop()
        await self.upstream.close()
        await self.router.close()
        if self.response_cache is not None:
            await self.response_cache.close()
        await self.tenancy.close()  # after the router: every request has finished and been metered
        # Last, as they started first: the cache's pending puts may use their clients (Cosmos).
        for lifecycle in reversed(self.lifecycles):
            await lifecycle.close()

"""The composition root: which adapters back the core in this process.

Routes and the dev stack reach everything through one Runtime, built once
per process from Settings; tests build one with fakes where nothing real can
run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from spotgate.adapters.cache_factory import build_response_cache
from spotgate.adapters.pooled_upstream import PooledHttpUpstream
from spotgate.adapters.router_factory import build_router
from spotgate.clock import Clock, SystemClock
from spotgate.fleet.journal import FleetJournal, InMemoryFleetJournal
from spotgate.fleet.registry import WorkerRegistry
from spotgate.fleet.store import WorkerStore
from spotgate.gateway.cache_store import CacheStore
from spotgate.gateway.catalog import ModelCatalog
from spotgate.gateway.forwarding import Forwarder
from spotgate.gateway.health import PassiveHealth
from spotgate.gateway.health_probe import HealthProbe
from spotgate.gateway.load import OutstandingRequests
from spotgate.gateway.model_catalogue import load_catalogue
from spotgate.gateway.quarantine import RequestQuarantine
from spotgate.gateway.response_cache import ResponseCache
from spotgate.gateway.routing import Router
from spotgate.gateway.selection import PolicyOptions, SelectionPolicy
from spotgate.gateway.upstream import UpstreamClient
from spotgate.settings import Settings


class OrchestrationControl(Protocol):
    """Start, poke and read orchestrations: the local runner, or the Durable client on Azure."""

    async def start(self, name: str, instance_id: str, input: Any) -> str: ...

    async def raise_event(self, instance_id: str, name: str, data: Any = None) -> None: ...

    async def terminate(self, instance_id: str, reason: str) -> None: ...

    async def get_status(self, instance_id: str) -> dict[str, Any] | None:
        """Durable's status shape (name, instanceId, runtimeStatus, ...), None if unknown."""
        ...

    def management_links(self, base_url: str, instance_id: str) -> dict[str, str]:
        """The check-status payload: statusQueryGetUri, terminatePostUri, sendEventPostUri."""
        ...


class Lifecycle(Protocol):
    """Something the app starts before it serves and closes after (store sync, pollers)."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class LocalFaults(Protocol):
    """Fault injection only a local stack offers: crash, eviction notice, spot refused."""

    def kill(self, worker_id: str) -> bool: ...

    def evict(self, worker_id: str, notice_s: float) -> dict[str, Any]: ...

    def spot(self, available: bool, zone: str | None) -> dict[str, Any]: ...


@dataclass
class Runtime:
    settings: Settings
    clock: Clock
    registry: WorkerRegistry
    load: OutstandingRequests
    router: Router
    upstream: UpstreamClient
    orchestrations: OrchestrationControl | None = None
    faults: LocalFaults | None = None
    scheduled_events: Any = None
    journal: FleetJournal = field(default_factory=InMemoryFleetJournal)
    ready: bool = False
    response_cache: ResponseCache | None = None
    probe: HealthProbe | None = None  # started by the app's lifespan
    lifecycles: list[Lifecycle] = field(default_factory=list)

    async def start(self) -> None:
        for lifecycle in self.lifecycles:
            await lifecycle.start()
        if self.probe is not None:
            await self.probe.start()
        self.ready = True

    async def close(self) -> None:
        self.ready = False
        if self.probe is not None:
            await self.probe.stop()
        await self.upstream.close()
        await self.router.close()
        if self.response_cache is not None:
            await self.response_cache.close()
        # Last, as they started first: the cache's pending puts may use their clients (Cosmos).
        for lifecycle in reversed(self.lifecycles):
            await lifecycle.close()


def build_runtime(
    settings: Settings,
    store: WorkerStore,
    *,
    clock: Clock | None = None,
    upstream: UpstreamClient | None = None,
    policy: str | None = None,
    cache_store: CacheStore | None = None,
) -> Runtime:
    clock = clock or SystemClock()
    longest_ttl = max(
        [settings.cache_ttl_s, *(float(r.get("ttl_s", 0)) for r in settings.cache_rules.values())]
    )
    registry = WorkerRegistry(store, clock, distrust_retention_s=max(86_400.0, longest_ttl))
    load = OutstandingRequests()
    health = PassiveHealth(
        clock,
        settings.worker_cooldown_s,
        failure_threshold=settings.breaker_failure_threshold,
        max_cooldown_s=settings.breaker_max_cooldown_s,
    )
    upstream = upstream or PooledHttpUpstream(
        connect_timeout_s=settings.upstream_connect_timeout_s,
        read_timeout_s=settings.upstream_read_timeout_s,
        stream_read_timeout_s=settings.upstream_stream_read_timeout_s,
    )
    options = PolicyOptions(
        settings.prefix_affinity_chars,
        settings.prefix_affinity_min_chars,
        settings.prefix_affinity_slack,
        settings.prefix_affinity_factor,
    )
    forwarder = Forwarder(
        registry,
        upstream,
        SelectionPolicy.make(policy or settings.selection_policy, load, options),
        load,
        health,
        clock,
        max_attempts=settings.upstream_max_attempts,
        capacity_wait_s=settings.capacity_wait_s,
        first_byte_timeout_s=settings.upstream_first_byte_timeout_s,
        stream_first_byte_timeout_s=settings.upstream_stream_first_byte_timeout_s,
        retry_deadline_s=settings.upstream_retry_deadline_s,
        stream_resumes=settings.stream_resumes,
        resume_wait_s=settings.stream_resume_wait_s,
        quarantine=RequestQuarantine(
            clock,
            deaths_to_quarantine=settings.quarantine_after_deaths,
            ttl_s=settings.quarantine_ttl_s,
        ),
    )
    catalog = ModelCatalog(
        registry,
        settings.models,
        load_catalogue(settings.model_catalogue, settings.catalogue_file),
        auto_name=settings.auto_model_name,
    )
    router = build_router(settings, registry, catalog, forwarder, upstream, health)
    return Runtime(
        settings=settings,
        clock=clock,
        registry=registry,
        load=load,
        router=router,
        upstream=upstream,
        response_cache=build_response_cache(settings, clock, cache_store, registry.trusted),
        probe=HealthProbe(
            registry,
            health,
            interval_s=settings.health_probe_interval_s,
            timeout_s=settings.health_probe_timeout_s,
        ),
    )

"""The gateway and control plane every host runs: built from settings, adapters chosen here.

`build_gateway` makes the parts that serve requests and agents (registry,
router, cache, pipeline); `assemble_runtime` adds what a host brings (its
orchestration control, journal, faults, lifecycles) and returns the whole
Runtime. `build_runtime` does both, for hosts with nothing to add between
them, tests and benchmarks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from spotgate.adapters.http_upstream import AiohttpUpstream
from spotgate.adapters.pooled_upstream import PooledHttpUpstream
from spotgate.batch.service import BatchService
from spotgate.clock import Clock, SystemClock
from spotgate.costs.price_table import PriceTable
from spotgate.costs.usage_reports import UsageReports
from spotgate.fleet.control_plane import ControlPlane
from spotgate.fleet.fleet_policy import FleetPolicyConfig
from spotgate.fleet.journal import FleetJournal, InMemoryFleetJournal
from spotgate.fleet.registration import parse_networks
from spotgate.fleet.registry import WorkerRegistry
from spotgate.fleet.store import WorkerStore
from spotgate.fleet.worker import Worker, WorkerState
from spotgate.fleet.worker_span_recorder import WorkerSpanRecorder, spans_between
from spotgate.fleet.worker_spans import WorkerSpan
from spotgate.gateway.admission import Admission, PoolCapacity
from spotgate.gateway.auto_model import AutoModelChooser
from spotgate.gateway.breaker import BreakerState
from spotgate.gateway.cache.answers import AnswerKeeper
from spotgate.gateway.cache.policy import CachePolicy, CacheRule
from spotgate.gateway.cache.response_cache import ResponseCache
from spotgate.gateway.cache.store import CacheStore, InMemoryCacheStore
from spotgate.gateway.catalog import ModelCatalog
from spotgate.gateway.forwarding import Forwarder
from spotgate.gateway.health import PassiveHealth
from spotgate.gateway.health_probe import HealthProbe
from spotgate.gateway.in_flight import InFlight
from spotgate.gateway.model_catalogue import load_catalogue
from spotgate.gateway.quarantine import RequestQuarantine
from spotgate.gateway.routing import Router
from spotgate.gateway.selection import PolicyOptions, SelectionPolicy
from spotgate.gateway.serving import RequestLimitsStep, Serving, ServingStep
from spotgate.gateway.spillover import SpilloverClient
from spotgate.gateway.tenancy.admins import AdminTokens, Roles
from spotgate.gateway.tenancy.tenancy import Tenancy, TenancyStores
from spotgate.gateway.token_counting import TokenCounter
from spotgate.gateway.upstream import UpstreamClient
from spotgate.gateway.worker_key import WorkerKeyUpstream
from spotgate.hosts.tenancy import build_tenancy, memory_stores, settings_secrets
from spotgate.orchestrations.control import MonitorWaker, OrchestrationControl
from spotgate.orchestrations.monitor_contract import MonitorPlan
from spotgate.runtime import Lifecycle, LocalFaults, Runtime, ScheduledEventsSource
from spotgate.secret_store import SecretStore
from spotgate.settings import Settings
from spotgate.telemetry.fleet_metrics import FleetReadings
from spotgate.telemetry.telemetry import Telemetry, TelemetryStep


@dataclass(frozen=True)
class GatewayParts:
    """What serves requests, before a host adds its orchestrations."""

    settings: Settings
    clock: Clock
    registry: WorkerRegistry
    in_flight: InFlight
    router: Router
    serving: Serving
    upstream: UpstreamClient
    response_cache: ResponseCache | None
    probe: HealthProbe
    tenancy: Tenancy
    roles: Roles
    secrets: SecretStore
    telemetry: Telemetry
    health: PassiveHealth


def cache_policy_from(settings: Settings) -> CachePolicy:
    default = CacheRule(
        ttl_s=settings.cache.ttl_s, deterministic_only=settings.cache.deterministic_only
    )
    rules = {
        model: CacheRule(
            enabled=bool(rule.get("enabled", True)),
            ttl_s=float(rule.get("ttl_s", default.ttl_s)),
            deterministic_only=bool(rule.get("deterministic_only", default.deterministic_only)),
            max_entry_bytes=int(rule.get("max_entry_bytes", default.max_entry_bytes)),
            shared=bool(rule.get("shared", default.shared)),
        )
        for model, rule in settings.cache.rules.items()
    }
    return CachePolicy(rules, default)


def _cache_store(settings: Settings, clock: Clock) -> CacheStore | None:
    if settings.cache.backend == "off":
        return None
    if settings.cache.backend == "memory":
        return InMemoryCacheStore(clock, max_bytes=settings.cache.max_bytes)
    from spotgate.adapters.local.sqlite_cache_store import SqliteCacheStore

    return SqliteCacheStore(
        settings.data_dir / "cache.sqlite3", max_bytes=settings.cache.max_bytes, clock=clock
    )


def _router(
    settings: Settings,
    registry: WorkerRegistry,
    forwarder: Forwarder,
    upstream: UpstreamClient,
    health: PassiveHealth,
    secrets: SecretStore,
) -> Router:
    """Admission per pool, the `auto` model and spillover clients around the forwarder."""
    catalog = ModelCatalog(
        registry,
        settings.models,
        load_catalogue(settings.gateway.model_catalogue, settings.gateway.catalogue_file),
        auto_name=settings.gateway.auto_model_name,
    )
    capacity = PoolCapacity(registry, settings.gateway.worker_max_concurrency)
    admission = Admission(capacity, max_queue=settings.gateway.admission_queue_limit)
    capacity.on_change(admission.notify)
    auto = None
    if settings.gateway.auto_model_name:
        counter = TokenCounter(
            registry,
            upstream,
            timeout_s=settings.gateway.token_count_timeout_s,
            usable=health.available,
        )
        auto = AutoModelChooser(
            catalog,
            counter,
            default_completion_tokens=settings.gateway.auto_default_completion_tokens,
            auto_name=settings.gateway.auto_model_name,
        )
    spillover = None
    if any(entry.spillover is not None for entry in catalog.entries):
        # managed endpoints are HTTPS, which the worker client does not speak
        https = AiohttpUpstream(
            connect_timeout_s=settings.gateway.upstream_connect_timeout_s,
            read_timeout_s=settings.gateway.upstream_read_timeout_s,
        )
        spillover = SpilloverClient(https, secrets.get)
    return Router(
        catalog,
        forwarder,
        admission,
        capacity,
        auto=auto,
        spillover=spillover,
        admission_wait_s=settings.gateway.capacity_wait_s,
    )


def build_gateway(
    settings: Settings,
    store: WorkerStore,
    *,
    clock: Clock | None = None,
    upstream: UpstreamClient | None = None,
    policy: str | None = None,
    cache_store: CacheStore | None = None,
    steps: Sequence[ServingStep] = (),
    secrets: SecretStore | None = None,
    tenancy_stores: TenancyStores | None = None,
    admin_tokens: AdminTokens | None = None,
    telemetry: Telemetry | None = None,
) -> GatewayParts:
    """`steps` run after the built-in ones (request limits, keys, limits, metering).
    Without `secrets`, the environment and the settings' keys; without `tenancy_stores`,
    memory (keys made through the admin API last as long as the process); without
    `telemetry`, the global OpenTelemetry providers beside `/metrics`."""
    clock = clock or SystemClock()
    telemetry = telemetry or Telemetry()
    secrets = secrets or settings_secrets(settings)
    ttls = [
        settings.cache.ttl_s,
        *(float(r.get("ttl_s", 0)) for r in settings.cache.rules.values()),
    ]
    registry = WorkerRegistry(store, clock, distrust_retention_s=max(86_400.0, *ttls))
    in_flight = InFlight()
    health = PassiveHealth(
        clock,
        settings.gateway.worker_cooldown_s,
        failure_threshold=settings.gateway.breaker_failure_threshold,
        max_cooldown_s=settings.gateway.breaker_max_cooldown_s,
    )
    upstream = WorkerKeyUpstream(
        upstream
        or PooledHttpUpstream(
            connect_timeout_s=settings.gateway.upstream_connect_timeout_s,
            read_timeout_s=settings.gateway.upstream_read_timeout_s,
            stream_read_timeout_s=settings.gateway.upstream_stream_read_timeout_s,
        ),
        secrets.get,
    )
    options = PolicyOptions(
        settings.gateway.prefix_affinity_chars,
        settings.gateway.prefix_affinity_min_chars,
        settings.gateway.prefix_affinity_slack,
        settings.gateway.prefix_affinity_factor,
    )
    forwarder = Forwarder(
        registry,
        telemetry.traced(upstream, registry),  # a span per attempt on a worker
        SelectionPolicy.make(policy or settings.gateway.selection_policy, in_flight, options),
        in_flight,
        health,
        clock,
        max_attempts=settings.gateway.upstream_max_attempts,
        capacity_wait_s=settings.gateway.capacity_wait_s,
        first_byte_timeout_s=settings.gateway.upstream_first_byte_timeout_s,
        stream_first_byte_timeout_s=settings.gateway.upstream_stream_first_byte_timeout_s,
        retry_deadline_s=settings.gateway.upstream_retry_deadline_s,
        stream_resumes=settings.gateway.stream_resumes,
        resume_wait_s=settings.gateway.stream_resume_wait_s,
        quarantine=RequestQuarantine(
            clock,
            deaths_to_quarantine=settings.gateway.quarantine_after_deaths,
            ttl_s=settings.gateway.quarantine_ttl_s,
        ),
    )
    router = _router(settings, registry, forwarder, upstream, health, secrets)
    router.admission.on_wait_ended(telemetry.admitted)
    store_for_cache = cache_store or _cache_store(settings, clock)
    cache = None
    if store_for_cache is not None:
        cache = ResponseCache(
            store_for_cache,
            cache_policy_from(settings),
            clock,
            timeout_s=settings.cache.timeout_s,
            trusted=registry.trusted,
        )
    tenancy = build_tenancy(
        settings, tenancy_stores or memory_stores(clock), secrets, registry, clock
    )
    authorise, *accounting = tenancy.steps
    serving = Serving(
        router,
        registry,
        cache,
        AnswerKeeper(cache, clock) if cache is not None else None,
        clock,
        steps=(
            authorise,
            RequestLimitsStep(settings.gateway.request_limits),
            *accounting,
            TelemetryStep(telemetry),  # after metering: it reads the request's usage record
            *steps,
        ),
    )
    probe = HealthProbe(
        registry,
        health,
        interval_s=settings.gateway.health_probe_interval_s,
        timeout_s=settings.gateway.health_probe_timeout_s,
    )
    return GatewayParts(
        settings,
        clock,
        registry,
        in_flight,
        router,
        serving,
        upstream,
        cache,
        probe,
        tenancy,
        Roles(secrets, admin_tokens),
        secrets,
        telemetry,
        health,
    )


def monitor_plan(
    settings: Settings, policies: Mapping[str, FleetPolicyConfig] | None = None
) -> MonitorPlan:
    """Every pool's monitor as the settings start it (a host may pin some pools' policies)."""
    pinned = dict(policies or {})
    return MonitorPlan(
        pools=tuple(settings.pools),
        policies={pool: pinned.get(pool) or settings.fleet_policy(pool) for pool in settings.pools},
        tick_seconds=settings.fleet.monitor_tick_s,
        ticks_per_run=settings.fleet.monitor_ticks_per_run,
    )


def wake_on_loss_and_cold_waits(parts: GatewayParts, waker: MonitorWaker) -> None:
    """The monitor ticks at once when a worker is lost without notice or a request waits
    on a pool at zero; an eviction report wakes it from the control plane."""
    background: set[asyncio.Task[None]] = set()

    def wake(pool: str) -> None:
        task = asyncio.get_running_loop().create_task(waker.wake(pool))
        background.add(task)
        task.add_done_callback(background.discard)

    def on_change(worker: Worker) -> None:
        if worker.state == WorkerState.GONE and not worker.retired:
            wake(worker.pool)

    parts.registry.subscribe(on_change)
    parts.router.admission.on_cold_wait(wake)


def usage_reports(parts: GatewayParts, journal: FleetJournal) -> UsageReports:
    """Reports priced from the settings' price table, over the journal's and registry's
    GPU time (each worker's SKU from its pool's setting)."""
    config = parts.settings.tenancy

    def spans(since: float, until: float) -> list[WorkerSpan]:
        return spans_between(journal, parts.registry, config.sku_for, since, until)

    prices = PriceTable.load(config.price_table)
    return UsageReports(parts.tenancy.recorder, spans, prices, config.price_region, parts.clock)


def assemble_runtime(
    parts: GatewayParts,
    *,
    journal: FleetJournal | None = None,
    orchestrations: OrchestrationControl | None = None,
    monitors: MonitorPlan | None = None,
    faults: LocalFaults | None = None,
    scheduled_events: ScheduledEventsSource | None = None,
    lifecycles: Sequence[Lifecycle] = (),
    batches: BatchService | None = None,
) -> Runtime:
    settings = parts.settings
    journal = InMemoryFleetJournal() if journal is None else journal
    WorkerSpanRecorder(parts.registry, journal, settings.tenancy.sku_for, clock=parts.clock)
    waker = MonitorWaker(orchestrations)
    if orchestrations is not None:
        wake_on_loss_and_cold_waits(parts, waker)
    control_plane = ControlPlane(
        parts.registry,
        journal,
        waker,
        pools=settings.pools,
        worker_networks=parse_networks(settings.fleet.worker_networks),
    )
    parts.telemetry.watch_fleet(
        FleetReadings(
            parts.registry,
            journal,
            parts.clock,
            settings.pools,
            parts.router.admission.depth,
            in_flight=parts.router.admission.interactive_in_use,
            breaker_open=lambda: [
                w.id for w in parts.registry.all() if parts.health.state(w.id) == BreakerState.OPEN
            ],
        )
    )
    return Runtime(
        settings=settings,
        clock=parts.clock,
        registry=parts.registry,
        in_flight=parts.in_flight,
        router=parts.router,
        serving=parts.serving,
        control_plane=control_plane,
        journal=journal,
        monitors=monitors or monitor_plan(settings),
        upstream=parts.upstream,
        response_cache=parts.response_cache,
        orchestrations=orchestrations,
        faults=faults,
        scheduled_events=scheduled_events,
        probe=parts.probe,
        tenancy=parts.tenancy,
        usage_reports=usage_reports(parts, journal),
        roles=parts.roles,
        secrets=parts.secrets,
        telemetry=parts.telemetry,
        lifecycles=tuple(lifecycles),
        batches=batches,
    )


def build_runtime(
    settings: Settings,
    store: WorkerStore,
    *,
    clock: Clock | None = None,
    upstream: UpstreamClient | None = None,
    policy: str | None = None,
    cache_store: CacheStore | None = None,
    tenancy_stores: TenancyStores | None = None,
    telemetry: Telemetry | None = None,
    **host: Any,
) -> Runtime:
    """`build_gateway` then `assemble_runtime`; `host` are assemble_runtime's keywords."""
    parts = build_gateway(
        settings,
        store,
        clock=clock,
        upstream=upstream,
        policy=policy,
        cache_store=cache_store,
        tenancy_stores=tenancy_stores,
        telemetry=telemetry,
    )
    return assemble_runtime(parts, **host)

"""The local host: `spotgate dev`, the whole platform in one terminal.

One uvicorn process serves the gateway and the control plane; its lifespan
starts the fleet monitors on the in-process Durable replay engine (the same
orchestrator code as on Azure) and launches the workers as local "VMs".
Ctrl-C runs the lifespan's shutdown, which stops every process it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shlex
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from starlette.applications import Starlette

from spotgate.adapters.local.durable_runner import LocalOrchestrationRunner
from spotgate.adapters.local.env_secrets import EnvSecrets, env_name, persistent_salt
from spotgate.adapters.local.process_compute import LocalProcessCompute, WorkerSpec
from spotgate.adapters.local.scheduled_events import FakeScheduledEvents
from spotgate.adapters.local.spot_market import LocalSpotMarket
from spotgate.adapters.local.sqlite_fleet_journal import SqliteFleetJournal
from spotgate.adapters.local.sqlite_tenancy import (
    SqliteCounterStore,
    SqliteKeyStore,
    SqliteUsageStore,
)
from spotgate.adapters.local.sqlite_worker_store import SqliteWorkerStore
from spotgate.api.app import create_app
from spotgate.clock import SystemClock
from spotgate.errors import NotFound
from spotgate.fleet.compute import ComputeProvider
from spotgate.fleet.fleet_policy import FleetPolicyConfig
from spotgate.fleet.journal import FleetJournal
from spotgate.fleet.observation import DemandSource, WithBatchBacklog
from spotgate.fleet.worker import WorkerState
from spotgate.gateway.admission_demand import AdmissionDemand
from spotgate.gateway.tenancy.tenancy import TenancyStores
from spotgate.hosts.batch import BatchParts, build_batch, local_batch_stores
from spotgate.hosts.gateway import GatewayParts, assemble_runtime, build_gateway, monitor_plan
from spotgate.orchestrations.activities import activity_table
from spotgate.orchestrations.batch_activities import batch_activity_table
from spotgate.orchestrations.batch_job import BATCH_ORCHESTRATOR, batch_job
from spotgate.orchestrations.fleet_monitor import reporting_to
from spotgate.orchestrations.monitor_contract import (
    ORCHESTRATOR_NAME,
    MonitorPlan,
    monitor_instance_id,
)
from spotgate.orchestrations.services import SimpleFleetServices
from spotgate.runtime import Runtime
from spotgate.secret_store import ADMIN_KEY, FLEET_TOKEN, KEY_SALT, SecretStore
from spotgate.settings import Settings, TenancySettings
from spotgate.telemetry.durations import format_duration

log = logging.getLogger("spotgate.dev")


@dataclass
class DevOptions:
    workers: int = 2
    engine: str = "vllm"
    model: str = "smollm2"
    pool: str = "default"
    model_dir: Path | None = None
    ttft_ms: float = 20.0
    tokens_per_s: float = 200.0
    max_concurrency: int = 16
    embeddings: bool = False
    autoscale: bool = False
    min_workers: int = 0
    max_workers: int = 4
    target_concurrency: float | None = None
    scale_down_after_s: float = 30.0
    idle_to_zero_s: float = 60.0
    keep_history: bool = False
    """Keep the fleet journal's evictions, refusals and decisions from earlier runs."""
    engine_args: list[str] = field(default_factory=list)
    """Extra vLLM flags for the chat pool's workers (checked by `vllm_engine.engine_args`)."""

    @property
    def initial_workers(self) -> int:
        """Workers the stack waits for before it says it is up."""
        return self.min_workers if self.autoscale else self.workers


class LocalFaultInjector:
    """`spotgate fleet kill|evict|spot` land here: crash, eviction notice, spot refused."""

    def __init__(
        self, compute: LocalProcessCompute, events: FakeScheduledEvents, market: LocalSpotMarket
    ) -> None:
        self._compute = compute
        self._events = events
        self.market = market

    def kill(self, worker_id: str) -> bool:
        return self._compute.kill(worker_id)

    def evict(self, worker_id: str, notice_s: float) -> dict[str, object]:
        if worker_id not in self._compute.workers():
            raise NotFound(f"No local worker process '{worker_id}'.", code="worker_not_found")
        return self._events.preempt(worker_id, notice_s)

    def spot(self, available: bool, zone: str | None) -> dict[str, object]:
        if available:
            self.market.restore(zone)
        else:
            self.market.refuse(zone)
        return {"refused_zones": self.market.refused_zones()}


def dev_settings(settings: Settings, api_key: str | None) -> tuple[Settings, str]:
    """The dev stack's keys: an API key for clients, and a separate admin key for the
    operator's CLI (never the API key: a client must not kill or evict workers)."""
    key = api_key or f"sk-spotgate-dev-{secrets.token_urlsafe(18)}"
    updated = settings.model_copy(
        update={
            "api_keys": [key, *settings.api_keys],
            "admin_key": settings.admin_key or f"sk-spotgate-admin-{secrets.token_urlsafe(24)}",
            "fleet_token": settings.fleet_token or secrets.token_urlsafe(24),
            "tenancy": dev_prices(settings.tenancy),
        }
    )
    return updated, key


DEV_PRICE_IN_PER_1M = 0.50
DEV_PRICE_OUT_PER_1M = 1.50


def dev_prices(tenancy: TenancySettings) -> TenancySettings:
    """Notional prices for models without a catalogue price, so a local run's usage report
    shows revenue and margin; prices set in the environment win."""
    if tenancy.model_fields_set & {"default_price_in_per_1m", "default_price_out_per_1m"}:
        return tenancy
    return tenancy.model_copy(
        update={
            "default_price_in_per_1m": DEV_PRICE_IN_PER_1M,
            "default_price_out_per_1m": DEV_PRICE_OUT_PER_1M,
        }
    )


def local_secrets(settings: Settings) -> SecretStore:
    """The environment, the dev stack's generated keys, and a salt kept in the data dir."""
    overrides = {ADMIN_KEY: settings.admin_key or "", FLEET_TOKEN: settings.fleet_token or ""}
    if not os.environ.get(env_name(KEY_SALT)):
        overrides[KEY_SALT] = persistent_salt(settings.data_dir / "key-salt")
    return EnvSecrets(os.environ, overrides)


def local_tenancy(settings: Settings) -> TenancyStores:
    path = settings.data_dir / "tenancy.sqlite3"
    return TenancyStores(
        SqliteKeyStore(path), SqliteUsageStore(path), SqliteCounterStore(path, clock=SystemClock())
    )


def _worker_args(options: DevOptions, index: int) -> list[str]:
    if options.engine == "vllm":
        assert options.model_dir is not None
        # vLLM's CPU build pins its threads to the same core in every instance unless told
        core = index % (os.cpu_count() or 1)
        # quoted: `spotgate worker` splits each --engine-arg as a shell would
        extra = [f"--engine-arg={shlex.quote(arg)}" for arg in options.engine_args]
        return ["--model-dir", str(options.model_dir), "--cpu-cores", str(core), *extra]
    return [
        "--ttft-ms",
        str(options.ttft_ms),
        "--tokens-per-s",
        str(options.tokens_per_s),
        "--max-concurrency",
        str(options.max_concurrency),
    ]


def dev_policies(settings: Settings, options: DevOptions) -> dict[str, FleetPolicyConfig]:
    """A fixed pool that is only kept whole, or an autoscaled one tuned to be watched live."""
    policy = settings.fleet_policy(options.pool)
    if options.autoscale:
        target = options.target_concurrency or max(1.0, settings.gateway.worker_max_concurrency / 2)
        autoscaling = replace(
            policy.autoscaling,
            min_workers=options.min_workers,
            max_workers=options.max_workers,
            target_concurrency_per_worker=target,
            scale_down_stabilisation_s=options.scale_down_after_s,
            idle_to_zero_s=options.idle_to_zero_s,
        )
        policy = replace(policy, autoscaling=autoscaling)
    else:
        policy = policy.fixed_size(options.workers)
    policies = {options.pool: policy}
    if options.embeddings:
        policies["embeddings"] = settings.fleet_policy("embeddings").fixed_size(1)
    return policies


def local_runner(
    parts: GatewayParts,
    journal: FleetJournal,
    compute: ComputeProvider | None = None,
    batch: BatchParts | None = None,
) -> LocalOrchestrationRunner:
    """The fleet monitor (and each batch's orchestration) on the in-process replay engine,
    their activities bound to this stack."""
    settings = parts.settings
    demand: DemandSource = AdmissionDemand(parts.router.admission)
    if batch is not None:
        demand = WithBatchBacklog(demand, batch.backlog)
    services = SimpleFleetServices(
        registry=parts.registry,
        clock=parts.clock,
        heartbeat_timeout_s=settings.fleet.heartbeat_timeout_s,
        journal=journal,
        compute=compute,
        demand=demand,
        in_flight=parts.in_flight.of,
    )
    orchestrators: dict[str, Any] = {ORCHESTRATOR_NAME: reporting_to(parts.telemetry.ticks)}
    activities: dict[str, Any] = dict(activity_table(services))
    if batch is not None:
        orchestrators[BATCH_ORCHESTRATOR] = batch_job
        activities.update(batch_activity_table(batch.services))
    return LocalOrchestrationRunner(orchestrators, activities, parts.clock)


async def start_monitors(runner: LocalOrchestrationRunner, monitors: MonitorPlan) -> None:
    for pool in monitors.pools:
        await runner.start(ORCHESTRATOR_NAME, monitor_instance_id(pool), monitors.start_input(pool))


def build_dev_app(
    settings: Settings,
    options: DevOptions,
    on_ready: Callable[[Runtime], None] | None = None,
) -> Starlette:
    store = SqliteWorkerStore(settings.database_path)
    for stale in store.all():
        store.delete(stale.id)
    journal = SqliteFleetJournal(settings.data_dir / "fleet-journal.sqlite3")
    if not options.keep_history:  # an earlier run's faults say nothing about this stack's spot
        journal.clear()
    parts = build_gateway(
        settings, store, secrets=local_secrets(settings), tenancy_stores=local_tenancy(settings)
    )

    def schedule(delay: float, action: Callable[[], None]) -> None:
        asyncio.get_running_loop().call_later(delay, action)  # only called on the server's loop

    market = LocalSpotMarket(
        parts.registry,
        lambda worker_id, notice_s: events.preempt(worker_id, notice_s),  # bound below
        evictions_per_hour=settings.local.evictions_per_hour,
        notice_s=settings.local.eviction_notice_s,
    )
    compute = LocalProcessCompute(
        parts.registry,
        control_plane_url=settings.base_url(),
        fleet_token=settings.fleet_token or "",
        log_dir=settings.data_dir / "logs",
        provision_delay_s=settings.local.provision_delay_s,
        heartbeat_interval_s=settings.fleet.heartbeat_interval_s,
        host=settings.server.host,
        specs=_worker_specs(options),
        spot_available=market.available,
    )
    events = FakeScheduledEvents(parts.clock, compute.kill, schedule)
    batch = build_batch(parts, local_batch_stores(settings.data_dir))
    runner = local_runner(parts, journal, compute, batch)
    runtime = assemble_runtime(
        parts,
        journal=journal,
        orchestrations=runner,
        monitors=monitor_plan(settings, dev_policies(settings, options)),
        faults=LocalFaultInjector(compute, events, market),
        scheduled_events=events,
        lifecycles=batch.lifecycles,
        batches=batch.service(runner),
    )
    app = create_app(runtime)
    inner_lifespan = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with inner_lifespan(app):
            await start_monitors(runner, runtime.monitors)
            market.start()
            waiter = asyncio.create_task(_announce_when_ready(runtime, options, on_ready))
            try:
                yield
            finally:
                waiter.cancel()
                if runtime.probe is not None:  # workers stopping now are not failing probes
                    await runtime.probe.stop()
                await market.stop()
                await runner.stop()
                await compute.shutdown()
                store.close()
                journal.close()

    app.router.lifespan_context = lifespan
    return app


def _worker_specs(options: DevOptions) -> dict[str, WorkerSpec]:
    specs = {
        options.pool: WorkerSpec(
            options.pool,
            options.model,
            options.engine,
            args_for=lambda index: _worker_args(options, index),
        )
    }
    if options.embeddings:
        from spotgate.engines.embedding_model import SERVED_NAME, find_minilm

        def embedding_args(_index: int) -> list[str]:
            core = str(options.workers % (os.cpu_count() or 1))
            return ["--model-dir", str(find_minilm()), "--pooling", "--cpu-cores", core]

        specs["embeddings"] = WorkerSpec("embeddings", SERVED_NAME, "vllm", args_for=embedding_args)
    return specs


async def _announce_when_ready(
    runtime: Runtime, options: DevOptions, on_ready: Callable[[Runtime], None] | None
) -> None:
    started = time.monotonic()
    while True:
        ready = [w for w in runtime.registry.all() if w.state == WorkerState.READY]
        if len(ready) >= options.initial_workers + int(options.embeddings):
            break
        await asyncio.sleep(0.25)
    log.info("%d workers ready after %s", len(ready), format_duration(time.monotonic() - started))
    if on_ready is not None:
        on_ready(runtime)

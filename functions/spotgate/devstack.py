"""`spotgate dev`: the whole platform in one terminal.

One uvicorn process serves the gateway and the control plane; its lifespan
starts the fleet monitor on the in-process Durable replay engine and launches
the workers as local "VMs". Ctrl-C runs the lifespan's shutdown, which stops
every process it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette

from spotgate.adapters.local.process_compute import LocalProcessCompute, WorkerSpec
from spotgate.adapters.local.scheduled_events import FakeScheduledEvents
from spotgate.adapters.local.sqlite_worker_store import SqliteWorkerStore
from spotgate.api.app import create_app
from spotgate.errors import NotFound
from spotgate.fleet.worker import WorkerState
from spotgate.runtime import Runtime, build_runtime
from spotgate.settings import Settings

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


class LocalFaultInjector:
    """`spotgate fleet kill|evict` land here: crash a process, or post an eviction notice."""

    def __init__(self, compute: LocalProcessCompute, events: FakeScheduledEvents) -> None:
        self._compute = compute
        self._events = events

    def kill(self, worker_id: str) -> bool:
        return self._compute.kill(worker_id)

    def evict(self, worker_id: str, notice_s: float) -> dict[str, object]:
        if worker_id not in self._compute.workers():
            raise NotFound(f"No local worker process '{worker_id}'.", code="worker_not_found")
        return self._events.preempt(worker_id, notice_s)


def dev_settings(settings: Settings, api_key: str | None) -> tuple[Settings, str]:
    key = api_key or f"sk-spotgate-dev-{secrets.token_urlsafe(18)}"
    updated = settings.model_copy(
        update={
            "api_keys": [key, *settings.api_keys],
            "admin_key": settings.admin_key or key,
            "fleet_token": settings.fleet_token or secrets.token_urlsafe(24),
        }
    )
    return updated, key


def _worker_args(options: DevOptions, index: int) -> list[str]:
    if options.engine == "vllm":
        assert options.model_dir is not None
        # vLLM's CPU build pins its threads to the same core in every instance unless told
        core = index % (os.cpu_count() or 1)
        return ["--model-dir", str(options.model_dir), "--cpu-cores", str(core)]
    return [
        "--ttft-ms",
        str(options.ttft_ms),
        "--tokens-per-s",
        str(options.tokens_per_s),
        "--max-concurrency",
        str(options.max_concurrency),
    ]


def build_dev_app(
    settings: Settings,
    options: DevOptions,
    on_ready: Callable[[Runtime], None] | None = None,
) -> Starlette:
    store = SqliteWorkerStore(settings.database_path)
    for stale in store.all():
        store.delete(stale.id)
    runtime = build_runtime(settings, store)

    def schedule(delay: float, action: Callable[[], None]) -> None:
        asyncio.get_running_loop().call_later(delay, action)  # only called on the server's loop

    compute = LocalProcessCompute(
        runtime.registry,
        control_plane_url=settings.base_url(),
        fleet_token=settings.fleet_token or "",
        log_dir=settings.data_dir / "logs",
        provision_delay_s=settings.local_provision_delay_s,
        heartbeat_interval_s=settings.heartbeat_interval_s,
        host=settings.host,
    )
    events = FakeScheduledEvents(runtime.clock, compute.kill, schedule)
    runtime.scheduled_events = events
    runtime.faults = LocalFaultInjector(compute, events)
    from spotgate.orchestrations.local import start_local_orchestrations

    app = create_app(runtime)
    inner_lifespan = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with inner_lifespan(app):
            runner = await start_local_orchestrations(runtime)
            for index in range(options.workers):
                args = _worker_args(options, index)
                await compute.launch(WorkerSpec(options.pool, options.model, options.engine, args))
            if options.embeddings:
                from spotgate.engines.embedding_model import SERVED_NAME, find_minilm

                args = ["--model-dir", str(find_minilm()), "--pooling"]
                args += ["--cpu-cores", str(options.workers % (os.cpu_count() or 1))]
                await compute.launch(WorkerSpec("embeddings", SERVED_NAME, "vllm", args))
            waiter = asyncio.create_task(_announce_when_ready(runtime, options, on_ready))
            try:
                yield
            finally:
                waiter.cancel()
                await runner.stop()
                await compute.shutdown()
                store.close()

    app.router.lifespan_context = lifespan
    return app


async def _announce_when_ready(
    runtime: Runtime, options: DevOptions, on_ready: Callable[[Runtime], None] | None
) -> None:
    started = time.monotonic()
    while True:
        ready = [w for w in runtime.registry.all() if w.state == WorkerState.READY]
        if len(ready) >= options.workers + int(options.embeddings):
            break
        await asyncio.sleep(0.25)
    log.info("%d workers ready after %.1f s", len(ready), time.monotonic() - started)
    if on_ready is not None:
        on_ready(runtime)

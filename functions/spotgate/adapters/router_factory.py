"""Assembles the Router: admission per pool, `auto` model choice and spillover clients."""

from __future__ import annotations

import os

from spotgate.adapters.http_upstream import AiohttpUpstream
from spotgate.fleet.registry import WorkerRegistry
from spotgate.gateway.admission import Admission, PoolCapacity
from spotgate.gateway.auto_model import AutoModelChooser
from spotgate.gateway.catalog import ModelCatalog
from spotgate.gateway.forwarding import Forwarder
from spotgate.gateway.health import PassiveHealth
from spotgate.gateway.routing import Router
from spotgate.gateway.spillover import SpilloverClient
from spotgate.gateway.token_counting import TokenCounter
from spotgate.gateway.upstream import UpstreamClient
from spotgate.settings import Settings


def build_router(
    settings: Settings,
    registry: WorkerRegistry,
    catalog: ModelCatalog,
    forwarder: Forwarder,
    upstream: UpstreamClient,
    health: PassiveHealth,
) -> Router:
    capacity = PoolCapacity(registry, settings.worker_max_concurrency)
    admission = Admission(capacity, max_queue=settings.admission_queue_limit)
    capacity.on_change(admission.notify)
    auto = None
    if settings.auto_model_name:
        counter = TokenCounter(
            registry, upstream, timeout_s=settings.token_count_timeout_s, usable=health.available
        )
        auto = AutoModelChooser(
            catalog,
            counter,
            default_completion_tokens=settings.auto_default_completion_tokens,
            auto_name=settings.auto_model_name,
        )
    spillover = None
    if any(entry.spillover is not None for entry in catalog.entries):
        # managed endpoints are HTTPS, which the worker client does not speak
        https = AiohttpUpstream(
            connect_timeout_s=settings.upstream_connect_timeout_s,
            read_timeout_s=settings.upstream_read_timeout_s,
        )
        spillover = SpilloverClient(https, os.environ.get)
    return Router(
        catalog,
        forwarder,
        admission,
        capacity,
        auto=auto,
        spillover=spillover,
        admission_wait_s=settings.capacity_wait_s,
    )

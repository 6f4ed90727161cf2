"""Every metric the alerts, the workbook and the fleet monitor query is exported under that name.

A typo'd or renamed metric makes an alert that never fires, silently; the
offline checks of the queries (tests/infra/test_alerts_workbook.py) hold
them to a list of names, and this holds the running process to the same
list: a whole stack in-process (gateway, control plane, the fleet monitor on
the local replay engine, a sim worker and a managed endpoint on loopback)
goes through what an operator watches, and every queried name must come out
of OpenTelemetry (Application Insights' `customMetrics`) carrying the labels
its queries read from `customDimensions`, and out of `/metrics` as well.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import ASGIApp

from spotgate.adapters.local.process_compute import free_port
from spotgate.api.app import create_app
from spotgate.engines.sim import SimConfig, create_sim_app
from spotgate.fleet.journal import InMemoryFleetJournal
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.gateway.model_catalogue import ModelEntry, SpilloverTarget
from spotgate.hosts.gateway import assemble_runtime, build_gateway
from spotgate.hosts.local import local_runner, start_monitors
from spotgate.settings import Settings
from tests.api.test_gateway_api import ADMIN_KEY, API_KEY, FLEET_TOKEN, agent_auth, auth
from tests.conftest import serve_asgi
from tests.infra.test_alerts_workbook import (
    KNOWN_METRICS,
    _labels_in,
    _log_alerts,
    _metrics_in,
    _queries,
    _query,
)
from tests.telemetry.conftest import Otel
from tests.telemetry.test_monitor_ticks import until

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}


@pytest.fixture(scope="module")
def endpoints() -> Iterator[tuple[str, str]]:
    """A sim worker serving `m` and a managed endpoint (a second sim) for spillover."""

    def sim(model: str) -> ASGIApp:
        return create_sim_app(SimConfig(model=model, ttft_ms=0, tokens_per_s=0))

    with serve_asgi(sim("m")) as worker, serve_asgi(sim("managed")) as managed:
        yield worker, managed


def queries() -> dict[str, str]:
    found = {f"alert {name}": _query(rule)[0] for name, rule in _log_alerts().items()}
    found |= {f"panel {name}": content["query"] for name, content in _queries().items()}
    return found


async def operate_a_stack(otel: Otel, worker: str, managed: str) -> str:
    """Traffic, a spillover, a failing worker, an eviction and its replacement, monitor ticks;
    returns the /metrics text."""
    managed_target = SpilloverTarget(name="managed", base_url=f"{managed}/v1", deployment="managed")
    settings = Settings(
        api_keys=[API_KEY],
        admin_key=ADMIN_KEY,
        fleet_token=FLEET_TOKEN,
        capacity_wait_s=2,
        cache_backend="memory",
        model_catalogue=[ModelEntry(name="m", context_length=2048, spillover=managed_target)],
        monitor_tick_s=0.05,
    )
    parts = build_gateway(settings, InMemoryWorkerStore(), telemetry=otel.telemetry())
    journal = InMemoryFleetJournal()
    runner = local_runner(parts, journal)
    runtime = assemble_runtime(parts, journal=journal, orchestrations=runner)
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw", timeout=30) as client:

        async def ask(text: str = "hi") -> httpx.Response:
            body = {**CHAT, "messages": [{"role": "user", "content": text}]}
            reply = await client.post("/v1/chat/completions", json=body, headers=auth())
            assert reply.status_code == 200, reply.text
            return reply

        assert (await ask()).headers["x-worker"] == "spillover:managed"  # a cold pool

        async def provision(worker_id: str) -> httpx.Response:
            address = worker.removeprefix("http://")
            runtime.registry.expect(worker_id, pool="default", model="", engine="", address=address)
            body = {"id": worker_id, "pool": "default", "model": "m", "engine": "sim"}
            body["url"] = worker
            reply = await client.post("/fleet/workers", json=body, headers=auth(FLEET_TOKEN))
            assert reply.status_code in (200, 201), reply.text
            return reply

        first = await provision("w1")
        dead = f"http://127.0.0.1:{free_port()}"
        runtime.registry.register("a-dead", pool="default", model="m", engine="sim", url=dead)
        for i in range(4):  # different questions: the cache answers none, both workers are tried
            await ask(f"question {i}")
        assert runtime.router.capacity.ready_workers("default") == 2
        notice = {"event_id": "ev-1", "event_type": "Preempt", "not_before": None}
        evicted = await client.post(
            "/fleet/workers/w1/evicting", json=notice, headers=agent_auth(first)
        )
        assert evicted.status_code == 200, evicted.text
        await provision("w2")
        runtime.registry.mark_gone("w1", "evicted")
        await ask()

        await start_monitors(runner, runtime.monitors)
        try:
            await until(lambda: len(journal) >= 2)
            await asyncio.sleep(0.1)
        finally:
            await runner.stop()
        scraped = await client.get("/metrics", headers=auth(ADMIN_KEY))
        assert scraped.status_code == 200
    await runtime.close()
    return scraped.text


# the eviction and the lost worker wake the monitor before its first tick (Durable 1.7.0's
# parked wake, orchestrations/fleet_monitor.py): harmless here
@pytest.mark.filterwarnings("ignore:Potential duplicate Task completion")
async def test_every_queried_metric_is_exported_with_the_labels_its_queries_read(
    otel: Otel, endpoints: tuple[str, str]
) -> None:
    text = await operate_a_stack(otel, *endpoints)

    exported = otel.metrics()
    missing = KNOWN_METRICS - set(exported)
    assert not missing, f"queried but never exported: {sorted(missing)}"
    labels = {name: {k for p in points for k in p.attributes} for name, points in exported.items()}
    for where, query in queries().items():
        metrics = _metrics_in(query)
        if not metrics:
            continue
        carried = set().union(*(labels[m] for m in metrics))
        assert _labels_in(query) <= carried, f"{where}: {_labels_in(query) - carried} not exported"

    samples = {
        sample.name for family in text_string_to_metric_families(text) for sample in family.samples
    }
    for name in KNOWN_METRICS:
        assert {name, f"{name}_count"} & samples, f"/metrics has no {name}"
    assert not [s for s in samples if re.search(r"_total_total$", s)]

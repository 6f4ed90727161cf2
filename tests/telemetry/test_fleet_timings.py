"""How long the fleet takes, as an operator reads it on /metrics and in Application Insights.

A worker's life through the real control plane routes (provisioned, the
agent registers, reports a spot eviction), with the registry's clock moved
by hand so the intervals are exact.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from spotgate.api.app import create_app
from spotgate.clock import ManualClock
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.hosts.gateway import build_runtime
from spotgate.runtime import Runtime
from spotgate.settings import Settings
from tests.api.test_gateway_api import ADMIN_KEY, API_KEY, FLEET_TOKEN, agent_auth, auth
from tests.telemetry.conftest import Otel
from tests.telemetry.test_metrics_and_access_log import scrape, value


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def fleet(otel: Otel, clock: ManualClock) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    settings = Settings(api_keys=[API_KEY], admin_key=ADMIN_KEY, fleet_token=FLEET_TOKEN)
    runtime = build_runtime(
        settings, InMemoryWorkerStore(), clock=clock, telemetry=otel.telemetry()
    )
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        yield client, runtime


async def provision_then_register(
    client: httpx.AsyncClient, runtime: Runtime, clock: ManualClock, worker_id: str, after_s: float
) -> httpx.Response:
    """The monitor asks for the worker now (the cloud gives it an address); its agent
    registers at that address `after_s` later."""
    address = f"127.0.0.1:{9000 + len(runtime.registry.all())}"
    runtime.registry.expect(worker_id, pool="default", model="", engine="", address=address)
    clock.advance(after_s)
    body = {"id": worker_id, "pool": "default", "model": "m", "engine": "sim"}
    reply = await client.post(
        "/fleet/workers", json={**body, "url": f"http://{address}"}, headers=auth(FLEET_TOKEN)
    )
    assert reply.status_code in (200, 201), reply.text
    return reply


async def evict(client: httpx.AsyncClient, worker_id: str, registration: httpx.Response) -> None:
    body = {"event_id": f"ev-{worker_id}", "event_type": "Preempt", "not_before": None}
    reply = await client.post(
        f"/fleet/workers/{worker_id}/evicting", json=body, headers=agent_auth(registration)
    )
    assert reply.status_code == 200, reply.text


async def test_provisioning_drain_and_replacement_times(
    otel: Otel, fleet: tuple[httpx.AsyncClient, Runtime], clock: ManualClock
) -> None:
    client, runtime = fleet
    first = await provision_then_register(client, runtime, clock, "w1", after_s=42)
    clock.advance(100)
    await evict(client, "w1", first)  # notice at t
    clock.advance(5)  # the woken monitor asks for a replacement at t+5, ready at t+65
    await provision_then_register(client, runtime, clock, "w2", after_s=60)
    clock.advance(20)
    runtime.registry.mark_gone("w1", "evicted")  # drained and taken at t+85

    samples = await scrape(client)
    labels = {"pool": "default", "priority": "spot"}
    assert value(samples, "spotgate_provisioning_seconds_count", **labels) == 2
    assert value(samples, "spotgate_provisioning_seconds_sum", **labels) == 42 + 60
    assert value(samples, "spotgate_eviction_notice_to_replacement_seconds_count") == 1
    assert value(samples, "spotgate_eviction_notice_to_replacement_seconds_sum") == 65
    assert value(samples, "spotgate_eviction_notice_to_drain_seconds_count", pool="default") == 1
    assert value(samples, "spotgate_eviction_notice_to_drain_seconds_sum") == 85
    assert value(samples, "spotgate_evictions_total", pool="default") == 1

    # the same observations reach Application Insights, under the same names
    provisioning = otel.histogram("spotgate_provisioning_seconds", **labels)
    assert (provisioning.count, provisioning.value, provisioning.max) == (2, 102, 60)
    replacement = otel.histogram("spotgate_eviction_notice_to_replacement_seconds", pool="default")
    assert (replacement.count, replacement.max) == (1, 65)
    drain = otel.histogram("spotgate_eviction_notice_to_drain_seconds", pool="default")
    assert (drain.count, drain.max) == (1, 85)


async def test_a_reboot_is_no_eviction_and_a_worker_seen_only_ready_no_provisioning(
    fleet: tuple[httpx.AsyncClient, Runtime], clock: ManualClock
) -> None:
    client, runtime = fleet
    runtime.registry.register("old", pool="default", model="m", engine="sim", url="http://w/old")
    registration = await provision_then_register(client, runtime, clock, "w1", after_s=30)
    body = {"event_id": "ev-reboot", "event_type": "Reboot", "not_before": None}
    reply = await client.post(
        "/fleet/workers/w1/evicting", json=body, headers=agent_auth(registration)
    )
    assert reply.status_code == 200, reply.text
    clock.advance(10)
    await provision_then_register(client, runtime, clock, "w2", after_s=20)

    samples = await scrape(client)
    assert value(samples, "spotgate_provisioning_seconds_count") == 2  # w1, w2; not "old"
    assert value(samples, "spotgate_eviction_notice_to_replacement_seconds_count") == 0
    assert value(samples, "spotgate_evictions_total") == 0


async def test_a_notice_nobody_replaced_within_the_hour_is_not_paired_with_a_later_worker(
    fleet: tuple[httpx.AsyncClient, Runtime], clock: ManualClock
) -> None:
    client, runtime = fleet
    first = await provision_then_register(client, runtime, clock, "w1", after_s=30)
    await evict(client, "w1", first)
    runtime.registry.mark_gone("w1", "evicted")
    clock.advance(2 * 3600)  # the pool shrank instead; hours later it grows again
    await provision_then_register(client, runtime, clock, "w2", after_s=30)

    samples = await scrape(client)
    assert value(samples, "spotgate_eviction_notice_to_replacement_seconds_count") == 0
    assert value(samples, "spotgate_eviction_notice_to_drain_seconds_count") == 1

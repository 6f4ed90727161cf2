"""What an operator sees: /metrics moving with requests and the fleet, one JSON line per request.

Through the real app and pipeline (in-process, a fake worker), as a scraper
and an on-call engineer would read them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from spotgate.api.app import create_app
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.hosts.gateway import build_runtime
from spotgate.runtime import Runtime
from spotgate.settings import Settings
from spotgate.telemetry.access_log import ACCESS_LOGGER, JsonLineFormatter
from tests.api.test_gateway_api import (
    ADMIN_KEY,
    API_KEY,
    CHAT,
    FLEET_TOKEN,
    EchoUpstream,
    auth,
    register,
)

SCRAPE_TOKEN = "scrape-test"


@pytest.fixture
def upstream() -> EchoUpstream:
    return EchoUpstream()


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch, upstream: EchoUpstream) -> Runtime:
    monkeypatch.setenv("SPOTGATE_METRICS_TOKEN", SCRAPE_TOKEN)
    settings = Settings(
        api_keys=[API_KEY], admin_key=ADMIN_KEY, fleet_token=FLEET_TOKEN, capacity_wait_s=0
    )
    return build_runtime(settings, InMemoryWorkerStore(), upstream=upstream)


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        yield client


async def scrape(client: httpx.AsyncClient, key: str = ADMIN_KEY) -> dict[tuple[str, tuple], float]:
    response = await client.get("/metrics", headers=auth(key))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[tuple[str, tuple], float], name: str, **labels: str) -> float:
    return sum(
        v
        for (n, found), v in samples.items()
        if n == name and all((k, val) in found for k, val in labels.items())
    )


async def test_metrics_are_not_public_and_take_the_scrape_token(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.get("/metrics")).status_code == 401
    assert (await client.get("/metrics", headers=auth(API_KEY))).status_code == 401
    assert (await client.get("/metrics", headers=auth("scrape-wrong"))).status_code == 401
    assert (await client.get("/metrics", headers=auth(SCRAPE_TOKEN))).status_code == 200
    assert (await client.get("/metrics", headers=auth(ADMIN_KEY))).status_code == 200


async def test_requests_tokens_and_cache_move_with_traffic(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await register(client, runtime)
    before = await scrape(client)
    for _ in range(3):
        assert (await client.post("/v1/chat/completions", json=CHAT, headers=auth())).is_success
    missing = {**CHAT, "model": "no-such-model-" + "x" * 40}
    refused = await client.post("/v1/chat/completions", json=missing, headers=auth())
    assert refused.status_code == 404
    after = await scrape(client)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("spotgate_requests_total", model="m", status="200", worker="w1") == 3
    # what a client typed is never a label: an unknown model is counted as such
    assert moved("spotgate_requests_total", model="(unknown)", status="404") == 1
    assert not any("no-such-model" in str(labels) for _, labels in after)
    assert moved("spotgate_tokens_total", direction="prompt", model="m") == 3 * 3
    assert moved("spotgate_tokens_total", direction="completion", model="m") == 3 * 1
    assert moved("spotgate_request_duration_seconds_count", model="m") == 3
    assert moved("spotgate_ttft_seconds_count", model="m") == 3
    assert moved("spotgate_cache_requests_total") == 4


async def test_fleet_gauges_follow_the_registry_and_journal(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await register(client, runtime)
    runtime.journal.append(
        {"pool": "default", "observed_at": runtime.clock.now(), "action": "scale_up",
         "spot_target": 2, "on_demand_target": 1}
    )  # fmt: skip
    runtime.journal.record_eviction("default", "w1", "2", runtime.clock.now())
    samples = await scrape(client, SCRAPE_TOKEN)
    assert value(samples, "spotgate_pool_workers", pool="default", state="ready") == 1
    assert value(samples, "spotgate_pool_workers", pool="default", state="desired") == 3
    assert value(samples, "spotgate_scaling_decisions_total", action="scale_up") == 1
    assert value(samples, "spotgate_evictions_total", pool="default", zone="2") == 1
    assert value(samples, "spotgate_admission_queue_depth", pool="default") == 0


async def test_one_json_access_line_per_request_with_the_id_the_client_saw(
    client: httpx.AsyncClient,
    runtime: Runtime,
    upstream: EchoUpstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await register(client, runtime)
    caplog.set_level(logging.INFO, logger=ACCESS_LOGGER)
    sent = await client.post(
        "/v1/chat/completions", json=CHAT, headers={**auth(), "X-Request-ID": "req-abc-123"}
    )
    unsent = await client.post("/v1/chat/completions", json=CHAT, headers=auth())
    lines = [
        json.loads(JsonLineFormatter().format(r)) for r in caplog.records if r.name == ACCESS_LOGGER
    ]
    assert [line["request_id"] for line in lines] == [
        sent.headers["x-request-id"],
        unsent.headers["x-request-id"],
    ]
    assert lines[0]["request_id"] == "req-abc-123"
    first = lines[0]
    assert (first["model"], first["status"], first["worker_id"]) == ("m", 200, "w1")
    assert (first["prompt_tokens"], first["completion_tokens"]) == (3, 1)
    # the worker got the same id, so its own logs join this line
    assert upstream.requests[0][2]["X-Request-ID"] == "req-abc-123"


async def test_no_secret_reaches_any_log_line(
    client: httpx.AsyncClient, runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """The attacker's view of the logs: every key and token the process holds, grepped for."""
    caplog.set_level(logging.DEBUG)
    await register(client, runtime)
    await client.post("/v1/chat/completions", json=CHAT, headers=auth())
    await client.post("/v1/chat/completions", json=CHAT, headers=auth("sk-wrong-guess"))
    await client.get("/metrics", headers=auth(SCRAPE_TOKEN))
    await client.get("/fleet", headers=auth(ADMIN_KEY))
    text = "\n".join(JsonLineFormatter().format(r) for r in caplog.records)
    for secret in (API_KEY, ADMIN_KEY, FLEET_TOKEN, SCRAPE_TOKEN, "sk-wrong-guess"):
        assert secret not in text, secret

"""The cache store dies mid-run: clients lose cache hits, nothing else.

The store is the Cosmos DB adapter against a real Cosmos-compatible server,
which the test kills (SIGKILL) between requests.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx

from spotgate.adapters.azure.cosmos_cache_store import create_cosmos_cache_store
from spotgate.api.app import create_app
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.hosts.gateway import build_runtime
from spotgate.settings import Settings
from tests.adapters.conftest import running_cosmos_server
from tests.api.test_gateway_api import API_KEY, EchoUpstream, auth
from tests.api.test_response_cache_api import DETERMINISTIC, stored


async def test_killing_the_cosmos_cache_store_costs_only_hits(tmp_path: Path) -> None:
    with running_cosmos_server(tmp_path) as (server, process):
        store = await create_cosmos_cache_store(
            server.url, server.key, "spotgate", "cache", connection_verify=False
        )
        upstream = EchoUpstream()
        settings = Settings(api_keys=[API_KEY], capacity_wait_s=0, cache_timeout_s=0.5)
        runtime = build_runtime(
            settings, InMemoryWorkerStore(), upstream=upstream, cache_store=store
        )
        runtime.registry.register("w1", pool="default", model="m", engine="sim", url="http://w")
        transport = httpx.ASGITransport(app=create_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            first = await client.post("/v1/chat/completions", json=DETERMINISTIC, headers=auth())
            await stored(runtime, 1)
            hit = await client.post("/v1/chat/completions", json=DETERMINISTIC, headers=auth())
            assert hit.headers["x-cache"] == "HIT" and hit.json() == first.json()
            assert len(upstream.requests) == 1

            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)

            for _ in range(3):
                response = await client.post(
                    "/v1/chat/completions", json=DETERMINISTIC, headers=auth()
                )
                assert response.status_code == 200
                assert response.json() == first.json()
                assert response.headers["x-cache"] == "MISS"
            assert len(upstream.requests) == 4
            assert runtime.response_cache is not None and not runtime.response_cache.healthy
        await runtime.close()

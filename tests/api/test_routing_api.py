"""Routing as a client sees it: aliases, `model: auto`, and a cold pool spilling over.

The managed endpoint is a real second OpenAI-compatible server on loopback
(the sim engine under uvicorn), as an Azure AI Foundry deployment would be.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from spotgate.api.app import create_app
from spotgate.engines.sim import SimConfig, create_sim_app
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.gateway.model_catalogue import ModelEntry, SpilloverTarget
from spotgate.hosts.gateway import build_runtime
from spotgate.runtime import Runtime
from spotgate.settings import Settings
from tests.api.test_gateway_api import API_KEY, auth
from tests.conftest import serve_asgi

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def managed() -> Iterator[str]:
    with serve_asgi(create_sim_app(SimConfig(model="gpt-4o-mini", ttft_ms=0))) as url:
        yield url


@pytest.fixture(scope="module")
def worker() -> Iterator[str]:
    with serve_asgi(create_sim_app(SimConfig(model="smollm2", ttft_ms=0))) as url:
        yield url


@pytest.fixture(scope="module")
def big_worker() -> Iterator[str]:
    config = SimConfig(model="big", ttft_ms=0, max_model_len=128_000)
    with serve_asgi(create_sim_app(config)) as url:
        yield url


@pytest.fixture
async def gateway(
    managed: str, worker: str, big_worker: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    monkeypatch.setenv("MANAGED_KEY", "sk-managed")
    catalogue = [
        ModelEntry(
            name="small",
            aliases=["smollm2-chat"],
            served_name="smollm2",
            context_length=2048,
            price_in_per_1m=0.05,
            price_out_per_1m=0.1,
            spillover=SpilloverTarget(
                name="foundry",
                base_url=f"{managed}/v1",
                deployment="gpt-4o-mini",
                api_key_env="MANAGED_KEY",
            ),
        ),
        ModelEntry(
            name="big", context_length=128_000, price_in_per_1m=3, price_out_per_1m=9, pool="big"
        ),
    ]
    settings = Settings(
        api_keys=[API_KEY],
        cache_backend="off",
        capacity_wait_s=2,
        model_catalogue=catalogue,
    )
    runtime = build_runtime(settings, InMemoryWorkerStore())
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw", timeout=30) as client:
        runtime.registry.register("w1", pool="default", model="smollm2", engine="sim", url=worker)
        runtime.registry.register("b1", pool="big", model="big", engine="sim", url=big_worker)
        yield client, runtime
    await runtime.close()


async def chat(client: httpx.AsyncClient, model: str, **extra: object) -> httpx.Response:
    body = {"model": model, "messages": QUESTION, "temperature": 0, **extra}
    return await client.post("/v1/chat/completions", json=body, headers=auth())


async def test_alias_and_canonical_name_reach_the_same_workers(gateway) -> None:
    client, _ = gateway
    for name in ("small", "smollm2-chat", "smollm2"):
        response = await chat(client, name)
        assert response.status_code == 200, response.text
        assert response.headers["x-worker"] == "w1"
        assert response.json()["choices"][0]["message"]["content"] == (
            "The capital of France is Paris."
        )


async def test_models_lists_catalogue_names_and_aliases(gateway) -> None:
    client, _ = gateway
    ids = {m["id"] for m in (await client.get("/v1/models", headers=auth())).json()["data"]}
    assert {"small", "smollm2-chat", "big"} <= ids


async def test_auto_picks_the_cheapest_model_whose_window_fits(gateway) -> None:
    client, _ = gateway
    response = await chat(client, "auto", max_tokens=16)
    assert response.status_code == 200
    assert response.headers["x-model"] == "small"
    long_prompt = [{"role": "user", "content": "word " * 3000}]
    body = {"model": "auto", "messages": long_prompt, "max_tokens": 16}
    response = await client.post("/v1/chat/completions", json=body, headers=auth())
    assert response.status_code == 200, response.text
    assert response.headers["x-model"] == "big"  # too long for small's 2048-token window
    assert response.headers["x-worker"] == "b1"


async def test_cold_pool_spills_over_to_the_managed_endpoint(gateway) -> None:
    client, runtime = gateway
    runtime.registry.mark_gone("w1", "evicted")
    response = await chat(client, "small")
    assert response.status_code == 200, response.text
    assert response.headers["x-worker"] == "spillover:foundry"
    assert response.json()["model"] == "gpt-4o-mini"
    stream = await chat(client, "small", stream=True)
    assert stream.headers["x-worker"] == "spillover:foundry"
    assert stream.text.rstrip().endswith("data: [DONE]")


async def test_without_spillover_a_cold_pool_is_a_503(gateway) -> None:
    client, runtime = gateway
    runtime.registry.mark_gone("b1", "evicted")
    response = await chat(client, "big")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "no_capacity"
    assert response.headers["retry-after"]

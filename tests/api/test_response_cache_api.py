"""The response cache as a client sees it: HIT/MISS/BYPASS, replayed streams, a dead store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from spotgate.api.app import create_app
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.hosts.gateway import build_runtime
from spotgate.runtime import Runtime
from spotgate.settings import Settings
from tests.api.test_gateway_api import API_KEY, EchoUpstream, auth
from tests.openai_schema import validate

DETERMINISTIC = {
    "model": "m",
    "messages": [{"role": "user", "content": "hi"}],
    "temperature": 0,
}


class BrokenStore:
    """A cache store whose backend is down: every call fails."""

    async def get(self, key: str) -> bytes | None:
        raise ConnectionError("cache backend unreachable")

    async def put(self, key: str, value: bytes, ttl_s: float) -> None:
        raise ConnectionError("cache backend unreachable")

    async def delete(self, key: str) -> None:
        raise ConnectionError("cache backend unreachable")

    async def close(self) -> None:
        pass


def make_runtime(**overrides: object) -> tuple[Runtime, EchoUpstream]:
    upstream = EchoUpstream()
    settings = Settings(api_keys=[API_KEY], capacity_wait_s=0, cache_backend="memory")
    runtime = build_runtime(settings, InMemoryWorkerStore(), upstream=upstream, **overrides)  # type: ignore[arg-type]
    runtime.registry.register("w1", pool="default", model="m", engine="sim", url="http://w")
    return runtime, upstream


@pytest.fixture
async def served() -> AsyncIterator[tuple[httpx.AsyncClient, Runtime, EchoUpstream]]:
    runtime, upstream = make_runtime()
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        yield client, runtime, upstream


async def stored(runtime: Runtime, count: int) -> None:
    assert runtime.response_cache is not None
    for _ in range(200):
        if runtime.response_cache.stats.stored >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the answer was never stored")


async def test_repeated_deterministic_request_is_a_hit_with_the_same_body(served) -> None:
    client, runtime, upstream = served
    first = await client.post("/v1/chat/completions", json=DETERMINISTIC, headers=auth())
    assert first.headers["x-cache"] == "MISS"
    await stored(runtime, 1)
    reordered = {"temperature": 0, "messages": DETERMINISTIC["messages"], "model": "m"}
    second = await client.post("/v1/chat/completions", json=reordered, headers=auth())
    assert second.headers["x-cache"] == "HIT"
    assert second.headers["x-worker"] == "cache"
    assert second.json() == first.json()
    assert len(upstream.requests) == 1


async def test_sampled_requests_bypass_the_cache(served) -> None:
    client, _, upstream = served
    body = {**DETERMINISTIC, "temperature": 0.8}
    for _ in range(2):
        response = await client.post("/v1/chat/completions", json=body, headers=auth())
        assert response.headers["x-cache"] == "BYPASS"
    assert len(upstream.requests) == 2


async def test_client_no_cache_header_skips_the_lookup(served) -> None:
    client, runtime, upstream = served
    await client.post("/v1/chat/completions", json=DETERMINISTIC, headers=auth())
    await stored(runtime, 1)
    response = await client.post(
        "/v1/chat/completions", json=DETERMINISTIC, headers={**auth(), "Cache-Control": "no-cache"}
    )
    assert response.headers["x-cache"] == "BYPASS"
    assert len(upstream.requests) == 2


async def test_streamed_request_replays_a_cached_answer_as_proper_sse(served) -> None:
    client, runtime, _ = served
    plain = await client.post("/v1/chat/completions", json=DETERMINISTIC, headers=auth())
    await stored(runtime, 1)
    body = {**DETERMINISTIC, "stream": True, "stream_options": {"include_usage": True}}
    response = await client.post("/v1/chat/completions", json=body, headers=auth())
    assert response.headers["x-cache"] == "HIT"
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    for chunk in chunks:
        validate("CreateChatCompletionStreamResponse", chunk)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == plain.json()["choices"][0]["message"]["content"]
    assert chunks[-1]["usage"] == plain.json()["usage"]


async def test_a_dead_cache_store_costs_hits_not_requests() -> None:
    runtime, upstream = make_runtime(cache_store=BrokenStore())
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        for _ in range(3):
            response = await client.post("/v1/chat/completions", json=DETERMINISTIC, headers=auth())
            assert response.status_code == 200
            assert response.headers["x-cache"] in {"MISS", "BYPASS"}
    assert len(upstream.requests) == 3
    assert runtime.response_cache is not None and not runtime.response_cache.healthy

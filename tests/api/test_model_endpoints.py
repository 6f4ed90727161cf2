"""A model asked at an endpoint it does not serve: embeddings from a chat model, chat from an
embedding model. The client gets an OpenAI-shaped 400 that names the model and says what it
serves, not the worker's bare 404.

The workers are sim engines behind a filter that answers like vLLM does for a route its
model lacks (FastAPI's `{"detail": "Not Found"}`), and counts what reaches them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import httpx
import pytest
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from spotgate.api.app import create_app
from spotgate.engines.sim import SimConfig, create_sim_app
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.gateway.model_catalogue import ModelEntry
from spotgate.hosts.gateway import build_runtime
from spotgate.settings import Settings
from tests.api.test_gateway_api import API_KEY, auth
from tests.conftest import serve_asgi

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@dataclass
class VllmLike:
    """A sim worker serving only `routes`, as vLLM registers only its model's routes."""

    app: ASGIApp
    routes: frozenset[str]
    seen: list[str] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            self.seen.append(scope["path"])
            if scope["path"] not in self.routes | {"/v1/models"}:
                await JSONResponse({"detail": "Not Found"}, 404)(scope, receive, send)
                return
        await self.app(scope, receive, send)


CHAT_ROUTES = frozenset({"/v1/chat/completions", "/v1/completions", "/tokenize"})


@pytest.fixture(scope="module")
def chat_worker() -> Iterator[tuple[str, VllmLike]]:
    worker = VllmLike(create_sim_app(SimConfig(model="smollm2", ttft_ms=0)), CHAT_ROUTES)
    with serve_asgi(worker) as url:
        yield url, worker


@pytest.fixture(scope="module")
def embedding_worker() -> Iterator[tuple[str, VllmLike]]:
    sim = create_sim_app(SimConfig(model="minilm", ttft_ms=0))
    worker = VllmLike(sim, frozenset({"/v1/embeddings"}))
    with serve_asgi(worker) as url:
        yield url, worker


async def gateway_with(
    catalogue: list[ModelEntry], workers: dict[str, tuple[str, str, str]]
) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        api_keys=[API_KEY], cache_backend="off", capacity_wait_s=2, model_catalogue=catalogue
    )
    runtime = build_runtime(settings, InMemoryWorkerStore())
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw", timeout=30) as client:
        for worker_id, (pool, model, url) in workers.items():
            runtime.registry.register(worker_id, pool=pool, model=model, engine="vllm", url=url)
        yield client
    await runtime.close()


@pytest.fixture
async def catalogued(
    chat_worker: tuple[str, VllmLike], embedding_worker: tuple[str, VllmLike]
) -> AsyncIterator[httpx.AsyncClient]:
    catalogue = [
        ModelEntry(name="smollm2", context_length=2048, price_in_per_1m=1, mode="chat"),
        # cheaper than smollm2, so `auto` would pick it if it looked at embedding models
        ModelEntry(name="minilm", context_length=256, pool="embeddings", mode="embedding"),
    ]
    workers = {
        "c1": ("default", "smollm2", chat_worker[0]),
        "e1": ("embeddings", "minilm", embedding_worker[0]),
    }
    async for client in gateway_with(catalogue, workers):
        chat_worker[1].seen.clear()
        embedding_worker[1].seen.clear()
        yield client


@pytest.fixture
async def uncatalogued(chat_worker: tuple[str, VllmLike]) -> AsyncIterator[httpx.AsyncClient]:
    async for client in gateway_with([], {"c1": ("default", "smollm2", chat_worker[0])}):
        yield client


def error_of(response: httpx.Response) -> dict[str, object]:
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return dict(error)


async def test_embeddings_from_a_chat_model_are_refused_before_a_worker_sees_them(
    catalogued: httpx.AsyncClient, chat_worker: tuple[str, VllmLike]
) -> None:
    body = {"model": "smollm2", "input": "bananas"}
    response = await catalogued.post("/v1/embeddings", json=body, headers=auth())
    assert response.status_code == 400
    error = error_of(response)
    assert (error["type"], error["param"], error["code"]) == (
        "invalid_request_error",
        "model",
        "unsupported_endpoint",
    )
    assert "'smollm2' is a chat model" in str(error["message"])
    assert "/v1/embeddings" in str(error["message"])
    assert chat_worker[1].seen == []


async def test_chat_to_an_embedding_model_is_refused_and_says_where_it_belongs(
    catalogued: httpx.AsyncClient, embedding_worker: tuple[str, VllmLike]
) -> None:
    body = {"model": "minilm", "messages": QUESTION}
    response = await catalogued.post("/v1/chat/completions", json=body, headers=auth())
    assert response.status_code == 400
    assert "serves /v1/embeddings only" in str(error_of(response)["message"])
    assert embedding_worker[1].seen == []
    embedded = await catalogued.post(
        "/v1/embeddings", json={"model": "minilm", "input": "bananas"}, headers=auth()
    )
    assert embedded.status_code == 200, embedded.text
    assert embedded.json()["data"][0]["embedding"]


async def test_auto_never_chooses_an_embedding_model(catalogued: httpx.AsyncClient) -> None:
    body = {"model": "auto", "messages": QUESTION, "max_tokens": 16}
    response = await catalogued.post("/v1/chat/completions", json=body, headers=auth())
    assert response.status_code == 200, response.text
    assert response.headers["x-model"] == "smollm2"


async def test_without_a_catalogue_the_workers_404_becomes_a_clear_error(
    uncatalogued: httpx.AsyncClient, chat_worker: tuple[str, VllmLike]
) -> None:
    body = {"model": "smollm2", "input": "bananas"}
    response = await uncatalogued.post("/v1/embeddings", json=body, headers=auth())
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "unsupported_endpoint"
    assert "'smollm2' does not serve /v1/embeddings" in str(error["message"])
    assert "HTTP 404" not in str(error["message"])
    assert chat_worker[1].seen[-1] == "/v1/embeddings"  # only the worker could tell


async def test_a_workers_404_that_explains_itself_is_passed_on(
    chat_worker: tuple[str, VllmLike],
) -> None:
    """A worker registered under a name its engine does not serve: vLLM's own 404 message
    (the model does not exist) reaches the client, not the missing-endpoint one."""
    workers = {"c1": ("default", "ghost", chat_worker[0])}
    async for client in gateway_with([], workers):
        body = {"model": "ghost", "messages": QUESTION, "max_tokens": 4}
        response = await client.post("/v1/chat/completions", json=body, headers=auth())
        assert response.status_code == 404
        assert "`ghost` does not exist" in str(error_of(response)["message"])

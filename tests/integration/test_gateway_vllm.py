"""The gateway in front of a real vLLM (CPU): what a client gets must be OpenAI-conformant.

vLLM's own bodies carry nulls the official schema rejects; through the
gateway they validate, streamed and not, and a dead worker beside the live
one costs the client nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import orjson
import pytest

from spotgate.api.app import create_app
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.hosts.gateway import build_runtime
from spotgate.runtime import Runtime
from spotgate.settings import Settings
from tests.conftest import VllmServer, free_port, serve_asgi
from tests.openai_schema import validate

pytestmark = [pytest.mark.integration, pytest.mark.vllm]

KEY = "sk-gateway-vllm"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def gateway_runtime() -> Runtime:
    settings = Settings(
        api_keys=[KEY], admin_key=KEY, fleet_token=KEY, capacity_wait_s=5, cache_backend="memory"
    )
    return build_runtime(settings, InMemoryWorkerStore())


@pytest.fixture(scope="module")
def gateway(gateway_runtime: Runtime, vllm_server: VllmServer) -> Iterator[str]:
    runtime = gateway_runtime
    runtime.registry.register(
        "vllm-1", pool="default", model=vllm_server.model, engine="vllm", url=vllm_server.base_url
    )
    runtime.registry.register(
        "dead-1",
        pool="default",
        model=vllm_server.model,
        engine="vllm",
        url=f"http://127.0.0.1:{free_port()}",
    )
    with serve_asgi(create_app(runtime), lifespan="on") as url:
        yield url


@pytest.fixture
def client(gateway: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway}/v1", api_key=KEY, max_retries=0)


def test_chat_through_the_gateway_is_real_text_and_schema_valid(
    client: openai.OpenAI, vllm_server: VllmServer
) -> None:
    for _ in range(3):  # one worker of the two is dead: every request must still succeed
        raw = client.chat.completions.with_raw_response.create(
            model=vllm_server.model,
            messages=QUESTION,
            temperature=0,
            max_tokens=32,
            extra_headers={"Cache-Control": "no-store"},  # each request must reach a worker
        )
        body = raw.http_response.json()
        validate("CreateChatCompletionResponse", body)
        assert "Paris" in body["choices"][0]["message"]["content"]
        assert body["usage"]["completion_tokens"] > 0
        assert raw.headers["x-worker"] == "vllm-1"
        assert raw.headers["x-model"] == vllm_server.model


def test_streamed_chat_through_the_gateway_validates_chunk_by_chunk(
    gateway: str, vllm_server: VllmServer
) -> None:
    body = {
        "model": vllm_server.model,
        "messages": QUESTION,
        "temperature": 0,
        "max_tokens": 32,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    text, usage, done = "", None, False
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.stream(
        "POST", f"{gateway}/v1/chat/completions", json=body, headers=headers, timeout=60
    ) as response:
        assert response.status_code == 200
        assert response.headers["x-worker"] == "vllm-1"
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                continue
            chunk = httpx.Response(200, content=line[6:]).json()
            validate("CreateChatCompletionStreamResponse", chunk)
            for choice in chunk["choices"]:
                text += choice["delta"].get("content") or ""
            usage = chunk.get("usage") or usage
    assert done
    assert "Paris" in text
    assert usage is not None and usage["completion_tokens"] > 0


def test_a_logprobs_stream_through_the_gateway_validates_chunk_by_chunk(
    gateway: str, vllm_server: VllmServer
) -> None:
    """vLLM's logprobs chunks lack the `refusal` OpenAI's schema requires; the gateway adds it."""
    body = {
        "model": vllm_server.model,
        "messages": QUESTION,
        "temperature": 0,
        "max_tokens": 4,
        "logprobs": True,
        "top_logprobs": 2,
        "stream": True,
    }
    seen = 0
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.stream(
        "POST", f"{gateway}/v1/chat/completions", json=body, headers=headers, timeout=60
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: {"):
                validate("CreateChatCompletionStreamResponse", orjson.loads(line[6:]))
                seen += 1
    assert seen > 2


def test_completions_through_the_gateway(client: openai.OpenAI, vllm_server: VllmServer) -> None:
    reply = client.completions.create(
        model=vllm_server.model, prompt="The capital of France is", max_tokens=5, temperature=0
    )
    assert reply.choices[0].text.strip()
    assert reply.usage is not None and reply.usage.prompt_tokens > 0


def test_embeddings_from_a_real_pooling_model_through_the_gateway(
    gateway_runtime: Runtime, gateway: str, vllm_embedding_server: VllmServer
) -> None:
    gateway_runtime.registry.register(
        "embed-1",
        pool="embeddings",
        model=vllm_embedding_server.model,
        engine="vllm",
        url=vllm_embedding_server.base_url,
    )
    client = openai.OpenAI(base_url=f"{gateway}/v1", api_key=KEY, max_retries=0)
    raw = client.embeddings.with_raw_response.create(
        model=vllm_embedding_server.model,
        input=["The capital of France is Paris.", "Paris is the capital of France.", "Bananas"],
        encoding_format="float",  # the schema describes floats; the client defaults to base64
    )
    body = raw.http_response.json()
    validate("CreateEmbeddingResponse", body)
    assert raw.headers["x-worker"] == "embed-1"
    vectors = [item["embedding"] for item in body["data"]]
    assert len(vectors) == 3 and len(vectors[0]) == 384

    def cosine(a: list[float], b: list[float]) -> float:
        dot = sum(x * y for x, y in zip(a, b, strict=True))
        return dot / (sum(x * x for x in a) ** 0.5 * sum(y * y for y in b) ** 0.5)

    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2])
    default = client.embeddings.create(model=vllm_embedding_server.model, input="Bananas")
    assert default.data[0].embedding == pytest.approx(vectors[2], abs=1e-5)  # base64 path

"""A real vLLM (CPU build) serving SmolLM2-135M, driven by the official openai client.

These pin down what the gateway relies on from its engine: the model is
listed, chat answers deterministically at temperature 0, streams are
schema-valid chunks, the load gauges the fleet reads exist, and which of
vLLM's non-streamed fields break the OpenAI schema until normalised.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import openai
import pytest

from spotgate.gateway.normalise import (
    normalise_chat_response,
    normalise_chunk,
    normalise_completion_response,
)
from tests.conftest import VllmServer
from tests.openai_schema import errors, validate

pytestmark = [
    pytest.mark.integration,
    pytest.mark.vllm,
    # The first test also pays for the model conversion and vLLM's start.
    pytest.mark.timeout(600),
]

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
GAUGES = ("vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc")


@pytest.fixture(scope="module")
def client(vllm_server: VllmServer) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=f"{vllm_server.base_url}/v1", api_key="unused", max_retries=0, timeout=120
    )


def _post(server: VllmServer, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(f"{server.base_url}{path}", json=body, timeout=120)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def test_models_list_has_the_served_model(client: openai.OpenAI, vllm_server: VllmServer) -> None:
    assert vllm_server.model in [model.id for model in client.models.list()]


def test_chat_answers_paris_with_usage(client: openai.OpenAI, vllm_server: VllmServer) -> None:
    completion = client.chat.completions.create(
        model=vllm_server.model, messages=QUESTION, temperature=0, max_tokens=32
    )
    answer = completion.choices[0].message.content
    assert answer is not None and "Paris" in answer
    assert completion.choices[0].finish_reason == "stop"
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_stream_chunks_validate_and_spell_the_answer(
    client: openai.OpenAI, vllm_server: VllmServer
) -> None:
    stream = client.chat.completions.create(
        model=vllm_server.model,
        messages=QUESTION,
        temperature=0,
        max_tokens=32,
        stream=True,
        stream_options={"include_usage": True},
    )
    text = ""
    chunks = 0
    usage = None
    for chunk in stream:
        # to_dict() is the chunk as received: only the fields vLLM sent, nulls included.
        validate("CreateChatCompletionStreamResponse", chunk.to_dict())
        chunks += 1
        for choice in chunk.choices:
            text += choice.delta.content or ""
        usage = chunk.usage or usage
    assert chunks > 2, "expected the answer token by token, not in one piece"
    assert "Paris" in text
    assert usage is not None and usage.completion_tokens > 0


def test_metrics_expose_the_load_gauges(vllm_server: VllmServer) -> None:
    text = httpx.get(f"{vllm_server.base_url}/metrics", timeout=30).text
    for gauge in GAUGES:
        assert re.search(rf"^{re.escape(gauge)}\{{", text, re.MULTILINE), f"{gauge} not in /metrics"


def test_raw_chat_body_fails_the_schema_until_normalised(vllm_server: VllmServer) -> None:
    body = {"model": vllm_server.model, "messages": QUESTION, "temperature": 0, "max_tokens": 32}
    raw = _post(vllm_server, "/v1/chat/completions", body)
    problems = "\n".join(errors("CreateChatCompletionResponse", raw))
    # If vLLM stops sending these nulls, the normaliser can shrink: this test says so.
    for field in ("message.annotations", "message.function_call", "completion_tokens_details"):
        assert field in problems, f"vLLM no longer sends a null {field}:\n{problems}"
    validate("CreateChatCompletionResponse", normalise_chat_response(raw))


def test_chat_with_logprobs_is_valid_once_normalised(vllm_server: VllmServer) -> None:
    body = {
        "model": vllm_server.model,
        "messages": QUESTION,
        "temperature": 0,
        "max_tokens": 4,
        "logprobs": True,
        "top_logprobs": 2,
    }
    raw = _post(vllm_server, "/v1/chat/completions", body)
    assert "refusal" not in raw["choices"][0]["logprobs"], "vLLM now sends logprobs.refusal"
    validate("CreateChatCompletionResponse", normalise_chat_response(raw))


def test_streamed_logprobs_chunks_are_valid_once_normalised(vllm_server: VllmServer) -> None:
    body = {
        "model": vllm_server.model,
        "messages": QUESTION,
        "temperature": 0,
        "max_tokens": 4,
        "logprobs": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    seen = 0
    with httpx.stream(
        "POST", f"{vllm_server.base_url}/v1/chat/completions", json=body, timeout=120
    ) as response:
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line.removeprefix("data: "))
            validate("CreateChatCompletionStreamResponse", normalise_chunk(chunk))
            seen += 1
    assert seen > 2


def test_raw_completion_body_fails_the_schema_until_normalised(vllm_server: VllmServer) -> None:
    body = {
        "model": vllm_server.model,
        "prompt": "The capital of France is",
        "temperature": 0,
        "max_tokens": 8,
    }
    raw = _post(vllm_server, "/v1/completions", body)
    assert "Paris" in raw["choices"][0]["text"]
    assert errors("CreateCompletionResponse", raw), "vLLM's raw completion body now validates"
    validate("CreateCompletionResponse", normalise_completion_response(raw))

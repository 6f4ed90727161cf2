"""The cache key: same answer, same key; anything that could change the answer, another key."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from spotgate.gateway.cache.key import canonical_body, request_key

CHAT = "/v1/chat/completions"
BASE: dict[str, Any] = {
    "model": "smollm2",
    "messages": [{"role": "user", "content": "Capital of France?"}],
    "temperature": 0,
    "max_tokens": 16,
}


def key(body: dict[str, Any], endpoint: str = CHAT) -> str:
    return request_key(endpoint, body)


def test_key_is_hex_sha256() -> None:
    value = key(BASE)
    assert len(value) == 64 and int(value, 16) >= 0


def test_key_order_and_whitespace_do_not_matter() -> None:
    raw = b'{ "max_tokens":16,\n "temperature" : 0, "messages":[{"content":"Capital of France?",'
    raw += b'"role":"user"}],"model":"smollm2"}'
    reordered = orjson.loads(raw)
    assert list(reordered) != list(BASE)
    assert key(reordered) == key(BASE)


def test_nested_key_order_does_not_matter() -> None:
    tools_a = [{"type": "function", "function": {"name": "f", "parameters": {"a": 1, "b": 2}}}]
    tools_b = [{"function": {"parameters": {"b": 2, "a": 1}, "name": "f"}, "type": "function"}]
    assert key({**BASE, "tools": tools_a}) == key({**BASE, "tools": tools_b})


@pytest.mark.parametrize(
    "delivery",
    [
        {"stream": True},
        {"stream": False},
        {"stream": True, "stream_options": {"include_usage": True}},
        {"user": "alice"},
        {"metadata": {"trace": "abc"}},
    ],
)
def test_delivery_fields_are_ignored(delivery: dict[str, Any]) -> None:
    assert key({**BASE, **delivery}) == key(BASE)


@pytest.mark.parametrize(
    "change",
    [
        {"temperature": 0.5},
        {"max_tokens": 17},
        {"max_completion_tokens": 16},
        {"top_p": 0.9},
        {"seed": 1},
        {"n": 2},
        {"stop": ["."]},
        {"logprobs": True},
        {"top_logprobs": 2},
        {"presence_penalty": 0.1},
        {"frequency_penalty": 0.1},
        {"logit_bias": {"42": -100}},
        {"response_format": {"type": "json_object"}},
        {"tools": [{"type": "function", "function": {"name": "f"}}]},
        {"tool_choice": "none"},
        {"continue_final_message": True},
        {"add_generation_prompt": False},
        {"top_k": 5},  # a vLLM extra no list names: still part of the key
        {"messages": [{"role": "user", "content": "Capital of Spain?"}]},
        {"model": "other"},
    ],
)
def test_anything_that_changes_the_answer_changes_the_key(change: dict[str, Any]) -> None:
    assert key({**BASE, **change}) != key(BASE)


def test_endpoint_and_scope_are_part_of_the_key() -> None:
    assert key(BASE, "/v1/completions") != key(BASE)
    assert request_key(CHAT, BASE, scope="tenant-a") != request_key(CHAT, BASE, scope="tenant-b")


def test_missing_temperature_is_not_zero() -> None:
    without = {k: v for k, v in BASE.items() if k != "temperature"}
    assert key(without) != key(BASE)


def test_equivalent_spellings_share_a_key() -> None:
    assert key({**BASE, "stop": "."}) == key({**BASE, "stop": ["."]})
    assert key({**BASE, "stop": []}) == key(BASE)
    assert key({**BASE, "n": 1}) == key(BASE)
    assert key({**BASE, "temperature": 0.0}) == key(BASE)
    assert key({**BASE, "seed": None}) == key(BASE)


def test_two_stops_are_not_one() -> None:
    assert key({**BASE, "stop": [".", "!"]}) != key({**BASE, "stop": ["."]})


def test_canonical_body_does_not_mutate_the_request() -> None:
    body = {**BASE, "stop": ".", "stream": True}
    snapshot = orjson.dumps(body)
    canonical_body(body)
    assert orjson.dumps(body) == snapshot


def test_embedding_keys_include_the_input() -> None:
    base = {"model": "e5", "input": "hello"}
    endpoint = "/v1/embeddings"
    assert request_key(endpoint, base) == request_key(endpoint, dict(reversed(base.items())))
    assert request_key(endpoint, base) != request_key(endpoint, {**base, "input": "bye"})
    assert request_key(endpoint, base) != request_key(
        endpoint, {**base, "encoding_format": "base64"}
    )

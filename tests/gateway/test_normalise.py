"""The vLLM-to-OpenAI normaliser, on bodies recorded from vLLM 0.32 (CPU, SmolLM2).

tests/engines/test_vllm_real.py checks the same against a live vLLM; these
run without one and pin the exact fields handled.
"""

from __future__ import annotations

import copy
from typing import Any

from spotgate.gateway.normalise import (
    normalise_chat_response,
    normalise_chunk,
    normalise_completion_response,
)
from tests.openai_schema import errors, validate

VLLM_CHAT: dict[str, Any] = {
    "id": "chatcmpl-873466f1fda86f5c",
    "object": "chat.completion",
    "created": 1795424237,
    "model": "smollm2",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "The capital of France is Paris.",
                "refusal": None,
                "annotations": None,
                "audio": None,
                "function_call": None,
                "reasoning": None,
            },
            "logprobs": None,
            "finish_reason": "stop",
            "stop_reason": None,
            "token_ids": None,
            "routed_experts": None,
        }
    ],
    "service_tier": None,
    "system_fingerprint": "vllm-0.32.0-dc04629e",
    "usage": {
        "prompt_tokens": 37,
        "total_tokens": 45,
        "completion_tokens": 8,
        "prompt_tokens_details": None,
        "completion_tokens_details": None,
    },
    "prompt_logprobs": None,
    "prompt_token_ids": None,
    "prompt_text": None,
    "kv_transfer_params": None,
    "ec_transfer_params": None,
    "metrics": None,
}

VLLM_LOGPROBS = {
    "content": [
        {
            "token": "M",
            "logprob": -4.89,
            "bytes": [77],
            "top_logprobs": [{"token": "M", "logprob": -4.89, "bytes": [77]}],
        }
    ]
}

VLLM_COMPLETION: dict[str, Any] = {
    "id": "cmpl-97259d1de7c39a47",
    "object": "text_completion",
    "created": 1795424237,
    "model": "smollm2",
    "choices": [
        {
            "index": 0,
            "text": " Paris.\n\nThe answer is:",
            "logprobs": None,
            "finish_reason": "length",
            "stop_reason": None,
            "token_ids": None,
            "prompt_logprobs": None,
            "prompt_token_ids": None,
            "routed_experts": None,
        }
    ],
    "service_tier": None,
    "system_fingerprint": "vllm-0.32.0-dc04629e",
    "usage": {
        "prompt_tokens": 5,
        "total_tokens": 13,
        "completion_tokens": 8,
        "prompt_tokens_details": None,
        "completion_tokens_details": None,
    },
    "kv_transfer_params": None,
    "ec_transfer_params": None,
    "metrics": None,
}

VLLM_CHUNK: dict[str, Any] = {
    "id": "chatcmpl-b137ccc9fd91ae25",
    "object": "chat.completion.chunk",
    "created": 1795424241,
    "model": "smollm2",
    "choices": [
        {
            "index": 0,
            "delta": {"content": " Paris"},
            "logprobs": None,
            "finish_reason": None,
            "token_ids": None,
        }
    ],
}


def test_raw_vllm_chat_body_is_invalid_and_normalised_body_is_valid() -> None:
    assert errors("CreateChatCompletionResponse", VLLM_CHAT)
    validate("CreateChatCompletionResponse", normalise_chat_response(VLLM_CHAT))


def test_chat_normaliser_drops_only_the_forbidden_nulls() -> None:
    out = normalise_chat_response(VLLM_CHAT)
    message = out["choices"][0]["message"]
    assert "annotations" not in message and "function_call" not in message
    assert message["refusal"] is None and message["audio"] is None  # nullable: kept
    assert out["usage"] == {"prompt_tokens": 37, "total_tokens": 45, "completion_tokens": 8}
    assert out["service_tier"] is None  # nullable: kept
    assert out["kv_transfer_params"] is None  # vLLM extension, allowed: kept
    assert out["choices"][0]["stop_reason"] is None


def test_normalisers_do_not_mutate_their_input() -> None:
    for normalise, body in (
        (normalise_chat_response, VLLM_CHAT),
        (normalise_completion_response, VLLM_COMPLETION),
        (normalise_chunk, VLLM_CHUNK),
    ):
        before = copy.deepcopy(body)
        normalise(body)
        assert body == before


def test_valid_bodies_come_back_as_the_same_object() -> None:
    done = normalise_chat_response(VLLM_CHAT)
    assert normalise_chat_response(done) is done
    assert normalise_chunk(VLLM_CHUNK) is VLLM_CHUNK


def test_logprobs_get_the_required_refusal() -> None:
    chat = copy.deepcopy(VLLM_CHAT)
    chat["choices"][0]["logprobs"] = VLLM_LOGPROBS
    out = normalise_chat_response(chat)
    assert out["choices"][0]["logprobs"]["refusal"] is None
    validate("CreateChatCompletionResponse", out)

    chunk = copy.deepcopy(VLLM_CHUNK)
    chunk["choices"][0]["logprobs"] = VLLM_LOGPROBS
    assert errors("CreateChatCompletionStreamResponse", chunk)
    validate("CreateChatCompletionStreamResponse", normalise_chunk(chunk))


def test_null_tool_calls_are_dropped_but_an_empty_list_is_kept() -> None:
    chat = copy.deepcopy(VLLM_CHAT)
    chat["choices"][0]["message"]["tool_calls"] = None
    assert "tool_calls" not in normalise_chat_response(chat)["choices"][0]["message"]
    chat["choices"][0]["message"]["tool_calls"] = []
    out = normalise_chat_response(chat)
    assert out["choices"][0]["message"]["tool_calls"] == []
    validate("CreateChatCompletionResponse", out)


def test_completion_body_is_valid_once_normalised() -> None:
    assert errors("CreateCompletionResponse", VLLM_COMPLETION)
    validate("CreateCompletionResponse", normalise_completion_response(VLLM_COMPLETION))


def test_final_usage_chunk_with_null_details_is_fixed() -> None:
    chunk = {
        **VLLM_CHUNK,
        "choices": [],
        "usage": {
            "prompt_tokens": 37,
            "completion_tokens": 8,
            "total_tokens": 45,
            "prompt_tokens_details": None,
        },
    }
    validate("CreateChatCompletionStreamResponse", normalise_chunk(chunk))
    validate("CreateChatCompletionStreamResponse", normalise_chunk({**VLLM_CHUNK, "usage": None}))

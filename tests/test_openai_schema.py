"""The schema validator itself: it must accept valid bodies and be able to fail."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.openai_schema import _rewrite_nullable, errors, validate

SCHEMAS = (
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "CreateCompletionResponse",
    "CreateEmbeddingResponse",
    "ListModelsResponse",
    "ErrorResponse",
    "CreateChatCompletionRequest",
    "CreateCompletionRequest",
)

CHAT_RESPONSE: dict[str, Any] = {
    "id": "chatcmpl-123",
    "object": "chat.completion",
    "created": 1741570283,
    "model": "smollm2",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Paris.", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
}

CHUNK: dict[str, Any] = {
    "id": "chatcmpl-123",
    "object": "chat.completion.chunk",
    "created": 1741570283,
    "model": "smollm2",
    "choices": [{"index": 0, "delta": {"content": "Paris"}, "finish_reason": None}],
}


def _with(body: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(body)
    target: Any = changed
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return changed


@pytest.mark.parametrize("name", SCHEMAS)
def test_every_schema_the_gateway_needs_is_in_the_spec(name: str) -> None:
    # {} is invalid for all of them (each has required fields); what matters is
    # that the name and its $refs resolve.
    assert errors(name, {})


def test_accepts_a_correct_chat_response() -> None:
    validate("CreateChatCompletionResponse", CHAT_RESPONSE)


def test_rejects_a_wrong_type_and_says_where() -> None:
    body = _with(CHAT_RESPONSE, ("created",), "yesterday")
    with pytest.raises(AssertionError, match=r"\$\.created: 'yesterday' is not of type 'integer'"):
        validate("CreateChatCompletionResponse", body)


def test_rejects_null_where_the_spec_does_not_allow_it() -> None:
    body = _with(CHAT_RESPONSE, ("choices", 0, "message", "annotations"), None)
    with pytest.raises(AssertionError, match=r"message\.annotations: None is not of type"):
        validate("CreateChatCompletionResponse", body)


def test_rejects_a_missing_required_field() -> None:
    body = copy.deepcopy(CHAT_RESPONSE)
    del body["choices"][0]["message"]["refusal"]
    with pytest.raises(AssertionError, match="'refusal' is a required property"):
        validate("CreateChatCompletionResponse", body)


def test_openapi_nullable_fields_accept_null_but_still_check_type() -> None:
    # Both are `nullable: true` in the spec, which JSON Schema alone would ignore.
    validate("CreateChatCompletionStreamResponse", {**CHUNK, "usage": None})
    validate("CreateChatCompletionStreamResponse", CHUNK)  # finish_reason: null
    with pytest.raises(AssertionError, match=r"\$\.usage"):
        validate("CreateChatCompletionStreamResponse", {**CHUNK, "usage": "none"})
    bad_reason = _with(CHUNK, ("choices", 0, "finish_reason"), "done")
    with pytest.raises(AssertionError, match="finish_reason"):
        validate("CreateChatCompletionStreamResponse", bad_reason)


def test_request_schemas_accept_a_plain_request_and_reject_bad_fields() -> None:
    chat = {"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "temperature": 0}
    validate("CreateChatCompletionRequest", chat)
    validate("CreateCompletionRequest", {"model": "smollm2", "prompt": "Hi", "max_tokens": 4})
    with pytest.raises(AssertionError, match=r"\$\.temperature"):
        validate("CreateChatCompletionRequest", {**chat, "temperature": "hot"})


def test_error_lists_every_problem() -> None:
    body = _with(CHAT_RESPONSE, ("created",), "yesterday")
    body["object"] = "chat"
    with pytest.raises(AssertionError, match=r"2 error\(s\)") as raised:
        validate("CreateChatCompletionResponse", body)
    assert "$.object" in str(raised.value) and "$.created" in str(raised.value)


def test_unknown_schema_name_is_a_clear_error() -> None:
    with pytest.raises(KeyError, match="NoSuchSchema"):
        validate("NoSuchSchema", {})


def test_nullable_rewrite_leaves_properties_named_nullable_alone() -> None:
    schema = {
        "type": "object",
        "nullable": True,
        "properties": {"nullable": {"type": "boolean"}, "x": {"$ref": "#/y", "nullable": True}},
    }
    assert _rewrite_nullable(schema) == {
        "anyOf": [
            {
                "type": "object",
                "properties": {
                    "nullable": {"type": "boolean"},
                    "x": {"anyOf": [{"$ref": "#/y"}, {"type": "null"}]},
                },
            },
            {"type": "null"},
        ]
    }

"""Make vLLM's OpenAI-style bodies valid under the official OpenAI schemas.

vLLM serialises every optional field of its pydantic models, so absent
fields arrive as `null`. The OpenAI spec (tests/data/openai-openapi.yaml)
allows `null` only where a field is nullable; elsewhere an optional field
must be absent or typed, and strict clients and SDK type checks reject the
null. Each field below is handled because the schema says so:

Dropped when null (optional and not nullable in the spec):
  - `usage` (non-streamed; nullable only in stream chunks)
  - `system_fingerprint` (string)
  - `usage.completion_tokens_details`, `usage.prompt_tokens_details` (objects)
  - `choices[].message.annotations` (array), `.function_call` (object),
    `.tool_calls` (array)
  - `choices[].delta.function_call`, `.tool_calls` (stream chunks)

Added as null when missing (required but nullable):
  - `choices[].message.content`, `.refusal`
  - `choices[].logprobs.content`, `.refusal` (vLLM never sends `refusal`)

Left alone: nullable fields (`service_tier`, `message.audio`,
`choices[].logprobs` itself, `delta.content`), an empty `tool_calls` list
(valid), and vLLM's extensions (`stop_reason`, `token_ids`, `reasoning`,
`prompt_logprobs`, `kv_transfer_params`, ...): the response schemas do not
forbid extra properties, and vLLM-aware clients read them.

Every function is pure and copies only the objects it changes, so the
common case (nothing to fix below the top level) costs a few dict lookups.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Body = dict[str, Any]

_RESPONSE_DROP_IF_NULL = ("usage", "system_fingerprint")
_CHUNK_DROP_IF_NULL = ("system_fingerprint",)
_USAGE_DROP_IF_NULL = ("completion_tokens_details", "prompt_tokens_details")
_MESSAGE_DROP_IF_NULL = ("annotations", "function_call", "tool_calls")
_MESSAGE_REQUIRED_NULLABLE = ("content", "refusal")
_DELTA_DROP_IF_NULL = ("function_call", "tool_calls")
_LOGPROBS_REQUIRED_NULLABLE = ("content", "refusal")


def _fix(obj: Body, drop_if_null: tuple[str, ...], require: tuple[str, ...] = ()) -> Body:
    """`obj` itself when nothing needs fixing, else a fixed shallow copy."""
    drop = [key for key in drop_if_null if key in obj and obj[key] is None]
    missing = [key for key in require if key not in obj]
    if not drop and not missing:
        return obj
    fixed = {key: value for key, value in obj.items() if key not in drop}
    for key in missing:
        fixed[key] = None
    return fixed


def _fix_usage(body: Body) -> Body:
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return body
    fixed = _fix(usage, _USAGE_DROP_IF_NULL)
    return body if fixed is usage else {**body, "usage": fixed}


def _fix_logprobs(choice: Body) -> Body:
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, dict):
        return choice
    fixed = _fix(logprobs, (), _LOGPROBS_REQUIRED_NULLABLE)
    return choice if fixed is logprobs else {**choice, "logprobs": fixed}


def _fix_nested(choice: Body, key: str, drop: tuple[str, ...], require: tuple[str, ...]) -> Body:
    nested = choice.get(key)
    if not isinstance(nested, dict):
        return choice
    fixed = _fix(nested, drop, require)
    return choice if fixed is nested else {**choice, key: fixed}


def _fix_choices(body: Body, fix_choice: Callable[[Body], Body]) -> Body:
    choices = body.get("choices")
    if not isinstance(choices, list):
        return body
    fixed = [fix_choice(choice) if isinstance(choice, dict) else choice for choice in choices]
    if all(new is old for new, old in zip(fixed, choices, strict=True)):
        return body
    return {**body, "choices": fixed}


def _fix_chat_choice(choice: Body) -> Body:
    choice = _fix_nested(choice, "message", _MESSAGE_DROP_IF_NULL, _MESSAGE_REQUIRED_NULLABLE)
    return _fix_logprobs(choice)


def _fix_chunk_choice(choice: Body) -> Body:
    choice = _fix_nested(choice, "delta", _DELTA_DROP_IF_NULL, ())
    return _fix_logprobs(choice)


def normalise_chat_response(body: Body) -> Body:
    """A non-streamed chat completion, valid under CreateChatCompletionResponse."""
    body = _fix(body, _RESPONSE_DROP_IF_NULL)
    body = _fix_usage(body)
    return _fix_choices(body, _fix_chat_choice)


def normalise_completion_response(body: Body) -> Body:
    """A non-streamed text completion, valid under CreateCompletionResponse."""
    body = _fix(body, _RESPONSE_DROP_IF_NULL)
    return _fix_usage(body)


def normalise_chunk(body: Body) -> Body:
    """One chat stream chunk, valid under CreateChatCompletionStreamResponse.

    vLLM's chunks already validate unless logprobs were requested (no
    `refusal`) or a final usage chunk carries null details; `usage: null`
    itself is allowed in chunks, so it is kept.
    """
    body = _fix(body, _CHUNK_DROP_IF_NULL)
    body = _fix_usage(body)
    return _fix_choices(body, _fix_chunk_choice)

"""Cheap checks on request bodies the gateway forwards untouched.

The worker validates fully; the gateway only checks what it must read itself
(model, stream) and what a client most often gets wrong, so the error names
the field instead of surfacing as an upstream failure.
"""

from __future__ import annotations

from typing import Any

import orjson

from spotgate.errors import InvalidRequest

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def parse_body(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise InvalidRequest("The request body is empty; expected a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"We could not parse the JSON body of your request: {exc}.") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body


def integer_field(body: dict[str, Any], name: str) -> int | None:
    """The field as an int; `3.0` counts (JSON Schema's integer, and what vLLM accepts)."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"'{name}' must be an integer.", param=name)
    return value


def _require_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if model is None:
        raise InvalidRequest("Missing required parameter: 'model'.", param="model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' must be a non-empty string.", param="model")
    return model


def _check_types(body: dict[str, Any]) -> None:
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean.", param="stream")
    for name in ("max_tokens", "max_completion_tokens", "n", "best_of"):
        value = integer_field(body, name)
        if value is not None and value < 1:
            raise InvalidRequest(f"'{name}' must be at least 1.", param=name)
    for name, low, high in (("temperature", 0.0, 2.0), ("top_p", 0.0, 1.0)):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidRequest(f"'{name}' must be a number.", param=name)
        if not low <= value <= high:
            raise InvalidRequest(f"'{name}' must be between {low:g} and {high:g}.", param=name)


def check_chat(body: dict[str, Any]) -> str:
    model = _require_model(body)
    messages = body.get("messages")
    if messages is None:
        raise InvalidRequest("Missing required parameter: 'messages'.", param="messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array.", param="messages")
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        if not isinstance(message, dict):
            raise InvalidRequest(f"'{param}' must be an object.", param=param)
        role = message.get("role")
        if not isinstance(role, str) or role not in _ROLES:
            raise InvalidRequest(
                f"'{param}.role' must be one of {', '.join(sorted(_ROLES))}.",
                param=f"{param}.role",
            )
        if "content" not in message and not message.get("tool_calls"):
            raise InvalidRequest(
                f"Missing required parameter: '{param}.content'.", param=f"{param}.content"
            )
    _check_types(body)
    return model


def check_completion(body: dict[str, Any]) -> str:
    model = _require_model(body)
    prompt = body.get("prompt")
    if prompt is None:
        raise InvalidRequest("Missing required parameter: 'prompt'.", param="prompt")
    if not isinstance(prompt, str | list):
        raise InvalidRequest("'prompt' must be a string or an array.", param="prompt")
    _check_types(body)
    return model


def check_embedding(body: dict[str, Any]) -> str:
    model = _require_model(body)
    data = body.get("input")
    if data is None:
        raise InvalidRequest("Missing required parameter: 'input'.", param="input")
    if not isinstance(data, str | list) or data in ("", []):
        raise InvalidRequest("'input' must be a non-empty string or array.", param="input")
    return model

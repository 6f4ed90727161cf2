"""Request-body validation, rejecting what vLLM rejects with a 400 before any work starts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson

from spotgate.engines.sim.config import SimConfig
from spotgate.engines.sim.errors import SimError, invalid, model_not_found


def parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    return body


def check_model(body: dict[str, Any], config: SimConfig) -> None:
    """vLLM treats an absent model as the served one, so only a wrong name fails."""
    model = body.get("model")
    if model is None or model == config.model:
        return
    if not isinstance(model, str):
        raise invalid("'model' must be a string.", "model")
    raise model_not_found(model, config.model)


def optional_int(body: dict[str, Any], name: str, minimum: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"'{name}' must be an integer.", name)
    if minimum is not None and value < minimum:
        raise invalid(f"'{name}' must be at least {minimum}, got {value}.", name)
    return value


def optional_float(body: dict[str, Any], name: str, minimum: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise invalid(f"'{name}' must be a number.", name)
    if value < minimum:
        raise invalid(f"'{name}' must be at least {minimum}, got {value}.", name)
    return float(value)


def flag(body: dict[str, Any], name: str, default: bool = False) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(f"'{name}' must be a boolean.", name)
    return value


def _stops(body: dict[str, Any]) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,)
    if isinstance(stop, list) and all(isinstance(item, str) for item in stop):
        return tuple(stop)
    raise invalid("'stop' must be a string or a list of strings.", "stop")


@dataclass(frozen=True, slots=True)
class Sampling:
    n: int
    max_tokens: int | None
    temperature: float
    seed: int | None
    stops: tuple[str, ...]
    ignore_eos: bool
    stream: bool
    include_usage: bool


def sampling(body: dict[str, Any], *, chat: bool) -> Sampling:
    max_tokens = optional_int(body, "max_tokens", 1)
    if chat:
        max_tokens = optional_int(body, "max_completion_tokens", 1) or max_tokens
    temperature = optional_float(body, "temperature", 0.0)
    stream = flag(body, "stream")
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not stream:
            raise invalid(
                "Stream options can only be defined when `stream=True`.", "stream_options"
            )
        if not isinstance(options, dict):
            raise invalid("'stream_options' must be an object.", "stream_options")
        include_usage = flag(options, "include_usage")
    return Sampling(
        n=optional_int(body, "n", 1) or 1,
        max_tokens=max_tokens,
        temperature=1.0 if temperature is None else temperature,
        seed=optional_int(body, "seed"),
        stops=_stops(body),
        ignore_eos=flag(body, "ignore_eos"),
        stream=stream,
        include_usage=include_usage,
    )


def completion_budget(prompt_tokens: int, requested: int | None, config: SimConfig) -> int:
    """The tokens a request may generate, or the 400 vLLM gives when it cannot fit."""
    limit = config.max_model_len
    if prompt_tokens >= limit:
        raise SimError(
            f"This model's maximum context length is {limit} tokens. However, your request "
            f"has {prompt_tokens} input tokens. Please reduce the length of the input.",
            param="messages",
        )
    if requested is None:
        return min(config.default_max_tokens, limit - prompt_tokens)
    if prompt_tokens + requested > limit:
        raise SimError(
            f"This model's maximum context length is {limit} tokens. However, you requested "
            f"{prompt_tokens + requested} tokens ({prompt_tokens} in the input, {requested} in "
            f"the completion). Please reduce the length of the input or completion.",
            param="max_tokens",
        )
    return requested

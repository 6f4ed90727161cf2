"""How much work one request may ask of a worker, checked before it reaches one.

A worker trusts its caller: vLLM allocates what `n`, `best_of` or a huge
`max_tokens` ask for, and a single `{"n": 1099511627776}` grew a worker by
gigabytes until it died. The gateway is the boundary, so every count a
client controls is bounded here, per model (the catalogue's `limits`, over
the gateway-wide defaults), and a request over a bound is a 400 naming the
field, never forwarded.

`max_tokens` defaults to the model's context length when the catalogue knows
it: a longer answer could never be produced anyway.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from spotgate.errors import InvalidRequest
from spotgate.gateway.request_body import integer_field

DEFAULT_MAX_TOKENS = 32_768


class RequestLimits(BaseModel):
    """Upper bounds on what one request may ask for; None on `max_tokens` means the
    model's context length (or DEFAULT_MAX_TOKENS when unknown)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_n: int = Field(default=16, ge=1)
    max_best_of: int = Field(default=16, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_logprobs: int = Field(default=20, ge=0)
    max_messages: int = Field(default=1024, ge=1)
    max_stop: int = Field(default=16, ge=0)
    max_prompts: int = Field(default=128, ge=1)
    max_embedding_inputs: int = Field(default=2048, ge=1)
    max_tools: int = Field(default=128, ge=0)

    def token_bound(self, context_length: int | None) -> int:
        if self.max_tokens is not None:
            return self.max_tokens
        return context_length or DEFAULT_MAX_TOKENS


def _too_many(name: str, limit: int, model: str, what: str = "at most") -> InvalidRequest:
    return InvalidRequest(
        f"'{name}' must be {what} {limit} for model '{model}' on this gateway.",
        param=name,
        code="limit_exceeded",
    )


def _bounded_int(body: dict[str, Any], name: str, low: int, high: int, model: str) -> None:
    value = integer_field(body, name)
    if value is None:
        return
    if value < low:
        raise InvalidRequest(f"'{name}' must be at least {low}.", param=name)
    if value > high:
        raise _too_many(name, high, model)


def _bounded_list(body: dict[str, Any], name: str, high: int, model: str) -> None:
    value = body.get(name)
    if isinstance(value, list) and len(value) > high:
        raise _too_many(name, high, model, "an array of at most")


def check_limits(
    path: str,
    body: dict[str, Any],
    limits: RequestLimits,
    model: str,
    context_length: int | None = None,
) -> None:
    """Raises a 400 for the first field over its bound; types were checked before."""
    tokens = limits.token_bound(context_length)
    for name in ("max_tokens", "max_completion_tokens"):
        _bounded_int(body, name, 1, tokens, model)
    _bounded_int(body, "n", 1, limits.max_n, model)
    _bounded_int(body, "best_of", 1, limits.max_best_of, model)
    _bounded_int(body, "top_logprobs", 0, limits.max_logprobs, model)
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str):
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise InvalidRequest("'stop' must be a string or an array of strings.", param="stop")
        _bounded_list(body, "stop", limits.max_stop, model)
    _bounded_list(body, "tools", limits.max_tools, model)
    _bounded_list(body, "functions", limits.max_tools, model)
    if path.endswith("/chat/completions"):
        logprobs = body.get("logprobs")
        if logprobs is not None and not isinstance(logprobs, bool):
            raise InvalidRequest("'logprobs' must be a boolean.", param="logprobs")
        _bounded_list(body, "messages", limits.max_messages, model)
    elif path.endswith("/completions"):
        _bounded_int(body, "logprobs", 0, limits.max_logprobs, model)
        _bounded_list(body, "prompt", limits.max_prompts, model)
    elif path.endswith("/embeddings"):
        _bounded_list(body, "input", limits.max_embedding_inputs, model)

"""Prompt token counts for choosing a model: exact from a worker, or a safe overestimate.

Only the model's own tokenizer gives the true count, and every vLLM worker
exposes it at `/tokenize`; asking one costs a loopback-scale round trip,
bounded by a short timeout. When no worker serves the model yet, or the call
fails, a byte-based estimate stands in. It errs high (about 3 bytes per token
where English averages 4), so a model it picks has room; it errs low only for
scripts that tokenize worse than one token per 3 bytes, which the completion
budget usually absorbs.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from spotgate.fleet.registry import WorkerRegistry
from spotgate.gateway.upstream import UpstreamClient, WorkerUnreachable

BYTES_PER_TOKEN = 3
MESSAGE_OVERHEAD_TOKENS = 8  # role markers and separators of a chat template, per message
PROMPT_OVERHEAD_TOKENS = 16  # BOS, the generation prompt, a default system prompt
MEDIA_PART_TOKENS = 1024  # an image or audio part; its bytes say nothing about its tokens
_JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True, slots=True)
class TokenCount:
    tokens: int
    exact: bool


def _text_tokens(text: str) -> int:
    return -(-len(text.encode("utf-8")) // BYTES_PER_TOKEN)


def _content_tokens(content: Any) -> int:
    if isinstance(content, str):
        return _text_tokens(content)
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, str):
                total += _text_tokens(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                total += _text_tokens(part["text"])
            elif isinstance(part, dict):
                total += MEDIA_PART_TOKENS
        return total
    if content is None:
        return 0
    return _text_tokens(orjson.dumps(content).decode())


def _id_count(prompt: Any) -> int | None:
    """How many token ids `prompt` holds if it is a list of them, else None."""
    if isinstance(prompt, list) and all(isinstance(x, int) for x in prompt):
        return len(prompt)
    return None


def _prompt_tokens(prompt: Any) -> int:
    """For a completion prompt: text, token ids, or a batch (each its own sequence: the max)."""
    if isinstance(prompt, str):
        return _text_tokens(prompt)
    ids = _id_count(prompt)
    if ids is not None:
        return ids
    if isinstance(prompt, list):
        return max((_prompt_tokens(item) for item in prompt), default=0)
    return 0


def estimate_tokens(body: dict[str, Any]) -> int:
    """A conservative prompt size from the request alone, with no tokenizer."""
    messages = body.get("messages")
    if isinstance(messages, list):
        total = PROMPT_OVERHEAD_TOKENS
        for message in messages:
            if not isinstance(message, dict):
                continue
            total += MESSAGE_OVERHEAD_TOKENS + _content_tokens(message.get("content"))
            for key in ("name", "tool_calls", "tool_call_id"):
                if message.get(key) is not None:
                    total += _content_tokens(message[key])
        for key in ("tools", "functions", "response_format"):
            if body.get(key) is not None:
                total += _content_tokens(body[key])
        return total
    return PROMPT_OVERHEAD_TOKENS + _prompt_tokens(body.get("prompt"))


def tokenize_request(model: str, body: dict[str, Any]) -> dict[str, Any] | None:
    """vLLM's /tokenize body for this request, or None when one call cannot count it."""
    messages = body.get("messages")
    if isinstance(messages, list):
        request: dict[str, Any] = {"model": model, "messages": messages}
        if body.get("tools") is not None:
            request["tools"] = body["tools"]
        return request
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return {"model": model, "prompt": prompt}
    return None


def _exact_without_tokenizer(body: dict[str, Any]) -> int | None:
    """Token-id prompts need no tokenizer: their length is the count."""
    prompt = body.get("prompt")
    if not isinstance(prompt, list) or not prompt:
        return None
    ids = _id_count(prompt)
    if ids is not None:
        return ids
    batch = [n for n in map(_id_count, prompt) if n is not None]
    return max(batch) if len(batch) == len(prompt) else None


class TokenCounter:
    """Counts a request's prompt tokens with a ready worker's tokenizer, else estimates."""

    def __init__(
        self,
        registry: WorkerRegistry,
        upstream: UpstreamClient,
        *,
        timeout_s: float = 0.5,
        usable: Callable[[str], bool] | None = None,
    ) -> None:
        """`usable(worker_id)` lets the caller skip workers it has benched (PassiveHealth)."""
        self._registry = registry
        self._upstream = upstream
        self._timeout_s = timeout_s
        self._usable = usable or (lambda _worker_id: True)
        self._turn = itertools.count()

    async def count(self, served_name: str, body: dict[str, Any]) -> TokenCount:
        known = _exact_without_tokenizer(body)
        if known is not None:
            return TokenCount(known, exact=True)
        request = tokenize_request(served_name, body)
        if request is not None and self._timeout_s > 0:
            ready = self._registry.ready_for_model(served_name)
            workers = [w for w in ready if self._usable(w.id)]
            if workers:
                worker = workers[next(self._turn) % len(workers)]
                counted = await self._ask(worker.url + "/tokenize", request)
                if counted is not None:
                    return TokenCount(counted, exact=True)
        return TokenCount(estimate_tokens(body), exact=False)

    async def _ask(self, url: str, request: dict[str, Any]) -> int | None:
        try:
            async with asyncio.timeout(self._timeout_s):
                reply = await self._upstream.post(url, orjson.dumps(request), _JSON)
        except (TimeoutError, WorkerUnreachable, ValueError):
            return None
        if reply.status != 200:
            return None
        try:
            count = orjson.loads(reply.body).get("count")
        except (orjson.JSONDecodeError, AttributeError):
            return None
        return count if isinstance(count, int) and count >= 0 else None

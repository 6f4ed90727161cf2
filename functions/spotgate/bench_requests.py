"""One `spotgate bench` request and how it is judged: success, or which kind of failure.

Split from the scheduler because "what counts as a failure" is the part a
script relies on (exit code 1): any non-2xx, and for streams also a 200 whose
body later carries an SSE `error` event (the gateway's way to fail after the
headers are out) or that ends without `[DONE]` (a cut connection).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from spotgate.bench_stats import RequestResult
from spotgate.cli_client import auth

CHAT_PATH = "/v1/chat/completions"


def http_kind(status: int, content: bytes) -> str:
    """`http_503:no_capacity`: the status, plus OpenAI's error code when the body carries one."""
    try:
        code = json.loads(content)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        code = None
    return f"http_{status}:{code}" if code else f"http_{status}"


def chat_body(
    model: str, prompt: str, max_tokens: int, *, stream: bool, nonce: str | None
) -> dict[str, Any]:
    """A sampled request with a nonce (never a cache hit), or a greedy one without (cacheable)."""
    content = prompt if nonce is None else f"{prompt}\n\n(bench {nonce})"
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0.7 if nonce is not None else 0,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body


async def send_plain(
    client: httpx.AsyncClient, body: dict[str, Any], key: str | None, step: int
) -> RequestResult:
    started = time.perf_counter()
    response = await client.post(CHAT_PATH, json=body, headers=auth(key))
    latency = time.perf_counter() - started
    worker = response.headers.get("x-worker")
    if not response.is_success:
        return RequestResult(step, latency, http_kind(response.status_code, response.content))
    try:
        usage = response.json().get("usage") or {}
        tokens = int(usage.get("completion_tokens") or 0)
    except (ValueError, AttributeError, TypeError):
        return RequestResult(step, latency, "bad_json", worker)
    return RequestResult(step, latency, None, worker, tokens)


async def send_streamed(
    client: httpx.AsyncClient, body: dict[str, Any], key: str | None, step: int
) -> RequestResult:
    started = time.perf_counter()
    async with client.stream("POST", CHAT_PATH, json=body, headers=auth(key)) as response:
        worker = response.headers.get("x-worker")
        if not response.is_success:
            content = await response.aread()
            latency = time.perf_counter() - started
            return RequestResult(step, latency, http_kind(response.status_code, content))
        error, ttft, tokens = await read_events(response.aiter_lines(), started)
    latency = time.perf_counter() - started
    return RequestResult(step, latency, error, worker, 0 if error else tokens, ttft)


async def read_events(
    lines: AsyncIterator[str], started: float
) -> tuple[str | None, float | None, int]:
    """Reads an SSE chat stream: (error kind or None, seconds to first content, output tokens).

    Output tokens come from the final usage chunk (`include_usage`), else one
    per content chunk, which is what vLLM sends at the default stream interval.
    """
    event = ""
    done = False
    ttft: float | None = None
    chunks, usage_tokens = 0, None
    async for line in lines:
        if not line:
            event = ""
            continue
        if line.startswith("event:"):
            event = line[6:].strip()
            continue
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            done = True
            continue
        try:
            payload = json.loads(data)
        except ValueError:
            return "sse_bad_json", ttft, 0
        if not isinstance(payload, dict):
            return "sse_bad_json", ttft, 0
        if event == "error" or "error" in payload:
            error = payload.get("error")
            code = error.get("code") if isinstance(error, dict) else None
            return (f"sse_error:{code}" if code else "sse_error"), ttft, 0
        usage = payload.get("usage")
        if isinstance(usage, dict) and usage.get("completion_tokens") is not None:
            usage_tokens = int(usage["completion_tokens"])
        for choice in payload.get("choices") or ():
            delta = choice.get("delta") or {}
            if delta.get("content") or choice.get("text"):
                chunks += 1
                if ttft is None:
                    ttft = time.perf_counter() - started
    if not done:
        return "stream_without_done", ttft, 0
    return None, ttft, usage_tokens if usage_tokens is not None else chunks

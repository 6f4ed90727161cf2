"""OpenAI-compatible routes: parse cheaply, route, forward the raw body, relay the answer.

The request body is forwarded as the client sent it; the gateway only reads
the fields it routes on, so a request costs one JSON parse here.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from spotgate.api.auth import require_key
from spotgate.api.disconnect import while_connected
from spotgate.api.errors import json_response
from spotgate.api.middleware import REQUEST_ID
from spotgate.api.request_reading import read_request_body
from spotgate.api.streaming import ClosingStreamingResponse
from spotgate.errors import UpstreamError
from spotgate.gateway import request_body
from spotgate.gateway.cache_key import tenant_scope
from spotgate.gateway.cache_policy import CacheDecision
from spotgate.gateway.cache_store import CachedResponse
from spotgate.gateway.forwarding import Reply, StreamReply
from spotgate.gateway.normalise import normalise_chat_response, normalise_completion_response
from spotgate.gateway.relay import Relay
from spotgate.gateway.request_limits import check_limits
from spotgate.gateway.sse_assemble import assemble_stream
from spotgate.gateway.sse_replay import NotReplayable, replay_as_stream
from spotgate.gateway.upstream_errors import openai_error_body, upstream_status
from spotgate.runtime import Runtime

Checker = Callable[[dict[str, Any]], str]
Normaliser = Callable[[dict[str, Any]], dict[str, Any]] | None

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _served_headers(model: str, worker_id: str, x_cache: str) -> dict[str, str]:
    return {"X-Model": model, "X-Worker": worker_id, "X-Cache": x_cache}


def _reply_response(reply: Reply, model: str, normalise: Normaliser, x_cache: str) -> Response:
    headers = _served_headers(model, reply.worker_id, x_cache)
    if reply.status != 200:
        return Response(
            openai_error_body(reply.status, reply.body),
            upstream_status(reply.status),
            headers,
            media_type="application/json",
        )
    content = reply.body
    if normalise is not None:
        content = orjson.dumps(normalise(orjson.loads(content)))
    return Response(content, 200, headers, media_type="application/json")


def _bad_output(runtime: Runtime, reply: Reply) -> UpstreamError:
    """A 200 whose body is not JSON: the worker is broken or not what it claims."""
    runtime.registry.distrust(reply.worker_id, "answered 200 with a body that is not JSON")
    return UpstreamError(
        "The model's worker sent an answer that could not be read. Retry shortly.",
        code="upstream_error",
    )


def _cached_response(
    hit: CachedResponse, body: dict[str, Any], model: str, wants_stream: bool
) -> Response | None:
    """A stored answer in the form the client asked for; None if it cannot be replayed."""
    headers = _served_headers(model, "cache", "HIT")
    if not wants_stream:
        return Response(hit.body, hit.status, headers, media_type="application/json")
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    try:
        events = replay_as_stream(orjson.loads(hit.body), include_usage=include_usage)
    except NotReplayable:
        return None
    return StreamingResponse(
        iter(events), media_type="text/event-stream", headers={**_SSE_HEADERS, **headers}
    )


def _storing_relay(
    chunks: Relay, runtime: Runtime, decision: CacheDecision, model: str, worker_id: str
) -> Relay:
    """Relays a stream untouched and stores it once it completed whole, never a broken one."""
    return Relay(_storing(chunks, runtime, decision, model, worker_id), chunks.aclose)


async def _storing(
    chunks: Relay,
    runtime: Runtime,
    decision: CacheDecision,
    model: str,
    worker_id: str,
) -> AsyncGenerator[bytes, None]:
    copied: list[bytes] | None = []
    size = 0
    completed = False
    try:
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                if copied is not None:
                    size += len(chunk)
                    copied = copied if size <= 4 * decision.max_entry_bytes else None
                    if copied is not None:
                        copied.append(chunk)
                yield chunk
        completed = True
    finally:
        if completed and copied:
            assembled = assemble_stream(copied)
            if assembled is not None and assembled.get("usage") is not None:
                _store(runtime, decision, orjson.dumps(assembled), model, worker_id)


def _store(
    runtime: Runtime, decision: CacheDecision, body: bytes, model: str, worker_id: str
) -> None:
    """Stores a whole 200 answer in the background (the decision came from this cache)."""
    cache = runtime.response_cache
    if cache is not None:
        stored = CachedResponse(200, body, model, runtime.clock.now(), worker_id)
        cache.schedule_put(decision, stored)


def _endpoint(path: str, check: Checker, normalise: Normaliser, streams: bool):
    async def handle(request: Request) -> Response:
        runtime: Runtime = request.app.state.runtime
        presented = require_key(request, runtime.settings.api_keys)
        raw = await read_request_body(request)
        body = request_body.parse_body(raw)
        model = check(body)
        return await while_connected(
            request, lambda: _serve(request, runtime, presented, raw, body, model)
        )

    async def _serve(
        request: Request,
        runtime: Runtime,
        presented: str,
        raw: bytes,
        body: dict[str, Any],
        model: str,
    ) -> Response:
        router = runtime.router
        resolved = await router.resolve(model, body)
        entry = resolved.entry
        check_limits(
            path,
            body,
            resolved.limits(runtime.settings.request_limits),
            resolved.name,
            entry.context_length if entry is not None else None,
        )
        wants_stream = streams and bool(body.get("stream"))
        cache = runtime.response_cache
        decision = None  # None exactly when there is no cache
        if cache is not None:
            # aliases and the served name share entries: key on the canonical name
            key_body = body if model == resolved.name else {**body, "model": resolved.name}
            # with several tenants, a hit must not reveal what another one asked
            scope = tenant_scope(presented) if len(runtime.settings.api_keys) > 1 else ""
            decision = cache.decide(path, key_body, request.headers, scope=scope)
            hit = await cache.get(decision) if decision.read else None
            if hit is not None:
                cached = _cached_response(hit, body, resolved.name, wants_stream)
                if cached is not None:
                    return cached
        x_cache = "MISS" if decision is not None and decision.read else "BYPASS"
        forward_headers = {"X-Request-ID": request.scope[REQUEST_ID]}
        result = await router.forward(
            path, resolved, raw, body, forward_headers, stream=wants_stream
        )
        if isinstance(result, StreamReply):
            chunks = result.chunks
            if decision is not None and decision.write:
                chunks = _storing_relay(chunks, runtime, decision, resolved.name, result.worker_id)
            headers = _served_headers(resolved.name, result.worker_id, x_cache)
            return ClosingStreamingResponse(
                chunks, media_type="text/event-stream", headers={**_SSE_HEADERS, **headers}
            )
        try:
            response = _reply_response(
                result, resolved.name, None if wants_stream else normalise, x_cache
            )
        except orjson.JSONDecodeError:
            raise _bad_output(runtime, result) from None
        if decision is not None and decision.write and result.status == 200:
            _store(runtime, decision, response.body, resolved.name, result.worker_id)
        return response

    return handle


async def list_models(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    require_key(request, runtime.settings.api_keys)
    return json_response(runtime.router.catalog.listing())


routes = [
    Route("/v1/models", list_models, methods=["GET"]),
    Route(
        "/v1/chat/completions",
        _endpoint("/v1/chat/completions", request_body.check_chat, normalise_chat_response, True),
        methods=["POST"],
    ),
    Route(
        "/v1/completions",
        _endpoint(
            "/v1/completions", request_body.check_completion, normalise_completion_response, True
        ),
        methods=["POST"],
    ),
    Route(
        "/v1/embeddings",
        _endpoint("/v1/embeddings", request_body.check_embedding, None, False),
        methods=["POST"],
    ),
]

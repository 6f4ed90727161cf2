"""OpenAI-compatible routes: parse cheaply, route, forward the raw body, relay the answer.

The request body is forwarded as the client sent it; the gateway only reads
the fields it routes on, so a request costs one JSON parse here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from spotgate.api.auth import require_key
from spotgate.api.errors import json_response
from spotgate.api.middleware import REQUEST_ID
from spotgate.errors import ModelNotFound, PayloadTooLarge
from spotgate.gateway import request_body
from spotgate.gateway.forwarding import Reply, StreamReply
from spotgate.gateway.normalise import normalise_chat_response, normalise_completion_response
from spotgate.gateway.upstream_errors import openai_error_body
from spotgate.runtime import Runtime

Checker = Callable[[dict[str, Any]], str]
Normaliser = Callable[[dict[str, Any]], dict[str, Any]] | None

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def _served_headers(model: str, worker_id: str) -> dict[str, str]:
    return {"X-Model": model, "X-Worker": worker_id, "X-Cache": "BYPASS"}


def _reply_response(reply: Reply, model: str, normalise: Normaliser) -> Response:
    headers = _served_headers(model, reply.worker_id)
    if reply.status != 200:
        return Response(
            openai_error_body(reply.status, reply.body),
            reply.status,
            headers,
            media_type="application/json",
        )
    content = reply.body
    if normalise is not None:
        content = orjson.dumps(normalise(orjson.loads(content)))
    return Response(content, 200, headers, media_type="application/json")


def _endpoint(path: str, check: Checker, normalise: Normaliser, streams: bool):
    async def handle(request: Request) -> Response:
        runtime: Runtime = request.app.state.runtime
        require_key(request, runtime.settings.api_keys)
        raw = await read_body(request, runtime.settings.max_body_bytes)
        body = request_body.parse_body(raw)
        model = check(body)
        if not runtime.catalog.knows(model):
            raise ModelNotFound(model)
        forward_headers = {"X-Request-ID": request.scope[REQUEST_ID]}
        if streams and body.get("stream"):
            result = await runtime.forwarder.forward_stream(path, model, raw, body, forward_headers)
            if isinstance(result, StreamReply):
                return StreamingResponse(
                    result.chunks,
                    media_type="text/event-stream",
                    headers={**_SSE_HEADERS, **_served_headers(model, result.worker_id)},
                )
            return _reply_response(result, model, None)
        reply = await runtime.forwarder.forward(path, model, raw, body, forward_headers)
        return _reply_response(reply, model, normalise)

    return handle


async def list_models(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    require_key(request, runtime.settings.api_keys)
    return json_response(runtime.catalog.listing())


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

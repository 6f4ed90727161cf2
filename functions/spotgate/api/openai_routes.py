"""OpenAI-compatible routes: check the key, read and parse the body, hand it to the pipeline.

Everything between the parsed request and the answer (model, cache,
admission, workers, spillover) is `gateway.serving.Serving`; a route only
turns its `Served` into a response. The raw body is forwarded as the client
sent it, so a request costs one JSON parse here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from spotgate.api.auth import bearer
from spotgate.api.disconnect import while_connected
from spotgate.api.errors import json_response
from spotgate.api.middleware import REQUEST_ID
from spotgate.api.request_reading import read_request_body
from spotgate.api.streaming import ClosingStreamingResponse
from spotgate.gateway import request_body
from spotgate.gateway.serving import (
    CHAT_PATH,
    COMPLETIONS_PATH,
    EMBEDDINGS_PATH,
    InferenceRequest,
    Served,
)
from spotgate.runtime import Runtime

Checker = Callable[[dict[str, Any]], str]

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def as_response(served: Served) -> Response:
    headers = {
        **served.headers,
        "X-Model": served.model,
        "X-Worker": served.worker_id,
        "X-Cache": served.cache,
    }
    if served.chunks is not None:
        sse = {**_SSE_HEADERS, **headers}
        return ClosingStreamingResponse(served.chunks, media_type="text/event-stream", headers=sse)
    if served.events is not None:
        sse = {**_SSE_HEADERS, **headers}
        return StreamingResponse(iter(served.events), media_type="text/event-stream", headers=sse)
    return Response(served.body, served.status, headers, media_type="application/json")


def _endpoint(path: str, check: Checker):
    async def handle(request: Request) -> Response:
        runtime: Runtime = request.app.state.runtime
        caller = runtime.tenancy.authority.authenticate(bearer(request))  # before the body
        raw = await read_request_body(request)
        body = request_body.parse_body(raw)
        request_id = request.scope[REQUEST_ID]
        inference = InferenceRequest(
            path, raw, body, check(body), request_id, request.headers, caller=caller
        )

        async def serve() -> Response:
            return as_response(await runtime.serving.serve(inference))

        return await while_connected(request, serve)

    return handle


async def list_models(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    caller = runtime.tenancy.authority.authenticate(bearer(request))
    return json_response(runtime.tenancy.visible_models(caller, runtime.router.catalog))


routes = [
    Route("/v1/models", list_models, methods=["GET"]),
    Route(CHAT_PATH, _endpoint(CHAT_PATH, request_body.check_chat), methods=["POST"]),
    Route(
        COMPLETIONS_PATH,
        _endpoint(COMPLETIONS_PATH, request_body.check_completion),
        methods=["POST"],
    ),
    Route(
        EMBEDDINGS_PATH, _endpoint(EMBEDDINGS_PATH, request_body.check_embedding), methods=["POST"]
    ),
]

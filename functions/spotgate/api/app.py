"""Builds the ASGI app from a Runtime: the same app serves locally and inside Functions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from spotgate.api import (
    admin_routes,
    agent_routes,
    batch_routes,
    fleet_routes,
    health_routes,
    local_imds_routes,
    metrics_routes,
    openai_routes,
    orchestration_routes,
)
from spotgate.api.errors import handle_http_exception, handle_openai_error
from spotgate.api.middleware import ResponseHeaders
from spotgate.errors import OpenAIError
from spotgate.runtime import Runtime

EXPOSED = ("x-request-id", "x-cache", "x-model", "x-worker", "x-duration-ms", "retry-after",
           "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
           "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens")  # fmt: skip


def cors(origins: list[str]) -> Middleware:
    """Browser clients on `origins` only. Keys travel in a header, never a cookie, so no
    credentials mode: a page elsewhere cannot ride on a user's session."""
    return Middleware(
        CORSMiddleware,
        allow_origins=origins,
        allow_methods=["GET", "POST", "PATCH", "DELETE"],
        allow_headers=["authorization", "api-key", "content-type", "x-request-id"],
        expose_headers=list(EXPOSED),
        allow_credentials=False,
        max_age=600,
    )


def create_app(runtime: Runtime, *, local: bool = True) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.close()

    routes = [
        *openai_routes.routes,
        *health_routes.routes,
        *metrics_routes.routes,
        *agent_routes.routes,
        *fleet_routes.routes,
        *admin_routes.routes,
        *orchestration_routes.routes,
    ]
    if runtime.batches is not None:
        routes += batch_routes.routes
    if local:
        routes += local_imds_routes.routes
    middleware = [Middleware(ResponseHeaders)]
    origins = runtime.settings.server.cors_allowed_origins
    if origins:  # outermost, so a preflight is answered before anything else runs
        middleware.insert(0, cors(origins))
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={
            OpenAIError: handle_openai_error,
            HTTPException: handle_http_exception,
        },
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    return app

"""Builds the ASGI app from a Runtime: the same app serves locally and inside Functions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware

from spotgate.api import (
    admin_routes,
    agent_routes,
    fleet_routes,
    health_routes,
    local_imds_routes,
    openai_routes,
    orchestration_routes,
)
from spotgate.api.errors import handle_http_exception, handle_openai_error
from spotgate.api.middleware import ResponseHeaders
from spotgate.errors import OpenAIError
from spotgate.runtime import Runtime


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
        *agent_routes.routes,
        *fleet_routes.routes,
        *admin_routes.routes,
        *orchestration_routes.routes,
    ]
    if local:
        routes += local_imds_routes.routes
    app = Starlette(
        routes=routes,
        middleware=[Middleware(ResponseHeaders)],
        exception_handlers={
            OpenAIError: handle_openai_error,
            HTTPException: handle_http_exception,
        },
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    return app

"""Builds the Azure Functions app: the ASGI API behind the HTTP streams feature, plus Durable.

The HTTP API is one catch-all HTTP function (`route="{*path}"`, every
method, anonymous: the API checks its own keys) that takes the worker's
FastAPI `Request` and returns a `StreamingResponse`, with our Starlette app
run in-process by `asgi_stream_bridge`. Responses stream chunk by chunk, so
`stream: true` really streams on Azure (`AsgiFunctionApp`, used before,
buffered whole responses). host.json sets `extensions.http.routePrefix` to
"", so `/v1/chat/completions` is the public path.

The feature needs the app setting `PYTHON_ENABLE_INIT_INDEXING=1` (Python
3.12 and earlier) and the import of `azurefunctions.extensions.http.fastapi`
below; see the bridge's docstring for the sources. With HTTP streams on,
every HTTP function of the app must use the FastAPI types: the Durable
blueprint registered next to it has no HTTP triggers (orchestrator,
activities, and the watchdog timer with its durable client), so nothing
else competes with the catch-all route.

No `from __future__ import annotations` here: the worker reads the HTTP
function's annotations (`Request` in, a response type out) while indexing.
"""

import logging

import azure.durable_functions as df
import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, StreamingResponse
from starlette.types import ASGIApp

from spotgate.adapters.azure.asgi_stream_bridge import (
    LifespanStartupError,
    call_asgi,
    ensure_started,
    openai_error_response,
)
from spotgate.adapters.azure.durable_client_control import DurableClientControl
from spotgate.adapters.azure.fleet_services import azure_fleet_services
from spotgate.adapters.azure.shared_pool_load import SharedPoolLoad
from spotgate.adapters.azure.store_sync import RegistrySync
from spotgate.adapters.azure.stores import build_azure_stores
from spotgate.adapters.local.sqlite_worker_store import SqliteWorkerStore
from spotgate.api.app import create_app
from spotgate.fleet.observation import PoolLoadSource
from spotgate.gateway.pool_load import AdmissionPoolLoad
from spotgate.orchestrations.blueprint import (
    bp,
    on_durable_client,
    set_services_provider,
    set_startup_hook,
)
from spotgate.runtime import Runtime, build_runtime
from spotgate.settings import Settings

log = logging.getLogger("spotgate.azure")

HTTP_FUNCTION_NAME = "http_app_func"
HTTP_ROUTE = "{*path}"
HTTP_METHODS = tuple(func.HttpMethod)  # GET, POST, DELETE, HEAD, PATCH, PUT, OPTIONS


def register_http_api(app: func.FunctionApp, asgi_app: ASGIApp) -> None:
    """Adds the one HTTP function: every path and method, served by `asgi_app`."""

    @app.function_name(HTTP_FUNCTION_NAME)
    @app.route(route=HTTP_ROUTE, methods=HTTP_METHODS, auth_level=func.AuthLevel.ANONYMOUS)
    async def http_app_func(req: Request) -> StreamingResponse:
        try:
            await ensure_started(asgi_app)
        except LifespanStartupError:
            log.exception("the gateway failed to start")
            return openai_error_response(
                503,
                "The gateway failed to start; it was logged and is retried on the next request.",
                request_id=req.headers.get("x-request-id"),
            )
        return await call_asgi(asgi_app, req)


def build_azure_runtime(settings: Settings) -> tuple[Runtime, PoolLoadSource | None]:
    """Cosmos-backed registry, journal, cache and shared pool load when configured (as
    deployed), else SQLite and this instance's own queue."""
    if settings.store_backend != "cosmos":
        return build_runtime(settings, SqliteWorkerStore(settings.database_path)), None
    stores = build_azure_stores(settings)
    runtime = build_runtime(settings, stores.worker_store, cache_store=stores.cache_store)
    runtime.journal = stores.journal
    runtime.lifecycles.append(RegistrySync(stores, runtime.registry, settings.pools))
    shared = SharedPoolLoad(
        stores.journal_container,
        AdmissionPoolLoad(runtime.router.admission),
        settings.pools,
        instance_id=stores.instance_id,
    )
    runtime.lifecycles.append(shared)
    return runtime, shared


def build_function_app(settings: Settings | None = None) -> func.FunctionApp:
    settings = settings or Settings(compute="azure")
    runtime, gateway_load = build_azure_runtime(settings)
    set_services_provider(azure_fleet_services(runtime, gateway_load))

    def adopt_client(client: df.DurableOrchestrationClient) -> None:
        runtime.orchestrations = DurableClientControl(client)

    on_durable_client(adopt_client)
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
    asgi_app = create_app(runtime, local=False)
    set_startup_hook(lambda: ensure_started(asgi_app))
    register_http_api(app, asgi_app)
    app.register_functions(bp)
    return app

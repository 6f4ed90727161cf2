"""The Azure host: the Functions app, with the ASGI API behind HTTP streams, plus Durable.

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

The runtime is built whole here, at import: the orchestration control is the
Durable client the watchdog hands over when it first runs (until then the
orchestration endpoints answer 404 and wakes are left to the next tick).

No `from __future__ import annotations` here: the worker reads the HTTP
function's annotations (`Request` in, a response type out) while indexing.
"""

import logging

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
from spotgate.adapters.azure.shared_demand import SharedDemand
from spotgate.adapters.azure.store_sync import RegistrySync
from spotgate.adapters.azure.stores import build_azure_stores
from spotgate.adapters.local.sqlite_worker_store import SqliteWorkerStore
from spotgate.api.app import create_app
from spotgate.fleet.observation import DemandSource
from spotgate.gateway.admission_demand import AdmissionDemand
from spotgate.hosts.azure_fleet import azure_fleet_services
from spotgate.hosts.gateway import assemble_runtime, build_gateway
from spotgate.orchestrations.blueprint import (
    bp,
    on_durable_client,
    set_monitor_plan,
    set_services_provider,
    set_startup_hook,
)
from spotgate.runtime import Lifecycle, Runtime
from spotgate.settings import FleetSettings, Settings

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


def build_azure_runtime(
    settings: Settings, control: DurableClientControl | None = None
) -> tuple[Runtime, DemandSource | None]:
    """Cosmos-backed registry, journal, cache and shared pool demand when configured (as
    deployed), else SQLite and this instance's own queue."""
    if settings.azure.store_backend != "cosmos":
        parts = build_gateway(settings, SqliteWorkerStore(settings.database_path))
        return assemble_runtime(parts, orchestrations=control), None
    stores = build_azure_stores(
        settings.azure.cosmos_endpoint,
        settings.azure.cosmos_database,
        cache=settings.cache.backend == "cosmos",
    )
    parts = build_gateway(settings, stores.worker_store, cache_store=stores.cache_store)
    shared = SharedDemand(
        stores.journal_container,
        AdmissionDemand(parts.router.admission),
        settings.pools,
        instance_id=stores.instance_id,
    )
    lifecycles: list[Lifecycle] = [stores, RegistrySync(stores, parts.registry, settings.pools)]
    runtime = assemble_runtime(
        parts,
        journal=stores.journal,
        orchestrations=control,
        lifecycles=[*lifecycles, shared],
    )
    return runtime, shared


def build_function_app(settings: Settings | None = None) -> func.FunctionApp:
    settings = settings or Settings(fleet=FleetSettings(compute="azure"))
    control = DurableClientControl()
    runtime, gateway_load = build_azure_runtime(settings, control)
    set_services_provider(azure_fleet_services(runtime, gateway_load))
    set_monitor_plan(runtime.monitors)
    on_durable_client(control.adopt)
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
    asgi_app = create_app(runtime, local=False)
    set_startup_hook(lambda: ensure_started(asgi_app))
    register_http_api(app, asgi_app)
    app.register_functions(bp)
    return app

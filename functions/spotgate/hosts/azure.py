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

The runtime is built whole here, at import. The HTTP function has its own
Durable client input binding and hands the client to the orchestration
control on every request: on Flex Consumption HTTP, Durable and timer
triggers scale in separate instance groups, so an HTTP instance may never run
the watchdog timer (which also hands its client over, for activities and
timers on the same instance).

No `from __future__ import annotations` here: the worker reads the HTTP
function's annotations (`Request` in, a response type out) while indexing.
"""

import logging

import azure.durable_functions as df
import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, StreamingResponse
from starlette.types import ASGIApp

from spotgate.adapters.azure.app_insights import export_to_app_insights
from spotgate.adapters.azure.asgi_stream_bridge import (
    LifespanStartupError,
    call_asgi,
    ensure_started,
    openai_error_response,
)
from spotgate.adapters.azure.durable_client_control import DurableClientControl
from spotgate.adapters.azure.shared_demand import SharedDemand
from spotgate.adapters.local.sqlite_worker_store import SqliteWorkerStore
from spotgate.api.app import create_app
from spotgate.fleet.observation import DemandSource, WithBatchBacklog
from spotgate.gateway.admission_demand import AdmissionDemand
from spotgate.hosts.azure_fleet import azure_fleet_services
from spotgate.hosts.azure_parts import (
    azure_batch_stores,
    batch_configured,
    cosmos_gateway,
    entra_admin_tokens,
    vault_secrets,
)
from spotgate.hosts.batch import BatchParts, build_batch, local_batch_stores
from spotgate.hosts.gateway import assemble_runtime, build_gateway
from spotgate.hosts.tenancy import settings_secrets
from spotgate.orchestrations.blueprint import (
    ClientListener,
    bp,
    on_durable_client,
    set_batch_services_provider,
    set_monitor_plan,
    set_services_provider,
    set_startup_hook,
)
from spotgate.runtime import Lifecycle, Runtime
from spotgate.secret_store import SecretStore
from spotgate.settings import FleetSettings, Settings

log = logging.getLogger("spotgate.azure")

HTTP_FUNCTION_NAME = "http_app_func"
HTTP_ROUTE = "{*path}"
HTTP_METHODS = tuple(func.HttpMethod)  # GET, POST, DELETE, HEAD, PATCH, PUT, OPTIONS


DURABLE_CLIENT_BINDING = "client"


def register_http_api(
    app: df.DFApp, asgi_app: ASGIApp, on_client: ClientListener | None = None
) -> None:
    """Adds the one HTTP function: every path and method, served by `asgi_app`.

    `on_client` gets the request's Durable client before the API sees the request, so
    `/orchestrations/*` and eviction wake-ups work on every instance that serves HTTP.
    """

    @app.function_name(HTTP_FUNCTION_NAME)
    @app.route(route=HTTP_ROUTE, methods=HTTP_METHODS, auth_level=func.AuthLevel.ANONYMOUS)
    @app.durable_client_input(client_name=DURABLE_CLIENT_BINDING)
    async def http_app_func(
        req: Request, client: df.DurableOrchestrationClient
    ) -> StreamingResponse:
        if on_client is not None:
            on_client(client)
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


def azure_secrets(settings: Settings) -> tuple[SecretStore, list[Lifecycle]]:
    """Key Vault when the deployment names one (read with the managed identity, renewed
    every few minutes), else the environment."""
    vault = vault_secrets(settings)
    if vault is None:
        return settings_secrets(settings), []
    store, lifecycle = vault
    return store, [lifecycle]


def build_azure_runtime(
    settings: Settings, control: DurableClientControl | None = None
) -> tuple[Runtime, DemandSource | None, BatchParts | None]:
    """Cosmos-backed registry, journal, cache, keys, usage, counters, shared pool demand and
    the Batch API when configured (as deployed), else SQLite and this instance's own queue."""
    secrets, secret_lifecycles = azure_secrets(settings)
    tokens = entra_admin_tokens(settings)
    if settings.azure.store_backend != "cosmos":
        parts = build_gateway(
            settings, SqliteWorkerStore(settings.database_path), secrets=secrets,
            admin_tokens=tokens,
        )  # fmt: skip
        on_disk = build_batch(parts, local_batch_stores(settings.data_dir))
        runtime = assemble_runtime(
            parts,
            orchestrations=control,
            lifecycles=[*secret_lifecycles, *on_disk.lifecycles],
            batches=on_disk.service(control) if control is not None else None,
        )
        local = WithBatchBacklog(AdmissionDemand(parts.router.admission), on_disk.backlog)
        return runtime, local, on_disk
    cosmos = cosmos_gateway(settings, secrets, tokens)
    shared = SharedDemand(
        cosmos.stores.journal_container,
        AdmissionDemand(cosmos.parts.router.admission),
        settings.pools,
        instance_id=cosmos.stores.instance_id,
    )
    batch = None
    demand: DemandSource = shared
    if batch_configured(settings):
        batch = build_batch(cosmos.parts, azure_batch_stores(settings, cosmos.stores))
        demand = WithBatchBacklog(shared, batch.backlog)
    runtime = assemble_runtime(
        cosmos.parts,
        journal=cosmos.journal,
        orchestrations=control,
        lifecycles=[
            *secret_lifecycles,
            *cosmos.lifecycles,
            shared,
            *(batch.lifecycles if batch else ()),
        ],
        batches=batch.service(control) if batch is not None and control is not None else None,
    )
    return runtime, demand, batch


def build_function_app(settings: Settings | None = None) -> df.DFApp:
    settings = settings or Settings(fleet=FleetSettings(compute="azure"))
    export_to_app_insights()  # first: the providers every instrument and span report to
    control = DurableClientControl()
    runtime, gateway_load, batch = build_azure_runtime(settings, control)
    set_services_provider(azure_fleet_services(runtime, gateway_load))
    set_batch_services_provider(lambda: batch.services if batch is not None else None)
    set_monitor_plan(runtime.monitors)
    on_durable_client(control.adopt)
    app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)
    asgi_app = create_app(runtime, local=False)
    set_startup_hook(lambda: ensure_started(asgi_app))
    register_http_api(app, asgi_app, on_client=control.adopt)
    app.register_functions(bp)
    return app

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
from spotgate.adapters.azure.cosmos_tenancy import cosmos_tenancy
from spotgate.adapters.azure.durable_client_control import DurableClientControl
from spotgate.adapters.azure.shared_demand import SharedDemand
from spotgate.adapters.azure.store_sync import RegistrySync
from spotgate.adapters.azure.stores import build_azure_stores
from spotgate.adapters.local.sqlite_worker_store import SqliteWorkerStore
from spotgate.api.app import create_app
from spotgate.fleet.observation import DemandSource
from spotgate.gateway.admission_demand import AdmissionDemand
from spotgate.gateway.model_catalogue import load_catalogue
from spotgate.gateway.tenancy.admins import AdminTokens
from spotgate.gateway.tenancy.tenancy import TenancyStores
from spotgate.hosts.azure_fleet import azure_fleet_services
from spotgate.hosts.gateway import assemble_runtime, build_gateway
from spotgate.hosts.tenancy import settings_secrets
from spotgate.orchestrations.blueprint import (
    bp,
    on_durable_client,
    set_monitor_plan,
    set_services_provider,
    set_startup_hook,
)
from spotgate.runtime import Lifecycle, Runtime
from spotgate.secret_store import ADMIN_KEY, FLEET_TOKEN, KEY_SALT, SecretStore
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


def azure_secrets(settings: Settings) -> tuple[SecretStore, list[Lifecycle]]:
    """Key Vault when the deployment names one (read with the managed identity, renewed
    every few minutes), else the environment."""
    if not settings.azure.key_vault_url:
        return settings_secrets(settings), []
    from azure.identity.aio import DefaultAzureCredential

    from spotgate.adapters.azure.key_vault_secrets import KeyVaultSecrets

    catalogue = load_catalogue(settings.gateway.model_catalogue, settings.gateway.catalogue_file)
    spillover_keys = [
        e.spillover.api_key_env for e in catalogue if e.spillover and e.spillover.api_key_env
    ]
    vault = KeyVaultSecrets(
        settings.azure.key_vault_url,
        DefaultAzureCredential(),
        [ADMIN_KEY, FLEET_TOKEN, KEY_SALT, *spillover_keys],
    )
    return vault, [vault]


def entra_admin_tokens(settings: Settings) -> AdminTokens | None:
    """Entra ID tokens with the admin app role, when a tenant and an audience are set."""
    tenant, audience = settings.azure.entra_tenant_id, settings.azure.entra_admin_audience
    if not tenant or not audience:
        return None
    from spotgate.adapters.azure.entra_tokens import (
        CachedJwks,
        EntraAdminTokens,
        entra_jwks_fetch,
    )

    jwks = CachedJwks(entra_jwks_fetch(tenant))
    return EntraAdminTokens(tenant, audience, settings.azure.entra_admin_role, jwks=jwks)


def build_azure_runtime(
    settings: Settings, control: DurableClientControl | None = None
) -> tuple[Runtime, DemandSource | None]:
    """Cosmos-backed registry, journal, cache, keys, usage, counters and shared pool demand
    when configured (as deployed), else SQLite and this instance's own queue."""
    secrets, secret_lifecycles = azure_secrets(settings)
    tokens = entra_admin_tokens(settings)
    if settings.azure.store_backend != "cosmos":
        parts = build_gateway(
            settings, SqliteWorkerStore(settings.database_path), secrets=secrets,
            admin_tokens=tokens,
        )  # fmt: skip
        runtime = assemble_runtime(parts, orchestrations=control, lifecycles=secret_lifecycles)
        return runtime, None
    stores = build_azure_stores(
        settings.azure.cosmos_endpoint,
        settings.azure.cosmos_database,
        cache=settings.cache.backend == "cosmos",
    )
    tenancy = cosmos_tenancy(stores.client.get_database_client(settings.azure.cosmos_database))
    parts = build_gateway(
        settings,
        stores.worker_store,
        cache_store=stores.cache_store,
        secrets=secrets,
        tenancy_stores=TenancyStores(tenancy.keys, tenancy.usage, tenancy.counters),
        admin_tokens=tokens,
    )
    shared = SharedDemand(
        stores.journal_container,
        AdmissionDemand(parts.router.admission),
        settings.pools,
        instance_id=stores.instance_id,
    )
    lifecycles: list[Lifecycle] = [
        *secret_lifecycles,
        stores,
        RegistrySync(stores, parts.registry, settings.pools),
    ]
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

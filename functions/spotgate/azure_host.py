"""Builds the Azure Functions app: the same ASGI API plus the Durable blueprint.

The HTTP API is mounted through `AsgiFunctionApp`. Two limits of that bridge
are known and tracked: it buffers responses (SSE arrives in one piece) and
its catch-all route shadows blueprint HTTP routes, which is why the
blueprint carries no HTTP triggers. Streaming on Azure moves to the HTTP
streams extension (azurefunctions-extensions-http-fastapi) with the Azure
deployment work.
"""

from __future__ import annotations

import azure.durable_functions as df
import azure.functions as func

from spotgate.adapters.azure.durable_client_control import DurableClientControl
from spotgate.adapters.azure.fleet_services import azure_fleet_services
from spotgate.adapters.local.sqlite_worker_store import SqliteWorkerStore
from spotgate.api.app import create_app
from spotgate.orchestrations.blueprint import bp, on_durable_client, set_services_provider
from spotgate.runtime import build_runtime
from spotgate.settings import Settings


def build_function_app(settings: Settings | None = None) -> func.AsgiFunctionApp:
    settings = settings or Settings(compute="azure")
    runtime = build_runtime(settings, SqliteWorkerStore(settings.database_path))
    set_services_provider(azure_fleet_services(runtime))

    def adopt_client(client: df.DurableOrchestrationClient) -> None:
        runtime.orchestrations = DurableClientControl(client)

    on_durable_client(adopt_client)
    app = func.AsgiFunctionApp(
        app=create_app(runtime, local=False), http_auth_level=func.AuthLevel.ANONYMOUS
    )
    app.register_functions(bp)
    return app

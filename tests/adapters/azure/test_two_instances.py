"""Two Function App instances over one Cosmos database, through the real API.

An agent's registration lands on one instance, its eviction report (with the
credential the first handed out) on the other; requests land on the other.
The other must route to the worker, then stop routing to it, without either
instance restarting.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
from azure.cosmos.aio import CosmosClient

from spotgate.adapters.azure.store_sync import RegistrySync
from spotgate.adapters.azure.stores import build_azure_stores, ensure_database
from spotgate.api.app import create_app
from spotgate.hosts.gateway import assemble_runtime, build_gateway
from spotgate.runtime import Runtime
from spotgate.settings import Settings
from tests.adapters.azure.test_cosmos_fleet_stores import FAST
from tests.adapters.conftest import CosmosServer

TOKEN = "fleet-token"
ADMIN = "sk-admin"


@contextlib.asynccontextmanager
async def instance(settings: Settings, server: CosmosServer) -> AsyncIterator[httpx.AsyncClient]:
    stores = build_azure_stores(
        settings.azure.cosmos_endpoint,
        settings.azure.cosmos_database,
        credential=server.key,
        connection_verify=False,
        options=FAST,
    )
    parts = build_gateway(settings, stores.worker_store)
    sync = RegistrySync(stores, parts.registry, settings.pools, interval_s=0.1)
    runtime = assemble_runtime(parts, journal=stores.journal, lifecycles=[sync])
    app = create_app(runtime, local=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            client.app_runtime = runtime  # type: ignore[attr-defined]
            yield client


async def eventually(check: Callable[[], Any], within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "the other instance never caught up"
        await asyncio.sleep(0.05)


async def test_an_agent_on_one_instance_is_seen_and_drained_on_the_other(
    cosmos_server: CosmosServer,
) -> None:
    database = f"two-{uuid.uuid4().hex[:10]}"
    admin = CosmosClient(cosmos_server.url, credential=cosmos_server.key, connection_verify=False)
    await ensure_database(admin, database)
    settings = Settings(
        store_backend="cosmos",
        cosmos_endpoint=cosmos_server.url,
        cosmos_database=database,
        cache_backend="off",
        fleet_token=TOKEN,
        admin_key=ADMIN,
        api_keys=[ADMIN],
        models=["m"],
    )
    agent = {"Authorization": f"Bearer {TOKEN}"}
    operator = {"Authorization": f"Bearer {ADMIN}"}
    try:
        async with instance(settings, cosmos_server) as a, instance(settings, cosmos_server) as b:
            a_runtime: Runtime = a.app_runtime  # type: ignore[attr-defined]
            b_runtime: Runtime = b.app_runtime  # type: ignore[attr-defined]
            # the fleet manager provisioned it (a loopback stand-in for the VM's private IP)
            a_runtime.registry.expect(
                "vm_1", pool="default", model="", engine="", address="127.0.0.1:9401"
            )
            registered = await a.post(
                "/fleet/workers",
                headers=agent,
                json={
                    "id": "vm_1",
                    "pool": "default",
                    "model": "m",
                    "engine": "vllm",
                    "url": "http://127.0.0.1:9401",
                    "zone": "2",
                },
            )
            assert registered.status_code == 201

            await eventually(lambda: b_runtime.registry.ready_for_model("m"))
            listed = (await b.get("/fleet", headers=operator)).json()["workers"]
            assert [(w["id"], w["state"], w["zone"]) for w in listed] == [("vm_1", "ready", "2")]

            # the report lands on the other instance, which knows the worker's credential
            own = {**agent, "X-Worker-Token": registered.json()["worker_token"]}
            forged = await b.post(
                "/fleet/workers/vm_1/evicting", headers=agent, json={"event_id": "E0"}
            )
            assert forged.status_code == 409
            evicting = await b.post(
                "/fleet/workers/vm_1/evicting", headers=own, json={"event_id": "E1"}
            )
            assert evicting.status_code == 200
            await eventually(lambda: not b_runtime.registry.ready_for_model("m"))
            worker = b_runtime.registry.get("vm_1")
            assert worker is not None and worker.state.value == "draining"
            await eventually(lambda: b_runtime.journal.evictions("default", 0))
    finally:
        await admin.delete_database(database)
        await admin.close()

"""Two gateway instances over one Cosmos database enforce one key's limits together.

Each instance has its own key directory, limiter and usage recorder, as two
Function App instances do; they share only the Cosmos-compatible server (keys,
counters, usage). A key made through one instance's admin API must work on
the other within the refresh interval, its RPM must hold over both, and its
revocation must reach the other without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
from azure.cosmos.aio import CosmosClient

from spotgate.adapters.azure.cosmos_tenancy import cosmos_tenancy
from spotgate.adapters.azure.stores import ensure_database
from spotgate.api.app import create_app
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.gateway.tenancy.tenancy import TenancyStores
from spotgate.hosts.gateway import assemble_runtime, build_gateway
from spotgate.runtime import Runtime
from spotgate.secret_store import StaticSecrets
from spotgate.settings import Settings
from tests.adapters.conftest import CosmosServer
from tests.gateway.test_stream_resume import SimWorkers

ADMIN = "sk-admin-two-instances"
MODEL = "sim-model"
REFRESH_S = 0.2


@contextlib.asynccontextmanager
async def instance(
    settings: Settings, client: CosmosClient, secrets: StaticSecrets
) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    cosmos = cosmos_tenancy(client.get_database_client(settings.azure.cosmos_database))
    parts = build_gateway(
        settings,
        InMemoryWorkerStore(),
        upstream=SimWorkers([None]),
        secrets=secrets,
        tenancy_stores=TenancyStores(cosmos.keys, cosmos.usage, cosmos.counters),
    )
    parts.registry.register("w1", pool="default", model=MODEL, engine="sim", url="http://w1")
    runtime = assemble_runtime(parts)
    app = create_app(runtime, local=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
            yield http, runtime


def chat(n: int) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": f"q{n}"}], "max_tokens": 4}


async def test_a_key_made_on_one_instance_is_limited_and_revoked_on_both(
    cosmos_server: CosmosServer,
) -> None:
    database = f"tenancy-{uuid.uuid4().hex[:10]}"
    client = CosmosClient(cosmos_server.url, credential=cosmos_server.key, connection_verify=False)
    await ensure_database(client, database)
    settings = Settings(
        cosmos_database=database,
        cache_backend="off",
        admin_key=ADMIN,
        key_refresh_s=REFRESH_S,
        usage_flush_s=0.2,
        models=[MODEL],
    )
    secrets = StaticSecrets({"admin-key": ADMIN, "key-salt": "one-salt-for-the-deployment"})
    operator = {"Authorization": f"Bearer {ADMIN}"}
    try:
        async with (
            instance(settings, client, secrets) as (a, a_runtime),
            instance(settings, client, secrets) as (b, b_runtime),
        ):
            made = await a.post("/admin/keys", json={"name": "shared", "rpm": 10}, headers=operator)
            assert made.status_code == 201, made.text
            key = made.json()["key"]
            caller = {"Authorization": f"Bearer {key}"}
            await asyncio.sleep(REFRESH_S * 3)  # b re-reads the key store

            def send(n: int) -> Any:
                gateway = a if n % 2 else b
                return gateway.post("/v1/chat/completions", json=chat(n), headers=caller)

            replies = await asyncio.gather(*(send(n) for n in range(30)))
            statuses = [r.status_code for r in replies]
            assert statuses.count(200) == 10, statuses
            refused = [r for r in replies if r.status_code == 429]
            assert len(refused) == 20
            assert {r.json()["error"]["code"] for r in refused} == {"rate_limit_exceeded"}
            assert all(int(r.headers["retry-after"]) >= 1 for r in refused)
            served_by = {r.headers["x-worker"] for r in replies if r.status_code == 200}
            assert served_by == {"w1"}
            ok_on = {gw for gw, r in zip("ba" * 15, replies, strict=True) if r.status_code == 200}
            assert ok_on == {"a", "b"}, "both instances served some of the 10"

            revoked = await b.delete("/admin/keys/shared", headers=operator)
            assert revoked.json()["revoked"] is True
            await asyncio.sleep(REFRESH_S * 3)
            after = await a.post("/v1/chat/completions", json=chat(99), headers=caller)
            assert after.status_code == 401
            assert after.json()["error"]["message"] == "This API key was revoked."

            await a_runtime.tenancy.recorder.flush()
            await b_runtime.tenancy.recorder.flush()
            records = await a_runtime.tenancy.usage.query(0)
            mine = [r for r in records if r.key_id == made.json()["id"]]
            assert len(mine) == 30, "every request is recorded once, over both instances"
            assert sorted(r.status for r in mine) == [200] * 10 + [429] * 20
    finally:
        await client.delete_database(database)
        await client.close()

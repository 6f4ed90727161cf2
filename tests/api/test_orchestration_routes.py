"""The orchestration endpoints' check-status payload: links a client can trust and follow."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from spotgate.api.app import create_app
from spotgate.fleet.journal import InMemoryFleetJournal
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.hosts.gateway import assemble_runtime, build_gateway
from spotgate.hosts.local import local_runner, start_monitors
from spotgate.settings import Settings

ADMIN = {"Authorization": "Bearer admin-key"}
PUBLIC = "https://gateway.example.test"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        api_keys=["api-key"],
        admin_key="admin-key",
        cache_backend="off",
        public_url=PUBLIC,
        monitor_tick_s=60,
    )
    parts = build_gateway(settings, InMemoryWorkerStore())
    journal = InMemoryFleetJournal()
    runner = local_runner(parts, journal)
    runtime = assemble_runtime(parts, journal=journal, orchestrations=runner)
    await start_monitors(runner, runtime.monitors)
    transport = httpx.ASGITransport(app=create_app(runtime))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield client
    finally:
        await runner.stop()


async def test_links_come_from_the_configured_url_not_the_host_header(
    client: httpx.AsyncClient,
) -> None:
    reply = await client.post(
        "/orchestrations/fleet_monitor",
        json={"pool": "default"},
        headers={**ADMIN, "Host": "attacker.example", "X-Forwarded-Host": "attacker.example"},
    )
    assert reply.status_code == 202
    links = reply.json()
    for name in ("statusQueryGetUri", "terminatePostUri", "sendEventPostUri"):
        assert links[name].startswith(f"{PUBLIC}/orchestrations/fleet-monitor-default"), name
    assert "attacker" not in reply.text


async def test_the_send_event_link_is_served_for_the_admin_only(
    client: httpx.AsyncClient,
) -> None:
    links = (
        await client.post("/orchestrations/fleet_monitor", json={"pool": "default"}, headers=ADMIN)
    ).json()
    path = links["sendEventPostUri"].removeprefix(PUBLIC).replace("{eventName}", "wake")
    assert (await client.post(path, headers=ADMIN)).status_code == 202
    as_client = {"Authorization": "Bearer api-key"}
    assert (await client.post(path, headers=as_client)).status_code == 401
    unknown = "/orchestrations/fleet-monitor-nopool/raiseEvent/wake"
    assert (await client.post(unknown, headers=ADMIN)).status_code == 404
    bad_name = path.replace("wake", "wake%20up")
    assert (await client.post(bad_name, headers=ADMIN)).status_code == 400
    bad_data = await client.post(path, headers=ADMIN, content=b"{not json")
    assert bad_data.status_code == 400

"""What a holder of the fleet token can no longer do: point prompts anywhere.

Every registration here goes through the real app in-process (no socket): the
addresses are refused before anything would connect to them, and the tests
never use a metadata, private-range or public address even to prove it. The
network refusal is shown by allowing only 127.0.0.2/32 and registering
127.0.0.1.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from spotgate.api.app import create_app
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.hosts.gateway import build_runtime
from spotgate.runtime import Runtime
from tests.adversarial.conftest import (
    ADMIN_KEY,
    API_KEY,
    FLEET_TOKEN,
    MODEL,
    gateway_settings,
)

pytestmark = pytest.mark.adversarial

FLEET = {"Authorization": f"Bearer {FLEET_TOKEN}"}


def registration(worker_id: str = "w1", url: str = "http://127.0.0.1:9101", **extra: Any) -> dict:
    body = {"id": worker_id, "pool": "default", "model": MODEL, "engine": "vllm", "url": url}
    return body | extra


def make_runtime(**settings: Any) -> Runtime:
    runtime = build_runtime(gateway_settings(**settings), InMemoryWorkerStore())
    runtime.registry.expect("w1", pool="default", model="", engine="", address="127.0.0.1:9101")
    return runtime


@pytest.fixture
def runtime() -> Runtime:
    return make_runtime()


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        yield client


def error_of(reply: httpx.Response, status: int) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return dict(error)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "gopher://127.0.0.1:9101/_stats",
        "ftp://127.0.0.1:9101/",
        "not a url at all",
        "http://localhost:9101",
        "http://worker.internal:9101",
        "http://user:secret@127.0.0.1:9101",
        "http://127.0.0.1:9101/v1?redirect=x",
        "http://127.0.0.1:99999",
        "http://127.0.0.1:9101\r\nX-Injected: 1",
    ],
)
async def test_worker_urls_must_be_an_ip_origin_over_http(
    client: httpx.AsyncClient, runtime: Runtime, url: str
) -> None:
    error = error_of(
        await client.post("/fleet/workers", json=registration(url=url), headers=FLEET), 400
    )
    assert error["param"] == "url" and error["code"] == "invalid_url"
    assert runtime.registry.ready_for_model(MODEL) == ()


async def test_an_address_outside_the_worker_networks_is_refused() -> None:
    runtime = make_runtime(worker_networks=["127.0.0.2/32"])
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        reply = await client.post("/fleet/workers", json=registration(), headers=FLEET)
    error = error_of(reply, 400)
    assert "outside the worker networks" in error["message"]
    assert runtime.registry.ready_for_model(MODEL) == ()


async def test_an_unknown_pool_is_refused(client: httpx.AsyncClient) -> None:
    reply = await client.post("/fleet/workers", json=registration(pool="nopool"), headers=FLEET)
    assert error_of(reply, 400)["code"] == "unknown_pool"


async def test_only_instances_the_fleet_manager_provisioned_may_register(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    reply = await client.post("/fleet/workers", json=registration("ghost"), headers=FLEET)
    assert error_of(reply, 403)["code"] == "worker_not_provisioned"
    wrong_port = registration(url="http://127.0.0.1:9102")
    reply = await client.post("/fleet/workers", json=wrong_port, headers=FLEET)
    assert error_of(reply, 403)["code"] == "worker_address_mismatch"
    assert runtime.registry.ready_for_model(MODEL) == ()


async def test_a_live_workers_url_cannot_be_taken_over(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    first = await client.post("/fleet/workers", json=registration(), headers=FLEET)
    assert first.status_code == 201
    credential = first.json()["worker_token"]
    moved = registration(url="http://127.0.0.1:9102")
    reply = await client.post("/fleet/workers", json=moved, headers=FLEET)
    assert error_of(reply, 403)["code"] == "worker_address_mismatch"
    again = await client.post("/fleet/workers", json=registration(), headers=FLEET)
    assert error_of(again, 409)["code"] == "worker_registered"
    (worker,) = runtime.registry.ready_for_model(MODEL)
    assert worker.url == "http://127.0.0.1:9101"
    own = {**FLEET, "X-Worker-Token": credential}
    rejoined = await client.post("/fleet/workers", json=registration(), headers=own)
    assert rejoined.status_code == 201, "its own agent may register again"
    assert rejoined.json()["worker_token"] != credential, "and gets a fresh credential"


async def test_heartbeats_and_eviction_reports_need_the_workers_own_credential(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    first = await client.post("/fleet/workers", json=registration(), headers=FLEET)
    own = {**FLEET, "X-Worker-Token": first.json()["worker_token"]}
    forged = {**FLEET, "X-Worker-Token": "guessed"}
    for headers in (FLEET, forged):
        beat = await client.post("/fleet/workers/w1/heartbeat", json={}, headers=headers)
        assert error_of(beat, 409)["code"] == "worker_credential_invalid"
        evict = await client.post("/fleet/workers/w1/evicting", json={}, headers=headers)
        assert error_of(evict, 409)["code"] == "worker_credential_invalid"
    assert runtime.registry.ready_for_model(MODEL), "nobody else could drain it"
    assert (await client.post("/fleet/workers/w1/heartbeat", json={}, headers=own)).is_success


async def test_the_fleet_token_opens_no_client_or_operator_route(
    client: httpx.AsyncClient,
) -> None:
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    error_of(await client.post("/v1/chat/completions", json=chat, headers=FLEET), 401)
    error_of(await client.get("/fleet", headers=FLEET), 401)
    error_of(await client.get("/orchestrations/fleet-monitor-default", headers=FLEET), 401)
    for key in (API_KEY, ADMIN_KEY):
        reply = await client.post(
            "/fleet/workers", json=registration(), headers={"Authorization": f"Bearer {key}"}
        )
        error_of(reply, 401)


async def test_a_registered_worker_never_exposes_its_credential_digest(
    client: httpx.AsyncClient,
) -> None:
    await client.post("/fleet/workers", json=registration(), headers=FLEET)
    fleet = (await client.get("/fleet", headers={"Authorization": f"Bearer {ADMIN_KEY}"})).json()
    assert all("credential" not in w for w in fleet["workers"])


async def test_a_heartbeat_before_the_registration_reached_this_instance_is_told_to_wait(
    client: httpx.AsyncClient,
) -> None:
    """On Azure the agent's registration may land on one instance and its first heartbeat
    on another that still has the worker provisioning: wait, do not register again."""
    headers = {**FLEET, "X-Worker-Token": "issued-by-the-other-instance"}
    reply = await client.post("/fleet/workers/w1/heartbeat", json={}, headers=headers)
    assert error_of(reply, 409)["code"] == "worker_registration_pending"
    assert reply.headers["retry-after"]
    bare = await client.post("/fleet/workers/w1/heartbeat", json={}, headers=FLEET)
    assert error_of(bare, 409)["code"] == "worker_credential_invalid"

"""The orchestration endpoints on Azure: the same API, answered by the Durable client.

The Functions host cannot run here, so the client is a mock with the SDK's
own spec, returning the SDK's own status objects built from the JSON the
host's webhook API sends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from unittest.mock import AsyncMock, MagicMock

import azure.durable_functions as df
import httpx
import pytest
from azure.durable_functions.models.DurableOrchestrationStatus import DurableOrchestrationStatus
from azure.functions.timer import TimerRequest

from spotgate.adapters.azure.durable_client_control import DurableClientControl
from spotgate.api.app import create_app
from spotgate.fleet.registration import LOOPBACK_NETWORKS, check_worker_url, parse_networks
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.hosts.gateway import build_runtime
from spotgate.orchestrations import blueprint
from spotgate.orchestrations.monitor_contract import MonitorPlan
from spotgate.settings import Settings

ADMIN = "sk-admin"
HOST = "https://spotgate-func.azurewebsites.net"
LINKS = {
    "id": "fleet-monitor-default",
    "statusQueryGetUri": f"{HOST}/runtime/webhooks/durabletask/instances/fleet-monitor-default"
    "?taskHub=spotgate&connection=Storage&code=abc",
    "sendEventPostUri": f"{HOST}/runtime/webhooks/durabletask/instances/fleet-monitor-default"
    "/raiseEvent/{eventName}?taskHub=spotgate&connection=Storage&code=abc",
    "terminatePostUri": f"{HOST}/runtime/webhooks/durabletask/instances/fleet-monitor-default"
    "/terminate?reason={text}&taskHub=spotgate&connection=Storage&code=abc",
}
RUNNING = {
    "name": "fleet_monitor",
    "instanceId": "fleet-monitor-default",
    "runtimeStatus": "Running",
    "input": {"pool": "default", "tick": 12},
    "customStatus": {"pool": "default", "desired": 2, "actual": 2, "why": "steady"},
    "output": None,
    "createdTime": "2026-11-23T10:00:00Z",
    "lastUpdatedTime": "2026-11-23T10:05:00Z",
}


def durable_client(found: dict[str, Any] | None) -> MagicMock:
    client = MagicMock(spec=df.DurableOrchestrationClient)
    status = DurableOrchestrationStatus.from_json(found) if found else DurableOrchestrationStatus()
    client.get_status = AsyncMock(return_value=status)
    client.start_new = AsyncMock(side_effect=lambda name, instance_id, input_: instance_id)
    client.raise_event = AsyncMock()
    client.terminate = AsyncMock()
    client.get_client_response_links = MagicMock(return_value=LINKS)
    return client


@pytest.fixture
async def api() -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    settings = Settings(admin_key=ADMIN, fleet_token="ft")
    # as the Azure host: the control exists from the start, the client arrives later
    runtime = build_runtime(settings, InMemoryWorkerStore(), orchestrations=DurableClientControl())
    transport = httpx.ASGITransport(app=create_app(runtime, local=False))
    async with httpx.AsyncClient(transport=transport, base_url=HOST) as http:
        http.headers["Authorization"] = f"Bearer {ADMIN}"
        yield http, runtime
    await runtime.close()


async def test_status_comes_from_the_durable_client_in_durables_shape(api: Any) -> None:
    http, runtime = api
    runtime.orchestrations.adopt(durable_client(RUNNING))

    reply = await http.get("/orchestrations/fleet-monitor-default")

    assert reply.status_code == 200
    body = reply.json()
    assert body["runtimeStatus"] == "Running" and body["customStatus"]["why"] == "steady"
    assert {"name", "instanceId", "input", "output", "createdTime", "lastUpdatedTime"} <= set(body)


async def test_an_unknown_instance_is_404_in_openais_error_shape(api: Any) -> None:
    http, runtime = api
    runtime.orchestrations.adopt(durable_client(None))
    reply = await http.get("/orchestrations/fleet-monitor-nope")
    assert reply.status_code == 404 and reply.json()["error"]["code"] == "not_found"


async def test_start_answers_with_the_hosts_check_status_payload(api: Any) -> None:
    http, runtime = api
    client = durable_client(None)
    runtime.orchestrations.adopt(client)

    reply = await http.post("/orchestrations/fleet_monitor", json={"pool": "default"})

    assert reply.status_code == 202 and reply.json() == LINKS
    name, instance_id, start_input = client.start_new.await_args.args
    assert (name, instance_id) == ("fleet_monitor", "fleet-monitor-default")
    assert start_input["policy"]["autoscaler"] == "queue-depth"


async def test_an_eviction_report_wakes_the_monitor_through_the_client(api: Any) -> None:
    http, runtime = api
    client = durable_client(RUNNING)
    runtime.orchestrations.adopt(client)
    runtime.registry.expect("vm_1", pool="default", model="", engine="", address="127.0.0.1:9")
    address = check_worker_url("http://127.0.0.1:9", parse_networks(LOOPBACK_NETWORKS))
    _, credential = runtime.registry.enroll(
        "vm_1", address, None, pool="default", model="m", engine="vllm"
    )

    reply = await http.post(
        "/fleet/workers/vm_1/evicting",
        json={"event_id": "E1", "not_before": 1_800_000_000},
        headers={"Authorization": "Bearer ft", "X-Worker-Token": credential},
    )

    assert reply.status_code == 200 and reply.json()["state"] == "draining"
    client.raise_event.assert_awaited_once_with("fleet-monitor-default", "wake", None)
    assert runtime.journal.evictions("default", 0)[0].at > 0


async def test_the_watchdog_hands_its_client_to_whoever_listens() -> None:
    seen: list[Any] = []
    blueprint.on_durable_client(seen.append)
    blueprint.set_monitor_plan(MonitorPlan(("default",), {}))
    try:
        client = durable_client(RUNNING)
        watchdog = blueprint.fleet_watchdog.build().get_user_function().client_function
        await watchdog(TimerRequest(past_due=False), client)
        assert seen == [client]
    finally:
        blueprint._client_listeners.remove(seen.append)
        blueprint.set_monitor_plan(None)


async def test_before_a_client_arrives_orchestrations_are_404_and_evictions_still_drain(
    api: Any,
) -> None:
    http, runtime = api
    reply = await http.get("/orchestrations/fleet-monitor-default")
    assert reply.status_code == 404 and reply.json()["error"]["code"] == "not_found"
    runtime.registry.expect("vm_1", pool="default", model="", engine="", address="127.0.0.1:9")
    address = check_worker_url("http://127.0.0.1:9", parse_networks(LOOPBACK_NETWORKS))
    _, credential = runtime.registry.enroll(
        "vm_1", address, None, pool="default", model="m", engine="vllm"
    )
    reply = await http.post(
        "/fleet/workers/vm_1/evicting",
        json={"event_id": "E1"},
        headers={"Authorization": "Bearer ft", "X-Worker-Token": credential},
    )
    assert reply.status_code == 200 and reply.json()["state"] == "draining"

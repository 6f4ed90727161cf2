"""The HTTP contract of the gateway and control plane, in-process with a fake upstream."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from spotgate.api.app import create_app
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.gateway.upstream import UpstreamReply
from spotgate.hosts.gateway import build_runtime
from spotgate.runtime import Runtime
from spotgate.settings import Settings

API_KEY = "sk-test"
FLEET_TOKEN = "fleet-test"
ADMIN_KEY = "admin-test"
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


class EchoUpstream:
    """Answers like vLLM, including the null fields the gateway must normalise away."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, bytes, dict[str, str]]] = []

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> UpstreamReply:
        self.requests.append((url, body, headers))
        payload = (
            b'{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m",'
            b'"choices":[{"index":0,"message":{"role":"assistant","content":"hello",'
            b'"refusal":null,"annotations":null,"audio":null,"function_call":null,'
            b'"tool_calls":[],"reasoning_content":null},"logprobs":null,'
            b'"finish_reason":"stop","stop_reason":null}],'
            b'"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4,'
            b'"prompt_tokens_details":null},"prompt_logprobs":null,"kv_transfer_params":null}'
        )
        return UpstreamReply(200, payload, "application/json")

    async def open_stream(self, url: str, body: bytes, headers: dict[str, str]):
        raise NotImplementedError

    async def close(self) -> None:
        pass


@pytest.fixture
def runtime() -> Runtime:
    settings = Settings(
        api_keys=[API_KEY],
        admin_key=ADMIN_KEY,
        fleet_token=FLEET_TOKEN,
        capacity_wait_s=0,
        cache_backend="memory",
    )
    return build_runtime(settings, InMemoryWorkerStore(), upstream=EchoUpstream())


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        yield client


def auth(key: str = API_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def register(
    client: httpx.AsyncClient, runtime: Runtime, worker_id: str = "w1"
) -> httpx.Response:
    """What the fleet manager then an agent do: provision the instance, then register at
    the address the compute provider gave it (a loopback port nothing listens on)."""
    port = 9000 + len(runtime.registry.all())
    runtime.registry.expect(
        worker_id, pool="default", model="", engine="", address=f"127.0.0.1:{port}"
    )
    url = f"http://127.0.0.1:{port}"
    body = {"id": worker_id, "pool": "default", "model": "m", "engine": "sim", "url": url}
    return await client.post("/fleet/workers", json=body, headers=auth(FLEET_TOKEN))


def agent_auth(registration: httpx.Response) -> dict[str, str]:
    """The fleet token plus the worker's own credential from its registration."""
    return {**auth(FLEET_TOKEN), "X-Worker-Token": registration.json()["worker_token"]}


def assert_openai_error(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code


async def test_chat_is_served_with_every_contract_header(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    assert (await register(client, runtime)).status_code == 201
    response = await client.post(
        "/v1/chat/completions", json=CHAT, headers={**auth(), "X-Request-ID": "req-42"}
    )
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "hello"
    assert response.headers["x-request-id"] == "req-42"
    assert response.headers["x-model"] == "m"
    assert response.headers["x-worker"] == "w1"
    assert response.headers["x-cache"] in {"MISS", "BYPASS"}
    assert float(response.headers["x-duration-ms"]) >= 0


async def test_vllm_null_fields_are_normalised_away(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await register(client, runtime)
    body = (await client.post("/v1/chat/completions", json=CHAT, headers=auth())).json()
    message = body["choices"][0]["message"]
    assert "annotations" not in message and "function_call" not in message
    assert "prompt_tokens_details" not in body["usage"]


async def test_request_id_is_generated_when_absent(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/live")
    assert len(response.headers["x-request-id"]) >= 16


async def test_missing_or_wrong_key_is_401(client: httpx.AsyncClient) -> None:
    assert_openai_error(await client.post("/v1/chat/completions", json=CHAT), 401)
    response = await client.post("/v1/chat/completions", json=CHAT, headers=auth("nope"))
    assert_openai_error(response, 401, "invalid_api_key")
    assert_openai_error(await client.get("/v1/models"), 401)


async def test_unknown_model_is_404_model_not_found(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/chat/completions", json={**CHAT, "model": "gpt-9"}, headers=auth()
    )
    assert_openai_error(response, 404, "model_not_found")
    assert response.json()["error"]["param"] == "model"


async def test_malformed_body_is_400_naming_the_field(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/chat/completions", content=b"{oops", headers={**auth(), "Content-Type": "a/json"}
    )
    assert_openai_error(response, 400)
    response = await client.post("/v1/chat/completions", json={"model": "m"}, headers=auth())
    assert_openai_error(response, 400)
    assert response.json()["error"]["param"] == "messages"


async def test_oversized_body_is_413(client: httpx.AsyncClient, runtime: Runtime) -> None:
    runtime.settings.server.max_body_bytes = 100
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 500}]}
    assert_openai_error(await client.post("/v1/chat/completions", json=big, headers=auth()), 413)


async def test_known_model_without_workers_is_503_with_retry_after(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await register(client, runtime)
    runtime.registry.mark_gone("w1", "killed")
    response = await client.post("/v1/chat/completions", json=CHAT, headers=auth())
    assert_openai_error(response, 503, "no_capacity")
    assert response.headers["retry-after"]


async def test_unknown_path_and_method_are_openai_errors(client: httpx.AsyncClient) -> None:
    assert_openai_error(await client.get("/v2/nothing"), 404)
    assert_openai_error(await client.get("/v1/chat/completions", headers=auth()), 405)


async def test_models_lists_what_workers_serve(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await register(client, runtime)
    body = (await client.get("/v1/models", headers=auth())).json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["m"]


async def test_agent_endpoints_need_the_fleet_token(client: httpx.AsyncClient) -> None:
    body = {"id": "w1", "pool": "default", "model": "m", "engine": "sim", "url": "http://w"}
    assert_openai_error(await client.post("/fleet/workers", json=body, headers=auth()), 401)
    bad = {**body, "url": 7}
    response = await client.post("/fleet/workers", json=bad, headers=auth(FLEET_TOKEN))
    assert_openai_error(response, 400)


async def test_heartbeat_reports_state_and_unknown_worker_is_404(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    registration = await register(client, runtime)
    metrics = {"metrics": {"num_requests_running": 2, "num_requests_waiting": 1}}
    response = await client.post(
        "/fleet/workers/w1/heartbeat", json=metrics, headers=agent_auth(registration)
    )
    assert response.json() == {"state": "ready", "in_flight": 0}
    response = await client.post(
        "/fleet/workers/ghost/heartbeat", json=metrics, headers=agent_auth(registration)
    )
    assert_openai_error(response, 404, "worker_not_found")


async def test_eviction_report_drains_the_worker_and_fleet_shows_it(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    registration = await register(client, runtime, "w1")
    await register(client, runtime, "w2")
    response = await client.post(
        "/fleet/workers/w1/evicting",
        json={"event_id": "E1", "event_type": "Preempt", "not_before": 1.7e9},
        headers=agent_auth(registration),
    )
    assert response.json()["state"] == "draining"
    fleet = (await client.get("/fleet", headers=auth(ADMIN_KEY))).json()
    states = {w["id"]: w["state"] for w in fleet["workers"]}
    assert states == {"w1": "draining", "w2": "ready"}
    for worker in fleet["workers"]:
        assert {"id", "pool", "model", "state", "engine", "in_flight", "last_heartbeat"} <= set(
            worker
        )
    assert fleet["evictions"][0]["worker"] == "w1"
    for _ in range(3):
        response = await client.post("/v1/chat/completions", json=CHAT, headers=auth())
        assert response.headers["x-worker"] == "w2"


async def test_fleet_status_needs_the_admin_key(client: httpx.AsyncClient) -> None:
    assert_openai_error(await client.get("/fleet", headers=auth()), 401)


async def test_ready_probe_needs_a_deciding_monitor_not_a_worker(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """A pool at zero workers by policy is ready: requests wait and wake the monitor."""
    booting = await client.get("/health/ready")
    assert booting.status_code == 503
    assert "startup has not finished" in booting.json()["problems"]
    await runtime.start()
    first = await client.get("/health/ready")
    assert first.status_code == 503
    assert first.json()["problems"] == ["pool default: no fleet monitor decision yet"]
    runtime.journal.append({"pool": "default", "observed_at": runtime.clock.now(), "desired": 0})
    scaled_to_zero = await client.get("/health/ready")
    assert scaled_to_zero.status_code == 200
    assert scaled_to_zero.json()["pools"]["default"]["ready_workers"] == 0
    await register(client, runtime)
    ready = (await client.get("/health/ready")).json()
    assert ready["pools"]["default"]["ready_workers"] == 1
    await runtime.close()

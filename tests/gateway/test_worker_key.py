"""The gateway sends vLLM's API key to workers that require it, and to nobody else.

The worker is the sim engine behind a guard that does what `vllm serve
--api-key` does: `/v1/*` without `Authorization: Bearer <key>` is 401.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import httpx
import orjson
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from spotgate.api.app import create_app
from spotgate.engines.sim import SimConfig, create_sim_app
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.hosts.gateway import assemble_runtime, build_gateway
from spotgate.runtime import Runtime
from spotgate.secret_store import StaticSecrets
from spotgate.settings import Settings
from tests.conftest import serve_asgi

CLIENT_KEY = "sk-client-key"
WORKER_KEY = "sg-vllm-first"


@dataclass
class VllmKeyGuard:
    """vLLM's `--api-key` check in front of a worker; keeps every request's Authorization."""

    app: ASGIApp
    key: str
    seen: list[str | None] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
            sent = headers.get("authorization")
            self.seen.append(sent)
            if scope["path"].startswith("/v1") and sent != f"Bearer {self.key}":
                body = orjson.dumps({"error": "Unauthorized"})
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json")]})  # fmt: skip
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


@pytest.fixture(scope="module")
def worker() -> Iterator[tuple[str, VllmKeyGuard]]:
    guard = VllmKeyGuard(
        create_sim_app(SimConfig(model="m", ttft_ms=0, tokens_per_s=0)), WORKER_KEY
    )
    with serve_asgi(guard) as url:
        yield url, guard


@pytest.fixture
async def gateway(
    worker: tuple[str, VllmKeyGuard],
) -> AsyncIterator[tuple[httpx.AsyncClient, StaticSecrets, VllmKeyGuard]]:
    url, guard = worker
    guard.seen.clear()
    secrets = StaticSecrets({"vllm-api-key": WORKER_KEY})
    settings = Settings(api_keys=[CLIENT_KEY], cache_backend="off", upstream_max_attempts=1)
    runtime: Runtime = assemble_runtime(
        build_gateway(settings, InMemoryWorkerStore(), secrets=secrets)
    )
    runtime.registry.register("w1", pool="default", model="m", engine="vllm", url=url)
    transport = httpx.ASGITransport(app=create_app(runtime, local=False))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        client.headers["Authorization"] = f"Bearer {CLIENT_KEY}"
        yield client, secrets, guard
    await runtime.close()


def chat(stream: bool = False) -> dict[str, object]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
            "stream": stream}  # fmt: skip


async def test_the_worker_gets_its_key_and_never_the_clients(
    gateway: tuple[httpx.AsyncClient, StaticSecrets, VllmKeyGuard],
) -> None:
    client, _, guard = gateway
    plain = await client.post("/v1/chat/completions", json=chat())
    assert plain.status_code == 200, plain.text
    streamed = await client.post("/v1/chat/completions", json=chat(stream=True))
    assert streamed.status_code == 200 and "data: [DONE]" in streamed.text
    assert guard.seen and set(guard.seen) == {f"Bearer {WORKER_KEY}"}
    assert not any(CLIENT_KEY in (sent or "") for sent in guard.seen)


async def test_a_rotated_key_is_sent_from_the_next_request(
    gateway: tuple[httpx.AsyncClient, StaticSecrets, VllmKeyGuard],
) -> None:
    client, secrets, guard = gateway
    assert (await client.post("/v1/chat/completions", json=chat())).status_code == 200
    guard.key = secrets["vllm-api-key"] = "sg-vllm-rotated"
    try:
        assert (await client.post("/v1/chat/completions", json=chat())).status_code == 200
        assert guard.seen[-1] == "Bearer sg-vllm-rotated"
    finally:
        guard.key = WORKER_KEY


async def test_without_the_secret_a_guarded_worker_refuses_and_the_client_hears_why(
    gateway: tuple[httpx.AsyncClient, StaticSecrets, VllmKeyGuard],
) -> None:
    client, secrets, guard = gateway
    del secrets["vllm-api-key"]
    reply = await client.post("/v1/chat/completions", json=chat())
    assert reply.status_code >= 400
    assert set(reply.json()["error"]) == {"message", "type", "param", "code"}
    # nothing was sent in the key's place, least of all the client's own key
    assert guard.seen[-1] is None

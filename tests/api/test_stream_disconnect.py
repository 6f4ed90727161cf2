"""A client that leaves before a stream's first byte must not leak load or admission slots."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import orjson
import pytest

from spotgate.api.app import create_app
from spotgate.engines.sim import SimConfig, create_sim_app
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.hosts.gateway import build_runtime
from spotgate.settings import Settings
from tests.api.test_gateway_api import API_KEY
from tests.conftest import serve_asgi


@pytest.fixture(scope="module")
def slow_worker() -> Iterator[str]:
    with serve_asgi(create_sim_app(SimConfig(model="m", ttft_ms=300, tokens_per_s=20))) as url:
        yield url


async def test_disconnect_before_the_first_byte_releases_everything(slow_worker: str) -> None:
    runtime = build_runtime(
        Settings(api_keys=[API_KEY], cache_backend="off"), InMemoryWorkerStore()
    )
    runtime.registry.register("w1", pool="default", model="m", engine="sim", url=slow_worker)
    app = create_app(runtime)
    body = orjson.dumps(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    )
    messages = [
        {"type": "http.request", "body": body, "more_body": False},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, object]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.start":
            raise OSError("client disconnected")  # what uvicorn does once the peer is gone

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "headers": [(b"authorization", f"Bearer {API_KEY}".encode())],
        "client": ("127.0.0.1", 5555),
        "server": ("127.0.0.1", 80),
        "scheme": "http",
    }
    with contextlib.suppress(OSError):
        await asyncio.wait_for(app(scope, receive, send), 10)
    assert runtime.router is not None
    for _ in range(100):
        if runtime.in_flight.total() == 0 and runtime.router.admission.in_use("default") == 0:
            break
        await asyncio.sleep(0.02)
    assert runtime.in_flight.total() == 0
    assert runtime.router.admission.in_use("default") == 0
    await runtime.close()

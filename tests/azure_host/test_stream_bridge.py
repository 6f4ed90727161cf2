"""The HTTP-streams bridge, served the way the Functions worker serves it.

A uvicorn server in the test's loop plays the worker's HTTP server (the
extension's own FastAPI `WebApp`); its catch-all calls the indexed HTTP
function, which runs the real gateway app through `call_asgi` in front of a
sim engine on loopback. Raw ASGI apps pin the bridge's edge cases.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import azure.durable_functions as df
import azure.functions as func
import httpx
import orjson
import pytest
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from spotgate.adapters.azure.asgi_stream_bridge import call_asgi, shutdown
from spotgate.api.app import create_app
from spotgate.engines.sim import SimConfig, create_sim_app
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.hosts.azure import register_http_api
from spotgate.hosts.gateway import build_runtime
from spotgate.runtime import Runtime
from spotgate.settings import Settings
from tests.api.test_gateway_api import API_KEY, auth
from tests.azure_host.functions_worker import durable_binding, functions_worker
from tests.conftest import serve_asgi

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
ERROR_KEYS = {"message", "type", "param", "code"}


@pytest.fixture(scope="module")
def sim_worker() -> Iterator[str]:
    """20 ms to the first token, then 20 tokens/s: a 40-token answer takes about 2 s."""
    with serve_asgi(create_sim_app(SimConfig(model="m", ttft_ms=20, tokens_per_s=20))) as url:
        yield url


@dataclass
class Gateway:
    client: httpx.AsyncClient
    runtime: Runtime
    app: Any


def http_function(asgi_app: Any) -> Any:
    """The user function of the one HTTP function `register_http_api` indexes."""
    function_app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)
    register_http_api(function_app, asgi_app)
    [function] = function_app.get_functions()
    return function.get_user_function()


@pytest.fixture
async def gateway(sim_worker: str) -> AsyncIterator[Gateway]:
    settings = Settings(api_keys=[API_KEY], cache_backend="memory", capacity_wait_s=2)
    runtime = build_runtime(settings, InMemoryWorkerStore())
    runtime.registry.register("w1", pool="default", model="m", engine="sim", url=sim_worker)
    app = create_app(runtime, local=False)
    user_function = http_function(app)
    try:
        async with (
            functions_worker(
                lambda request: user_function(req=request, client=durable_binding(9))
            ) as url,
            httpx.AsyncClient(base_url=url, timeout=30) as client,
        ):
            yield Gateway(client, runtime, app)
    finally:
        await shutdown(app)


async def wait_until(condition: Any, timeout_s: float = 5.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


# -- the real gateway ----------------------------------------------------------------


async def test_a_streamed_completion_arrives_chunk_by_chunk(gateway: Gateway) -> None:
    body = {
        "model": "m",
        "messages": QUESTION,
        "stream": True,
        "max_tokens": 40,
        "ignore_eos": True,
    }
    reads: list[bytes] = []
    async with gateway.client.stream(
        "POST", "/v1/chat/completions", json=body, headers=auth()
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-worker"] == "w1"
        chunks = response.aiter_raw()
        reads.append(await anext(chunks))
        # The first chunk is here while the generation is still running upstream.
        assert b"[DONE]" not in reads[0]
        assert gateway.runtime.in_flight.total() == 1
        async for chunk in chunks:
            reads.append(chunk)
    text = b"".join(reads).decode()
    events = [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    deltas = [orjson.loads(event) for event in events[:-1]]
    assert all(delta["object"] == "chat.completion.chunk" for delta in deltas)
    content = [d["choices"][0]["delta"].get("content") for d in deltas if d["choices"]]
    assert sum(1 for piece in content if piece) == 40
    # A buffered bridge hands the whole stream over in one or two reads.
    assert len(reads) >= 10, f"only {len(reads)} reads: the stream was buffered"
    assert await wait_until(lambda: gateway.runtime.in_flight.total() == 0)


async def test_a_plain_request_round_trips_status_body_and_headers(gateway: Gateway) -> None:
    body = {"model": "m", "messages": QUESTION, "max_tokens": 5, "temperature": 0}
    first = await gateway.client.post(
        "/v1/chat/completions", json=body, headers={**auth(), "X-Request-ID": "req-bridge-1"}
    )
    assert first.status_code == 200
    assert first.headers["x-request-id"] == "req-bridge-1"
    assert first.headers["x-cache"] == "MISS"
    assert first.headers["x-worker"] == "w1"
    assert first.json()["object"] == "chat.completion"
    cache = gateway.runtime.response_cache
    assert cache is not None
    assert await wait_until(lambda: cache.stats.stored >= 1)
    second = await gateway.client.post("/v1/chat/completions", json=body, headers=auth())
    assert second.headers["x-cache"] == "HIT"
    assert second.headers["x-worker"] == "cache"
    assert second.json()["choices"] == first.json()["choices"]

    # Byte for byte what the app answers in-process, headers included.
    in_process = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=gateway.app), base_url="http://gw"
    )
    async with in_process:
        direct = await in_process.get("/v1/models", headers={**auth(), "X-Request-ID": "r2"})
    bridged = await gateway.client.get("/v1/models", headers={**auth(), "X-Request-ID": "r2"})
    assert bridged.status_code == direct.status_code == 200
    assert bridged.content == direct.content
    for name, value in direct.headers.multi_items():
        if name != "x-duration-ms":
            assert (name, value) in bridged.headers.multi_items()


async def test_errors_come_through_in_openai_shape(gateway: Gateway) -> None:
    body = {"model": "m", "messages": QUESTION}
    unauthorised = await gateway.client.post("/v1/chat/completions", json=body)
    assert unauthorised.status_code == 401
    assert set(unauthorised.json()["error"]) == ERROR_KEYS
    missing = await gateway.client.get("/v1/no-such-thing", headers=auth())
    assert missing.status_code == 404
    assert set(missing.json()["error"]) == ERROR_KEYS
    assert "/v1/no-such-thing" in missing.json()["error"]["message"]


async def test_a_client_leaving_mid_stream_releases_the_worker(gateway: Gateway) -> None:
    # 400 tokens at 20/s would stream for 20 s: only the disconnect can end it early.
    body = {
        "model": "m",
        "messages": QUESTION,
        "stream": True,
        "max_tokens": 400,
        "ignore_eos": True,
    }
    async with gateway.client.stream(
        "POST", "/v1/chat/completions", json=body, headers=auth()
    ) as response:
        assert response.status_code == 200
        await anext(response.aiter_raw())
        assert gateway.runtime.in_flight.total() == 1
    router = gateway.runtime.router
    assert router is not None
    released = await wait_until(
        lambda: gateway.runtime.in_flight.total() == 0 and router.admission.in_use("default") == 0
    )
    assert released, "the app never saw http.disconnect: the worker is still counted busy"


# -- raw ASGI apps ---------------------------------------------------------------


@pytest.fixture
async def raw() -> AsyncIterator[Any]:
    """A worker server whose function runs `call_asgi(app, request)` for the app under test."""

    def serve(app: Any) -> Any:
        return functions_worker(lambda request: call_asgi(app, request))

    yield serve


def chunks_of(data: bytes, size: int) -> Any:
    async def generate() -> AsyncIterator[bytes]:
        for start in range(0, len(data), size):
            yield data[start : start + size]

    return generate()


async def test_the_request_reaches_the_app_intact(raw: Any) -> None:
    seen: dict[str, Any] = {}

    async def echo(scope: Scope, receive: Receive, send: Send) -> None:
        digest = hashlib.sha256()
        flags = []
        size = 0
        while True:
            message = await receive()
            assert message["type"] == "http.request"
            digest.update(message["body"])
            size += len(message["body"])
            flags.append(message.get("more_body", False))
            if not message.get("more_body", False):
                break
        seen.update(scope=scope, flags=flags)
        body = orjson.dumps({"sha256": digest.hexdigest(), "size": size})
        headers = [
            (b"content-type", b"application/json"),
            (b"set-cookie", b"a=1"),
            (b"set-cookie", b"b=2"),
        ]
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": body[:10], "more_body": True})
        await send({"type": "http.response.body", "body": body[10:]})

    payload = os.urandom(1024 * 1024)
    async with raw(echo) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        response = await client.post(
            "/v1/echo/%C3%A9t%C3%A9?a=1&b=%2F",
            content=chunks_of(payload, 64 * 1024),
            headers=[("x-repeat", "1"), ("x-repeat", "2"), ("x-forwarded-proto", "https")],
        )
    assert response.status_code == 201
    assert response.json() == {"sha256": hashlib.sha256(payload).hexdigest(), "size": len(payload)}
    assert response.headers.get_list("set-cookie") == ["a=1", "b=2"]
    flags = seen["flags"]
    assert len(flags) > 1 and flags[-1] is False and all(flags[:-1])
    scope = seen["scope"]
    assert scope["type"] == "http" and scope["method"] == "POST"
    assert scope["path"] == "/v1/echo/été"
    assert scope["raw_path"] == b"/v1/echo/%C3%A9t%C3%A9"
    assert scope["query_string"] == b"a=1&b=%2F"
    assert scope["root_path"] == ""
    assert scope["scheme"] == "https"  # from X-Forwarded-Proto
    assert scope["asgi"]["spec_version"] == "2.3"
    assert [v for k, v in scope["headers"] if k == b"x-repeat"] == [b"1", b"2"]
    assert scope["client"][0] == "127.0.0.1"
    assert scope["server"][0] == "127.0.0.1"


async def test_an_app_failing_before_its_response_gives_an_openai_500(raw: Any) -> None:
    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    async def silent(scope: Scope, receive: Receive, send: Send) -> None:
        return None

    for app in (broken, silent):
        async with raw(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
            response = await client.get("/anything", headers={"X-Request-ID": "r-500"})
        assert response.status_code == 500
        error = response.json()["error"]
        assert set(error) == ERROR_KEYS
        assert error["type"] == "server_error"
        assert error["param"] is None and error["code"] is None
        assert response.headers["x-request-id"] == "r-500"


async def test_an_app_failing_mid_stream_truncates_the_response(raw: Any) -> None:
    async def half(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await asyncio.sleep(0.05)
        raise RuntimeError("upstream died")

    async with (
        raw(half) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as client,
        client.stream("GET", "/stream") as response,
    ):
        assert response.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):
            await response.aread()


async def test_the_app_sees_the_client_leave(raw: Any) -> None:
    """Mid-stream, and before the response started (an app still waiting for capacity)."""
    mid_stream, before_start = asyncio.Event(), asyncio.Event()

    async def ticker(scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "http.request"
        if scope["path"] == "/waits":
            assert (await receive())["type"] == "http.disconnect"
            before_start.set()
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})

        async def tick() -> None:
            while True:
                await send({"type": "http.response.body", "body": b"tick\n", "more_body": True})
                await asyncio.sleep(0.02)

        ticking = asyncio.create_task(tick())
        assert (await receive())["type"] == "http.disconnect"
        ticking.cancel()
        mid_stream.set()

    async with raw(ticker) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        async with client.stream("GET", "/ticks") as response:
            await anext(response.aiter_raw())
        await asyncio.wait_for(mid_stream.wait(), 5)
        with pytest.raises(httpx.ReadTimeout):
            await client.get("/waits", timeout=0.3)
        await asyncio.wait_for(before_start.wait(), 5)


async def test_a_request_body_read_before_the_bridge_is_replayed() -> None:
    """The worker never reads the body, but a Request whose body was read still works."""
    received: list[dict[str, Any]] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        received.append(dict(await receive()))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    messages = [{"type": "http.request", "body": b"hello", "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/x",
        "query_string": b"",
        "headers": [],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "scheme": "http",
    }
    request = Request(scope, receive)
    assert await request.body() == b"hello"
    response = await call_asgi(app, request)
    assert response.status_code == 204
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await response({"type": "http", "asgi": {"spec_version": "2.4"}}, receive, send)
    assert received == [{"type": "http.request", "body": b"hello", "more_body": True}]
    assert sent[0]["status"] == 204

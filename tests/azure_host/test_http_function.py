"""The indexed HTTP function itself, called with a FastAPI Request as the worker calls it."""

from __future__ import annotations

import asyncio
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import azure.functions as func
import orjson
import pytest
from azurefunctions.extensions.http.fastapi import Request

from spotgate.adapters.azure.asgi_stream_bridge import shutdown_all
from spotgate.hosts.azure import build_function_app
from spotgate.runtime import Runtime
from tests.azure_host.functions_worker import durable_binding


@pytest.fixture
def http_function(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("SPOTGATE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SPOTGATE_ADMIN_KEY", "sk-admin-test")
    app: func.FunctionApp = build_function_app()
    [function] = [f for f in app.get_functions() if f.is_http_function()]
    user_function = function.get_user_function()

    def call(req: Request, client: str = durable_binding(9)) -> Any:
        """As the worker calls it: the request and the durable client binding's JSON."""
        return user_function(req=req, client=client)

    return call


def worker_request(method: str, path: str, headers: dict[str, str] | None = None) -> Request:
    """A FastAPI Request like the one the worker's uvicorn hands the function."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 7071),
        "path_params": {"path": path.lstrip("/")},
    }
    messages = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()  # the client never leaves
        raise AssertionError("unreachable")

    return Request(scope, receive)


async def answer(response: Any) -> tuple[int, dict[str, str], bytes]:
    """Runs the returned response as the worker's uvicorn would, collecting what it sends."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}}
    await asyncio.wait_for(response(scope, receive, send), 10)
    start = sent[0]
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


async def test_the_http_function_serves_the_api(http_function: Any) -> None:
    try:
        response = await http_function(
            req=worker_request("GET", "/health/live", {"X-Request-ID": "live-1"})
        )
        status, headers, body = await answer(response)
        assert status == 200
        assert orjson.loads(body) == {"status": "ok"}
        assert headers["x-request-id"] == "live-1"
        # The first request ran the lifespan: the runtime started (its health probe too).
        status, _, body = await answer(
            await http_function(req=worker_request("GET", "/health/startup"))
        )
        assert (status, orjson.loads(body)) == (200, {"status": "ok"})
        status, _, body = await answer(await http_function(req=worker_request("GET", "/nope")))
        assert status == 404
        assert set(orjson.loads(body)["error"]) == {"message", "type", "param", "code"}
    finally:
        await shutdown_all()


async def test_a_gateway_that_cannot_start_answers_503_in_openai_shape(
    http_function: Any,
) -> None:
    async def broken_start(self: Runtime) -> None:
        raise RuntimeError("no store")

    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(Runtime, "start", broken_start)
            response = await http_function(req=worker_request("GET", "/health/live"))
            status, _, body = await answer(response)
        assert status == 503
        error = orjson.loads(body)["error"]
        assert error["type"] == "server_error"
        assert set(error) == {"message", "type", "param", "code"}
        # The next request tries the startup again.
        status, _, _ = await answer(await http_function(req=worker_request("GET", "/health/live")))
        assert status == 200
    finally:
        await shutdown_all()


class DurableWebhooks:
    """The Functions host's Durable webhook API on loopback, answering one running monitor."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        seen = self.paths

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append(self.path)
                body = orjson.dumps(RUNNING_MONITOR)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def binding(self) -> str:
        return durable_binding(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


RUNNING_MONITOR = {
    "name": "fleet_monitor",
    "instanceId": "fleet-monitor-default",
    "runtimeStatus": "Running",
    "input": {"pool": "default"},
    "customStatus": {"pool": "default", "desired": 1, "why": "steady"},
    "output": None,
    "createdTime": "2026-12-03T10:00:00Z",
    "lastUpdatedTime": "2026-12-03T10:05:00Z",
}


def test_the_http_function_has_its_own_durable_client_binding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPOTGATE_DATA_DIR", str(tmp_path))
    app = build_function_app()
    [function] = [f for f in app.get_functions() if f.is_http_function()]
    bindings = orjson.loads(function.get_function_json())["bindings"]
    durable = [(b["name"], b["direction"]) for b in bindings if b["type"] == "durableClient"]
    assert durable == [("client", "IN")], bindings
    # the worker type-checks the binding's parameter as the JSON string the host sends
    assert function.get_user_function().__annotations__["client"] is str


async def test_orchestrations_answer_on_an_instance_that_never_ran_the_watchdog(
    http_function: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Flex Consumption the timer may run on another instance: HTTP needs no watchdog."""
    hooks = DurableWebhooks()
    admin = {"Authorization": "Bearer sk-admin-test"}
    try:
        path = "/orchestrations/fleet-monitor-default"
        response = await http_function(
            req=worker_request("GET", path, admin), client=hooks.binding()
        )
        status, _, body = await answer(response)
        assert status == 200, body
        assert orjson.loads(body)["runtimeStatus"] == "Running"
        assert hooks.paths and hooks.paths[0].startswith(
            "/durabletask/instances/fleet-monitor-default"
        )
    finally:
        hooks.close()
        await shutdown_all()

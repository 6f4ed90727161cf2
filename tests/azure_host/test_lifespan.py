"""The app's lifespan under the Functions worker: started once, on first use, per process."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from spotgate.adapters.azure.asgi_stream_bridge import (
    LifespanStartupError,
    call_asgi,
    ensure_started,
    shutdown,
)


class LifespanApp:
    """Counts startups and shutdowns; fails its first `fail_startups` startups."""

    def __init__(self, fail_startups: int = 0) -> None:
        self.startups = 0
        self.shutdowns = 0
        self.fail_startups = fail_startups
        self.request_states: list[dict[str, Any]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            assert (await receive())["type"] == "lifespan.startup"
            await asyncio.sleep(0.05)  # long enough for concurrent first requests to pile up
            self.startups += 1
            if self.startups <= self.fail_startups:
                await send({"type": "lifespan.startup.failed", "message": "no database"})
                return
            scope["state"]["probe"] = "running"
            await send({"type": "lifespan.startup.complete"})
            assert (await receive())["type"] == "lifespan.shutdown"
            self.shutdowns += 1
            await send({"type": "lifespan.shutdown.complete"})
            return
        self.request_states.append(dict(scope["state"]))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def get_request(path: str = "/") -> Request:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "GET", "path": path, "headers": [], "query_string": b""}
    return Request(scope, receive)


async def test_concurrent_first_requests_start_the_app_once() -> None:
    app = LifespanApp()
    await asyncio.gather(*(ensure_started(app) for _ in range(10)))
    await ensure_started(app)
    assert app.startups == 1
    await call_asgi(app, get_request())
    assert app.request_states == [{"probe": "running"}]  # the lifespan state reaches requests
    await shutdown(app)
    assert app.shutdowns == 1
    await shutdown(app)  # idempotent
    assert app.shutdowns == 1


async def test_a_failed_startup_is_reported_and_retried() -> None:
    app = LifespanApp(fail_startups=1)
    with pytest.raises(LifespanStartupError, match="no database"):
        await ensure_started(app)
    await ensure_started(app)
    assert app.startups == 2
    await shutdown(app)
    assert app.shutdowns == 1


async def test_an_app_without_lifespan_support_still_serves() -> None:
    async def plain(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            raise ValueError("only http")
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    await ensure_started(plain)
    response = await call_asgi(plain, get_request())
    assert response.status_code == 204
    await shutdown(plain)

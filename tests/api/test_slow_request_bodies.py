"""Request bodies that stall, trickle or stop half way must not hold the gateway or spam its log.

The gateway is served the way `spotgate dev` serves it (uvloop, the guarded
httptools protocol) and the clients are raw loopback sockets, because no
well-behaved HTTP client can be made to misbehave like this.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator

import orjson
import pytest

from spotgate.api.app import create_app
from spotgate.fleet.store import InMemoryWorkerStore
from spotgate.hosts.gateway import build_runtime
from spotgate.hosts.http import http_protocol_for
from spotgate.settings import Settings
from tests.adapters.test_http_server import (
    CLOSE_BOUND_S,
    close_quietly,
    connect,
    dribble,
    read_response,
    read_until_closed,
    serve_guarded,
)
from tests.api.test_gateway_api import API_KEY, FLEET_TOKEN

CHAT_HEAD = (
    "POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\n"
    f"Authorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n"
)
REGISTER_HEAD = (
    "POST /fleet/workers HTTP/1.1\r\nHost: test\r\n"
    f"Authorization: Bearer {FLEET_TOKEN}\r\nContent-Type: application/json\r\n"
)
MODELS = f"GET /v1/models HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {API_KEY}\r\n\r\n"


@contextlib.contextmanager
def gateway(**overrides: float) -> Iterator[int]:
    """The gateway app behind the guarded server; yields its port."""
    settings = Settings(
        api_keys=[API_KEY], fleet_token=FLEET_TOKEN, cache_backend="off", **overrides
    )
    runtime = build_runtime(settings, InMemoryWorkerStore())
    with serve_guarded(create_app(runtime), http_protocol_for(settings)) as port:
        yield port


def _error(answer: bytes) -> dict[str, object]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"connection: close" in head.lower()
    error = orjson.loads(body)["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] is None
    assert error["code"] == "request_timeout"
    assert set(error) == {"message", "type", "param", "code"}
    return error  # type: ignore[no-any-return]


@pytest.mark.parametrize("head", [CHAT_HEAD, REGISTER_HEAD], ids=["chat", "fleet-register"])
async def test_a_body_that_stops_arriving_is_answered_408(head: str) -> None:
    with gateway(body_timeout_s=0.3, body_deadline_s=60) as port:
        reader, writer = await connect(port)
        try:
            writer.write(f"{head}Content-Length: 1000\r\n\r\n".encode() + b'{"model": ')
            error = _error(await read_until_closed(reader))
            assert "stopped arriving" in str(error["message"])
        finally:
            close_quietly(writer)


async def test_a_body_trickled_past_its_deadline_is_answered_408() -> None:
    with gateway(body_timeout_s=1.0, body_deadline_s=2.0) as port:
        reader, writer = await connect(port)
        trickle = None
        try:
            writer.write(f"{CHAT_HEAD}Content-Length: 1000\r\n\r\n".encode())
            # never a second of silence, yet the whole body is not there after two; the
            # trickle stops a little before the deadline, as unread input would make the
            # server's close a reset that can destroy the 408 before it is read
            trickle = asyncio.create_task(dribble(writer, b" " * 30, every_s=0.05))
            error = _error(await read_until_closed(reader))
            assert "did not arrive within" in str(error["message"])
        finally:
            if trickle is not None:
                trickle.cancel()
            close_quietly(writer)


async def test_a_client_leaving_mid_body_is_not_logged_as_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="spotgate.api")
    with gateway() as port:
        reader, writer = await connect(port)
        writer.write(f"{CHAT_HEAD}Content-Length: 1000\r\n\r\n".encode() + b"0123456789")
        await writer.drain()
        await asyncio.sleep(0.1)  # the app is reading the body now
        writer.close()
        await writer.wait_closed()

        deadline = time.monotonic() + CLOSE_BOUND_S
        while not any(r.name == "spotgate.api" for r in caplog.records):
            assert time.monotonic() < deadline, "the gateway never noticed the client left"
            await asyncio.sleep(0.02)
        for record in caplog.records:
            assert "unhandled error" not in record.getMessage()
            assert record.exc_info is None, record.getMessage()
            assert record.levelno < logging.WARNING, record.getMessage()

        reader, writer = await connect(port)
        try:
            writer.write(MODELS.encode())
            assert (await read_response(reader)).startswith(b"HTTP/1.1 200 ")
        finally:
            close_quietly(writer)

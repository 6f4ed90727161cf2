"""The local server's connection guards: slow request heads and too many connections per address.

Every test talks raw HTTP/1.1 over loopback sockets, since what is tested is
what a misbehaving client does below any HTTP client library.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from spotgate.adapters.local.http_server import GuardedHttpToolsProtocol, guarded_http_protocol
from tests.conftest import serve_asgi

CLOSE_BOUND_S = 5.0  # generous: the timeouts under test are well under a second


@contextlib.contextmanager
def serve_guarded(app: ASGIApp, protocol: type[GuardedHttpToolsProtocol]) -> Iterator[int]:
    """Serves `app` like `spotgate dev` does (uvloop, the guarded protocol); yields the port."""
    with serve_asgi(app, loop="uvloop", http=protocol, log_config=None) as url:
        yield int(url.rsplit(":", 1)[1])


async def _slow(request: Request) -> PlainTextResponse:
    await asyncio.sleep(float(request.query_params.get("s", "0")))
    return PlainTextResponse("ok")


APP = Starlette(routes=[Route("/", _slow, methods=["GET", "POST"])])
GET = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n"
GET_CLOSE = b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"


async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def read_response(reader: asyncio.StreamReader) -> bytes:
    """One whole response with a Content-Length body."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CLOSE_BOUND_S)
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head + await asyncio.wait_for(reader.readexactly(length), CLOSE_BOUND_S)


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes; fails if it keeps the connection open."""
    try:
        return await asyncio.wait_for(reader.read(), CLOSE_BOUND_S)
    except ConnectionResetError:
        return b""
    except TimeoutError:
        pytest.fail(f"the server kept the connection open for {CLOSE_BOUND_S} s")


async def dribble(writer: asyncio.StreamWriter, data: bytes, every_s: float = 0.05) -> None:
    """Sends `data` a byte at a time, like a slowloris client; stops quietly once cut off."""
    with contextlib.suppress(OSError):
        for i in range(len(data)):
            writer.write(data[i : i + 1])
            await writer.drain()
            await asyncio.sleep(every_s)


def close_quietly(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        writer.close()


async def test_a_head_sent_a_byte_at_a_time_is_cut_off_with_408() -> None:
    protocol = guarded_http_protocol(header_timeout_s=0.5, max_connections_per_ip=256)
    endless_head = b"GET / HTTP/1.1\r\nHost: test\r\n" + b"X-Slow: " + b"a" * 10_000
    with serve_guarded(APP, protocol) as port:
        clients = [await connect(port) for _ in range(20)]
        dribblers = [asyncio.create_task(dribble(w, endless_head)) for _, w in clients]
        try:
            answers = await asyncio.gather(*(read_until_closed(r) for r, _ in clients))
            for answer in answers:
                assert answer.startswith(b"HTTP/1.1 408 ")
                assert b'"code":"request_timeout"' in answer
            reader, writer = await connect(port)  # the server still serves well-behaved clients
            writer.write(GET)
            assert (await read_response(reader)).startswith(b"HTTP/1.1 200 ")
            close_quietly(writer)
        finally:
            for task in dribblers:
                task.cancel()
            for _, w in clients:
                close_quietly(w)


async def test_a_connection_that_sends_nothing_is_closed() -> None:
    protocol = guarded_http_protocol(header_timeout_s=0.5, max_connections_per_ip=256)
    with serve_guarded(APP, protocol) as port:
        reader, writer = await connect(port)
        try:
            assert await read_until_closed(reader) == b""
        finally:
            close_quietly(writer)


async def test_the_head_clock_restarts_after_each_response_on_a_keep_alive_connection() -> None:
    protocol = guarded_http_protocol(header_timeout_s=0.5, max_connections_per_ip=256)
    with serve_guarded(APP, protocol) as port:
        reader, writer = await connect(port)
        try:
            # the app taking longer than the head timeout is fine: the head had arrived
            writer.write(b"GET /?s=1 HTTP/1.1\r\nHost: test\r\n\r\n")
            assert (await read_response(reader)).startswith(b"HTTP/1.1 200 ")
            writer.write(GET)
            assert (await read_response(reader)).startswith(b"HTTP/1.1 200 ")
            dribbler = asyncio.create_task(dribble(writer, b"GET / HTTP/1.1\r\n" + b"X" * 10_000))
            try:
                assert (await read_until_closed(reader)).startswith(b"HTTP/1.1 408 ")
            finally:
                dribbler.cancel()
        finally:
            close_quietly(writer)


async def test_pipelined_requests_are_all_answered() -> None:
    protocol = guarded_http_protocol(header_timeout_s=0.5, max_connections_per_ip=256)
    with serve_guarded(APP, protocol) as port:
        reader, writer = await connect(port)
        try:
            writer.write(b"GET /?s=0.7 HTTP/1.1\r\nHost: test\r\n\r\n" + GET + GET)
            for _ in range(3):
                assert (await read_response(reader)).startswith(b"HTTP/1.1 200 ")
        finally:
            close_quietly(writer)


async def test_connections_over_the_per_address_cap_are_closed_at_once() -> None:
    protocol = guarded_http_protocol(header_timeout_s=30, max_connections_per_ip=3)
    with serve_guarded(APP, protocol) as port:
        held = [await connect(port) for _ in range(3)]
        try:
            for reader, writer in held:  # each one answered: all three are open and counted
                writer.write(GET)
                assert (await read_response(reader)).startswith(b"HTTP/1.1 200 ")
            reader, writer = await connect(port)
            with contextlib.suppress(OSError):
                writer.write(GET_CLOSE)
            assert await read_until_closed(reader) == b""
            close_quietly(writer)

            _, held_writer = held.pop()
            held_writer.close()
            await held_writer.wait_closed()
            deadline = time.monotonic() + CLOSE_BOUND_S  # until the server saw that close
            while True:
                reader, writer = await connect(port)
                with contextlib.suppress(OSError):
                    writer.write(GET_CLOSE)
                answer = await read_until_closed(reader)
                close_quietly(writer)
                if answer:
                    break
                assert time.monotonic() < deadline, "a freed slot was never reused"
                await asyncio.sleep(0.05)
            assert answer.startswith(b"HTTP/1.1 200 ")
        finally:
            for _, w in held:
                close_quietly(w)

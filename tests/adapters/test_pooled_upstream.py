"""The pooled httptools client against real loopback servers: the sim engine and raw sockets."""

from __future__ import annotations

import asyncio
import re
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import orjson
import pytest

from spotgate.adapters.http_upstream import AiohttpUpstream
from spotgate.adapters.pooled_upstream import PooledHttpUpstream
from spotgate.engines.sim import SimConfig, create_sim_app
from spotgate.gateway.upstream import WorkerUnreachable
from tests.conftest import free_port, serve_asgi

JSON = {"Content-Type": "application/json"}
CHAT = {
    "model": "sim-model",
    "messages": [{"role": "user", "content": "Tell me about lighthouses."}],
    "temperature": 0,
    "max_tokens": 24,
}
IDS = re.compile(rb"(chatcmpl|cmpl)-[0-9a-f]+")


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    """A real uvicorn running the sim engine without pacing, in a thread with its own loop."""
    with serve_asgi(create_sim_app(SimConfig(ttft_ms=0, tokens_per_s=0))) as url:
        yield url


@pytest.fixture
async def client() -> AsyncIterator[PooledHttpUpstream]:
    upstream = PooledHttpUpstream(connect_timeout_s=2, read_timeout_s=5)
    yield upstream
    await upstream.close()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class RawServer:
    """A loopback server whose every connection runs `handler(reader, writer, index)`."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.accepted = 0
        self.url = ""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=1024)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/v1/x"
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Stops handlers still running (stalled on purpose) so no socket outlives the test."""
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = self.accepted
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.handler(reader, writer, index)
        except ConnectionError:
            pass
        finally:
            writer.transport.abort()
            self._tasks.discard(task)


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    """The body of the next request on the connection, or None at EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
    return await reader.readexactly(length)


def response(body: bytes, *extra: str) -> bytes:
    head = ["HTTP/1.1 200 OK", "Content-Type: text/plain", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int) -> None:
    while (body := await read_request(reader)) is not None:
        writer.write(response(body))
        await writer.drain()


def reset(writer: asyncio.StreamWriter) -> None:
    """Closes with an RST rather than a FIN."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


# -- against the sim engine -----------------------------------------------------------------


async def test_chat_non_stream_matches_aiohttp(client: PooledHttpUpstream, sim_url: str) -> None:
    url, body = f"{sim_url}/v1/chat/completions", orjson.dumps(CHAT)
    reference = AiohttpUpstream(connect_timeout_s=2, read_timeout_s=5)
    try:
        expected = await reference.post(url, body, JSON)
    finally:
        await reference.close()
    reply = await client.post(url, body, JSON)
    assert (reply.status, reply.content_type) == (expected.status, expected.content_type)
    assert reply.status == 200
    assert IDS.sub(b"ID", reply.body) == IDS.sub(b"ID", expected.body)
    assert orjson.loads(reply.body)["choices"][0]["message"]["content"]


async def test_chat_stream_matches_aiohttp(client: PooledHttpUpstream, sim_url: str) -> None:
    url, body = f"{sim_url}/v1/chat/completions", orjson.dumps({**CHAT, "stream": True})
    reference = AiohttpUpstream(connect_timeout_s=2, read_timeout_s=5)
    try:
        ref_stream = await reference.open_stream(url, body, JSON)
        expected = b"".join([chunk async for chunk in ref_stream.chunks()])
        await ref_stream.close()
    finally:
        await reference.close()
    stream = await client.open_stream(url, body, JSON)
    assert stream.status == 200
    got = b"".join([chunk async for chunk in stream.chunks()])
    await stream.close()
    assert got.endswith(b"data: [DONE]\n\n")
    assert IDS.sub(b"ID", got) == IDS.sub(b"ID", expected)


async def test_sim_error_status_passes_through(client: PooledHttpUpstream, sim_url: str) -> None:
    reply = await client.post(f"{sim_url}/v1/chat/completions", b"{not json", JSON)
    assert reply.status == 400
    assert "error" in orjson.loads(reply.body)


# -- against raw servers: connections and pooling -------------------------------------------


async def test_keep_alive_reuses_one_connection(client: PooledHttpUpstream) -> None:
    async with RawServer(echo) as server:
        for i in range(50):
            reply = await client.post(server.url, f"req {i}".encode(), {"X-Request-ID": str(i)})
            assert (reply.status, reply.body, reply.content_type) == (
                200,
                f"req {i}".encode(),
                "text/plain",
            )
        assert server.accepted == 1


async def test_stale_connection_is_retried_once_on_a_fresh_one(client: PooledHttpUpstream) -> None:
    async def closes_on_second(r: asyncio.StreamReader, w: asyncio.StreamWriter, i: int) -> None:
        served = 0
        while (body := await read_request(r)) is not None:
            if i == 0 and served == 1:
                return  # the idle-close race: the request crossed the worker's FIN
            w.write(response(body))
            served += 1

    async with RawServer(closes_on_second) as server:
        assert (await client.post(server.url, b"one", {})).body == b"one"
        assert (await client.post(server.url, b"two", {})).body == b"two"
        assert server.accepted == 2


async def test_idle_connection_closed_by_worker_is_dropped(client: PooledHttpUpstream) -> None:
    async def one_per_connection(r: asyncio.StreamReader, w: asyncio.StreamWriter, i: int) -> None:
        body = await read_request(r)
        assert body is not None
        w.write(response(body))  # says keep-alive, then closes while the client holds it idle
        await w.drain()

    async with RawServer(one_per_connection) as server:
        for text in (b"a", b"b", b"c"):
            assert (await client.post(server.url, text, {})).body == text
            await asyncio.sleep(0.05)
        assert server.accepted == 3


async def test_no_retry_once_reply_bytes_arrived(client: PooledHttpUpstream) -> None:
    async def breaks_second(r: asyncio.StreamReader, w: asyncio.StreamWriter, i: int) -> None:
        served = 0
        while (body := await read_request(r)) is not None:
            reply = response(body)
            if served == 1:
                w.write(reply[:20])
                await w.drain()
                return
            w.write(reply)
            served += 1

    async with RawServer(breaks_second) as server:
        await client.post(server.url, b"one", {})
        with pytest.raises(WorkerUnreachable, match="mid-response"):
            await client.post(server.url, b"two", {})
        assert server.accepted == 1


async def test_connection_close_reply_is_not_reused(client: PooledHttpUpstream) -> None:
    async def says_close(r: asyncio.StreamReader, w: asyncio.StreamWriter, i: int) -> None:
        while (body := await read_request(r)) is not None:
            w.write(response(body, "Connection: close"))  # and keeps the socket open

    async with RawServer(says_close) as server:
        for text in (b"a", b"b", b"c"):
            assert (await client.post(server.url, text, {})).body == text
        assert server.accepted == 3


async def test_close_drops_idle_connections(client: PooledHttpUpstream) -> None:
    closed = asyncio.Event()

    async def watch(r: asyncio.StreamReader, w: asyncio.StreamWriter, i: int) -> None:
        await echo(r, w, i)
        closed.set()

    async with RawServer(watch) as server:
        await client.post(server.url, b"x", {})
        await client.close()
        await asyncio.wait_for(closed.wait(), 2)


async def test_two_hundred_concurrent_requests(client: PooledHttpUpstream) -> None:
    async with RawServer(echo) as server:
        bodies = [f"request number {i} ".encode() * (i % 7 + 1) for i in range(200)]
        replies = await asyncio.gather(*(client.post(server.url, b, {}) for b in bodies))
        assert [reply.body for reply in replies] == bodies
        opened = server.accepted
        assert opened <= 200
        await asyncio.gather(*(client.post(server.url, b, {}) for b in bodies[:50]))
        assert server.accepted == opened  # the second wave ran on pooled connections


# -- failures ---------------------------------------------------------------------------------


async def test_connection_refused(client: PooledHttpUpstream) -> None:
    with pytest.raises(WorkerUnreachable, match="cannot connect"):
        await client.post(f"http://127.0.0.1:{free_port()}/v1/x", b"{}", {})


async def test_stalled_worker_times_out() -> None:
    async def stalls(r: asyncio.StreamReader, w: asyncio.StreamWriter, i: int) -> None:
        await read_request(r)
        await asyncio.sleep(5)

    upstream = PooledHttpUpstream(connect_timeout_s=2, read_timeout_s=0.2)
    async with RawServer(stalls) as server:
        started = time.monotonic()
        with pytest.raises(WorkerUnreachable, match="read timeout"):
            await upstream.post(server.url, b"{}", {})
        assert time.monotonic() - started < 2
        assert server.accepted == 1  # a timeout is not a stale connection: no resend
    await upstream.close()


async def test_read_timeout_bounds_silence_not_the_whole_reply() -> None:
    async def trickles(r: asyncio.StreamReader, w: asyncio.StreamWriter, i: int) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(6):
            await asyncio.sleep(0.1)
            w.write(b"5\r\ntick\n\r\n")
        w.write(b"0\r\n\r\n")

    upstream = PooledHttpUpstream(connect_timeout_s=2, read_timeout_s=0.3)
    async with RawServer(trickles) as server:
        reply = await upstream.post(server.url, b"{}", {})
        assert reply.body == b"tick\n" * 6
        stream = await upstream.open_stream(server.url, b"{}", {})
        assert await stream.read_all() == b"tick\n" * 6
        await stream.close()
        with pytest.raises(WorkerUnreachable, match="read timeout"):
            stalled = PooledHttpUpstream(connect_timeout_s=2, read_timeout_s=0.05)
            try:
                await stalled.post(server.url, b"{}", {})
            finally:
                await stalled.close()
    await upstream.close()


async def test_reset_mid_stream_raises_from_chunks(client: PooledHttpUpstream) -> None:
    async def resets(r: asyncio.StreamReader, w: asyncio.StreamWriter, i: int) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        w.write(b"9\r\ndata: 1\n\n\r\n")
        await w.drain()
        await asyncio.sleep(0.1)
        reset(w)

    async with RawServer(resets) as server:
        stream = await client.open_stream(server.url, b"{}", {})
        assert stream.status == 200
        got = []
        with pytest.raises(WorkerUnreachable, match="mid-response"):
            async for chunk in stream.chunks():
                got.append(chunk)
        assert got == [b"data: 1\n\n"]
        await stream.close()


async def test_invalid_http_is_unreachable(client: PooledHttpUpstream) -> None:
    async def garbage(r: asyncio.StreamReader, w: asyncio.StreamWriter, i: int) -> None:
        await read_request(r)
        w.write(b"SMTP ready\r\n\r\n")
        await asyncio.sleep(1)

    async with RawServer(garbage) as server:
        with pytest.raises(WorkerUnreachable, match="invalid HTTP"):
            await client.post(server.url, b"{}", {})


async def test_only_http_urls(client: PooledHttpUpstream) -> None:
    for url in ("https://worker:8000/v1/x", "file:///etc/passwd", "not a url at all"):
        with pytest.raises(WorkerUnreachable, match="http://") as caught:
            await client.post(url, b"{}", {})
        assert caught.value.sent is False, "an unusable URL is an unreachable worker"
    with pytest.raises(ValueError, match="CR or LF"):
        await client.post("http://127.0.0.1:1/v1/x", b"{}", {"X-Bad": "a\r\nX-Injected: 1"})


# -- bodies and streams -----------------------------------------------------------------------


async def test_chunked_body_is_decoded(client: PooledHttpUpstream) -> None:
    async def chunked(r: asyncio.StreamReader, w: asyncio.StreamWriter, i: int) -> None:
        while await read_request(r) is not None:
            w.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
            w.write(b"Transfer-Encoding: chunked\r\n\r\n")
            w.write(b'3\r\n{"a\r\n')
            await w.drain()
            w.write(b'5\r\n": 1}\r\n0\r\n\r\n')

    async with RawServer(chunked) as server:
        for _ in range(3):
            reply = await client.post(server.url, b"{}", {})
            assert (reply.body, reply.content_type) == (b'{"a": 1}', "application/json")
        assert server.accepted == 1


async def test_body_until_eof(client: PooledHttpUpstream) -> None:
    async def unframed(r: asyncio.StreamReader, w: asyncio.StreamWriter, i: int) -> None:
        await read_request(r)
        w.write(b"HTTP/1.0 200 OK\r\n\r\nall of it")

    async with RawServer(unframed) as server:
        assert (await client.post(server.url, b"{}", {})).body == b"all of it"
        assert (await client.post(server.url, b"{}", {})).body == b"all of it"
        assert server.accepted == 2


async def test_finished_stream_returns_its_connection(client: PooledHttpUpstream) -> None:
    async with RawServer(echo) as server:
        stream = await client.open_stream(server.url, b"streamed", {})
        assert [chunk async for chunk in stream.chunks()] == [b"streamed"]
        await stream.close()
        assert (await client.post(server.url, b"after", {})).body == b"after"
        assert server.accepted == 1


async def test_abandoned_stream_closes_its_connection(client: PooledHttpUpstream) -> None:
    eof = asyncio.Event()

    async def endless(r: asyncio.StreamReader, w: asyncio.StreamWriter, i: int) -> None:
        if i == 0:
            await read_request(r)
            w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            w.write(b"6\r\nfirst\n\r\n")
            await w.drain()
            assert await r.read() == b""
            eof.set()
        else:
            await echo(r, w, i)

    async with RawServer(endless) as server:
        stream = await client.open_stream(server.url, b"{}", {})
        chunks = stream.chunks()
        assert await chunks.__anext__() == b"first\n"
        await stream.close()
        await asyncio.wait_for(eof.wait(), 2)
        assert (await client.post(server.url, b"next", {})).body == b"next"
        assert server.accepted == 2


async def test_error_status_stream_read_all(client: PooledHttpUpstream) -> None:
    async def busy(r: asyncio.StreamReader, w: asyncio.StreamWriter, i: int) -> None:
        while await read_request(r) is not None:
            body = b'{"error": "overloaded"}'
            w.write(f"HTTP/1.1 503 Busy\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)

    async with RawServer(busy) as server:
        stream = await client.open_stream(server.url, b"{}", {})
        assert stream.status == 503
        assert await stream.read_all() == b'{"error": "overloaded"}'
        await stream.close()
        assert (await client.post(server.url, b"{}", {})).status == 503
        assert server.accepted == 1


async def test_slow_consumer_pauses_reading(client: PooledHttpUpstream) -> None:
    big = bytes(range(256)) * (32 * 1024)  # 8 MiB

    async def bulk(r: asyncio.StreamReader, w: asyncio.StreamWriter, i: int) -> None:
        await read_request(r)
        w.write(response(big))
        await w.drain()

    async with RawServer(bulk) as server:
        stream = await client.open_stream(server.url, b"{}", {})
        await asyncio.sleep(0.3)
        assert stream._conn is not None and stream._conn.paused  # backlog above 1 MiB
        assert stream._conn.buffered < 4 << 20
        assert await stream.read_all() == big
        await stream.close()


async def test_request_framing_is_the_clients_own(client: PooledHttpUpstream) -> None:
    heads: list[bytes] = []

    async def records(r: asyncio.StreamReader, w: asyncio.StreamWriter, i: int) -> None:
        heads.append(await r.readuntil(b"\r\n\r\n"))
        body = await r.readexactly(5)
        w.write(response(body))

    async with RawServer(records) as server:
        headers = {"Host": "evil", "content-length": "999", "X-Request-ID": "r-1", **JSON}
        assert (await client.post(server.url + "?a=1", b"hello", headers)).body == b"hello"
    port = server.url.split(":")[2].split("/")[0]
    assert heads[0].decode().split("\r\n") == [
        "POST /v1/x?a=1 HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "X-Request-ID: r-1",
        "Content-Type: application/json",
        "Content-Length: 5",
        "Connection: keep-alive",
        "",
        "",
    ]


async def test_a_stream_that_goes_silent_fails_sooner_than_a_reply_would() -> None:
    """A frozen worker mid-stream is noticed after the stream's silence, not the reply's."""

    async def freezes(r: asyncio.StreamReader, w: asyncio.StreamWriter, i: int) -> None:
        await read_request(r)
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        w.write(b"5\r\ntick\n\r\n")
        await w.drain()
        await asyncio.sleep(5)

    upstream = PooledHttpUpstream(connect_timeout_s=2, read_timeout_s=30, stream_read_timeout_s=0.2)
    async with RawServer(freezes) as server:
        stream = await upstream.open_stream(server.url, b"{}", {})
        received = b""
        with pytest.raises(WorkerUnreachable, match=r"0\.2 s"):
            async for chunk in stream.chunks():
                received += chunk
        assert received == b"tick\n"
        await stream.close()
    await upstream.close()

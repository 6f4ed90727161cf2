"""A lean HTTP/1.1 client to workers: raw asyncio protocols plus httptools' C parser.

aiohttp costs ~200 µs per proxied request in the gateway; almost all of it is
generality a gateway to private vLLM workers does not need (cookies, redirects,
TLS, proxies, multidict headers, per-read timeouts built on `wait_for`). This
client writes each request in one `transport.write`, parses the reply with
`httptools.HttpResponseParser` straight from `data_received`, and keeps idle
keep-alive connections in a LIFO pool per (host, port), so the common case is
one future and one timer per request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import cast
from urllib.parse import urlsplit

import httptools

from spotgate.gateway.upstream import UpstreamReply, WorkerUnreachable

_HIGH_WATER = 1 << 20  # a stream's unconsumed backlog above this pauses reading from the worker
_MAX_TARGETS = 1024  # parsed-URL cache bound; worker URL x route is a small set in practice
_Key = tuple[str, int]
_Target = tuple[_Key, bytes]  # pool key, request line + Host header


class _Connection(asyncio.Protocol):
    """One keep-alive connection to a worker, and the state of the response in flight on it.

    Everything the parser reports lands in plain attributes; the coroutine that
    owns the request sleeps on `_waiter` and is woken only when there is
    something for it (headers, body for a stream, completion, failure).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, read_timeout_s: float) -> None:
        self._loop = loop
        self._read_timeout_s = read_timeout_s
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.idle_in: list[_Connection] | None = None  # the pool holding it while idle
        self.idle_since = 0.0
        self.busy = False
        self._reset(stream=False)

    def _reset(self, *, stream: bool) -> None:
        self.stream = stream
        self.received_any = False
        self.lost_before_reply = False  # closed with no reply byte: safe to resend elsewhere
        self.status = 0
        self.content_type = "application/json"
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.error: WorkerUnreachable | None = None
        self.parts: list[bytes] = []
        self.buffered = 0
        self.paused = False
        self._framed = False  # Content-Length or chunked: False means the body ends at EOF
        self._last_rx = 0.0

    @property
    def alive(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    # -- the request side ------------------------------------------------------------------

    async def exchange(
        self, request: bytes, *, stream: bool, read_timeout_s: float | None = None
    ) -> None:
        """Sends `request`; returns once headers (stream) or the whole reply arrived.

        `read_timeout_s` (silence between bytes) holds for this request only.
        """
        if read_timeout_s is not None:
            self._read_timeout_s = read_timeout_s
        self._reset(stream=stream)
        self.busy = True
        try:
            if self._transport is None or self._transport.is_closing():
                self.lost_before_reply = True
                raise WorkerUnreachable("connection to worker closed before sending", sent=False)
            self._transport.write(request)
            self._last_rx = self._loop.time()
            self._timer = self._loop.call_later(self._read_timeout_s, self._on_timer)
            while not (self.headers_done if stream else self.complete):
                if self.error is not None:
                    raise self.error
                await self.wait()
        except BaseException:
            self.abort()  # mid-response (or cancelled): the connection can't be reused
            raise

    async def wait(self) -> None:
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def take(self) -> bytes:
        """The body bytes buffered so far; resumes reading if a backlog had paused it."""
        data = self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)
        self.parts = []
        self.buffered = 0
        if self.paused and self._transport is not None:
            self.paused = False
            self._transport.resume_reading()
        return data

    def abort(self) -> None:
        self._cancel_timer()
        if self._transport is not None:
            self._transport.abort()

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if not self.busy or self.complete:  # nothing asked for: a broken or hostile peer
            self._fail("worker sent bytes with no request in flight")
            return
        self.received_any = True
        self._last_rx = self._loop.time()
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._fail(f"invalid HTTP from worker: {type(exc).__name__}: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self.idle_in is not None:  # the worker closed an idle keep-alive connection
            with contextlib.suppress(ValueError):
                self.idle_in.remove(self)
            self.idle_in = None
        if not self.busy or self.complete or self.error is not None:
            return
        if self.headers_done and not self._framed:  # body delimited by EOF: that is its end
            self.on_message_complete()  # and the connection is gone, so it is not pooled
            return
        why = f"{type(exc).__name__}: {exc}" if exc else "closed by worker"
        self.lost_before_reply = not self.received_any
        where = "mid-response" if self.received_any else "before any response"
        self._fail(f"connection lost {where} ({why})")

    # -- httptools callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:  # bytes beyond the reply: no pipelining here, so the peer is broken
            raise RuntimeError("worker sent more than one response")

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"content-type":
            self.content_type = value.decode("latin-1")
        elif lowered == b"content-length" or (
            lowered == b"transfer-encoding" and b"chunked" in value.lower()
        ):
            self._framed = True

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        if 100 <= self.status < 200:  # interim (100 Continue): the real status follows
            return
        self.headers_done = True
        if self.stream:
            self._wake()

    def on_body(self, body: bytes) -> None:
        self.parts.append(body)
        if self.stream:
            self.buffered += len(body)
            if self.buffered > _HIGH_WATER and not self.paused and self._transport is not None:
                self.paused = True
                self._transport.pause_reading()
            self._wake()

    def on_message_complete(self) -> None:
        if not self.headers_done:  # end of an interim response
            self._framed = False
            self.content_type = "application/json"
            return
        self.complete = True
        self.keep_alive = self._parser.should_keep_alive()
        self._cancel_timer()
        self._wake()

    # -- internals -----------------------------------------------------------------------------

    def _fail(self, message: str) -> None:
        if self.error is None:
            self.error = WorkerUnreachable(message)
        self.abort()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _on_timer(self) -> None:
        """Fires at most once per read timeout; re-arms itself while bytes keep coming."""
        self._timer = None
        if not self.busy or self.complete or self.error is not None:
            return
        if self.paused:  # silence is ours (a slow consumer), not the worker's
            self._timer = self._loop.call_later(self._read_timeout_s, self._on_timer)
            return
        deadline = self._last_rx + self._read_timeout_s
        if self._loop.time() >= deadline:
            self._fail(f"worker sent nothing for {self._read_timeout_s:g} s (read timeout)")
        else:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class PooledStream:
    """A streamed reply; its connection goes back to the pool once the body ended cleanly."""

    def __init__(self, owner: PooledHttpUpstream, key: _Key, conn: _Connection) -> None:
        self._owner = owner
        self._key = key
        self._conn: _Connection | None = conn
        self.status = conn.status

    async def chunks(self) -> AsyncIterator[bytes]:
        while (conn := self._conn) is not None:
            if conn.parts:
                data = conn.take()
                if conn.complete:
                    self._release()
                yield data
            elif conn.complete:
                self._release()
            elif conn.error is not None:
                self._conn = None
                raise conn.error
            else:
                await conn.wait()

    async def read_all(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    async def close(self) -> None:
        """Before the end of the body the connection is dropped: the rest is unwanted."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort()

    def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._owner._release(self._key, conn)


class PooledHttpUpstream:
    """`UpstreamClient` over pooled keep-alive HTTP/1.1 connections (plain `http://` only).

    The read timeout bounds silence between bytes, not the whole reply: a long
    generation that keeps streaming never times out. A reused connection that
    fails before any response byte is retried once on a fresh one, because the
    worker may have closed it while idle; after a response byte, never.
    """

    def __init__(
        self,
        *,
        connect_timeout_s: float,
        read_timeout_s: float,
        stream_read_timeout_s: float | None = None,
        max_idle_per_host: int = 256,
        idle_timeout_s: float = 4.0,
    ) -> None:
        """`idle_timeout_s` stays under uvicorn's 5 s keep-alive, so reuse rarely races a close.

        `read_timeout_s` must cover a whole non-streamed generation (vLLM sends
        nothing until it is done); a stream's tokens flow, so a stream may be
        declared dead after a much shorter silence (`stream_read_timeout_s`),
        which hands it to stream resumption on another worker.
        """
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._stream_read_timeout_s = stream_read_timeout_s or read_timeout_s
        self._max_idle = max_idle_per_host
        self._idle_timeout_s = idle_timeout_s
        self._pools: dict[_Key, list[_Connection]] = {}
        self._targets: dict[str, _Target] = {}

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> UpstreamReply:
        key, conn = await self._send(url, body, headers, stream=False)
        reply = UpstreamReply(conn.status, conn.take(), conn.content_type)
        self._release(key, conn)
        return reply

    async def open_stream(self, url: str, body: bytes, headers: dict[str, str]) -> PooledStream:
        key, conn = await self._send(url, body, headers, stream=True)
        return PooledStream(self, key, conn)

    async def close(self) -> None:
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            for conn in pool:
                conn.idle_in = None
                conn.abort()

    async def _send(
        self, url: str, body: bytes, headers: dict[str, str], *, stream: bool
    ) -> tuple[_Key, _Connection]:
        try:
            key, head = self._targets.get(url) or self._parse(url)
        except ValueError as exc:  # a worker registered with an unusable URL: unreachable
            raise WorkerUnreachable(str(exc), sent=False) from None
        request = b"".join((head, _header_block(headers, len(body)), body))
        silence = self._stream_read_timeout_s if stream else self._read_timeout_s
        conn = self._idle(key)
        if conn is not None:
            try:
                await conn.exchange(request, stream=stream, read_timeout_s=silence)
                return key, conn
            except WorkerUnreachable:
                if not conn.lost_before_reply:  # a timeout or a reply byte: never resend
                    raise
        conn = await self._connect(key)
        await conn.exchange(request, stream=stream, read_timeout_s=silence)
        return key, conn

    def _idle(self, key: _Key) -> _Connection | None:
        pool = self._pools.get(key)
        if not pool:
            return None
        oldest_ok = asyncio.get_running_loop().time() - self._idle_timeout_s
        while pool:
            conn = pool.pop()
            conn.idle_in = None
            if conn.alive and conn.idle_since >= oldest_ok:
                return conn
            conn.abort()
        return None

    def _release(self, key: _Key, conn: _Connection) -> None:
        conn.busy = False
        if not (conn.complete and conn.keep_alive and conn.alive):
            conn.abort()
            return
        pool = self._pools.setdefault(key, [])
        if len(pool) >= self._max_idle:
            conn.abort()
            return
        conn.idle_since = asyncio.get_running_loop().time()
        conn.idle_in = pool
        pool.append(conn)

    async def _connect(self, key: _Key) -> _Connection:
        host, port = key
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop, self._read_timeout_s), host, port
                )
        except TimeoutError:
            raise WorkerUnreachable(
                f"connecting to {host}:{port} timed out after {self._connect_timeout_s:g} s",
                sent=False,
            ) from None
        except OSError as exc:
            raise WorkerUnreachable(f"cannot connect to {host}:{port}: {exc}", sent=False) from exc
        return conn

    def _parse(self, url: str) -> _Target:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"only http:// URLs with a host are supported, not {url!r}")
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        if any(c <= " " or c == "\x7f" for c in path + parts.netloc):
            raise ValueError(f"URL has whitespace or control characters: {url!r}")
        head = f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n".encode()
        target = ((parts.hostname, parts.port or 80), head)
        if len(self._targets) >= _MAX_TARGETS:
            self._targets.clear()
        self._targets[url] = target
        return target


_OWN_HEADERS = frozenset({"host", "content-length", "connection", "transfer-encoding"})


def _header_block(headers: dict[str, str], length: int) -> bytes:
    """Caller's headers (minus the framing ones this client owns), then the framing."""
    lines = [f"{k}: {v}\r\n" for k, v in headers.items() if k.lower() not in _OWN_HEADERS]
    text = "".join(lines)
    if text.count("\n") != len(lines) or text.count("\r") != len(lines):
        raise ValueError("header names and values must not contain CR or LF")
    return f"{text}Content-Length: {length}\r\nConnection: keep-alive\r\n\r\n".encode()

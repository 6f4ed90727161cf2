"""aiohttp client: for HTTPS endpoints (spillover) and as the workers' client baseline.

Workers are reached with PooledHttpUpstream (plain HTTP, about 3x cheaper per
request); managed spillover endpoints need TLS, which this client brings.
Its tests compare PooledHttpUpstream's bytes against it, and `make bench
ARGS="--client aiohttp"` measures it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp

from spotgate.gateway.upstream import UpstreamReply, WorkerUnreachable

_RETRYABLE = (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError)
# failures that happen before a byte of the request left: the endpoint never saw it
_NOT_SENT = (aiohttp.ClientConnectorError, ValueError)


def _unreachable(exc: BaseException, what: str = "") -> WorkerUnreachable:
    text = f"{what}{type(exc).__name__}: {exc}"
    return WorkerUnreachable(text, sent=not isinstance(exc, _NOT_SENT))


class AiohttpStream:
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except _RETRYABLE as exc:
            raise _unreachable(exc, "stream broke: ") from exc

    async def read_all(self) -> bytes:
        try:
            return await self._response.read()
        except _RETRYABLE as exc:
            raise _unreachable(exc, "read failed: ") from exc

    async def close(self) -> None:
        self._response.release()


class AiohttpUpstream:
    def __init__(
        self, *, connect_timeout_s: float, read_timeout_s: float, max_connections: int = 1000
    ) -> None:
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout_s, sock_read=read_timeout_s
        )
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, keepalive_timeout=30, ttl_dns_cache=300
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                auto_decompress=False,
                skip_auto_headers=("User-Agent",),
            )
        return self._session

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> UpstreamReply:
        try:
            async with self._client().post(url, data=body, headers=headers) as response:
                payload = await response.read()
                return UpstreamReply(
                    response.status,
                    payload,
                    response.headers.get("Content-Type", "application/json"),
                )
        except (*_RETRYABLE, ValueError) as exc:
            raise _unreachable(exc) from exc

    async def open_stream(self, url: str, body: bytes, headers: dict[str, str]) -> AiohttpStream:
        try:
            response = await self._client().post(url, data=body, headers=headers)
        except (*_RETRYABLE, ValueError) as exc:
            raise _unreachable(exc) from exc
        return AiohttpStream(response)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

"""Reads a request body with a size cap and timeouts, so a slow client cannot hold a handler.

The server bounds how long the request head may take (see
adapters/local/http_server.py), but the body is read by the app, after the
server handed it over: without these bounds a client that declares a large
Content-Length and then trickles (or stops) keeps a task, a connection and
its admission forever. Every route that reads a body goes through here.
"""

from __future__ import annotations

import asyncio

from starlette.requests import ClientDisconnect, Request

from spotgate.errors import PayloadTooLarge, RequestTimeout
from spotgate.settings import Settings


async def read_body(request: Request, limit: int, *, silence_s: float, deadline_s: float) -> bytes:
    """The whole body, at most `limit` bytes; 408 after `silence_s` without a chunk or `deadline_s`.

    Reads the ASGI messages itself under one timeout rescheduled per chunk: a body
    that came with its head (nearly all) costs one receive and one timer. Raises
    starlette's ClientDisconnect if the client leaves mid-body; the middleware
    treats that as the quiet end it is.
    """
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(min(silence_s, deadline_s)) as timer:
            while True:
                message = await request.receive()
                if message["type"] == "http.disconnect":
                    raise ClientDisconnect()
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
                if chunk:
                    chunks.append(chunk)
                if not message.get("more_body", False):
                    break
                timer.reschedule(min(loop.time() + silence_s, deadline))
    except TimeoutError:
        raise _timed_out(deadline_s, silence_s, whole=loop.time() >= deadline) from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def read_request_body(request: Request) -> bytes:
    """`read_body` with the app's settings: for routes that do not need the limits themselves."""
    settings: Settings = request.app.state.runtime.settings
    return await read_body(
        request,
        settings.server.max_body_bytes,
        silence_s=settings.server.body_timeout_s,
        deadline_s=settings.server.body_deadline_s,
    )


def _timed_out(deadline_s: float, silence_s: float, *, whole: bool) -> RequestTimeout:
    if whole:
        return RequestTimeout(f"The request body did not arrive within {deadline_s:g} s.")
    return RequestTimeout(f"The request body stopped arriving for {silence_s:g} s.")

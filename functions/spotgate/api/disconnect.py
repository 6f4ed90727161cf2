"""Work for a request stops the moment its client goes away.

A non-streamed generation, a wait in the admission queue or for capacity, a
retry: none of it is wanted once nobody will read the answer, and all of it
costs a worker (a client that gave up at 1 s once had its request retried on
two more workers at 3 s and 6 s). Starlette does not cancel a handler when
its client disconnects, so the handler's work runs while one small task
listens for `http.disconnect` and cancels it. Cancelling closes the worker
connection, which makes vLLM abort the request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

log = logging.getLogger("spotgate.api")

CLIENT_GONE = 499
"""What the access log records for a request whose client left (nginx's convention)."""


LISTEN_AFTER_S = 0.02
"""Most answers a gateway serves from cache or a fast worker are done before this; only
work that outlasts it pays for a listener task (a timer costs far less than a task)."""


async def while_connected(request: Request, work: Callable[[], Awaitable[Response]]) -> Response:
    """`work()`'s response, or an empty 499 once the client disconnected first.

    Only for the time before a response starts: the body must already have
    been read (the listener would otherwise take body messages), and a
    streaming response watches for the disconnect itself once it is returned.
    """
    handler = asyncio.current_task()
    assert handler is not None
    gone = False
    listener: asyncio.Task[None] | None = None

    async def listen() -> None:
        nonlocal gone
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                gone = True
                handler.cancel("client disconnected")
                return

    def start_listening() -> None:
        nonlocal listener
        listener = asyncio.get_running_loop().create_task(listen())

    timer = asyncio.get_running_loop().call_later(LISTEN_AFTER_S, start_listening)
    try:
        return await work()
    except asyncio.CancelledError:
        if not gone:
            raise
        handler.uncancel()
        log.debug("client left %s before its answer; its work was cancelled", request.url.path)
        return Response(status_code=CLIENT_GONE)
    finally:
        timer.cancel()
        if listener is not None:
            listener.cancel()

"""Runs an ASGI app for one request inside an Azure Functions HTTP-streams invocation.

Why this exists: `func.AsgiFunctionApp` hands the app a buffered
`func.HttpRequest` and collects the whole response before returning it, so a
`stream: true` chat completion reached Azure clients in one piece. The HTTP
streams feature instead gives the function a FastAPI (Starlette) `Request`
and serves whatever Response it returns from the worker's own uvicorn
server, chunk by chunk. This module turns that pair into one ASGI call of our
app: `call_asgi(app, request)` waits for `http.response.start` and returns a
`StreamingResponse` whose body yields each `http.response.body` chunk as the
app sends it.

How the feature works (read from the installed packages):

- `azurefunctions.extensions.http.fastapi` re-exports FastAPI's own `Request`
  and response classes; importing the package registers them with
  `azurefunctions.extensions.base` (`RequestTrackerMeta`,
  `ResponseTrackerMeta`, and `ModuleTrackerMeta` via its `WebApp` and
  `WebServer`). `HttpV2FeatureChecker.http_v2_enabled()` is true once that
  import happened, so the function module must import the extension.
- The Python worker (azure-functions-python-worker, `http_v2.py`,
  `HttpV2Registry._check_http_v2_enabled`) turns the feature on only when
  `PYTHON_ENABLE_INIT_INDEXING` is not false and that import happened while
  indexing. It then starts the extension's `WebApp` (a FastAPI app with one
  `/{path:path}` route for every method) under uvicorn on a free loopback
  port, tells the host its address, and the host proxies each HTTP request
  there. The route hands the `Request` to the invocation (matched by the
  `x-ms-invocation-id` header), awaits the function's return value and
  returns it to uvicorn, which runs it as an ASGI response.
- Type checks: the trigger parameter must be annotated with a subclass of
  `fastapi.Request` and the return with a registered response type
  (`worker bindings/meta.py`, `_check_http_input_type_annotation`).

Requirements, as documented:

- Functions runtime 4.34.1 or later, Python 3.8 or later, the v2 (decorator)
  programming model ("HTTP streams", Python tab of
  learn.microsoft.com/azure/azure-functions/functions-bindings-http-webhook-trigger).
- `azurefunctions-extensions-http-fastapi` in requirements.txt and imported
  by the function app (same page, and the package README on PyPI).
- App setting `PYTHON_ENABLE_INIT_INDEXING=1` in Azure and in
  local.settings.json (same page; the package README step 6). Python 3.13+
  workers no longer need it (the Python 3.13 notes in the Functions docs).
- "If you are using HTTP streams, all HTTP functions in the app need to use
  streaming" (same page): the app has exactly one HTTP function.
- `PYTHON_ISOLATE_WORKER_DEPENDENCIES` is not a requirement of the feature;
  the docs name it only as the fix for module collisions between the worker
  and the app.

ASGI semantics here mirror uvicorn's (spec 2.3): after the client goes away
the app's `receive()` returns `http.disconnect` and its sends are dropped;
an app that raises before `http.response.start` yields a 500 in OpenAI's
error shape; one that raises after it aborts the response (the client sees
a truncated body, not a clean end). Lifespan: `ensure_started(app)` runs the
app's startup once per process on first use; the worker has no shutdown
hook, so `shutdown(app)` / `shutdown_all()` are for hosts that do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator
from typing import Any

import anyio
import orjson
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from starlette.requests import ClientDisconnect, Request
from starlette.responses import StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from spotgate.errors import error_body

log = logging.getLogger("spotgate.azure.bridge")

# Body messages the app may send ahead of the client: enough to keep tokens
# flowing, small enough that a slow client holds the app back.
BODY_BUFFER = 16

_DISCONNECT: Message = {"type": "http.disconnect"}
_PENDING_APPS: set[asyncio.Task[None]] = set()


def openai_error_response(
    status: int, message: str, *, request_id: str | None = None, code: str | None = None
) -> StreamingResponse:
    """An error in OpenAI's shape, as a (one-chunk) StreamingResponse like every bridged reply."""
    body = orjson.dumps(error_body(message, code=code))
    headers = {"content-type": "application/json", "content-length": str(len(body))}
    if request_id:
        headers["x-request-id"] = request_id

    async def one_chunk() -> AsyncIterator[bytes]:
        yield body

    return StreamingResponse(one_chunk(), status_code=status, headers=headers)


def build_scope(request: Request, *, trust_forwarded_proto: bool = True) -> Scope:
    """The ASGI http scope our app sees for the request the worker's server received.

    The request reaches the worker from the Functions host over plain HTTP on
    loopback; with `trust_forwarded_proto` an `X-Forwarded-Proto` header (set
    by a proxy in front) becomes the scheme, as uvicorn's proxy_headers does.
    """
    outer = request.scope
    path: str = outer.get("path", "/")
    raw_path = outer.get("raw_path") or path.encode()
    headers = [(bytes(name), bytes(value)) for name, value in outer.get("headers", ())]
    scheme: str = outer.get("scheme", "http")
    if trust_forwarded_proto:
        for name, value in headers:
            if name == b"x-forwarded-proto":
                proto = value.decode("latin-1").split(",")[0].strip().lower()
                if proto in {"http", "https"}:
                    scheme = proto
                break
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": outer.get("http_version", "1.1"),
        "method": request.method,
        "scheme": scheme,
        "path": path,
        "raw_path": raw_path,
        "query_string": outer.get("query_string", b""),
        "root_path": "",
        "headers": headers,
        "client": outer.get("client"),
        "server": outer.get("server"),
        "extensions": {},
    }


class _Exchange:
    """One request/response between the worker-side Request and the app."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.started: asyncio.Future[Message | None] = asyncio.get_running_loop().create_future()
        send_stream, receive_stream = anyio.create_memory_object_stream[Message](BODY_BUFFER)
        self._body_out: MemoryObjectSendStream[Message] = send_stream
        self._body_in: MemoryObjectReceiveStream[Message] = receive_stream
        self._request_body = request.stream()
        self._body_lock = asyncio.Lock()
        self._body_done = False
        self.closed = asyncio.Event()  # the client left, or the response was delivered
        self.disconnected = False
        self.complete = False  # the app sent its last body message
        self.error: BaseException | None = None
        self._watch: asyncio.Task[None] | None = None

    # -- the app's side -------------------------------------------------------

    async def receive(self) -> Message:
        if self.closed.is_set():
            return dict(_DISCONNECT)
        if not self._body_done:
            async with self._body_lock:
                if not self._body_done:
                    return await self._next_body_message()
        await self._wait_for_disconnect()
        return dict(_DISCONNECT)

    async def _next_body_message(self) -> Message:
        try:
            chunk = await self._request_body.__anext__()
        except StopAsyncIteration:
            chunk = b""
        except ClientDisconnect:
            self.close()
            return dict(_DISCONNECT)
        if not chunk:  # Request.stream() ends with one empty chunk
            self._body_done = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def _wait_for_disconnect(self) -> None:
        if self._watch is None:
            self._watch = asyncio.create_task(self._watch_client())
        await self.closed.wait()

    async def _watch_client(self) -> None:
        """Reads the worker-side receive channel once the body is in: only a disconnect comes.

        Anything else (a server that does not block there) ends the watch rather
        than spinning; the end of the response still closes the exchange.
        """
        try:
            message = await self.request.receive()
        except Exception:
            log.debug("reading the client's disconnect failed", exc_info=True)
            return
        if message["type"] == "http.disconnect":
            self.close()

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.started.done():
                raise RuntimeError("ASGI app sent 'http.response.start' twice.")
            self.started.set_result(message)
            return
        if kind != "http.response.body":
            return  # trailers, push promises, ...: not offered in the scope
        if not self.started.done():
            raise RuntimeError("ASGI app sent 'http.response.body' before 'http.response.start'.")
        if self.closed.is_set():
            return  # the client is gone: dropped, as uvicorn does
        if not message.get("more_body", False):
            self.complete = True
        try:
            await self._body_out.send(message)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return
        if self.complete:
            self._body_out.close()

    async def run(self, app: ASGIApp, scope: Scope) -> None:
        try:
            await app(scope, self.receive, self.send)
        except BaseException as exc:
            self.error = exc
            if not isinstance(exc, Exception):
                raise
            if self.started.done() and (self.complete or self.closed.is_set()):
                # No response body left to fail: the log is all that can tell.
                log.error("ASGI app failed after its response ended", exc_info=exc)
        finally:
            self._body_out.close()
            if not self.started.done():
                self.started.set_result(None)

    # -- the worker's side ----------------------------------------------------

    async def body(self) -> AsyncIterator[bytes]:
        async with self._body_in:
            async for message in self._body_in:
                chunk = message.get("body", b"")
                if chunk:
                    yield bytes(chunk)
                if not message.get("more_body", False):
                    return
        if self.error is not None:
            raise RuntimeError("the ASGI app failed after its response started") from self.error
        raise RuntimeError("the ASGI app returned without completing its response")

    def close(self) -> None:
        """The response is over on the worker's side (delivered, or the client left)."""
        if not self.complete:
            self.disconnected = True
        self.closed.set()
        self._body_in.close()
        if self._watch is not None and not self._watch.done():
            self._watch.cancel()


class BridgedResponse(StreamingResponse):
    """The app's response as the worker's server sends it; tells the app when it is over."""

    def __init__(
        self, exchange: _Exchange, status: int, raw_headers: list[tuple[bytes, bytes]]
    ) -> None:
        super().__init__(exchange.body(), status_code=status)
        self.raw_headers = raw_headers
        self._exchange = exchange

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._exchange.close()


async def call_asgi(app: ASGIApp, request: Request) -> StreamingResponse:
    """Runs `app` for `request` and returns its response once the app has started it.

    The app keeps running in its own task while the returned response streams
    its body; a client disconnect reaches the app as `http.disconnect`.
    """
    scope = build_scope(request)
    scope["state"] = lifespan_state(app)
    exchange = _Exchange(request)
    task = asyncio.create_task(exchange.run(app, scope))
    _PENDING_APPS.add(task)
    task.add_done_callback(_PENDING_APPS.discard)
    try:
        start = await asyncio.shield(exchange.started)
    except asyncio.CancelledError:
        exchange.close()  # the invocation was cancelled: the app sees the client leave
        raise
    request_id = request.headers.get("x-request-id")
    if start is None:
        if exchange.error is not None:
            log.error("ASGI app failed before its response started", exc_info=exchange.error)
            message = "The gateway failed unexpectedly; it was logged."
        elif exchange.disconnected:  # the client left first: nobody to answer, nothing wrong
            log.info("client left before %s %s was answered", scope["method"], scope["path"])
            message = "The client left before the gateway answered."
        else:
            log.error(
                "ASGI app returned without a response for %s %s", scope["method"], scope["path"]
            )
            message = "The gateway returned no response; it was logged."
        return openai_error_response(500, message, request_id=request_id)
    headers = [(bytes(k), bytes(v)) for k, v in start.get("headers", ())]
    return BridgedResponse(exchange, int(start["status"]), headers)


# -- lifespan -------------------------------------------------------------------


class LifespanStartupError(RuntimeError):
    """The app answered `lifespan.startup.failed`."""


class _Lifespan:
    """The app's lifespan protocol, run once per process in a background task."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.lock = asyncio.Lock()
        self.started = False
        self.supported = True
        self.state: dict[str, Any] = {}
        self._task: asyncio.Task[None] | None = None
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._outbox: asyncio.Queue[Message] = asyncio.Queue()

    async def startup(self) -> None:
        async with self.lock:
            if self.started:
                return
            self.state = {}
            self.supported = True
            self._inbox = asyncio.Queue()
            self._outbox = asyncio.Queue()
            scope: Scope = {
                "type": "lifespan",
                "asgi": {"version": "3.0", "spec_version": "2.0"},
                "state": self.state,
            }
            self._task = asyncio.create_task(self._run(scope))
            await self._inbox.put({"type": "lifespan.startup"})
            reply = await self._outbox.get()
            if reply["type"] == "lifespan.startup.failed":
                await self._finish()
                raise LifespanStartupError(reply.get("message") or "lifespan startup failed")
            if reply["type"] != "lifespan.startup.complete":  # the app does not do lifespan
                log.info("ASGI app does not support lifespan; serving without it")
                self.supported = False
            self.started = True

    async def shutdown(self) -> None:
        if self._task is not None and self._task.get_loop() is not asyncio.get_running_loop():
            # started on an event loop that has ended (a worker runs one loop; tests many):
            # its lifespan ended with that loop, and its lock and queues belong to it
            self.started = False
            self._task = None
            return
        async with self.lock:
            if not self.started:
                return
            self.started = False
            if not self.supported:
                return
            await self._inbox.put({"type": "lifespan.shutdown"})
            reply = await self._outbox.get()
            if reply["type"] == "lifespan.shutdown.failed":
                log.error("ASGI app lifespan shutdown failed: %s", reply.get("message", ""))
            await self._finish()

    async def _run(self, scope: Scope) -> None:
        try:
            await self.app(scope, self._inbox.get, self._send)
        except Exception as exc:
            if self.started:
                log.error("ASGI app lifespan failed", exc_info=exc)
            await self._outbox.put({"type": "spotgate.lifespan.raised", "error": exc})
        else:
            await self._outbox.put({"type": "spotgate.lifespan.returned"})

    async def _send(self, message: Message) -> None:
        await self._outbox.put(message)

    async def _finish(self) -> None:
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task
            self._task = None


_LIFESPANS: weakref.WeakKeyDictionary[Any, _Lifespan] = weakref.WeakKeyDictionary()


def _lifespan_for(app: ASGIApp) -> _Lifespan:
    lifespan = _LIFESPANS.get(app)
    if lifespan is None:
        lifespan = _LIFESPANS[app] = _Lifespan(app)
    return lifespan


async def ensure_started(app: ASGIApp) -> None:
    """Runs the app's lifespan startup the first time it is called (per app, per process).

    Concurrent first requests wait for the one startup. A failed startup
    raises `LifespanStartupError` and is tried again by the next call.
    """
    lifespan = _lifespan_for(app)
    if not lifespan.started:
        await lifespan.startup()


def lifespan_state(app: ASGIApp) -> dict[str, Any]:
    """A shallow copy of the state the app's lifespan set up, for one request's scope."""
    lifespan = _LIFESPANS.get(app)
    return dict(lifespan.state) if lifespan is not None and lifespan.started else {}


async def shutdown(app: ASGIApp) -> None:
    """Runs the app's lifespan shutdown if it was started here."""
    lifespan = _LIFESPANS.get(app)
    if lifespan is not None:
        await lifespan.shutdown()


async def shutdown_all() -> None:
    """Shuts down every app started here (for hosts that offer a shutdown hook)."""
    for lifespan in list(_LIFESPANS.values()):
        await lifespan.shutdown()

"""Headers every response carries, added at the ASGI layer so no route can forget them.

Pure ASGI rather than Starlette's BaseHTTPMiddleware, which costs a task and
a queue per request and breaks streaming back-pressure.
"""

from __future__ import annotations

import logging
import time
import uuid

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from spotgate.api.errors import internal_error_body

log = logging.getLogger("spotgate.api")

REQUEST_ID = "spotgate.request_id"
_DEFAULTS = ((b"x-cache", b"BYPASS"), (b"x-model", b"-"), (b"x-worker", b"-"))


class ResponseHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = b""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = value[:128]
                break
        if not request_id:
            request_id = uuid.uuid4().hex.encode()
        scope[REQUEST_ID] = request_id.decode("latin-1")
        response_started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                for name, value in _DEFAULTS:
                    if name not in present:
                        headers.append((name, value))
                elapsed_ms = (time.perf_counter() - started) * 1000
                headers.append((b"x-request-id", request_id))
                headers.append((b"x-duration-ms", f"{elapsed_ms:.2f}".encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except ClientDisconnect:
            # The client left mid-request (mid-body, usually): nobody is there to answer and
            # nothing failed here, so no traceback; a flood of these must not flood the log.
            log.debug("client left during %s %s", scope.get("method"), scope.get("path"))
        except Exception:
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if response_started:
                raise
            body = internal_error_body(scope[REQUEST_ID])
            await send_with_headers(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body})

"""A streaming response that always closes its body, even if it never started sending.

Starlette cancels the body when the client disconnects, and never closes it;
a relay nobody started would then keep the worker's stream, its in-flight
count and the pool's admission slot it holds. Here the relay is closed once
the response is over, which releases all of them at once, started or not
(see `spotgate.gateway.relay`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from spotgate.gateway.relay import Relay


class ClosingStreamingResponse(StreamingResponse):
    def __init__(
        self,
        content: Relay,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        self._source = content
        super().__init__(content, status_code, headers, media_type, background)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._finalise()

    async def _finalise(self) -> None:
        with contextlib.suppress(Exception):
            await self._source.aclose()

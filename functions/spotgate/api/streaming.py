"""A streaming response that always finalises its body, even if it never started sending.

Starlette cancels the body when the client disconnects; an async generator
that was never started then never runs its `finally`, so the worker's
in-flight count and the pool's admission slot it holds would leak. Here the
source is entered and closed in that case, which runs every cleanup along
the chain.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Mapping

from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send


class ClosingStreamingResponse(StreamingResponse):
    def __init__(
        self,
        content: AsyncIterator[bytes],
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        self._source = content
        self._entered = False
        super().__init__(self._tracked(), status_code, headers, media_type, background)

    async def _tracked(self) -> AsyncIterator[bytes]:
        self._entered = True
        async for chunk in self._source:
            yield chunk

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._finalise()

    async def _finalise(self) -> None:
        source = self._source
        if not isinstance(source, AsyncGenerator):
            return
        if not self._entered:
            with contextlib.suppress(StopAsyncIteration, Exception):
                await source.__anext__()
        with contextlib.suppress(Exception):
            await source.aclose()

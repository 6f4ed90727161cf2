"""A fake azure-core async transport: the SDKs' real pipelines, answered from recordings.

Routes match on method + URL path and hand out queued (status, JSON) answers
in order (the last one repeats); every request is recorded so tests can see
what the SDK sent. Nothing here opens a socket.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import AsyncHttpTransport
from azure.core.rest import HttpRequest
from azure.core.rest._http_response_impl_async import AsyncHttpResponseImpl
from azure.core.utils import CaseInsensitiveDict

FAR_FUTURE = 4_102_444_800  # 2100-01-01


class FakeCredential:
    """An AsyncTokenCredential that always has a token and never asks anyone for it."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken("fake", FAR_FUTURE)

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> FakeCredential:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        pass


@dataclass(frozen=True)
class Recorded:
    method: str
    url: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any  # parsed JSON, or None

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


class _Closed:
    async def close(self) -> None:
        pass


class FakeAsyncTransport(AsyncHttpTransport[HttpRequest, AsyncHttpResponseImpl]):
    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], deque[tuple[int, Any]]] = {}
        self.requests: list[Recorded] = []

    def answer(self, method: str, path: str, body: Any, status: int = 200) -> None:
        self.routes.setdefault((method.upper(), path), deque()).append((status, body))

    def sent(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == path]

    async def send(self, request: HttpRequest, **kwargs: Any) -> AsyncHttpResponseImpl:
        parts = urlsplit(request.url)
        raw = request.content if hasattr(request, "content") else request.body
        body = json.loads(raw) if raw else None
        self.requests.append(
            Recorded(
                method=request.method,
                url=request.url,
                path=parts.path,
                query=parse_qs(parts.query),
                headers=dict(request.headers),
                body=body,
            )
        )
        queue = self.routes.get((request.method.upper(), parts.path))
        if not queue:
            status, answer = 404, {"error": {"code": "NoRoute", "message": parts.path}}
        else:
            status, answer = queue.popleft() if len(queue) > 1 else queue[0]
        response = AsyncHttpResponseImpl(
            request=request,
            internal_response=_Closed(),
            status_code=status,
            reason="OK" if status < 400 else "Error",
            content_type="application/json",
            headers=CaseInsensitiveDict({"Content-Type": "application/json"}),
            stream_download_generator=None,
        )
        response._content = json.dumps(answer).encode()
        return response

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> FakeAsyncTransport:
        return self

    async def __aexit__(self, *args: Any) -> None:
        pass

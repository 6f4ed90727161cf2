"""A fake ARM endpoint for the management SDK: recorded shapes, served in order, no network.

`ArmTransport` plugs in where aiohttp would (`transport=` on the client), so
the whole azure-core pipeline runs as in production: authentication,
retries with their Retry-After handling, long-running-operation polling.
Routes match on method and a regex over the unquoted path plus the unquoted
query (so a `$filter` reads as ARM gets it); each
route serves its replies in order and the first route that still has one
wins, so a test reads as the conversation ARM would have. Every request is
recorded, so tests can say what was (never) sent.
"""

from __future__ import annotations

import copy
import json
import re
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import AsyncHttpTransport
from azure.core.rest import HttpRequest
from azure.core.rest._http_response_impl_async import AsyncHttpResponseImpl
from azure.core.utils import case_insensitive_dict

RECORDED = Path(__file__).with_name("recorded")
SUBSCRIPTION = "11111111-2222-3333-4444-555555555555"
RESOURCE_GROUP = "spotgate-rg"
ARM = "https://management.azure.com"
VMSS_PATH = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}"
    "/providers/Microsoft.Compute/virtualMachineScaleSets"
)


def recorded(name: str) -> dict[str, Any]:
    """A recorded exchange: {"status", "headers", "body"} (a fresh copy, safe to edit)."""
    return copy.deepcopy(json.loads((RECORDED / f"{name}.json").read_text()))


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, name: str, **headers: str) -> Reply:
        """The recorded reply `name`, with some headers replaced."""
        data = recorded(name)
        return cls(data["status"], data.get("body"), {**data.get("headers", {}), **headers})


@dataclass(frozen=True)
class Sent:
    method: str
    path: str  # unquoted, without the query
    query: dict[str, str]
    body: Any  # parsed JSON, or None

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


@dataclass
class _Route:
    method: str
    pattern: re.Pattern[str]
    replies: deque[Reply]
    repeat_last: bool


class _Body:
    async def close(self) -> None:
        return None


class _Response(AsyncHttpResponseImpl):
    def __init__(self, request: HttpRequest, reply: Reply) -> None:
        content = b"" if reply.body is None else json.dumps(reply.body).encode()
        headers = dict(reply.headers)
        if content:
            headers.setdefault("Content-Type", "application/json; charset=utf-8")
        headers["Content-Length"] = str(len(content))
        super().__init__(
            request=request,
            internal_response=_Body(),
            status_code=reply.status,
            reason="",
            content_type=headers.get("Content-Type"),
            headers=case_insensitive_dict(headers),
            stream_download_generator=None,
        )
        self._content = content


class ArmTransport(AsyncHttpTransport):  # type: ignore[type-arg]
    def __init__(self) -> None:
        self._routes: list[_Route] = []
        self.sent: list[Sent] = []

    def on(self, method: str, pattern: str, *replies: Reply, repeat_last: bool = False) -> None:
        """Serve `replies`, in order, to requests whose unquoted `path?query` matches `pattern`."""
        route = _Route(method.upper(), re.compile(pattern), deque(replies), repeat_last)
        self._routes.append(route)

    def requests(self, method: str | None = None, pattern: str = "") -> list[Sent]:
        return [
            s
            for s in self.sent
            if (method is None or s.method == method.upper()) and re.search(pattern, s.path)
        ]

    async def send(self, request: HttpRequest, **kwargs: Any) -> _Response:
        parts = urlsplit(request.url)
        path = unquote(parts.path)
        target = f"{path}?{unquote(parts.query)}" if parts.query else path
        raw = request.content
        body = json.loads(raw) if raw else None
        self.sent.append(Sent(request.method, path, dict(parse_qsl(parts.query)), body))
        for route in self._routes:
            if route.method == request.method and route.pattern.search(target) and route.replies:
                reply = route.replies[0]
                if len(route.replies) > 1 or not route.repeat_last:
                    route.replies.popleft()
                return _Response(request, reply)
        raise AssertionError(f"unexpected {request.method} {target}")

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def __aexit__(self, *args: object) -> None:
        return None


class FakeCredential:
    """An AsyncTokenCredential that hands out a token valid for a year and never calls Entra ID."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("fake", int(time.time()) + 365 * 24 * 3600)

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> FakeCredential:
        return self

    async def __aexit__(self, *args: object) -> None:
        return None

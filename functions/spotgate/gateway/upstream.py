"""The port to workers' HTTP APIs. The core sees bytes and statuses, never a client library."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol


class WorkerUnreachable(Exception):
    """Connecting, sending or reading failed.

    `sent` says whether the worker may have started on the request: False
    only when it certainly never got it (no connection, an unusable URL), the
    one case in which resending it to another worker cannot repeat whatever
    the request did to this one.
    """

    def __init__(self, message: str, *, sent: bool = True) -> None:
        super().__init__(message)
        self.sent = sent


@dataclass(slots=True)
class UpstreamReply:
    status: int
    body: bytes
    content_type: str


class UpstreamStream(Protocol):
    status: int

    def chunks(self) -> AsyncIterator[bytes]:
        """Raw bytes as they arrive; raises WorkerUnreachable if the worker goes away."""
        ...

    async def read_all(self) -> bytes: ...

    async def close(self) -> None: ...


class UpstreamClient(Protocol):
    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> UpstreamReply: ...

    async def open_stream(
        self, url: str, body: bytes, headers: dict[str, str]
    ) -> UpstreamStream: ...

    async def close(self) -> None: ...

"""Sends a request to a worker and hides worker failures the client need not see.

A non-streamed request whose worker cannot be reached or answers 5xx is
retried on another worker; the failed worker sits out a cooldown. When no
worker serves the model yet (cold start, replacement after an eviction), the
request waits a bounded time for capacity instead of failing at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from spotgate.clock import Clock
from spotgate.errors import NoCapacity, UpstreamError
from spotgate.fleet.registry import WorkerRegistry
from spotgate.fleet.worker import Worker
from spotgate.gateway.health import PassiveHealth
from spotgate.gateway.load import OutstandingRequests
from spotgate.gateway.selection import SelectionPolicy
from spotgate.gateway.upstream import UpstreamClient, UpstreamStream, WorkerUnreachable

_RETRY_STATUSES = frozenset({500, 502, 503, 504})
_JSON = {"Content-Type": "application/json"}


@dataclass(slots=True)
class Reply:
    worker_id: str
    status: int
    body: bytes
    content_type: str


@dataclass(slots=True)
class StreamReply:
    worker_id: str
    chunks: AsyncIterator[bytes]


def sse_error(message: str, code: str = "upstream_error") -> bytes:
    payload = {"error": {"message": message, "type": "server_error", "param": None, "code": code}}
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class Forwarder:
    def __init__(
        self,
        registry: WorkerRegistry,
        upstream: UpstreamClient,
        policy: SelectionPolicy,
        load: OutstandingRequests,
        health: PassiveHealth,
        clock: Clock,
        *,
        max_attempts: int = 3,
        capacity_wait_s: float = 30.0,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ) -> None:
        self._registry = registry
        self._upstream = upstream
        self._policy = policy
        self._load = load
        self._health = health
        self._clock = clock
        self._max_attempts = max_attempts
        self._capacity_wait_s = capacity_wait_s
        self._sleep = sleep

    async def forward(
        self, path: str, model: str, raw: bytes, body: dict[str, Any], headers: dict[str, str]
    ) -> Reply:
        tried: set[str] = set()
        last_problem = "no worker answered"
        for _ in range(self._max_attempts):
            worker = await self._pick(model, body, tried)
            if worker is None:
                break
            tried.add(worker.id)
            self._load.start(worker.id)
            try:
                reply = await self._upstream.post(worker.url + path, raw, {**_JSON, **headers})
            except WorkerUnreachable as exc:
                self._health.failed(worker.id)
                last_problem = f"worker {worker.id}: {exc}"
                continue
            finally:
                self._load.finish(worker.id)
            if reply.status in _RETRY_STATUSES:
                self._health.failed(worker.id)
                last_problem = f"worker {worker.id} answered {reply.status}"
                continue
            self._health.succeeded(worker.id)
            return Reply(worker.id, reply.status, reply.body, reply.content_type)
        raise UpstreamError(
            f"The model '{model}' could not be served after {len(tried)} attempt(s): "
            f"{last_problem}.",
            code="upstream_unavailable",
        )

    async def forward_stream(
        self, path: str, model: str, raw: bytes, body: dict[str, Any], headers: dict[str, str]
    ) -> StreamReply | Reply:
        """Opens a stream on a healthy worker; errors before the first byte are retried."""
        tried: set[str] = set()
        last_problem = "no worker answered"
        for _ in range(self._max_attempts):
            worker = await self._pick(model, body, tried)
            if worker is None:
                break
            tried.add(worker.id)
            self._load.start(worker.id)
            try:
                stream = await self._upstream.open_stream(
                    worker.url + path, raw, {**_JSON, **headers}
                )
            except WorkerUnreachable as exc:
                self._load.finish(worker.id)
                self._health.failed(worker.id)
                last_problem = f"worker {worker.id}: {exc}"
                continue
            if stream.status != 200:
                try:
                    payload = await stream.read_all()
                except WorkerUnreachable:
                    payload = b""
                finally:
                    await stream.close()
                    self._load.finish(worker.id)
                if stream.status in _RETRY_STATUSES:
                    self._health.failed(worker.id)
                    last_problem = f"worker {worker.id} answered {stream.status}"
                    continue
                return Reply(worker.id, stream.status, payload, "application/json")
            self._health.succeeded(worker.id)
            return StreamReply(worker.id, self._relay(worker, stream))
        raise UpstreamError(
            f"The model '{model}' could not be served after {len(tried)} attempt(s): "
            f"{last_problem}.",
            code="upstream_unavailable",
        )

    async def _relay(self, worker: Worker, stream: UpstreamStream) -> AsyncIterator[bytes]:
        try:
            async for chunk in stream.chunks():
                yield chunk
        except WorkerUnreachable:
            self._health.failed(worker.id)
            yield sse_error(f"worker {worker.id} failed mid-stream", "worker_lost")
            yield b"data: [DONE]\n\n"
        finally:
            await stream.close()
            self._load.finish(worker.id)

    async def _pick(self, model: str, body: dict[str, Any], tried: set[str]) -> Worker | None:
        """A worker not tried yet; waits for capacity, or None once every ready one failed."""
        deadline = self._clock.now() + self._capacity_wait_s
        while True:
            untried = [w for w in self._registry.ready_for_model(model) if w.id not in tried]
            candidates = [w for w in untried if self._health.available(w.id)]
            if candidates:
                return self._policy.choose(candidates, body)
            if tried and not untried:
                return None
            if self._clock.now() >= deadline:
                raise NoCapacity(
                    f"No worker is ready to serve '{model}'; capacity is being added. "
                    "Retry shortly.",
                    code="no_capacity",
                    headers={"Retry-After": "5"},
                )
            await self._sleep(0.05)

"""Sends a request to a worker and hides worker failures the client need not see.

A non-streamed request whose worker cannot be reached, answers 5xx or sends
no reply within the first-byte timeout is retried on another worker, within
a budget of attempts and an overall deadline; the failing worker's breaker
counts it. When no worker serves the model yet (cold start, replacement after
an eviction), the request waits a bounded time for capacity instead of
failing at once. A stream whose worker dies mid-answer is continued on
another worker (see `stream_resume`); one that cannot be ends with an SSE
error event and [DONE], never a hung socket.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from spotgate.clock import Clock
from spotgate.errors import NoCapacity, UpstreamError
from spotgate.fleet.registry import WorkerRegistry
from spotgate.fleet.worker import Worker
from spotgate.gateway.breaker import is_connection_refused
from spotgate.gateway.health import PassiveHealth
from spotgate.gateway.load import OutstandingRequests
from spotgate.gateway.relay import Relay
from spotgate.gateway.selection import SelectionPolicy
from spotgate.gateway.stream_resume import StreamRelays
from spotgate.gateway.upstream import UpstreamClient, UpstreamStream, WorkerUnreachable
from spotgate.gateway.upstream_errors import openai_error_body

__all__ = ["Forwarder", "Reply", "StreamReply"]

T = TypeVar("T")
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
    """An open stream; whoever takes it must read it to its end or `aclose()` its chunks."""

    worker_id: str
    chunks: Relay


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
        first_byte_timeout_s: float | None = None,
        stream_first_byte_timeout_s: float | None = 30.0,
        retry_deadline_s: float | None = None,
        stream_resumes: int = 3,
        resume_wait_s: float = 10.0,
    ) -> None:
        """Timeouts: connecting and silence between bytes belong to the upstream client;
        `first_byte_timeout_s` bounds the wait for a non-streamed reply's headers (the
        whole generation, for vLLM), `stream_first_byte_timeout_s` a stream's headers
        (vLLM sends them before queueing). `retry_deadline_s` stops new attempts, not
        running ones. A broken stream is resumed at most `stream_resumes` times, each
        waiting at most `resume_wait_s` for a worker."""
        self._registry = registry
        self._upstream = upstream
        self._policy = policy
        self._load = load
        self._health = health
        self._clock = clock
        self._max_attempts = max_attempts
        self._capacity_wait_s = capacity_wait_s
        self._sleep = sleep
        self._first_byte_timeout_s = first_byte_timeout_s
        self._stream_first_byte_timeout_s = stream_first_byte_timeout_s
        self._retry_deadline_s = retry_deadline_s
        self._resume_wait_s = resume_wait_s
        self._relays = StreamRelays(health, load, self._reopen, max_resumes=stream_resumes)

    async def forward(
        self, path: str, model: str, raw: bytes, body: dict[str, Any], headers: dict[str, str]
    ) -> Reply:
        sent = {**_JSON, **headers}
        return await self._attempts(
            model, body, set(), lambda worker: self._post(worker, path, raw, sent)
        )

    async def forward_stream(
        self, path: str, model: str, raw: bytes, body: dict[str, Any], headers: dict[str, str]
    ) -> StreamReply | Reply:
        """Opens a stream on a healthy worker; errors before the first byte are retried."""
        sent = {**_JSON, **headers}
        tried: set[str] = set()

        async def attempt(worker: Worker) -> StreamReply | Reply | str:
            opened = await self._open(worker, path, raw, sent)
            if isinstance(opened, str | Reply):
                return opened
            relay = self._relays.relay(worker, opened, path, model, body, headers, tried)
            return StreamReply(worker.id, relay)

        return await self._attempts(model, body, tried, attempt)

    async def _attempts(
        self,
        model: str,
        body: dict[str, Any],
        tried: set[str],
        attempt: Callable[[Worker], Awaitable[T | str]],
    ) -> T:
        """The first result of `attempt` on untried workers, in turn (a str is why that worker
        failed), within the attempt budget and the retry deadline; else UpstreamError."""
        last_problem = "no worker answered"
        deadline = self._deadline()
        for number in range(self._max_attempts):
            if number and deadline is not None and self._clock.now() >= deadline:
                last_problem += f"; retry deadline of {self._retry_deadline_s:g} s passed"
                break
            worker = await self._pick(model, body, tried, self._capacity_wait_s)
            if worker is None:
                break
            tried.add(worker.id)
            result = await attempt(worker)
            if not isinstance(result, str):
                return result
            last_problem = result
        raise _unserved(model, len(tried), last_problem)

    async def _reopen(
        self,
        model: str,
        path: str,
        request: dict[str, Any],
        headers: dict[str, str],
        tried: set[str],
    ) -> tuple[Worker, UpstreamStream] | str:
        """The continuation's stream on a worker this stream has not used, or why not."""
        raw = orjson.dumps(request)
        sent = {**_JSON, **headers}
        problem = "no other worker serves the model"
        for _ in range(self._max_attempts):
            try:
                worker = await self._pick(model, request, tried, self._resume_wait_s)
            except NoCapacity:
                return f"no other worker was available within {self._resume_wait_s:g} s"
            if worker is None:
                break
            tried.add(worker.id)
            opened = await self._open(worker, path, raw, sent)
            if isinstance(opened, Reply):
                message = orjson.loads(openai_error_body(opened.status, opened.body))["error"]
                return f"worker {worker.id} answered {opened.status}: {message['message']}"
            if not isinstance(opened, str):
                return worker, opened
            problem = opened
        return problem

    async def _post(
        self, worker: Worker, path: str, raw: bytes, sent: dict[str, str]
    ) -> Reply | str:
        """The worker's final (non-retryable) reply, or why this worker failed."""
        self._load.start(worker.id)
        timeout = self._first_byte_timeout_s
        try:
            reply = await _within(timeout, self._upstream.post(worker.url + path, raw, sent))
        except WorkerUnreachable as exc:
            self._health.failed(worker.id, fatal=is_connection_refused(exc))
            return f"worker {worker.id}: {exc}"
        except TimeoutError:
            self._health.failed(worker.id)
            return f"worker {worker.id} sent no reply{_within_text(timeout)}"
        finally:
            self._load.finish(worker.id)
        if reply.status in _RETRY_STATUSES:
            self._health.failed(worker.id)
            return f"worker {worker.id} answered {reply.status}"
        self._health.succeeded(worker.id)
        return Reply(worker.id, reply.status, reply.body, reply.content_type)

    async def _open(
        self, worker: Worker, path: str, raw: bytes, sent: dict[str, str]
    ) -> UpstreamStream | Reply | str:
        """A 200 stream; a final (non-retryable) reply; or why this worker failed.
        `sent` are the headers as sent: the client's over `_JSON`."""
        self._load.start(worker.id)
        timeout = self._stream_first_byte_timeout_s
        try:
            opening = self._upstream.open_stream(worker.url + path, raw, sent)
            stream = await _within(timeout, opening)
        except WorkerUnreachable as exc:
            self._load.finish(worker.id)
            self._health.failed(worker.id, fatal=is_connection_refused(exc))
            return f"worker {worker.id}: {exc}"
        except TimeoutError:
            self._load.finish(worker.id)
            self._health.failed(worker.id)
            return f"worker {worker.id} sent no response headers{_within_text(timeout)}"
        except BaseException:
            self._load.finish(worker.id)
            raise
        if stream.status == 200:
            self._health.succeeded(worker.id)
            return stream
        try:
            payload = await stream.read_all()
        except WorkerUnreachable:
            payload = b""
        finally:
            await stream.close()
            self._load.finish(worker.id)
        if stream.status in _RETRY_STATUSES:
            self._health.failed(worker.id)
            return f"worker {worker.id} answered {stream.status}"
        return Reply(worker.id, stream.status, payload, "application/json")

    def _deadline(self) -> float | None:
        limit = self._retry_deadline_s
        return None if limit is None else self._clock.now() + limit

    async def _pick(
        self, model: str, body: dict[str, Any], tried: set[str], wait_s: float
    ) -> Worker | None:
        """A worker not tried yet; waits for capacity, or None once every ready one failed."""
        deadline = self._clock.now() + wait_s
        while True:
            untried = [w for w in self._registry.ready_for_model(model) if w.id not in tried]
            candidates = [w for w in untried if self._health.available(w.id)]
            if candidates:
                worker = self._policy.choose(candidates, body)
                self._health.attempt(worker.id)
                return worker
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


async def _within(timeout_s: float | None, awaitable: Awaitable[T]) -> T:
    if timeout_s is None:
        return await awaitable
    async with asyncio.timeout(timeout_s):
        return await awaitable


def _within_text(timeout_s: float | None) -> str:
    return "" if timeout_s is None else f" within {timeout_s:g} s"


def _unserved(model: str, attempts: int, problem: str) -> UpstreamError:
    return UpstreamError(
        f"The model '{model}' could not be served after {attempts} attempt(s): {problem}.",
        code="upstream_unavailable",
    )

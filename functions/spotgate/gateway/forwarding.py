"""Sends a request to a worker and hides the worker failures it safely can.

A non-streamed request is sent to another worker when its worker certainly
never started it (no connection, an unusable address) or answered with a
5xx; a request that was in a worker when the worker died or went silent is
not resent, because the request may be what killed it (see `quarantine`):
the client gets a 502 `worker_failed` and decides. Attempts are bounded by a
budget and an overall deadline; the failing worker's breaker counts each
failure. When no worker serves the model yet (cold start, replacement after
an eviction), the request waits a bounded time for capacity instead of
failing at once. A stream whose worker dies mid-answer is continued on
another worker (see `stream_resume`) unless that request has already cost a
worker; one that cannot be ends with an SSE error event and [DONE], never a
hung socket. Client-facing messages never name workers or hosts; the
details go to the log.
"""

from __future__ import annotations

import asyncio
import logging
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
from spotgate.gateway.in_flight import InFlight
from spotgate.gateway.quarantine import RequestQuarantine
from spotgate.gateway.relay import Relay
from spotgate.gateway.selection import SelectionPolicy
from spotgate.gateway.stream_resume import StreamRelays
from spotgate.gateway.upstream import UpstreamClient, UpstreamStream, WorkerUnreachable
from spotgate.gateway.upstream_errors import openai_error_body

__all__ = ["Forwarder", "Reply", "StreamReply"]

log = logging.getLogger("spotgate.forwarding")

T = TypeVar("T")
_RETRY_STATUSES = frozenset({500, 502, 503, 504})
_JSON = {"Content-Type": "application/json"}


@dataclass(slots=True)
class Reply:
    worker_id: str
    status: int
    body: bytes
    content_type: str


@dataclass(frozen=True, slots=True)
class Died:
    """The worker failed with the request inside it: resending could repeat the failure."""

    worker_id: str
    problem: str


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
        load: InFlight,
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
        quarantine: RequestQuarantine | None = None,
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
        self.quarantine = quarantine or RequestQuarantine(clock)
        self._relays = StreamRelays(
            health, load, self._reopen, self.quarantine, max_resumes=stream_resumes
        )

    async def forward(
        self, path: str, model: str, raw: bytes, body: dict[str, Any], headers: dict[str, str]
    ) -> Reply:
        self.quarantine.check(path, body)
        sent = {**_JSON, **headers}
        return await self._attempts(
            path, model, body, set(), lambda worker: self._post(worker, path, raw, sent)
        )

    async def forward_stream(
        self, path: str, model: str, raw: bytes, body: dict[str, Any], headers: dict[str, str]
    ) -> StreamReply | Reply:
        """Opens a stream on a healthy worker; a worker that never got it is replaced."""
        self.quarantine.check(path, body)
        sent = {**_JSON, **headers}
        tried: set[str] = set()

        async def attempt(worker: Worker) -> StreamReply | Reply | Died | str:
            opened = await self._open(worker, path, raw, sent)
            if isinstance(opened, str | Reply | Died):
                return opened
            relay = self._relays.relay(worker, opened, path, model, body, headers, tried)
            return StreamReply(worker.id, relay)

        return await self._attempts(path, model, body, tried, attempt)

    async def _attempts(
        self,
        path: str,
        model: str,
        body: dict[str, Any],
        tried: set[str],
        attempt: Callable[[Worker], Awaitable[T | Died | str]],
    ) -> T:
        """The first result of `attempt` on untried workers, in turn (a str is why that worker
        failed and another may try), within the attempt budget and the retry deadline; a
        worker that died with the request in it ends the attempts. Else UpstreamError."""
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
            if isinstance(result, Died):
                raise self._died(path, body, result)
            if not isinstance(result, str):
                return result
            last_problem = result
        raise _unserved(model, len(tried), last_problem)

    def _died(self, path: str, body: dict[str, Any], died: Died) -> Exception:
        log.warning("%s; the request is not resent to another worker", died.problem)
        if self.quarantine.worker_died(path, body, died.worker_id):
            return self.quarantine.refusal()
        return UpstreamError(
            "The worker serving this request failed before it finished. It was not resent "
            "to another worker, since the request itself may have caused the failure.",
            code="worker_failed",
        )

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
            if isinstance(opened, Died):
                return opened.problem
            if not isinstance(opened, str):
                return worker, opened
            problem = opened
        return problem

    async def _post(
        self, worker: Worker, path: str, raw: bytes, sent: dict[str, str]
    ) -> Reply | Died | str:
        """The worker's final (non-retryable) reply, whether it died with the request, or
        why it failed without starting it."""
        self._load.start(worker.id)
        timeout = self._first_byte_timeout_s
        try:
            reply = await _within(timeout, self._upstream.post(worker.url + path, raw, sent))
        except WorkerUnreachable as exc:
            self._health.failed(worker.id, fatal=exc.sent or is_connection_refused(exc))
            problem = f"worker {worker.id}: {exc}"
            return Died(worker.id, problem) if exc.sent else problem
        except TimeoutError:
            self._health.failed(worker.id)
            return Died(worker.id, f"worker {worker.id} sent no reply{_within_text(timeout)}")
        finally:
            self._load.finish(worker.id)
        if reply.status in _RETRY_STATUSES:
            self._health.failed(worker.id)
            return f"worker {worker.id} answered {reply.status}"
        if reply.status == 200 and not _looks_like_json_object(reply.body):
            # a worker that answers garbage is broken or not what it claims: stop
            # sending it requests, and stop serving what it produced from the cache
            self._health.failed(worker.id, fatal=True)
            self._registry.distrust(worker.id, "answered 200 with a body that is not JSON")
            return f"worker {worker.id} answered 200 with a body that is not a JSON object"
        self._health.succeeded(worker.id)
        return Reply(worker.id, reply.status, reply.body, reply.content_type)

    async def _open(
        self, worker: Worker, path: str, raw: bytes, sent: dict[str, str]
    ) -> UpstreamStream | Reply | Died | str:
        """A 200 stream; a final (non-retryable) reply; the worker's death with the request
        in it; or why it failed without starting it. `sent` are the headers as sent: the
        client's over `_JSON`."""
        self._load.start(worker.id)
        timeout = self._stream_first_byte_timeout_s
        try:
            opening = self._upstream.open_stream(worker.url + path, raw, sent)
            stream = await _within(timeout, opening)
        except WorkerUnreachable as exc:
            self._load.finish(worker.id)
            self._health.failed(worker.id, fatal=exc.sent or is_connection_refused(exc))
            problem = f"worker {worker.id}: {exc}"
            return Died(worker.id, problem) if exc.sent else problem
        except TimeoutError:
            self._load.finish(worker.id)
            self._health.failed(worker.id)
            problem = f"worker {worker.id} sent no response headers{_within_text(timeout)}"
            return Died(worker.id, problem)
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


def _looks_like_json_object(body: bytes) -> bool:
    """A cheap shape check on every reply (the route parses the ones it rewrites)."""
    text = body.strip()
    return text[:1] == b"{" and text[-1:] == b"}"


def _within_text(timeout_s: float | None) -> str:
    return "" if timeout_s is None else f" within {timeout_s:g} s"


def _unserved(model: str, attempts: int, problem: str) -> UpstreamError:
    log.warning("model %r not served after %d attempt(s): %s", model, attempts, problem)
    return UpstreamError(
        f"The model '{model}' could not be served: its workers failed or did not answer "
        f"({attempts} tried). Retry shortly.",
        code="upstream_unavailable",
    )

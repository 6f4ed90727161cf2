"""Traces: one span per gateway request, and under it one span per attempt on a worker.

What an operator looks for in Application Insights' transaction view: the
request (`chat.completions`, ...) with its id (the `X-Request-ID` the client
saw), model, pool, worker, cache result, status and tokens; under it each
worker it was sent to, so a failover shows as two attempts, the first one
failed. A client's `traceparent` makes the request span part of the
client's trace, and each attempt passes its own on to the worker.

Attributes are chosen, never copied: no header but the request id, no key,
no prompt or answer. The model is the served name only when it resolved (a
client's free text never becomes an attribute), as in the metrics.

The request's span reaches the worker client through a context variable set
when the request is received: the forwarder, and a stream's resumes (the
response task starts from the request task's context), run in that context.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from opentelemetry import propagate
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, set_span_in_context

from spotgate.gateway.serving import InferenceRequest, Outcome
from spotgate.gateway.tenancy.usage import UsageRecord
from spotgate.gateway.upstream import UpstreamClient, UpstreamReply, UpstreamStream
from spotgate.telemetry.request_metrics import model_label

TRACER_NAME = "spotgate"
REQUEST_ID = "spotgate.request_id"
REQUEST_ID_HEADER = "X-Request-ID"
OPERATIONS = {
    "/v1/chat/completions": "chat.completions",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}


def operation(path: str) -> str:
    return OPERATIONS.get(path, path.strip("/").replace("/", ".") or "request")


@dataclass
class RequestSpan:
    span: Span
    request_id: str
    path: str
    attempts: int = 0


_current: ContextVar[RequestSpan | None] = ContextVar("spotgate_request_span", default=None)


class RequestTracing:
    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer

    def started(self, request: InferenceRequest) -> RequestSpan:
        parent = propagate.extract(request.headers)  # the current context, or the client's trace
        span = self._tracer.start_span(
            operation(request.path),
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                REQUEST_ID: request.request_id,
                "http.request.method": "POST",
                "url.path": request.path,
                "spotgate.stream": request.wants_stream,
            },
        )
        handle = RequestSpan(span, request.request_id, request.path)
        _current.set(handle)
        return handle

    def finished(self, handle: RequestSpan, outcome: Outcome, record: UsageRecord | None) -> None:
        span = handle.span
        status = record.status if record is not None else outcome.status
        span.set_attribute("http.response.status_code", status)
        span.set_attribute("spotgate.attempts", handle.attempts)
        error_code = record.error_code if record is not None else outcome.error_code
        if error_code:
            span.set_attribute("spotgate.error_code", error_code)
        if record is not None:
            for name, value in (
                ("spotgate.model", model_label(record)),
                ("spotgate.pool", record.pool),
                ("spotgate.worker", record.worker_id),
                ("spotgate.priority", record.priority),
                ("spotgate.cache", record.cache),
                ("spotgate.spillover", record.spillover),
                ("spotgate.ttft_ms", record.ttft_ms),
            ):
                if value is not None:
                    span.set_attribute(name, value)
            span.set_attribute("gen_ai.usage.input_tokens", record.prompt_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", record.completion_tokens)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR, error_code or f"HTTP {status}"))
        span.end()


WorkerOf = Callable[[str], str | None]
"""The id of the worker a URL belongs to."""


class TracedUpstream:
    """The worker client, one CLIENT span per call; a stream's span lasts until it is closed."""

    def __init__(self, inner: UpstreamClient, tracer: Tracer, worker_of: WorkerOf) -> None:
        self._inner = inner
        self._tracer = tracer
        self._worker_of = worker_of

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> UpstreamReply:
        with self._attempt(url, headers) as (span, sent):
            reply = await self._inner.post(url, body, sent)
            _answered(span, reply.status)
            return reply

    async def open_stream(self, url: str, body: bytes, headers: dict[str, str]) -> UpstreamStream:
        with self._attempt(url, headers, end_on_exit=False) as (span, sent):
            try:
                stream = await self._inner.open_stream(url, body, sent)
            except BaseException:
                span.end()
                raise
            _answered(span, stream.status)
            return _TracedStream(stream, span)

    async def close(self) -> None:
        await self._inner.close()

    @contextmanager
    def _attempt(
        self, url: str, headers: dict[str, str], *, end_on_exit: bool = True
    ) -> Iterator[tuple[Span, dict[str, str]]]:
        request = _current.get()
        request_id = headers.get(REQUEST_ID_HEADER)
        if request is not None and request.request_id != request_id:
            request = None  # another request's, left in this context
        parent = None
        if request is not None:
            request.attempts += 1
            parent = set_span_in_context(request.span)
        target = urlsplit(url)
        with self._tracer.start_as_current_span(
            f"upstream {operation(target.path)}",
            context=parent,
            kind=SpanKind.CLIENT,
            end_on_exit=end_on_exit,
        ) as span:
            sent = headers
            if span.is_recording():  # no lookups or copies for a span nobody exports
                span.set_attributes(self._attributes(target, url, request_id, request))
                sent = dict(headers)
                propagate.inject(sent)  # the worker's own tracing (vLLM's) joins this trace
            yield span, sent

    def _attributes(
        self,
        target: SplitResult,
        url: str,
        request_id: str | None,
        request: RequestSpan | None,
    ) -> dict[str, str | int]:
        attributes: dict[str, str | int] = {
            "http.request.method": "POST",
            "server.address": target.hostname or "",
            "url.path": target.path,
        }
        if target.port is not None:
            attributes["server.port"] = target.port
        worker = self._worker_of(url)
        if worker is not None:
            attributes["spotgate.worker"] = worker
        if request_id is not None:
            attributes[REQUEST_ID] = request_id
        if request is not None:
            attributes["spotgate.attempt"] = request.attempts
        return attributes


def _answered(span: Span, status: int) -> None:
    span.set_attribute("http.response.status_code", status)
    if status >= 500 or status == 429:
        span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))


class _TracedStream:
    def __init__(self, inner: UpstreamStream, span: Span) -> None:
        self._inner = inner
        self._span = span
        self._ended = False
        self.status = inner.status

    def chunks(self) -> AsyncIterator[bytes]:
        return self._relay()

    async def _relay(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner.chunks():
                yield chunk
        except Exception as exc:
            self._span.record_exception(exc)
            self._span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            self._end()

    async def read_all(self) -> bytes:
        try:
            return await self._inner.read_all()
        finally:
            self._end()

    async def close(self) -> None:
        try:
            await self._inner.close()
        finally:
            self._end()

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self._span.end()

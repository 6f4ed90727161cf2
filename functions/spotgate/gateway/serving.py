"""One request, from parsed body to answer: the gateway's request pipeline.

Routes parse a request into an `InferenceRequest` and hand it here; what
comes back (`Served`) is a status, the headers' values and a body or a
stream, which the route turns into a response. In between, in this order:

1. `received` steps (a step sees the request before anything is spent on it);
2. model resolution (catalogue, aliases, `auto`);
3. `resolved` steps (built in: the request limits);
4. the cache lookup (a hit answers, in the form asked for);
5. admission, then a worker or the spillover endpoint (`Router.forward`);
6. the answer normalised to OpenAI's schema (a stream's chunks only where
   vLLM's need it) and kept in the cache when it is whole (a stream once it
   ended);
7. `finished` steps, with the outcome (a stream's when it ended).

A later stage (authorise a key, rate limits, metering, metrics) is a
`ServingStep` added by the host: the pipeline itself does not change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from spotgate.clock import Clock
from spotgate.errors import UpstreamError
from spotgate.fleet.registry import WorkerRegistry
from spotgate.gateway.cache.answers import AnswerKeeper, StreamEnd, replay, watched
from spotgate.gateway.cache.policy import CacheDecision
from spotgate.gateway.cache.response_cache import ResponseCache
from spotgate.gateway.catalog import ResolvedModel
from spotgate.gateway.forwarding import Reply, StreamReply
from spotgate.gateway.model_catalogue import ModelEntry
from spotgate.gateway.normalise import normalise_chat_response, normalise_completion_response
from spotgate.gateway.relay import Relay
from spotgate.gateway.request_limits import RequestLimits, check_limits
from spotgate.gateway.routing import Router
from spotgate.gateway.sse_normalise import (
    asks_for_usage,
    needs_normalising,
    normalised,
    with_usage,
    without_usage_chunk,
)
from spotgate.gateway.upstream_errors import openai_error_body, upstream_status

if TYPE_CHECKING:
    from spotgate.gateway.tenancy.authority import Caller

log = logging.getLogger("spotgate.serving")

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
EMBEDDINGS_PATH = "/v1/embeddings"
STREAMABLE = frozenset({CHAT_PATH, COMPLETIONS_PATH})
_NORMALISERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    CHAT_PATH: normalise_chat_response,
    COMPLETIONS_PATH: normalise_completion_response,
}


@dataclass(slots=True)
class InferenceRequest:
    """A client's request as the pipeline sees it: the raw bytes are forwarded untouched."""

    path: str
    raw: bytes
    body: dict[str, Any]
    model: str
    request_id: str
    headers: Mapping[str, str] = field(default_factory=dict)
    api_key: str | None = None
    caller: Caller | None = None
    """Set when the key was checked already (before the body was read, or a batch's owner)."""
    batch_id: str | None = None
    """A batch line's batch: metered at the batch price, and recorded with the batch."""
    holds_slot: bool = False
    """The caller holds the pool's admission slot (batch lines run on spare capacity)."""

    @property
    def wants_stream(self) -> bool:
        return self.path in STREAMABLE and self.body.get("stream") is True


@dataclass(slots=True)
class RequestContext:
    """What the pipeline learns about one request as it goes; steps read and annotate it.

    `cache_scope` partitions cache entries (set by the step that knows the caller);
    `headers` are added to the response (rate-limit headers); `notes` hold what a
    step needs back at `finished`.
    """

    request: InferenceRequest
    started_at: float = 0.0
    model: ResolvedModel | None = None
    cache_scope: str | None = None
    allowed: Callable[[ModelEntry], bool] | None = None
    """The models `auto` may choose for this caller (None: every one)."""
    headers: dict[str, str] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Served:
    """The answer: `body` (JSON) or `chunks` (SSE), and what the response headers say."""

    status: int
    model: str
    worker_id: str
    cache: str  # HIT | MISS | BYPASS
    body: bytes | None = None
    chunks: Relay | None = None
    events: list[bytes] | None = None  # a cached answer replayed as a stream
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Outcome:
    """What a finished request did, for steps that account for it.

    Every request that got past `received` finishes exactly once: answered,
    refused or failed (`error_code` set, `served` None), or a stream that ended
    (`whole`) or was cut short by its client (`whole` False: `answer` is what
    was relayed, usage missing, `events` how many data events got out).
    """

    served: Served | None
    answer: dict[str, Any] | None  # the whole answer when known (usage lives there)
    ended_at: float
    status: int = 200
    error_code: str | None = None
    whole: bool = True
    events: int = 0
    first_event_at: float | None = None


class ServingStep:
    """A named stage of the pipeline; a subclass overrides the moments it cares about.

    `received` and `resolved` may refuse the request by raising an OpenAIError.
    `finished` must not raise: the answer is already on its way.
    """

    name = "step"

    async def received(self, context: RequestContext) -> None:
        return None

    async def resolved(self, context: RequestContext) -> None:
        return None

    def finished(self, context: RequestContext, outcome: Outcome) -> None:
        return None


class RequestLimitsStep(ServingStep):
    """Bounds every count a client controls before any worker sees it (see request_limits)."""

    name = "request-limits"

    def __init__(self, defaults: RequestLimits) -> None:
        self._defaults = defaults

    async def resolved(self, context: RequestContext) -> None:
        model = context.model
        assert model is not None
        entry = model.entry
        check_limits(
            context.request.path,
            context.request.body,
            model.limits(self._defaults),
            model.name,
            entry.context_length if entry is not None else None,
        )


def _overriding(steps: Sequence[ServingStep], moment: str) -> tuple[ServingStep, ...]:
    return tuple(s for s in steps if getattr(type(s), moment) is not getattr(ServingStep, moment))


class Serving:
    def __init__(
        self,
        router: Router,
        registry: WorkerRegistry,
        cache: ResponseCache | None,
        keeper: AnswerKeeper | None,
        clock: Clock,
        *,
        steps: Sequence[ServingStep] = (),
    ) -> None:
        self._router = router
        self._registry = registry
        self._cache = cache
        self._keeper = keeper
        self._clock = clock
        self._steps = tuple(steps)
        # a step that leaves a moment alone costs nothing there (no coroutine per request);
        # only steps that account for outcomes make a stream worth observing to its end
        self._on_received = _overriding(self._steps, "received")
        self._on_resolved = _overriding(self._steps, "resolved")
        self._observers = _overriding(self._steps, "finished")

    @property
    def steps(self) -> tuple[ServingStep, ...]:
        return self._steps

    async def serve(self, request: InferenceRequest) -> Served:
        context = RequestContext(request, started_at=self._clock.now())
        for step in self._on_received:
            await step.received(context)
        finishing = True  # from here on, every way out finishes the request once
        try:
            served = await self._serve(context)
            finishing = served.chunks is None  # a stream finishes when it ends
            return served
        except BaseException as exc:
            if finishing and self._observers:
                self._finish(context, None, None, error=exc)
            finishing = False
            raise
        finally:
            if finishing and self._observers:
                self._finish(context, served, context.notes.pop("answer", None))

    async def _serve(self, context: RequestContext) -> Served:
        request = context.request
        model = context.model = await self._router.resolve(
            request.model, request.body, context.allowed
        )
        for step in self._on_resolved:
            await step.resolved(context)
        decision = self._decide(context, model)
        if decision is not None and decision.read and self._cache is not None:
            hit = await self._cache.get(decision)
            answer = replay(hit, request.body, request.wants_stream) if hit else None
            if answer is not None:
                if self._observers and hit is not None:
                    context.notes["answer"] = _parsed(hit.body)
                return Served(200, model.name, "cache", "HIT", answer.body, None, answer.events,
                              context.headers)  # fmt: skip
        x_cache = "MISS" if decision is not None and decision.read else "BYPASS"
        raw, body = request.raw, request.body
        metering_stream = request.wants_stream and bool(self._observers)
        if metering_stream and not asks_for_usage(body):
            body = with_usage(body)  # the worker reports usage; the client still gets none
            raw = orjson.dumps(body)
        result = await self._router.forward(
            request.path,
            model,
            raw,
            body,
            {"X-Request-ID": request.request_id},
            stream=request.wants_stream,
            holds_slot=request.holds_slot,
        )
        if isinstance(result, StreamReply):
            return self._stream(context, result, decision, x_cache)
        return self._reply(context, result, decision, x_cache)

    def _decide(self, context: RequestContext, model: ResolvedModel) -> CacheDecision | None:
        """None exactly when there is no cache. Aliases and the served name share entries."""
        if self._cache is None:
            return None
        request = context.request
        body = request.body
        key_body = body if request.model == model.name else {**body, "model": model.name}
        scope = context.cache_scope or ""  # the authorise step scopes it by caller
        groups = model.entry.groups if model.entry is not None else ()
        return self._cache.decide(
            request.path, key_body, request.headers, scope=scope, groups=groups
        )

    def _stream(
        self,
        context: RequestContext,
        result: StreamReply,
        decision: CacheDecision | None,
        x_cache: str,
    ) -> Served:
        request = context.request
        name, worker_id = self._model_name(context), result.worker_id
        keeper = self._keeper if decision is not None and decision.write else None
        chunks = result.chunks
        if needs_normalising(request.path, request.body):
            chunks = normalised(chunks)
        if keeper is not None or self._observers:
            served = Served(200, name, worker_id, x_cache, headers=context.headers)

            def ended(end: StreamEnd) -> None:
                answer = end.answer
                whole = end.whole and answer is not None and answer.get("usage") is not None
                if keeper is not None and decision is not None and whole:
                    keeper.keep(decision, orjson.dumps(answer), name, worker_id)
                if self._observers:
                    self._finish(context, served, answer, end=end)

            storing = keeper is not None and decision is not None
            limit = 4 * decision.max_entry_bytes if storing and decision else 4_000_000
            chunks = watched(chunks, ended, self._clock, limit)
        if self._observers and not asks_for_usage(request.body):
            chunks = without_usage_chunk(chunks)
        return Served(200, name, worker_id, x_cache, chunks=chunks, headers=context.headers)

    def _reply(
        self,
        context: RequestContext,
        result: Reply,
        decision: CacheDecision | None,
        x_cache: str,
    ) -> Served:
        name = self._model_name(context)
        if result.status != 200:
            body = openai_error_body(result.status, result.body)
            status = upstream_status(result.status)
            return Served(status, name, result.worker_id, x_cache, body, headers=context.headers)
        path = context.request.path
        normalise = None if context.request.wants_stream else _NORMALISERS.get(path)
        content = result.body
        if normalise is not None:
            try:
                answer = normalise(orjson.loads(content))
            except orjson.JSONDecodeError:
                raise self._bad_output(result.worker_id) from None
            content = orjson.dumps(answer)
            context.notes["answer"] = answer
        elif self._observers:
            context.notes["answer"] = _parsed(content)
        if decision is not None and decision.write and self._keeper is not None:
            self._keeper.keep(decision, content, name, result.worker_id)
        return Served(200, name, result.worker_id, x_cache, content, headers=context.headers)

    def _finish(
        self,
        context: RequestContext,
        served: Served | None,
        answer: dict[str, Any] | None,
        *,
        error: BaseException | None = None,
        end: StreamEnd | None = None,
    ) -> None:
        outcome = Outcome(served, answer, self._clock.now())
        if served is not None:
            outcome.status = served.status
            if served.status >= 400 and served.body:
                outcome.error_code = _error_code(served.body)
        if error is not None:
            outcome.status = getattr(error, "status_code", 499)
            outcome.error_code = getattr(error, "code", None) or type(error).__name__
        if end is not None:
            outcome.whole, outcome.events = end.whole, end.events
            outcome.first_event_at = end.first_event_at
            if not end.whole:
                outcome.status, outcome.error_code = 499, "client_gone"
        for step in self._observers:
            try:
                step.finished(context, outcome)
            except Exception:  # the answer is on its way: a step's failure is only logged
                log.exception("serving step %s failed at finished", step.name)

    def _bad_output(self, worker_id: str) -> UpstreamError:
        """A 200 whose body is not JSON: the worker is broken or not what it claims."""
        self._registry.distrust(worker_id, "answered 200 with a body that is not JSON")
        return UpstreamError(
            "The model's worker sent an answer that could not be read. Retry shortly.",
            code="upstream_error",
        )

    @staticmethod
    def _model_name(context: RequestContext) -> str:
        assert context.model is not None
        return context.model.name


def _parsed(body: bytes) -> dict[str, Any] | None:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _error_code(body: bytes) -> str | None:
    parsed = _parsed(body) or {}
    error = parsed.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None

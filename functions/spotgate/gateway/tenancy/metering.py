"""One usage record per request, made when it finishes, from what the worker said it used.

Tokens come from the answer's `usage` (streams ask the worker for it even
when the client did not; the pipeline strips that chunk again). When there is
none, the count is estimated and the record says so: a stream the client cut
is metered for what was relayed (one token per content event, as vLLM sends
them), the prompt at characters / 4. Requests refused before a worker saw
them are recorded with no tokens and their error code. A batch line's record
names its batch and is priced at the batch price, so margin reports can
tell batch and interactive apart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from spotgate.fleet.registry import WorkerRegistry
from spotgate.gateway.serving import CHAT_PATH, Outcome, RequestContext, ServingStep
from spotgate.gateway.spillover import WORKER_PREFIX
from spotgate.gateway.tenancy.access import caller_of
from spotgate.gateway.tenancy.limiter import estimate_prompt_tokens
from spotgate.gateway.tenancy.pricing import Prices
from spotgate.gateway.tenancy.recorder import UsageRecorder
from spotgate.gateway.tenancy.usage import UsageRecord

USAGE = "usage"
"""The `RequestContext.notes` entry holding the request's `UsageRecord` once it finished."""
CACHE_WORKER = "cache"


def _count(usage: dict[str, Any], name: str) -> int | None:
    value = usage.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def reported_tokens(answer: dict[str, Any] | None) -> tuple[int, int] | None:
    """(prompt, completion) as the answer's usage says, None when it says nothing usable."""
    usage = (answer or {}).get("usage")
    if not isinstance(usage, dict):
        return None
    prompt = _count(usage, "prompt_tokens")
    completion = _count(usage, "completion_tokens") or 0
    return None if prompt is None else (prompt, completion)


def estimated_tokens(context: RequestContext, outcome: Outcome) -> tuple[int, int]:
    if outcome.served is None:
        return 0, 0  # refused or failed before any worker answered
    prompt = estimate_prompt_tokens(context.request.body)
    role_event = 1 if context.request.path == CHAT_PATH else 0
    return prompt, max(0, outcome.events - role_event)


class MeteringStep(ServingStep):
    name = "metering"

    def __init__(
        self,
        recorder: UsageRecorder,
        prices: Prices,
        registry: WorkerRegistry,
        sku_for: Callable[[str | None], str],
    ) -> None:
        self._recorder = recorder
        self._prices = prices
        self._registry = registry
        self._sku_for = sku_for

    def finished(self, context: RequestContext, outcome: Outcome) -> None:
        record = self.record_of(context, outcome)
        context.notes[USAGE] = record
        self._recorder.record(record)

    def record_of(self, context: RequestContext, outcome: Outcome) -> UsageRecord:
        request, model, served = context.request, context.model, outcome.served
        caller = caller_of(context)
        key = caller.key if caller is not None else None
        tokens = reported_tokens(outcome.answer)
        estimated = tokens is None and served is not None
        prompt, completion = tokens if tokens is not None else estimated_tokens(context, outcome)
        record = UsageRecord(
            at=context.started_at,
            request_id=request.request_id,
            key_id=caller.key_id if caller is not None else None,
            model=model.name if model is not None else request.model,
            path=request.path,
            status=outcome.status,
            pool=model.pool if model is not None else None,
            prompt_tokens=prompt,
            completion_tokens=completion,
            estimated=estimated,
            duration_ms=round((outcome.ended_at - context.started_at) * 1000, 3),
            error_code=outcome.error_code,
            batch_id=request.batch_id,
        )
        if outcome.first_event_at is not None:
            record.ttft_ms = round((outcome.first_event_at - context.started_at) * 1000, 3)
        if served is None:
            return record
        record.worker_id, record.cache = served.worker_id, served.cache
        hit = served.cache == "HIT"
        if served.worker_id.startswith(WORKER_PREFIX):
            record.spillover = served.worker_id[len(WORKER_PREFIX) :]
            record.spillover_cost_usd = self._prices.spillover_cost(model, prompt, completion)
        elif not hit:
            worker = self._registry.get(served.worker_id)
            if worker is not None:
                record.pool, record.priority = worker.pool, worker.priority
            record.sku = self._sku_for(record.pool)
        billable = outcome.status < 400 or not outcome.whole
        if billable:
            record.revenue_usd = self._prices.revenue(
                key,
                model,
                request.model,
                prompt,
                completion,
                cache_hit=hit,
                batch=request.batch_id is not None,
            )
        return record

"""Rate limits and budgets as a pipeline step: counted once the model is known, settled at the end.

The request is counted against its key's limits after model access is
checked (a refused model costs no quota) and before the cache is read (a
cache hit is a request like any other). When it finishes, the token count
reserved up front is replaced by the worker's, the parallel slot is given
back and the price is added to the key's spend: in a background task, since
`finished` may not wait.

If the counter store fails, requests are served without limits (one warning
a minute) rather than refused: an outage of the limits' database must not
become an outage of the API.
"""

from __future__ import annotations

import asyncio
import logging

from spotgate.clock import Clock
from spotgate.errors import OpenAIError
from spotgate.gateway.serving import Outcome, RequestContext, ServingStep
from spotgate.gateway.tenancy.access import caller_of
from spotgate.gateway.tenancy.limiter import (
    Admission,
    Limiter,
    completion_reserve,
    estimate_prompt_tokens,
)
from spotgate.gateway.tenancy.metering import USAGE
from spotgate.gateway.tenancy.usage import UsageRecord

log = logging.getLogger("spotgate.limits")

ADMISSION = "admission"
OUTAGE_WARNING_EVERY_S = 60.0


class RateLimitStep(ServingStep):
    """Must come after `MeteringStep` in the step list: it settles with the usage record."""

    name = "rate-limit"

    def __init__(self, limiter: Limiter, clock: Clock) -> None:
        self._limiter = limiter
        self._clock = clock
        self._settling: set[asyncio.Task[None]] = set()
        self._warned_at = -OUTAGE_WARNING_EVERY_S

    async def resolved(self, context: RequestContext) -> None:
        caller = caller_of(context)
        key = caller.key if caller is not None else None
        if key is None or context.model is None:
            return
        if not (key.limited() or key.max_parallel or key.budget_usd is not None):
            return
        body, path = context.request.body, context.request.path
        tokens = estimate_prompt_tokens(body) + completion_reserve(body, path)
        now = self._clock.now()
        try:
            admission = await self._limiter.admit(key, context.model.name, tokens, None, now)
        except OpenAIError:
            raise
        except Exception as exc:  # the counter store is down: serve, unlimited, and say so
            if now - self._warned_at >= OUTAGE_WARNING_EVERY_S:
                self._warned_at = now
                log.warning("limits not enforced: the counter store failed: %r", exc)
            return
        context.notes[ADMISSION] = admission
        context.headers.update(admission.headers)

    def finished(self, context: RequestContext, outcome: Outcome) -> None:
        admission = context.notes.get(ADMISSION)
        if not isinstance(admission, Admission):
            return
        usage = context.notes.get(USAGE)
        record = usage if isinstance(usage, UsageRecord) else None
        task = asyncio.get_running_loop().create_task(self._settle(admission, record))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle(self, admission: Admission, record: UsageRecord | None) -> None:
        tokens = record.tokens if record is not None else None
        spend = record.revenue_usd if record is not None else 0.0
        try:
            await self._limiter.settle(admission, tokens, spend)
        except Exception:
            log.exception("could not settle the limits of key %s", admission.key.id)

    async def drain(self) -> None:
        """Wait for settlements in flight (a clean shutdown keeps every spend)."""
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)

"""Usage reports and record exports as the admin API serves them: stores in, report out.

A report reads the usage store and the GPU time the fleet journal and the
registry know of, over one window. This instance's unwritten usage is
flushed first, so a run that just ended is in its own report; other
instances' is at most one flush interval behind.
"""

from __future__ import annotations

from collections.abc import Callable

from spotgate.clock import Clock
from spotgate.costs.price_table import PriceTable
from spotgate.costs.report import GROUPINGS, UsageReport, usage_report
from spotgate.errors import InvalidRequest
from spotgate.fleet.worker_spans import WorkerSpan
from spotgate.gateway.tenancy.recorder import UsageRecorder
from spotgate.gateway.tenancy.usage import UsageRecord

SpanSource = Callable[[float, float], list[WorkerSpan]]


class UsageReports:
    def __init__(
        self,
        recorder: UsageRecorder,
        spans: SpanSource,
        prices: PriceTable,
        region: str,
        clock: Clock,
        *,
        prompt_weight: float = 1.0,
    ) -> None:
        self._recorder = recorder
        self._spans = spans
        self._prices = prices
        self._region = region
        self._clock = clock
        self._prompt_weight = prompt_weight

    async def report(self, by: str, since: float, until: float | None = None) -> UsageReport:
        if by not in GROUPINGS:
            raise InvalidRequest(f"'by' must be one of {', '.join(GROUPINGS)}.", param="by")
        now = self._clock.now()
        end = now if until is None else until
        if end < since:
            raise InvalidRequest("'until' is before 'since'.", param="until")
        records = await self.records(since, end)
        return usage_report(
            records,
            self._spans(since, end),
            self._prices,
            by=by,
            since=since,
            until=end,
            region=self._region,
            now=now,
            prompt_weight=self._prompt_weight,
        )

    async def records(self, since: float, until: float | None = None) -> list[UsageRecord]:
        await self._recorder.flush()
        return await self._recorder.store.query(since, until)

"""The usage report: requests, tokens, revenue, cost and margin, grouped one way.

Every grouping adds up to the same totals, so a reader can check one view
against another: total cost is all the GPU cost in the window plus
spillover. Idle GPU time goes where its owner is known (its day, its pool,
the workers that ran); by key, model, kind or batch no request owns it, so
it gets a row of its own rather than vanishing. `kind` splits Batch API
lines (sold at the batch price) from interactive requests and `batch` shows
each batch apart, so a cheaper batch price can be weighed against the GPU
time it used. A cost that cannot be priced shows as None, with a warning
saying why, and so does every sum it is part of.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from spotgate.costs.apportion import Apportionment, apportion, is_cache_hit
from spotgate.costs.price_table import PriceTable, day_of
from spotgate.fleet.worker_spans import WorkerSpan
from spotgate.gateway.tenancy.usage import UsageRecord

REPORT_COLUMNS = (
    "group",
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cache_hits",
    "errors",
    "revenue_usd",
    "cost_usd",
    "margin_usd",
    "gpu_hours",
)
GROUPINGS = ("key", "model", "day", "worker", "pool", "kind", "batch")
BATCH_KIND = "batch"
INTERACTIVE_KIND = "interactive"
IDLE_ROW = "(idle GPU time)"
TOTAL_ROW = "(total)"
NONE_GROUP = "(none)"
WITH_GPU_HOURS = frozenset({"day", "worker", "pool"})


@dataclass(frozen=True)
class UsageReport:
    by: str
    since: float
    until: float
    region: str
    rows: list[dict[str, Any]]
    """One per group, in REPORT_COLUMNS order, sorted by group; an idle row comes last."""
    totals: dict[str, Any]
    warnings: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "since": self.since,
            "until": self.until,
            "region": self.region,
            "columns": list(REPORT_COLUMNS),
            "rows": self.rows,
            "totals": self.totals,
            "warnings": self.warnings,
        }


@dataclass
class _Row:
    group: str
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_hits: int = 0
    errors: int = 0
    revenue_usd: float = 0.0
    cost_usd: float = 0.0
    cost_unknown: bool = False
    gpu_hours: float = 0.0

    def add_cost(self, usd: float | None) -> None:
        if usd is None:
            self.cost_unknown = True
        else:
            self.cost_usd += usd

    def add_row(self, other: _Row) -> None:
        self.requests += other.requests
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cache_hits += other.cache_hits
        self.errors += other.errors
        self.revenue_usd += other.revenue_usd
        self.add_cost(None if other.cost_unknown else other.cost_usd)

    def as_dict(self, gpu_hours: bool) -> dict[str, Any]:
        cost = None if self.cost_unknown else self.cost_usd
        values: dict[str, Any] = {
            "group": self.group,
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cache_hits": self.cache_hits,
            "errors": self.errors,
            "revenue_usd": self.revenue_usd,
            "cost_usd": cost,
            "margin_usd": None if cost is None else self.revenue_usd - cost,
            "gpu_hours": self.gpu_hours if gpu_hours else None,
        }
        return {column: values[column] for column in REPORT_COLUMNS}


def _group_of(by: str) -> Callable[[UsageRecord], str]:
    if by == "key":
        return lambda r: r.key_id or NONE_GROUP
    if by == "model":
        return lambda r: r.model
    if by == "day":
        return lambda r: day_of(r.at).isoformat()
    if by == "worker":
        return lambda r: r.worker_id or NONE_GROUP
    if by == "pool":
        return lambda r: r.pool or NONE_GROUP
    if by == "kind":
        return lambda r: INTERACTIVE_KIND if r.batch_id is None else BATCH_KIND
    if by == "batch":
        return lambda r: r.batch_id or NONE_GROUP
    raise ValueError(f"by must be one of {GROUPINGS}, not {by!r}")


def usage_report(
    records: Iterable[UsageRecord],
    spans: Iterable[WorkerSpan],
    prices: PriceTable,
    *,
    by: str,
    since: float,
    until: float,
    region: str,
    now: float,
    prompt_weight: float = 1.0,
) -> UsageReport:
    """Usage in [since, until) grouped `by` one of GROUPINGS, with totals."""
    group_of = _group_of(by)
    if until < since:
        raise ValueError(f"until ({until}) is before since ({since})")
    in_window = [r for r in records if since <= r.at < until]
    costs = apportion(
        in_window,
        spans,
        prices,
        region=region,
        since=since,
        until=until,
        now=now,
        prompt_weight=prompt_weight,
    )

    rows: dict[str, _Row] = {}

    def row(group: str) -> _Row:
        return rows.setdefault(group, _Row(group))

    for record in in_window:
        target = row(group_of(record))
        target.requests += 1
        target.prompt_tokens += record.prompt_tokens
        target.completion_tokens += record.completion_tokens
        target.cache_hits += is_cache_hit(record)
        target.errors += record.status >= 400
        target.revenue_usd += record.revenue_usd
        target.add_cost(costs.request_usd[record.request_id])

    _place_idle_cost(by, costs, row)
    _place_gpu_hours(by, costs, row)

    ordered = sorted(rows.values(), key=lambda r: (r.group == IDLE_ROW, r.group))
    total = _Row(TOTAL_ROW)
    for each in ordered:
        total.add_row(each)
    total.gpu_hours = sum(p.gpu_hours for p in costs.pool_hours)
    return UsageReport(
        by=by,
        since=since,
        until=until,
        region=region,
        rows=[r.as_dict(by in WITH_GPU_HOURS) for r in ordered],
        totals=total.as_dict(True),
        warnings=_warnings(in_window, costs, prices),
    )


def _place_idle_cost(by: str, costs: Apportionment, row: Callable[[str], _Row]) -> None:
    for idle in costs.idle:
        if by == "day":
            row(day_of(idle.hour).isoformat()).add_cost(idle.usd)
        elif by == "pool":
            row(idle.pool).add_cost(idle.usd)
        elif by == "worker":
            for worker, share in idle.worker_shares.items():
                row(worker).add_cost(None if idle.usd is None else idle.usd * share)
        else:
            row(IDLE_ROW).add_cost(idle.usd)


def _place_gpu_hours(by: str, costs: Apportionment, row: Callable[[str], _Row]) -> None:
    if by == "day":
        for part in costs.pool_hours:
            row(day_of(part.hour).isoformat()).gpu_hours += part.gpu_hours
    elif by == "pool":
        for part in costs.pool_hours:
            row(part.pool).gpu_hours += part.gpu_hours
    elif by == "worker":
        for worker, hours in costs.worker_gpu_hours.items():
            row(worker).gpu_hours += hours


def _warnings(records: list[UsageRecord], costs: Apportionment, prices: PriceTable) -> list[str]:
    found: list[str] = []
    for sku in sorted(costs.unpriced_skus):
        why = "no row dated on or before its GPU time" if prices.knows(sku) else "not in the table"
        found.append(f"no price for SKU {sku} ({why}): the cost of its GPU time is unknown")
    for fallback in sorted(costs.fallbacks, key=lambda f: (f.sku, f.used_region)):
        found.append(
            f"no {fallback.region} price for SKU {fallback.sku}: "
            f"used the {fallback.used_region} price instead"
        )
    if costs.spans_without_sku:
        found.append(
            f"{costs.spans_without_sku} worker span(s) have no SKU: "
            "the cost of their GPU time is unknown"
        )
    if costs.unattributed_requests:
        found.append(
            f"{costs.unattributed_requests} request(s) ran on a pool with no recorded GPU time "
            "in their hour: their GPU cost is counted as 0"
        )
    estimated = sum(1 for r in records if r.estimated)
    if estimated:
        found.append(f"{estimated} record(s) have estimated token counts")
    return found

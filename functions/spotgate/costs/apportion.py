"""The cost model: what each request cost, from the GPU time its pool ran.

A GPU is paid for by the second whether it is busy or not, and a worker
serves many requests at once, so no single request has a GPU cost of its own.
Cost is therefore shared out per pool and UTC hour: every worker span's
seconds in the hour, at that hour's price for its SKU and priority, make the
pool-hour's cost, and the requests the pool served that hour share it in
proportion to their tokens. `prompt_weight` lets prefill tokens, cheaper than
decode on most engines, count for less.

Nothing is dropped so that a report adds up: a pool-hour with GPU time but no
tokens to carry it is kept as idle cost. Spillover requests cost what the
spillover target charged (fixed on the record); cache hits cost nothing.
GPU time with no price makes its pool-hour's cost unknown (None) rather than
understated.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from spotgate.costs.price_table import PriceTable
from spotgate.fleet.worker_spans import WorkerSpan
from spotgate.gateway.tenancy.usage import UsageRecord

HOUR_S = 3600.0
CACHE_WORKER = "cache"


@dataclass(frozen=True)
class PoolHour:
    """GPU time and its cost for one pool, UTC hour and priority."""

    pool: str
    hour: float
    """Start of the UTC hour, epoch seconds."""
    priority: str
    gpu_hours: float
    usd: float | None


@dataclass(frozen=True)
class IdleCost:
    """A pool-hour's GPU cost that no token carried."""

    pool: str
    hour: float
    usd: float | None
    worker_shares: Mapping[str, float]
    """Each worker's share of `usd` (summing to 1), by its own cost, else its GPU time."""


@dataclass(frozen=True)
class RegionFallback:
    sku: str
    region: str
    used_region: str


@dataclass
class Apportionment:
    request_usd: dict[str, float | None]
    """Per request_id; None where its pool-hour's GPU time has no price."""
    idle: list[IdleCost]
    pool_hours: list[PoolHour]
    worker_gpu_hours: dict[str, float]
    unpriced_skus: set[str] = field(default_factory=set)
    fallbacks: set[RegionFallback] = field(default_factory=set)
    spans_without_sku: int = 0
    unattributed_requests: int = 0
    """Requests of a pool that had no recorded GPU time in their hour (costed 0)."""


@dataclass
class _PoolHourCost:
    usd: float = 0.0
    unknown: bool = False
    worker_usd: dict[str, float] = field(default_factory=dict)
    worker_seconds: dict[str, float] = field(default_factory=dict)


def hour_of(at: float) -> float:
    return math.floor(at / HOUR_S) * HOUR_S


def is_cache_hit(record: UsageRecord) -> bool:
    return record.cache == "HIT" or record.worker_id == CACHE_WORKER


def apportion(
    records: Iterable[UsageRecord],
    spans: Iterable[WorkerSpan],
    prices: PriceTable,
    *,
    region: str,
    since: float,
    until: float,
    now: float,
    prompt_weight: float = 1.0,
) -> Apportionment:
    """Cost of every request in [since, until), and the idle GPU cost, from spans clipped to it."""
    if not math.isfinite(prompt_weight) or prompt_weight < 0:
        raise ValueError(f"prompt_weight must be a number >= 0, not {prompt_weight}")
    result = Apportionment(request_usd={}, idle=[], pool_hours=[], worker_gpu_hours={})
    pool_hours = _gpu_cost(spans, prices, region, since, until, now, result)

    served: dict[tuple[str, float], list[tuple[str, float]]] = {}
    for record in records:
        if not since <= record.at < until:
            continue
        if is_cache_hit(record):
            result.request_usd[record.request_id] = 0.0
        elif record.spillover is not None:
            result.request_usd[record.request_id] = record.spillover_cost_usd
        elif record.pool is None:
            result.request_usd[record.request_id] = 0.0
        else:
            weight = prompt_weight * record.prompt_tokens + record.completion_tokens
            served.setdefault((record.pool, hour_of(record.at)), []).append(
                (record.request_id, weight)
            )

    for key, requests in served.items():
        cost = pool_hours.get(key)
        total = sum(weight for _, weight in requests)
        if cost is None:
            result.unattributed_requests += len(requests)
        for request_id, weight in requests:
            if cost is None or total <= 0 or weight <= 0:
                result.request_usd[request_id] = 0.0
            elif cost.unknown:
                result.request_usd[request_id] = None
            else:
                result.request_usd[request_id] = cost.usd * weight / total

    for (pool, hour), cost in sorted(pool_hours.items()):
        carried = sum(weight for _, weight in served.get((pool, hour), ()))
        if carried <= 0:
            usd = None if cost.unknown else cost.usd
            result.idle.append(IdleCost(pool, hour, usd, _shares(cost)))
    return result


def _gpu_cost(
    spans: Iterable[WorkerSpan],
    prices: PriceTable,
    region: str,
    since: float,
    until: float,
    now: float,
    result: Apportionment,
) -> dict[tuple[str, float], _PoolHourCost]:
    by_pool_hour: dict[tuple[str, float], _PoolHourCost] = {}
    by_priority: dict[tuple[str, float, str], list[float]] = {}
    unknown_priority: set[tuple[str, float, str]] = set()
    for span in spans:
        start = max(span.start, since)
        end = min(span.end if span.end is not None else now, until)
        if end <= start:
            continue
        if span.sku is None:
            result.spans_without_sku += 1
        hour = hour_of(start)
        while hour < end:
            seconds = span.seconds_in(max(hour, since), min(hour + HOUR_S, until), now)
            quote = None
            if span.sku is not None:
                quote = prices.hourly(span.sku, span.priority, region, hour)
                if quote is None:
                    result.unpriced_skus.add(span.sku)
                elif not quote.exact_region:
                    result.fallbacks.add(RegionFallback(span.sku, region, quote.row.region))
            usd = seconds * quote.usd_per_hour / HOUR_S if quote is not None else 0.0
            gpu_hours = seconds * (quote.row.gpus if quote is not None else 1) / HOUR_S

            cost = by_pool_hour.setdefault((span.pool, hour), _PoolHourCost())
            cost.usd += usd
            cost.unknown = cost.unknown or quote is None
            worker = span.worker_id
            cost.worker_usd[worker] = cost.worker_usd.get(worker, 0.0) + usd
            cost.worker_seconds[worker] = cost.worker_seconds.get(worker, 0.0) + seconds
            key = (span.pool, hour, span.priority)
            totals = by_priority.setdefault(key, [0.0, 0.0])
            totals[0] += gpu_hours
            totals[1] += usd
            if quote is None:
                unknown_priority.add(key)
            result.worker_gpu_hours[worker] = result.worker_gpu_hours.get(worker, 0.0) + gpu_hours
            hour += HOUR_S
    result.pool_hours = [
        PoolHour(*key, gpu_hours=hours, usd=None if key in unknown_priority else usd)
        for key, (hours, usd) in sorted(by_priority.items())
    ]
    return by_pool_hour


def _shares(cost: _PoolHourCost) -> dict[str, float]:
    weights = cost.worker_usd
    if cost.unknown or sum(weights.values()) <= 0:
        weights = cost.worker_seconds
    total = sum(weights.values())
    if total <= 0:
        return {worker: 1 / len(weights) for worker in weights} if weights else {}
    return {worker: value / total for worker, value in weights.items()}

"""Small builders and a hand-priced table shared by the cost tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from spotgate.costs.price_table import PriceTable
from spotgate.fleet.worker_spans import WorkerSpan
from spotgate.gateway.tenancy.usage import UsageRecord

REGION = "r"
TABLE_CSV = """date,region,sku,gpus,spot_hourly_usd,on_demand_hourly_usd,source
2026-01-01,r,gpu-a,1,0.60,2.40,test
2026-01-01,r,gpu-8,8,4.00,16.00,test
"""
TABLE = PriceTable.parse(TABLE_CSV, "test.csv")

T0 = datetime(2026, 3, 2, 22, tzinfo=UTC).timestamp()
"""22:00 UTC, so the third hour of the hand scenario falls on the next day."""
H = 3600.0


def record(request_id: str, at: float, **fields: Any) -> UsageRecord:
    defaults: dict[str, Any] = {"key_id": "k", "model": "m", "path": "/v1/chat/completions"}
    defaults.update(status=200, pool="p")
    defaults.update(fields)
    return UsageRecord(at=at, request_id=request_id, **defaults)


def span(
    worker_id: str, priority: str, start: float, end: float | None, **fields: Any
) -> WorkerSpan:
    values: dict[str, Any] = {"pool": "p", "sku": "gpu-a", "zone": "1"}
    values.update(fields)
    return WorkerSpan(worker_id=worker_id, priority=priority, start=start, end=end, **values)


SINCE = T0
UNTIL = T0 + 3 * H
NOW = T0 + 2.5 * H
"""w-spot still runs at NOW: half of the third hour is GPU time nobody used."""

SPANS = [
    span("w-spot", "spot", T0, None),
    span("w-od", "on-demand", T0 + 2700, T0 + 5400),
]
"""Hour 0: spot 60 min at 0.60/h + on-demand 15 min at 2.40/h = 0.60 + 0.60 = 1.20.
Hour 1: spot 60 min (0.60) + on-demand 30 min (1.20) = 1.80. Hour 2: spot 30 min = 0.30."""

RECORDS = [
    record("r1", T0 + 2000, key_id="k1", model="m-a", worker_id="w-spot", priority="spot",
           prompt_tokens=100, completion_tokens=200, revenue_usd=1.00),
    record("s1", T0 + 2500, key_id="k2", model="m-b", worker_id="spillover:openai",
           spillover="openai", prompt_tokens=2000, completion_tokens=3000,
           spillover_cost_usd=0.042, revenue_usd=0.30),
    record("r2", T0 + 3000, key_id="k1", model="m-b", worker_id="w-od", priority="on-demand",
           prompt_tokens=500, completion_tokens=400, revenue_usd=2.00),
    record("e1", T0 + H + 50, key_id="k1", model="m-a", worker_id="w-spot", priority="spot",
           status=429, error_code="rate_limited"),
    record("r3", T0 + H + 100, key_id="k2", model="m-a", worker_id="w-spot", priority="spot",
           prompt_tokens=100, completion_tokens=100, revenue_usd=0.50),
    record("c1", T0 + H + 500, key_id="k1", model="m-b", worker_id="cache", cache="HIT",
           prompt_tokens=500, completion_tokens=500, revenue_usd=0.10),
    record("r4", T0 + H + 2000, key_id="k2", model="m-b", worker_id="w-od",
           priority="on-demand", prompt_tokens=150, completion_tokens=250, revenue_usd=0.25,
           estimated=True),
    record("early", T0 - 10, worker_id="w-spot", prompt_tokens=1, revenue_usd=9.0),
    record("late", UNTIL, worker_id="w-spot", prompt_tokens=1, revenue_usd=9.0),
]  # fmt: skip
"""Hour 0 tokens: r1 300 + r2 900 = 1200 (s1 is spillover, not GPU work).
Hour 1 tokens: r3 200 + r4 400 = 600 (c1 is a cache hit, e1 has none)."""

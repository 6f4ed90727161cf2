from __future__ import annotations

import json
import random
from typing import Any

import pytest

from spotgate.costs.price_table import PriceTable
from spotgate.costs.report import GROUPINGS, IDLE_ROW, REPORT_COLUMNS, UsageReport, usage_report
from spotgate.fleet.worker_spans import WorkerSpan
from spotgate.gateway.tenancy.usage import UsageRecord
from tests.costs.scenario import (
    NOW,
    RECORDS,
    REGION,
    SINCE,
    SPANS,
    T0,
    TABLE,
    UNTIL,
    H,
    record,
    span,
)

SUMMED = ("requests", "prompt_tokens", "completion_tokens", "cache_hits", "errors")
MONEY = ("revenue_usd", "cost_usd")


def report(by: str, spans: list[WorkerSpan] = SPANS, **kwargs: Any) -> UsageReport:
    return usage_report(
        RECORDS, spans, TABLE, by=by, since=SINCE, until=UNTIL, region=REGION, now=NOW, **kwargs
    )


def rows_of(result: UsageReport) -> dict[str, dict[str, Any]]:
    return {row["group"]: row for row in result.rows}


def check(row: dict[str, Any], **expected: Any) -> None:
    for column, value in expected.items():
        want = pytest.approx(value) if isinstance(value, float) else value
        assert row[column] == want, (row["group"], column)


def test_by_key_puts_idle_gpu_time_in_a_row_of_its_own() -> None:
    result = report("key")
    rows = rows_of(result)
    assert list(rows) == ["k1", "k2", IDLE_ROW]
    check(
        rows["k1"],
        requests=4,
        prompt_tokens=1100,
        completion_tokens=1100,
        cache_hits=1,
        errors=1,
        revenue_usd=3.10,
        cost_usd=0.30 + 0.90,
        margin_usd=3.10 - 1.20,
        gpu_hours=None,
    )
    check(
        rows["k2"],
        requests=3,
        prompt_tokens=2250,
        completion_tokens=3350,
        cache_hits=0,
        errors=0,
        revenue_usd=1.05,
        cost_usd=0.042 + 0.60 + 1.20,
    )
    check(rows[IDLE_ROW], requests=0, revenue_usd=0.0, cost_usd=0.30, margin_usd=-0.30)


def test_totals_are_all_gpu_cost_in_the_window_plus_spillover() -> None:
    gpu = 1.20 + 1.80 + 0.30
    for by in GROUPINGS:
        totals = report(by).totals
        check(
            totals,
            requests=7,
            cost_usd=gpu + 0.042,
            revenue_usd=4.15,
            margin_usd=4.15 - gpu - 0.042,
            gpu_hours=1.25 + 1.5 + 0.5,
        )


def test_by_model() -> None:
    rows = rows_of(report("model"))
    check(rows["m-a"], requests=3, revenue_usd=1.50, cost_usd=0.30 + 0.0 + 0.60)
    check(rows["m-b"], requests=4, revenue_usd=2.65, cost_usd=0.042 + 0.90 + 0.0 + 1.20)
    check(rows[IDLE_ROW], cost_usd=0.30)


def test_by_day_keeps_idle_cost_on_the_day_it_ran() -> None:
    rows = rows_of(report("day"))
    assert list(rows) == ["2026-03-02", "2026-03-03"]
    check(rows["2026-03-02"], requests=7, cost_usd=1.20 + 1.80 + 0.042, gpu_hours=2.75)
    check(rows["2026-03-03"], requests=0, cost_usd=0.30, gpu_hours=0.5, margin_usd=-0.30)


def test_by_worker_gives_idle_cost_to_the_workers_that_ran() -> None:
    rows = rows_of(report("worker"))
    assert set(rows) == {"w-spot", "w-od", "cache", "spillover:openai"}
    check(rows["w-spot"], requests=3, errors=1, cost_usd=0.30 + 0.60 + 0.30, gpu_hours=2.5)
    check(rows["w-od"], requests=2, cost_usd=0.90 + 1.20, gpu_hours=0.75)
    check(rows["cache"], requests=1, cache_hits=1, cost_usd=0.0, gpu_hours=0.0)
    check(rows["spillover:openai"], cost_usd=0.042, revenue_usd=0.30, margin_usd=0.30 - 0.042)


def test_by_pool() -> None:
    rows = rows_of(report("pool"))
    assert list(rows) == ["p"]
    check(rows["p"], requests=7, cost_usd=3.342, gpu_hours=3.25)


def test_an_unknown_grouping_is_refused() -> None:
    with pytest.raises(ValueError, match="by must be"):
        report("colour")


def test_rows_are_json_with_the_columns_in_order() -> None:
    result = report("key")
    for row in [*result.rows, result.totals]:
        assert tuple(row) == REPORT_COLUMNS
    assert json.loads(json.dumps(result.to_dict()))["rows"] == result.rows


def test_estimated_token_counts_are_warned_about() -> None:
    assert any("1 record(s) have estimated" in w for w in report("key").warnings)


def test_an_unpriced_sku_shows_as_unknown_cost_and_a_warning() -> None:
    spans = [*SPANS, span("odd", "spot", T0 + 2 * H, T0 + 2 * H + 60, sku="gpu-mystery", pool="q")]
    result = report("pool", spans=spans)
    rows = rows_of(result)
    check(rows["p"], cost_usd=3.342)
    assert rows["q"]["cost_usd"] is None and rows["q"]["margin_usd"] is None
    assert result.totals["cost_usd"] is None
    assert any("gpu-mystery" in w and "not in the table" in w for w in result.warnings)


def test_a_region_fallback_is_warned_about() -> None:
    result = usage_report(
        RECORDS, SPANS, TABLE, by="key", since=SINCE, until=UNTIL, region="elsewhere", now=NOW
    )
    assert any("elsewhere" in w and "gpu-a" in w for w in result.warnings)
    check(result.totals, cost_usd=3.342)


def test_the_packaged_table_costs_a_local_run() -> None:
    prices = PriceTable.load()
    spans = [span("w", "spot", T0, T0 + H, sku="local-cpu")]
    records = [record("a", T0 + 5, prompt_tokens=10, completion_tokens=30, revenue_usd=0.01)]
    quote = prices.hourly("local-cpu", "spot", "local", T0)
    assert quote is not None
    result = usage_report(
        records, spans, prices, by="key", since=T0, until=T0 + H, region="local", now=T0 + H
    )
    check(result.totals, cost_usd=quote.usd_per_hour, margin_usd=0.01 - quote.usd_per_hour)
    assert result.warnings == []


# A seeded random fleet and traffic: whatever the grouping, the rows add up to
# the totals and the totals to the GPU time in the window, priced span by span.


def random_fleet(seed: int) -> tuple[list[UsageRecord], list[WorkerSpan], float]:
    rng = random.Random(seed)
    now = T0 + 6 * H
    spans = []
    for n in range(12):
        start = T0 - H + rng.uniform(0, 6 * H)
        end = None if rng.random() < 0.25 else min(now, start + rng.uniform(60, 3 * H))
        spans.append(
            span(
                f"w{n}",
                rng.choice(["spot", "on-demand"]),
                start,
                end,
                pool=rng.choice(["a", "b"]),
                sku=rng.choice(["gpu-a", "gpu-8"]),
            )
        )
    records = []
    for n in range(300):
        kind = rng.random()
        fields: dict[str, Any] = {
            "key_id": rng.choice(["k1", "k2", "k3", None]),
            "model": rng.choice(["m1", "m2"]),
            "pool": rng.choice(["a", "b", "c"]),
            "worker_id": f"w{rng.randrange(12)}",
            "status": rng.choice([200, 200, 200, 429, 500]),
            "prompt_tokens": rng.randrange(0, 2000),
            "completion_tokens": rng.randrange(0, 800),
            "revenue_usd": round(rng.uniform(0, 0.02), 6),
            "estimated": rng.random() < 0.1,
        }
        if kind < 0.15:
            fields.update(cache="HIT", worker_id="cache")
        elif kind < 0.25:
            fields.update(
                spillover="x",
                worker_id="spillover:x",
                spillover_cost_usd=round(rng.uniform(0, 0.01), 6),
            )
        records.append(record(f"q{n}", T0 - H + rng.uniform(0, 7 * H), **fields))
    return records, spans, now


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("by", GROUPINGS)
def test_rows_add_up_and_cost_is_all_gpu_time_plus_spillover(seed: int, by: str) -> None:
    records, spans, now = random_fleet(seed)
    since, until = T0 + 1234.5, T0 + 4 * H + 77.0
    result = usage_report(
        records,
        spans,
        TABLE,
        by=by,
        since=since,
        until=until,
        region=REGION,
        now=now,
        prompt_weight=0.3,
    )

    inside = [r for r in records if since <= r.at < until]
    gpu_usd = gpu_hours = 0.0
    for s in spans:
        price = next(p for p in TABLE.rows if p.sku == s.sku)
        seconds = s.seconds_in(since, until, now)
        gpu_usd += seconds / 3600 * price.hourly_usd(s.priority)
        gpu_hours += seconds / 3600 * price.gpus
    spillover = sum(r.spillover_cost_usd for r in inside if r.spillover)

    totals = result.totals
    assert totals["requests"] == len(inside)
    assert totals["revenue_usd"] == pytest.approx(sum(r.revenue_usd for r in inside))
    assert totals["cost_usd"] == pytest.approx(gpu_usd + spillover)
    assert totals["gpu_hours"] == pytest.approx(gpu_hours)
    for column in (*SUMMED, *MONEY, "margin_usd"):
        assert totals[column] == pytest.approx(sum(row[column] for row in result.rows)), column
    if by in ("day", "worker", "pool"):
        assert sum(row["gpu_hours"] for row in result.rows) == pytest.approx(gpu_hours)
    for row in [*result.rows, totals]:
        assert row["margin_usd"] == pytest.approx(row["revenue_usd"] - row["cost_usd"])


def test_errors_are_responses_of_400_and_above() -> None:
    records = [record(f"s{status}", T0 + 1, status=status) for status in (200, 399, 400, 503)]
    result = usage_report(
        records, [], TABLE, by="model", since=T0, until=T0 + H, region=REGION, now=T0 + H
    )
    assert result.totals["errors"] == 2

from __future__ import annotations

import pytest

from spotgate.costs.apportion import Apportionment, RegionFallback, apportion
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


def run(
    records: list[UsageRecord] = RECORDS,
    spans: list[WorkerSpan] = SPANS,
    *,
    since: float = SINCE,
    until: float = UNTIL,
    now: float = NOW,
    region: str = REGION,
    prompt_weight: float = 1.0,
) -> Apportionment:
    return apportion(
        records,
        spans,
        TABLE,
        region=region,
        since=since,
        until=until,
        now=now,
        prompt_weight=prompt_weight,
    )


def test_each_request_pays_its_token_share_of_its_pool_hour() -> None:
    costs = run()
    assert costs.request_usd["r1"] == pytest.approx(1.20 * 300 / 1200)
    assert costs.request_usd["r2"] == pytest.approx(1.20 * 900 / 1200)
    assert costs.request_usd["r3"] == pytest.approx(1.80 * 200 / 600)
    assert costs.request_usd["r4"] == pytest.approx(1.80 * 400 / 600)


def test_cache_hits_are_free_and_spillover_costs_what_the_target_charged() -> None:
    costs = run()
    assert costs.request_usd["c1"] == 0.0
    assert costs.request_usd["s1"] == pytest.approx(0.042)


def test_a_request_without_tokens_costs_nothing() -> None:
    assert run().request_usd["e1"] == 0.0


def test_requests_outside_the_window_are_not_costed() -> None:
    costs = run()
    assert "early" not in costs.request_usd and "late" not in costs.request_usd


def test_an_hour_with_gpu_time_and_no_tokens_is_idle_cost_not_lost() -> None:
    idle = run().idle
    assert [(i.pool, i.hour) for i in idle] == [("p", T0 + 2 * H)]
    assert idle[0].usd == pytest.approx(0.60 * 0.5)
    assert idle[0].worker_shares == {"w-spot": 1.0}


def test_an_hour_served_only_by_failed_requests_is_still_idle() -> None:
    spans = [span("w", "spot", T0, T0 + H)]
    costs = run([record("x", T0 + 10, status=500)], spans)
    assert costs.request_usd["x"] == 0.0
    assert [i.usd for i in costs.idle] == [pytest.approx(0.60)]


def test_idle_cost_is_shared_by_the_workers_that_ran_by_their_own_cost() -> None:
    spans = [span("w1", "spot", T0, T0 + H), span("w2", "on-demand", T0, T0 + 900)]
    (idle,) = run([], spans).idle
    assert idle.usd == pytest.approx(0.60 + 2.40 / 4)
    assert idle.worker_shares["w1"] == pytest.approx(0.5)
    assert idle.worker_shares["w2"] == pytest.approx(0.5)


def test_gpu_hours_and_cost_per_pool_hour_and_priority() -> None:
    found = {(p.hour - T0, p.priority): (p.gpu_hours, p.usd) for p in run().pool_hours}
    expected = {
        (0.0, "on-demand"): (0.25, 0.60),
        (0.0, "spot"): (1.0, 0.60),
        (H, "on-demand"): (0.5, 1.20),
        (H, "spot"): (1.0, 0.60),
        (2 * H, "spot"): (0.5, 0.30),
    }
    assert found.keys() == expected.keys()
    for key, (hours, usd) in expected.items():
        assert found[key][0] == pytest.approx(hours), key
        assert found[key][1] == pytest.approx(usd), key


def test_a_multi_gpu_vm_counts_each_gpu_but_costs_its_vm_price() -> None:
    costs = run([], [span("big", "spot", T0, T0 + H / 2, sku="gpu-8")])
    assert costs.worker_gpu_hours == {"big": pytest.approx(8 * 0.5)}
    assert costs.idle[0].usd == pytest.approx(4.00 * 0.5)


def test_spans_are_clipped_to_the_window() -> None:
    costs = run(since=T0 + 1800)
    hour0 = 0.60 * 0.5 + 2.40 * 0.25
    assert costs.request_usd["r1"] == pytest.approx(hour0 * 300 / 1200)
    assert costs.request_usd["r2"] == pytest.approx(hour0 * 900 / 1200)
    assert costs.worker_gpu_hours["w-spot"] == pytest.approx(0.5 + 1.0 + 0.5)


def test_prompt_weight_makes_prefill_cheaper() -> None:
    costs = run(prompt_weight=0.5)
    r1, r2 = 0.5 * 100 + 200, 0.5 * 500 + 400
    assert costs.request_usd["r1"] == pytest.approx(1.20 * r1 / (r1 + r2))
    assert costs.request_usd["r2"] == pytest.approx(1.20 * r2 / (r1 + r2))


def test_a_negative_prompt_weight_is_refused() -> None:
    with pytest.raises(ValueError, match="prompt_weight"):
        run(prompt_weight=-1)


def test_gpu_time_without_a_price_makes_its_pool_hour_unknown_not_cheaper() -> None:
    spans = [*SPANS, span("odd", "spot", T0, T0 + H, sku="gpu-mystery")]
    costs = run(spans=spans)
    assert costs.request_usd["r1"] is None and costs.request_usd["r2"] is None
    assert costs.request_usd["r3"] == pytest.approx(1.80 * 200 / 600)
    assert costs.unpriced_skus == {"gpu-mystery"}


def test_a_span_without_a_sku_is_counted_and_unpriced() -> None:
    costs = run([], [span("nosku", "spot", T0, T0 + H, sku=None)])
    assert costs.spans_without_sku == 1
    assert [i.usd for i in costs.idle] == [None]


def test_another_regions_price_is_used_and_flagged() -> None:
    costs = run(region="elsewhere")
    assert costs.fallbacks == {RegionFallback("gpu-a", "elsewhere", REGION)}
    assert costs.request_usd["r1"] == pytest.approx(1.20 * 300 / 1200)


def test_requests_of_a_pool_with_no_gpu_time_are_counted() -> None:
    costs = run([record("lost", T0 + 10, pool="ghost", prompt_tokens=5)])
    assert costs.request_usd["lost"] == 0.0
    assert costs.unattributed_requests == 1

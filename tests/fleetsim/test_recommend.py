"""Choosing a policy from a grid: the cheapest on average among those that hold the SLO in
every scenario, since a policy must survive its worst day, not its typical one."""

from __future__ import annotations

import pytest

from spotgate.fleetsim.compare import recommend, summarise_policies
from spotgate.fleetsim.metrics import RunResult


def row(policy: str, scenario: str, cost: float, slo_ttft: float, failed: int = 0) -> RunResult:
    """A run costing `cost` against an on-demand-only run of 1 USD."""
    return RunResult(
        policy=policy,
        scenario=scenario,
        trace="t",
        profile="p",
        region="eastus",
        duration_s=3600.0,
        requests=1000,
        served=1000 - failed,
        cached=0,
        spilled=0,
        failed=failed,
        resumed=0,
        ttft_p50_s=0.1,
        ttft_p95_s=0.5,
        ttft_p99_s=1.0,
        e2e_p50_s=2.0,
        e2e_p95_s=4.0,
        e2e_p99_s=6.0,
        slo_ttft=slo_ttft,
        slo=slo_ttft,
        worker_hours={"spot": 0.0, "on-demand": 0.0},
        peak_workers=1,
        gpu_cost_usd=cost,
        spillover_cost_usd=0.0,
        evictions=0,
        eviction_bursts=0,
        spot_refusals=0,
        monitor_ticks=720,
        tokens=1_000_000,
        on_demand_only_cost_usd=1.0,
    )


GRID = [
    row("on-demand-only", "calm", 1.0, 1.0),
    row("on-demand-only", "stormy", 1.0, 1.0),
    row("spot-only", "calm", 0.2, 1.0),
    row("spot-only", "stormy", 0.4, 0.95, failed=50),  # cheapest, but fails in the storm
    row("spot-hedge", "calm", 0.5, 1.0),
    row("spot-hedge", "stormy", 0.7, 0.995, failed=5),
]


def test_each_policy_is_summarised_by_its_mean_cost_and_its_worst_service() -> None:
    summaries = summarise_policies(GRID)
    assert [s.policy for s in summaries] == ["spot-only", "spot-hedge", "on-demand-only"]
    spot = summaries[0]
    assert spot.mean_cost_vs_on_demand == pytest.approx(0.3)
    assert spot.worst_cost_vs_on_demand == pytest.approx(0.4)
    assert (spot.worst_slo_ttft, spot.worst_scenario, spot.failed) == (0.95, "stormy", 50)
    hedge = summaries[1]
    assert hedge.mean_cost_vs_on_demand == pytest.approx(0.6)
    assert (hedge.worst_slo_ttft, hedge.failed) == (0.995, 5)


def test_the_recommendation_is_the_cheapest_policy_meeting_the_slo_everywhere() -> None:
    assert recommend(GRID, 0.99).policy == "spot-hedge"  # type: ignore[union-attr]
    assert recommend(GRID, 0.9).policy == "spot-only"  # type: ignore[union-attr]
    assert recommend(GRID, 0.999).policy == "on-demand-only"  # type: ignore[union-attr]
    assert recommend(GRID, 1.01) is None
    assert recommend([]) is None

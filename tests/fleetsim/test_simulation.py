"""Whole simulated runs: a trace through the real monitor tick, autoscaler and capacity mixes.

The worker is the packaged A100 calibration (8B model, 256 sequences, aimed
at 128 in flight, 360 s to boot); the load, 2 requests a second of
conversation-sized requests, keeps about six in flight, so the autoscaler
holds its minimum of one worker unless the spot market intervenes. Prices
are the packaged table's, looked up on a fixed day.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from spotgate.costs.price_table import PriceTable
from spotgate.fleet.signals import ON_DEMAND, SPOT
from spotgate.fleetsim import monitor_driver
from spotgate.fleetsim.compare import RunSpec, cheapest_within, compare, simulate
from spotgate.fleetsim.gateway_model import Spillover
from spotgate.fleetsim.metrics import RunResult, SloTargets
from spotgate.fleetsim.scenarios import Refusal, Scenario, scenario
from spotgate.fleetsim.service_profile import load_profile
from spotgate.fleetsim.traces import Trace, load_trace, synthetic
from spotgate.orchestrations import fleet_monitor

PRICES = PriceTable.load()
PROFILE = load_profile("llama-3.1-8b@Standard_NC24ads_A100_v4")
PRICE_AT = datetime(2026, 12, 15, tzinfo=UTC).timestamp()
REGION = "eastus"
WARM_UP_S = PROFILE.boot_to_ready_s + 120  # the simulation's default warm-up
TICK_S = 5.0
CALM = scenario("calm")
DROUGHT = Scenario("drought", refusals=(Refusal(-math.inf, math.inf),))
"""Spot refused in every zone, warm-up included."""


def hourly(priority: str) -> float:
    quote = PRICES.hourly(PROFILE.sku, priority, REGION, PRICE_AT)
    assert quote is not None and quote.exact_region
    return quote.usd_per_hour


def spec_for(trace: Trace, **changes: object) -> RunSpec:
    return RunSpec(
        trace=trace,
        profile=PROFILE,
        prices=PRICES,
        region=REGION,
        price_at=PRICE_AT,
        **changes,  # type: ignore[arg-type]
    )


@pytest.fixture(scope="module")
def steady() -> Trace:
    return load_trace("poisson", rate=2.0, duration_s=600.0, seed=0)


@pytest.fixture(scope="module")
def calm_runs(steady: Trace) -> dict[str, RunResult]:
    spec = spec_for(steady)
    return {p: simulate(spec, p, CALM) for p in ("on-demand-only", "spot-only", "spot-first")}


def all_tokens(trace: Trace) -> int:
    return sum(r.prompt_tokens + r.completion_tokens for r in trace.requests)


def test_on_demand_only_in_calm_weather_serves_everything_on_one_on_demand_worker(
    steady: Trace, calm_runs: dict[str, RunResult]
) -> None:
    run = calm_runs["on-demand-only"]
    assert (run.requests, run.served, run.failed, run.cached, run.spilled) == (
        len(steady.requests),
        len(steady.requests),
        0,
        0,
        0,
    )
    assert run.tokens == all_tokens(steady)
    assert run.peak_workers == 1
    # the one worker, up since the warm-up, bills from the trace's start to its end
    assert run.worker_hours[SPOT] == 0.0
    assert run.worker_hours[ON_DEMAND] == pytest.approx(run.duration_s / 3600)
    assert steady.duration_s <= run.duration_s < steady.duration_s + 60
    assert run.gpu_cost_usd == pytest.approx(run.duration_s / 3600 * hourly(ON_DEMAND))
    assert run.spillover_cost_usd == 0.0
    assert run.cost_usd == run.gpu_cost_usd
    assert run.slo_ttft >= 0.99
    assert run.ttft_p50_s is not None and run.ttft_p50_s >= PROFILE.ttft_base_ms / 1000
    assert (run.evictions, run.spot_refusals, run.resumed) == (0, 0, 0)


@pytest.mark.parametrize("policy", ["spot-only", "spot-first"])
def test_spot_in_calm_weather_runs_the_same_fleet_at_the_spot_price(
    calm_runs: dict[str, RunResult], policy: str
) -> None:
    baseline, run = calm_runs["on-demand-only"], calm_runs[policy]
    assert run.served == baseline.served
    assert run.worker_hours[ON_DEMAND] == 0.0
    assert run.worker_hours[SPOT] == pytest.approx(baseline.worker_hours[ON_DEMAND])
    assert run.cost_usd / baseline.cost_usd == pytest.approx(hourly(SPOT) / hourly(ON_DEMAND))
    assert run.cost_usd < baseline.cost_usd


def test_the_simulator_drives_the_real_monitor_tick_every_tick_seconds(
    calm_runs: dict[str, RunResult],
) -> None:
    assert monitor_driver.tick is fleet_monitor.tick  # type: ignore[attr-defined]
    run = calm_runs["on-demand-only"]
    # a tick at the warm-up's start and every 5 s after, until the last answer (or up to
    # one drain step past it); nothing wakes the monitor early in calm weather
    ticks = int((WARM_UP_S + run.duration_s) / TICK_S)
    assert ticks + 1 <= run.monitor_ticks <= ticks + 2
    # the timeline is the tick's own status, from the trace's start on
    times = [t for t, *_ in run.timeline]
    assert times[0] == 0.0
    assert times == pytest.approx([TICK_S * n for n in range(len(times))])
    assert times[-1] >= run.duration_s - TICK_S
    assert {(desired, spot, od) for _, desired, spot, od in run.timeline} == {(1, 0, 1)}


def test_the_same_seed_replays_a_stormy_run_exactly_and_another_seed_does_not(
    steady: Trace,
) -> None:
    stormy = Scenario("stormy", evictions_per_hour=20.0, notice_s=5.0)
    trace = steady.window(0.0, 300.0)

    def run(seed: int) -> dict[str, object]:
        data = simulate(spec_for(trace, seed=seed), "spot-hedge", stormy).to_dict(timeline=True)
        data.pop("wall_s")
        return data

    first = run(seed=3)
    assert first["evictions"] > 0  # type: ignore[operator]
    assert run(seed=3) == first
    assert run(seed=4) != first


def test_jobs_on_an_evicted_worker_resume_elsewhere_when_capacity_remains() -> None:
    # 3,000-token answers take 40 s at 75 tokens/s, longer than the 5 s notice, so evicted
    # workers still hold jobs when they go; the on-demand base always has free slots
    trace = synthetic("poisson", rate=1.0, duration_s=600.0, seed=0, sizes=[(500, 3000)])
    spec = spec_for(trace, knobs={"base_on_demand": 1, "min_workers": 3})
    run = simulate(spec, "spot-first", Scenario("stormy", evictions_per_hour=30.0, notice_s=5.0))
    assert run.evictions > 0
    assert run.resumed > 0
    assert (run.served, run.failed) == (len(trace.requests), 0)
    assert run.tokens == all_tokens(trace)


def test_a_notice_longer_than_any_job_lets_every_job_finish_where_it_is() -> None:
    trace = synthetic("poisson", rate=1.0, duration_s=600.0, seed=0, sizes=[(500, 3000)])
    spec = spec_for(trace, knobs={"base_on_demand": 1, "min_workers": 3})
    run = simulate(spec, "spot-first", Scenario("stormy", evictions_per_hour=30.0, notice_s=120))
    assert run.evictions > 0
    assert run.resumed == 0  # draining: no new work, and the 40 s ones finish in the notice
    assert (run.served, run.failed) == (len(trace.requests), 0)


def test_when_spot_is_refused_spot_first_falls_back_to_on_demand(steady: Trace) -> None:
    run = simulate(spec_for(steady.window(0.0, 300.0)), "spot-first", DROUGHT)
    assert run.spot_refusals > 0
    assert run.worker_hours[SPOT] == 0.0
    assert run.worker_hours[ON_DEMAND] > 0.0
    assert (run.served, run.failed) == (run.requests, 0)


def test_when_spot_is_refused_spot_only_has_no_workers_and_serves_nothing(
    steady: Trace,
) -> None:
    run = simulate(spec_for(steady.window(0.0, 300.0)), "spot-only", DROUGHT)
    assert run.spot_refusals > 0
    assert run.worker_hours == {SPOT: 0.0, ON_DEMAND: 0.0}
    assert (run.cost_usd, run.peak_workers, run.served) == (0.0, 0, 0)
    assert run.failed == run.requests > 0
    assert (run.slo_ttft, run.ttft_p50_s) == (0.0, None)


def test_with_spillover_what_no_worker_can_take_goes_to_the_managed_endpoint(
    steady: Trace,
) -> None:
    trace = steady.window(0.0, 120.0)
    spill = Spillover()  # 0.6 s to first token, 60 tokens/s, $0.15 in and $0.60 out per 1M
    run = simulate(spec_for(trace, spillover=spill), "spot-only", DROUGHT)
    assert run.spilled == run.requests == len(trace.requests) > 0
    assert (run.failed, run.gpu_cost_usd) == (0, 0.0)
    expected = sum(r.prompt_tokens * 0.15 + r.completion_tokens * 0.60 for r in trace.requests)
    assert run.spillover_cost_usd == pytest.approx(expected / 1e6)
    assert run.cost_usd == run.spillover_cost_usd
    # 0.6 s to the first token, and 0.6 + c/60 s in all is within 2 + 0.1 (c - 1) s
    assert [run.ttft_p50_s, run.ttft_p99_s] == pytest.approx([0.6, 0.6])
    assert (run.slo_ttft, run.slo) == (1.0, 1.0)


def test_a_ttft_target_below_the_engines_floor_is_never_met(steady: Trace) -> None:
    # every first token takes at least the profile's 25 ms base
    spec = spec_for(steady.window(0.0, 120.0), targets=SloTargets(ttft_s=0.02))
    run = simulate(spec, "on-demand-only", CALM)
    assert run.served == run.requests > 0
    assert (run.slo_ttft, run.slo) == (0.0, 0.0)


def test_cache_hits_are_answered_without_a_worker(steady: Trace) -> None:
    trace = steady.window(0.0, 300.0)
    run = simulate(spec_for(trace, cache_hit_rate=0.5), "on-demand-only", CALM)
    n = len(trace.requests)
    assert run.served + run.cached == n
    assert abs(run.cached - n / 2) < 5 * math.sqrt(n / 4)  # binomial, 5 sd
    assert run.failed == 0


def test_compare_prices_every_row_against_one_on_demand_only_run(steady: Trace) -> None:
    spec = spec_for(steady.window(0.0, 300.0))
    stormy = Scenario("stormy", evictions_per_hour=20.0, notice_s=5.0)
    seen: dict[str, float] = {}
    rows = compare(
        spec,
        ["on-demand-only", "spot-only", "hedged"],
        [CALM, stormy],
        progress=lambda label, share: seen.__setitem__(label, share),
    )
    assert [(r.scenario, r.policy) for r in rows] == [
        ("calm", "on-demand-only"),
        ("calm", "spot-only"),
        ("calm", "spot-hedge"),
        ("stormy", "on-demand-only"),
        ("stormy", "spot-only"),
        ("stormy", "spot-hedge"),
    ]
    baseline = rows[0]
    assert {r.on_demand_only_cost_usd for r in rows} == {baseline.cost_usd}
    assert baseline.cost_usd > 0
    for row in rows:
        assert row.to_dict()["on_demand_only_cost_usd"] == baseline.cost_usd
        if row.policy == "on-demand-only":
            assert row.cost_vs_on_demand == 1.0
            assert row.to_dict()["cost_vs_on_demand"] == 1.0
    calm_spot = rows[1]
    assert calm_spot.cost_vs_on_demand == pytest.approx(hourly(SPOT) / hourly(ON_DEMAND))
    # the baseline runs once; every other run reports its progress to the end
    assert seen == {
        "on-demand-only": 1.0,
        "spot-only / calm": 1.0,
        "spot-hedge / calm": 1.0,
        "spot-only / stormy": 1.0,
        "spot-hedge / stormy": 1.0,
    }


def test_compare_needs_a_scenario(steady: Trace) -> None:
    with pytest.raises(ValueError, match="at least one scenario"):
        compare(spec_for(steady), ["spot-first"], [])


def test_the_cheapest_policy_is_picked_only_among_those_meeting_the_slo(
    calm_runs: dict[str, RunResult],
) -> None:
    runs = list(calm_runs.values())
    best = cheapest_within(runs, 0.99)
    assert best is not None and best.worker_hours[ON_DEMAND] == 0.0
    assert cheapest_within(runs, 1.01) is None

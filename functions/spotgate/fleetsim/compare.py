"""Policies side by side: every run of a grid priced against the on-demand-only baseline.

A saving is only meaningful next to what the same load costs without spot,
so every result carries `on_demand_only_cost_usd` from a baseline run of the
same trace, worker profile and knobs. The baseline takes no spot, so the
spot market cannot touch it: one run serves every scenario of a grid.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

from spotgate.costs.price_table import PriceTable
from spotgate.fleetsim.gateway_model import Spillover
from spotgate.fleetsim.metrics import RunResult, SloTargets
from spotgate.fleetsim.policies import BASELINE, policy_config, policy_name
from spotgate.fleetsim.scenarios import Scenario
from spotgate.fleetsim.service_profile import ServiceProfile
from spotgate.fleetsim.simulation import Simulation, SimulationConfig
from spotgate.fleetsim.traces import Trace

Progress = Callable[[str, float], None]
"""Called with a run's label and how far it is (0 to 1)."""


@dataclass(frozen=True)
class RunSpec:
    """Everything a grid shares but the policy and the scenario."""

    trace: Trace
    profile: ServiceProfile
    prices: PriceTable
    knobs: Mapping[str, Any] = field(default_factory=dict)
    region: str = "eastus"
    cache_hit_rate: float = 0.0
    targets: SloTargets = field(default_factory=SloTargets)
    seed: int = 0
    max_workers: int = 64
    price_at: float | None = None
    spillover: Spillover | None = None
    """Where requests go that no worker can take in time (None: they fail)."""


def simulate(
    spec: RunSpec, policy: str, scenario: Scenario, progress: Callable[[float], None] | None = None
) -> RunResult:
    """One run of `policy` under `scenario`."""
    name = policy_name(policy)
    config = SimulationConfig(
        policy=policy_config(name, spec.profile, spec.knobs, max_workers=spec.max_workers),
        profile=spec.profile,
        scenario=scenario,
        policy_name=name,
        region=spec.region,
        cache_hit_rate=spec.cache_hit_rate,
        targets=spec.targets,
        seed=spec.seed,
        price_at=spec.price_at,
        spillover=spec.spillover,
    )
    simulation = Simulation(spec.trace, config, spec.prices)
    return run_to_end(simulation.run(progress))


def run_to_end(work: Coroutine[Any, Any, RunResult]) -> RunResult:
    """Run a simulation from plain code, or from code that already runs an event loop.

    A notebook's kernel runs one, where `asyncio.run` refuses; simulated time
    never waits on anything real, so a private loop in a thread is only a
    formality, not a concurrency hazard.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(work)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, work).result()


def compare(
    spec: RunSpec,
    policies: Sequence[str],
    scenarios: Sequence[Scenario],
    progress: Progress | None = None,
) -> list[RunResult]:
    """Every policy under every scenario, each priced against one on-demand-only run.

    The baseline's own rows are included when it is among `policies` (once
    per scenario, identical, so a table reads whole per scenario).
    """
    if not scenarios:
        raise ValueError("compare needs at least one scenario")

    def tick(label: str) -> Callable[[float], None] | None:
        return None if progress is None else (lambda share: progress(label, share))

    baseline = simulate(spec, BASELINE, scenarios[0], tick(BASELINE))
    results: list[RunResult] = []
    for scenario in scenarios:
        for policy in policies:
            name = policy_name(policy)
            if name == BASELINE:
                result = replace(baseline, scenario=scenario.name)
            else:
                result = simulate(spec, name, scenario, tick(f"{name} / {scenario.name}"))
            result.on_demand_only_cost_usd = baseline.cost_usd
            results.append(result)
    return results


def cheapest_within(results: Sequence[RunResult], slo_ttft: float) -> RunResult | None:
    """The cheapest run whose TTFT attainment is at least `slo_ttft` (0.99: 99 % of requests)."""
    passing = [r for r in results if r.slo_ttft >= slo_ttft]
    return min(passing, key=lambda r: r.cost_usd, default=None)


@dataclass(frozen=True)
class PolicySummary:
    """One policy across scenarios: judged by its worst service level and its mean cost."""

    policy: str
    mean_cost_vs_on_demand: float
    worst_cost_vs_on_demand: float
    worst_slo_ttft: float
    worst_scenario: str
    failed: int


def summarise_policies(results: Sequence[RunResult]) -> list[PolicySummary]:
    """Per policy, over every scenario it ran in, cheapest first."""
    by_policy: dict[str, list[RunResult]] = {}
    for result in results:
        by_policy.setdefault(result.policy, []).append(result)
    summaries = []
    for policy, runs in by_policy.items():
        shares = [r.cost_vs_on_demand for r in runs]
        if None in shares:
            raise ValueError(f"{policy}: a run has no on-demand-only baseline (use compare())")
        worst = min(runs, key=lambda r: r.slo_ttft)
        summaries.append(
            PolicySummary(
                policy=policy,
                mean_cost_vs_on_demand=sum(s for s in shares if s is not None) / len(shares),
                worst_cost_vs_on_demand=max(s for s in shares if s is not None),
                worst_slo_ttft=worst.slo_ttft,
                worst_scenario=worst.scenario,
                failed=sum(r.failed for r in runs),
            )
        )
    return sorted(summaries, key=lambda s: s.mean_cost_vs_on_demand)


def recommend(results: Sequence[RunResult], slo_ttft: float = 0.99) -> PolicySummary | None:
    """The cheapest policy (mean cost) that meets `slo_ttft` in every scenario it ran.

    Worst case, not average: a policy is chosen for the day it must survive,
    and a good week does not pay for an afternoon of failed requests.
    """
    passing = [s for s in summarise_policies(results) if s.worst_slo_ttft >= slo_ttft]
    return passing[0] if passing else None

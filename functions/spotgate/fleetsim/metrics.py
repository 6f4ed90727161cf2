"""What a simulated run cost and how well it served: the numbers policies are compared by.

Service level is judged per request against targets a chat product would
set: time to first token (`ttft_s`), and end-to-end time within that plus
`tpot_s` per generated token. A failed request misses both. Cost is every
VM's time from the moment it was asked for until it was gone (a VM bills
while it boots and while it drains), at the spot or on-demand hourly price
of its SKU, plus what spilled requests cost at the managed endpoint.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from spotgate.costs.price_table import PriceTable
from spotgate.fleet.signals import ON_DEMAND, SPOT
from spotgate.fleetsim.cloud import SimVM
from spotgate.fleetsim.gateway_model import Spillover
from spotgate.fleetsim.worker_model import Job


@dataclass(frozen=True)
class SloTargets:
    ttft_s: float = 2.0
    tpot_s: float = 0.1

    def e2e_target(self, job: Job) -> float:
        return self.ttft_s + max(0, job.completion_tokens - 1) * self.tpot_s


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) by the nearest-rank method; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class RunResult:
    policy: str
    scenario: str
    trace: str
    profile: str
    region: str
    duration_s: float
    requests: int
    served: int
    cached: int
    spilled: int
    failed: int
    resumed: int
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    ttft_p99_s: float | None
    e2e_p50_s: float | None
    e2e_p95_s: float | None
    e2e_p99_s: float | None
    slo_ttft: float
    """Share of requests whose first token came within the TTFT target."""
    slo: float
    """Share within both the TTFT and the end-to-end target."""
    worker_hours: dict[str, float]
    peak_workers: int
    gpu_cost_usd: float
    spillover_cost_usd: float
    evictions: int
    eviction_bursts: int
    spot_refusals: int
    monitor_ticks: int
    tokens: int
    wall_s: float = 0.0
    seed: int = 0
    on_demand_only_cost_usd: float | None = None
    timeline: list[tuple[float, int, int, int]] = field(default_factory=list)
    """(time, desired, spot target, on-demand target) after each monitor tick."""
    serving: list[tuple[float, int, int]] = field(default_factory=list)
    """(time, spot VMs serving, on-demand VMs serving) before each monitor tick."""

    @property
    def cost_usd(self) -> float:
        return self.gpu_cost_usd + self.spillover_cost_usd

    @property
    def cost_vs_on_demand(self) -> float | None:
        base = self.on_demand_only_cost_usd
        return self.cost_usd / base if base else None

    @property
    def usd_per_1m_tokens(self) -> float | None:
        return self.cost_usd / self.tokens * 1e6 if self.tokens else None

    def to_dict(self, timeline: bool = False) -> dict[str, Any]:
        data = asdict(self)
        if not timeline:
            del data["timeline"], data["serving"]
        data["cost_usd"] = self.cost_usd
        data["cost_vs_on_demand"] = self.cost_vs_on_demand
        data["usd_per_1m_tokens"] = self.usd_per_1m_tokens
        return data


def vm_cost(vm: SimVM, end: float, prices: PriceTable, sku: str, region: str, at: float) -> float:
    quote = prices.hourly(sku, vm.priority, region, at)
    if quote is None:
        raise ValueError(f"no price for {sku} in {region}: add it to the price table")
    hours = max(0.0, (vm.gone_at if vm.gone_at is not None else end) - vm.requested_at) / 3600
    return hours * quote.usd_per_hour


def summarise(
    jobs: Sequence[Job],
    vms: Sequence[SimVM],
    *,
    end: float,
    targets: SloTargets,
    prices: PriceTable,
    sku: str,
    region: str,
    price_at: float,
    spillover: Spillover | None,
    labels: dict[str, str],
    counts: dict[str, int],
    timeline: list[tuple[float, int, int, int]],
    duration_s: float,
) -> RunResult:
    done = [j for j in jobs if j.status in ("served", "cached", "spilled")]
    ttfts = [j.first_token_at - j.arrived_at for j in done if j.first_token_at is not None]
    e2es = [j.done_at - j.arrived_at for j in done if j.done_at is not None]
    within_ttft = [
        j
        for j in done
        if j.first_token_at is not None and j.first_token_at - j.arrived_at <= targets.ttft_s
    ]
    within_both = [
        j
        for j in within_ttft
        if j.done_at is not None and j.done_at - j.arrived_at <= targets.e2e_target(j)
    ]
    hours = {SPOT: 0.0, ON_DEMAND: 0.0}
    for vm in vms:
        stop = vm.gone_at if vm.gone_at is not None else end
        hours[vm.priority] = hours.get(vm.priority, 0.0) + max(0.0, stop - vm.requested_at) / 3600
    spilled = [j for j in jobs if j.status == "spilled"]
    spill_cost = 0.0
    if spillover is not None:
        spill_cost = sum(
            (
                j.prompt_tokens * spillover.price_in_per_1m
                + j.completion_tokens * spillover.price_out_per_1m
            )
            / 1e6
            for j in spilled
        )
    n = len(jobs) or 1
    return RunResult(
        policy=labels["policy"],
        scenario=labels["scenario"],
        trace=labels["trace"],
        profile=labels["profile"],
        region=region,
        duration_s=duration_s,
        requests=len(jobs),
        served=sum(1 for j in jobs if j.status == "served"),
        cached=sum(1 for j in jobs if j.status == "cached"),
        spilled=len(spilled),
        failed=sum(1 for j in jobs if j.status in ("failed", "pending")),
        resumed=sum(1 for j in jobs if j.resumed),
        ttft_p50_s=percentile(ttfts, 50),
        ttft_p95_s=percentile(ttfts, 95),
        ttft_p99_s=percentile(ttfts, 99),
        e2e_p50_s=percentile(e2es, 50),
        e2e_p95_s=percentile(e2es, 95),
        e2e_p99_s=percentile(e2es, 99),
        slo_ttft=len(within_ttft) / n,
        slo=len(within_both) / n,
        worker_hours=hours,
        peak_workers=counts.get("peak_workers", 0),
        gpu_cost_usd=sum(vm_cost(vm, end, prices, sku, region, price_at) for vm in vms),
        spillover_cost_usd=spill_cost,
        evictions=counts.get("evictions", 0),
        eviction_bursts=counts.get("bursts", 0),
        spot_refusals=counts.get("spot_refusals", 0),
        monitor_ticks=counts.get("ticks", 0),
        tokens=sum(j.prompt_tokens + j.completion_tokens for j in done),
        timeline=timeline,
    )

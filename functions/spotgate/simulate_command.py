"""`spotgate simulate`: replay a trace through the real fleet policies on a simulated cloud.

It answers the question a policy change must answer before it ships: what
does this load cost under this policy, next to on-demand only, and how many
requests still get their first token in time? One policy with `--policy`,
all of them side by side with `--compare`, JSON for scripts with `--json`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from spotgate.costs.price_table import PriceTable
from spotgate.fleetsim.compare import RunSpec, compare, recommend, summarise_policies
from spotgate.fleetsim.gateway_model import Spillover
from spotgate.fleetsim.metrics import RunResult, SloTargets
from spotgate.fleetsim.policies import POLICIES, parse_knobs, policy_config, policy_name
from spotgate.fleetsim.scenarios import SCENARIOS, scenario
from spotgate.fleetsim.service_profile import load_profile, packaged_profiles
from spotgate.fleetsim.traces import load_trace

DEFAULT_PROFILE = "llama-3.1-8b@Standard_NC24ads_A100_v4"
console = Console() if sys.stdout.isatty() else Console(width=200)
errors = Console(stderr=True)


def simulate(
    trace: Annotated[
        str, typer.Option(help="conv or code (Azure 2023), poisson, diurnal, bursty, or a CSV.")
    ] = "conv",
    policy: Annotated[
        list[str] | None,
        typer.Option(help=f"Policy to run (repeatable): {', '.join(POLICIES)}, or hedged."),
    ] = None,
    compare_all: Annotated[
        bool, typer.Option("--compare", help="Every policy side by side.")
    ] = False,
    scenario_names: Annotated[
        list[str] | None,
        typer.Option(
            "--scenario",
            help=f"Spot market (repeatable): {', '.join(SCENARIOS)}. "
            "Default: typical, or all of them with --compare.",
        ),
    ] = None,
    profile: Annotated[
        str, typer.Option(help=f"Worker calibration: {', '.join(packaged_profiles())}, or a JSON.")
    ] = DEFAULT_PROFILE,
    minutes: Annotated[
        float | None, typer.Option(min=1, help="Replay only this many minutes of the trace.")
    ] = None,
    start_minute: Annotated[float, typer.Option(min=0, help="Where the replay starts.")] = 0.0,
    speed: Annotated[
        float, typer.Option(min=0.01, help="Replay the trace this many times as fast (more load).")
    ] = 1.0,
    rate: Annotated[
        float, typer.Option(min=0.01, help="Synthetic traces: requests per second.")
    ] = 5.0,
    knob: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Autoscaler or mix setting, name=value (repeatable), "
            "e.g. target_concurrency_per_worker=64.",
        ),
    ] = None,
    cache_hit_rate: Annotated[
        float, typer.Option(min=0, max=1, help="Share of requests the cache answers.")
    ] = 0.0,
    ttft_target: Annotated[float, typer.Option(help="SLO: seconds to first token.")] = 2.0,
    tpot_target: Annotated[float, typer.Option(help="SLO: seconds per further token.")] = 0.1,
    region: Annotated[str, typer.Option(help="Region whose prices apply.")] = "eastus",
    prices: Annotated[
        Path | None, typer.Option(help="Price CSV (default: the packaged snapshot).")
    ] = None,
    spillover: Annotated[
        bool,
        typer.Option(
            help="Send what the fleet cannot take in time to a managed endpoint "
            "($0.15 in, $0.60 out per 1M tokens) instead of failing it."
        ),
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed for evictions and synthetic traces.")] = 0,
    seeds: Annotated[
        int,
        typer.Option(
            min=1,
            help="Repeat every run with this many seeds (from --seed); policies are "
            "then judged by their mean cost and worst service level.",
        ),
    ] = 1,
    max_workers: Annotated[int, typer.Option(min=1, help="Largest pool.")] = 64,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    output: Annotated[Path | None, typer.Option(help="Also write the JSON here.")] = None,
) -> None:
    """Replay a trace through the fleet policies: cost vs on-demand-only, and SLO attainment."""
    try:
        spec, policies, scenarios = _plan(
            trace, policy, compare_all, scenario_names, profile, minutes, start_minute, speed,
            rate, knob, cache_hit_rate, ttft_target, tpot_target, region, prices, spillover,
            seed, max_workers,
        )  # fmt: skip
    except (ValueError, OSError) as exc:
        errors.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    with quiet_fleet_logs(), _progress(quiet=as_json) as bar:
        tasks: dict[str, TaskID] = {}

        def advance(label: str, share: float) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=1.0)
            bar.update(tasks[label], completed=share)

        results = []
        for n in range(seeds):
            run_spec = replace(spec, seed=spec.seed + n)
            results.extend(compare(run_spec, policies, scenarios, advance_seed(advance, n, seeds)))
    document = _document(spec, results)
    if output is not None:
        output.write_text(json.dumps(document, indent=2) + "\n")
    if as_json:
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
        return
    _render(spec, results)


@contextmanager
def quiet_fleet_logs() -> Iterator[None]:
    """The fleet's own warnings (refusals, evictions) are the simulation's events, not news;
    the level is put back after, so a process that goes on (a test run) still logs."""
    fleet = logging.getLogger("spotgate")
    before = fleet.level
    fleet.setLevel(logging.ERROR)
    try:
        yield
    finally:
        fleet.setLevel(before)


def advance_seed(
    advance: Callable[[str, float], None], n: int, seeds: int
) -> Callable[[str, float], None]:
    if seeds == 1:
        return advance
    return lambda label, share: advance(f"{label} (seed {n + 1}/{seeds})", share)


def _plan(
    trace: str,
    policy: list[str] | None,
    compare_all: bool,
    scenario_names: list[str] | None,
    profile: str,
    minutes: float | None,
    start_minute: float,
    speed: float,
    rate: float,
    knob: list[str] | None,
    cache_hit_rate: float,
    ttft_target: float,
    tpot_target: float,
    region: str,
    prices: Path | None,
    spillover: bool,
    seed: int,
    max_workers: int,
) -> tuple[RunSpec, list[str], list[object]]:
    if compare_all and policy:
        raise ValueError("give --policy or --compare, not both")
    policies = list(POLICIES) if compare_all else [policy_name(p) for p in policy or ["spot-first"]]
    default = list(SCENARIOS) if compare_all else ["typical"]
    scenarios = [scenario(name) for name in scenario_names or default]
    duration = None if minutes is None else minutes * 60
    replay = load_trace(trace, seed=seed, duration_s=duration or 3600.0, rate=rate)
    replay = replay.window(start_minute * 60, duration)
    if speed != 1.0:
        replay = replay.scaled(speed)
    if not replay.requests:
        raise ValueError(f"trace {trace!r} has no requests in the chosen window")
    table = PriceTable.load(prices)
    calibration = load_profile(profile)
    for name in policies:  # a misspelt knob is refused now, not after the first run
        policy_config(name, calibration, parse_knobs(knob or []), max_workers=max_workers)
    for priority in ("spot", "on-demand"):
        if table.hourly(calibration.sku, priority, region, time.time()) is None:
            raise ValueError(f"no {priority} price for {calibration.sku} in {region}")
    spec = RunSpec(
        trace=replay,
        profile=calibration,
        prices=table,
        knobs=parse_knobs(knob or []),
        region=region,
        cache_hit_rate=cache_hit_rate,
        targets=SloTargets(ttft_target, tpot_target),
        seed=seed,
        max_workers=max_workers,
        spillover=Spillover() if spillover else None,
    )
    return spec, policies, list(scenarios)


def _progress(quiet: bool) -> Progress:
    columns = (TextColumn("{task.description:<28}"), BarColumn(), TimeElapsedColumn())
    return Progress(*columns, console=errors, disable=quiet, transient=True)


def _document(spec: RunSpec, results: list[RunResult]) -> dict[str, object]:
    return {
        "trace": spec.trace.name,
        "requests": len(spec.trace.requests),
        "profile": spec.profile.key,
        "region": spec.region,
        "knobs": dict(spec.knobs),
        "spillover": spec.spillover is not None,
        "targets": {"ttft_s": spec.targets.ttft_s, "tpot_s": spec.targets.tpot_s},
        "runs": [r.to_dict() for r in results],
    }


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _render(spec: RunSpec, results: list[RunResult]) -> None:
    minutes = spec.trace.duration_s / 60
    title = (
        f"{spec.trace.name}: {len(spec.trace.requests):,} requests over {minutes:.0f} min, "
        f"{spec.profile.key}, {spec.region}"
    )
    table = Table(title=title)
    heads = (
        "scenario", "seed", "policy", "cost $", "vs on-demand", "spot h", "on-demand h", "peak",
        f"TTFT≤{spec.targets.ttft_s:g}s", "SLO", "TTFT p50/p95/p99 s", "failed", "resumed",
        "evictions",
    )  # fmt: skip
    for i, head in enumerate(heads):
        table.add_column(head, justify="left" if i in (0, 2) else "right")
    for r in results:
        share = r.cost_vs_on_demand
        table.add_row(
            r.scenario,
            str(r.seed),
            r.policy,
            f"{r.cost_usd:,.2f}",
            "—" if share is None else f"{share:.0%}",
            f"{r.worker_hours.get('spot', 0.0):.1f}",
            f"{r.worker_hours.get('on-demand', 0.0):.1f}",
            str(r.peak_workers),
            f"{r.slo_ttft:.2%}",
            f"{r.slo:.2%}",
            "/".join(_seconds(v) for v in (r.ttft_p50_s, r.ttft_p95_s, r.ttft_p99_s)),
            str(r.failed),
            str(r.resumed),
            str(r.evictions),
        )
    console.print(table)
    if (
        len(results) > len({(r.policy, r.scenario) for r in results})
        or len({r.scenario for r in results}) > 1
    ):
        _render_summary(results)
    best = recommend([r for r in results if r.policy != "on-demand-only"], 0.99)
    target = f"≥99% of first tokens within {spec.targets.ttft_s:g}s"
    if best is None:
        console.print(f"no spot policy got {target} in every run")
    else:
        console.print(
            f"cheapest with {target} in every run: [bold]{best.policy}[/bold], "
            f"{best.mean_cost_vs_on_demand:.0%} of on-demand-only on average "
            f"(at most {best.worst_cost_vs_on_demand:.0%})"
        )


def _render_summary(results: list[RunResult]) -> None:
    table = Table(title="per policy, over every scenario and seed")
    for i, head in enumerate(
        ("policy", "mean cost vs on-demand", "worst cost", "worst TTFT attainment", "in", "failed")
    ):
        table.add_column(head, justify="left" if i == 0 else "right")
    for s in summarise_policies(results):
        table.add_row(
            s.policy,
            f"{s.mean_cost_vs_on_demand:.0%}",
            f"{s.worst_cost_vs_on_demand:.0%}",
            f"{s.worst_slo_ttft:.2%}",
            s.worst_scenario,
            str(s.failed),
        )
    console.print(table)

"""What `spotgate bench` measured, summarised the same way for the table and for `--json`.

Kept apart from the load generator so the numbers (percentiles, rates, the
per-worker split) can be checked without a server, and so the JSON a script
reads and the table an operator reads can never disagree: both are built
from one `summary()` dict.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table

ROLLING_WINDOW_S = 5.0
"""Long enough to smooth single slow requests, short enough to follow a ramp step."""


@dataclass(frozen=True, slots=True)
class RequestResult:
    """One request as the client saw it. `error` is None for a success, else its kind."""

    step: int
    latency_s: float
    error: str | None = None
    worker: str | None = None
    output_tokens: int = 0
    ttft_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class StepPlan:
    """One ramp step: `concurrency` clients for `seconds` (None: until the requests run out)."""

    concurrency: int
    seconds: float | None


@dataclass
class StepState:
    """Per-step bookkeeping the runner updates while the step is active.

    `in_flight` counts only requests started in this step: clients told to
    stop by a smaller step still finish their last request, and counting
    those would hide whether the new level was actually applied.
    """

    plan: StepPlan
    started_at: float | None = None
    ended_at: float | None = None
    in_flight: int = 0
    max_in_flight: int = 0


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default), None when there is no data."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000.0, 2)


def _latency_block(results: Sequence[RequestResult], quantiles: Sequence[int]) -> dict[str, Any]:
    latencies = [r.latency_s for r in results if r.ok]
    return {f"p{q}": _ms(percentile(latencies, q)) for q in quantiles}


@dataclass
class BenchStats:
    """Collects results as they arrive and keeps what the live display needs cheap to read."""

    started_at: float
    results: list[RequestResult] = field(default_factory=list)
    errors: int = 0
    _recent: deque[float] = field(default_factory=deque)

    def add(self, result: RequestResult, now: float) -> None:
        self.results.append(result)
        if not result.ok:
            self.errors += 1
        self._recent.append(now)

    @property
    def done(self) -> int:
        return len(self.results)

    def rolling_rps(self, now: float) -> float:
        """Completions per second over the last few seconds (the whole run while it is young)."""
        while self._recent and self._recent[0] < now - ROLLING_WINDOW_S:
            self._recent.popleft()
        window = min(ROLLING_WINDOW_S, now - self.started_at)
        return len(self._recent) / window if window > 0 else 0.0

    def summary(
        self, wall_s: float, steps: Sequence[StepState], settings: dict[str, Any]
    ) -> dict[str, Any]:
        """Everything the run produced, as plain JSON types (the `--json` document)."""
        ok = [r for r in self.results if r.ok]
        ttfts = [r.ttft_s for r in ok if r.ttft_s is not None]
        output_tokens = sum(r.output_tokens for r in ok)
        errors = Counter(r.error for r in self.results if r.error is not None)
        workers = Counter(r.worker or "-" for r in ok)
        return {
            **settings,
            "duration_s": round(wall_s, 3),
            "requests": self.done,
            "ok": len(ok),
            "errors": self.errors,
            "errors_by_kind": dict(sorted(errors.items())),
            "req_per_s": round(self.done / wall_s, 3) if wall_s > 0 else 0.0,
            "latency_ms": _latency_block(self.results, (50, 90, 99)),
            "ttft_ms": {f"p{q}": _ms(percentile(ttfts, q)) for q in (50, 99)} if ttfts else None,
            "output_tokens": output_tokens,
            "output_tokens_per_s": round(output_tokens / wall_s, 3) if wall_s > 0 else 0.0,
            "workers": dict(sorted(workers.items(), key=lambda kv: (-kv[1], kv[0]))),
            "steps": [self._step_summary(i, s) for i, s in enumerate(steps)],
        }

    def _step_summary(self, index: int, step: StepState) -> dict[str, Any]:
        mine = [r for r in self.results if r.step == index]
        elapsed = (
            step.ended_at - step.started_at
            if step.started_at is not None and step.ended_at is not None
            else 0.0
        )
        return {
            "step": index,
            "concurrency": step.plan.concurrency,
            "planned_s": step.plan.seconds,
            "elapsed_s": round(elapsed, 3),
            "requests": len(mine),
            "errors": sum(1 for r in mine if not r.ok),
            "req_per_s": round(len(mine) / elapsed, 3) if elapsed > 0 else 0.0,
            "latency_ms": _latency_block(mine, (50, 99)),
            "max_in_flight": step.max_in_flight,
        }


def _fmt(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:,.1f}{unit}"


def render_summary(summary: dict[str, Any]) -> Table:
    """The end-of-run table: totals, latency, throughput, then errors and workers by name."""
    table = Table(title="spotgate bench")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("requests", f"{summary['requests']:,}")
    style = "red" if summary["errors"] else "green"
    table.add_row("errors", f"[{style}]{summary['errors']:,}[/{style}]")
    table.add_row("duration", _fmt(summary["duration_s"], " s"))
    table.add_row("req/s", _fmt(summary["req_per_s"]))
    latency = summary["latency_ms"]
    for q in ("p50", "p90", "p99"):
        table.add_row(f"latency {q}", _fmt(latency[q], " ms"))
    if summary["ttft_ms"] is not None:
        for q in ("p50", "p99"):
            table.add_row(f"TTFT {q}", _fmt(summary["ttft_ms"][q], " ms"))
    table.add_row("output tokens/s", _fmt(summary["output_tokens_per_s"]))
    if summary["errors_by_kind"]:
        table.add_section()
        for kind, count in summary["errors_by_kind"].items():
            table.add_row(f"[red]error {kind}[/red]", f"{count:,}")
    if summary["workers"]:
        table.add_section()
        for worker, count in summary["workers"].items():
            table.add_row(f"worker {worker}", f"{count:,}")
    return table


def render_steps(summary: dict[str, Any]) -> Table:
    """One row per ramp step, so an operator can line up load with what the autoscaler did."""
    table = Table(title="ramp steps")
    for column in ("step", "concurrency", "seconds", "requests", "errors", "req/s", "p50 ms"):
        table.add_column(column, justify="right")
    table.add_column("max in flight", justify="right")
    for step in summary["steps"]:
        table.add_row(
            str(step["step"] + 1),
            str(step["concurrency"]),
            _fmt(step["elapsed_s"]),
            f"{step['requests']:,}",
            f"{step['errors']:,}",
            _fmt(step["req_per_s"]),
            _fmt(step["latency_ms"]["p50"]),
            str(step["max_in_flight"]),
        )
    return table
